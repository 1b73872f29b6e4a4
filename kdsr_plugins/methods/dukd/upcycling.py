"""DUKD data upcycling: zoom-in and zoom-out samples from a training pair (docs/dukd.md, "Method in one paragraph").

Training pair: LR patch ``lq`` of shape B×C×P×P and GT patch ``gt`` of shape B×C×sP×sP.

* Zoom-in: P×P tiles of ``gt`` (no blur, no downsampling) used as LR inputs; only the
  teacher supervises them. ``crop='grid'`` (default, reference code) picks ``n`` distinct
  cells of the s×s grid of non-overlapping tiles; ``crop='random'`` picks ``n`` arbitrary
  P×P crops. One draw per iteration, shared by the whole batch; tiles are concatenated along
  the batch axis tile-major: ``z[k * B + b]`` is tile ``k`` of image ``b``.
* Zoom-out: ``lq`` downscaled by ``1/s`` with BasicSR's MATLAB-style bicubic ``imresize``
  (antialiasing, CPU, no rounding/clamping), size (P/s)×(P/s). ``resize='torch'`` uses a
  batched, device-side port of the same resize (dense interpolation matrices built from
  BasicSR's own weights), which matches ``imresize`` to ~1e-7.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import NamedTuple

import torch
from torch import Tensor

from kdsr_plugins.core.schema import check_choice

ZOOM_IN_CROPS: tuple[str, ...] = ('grid', 'random')
"""Accepted values of ``zoom_in_crop``."""

ZOOM_OUT_RESIZES: tuple[str, ...] = ('matlab', 'torch')
"""Accepted values of ``zoom_out_resize``."""


class ZoomInSamples(NamedTuple):
    """Zoom-in batch and where its tiles come from.

    Attributes:
        tiles: Tensor (B·n)×C×P×P, tile-major (``tiles[k*B + b]`` = crop ``k`` of image ``b``).
        positions: ``n`` (top, left) offsets of the crops in GT pixels, shared by the batch.
    """

    tiles: Tensor
    positions: list[tuple[int, int]]


def _check_scale(scale: int) -> int:
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f'scale must be a positive int, got {scale!r}')
    return scale


def _check_square_4d(x: Tensor, name: str) -> None:
    if x.dim() != 4:
        raise ValueError(f'{name} must be a (B, C, H, W) tensor, got shape {tuple(x.shape)}')
    if x.size(-2) != x.size(-1):
        raise ValueError(f'DUKD needs square patches: {name} has spatial size {tuple(x.shape[-2:])}')


def check_training_pair(lq: Tensor, gt: Tensor, scale: int) -> int:
    """Validate a DUKD training pair and return the LR patch size P.

    Args:
        lq: LR patch B×C×P×P.
        gt: GT patch B×C×sP×sP.
        scale: SR scale s.

    Returns:
        P.

    Raises:
        ValueError: Non-4D or non-square patches, batch/channel mismatch, or ``gt`` not
            exactly ``scale`` times ``lq``.
    """
    _check_scale(scale)
    _check_square_4d(lq, 'lq')
    _check_square_4d(gt, 'gt')
    if lq.shape[:2] != gt.shape[:2]:
        raise ValueError(f'lq and gt differ in batch/channels: {tuple(lq.shape)} vs {tuple(gt.shape)}')
    if gt.size(-1) != scale * lq.size(-1):
        raise ValueError(f'gt size {gt.size(-1)} is not scale ({scale}) x lq size {lq.size(-1)}')
    return int(lq.size(-1))


def zoom_in_positions(scale: int, patch_size: int, n: int = 1, crop: str = 'grid',
                      generator: torch.Generator | None = None) -> list[tuple[int, int]]:
    """Draw ``n`` zoom-in crop offsets inside an (s·P)×(s·P) GT patch.

    Args:
        scale: SR scale s (grid of s×s tiles).
        patch_size: LR patch size P (= tile size).
        n: Number of crops; ``1 <= n <= s*s`` for ``'grid'``.
        crop: ``'grid'`` (distinct grid cells, uniformly without replacement, cell index
            ``row * s + col``) or ``'random'`` (uniform offsets in ``[0, (s-1)P]``).
        generator: Optional CPU generator (default: the global CPU RNG).

    Returns:
        ``n`` (top, left) offsets in GT pixels.

    Raises:
        ValueError: Invalid ``crop``, ``n`` or sizes.
    """
    _check_scale(scale)
    check_choice(crop, ZOOM_IN_CROPS, f'Unknown zoom-in crop mode {crop!r}; valid: {list(ZOOM_IN_CROPS)}')
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f'n (n_gt_sub) must be a positive int, got {n!r}')
    if patch_size < 1:
        raise ValueError(f'patch_size must be positive, got {patch_size}')
    if crop == 'grid':
        if n > scale * scale:
            raise ValueError(f'n_gt_sub={n} exceeds the {scale * scale} grid tiles at scale {scale}')
        cells = torch.randperm(scale * scale, generator=generator)[:n].tolist()
        return [((c // scale) * patch_size, (c % scale) * patch_size) for c in cells]
    high = (scale - 1) * patch_size + 1
    offs = torch.randint(0, high, (n, 2), generator=generator).tolist()
    return [(int(top), int(left)) for top, left in offs]


def zoom_in_samples(gt: Tensor, scale: int, n: int = 1, crop: str = 'grid',
                    generator: torch.Generator | None = None) -> ZoomInSamples:
    """Cut zoom-in inputs (HR tiles at LR patch size) out of the GT patch.

    Args:
        gt: GT patch B×C×sP×sP (square, side divisible by ``scale``).
        scale: SR scale s.
        n: Tiles per image (``n_gt_sub``).
        crop: ``'grid'`` or ``'random'`` (see ``zoom_in_positions``).
        generator: Optional CPU generator.

    Returns:
        ``ZoomInSamples(tiles, positions)``; ``tiles`` is (B·n)×C×P×P, tile-major, a copy.

    Raises:
        ValueError: Non-square/non-4D ``gt``, side not divisible by ``scale``, bad ``n``/``crop``.
    """
    _check_scale(scale)
    _check_square_4d(gt, 'gt')
    side = gt.size(-1)
    if side % scale:
        raise ValueError(f'gt patch size {side} is not divisible by scale {scale}')
    p = side // scale
    positions = zoom_in_positions(scale, p, n, crop, generator)
    tiles = torch.cat([gt[..., top:top + p, left:left + p] for top, left in positions], dim=0)
    return ZoomInSamples(tiles, positions)


def zoom_out_size(patch_size: int, scale: int) -> int:
    """Side of the zoom-out input, P/s.

    Raises:
        ValueError: If P is not divisible by s (the student output would not match P).
    """
    _check_scale(scale)
    if patch_size % scale:
        raise ValueError(f'LR patch size {patch_size} is not divisible by scale {scale}; '
                         f'zoom-out needs P/s to be an integer')
    return patch_size // scale


def zoom_out_samples(lq: Tensor, scale: int, resize: str = 'matlab') -> Tensor:
    """Downscale the LR patch by ``1/scale`` (MATLAB bicubic with antialiasing).

    Args:
        lq: LR patch B×C×P×P with P divisible by ``scale`` (values not clamped, not rounded).
        scale: SR scale s.
        resize: ``'matlab'`` (default; BasicSR ``imresize`` per image on CPU, exact reference
            behaviour) or ``'torch'`` (batched port on ``lq``'s device).

    Returns:
        Detached tensor B×C×(P/s)×(P/s) on ``lq``'s device and dtype.

    Raises:
        ValueError: Non-square/non-4D ``lq``, P not divisible by s, unknown ``resize``.
    """
    _check_square_4d(lq, 'lq')
    zoom_out_size(lq.size(-1), scale)
    check_choice(resize, ZOOM_OUT_RESIZES, f'Unknown zoom-out resize {resize!r}; valid: {list(ZOOM_OUT_RESIZES)}')
    if resize == 'torch':
        return imresize_torch(lq.detach(), 1 / scale)
    from basicsr.utils.matlab_functions import imresize

    src = lq.detach().to('cpu', torch.float32)
    out = torch.stack([imresize(img, 1 / scale) for img in src], dim=0)
    return out.to(device=lq.device, dtype=lq.dtype)


@lru_cache(maxsize=64)
def _resize_matrix(in_len: int, scale: float, antialiasing: bool) -> Tensor:
    """Dense (out_len × in_len) float64 matrix equal to one axis of BasicSR's ``imresize``."""
    from basicsr.utils.matlab_functions import calculate_weights_indices

    out_len = math.ceil(in_len * scale)
    weights, indices, sym_s, _ = calculate_weights_indices(in_len, out_len, scale, 'cubic', 4, antialiasing)
    mat = torch.zeros(out_len, in_len, dtype=torch.float64)
    width = weights.size(1)
    for i in range(out_len):
        start = int(indices[i][0])  # index into the symmetrically padded axis
        for k in range(width):
            j = start + k - sym_s  # position on the original axis, may lie in the padding
            while j < 0 or j >= in_len:  # symmetric (edge-including) reflection, as imresize
                j = -j - 1 if j < 0 else 2 * in_len - 1 - j
            mat[i, j] += float(weights[i, k])
    return mat


def imresize_torch(x: Tensor, scale: float, antialiasing: bool = True) -> Tensor:
    """Batched, device-side equivalent of ``basicsr.utils.matlab_functions.imresize``.

    Computes ``A_h @ x @ A_w^T`` in float64 with matrices built from BasicSR's own bicubic
    weights and symmetric padding; output size ``ceil(H*scale) × ceil(W*scale)``.

    Args:
        x: Tensor (..., H, W).
        scale: Resize factor (e.g. ``1/4``).
        antialiasing: As in ``imresize`` (used when downsampling).

    Returns:
        Tensor (..., ceil(H·scale), ceil(W·scale)) in ``x``'s dtype and device, no rounding.
    """
    if x.dim() < 2:
        raise ValueError(f'imresize_torch needs at least 2 dims, got shape {tuple(x.shape)}')
    a_h = _resize_matrix(int(x.size(-2)), float(scale), bool(antialiasing)).to(x.device)
    a_w = _resize_matrix(int(x.size(-1)), float(scale), bool(antialiasing)).to(x.device)
    out = torch.matmul(torch.matmul(a_h, x.to(torch.float64)), a_w.t())
    return out.to(x.dtype)
