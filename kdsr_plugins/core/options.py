"""Validation helpers for option blocks (BasicSR itself validates no keys)."""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
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


def option_choice(where: str, value: Any, valid: Sequence[str], aliases: Mapping[str, str] | None = None) -> str:
    """``value`` if it is one of ``valid`` (or the target of an alias); else ``ValueError`` listing them.

    Args:
        where: Dotted option name used in the message, e.g. ``train.mipkd_opt.enc_type``.
        value: The configured value.
        valid: Accepted values.
        aliases: Accepted alternative spellings mapped to their canonical value.
    """
    aliases = aliases or {}
    if isinstance(value, str) and value in aliases:
        return aliases[value]
    if not isinstance(value, str) or value not in valid:
        extra = f' (aliases: {sorted(aliases)})' if aliases else ''
        raise ValueError(f'{where}: invalid value {value!r}; valid: {list(valid)}{extra}')
    return value


def option_bool(where: str, value: Any) -> bool:
    """``value`` if it is a YAML boolean; else ``ValueError`` naming the option ``where``."""
    if not isinstance(value, bool):
        raise ValueError(f'{where}: expected true/false, got {value!r}')
    return value


def arch_scale(net_opt: Mapping[str, Any]) -> int | None:
    """The upscaling factor declared in a network option dict (``upscale`` or ``scale``)."""
    for key in ('upscale', 'scale'):
        if key in net_opt:
            return int(net_opt[key])
    return None
