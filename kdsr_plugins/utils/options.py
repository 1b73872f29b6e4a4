"""Validation helpers for option blocks (BasicSR itself validates no keys)."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def check_option_keys(block: Mapping[str, Any] | None, allowed: Iterable[str], where: str) -> None:
    """Raise ``ValueError`` if ``block`` has keys outside ``allowed``, listing the valid ones."""
    if block is None:
        return
    if not isinstance(block, Mapping):
        raise ValueError(f'{where} must be a mapping, got {type(block).__name__}.')
    allowed = sorted(set(allowed))
    unknown = sorted(set(block) - set(allowed))
    if unknown:
        raise ValueError(f'Unknown option key(s) {unknown} in {where}; valid keys: {allowed}.')


def arch_scale(net_opt: Mapping[str, Any]) -> int | None:
    """The upscaling factor declared in a network option dict (``upscale`` or ``scale``)."""
    for key in ('upscale', 'scale'):
        if key in net_opt:
            return int(net_opt[key])
    return None
