"""Checkpoint I/O: safe (``weights_only``) loading with clear errors, atomic writing."""
from __future__ import annotations

import os
import os.path as osp
import pickle
import time
from collections.abc import Mapping
from typing import Any

import torch


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unreadable or does not hold what was asked for."""


#: A non-strict load must fill at least this fraction of a network's values (else it loaded practically nothing).
MIN_NON_STRICT_FRACTION = 0.1


def is_state_dict(obj: Any) -> bool:
    """True for a non-empty mapping whose values are all tensors (a bare ``state_dict``)."""
    return isinstance(obj, Mapping) and len(obj) > 0 and all(torch.is_tensor(v) for v in obj.values())


def strip_module_prefix(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove the ``module.`` prefix that (Distributed)DataParallel adds to keys."""
    return {(k[7:] if k.startswith('module.') else k): v for k, v in state_dict.items()}


def load_checkpoint_file(path: str, what: str = 'checkpoint') -> Any:
    """Load a ``.pth``/``.pt`` file with ``weights_only=True`` (no arbitrary code execution).

    Raises:
        CheckpointError: The file is missing or is not a weights-only torch file.
    """
    path = osp.expanduser(path)
    if not osp.isfile(path):
        raise CheckpointError(f'{what} not found: {path!r} (relative paths are resolved from the current '
                              f'directory {os.getcwd()!r})')
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as err:  # OSError: truncated zip
        raise CheckpointError(f'Cannot read {what} {path!r} as a weights-only torch file '
                              f'(truncated, corrupt or not a checkpoint?): {err}') from err


def _legacy_numpy_globals() -> list[Any]:
    """The NumPy globals of a uint32 array (MT19937 key of training states written before tensors were used)."""
    import numpy as np
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    return [_reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def load_training_state_file(path: str, map_location: Any = 'cpu') -> Any:
    """Load a ``<iter>.state`` training state with ``weights_only=True``.

    Training states hold optimizer and scheduler state dicts, epoch, iteration and random states,
    all of types ``weights_only`` loading accepts (plus, for states written by earlier versions,
    NumPy's uint32 key array, allow-listed by its exact globals).

    Raises:
        CheckpointError: The file is missing, truncated or holds other objects.
    """
    if not osp.isfile(path):
        raise CheckpointError(f'Resume state not found: {path!r}')
    try:
        with torch.serialization.safe_globals(_legacy_numpy_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as err:  # OSError: truncated zip
        raise CheckpointError(f'Cannot read training state {path!r} with weights_only loading (truncated, corrupt, '
                              f'or holding objects other than tensors and plain containers?): {err}. Remove it to '
                              'resume from the previous state.') from err


def resolve_param_key(checkpoint: Any, param_key: str | None) -> str | None:
    """The key ``extract_state_dict`` actually reads: ``params_ema`` falls back to ``params`` when absent."""
    if (param_key == 'params_ema' and isinstance(checkpoint, Mapping) and param_key not in checkpoint
            and 'params' in checkpoint):
        return 'params'
    return param_key


def extract_state_dict(checkpoint: Any, param_key: str | None, path: str = '<checkpoint>') -> dict[str, torch.Tensor]:
    """Select the state dict stored under ``param_key`` (BasicSR layout) in a loaded checkpoint.

    ``params_ema`` falls back to ``params`` when absent (as BasicSR does). ``param_key=None``
    accepts a bare state dict (e.g. official RCAN ``.pt`` files after conversion).

    Raises:
        CheckpointError: The key is missing; the message lists the keys that exist.
    """
    if param_key is None:
        if not is_state_dict(checkpoint):
            keys = list(checkpoint)[:10] if isinstance(checkpoint, Mapping) else type(checkpoint).__name__
            raise CheckpointError(f'{path!r} is not a bare state dict (top-level keys: {keys}); set param_key '
                                  'to one of its keys (e.g. params or params_ema).')
        return strip_module_prefix(checkpoint)
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(f'{path!r} holds a {type(checkpoint).__name__}, not a dict of state dicts.')
    param_key = resolve_param_key(checkpoint, param_key)
    if param_key not in checkpoint:
        nested = [k for k, v in checkpoint.items() if isinstance(v, Mapping)]
        hint = (' It looks like a bare state dict: use param_key: ~ (null).' if is_state_dict(checkpoint) else '')
        raise CheckpointError(f'param_key {param_key!r} not found in {path!r}; available keys holding state '
                              f'dicts: {nested}.{hint}')
    state = checkpoint[param_key]
    if not is_state_dict(state):
        raise CheckpointError(f'{path!r}[{param_key!r}] is not a state dict of tensors.')
    return strip_module_prefix(state)


def load_state_dict_into(net: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], strict: bool, path: str,
                         what: str = 'network') -> tuple[list[str], list[str]]:
    """``load_state_dict`` with an error message that names the file and the differing keys.

    Returns:
        The (missing, unexpected) key lists (empty for a strict load that succeeded).
    """
    own = net.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    mismatched = sorted(k for k in set(own) & set(state_dict) if own[k].shape != state_dict[k].shape)
    if strict and (missing or unexpected or mismatched):
        def show(keys: list[str]) -> str:
            return ', '.join(keys[:8]) + (f' ... (+{len(keys) - 8})' if len(keys) > 8 else '')
        lines = [f'{what}: checkpoint {path!r} does not match {type(net).__name__} (strict loading).']
        if missing:
            lines.append(f'  missing in checkpoint ({len(missing)}): {show(missing)}')
        if unexpected:
            lines.append(f'  unexpected in checkpoint ({len(unexpected)}): {show(unexpected)}')
        for k in mismatched[:8]:
            lines.append(f'  shape of {k}: checkpoint {tuple(state_dict[k].shape)} vs network {tuple(own[k].shape)}')
        lines.append('  Check the arch options (num_feat, num_block, upscale, img_size ...) and param_key; '
                     'official RCAN files need scripts/convert_rcan_checkpoint.py.')
        raise CheckpointError('\n'.join(lines))
    if not strict:
        state_dict = {k: v for k, v in state_dict.items() if k not in mismatched}
        total = sum(v.numel() for v in own.values())
        loaded = sum(own[k].numel() for k in state_dict if k in own)
        if total and loaded < MIN_NON_STRICT_FRACTION * total:
            raise CheckpointError(f'{what}: non-strict loading of {path!r} into {type(net).__name__} would load '
                                  f'{loaded:,d} of its {total:,d} values ({len(missing)} network key(s) missing from '
                                  f'the checkpoint, {len(mismatched)} of another shape): practically nothing, the '
                                  'network would stay randomly initialised. Check the arch options (num_feat, '
                                  'num_block, upscale ...) and param_key.')
    net.load_state_dict(state_dict, strict=strict)
    return missing, unexpected + mismatched


def atomic_torch_save(obj: Any, path: str, retries: int = 3) -> None:
    """Write ``obj`` to ``path`` through a temporary file and ``os.replace``.

    A reader never sees a partially written file under ``path``. Raises after ``retries``
    failed attempts instead of silently skipping the save.
    """
    tmp = f'{path}.tmp{os.getpid()}'
    for attempt in range(1, retries + 1):
        try:
            with open(tmp, 'wb') as f:
                torch.save(obj, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            return
        except OSError:
            if osp.exists(tmp):
                os.remove(tmp)
            if attempt == retries:
                raise
            time.sleep(1)
