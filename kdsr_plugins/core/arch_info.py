"""Window padding of the stock BasicSR archs (SwinIR needs window-multiple inputs).

(Facts read from built networks — body units, widths — live with the stage runners.)
"""
from __future__ import annotations

import torch


def pad_multiple(net_opt: dict) -> int:
    """Spatial multiple an input must have (SwinIR: ``window_size``; others: 1)."""
    if net_opt.get('type') == 'SwinIR':
        return int(net_opt.get('window_size', 7))
    return 1


def mirror_pad(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Mirror-pad ``x`` bottom/right to multiples of ``multiple`` (BasicSR ``SwinIRModel`` style, any size)."""
    h, w = x.shape[-2:]
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    if pad_h:
        x = torch.cat([x, torch.flip(x, [2])], 2)[:, :, :h + pad_h, :]
    if pad_w:
        x = torch.cat([x, torch.flip(x, [3])], 3)[:, :, :, :w + pad_w]
    return x
