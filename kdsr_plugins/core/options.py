"""Validation helpers for option blocks (BasicSR itself validates no keys), on the one schema of ``core.schema``."""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from kdsr_plugins.core.schema import REQUIRED, Field, OptionError, Schema


def check_option_keys(block: Mapping[str, Any] | None, allowed: Iterable[str], where: str) -> None:
    """Raise ``ValueError`` if ``block`` has keys outside ``allowed``, listing the valid ones."""
    if block is None:
        return
    Schema(where, tuple(Field(k) for k in dict.fromkeys(allowed))).check(block, defaults=False)


def option_choice(where: str, value: Any, valid: Sequence[str], aliases: Mapping[str, str] | None = None) -> str:
    """``value`` if it is one of ``valid`` (or the target of an alias); else ``ValueError`` listing them.

    Args:
        where: Dotted option name used in the message, e.g. ``train.mipkd_opt.enc_type``.
        value: The configured value.
        valid: Accepted values.
        aliases: Accepted alternative spellings mapped to their canonical value.
    """
    if not isinstance(value, str):  # a choice is a name: 1 or true never match
        extra = f' (aliases: {sorted(aliases)})' if aliases else ''
        raise _choice_error(where, value, valid, extra)
    return Field(where, 'str', REQUIRED, choices=tuple(valid), aliases=aliases).validate(value, where)


def option_bool(where: str, value: Any) -> bool:
    """``value`` if it is a YAML boolean; else ``ValueError`` naming the option ``where``."""
    return Field(where, 'bool', REQUIRED).validate(value, where)


def _choice_error(where: str, value: Any, valid: Sequence[str], extra: str) -> ValueError:
    return OptionError(f'{where}: invalid value {value!r}; valid: {list(valid)}{extra}')


def arch_scale(net_opt: Mapping[str, Any]) -> int | None:
    """The upscaling factor declared in a network option dict (``upscale`` or ``scale``)."""
    for key in ('upscale', 'scale'):
        if key in net_opt:
            return int(net_opt[key])
    return None
