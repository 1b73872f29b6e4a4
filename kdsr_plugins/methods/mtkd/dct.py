"""2-D DCT-II / inverse DCT by matrix multiplication (no ``torch_dct`` dependency).

Two conventions (``norm``):

* ``None`` (default, as the reference MTKD code): the unnormalised DCT-II of ``torch_dct.dct(norm=None)``,
  ``X[k] = 2 * sum_n x[n] * cos(pi * k * (2n + 1) / (2N))`` with the exact inverse
  ``x[n] = (1/N) * (X[0]/2 + sum_{k>=1} X[k] * cos(pi * k * (2n + 1) / (2N)))``. This is what the
  MTKD aggregator (DCT-Swin windows) and ``KDDCTLoss`` use; orthonormal scaling would change token
  magnitudes and break compatibility with reference-trained weights.
* ``'ortho'``: the orthonormal DCT-II (``M @ M.T == I``), inverse = transpose.

A 2-D transform of an ``H x W`` array is ``M_H @ x @ M_W.T``; the inverse is
``Minv_H @ X @ Minv_W.T``. Matrices are built in float64 and cast to the input's dtype/device.
"""
from __future__ import annotations

import functools
import math
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

__all__ = [
    'dct_matrix', 'idct_matrix', 'transform_2d', 'dct_2d', 'idct_2d', 'pad_to_multiple', 'block_dct_2d',
    'block_idct_2d'
]

_NORMS = (None, 'ortho')


def _check_norm(norm: Optional[str]) -> None:
    if norm not in _NORMS:
        raise ValueError(f"DCT norm must be None or 'ortho', got {norm!r}")


@functools.lru_cache(maxsize=64)
def _dct_matrix_f64(n: int, norm: Optional[str]) -> torch.Tensor:
    k = torch.arange(n, dtype=torch.float64).view(n, 1)
    i = torch.arange(n, dtype=torch.float64).view(1, n)
    cos = torch.cos(math.pi * k * (2 * i + 1) / (2 * n))
    if norm is None:
        return 2.0 * cos
    scale = torch.full((n, 1), math.sqrt(2.0 / n), dtype=torch.float64)
    scale[0, 0] = math.sqrt(1.0 / n)
    return scale * cos


@functools.lru_cache(maxsize=64)
def _idct_matrix_f64(n: int, norm: Optional[str]) -> torch.Tensor:
    if norm == 'ortho':
        return _dct_matrix_f64(n, norm).t().contiguous()
    i = torch.arange(n, dtype=torch.float64).view(n, 1)
    k = torch.arange(n, dtype=torch.float64).view(1, n)
    minv = torch.cos(math.pi * k * (2 * i + 1) / (2 * n)) / n
    minv[:, 0] *= 0.5
    return minv


def dct_matrix(n: int,
               norm: Optional[str] = None,
               dtype: torch.dtype = torch.float64,
               device: Optional[torch.device] = None) -> torch.Tensor:
    """DCT-II matrix ``M`` (``n x n``, rows = frequencies) so that ``X = M @ x`` along one axis.

    Args:
        n: Transform length.
        norm: ``None`` (unnormalised, ``M[k, i] = 2 cos(pi k (2i+1) / 2n)``) or ``'ortho'``.
        dtype: Output dtype (built in float64 first).
        device: Output device.
    """
    _check_norm(norm)
    return _dct_matrix_f64(int(n), norm).to(dtype=dtype, device=device)


def idct_matrix(n: int,
                norm: Optional[str] = None,
                dtype: torch.dtype = torch.float64,
                device: Optional[torch.device] = None) -> torch.Tensor:
    """Inverse of :func:`dct_matrix` (exact closed form, float64 first)."""
    _check_norm(norm)
    return _idct_matrix_f64(int(n), norm).to(dtype=dtype, device=device)


def transform_2d(x: torch.Tensor,
                 mat_h: torch.Tensor,
                 mat_w: Optional[torch.Tensor] = None,
                 dims: Sequence[int] = (-2, -1)) -> torch.Tensor:
    """Apply ``mat_h`` along ``dims[0]`` and ``mat_w`` along ``dims[1]``: ``mat_h @ x @ mat_w.T``.

    Args:
        x: Any tensor; ``dims`` select the two transformed axes (sizes must match the matrices).
        mat_h: Matrix for the first axis (``out x in``).
        mat_w: Matrix for the second axis; defaults to ``mat_h``.
        dims: The two axes, in (vertical, horizontal) order.
    """
    if mat_w is None:
        mat_w = mat_h
    mat_h = mat_h.to(dtype=x.dtype, device=x.device)
    mat_w = mat_w.to(dtype=x.dtype, device=x.device)
    dh, dw = (d % x.dim() for d in dims)
    y = x.movedim((dh, dw), (-2, -1))
    y = torch.matmul(torch.matmul(mat_h, y), mat_w.transpose(0, 1))
    return y.movedim((-2, -1), (dh, dw))


def dct_2d(x: torch.Tensor, norm: Optional[str] = None, dims: Sequence[int] = (-2, -1)) -> torch.Tensor:
    """Full 2-D DCT-II over two axes (default: the last two, i.e. H and W of ``B x C x H x W``).

    Args:
        x: Input tensor.
        norm: ``None`` (unnormalised, ``torch_dct.dct_2d(norm=None)``) or ``'ortho'``.
        dims: The (vertical, horizontal) axes.
    """
    h, w = x.shape[dims[0]], x.shape[dims[1]]
    return transform_2d(x, dct_matrix(h, norm), dct_matrix(w, norm), dims)


def idct_2d(coeffs: torch.Tensor, norm: Optional[str] = None, dims: Sequence[int] = (-2, -1)) -> torch.Tensor:
    """Inverse of :func:`dct_2d` (same ``norm`` and ``dims``)."""
    h, w = coeffs.shape[dims[0]], coeffs.shape[dims[1]]
    return transform_2d(coeffs, idct_matrix(h, norm), idct_matrix(w, norm), dims)


def _reflect_pad_once(x: torch.Tensor, pad_h: int, pad_w: int) -> torch.Tensor:
    # torch's reflect padding needs pad < size; grow in steps for tiny inputs.
    while pad_h > 0 or pad_w > 0:
        h, w = x.shape[-2:]
        if (pad_h > 0 and h == 1) or (pad_w > 0 and w == 1):
            return F.pad(x, (0, pad_w, 0, pad_h), mode='replicate')
        step_h, step_w = min(pad_h, h - 1), min(pad_w, w - 1)
        x = F.pad(x, (0, step_w, 0, step_h), mode='reflect')
        pad_h -= step_h
        pad_w -= step_w
    return x


def pad_to_multiple(x: torch.Tensor, multiple: int | Tuple[int, int], mode: str = 'reflect') -> torch.Tensor:
    """Pad ``... x H x W`` at the bottom/right so H and W become multiples of ``multiple``.

    ``reflect`` (the MTKD/SwinIR rule) works for any size: when the pad exceeds ``size - 1``
    the reflection is applied repeatedly (replicate for a size of 1).

    Args:
        x: Tensor with at least 3 dims (``C x H x W`` or ``B x C x H x W``).
        multiple: An int or ``(mh, mw)``.
        mode: ``'reflect'``, ``'replicate'`` or ``'zero'``/``'constant'``.
    """
    mh, mw = (multiple, multiple) if isinstance(multiple, int) else multiple
    h, w = x.shape[-2:]
    pad_h, pad_w = (-h) % mh, (-w) % mw
    if pad_h == 0 and pad_w == 0:
        return x
    if mode == 'reflect':
        return _reflect_pad_once(x, pad_h, pad_w)
    if mode in ('zero', 'constant'):
        return F.pad(x, (0, pad_w, 0, pad_h), mode='constant', value=0.0)
    if mode == 'replicate':
        return F.pad(x, (0, pad_w, 0, pad_h), mode='replicate')
    raise ValueError(f'Unknown pad mode {mode!r}')


def block_dct_2d(x: torch.Tensor,
                 block_size: int = 8,
                 norm: Optional[str] = None,
                 pad_mode: Optional[str] = 'reflect') -> torch.Tensor:
    """Blockwise 2-D DCT-II of ``B x C x H x W`` images (JPEG-style, independent per channel).

    The image is padded at the bottom/right to a multiple of ``block_size`` (``pad_mode``; ``None``
    raises on a non-multiple size). Each ``block_size x block_size`` block is replaced in place by
    its coefficients (block-local row = vertical frequency, column = horizontal frequency).

    Returns:
        ``B x C x H' x W'`` coefficients, ``H' / W'`` the padded sizes.
    """
    h, w = x.shape[-2:]
    if (h % block_size or w % block_size):
        if pad_mode is None:
            raise ValueError(f'Size {h}x{w} is not a multiple of block size {block_size}')
        x = pad_to_multiple(x, block_size, pad_mode)
    return _blockwise(x, dct_matrix(block_size, norm), block_size)


def block_idct_2d(coeffs: torch.Tensor,
                  block_size: int = 8,
                  norm: Optional[str] = None,
                  out_size: Optional[Tuple[int, int]] = None) -> torch.Tensor:
    """Inverse of :func:`block_dct_2d`; crops to ``out_size`` (the un-padded ``(H, W)``) if given."""
    h, w = coeffs.shape[-2:]
    if h % block_size or w % block_size:
        raise ValueError(f'Coefficient size {h}x{w} is not a multiple of block size {block_size}')
    x = _blockwise(coeffs, idct_matrix(block_size, norm), block_size)
    if out_size is not None:
        x = x[..., :out_size[0], :out_size[1]]
    return x


def _blockwise(x: torch.Tensor, mat: torch.Tensor, bs: int) -> torch.Tensor:
    *lead, h, w = x.shape
    blocks = x.reshape(*lead, h // bs, bs, w // bs, bs)
    n = len(lead)
    out = transform_2d(blocks, mat, mat, dims=(n + 1, n + 3))
    return out.reshape(*lead, h, w)
