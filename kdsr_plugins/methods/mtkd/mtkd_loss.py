"""MTKD distillation losses: wavelet (default), DCT and FFT ablation variants.

See docs/mtkd.md, "3. Stage 2 — `MTKDStudentModel`".

All losses take ``forward(pred, target)`` with ``pred`` the student output and ``target`` the
aggregated teacher image ``I_MT`` (both ``B x C x H x W``) and return a 0-d tensor that keeps the
autograd graph of both inputs (the model is responsible for producing the target under
``no_grad``).
"""
from __future__ import annotations

from typing import Optional

import torch
from basicsr.utils.registry import LOSS_REGISTRY
from torch import nn

from kdsr_plugins.core.schema import check_choice
from kdsr_plugins.methods.mtkd.dct import dct_2d
from kdsr_plugins.methods.mtkd.haar import haar_dwt

__all__ = ['KDWaveletLoss', 'KDDCTLoss', 'KDFFTLoss']

_REDUCTIONS = ('mean', 'sum')


def _check_reduction(reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f'Unsupported reduction mode: {reduction}. Supported ones are: {_REDUCTIONS}')


def _l1(a: torch.Tensor, b: torch.Tensor, reduction: str) -> torch.Tensor:
    diff = (a - b).abs()
    return diff.mean() if reduction == 'mean' else diff.sum()


def _check_shapes(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.shape != target.shape:
        raise ValueError(f'pred and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}')
    if pred.dim() != 4:
        raise ValueError(f'expected B x C x H x W tensors, got shape {tuple(pred.shape)}')


@LOSS_REGISTRY.register()
class KDWaveletLoss(nn.Module):
    """Haar-wavelet L1 distillation loss of MTKD.

    ``loss_weight * [sum_j mean|H_j(target) - H_j(pred)| + mean|LL_J(target) - LL_J(pred)|]``,
    where ``H_j`` stacks the three detail bands of level ``j`` (one mean over the stack: equal
    weight per level regardless of its size). Every band is computed over the full batch.

    Args:
        loss_weight: Weight of the loss.
        levels: Number of decomposition levels ``J`` (default 1; the reference code's default is 4).
        wavelet: Only ``'haar'``.
        include_ll: Add the low-pass term (``False`` = high-frequency-only ablation).
        ll_batch_bug: Reproduce the reference quirk: the LL term compares only sample ``J - 1`` of
            the batch (raises when batch < J).
        reduction: ``'mean'`` or ``'sum'`` (applied to every term).
    """

    def __init__(self,
                 loss_weight: float = 1.0,
                 levels: int = 1,
                 wavelet: str = 'haar',
                 include_ll: bool = True,
                 ll_batch_bug: bool = False,
                 reduction: str = 'mean') -> None:
        super().__init__()
        if wavelet != 'haar':
            raise ValueError(f"KDWaveletLoss implements only wavelet='haar', got {wavelet!r}")
        if int(levels) < 1:
            raise ValueError(f'levels must be >= 1, got {levels}')
        _check_reduction(reduction)
        self.loss_weight = float(loss_weight)
        self.levels = int(levels)
        self.wavelet = wavelet
        self.include_ll = bool(include_ll)
        self.ll_batch_bug = bool(ll_batch_bug)
        self.reduction = reduction

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Return the weighted wavelet loss (0-d tensor).

        Args:
            pred: Student output, ``B x C x H x W``.
            target: Distillation target, same shape.
        """
        _check_shapes(pred, target)
        ll_p, highs_p = haar_dwt(pred, self.levels)
        ll_t, highs_t = haar_dwt(target, self.levels)
        loss = pred.new_zeros(())
        for high_t, high_p in zip(highs_t, highs_p):
            loss = loss + _l1(high_t, high_p, self.reduction)
        if self.include_ll:
            if self.ll_batch_bug:
                idx = self.levels - 1
                if pred.shape[0] <= idx:
                    raise IndexError(f'll_batch_bug compares batch sample {idx} (levels - 1), '
                                     f'but the batch has only {pred.shape[0]} samples')
                ll_t, ll_p = ll_t[idx], ll_p[idx]
            loss = loss + _l1(ll_t, ll_p, self.reduction)
        return self.loss_weight * loss

    def extra_repr(self) -> str:
        return (f'loss_weight={self.loss_weight}, levels={self.levels}, include_ll={self.include_ll}, '
                f'll_batch_bug={self.ll_batch_bug}, reduction={self.reduction}')


@LOSS_REGISTRY.register()
class KDDCTLoss(nn.Module):
    """L1 between full-image 2-D DCT-II coefficients (MTKD ablation).

    Uses the unnormalised DCT of the reference code by default (``X = M x M^T`` per channel over the
    whole H x W image), i.e. ``torch_dct.dct_2d(norm=None)`` as in the reference ``dctLoss``.

    Args:
        loss_weight: Weight of the loss.
        norm: ``None`` (unnormalised, default) or ``'ortho'``.
        reduction: ``'mean'`` or ``'sum'``.
    """

    def __init__(self, loss_weight: float = 1.0, norm: Optional[str] = None, reduction: str = 'mean') -> None:
        super().__init__()
        _check_reduction(reduction)
        check_choice(norm, (None, 'ortho'), f"norm must be None or 'ortho', got {norm!r}")
        self.loss_weight = float(loss_weight)
        self.norm = norm
        self.reduction = reduction

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Return the weighted DCT-domain L1 loss (0-d tensor)."""
        _check_shapes(pred, target)
        return self.loss_weight * _l1(dct_2d(target, self.norm), dct_2d(pred, self.norm), self.reduction)


@LOSS_REGISTRY.register()
class KDFFTLoss(nn.Module):
    """L1 between complex 2-D FFTs of the full images (MTKD ablation).

    Mean absolute difference of the stacked real and imaginary parts of ``torch.fft.fft2`` over
    H x W (half-precision inputs are promoted to float32 for the FFT).

    Args:
        loss_weight: Weight of the loss.
        fft_norm: ``torch.fft`` normalisation: ``'backward'`` (unnormalised, default), ``'ortho'``
            or ``'forward'``.
        reduction: ``'mean'`` or ``'sum'``.
    """

    def __init__(self, loss_weight: float = 1.0, fft_norm: str = 'backward', reduction: str = 'mean') -> None:
        super().__init__()
        _check_reduction(reduction)
        check_choice(fft_norm, ('backward', 'ortho', 'forward'), f'Unsupported fft_norm {fft_norm!r}')
        self.loss_weight = float(loss_weight)
        self.fft_norm = fft_norm
        self.reduction = reduction

    def _spectrum(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()
        return torch.view_as_real(torch.fft.fft2(x, norm=self.fft_norm))

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Return the weighted FFT-domain L1 loss (0-d tensor)."""
        _check_shapes(pred, target)
        return self.loss_weight * _l1(self._spectrum(target), self._spectrum(pred), self.reduction)
