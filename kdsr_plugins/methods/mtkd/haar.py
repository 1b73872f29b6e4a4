"""Orthonormal 2-D Haar DWT / IDWT in pure torch (docs/mtkd.md, "3. Stage 2 — `MTKDStudentModel`").

For each 2x2 block ``[[a, b], [c, d]]`` of every channel (a = top-left, b = top-right,
c = bottom-left, d = bottom-right)::

    LL = (a + b + c + d) / 2
    H0 = (a - b + c - d) / 2     # horizontal difference (vertical edges)
    H1 = (a + b - c - d) / 2     # vertical difference (horizontal edges)
    H2 = (a - b - c + d) / 2     # diagonal

The transform is orthonormal (sum of squares preserved). Odd sizes are zero-padded by one row /
column at the end (the ``zero`` mode of ``pywt`` / ``pytorch_wavelets``), so for even sizes the
DWT is exactly the stride-2 block transform. Level ``j`` transforms ``LL_{j-1}`` (``LL_0`` = the
image). Detail bands are stacked as ``B x C x 3 x h x w`` (the ``pytorch_wavelets`` layout).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

__all__ = ['haar_dwt2d', 'haar_idwt2d', 'haar_dwt', 'haar_idwt']


def haar_dwt2d(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """One level of the orthonormal 2-D Haar DWT.

    Args:
        x: ``B x C x H x W``.

    Returns:
        ``(ll, high)``: ``ll`` is ``B x C x ceil(H/2) x ceil(W/2)``; ``high`` is
        ``B x C x 3 x ceil(H/2) x ceil(W/2)`` holding (H0, H1, H2) of the module docstring.
    """
    if x.dim() != 4:
        raise ValueError(f'haar_dwt2d expects B x C x H x W, got shape {tuple(x.shape)}')
    h, w = x.shape[-2:]
    if h % 2 or w % 2:
        x = F.pad(x, (0, w % 2, 0, h % 2), mode='constant', value=0.0)
    a = x[..., 0::2, 0::2]
    b = x[..., 0::2, 1::2]
    c = x[..., 1::2, 0::2]
    d = x[..., 1::2, 1::2]
    ll = (a + b + c + d) * 0.5
    h0 = (a - b + c - d) * 0.5
    h1 = (a + b - c - d) * 0.5
    h2 = (a - b - c + d) * 0.5
    return ll, torch.stack((h0, h1, h2), dim=2)


def haar_idwt2d(ll: torch.Tensor, high: torch.Tensor, out_size: Optional[Tuple[int, int]] = None) -> torch.Tensor:
    """Inverse of :func:`haar_dwt2d`.

    Args:
        ll: ``B x C x h x w`` low-pass band.
        high: ``B x C x 3 x h x w`` detail bands.
        out_size: ``(H, W)`` of the signal before the forward transform; crops the zero padding
            of odd sizes. Defaults to ``(2h, 2w)``.
    """
    h0, h1, h2 = high.unbind(dim=2)
    a = (ll + h0 + h1 + h2) * 0.5
    b = (ll - h0 + h1 - h2) * 0.5
    c = (ll + h0 - h1 - h2) * 0.5
    d = (ll - h0 - h1 + h2) * 0.5
    bsz, ch, hh, ww = ll.shape
    top = torch.stack((a, b), dim=-1).reshape(bsz, ch, hh, 2 * ww)
    bottom = torch.stack((c, d), dim=-1).reshape(bsz, ch, hh, 2 * ww)
    x = torch.stack((top, bottom), dim=-2).reshape(bsz, ch, 2 * hh, 2 * ww)
    if out_size is not None:
        x = x[..., :out_size[0], :out_size[1]]
    return x


def haar_dwt(x: torch.Tensor, levels: int = 1) -> Tuple[torch.Tensor, List[torch.Tensor]]:
    """Multi-level Haar DWT.

    Args:
        x: ``B x C x H x W``.
        levels: Number of levels ``J >= 1``.

    Returns:
        ``(ll_J, [high_1, ..., high_J])`` (finest level first, as ``pytorch_wavelets``).
    """
    if levels < 1:
        raise ValueError(f'levels must be >= 1, got {levels}')
    highs = []
    ll = x
    for _ in range(levels):
        ll, high = haar_dwt2d(ll)
        highs.append(high)
    return ll, highs


def haar_idwt(ll: torch.Tensor,
              highs: Sequence[torch.Tensor],
              sizes: Optional[Sequence[Tuple[int, int]]] = None) -> torch.Tensor:
    """Inverse of :func:`haar_dwt`.

    Args:
        ll: Coarsest low-pass band ``ll_J``.
        highs: ``[high_1, ..., high_J]`` as returned by :func:`haar_dwt`.
        sizes: Optional ``[(H_0, W_0), ..., (H_{J-1}, W_{J-1})]``: the input size of each level
            (``(H_0, W_0)`` = image size), needed to undo the zero padding of odd sizes. Without
            it each level returns twice its band size.
    """
    if sizes is not None and len(sizes) != len(highs):
        raise ValueError('sizes must have one (H, W) per level')
    x = ll
    for j in range(len(highs) - 1, -1, -1):
        high = highs[j]
        if x.shape[-2:] != high.shape[-2:]:  # an odd level: drop the padded row/column of ll
            x = x[..., :high.shape[-2], :high.shape[-1]]
        x = haar_idwt2d(x, high, None if sizes is None else tuple(sizes[j]))
    return x
