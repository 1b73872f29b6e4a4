"""Loading aggregator checkpoints written by the public MTKD code (YuxuanJJ/MTKD ``DCTSwin``).

The reference ``DCTSwin`` uses BasicSR SwinIR's module names (docs/mtkd.md, "2. Stage 1"), which
``MTKDDCTSwin`` keeps, so the only layout differences are:

* ``layers.<i>.residual_group.blocks.<j>.attn_mask``: a persistent mask buffer of every shifted
  block (computed for ``img_size``; we build masks on the fly) -> dropped;
* a ``module.`` prefix when the state dict was saved from a (D)DP wrapper -> stripped;
* a whole checkpoint (``{'params': ..., 'params_ema': ...}``) instead of a state dict -> the
  ``param_key`` entry is taken.

``relative_position_index`` buffers are kept: they are recomputed identically by
``WindowAttention``. Reference checkpoints encode the ``mean255`` output parametrisation and were
trained with the public code's attention masks, so the network that loads them must be built
with ``output_convention: mean255`` and ``mask_mode: reference``.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Mapping, Optional

import torch

from kdsr_plugins.core.checkpoints import is_state_dict, strip_module_prefix

__all__ = ['convert_public_mtkd_aggregator', 'PUBLIC_MTKD_OUTPUT_CONVENTION', 'PUBLIC_MTKD_MASK_MODE']

PUBLIC_MTKD_OUTPUT_CONVENTION = 'mean255'
PUBLIC_MTKD_MASK_MODE = 'reference'
_CKPT_KEYS = ('params_ema', 'params')


def convert_public_mtkd_aggregator(state_dict: Mapping[str, Any],
                                   param_key: Optional[str] = None) -> 'OrderedDict[str, torch.Tensor]':
    """Convert a reference-code DCTSwin state dict to one that ``MTKDDCTSwin`` loads strictly.

    Args:
        state_dict: The reference state dict, or a whole BasicSR checkpoint holding one under
            ``param_key`` (default: ``params_ema`` if present, else ``params``).
        param_key: Checkpoint key to take when a whole checkpoint is passed.

    Returns:
        A new ``OrderedDict`` without ``attn_mask`` buffers and ``module.`` prefixes.

    Raises:
        KeyError: ``param_key`` missing from a whole checkpoint, or no ``conv_first.weight``
            (not a DCTSwin/SwinIR-layout state dict).
    """
    sd: Mapping[str, Any] = state_dict
    nested = [] if is_state_dict(sd) else [k for k in _CKPT_KEYS if is_state_dict(sd.get(k))]
    if param_key is not None or nested:
        key = param_key if param_key is not None else nested[0]
        if key not in sd:
            raise KeyError(f'checkpoint has no {key!r} entry (keys: {sorted(sd)[:10]})')
        sd = sd[key]

    out: 'OrderedDict[str, torch.Tensor]' = OrderedDict()
    for name, value in strip_module_prefix(sd).items():
        if name == 'attn_mask' or name.endswith('.attn_mask'):
            continue
        out[name] = value
    if 'conv_first.weight' not in out:
        raise KeyError('not a DCTSwin state dict: conv_first.weight is missing')
    return out
