"""Parameter-free feature-KD losses of the classic baselines (docs/feature_kd.md).

All four losses share one contract (:class:`FeatureKDLossBase`):

* ``forward(feats_s, feats_t) -> Tensor``: ``feats_s`` / ``feats_t`` are equal-length lists of
  matched (student, teacher) feature maps ``B×C×H×W`` (pairs matched by index). Returns
  ``loss_weight * Σ_l term_l`` as a 0-d tensor that keeps the autograd graph of the student
  features. Teacher features are detached inside the loss (they are constants).
* ``forward_terms(feats_s, feats_t, weighted=False) -> list[Tensor]``: the per-pair 0-d terms
  ``term_l`` (``weighted=True`` multiplies each by ``loss_weight``). ``forward`` is exactly
  ``torch.stack(forward_terms(..., weighted=True)).sum()``, so a model can log
  ``l_feat_<i>`` (weighted, docs/feature_kd.md "Loss and log keys") and use their sum as ``l_feat``.

For FitNet (``mode: regress``) the student features must already have been passed through the
adapter (``KDAdapterBank`` in ``kdsr_plugins/core/kd_adapter_arch.py``) by the model.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from basicsr.utils import get_root_logger
from basicsr.utils.registry import LOSS_REGISTRY
from torch import Tensor, nn

from kdsr_plugins.core.schema import check_choice

__all__ = ['FeatureKDLossBase', 'KDFitNetLoss', 'KDAttentionLoss', 'KDAffinityLoss', 'KDRelationLoss']


def _check_choice(cls_name: str, key: str, value: str, valid: Sequence[str]) -> str:
    return check_choice(value, valid, f'{cls_name}: unknown {key} {value!r}; valid values: {", ".join(valid)}')


def _check_weight(cls_name: str, key: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f'{cls_name}: {key} must be a finite number >= 0, got {value!r}')
    return float(value)


class FeatureKDLossBase(nn.Module):
    """Common input checking and per-pair summation of the feature-KD losses.

    Subclasses implement :meth:`pair_term` for one (student, teacher) pair.

    Args:
        loss_weight: Multiplier of the summed per-pair terms.
    """

    #: Whether the student features must go through an adapter first (FitNet regress only).
    uses_adapter: bool = False
    #: Whether per-pair student and teacher channel counts must be equal.
    channel_agnostic: bool = True

    def __init__(self, loss_weight: float = 1.0) -> None:
        super().__init__()
        self.loss_weight = _check_weight(type(self).__name__, 'loss_weight', loss_weight)

    # ------------------------------------------------------------------ checks
    def _check_inputs(self, feats_s: Sequence[Tensor], feats_t: Sequence[Tensor]) -> None:
        name = type(self).__name__
        for label, feats in (('feats_s', feats_s), ('feats_t', feats_t)):
            if isinstance(feats, Tensor) or not isinstance(feats, (list, tuple)):
                raise TypeError(f'{name}: {label} must be a list/tuple of B×C×H×W tensors '
                                f'(one per tap pair), got {type(feats).__name__}')
        if len(feats_s) != len(feats_t):
            raise ValueError(f'{name}: got {len(feats_s)} student and {len(feats_t)} teacher features; '
                             'tap pairs are matched by index, so the lists must have equal length')
        if len(feats_s) == 0:
            raise ValueError(f'{name}: no tap pairs given (empty feature lists)')
        for i, (fs, ft) in enumerate(zip(feats_s, feats_t)):
            if not isinstance(fs, Tensor) or not isinstance(ft, Tensor):
                raise TypeError(f'{name}: pair {i}: features must be tensors, got '
                                f'{type(fs).__name__} and {type(ft).__name__}')
            if fs.dim() != 4 or ft.dim() != 4:
                raise ValueError(f'{name}: pair {i}: features must be 4-D B×C×H×W maps, got student '
                                 f'{tuple(fs.shape)} and teacher {tuple(ft.shape)}')
            if fs.shape[0] != ft.shape[0] or fs.shape[2:] != ft.shape[2:]:
                raise ValueError(f'{name}: pair {i}: batch and spatial sizes must match, got student '
                                 f'{tuple(fs.shape)} and teacher {tuple(ft.shape)} (B×C×H×W)')
            if not self.channel_agnostic and fs.shape[1] != ft.shape[1]:
                raise ValueError(self._channel_error(i, fs, ft))

    def _channel_error(self, i: int, fs: Tensor, ft: Tensor) -> str:
        return (f'{type(self).__name__}: pair {i}: channel counts differ, student {tuple(fs.shape)} vs '
                f'teacher {tuple(ft.shape)}')

    # ------------------------------------------------------------------ API
    def pair_term(self, index: int, feat_s: Tensor, feat_t: Tensor) -> Tensor:
        """Unweighted loss of one pair (0-d tensor). ``feat_t`` is already detached."""
        raise NotImplementedError

    def forward_terms(self, feats_s: Sequence[Tensor], feats_t: Sequence[Tensor],
                      weighted: bool = False) -> List[Tensor]:
        """Per-pair loss terms.

        Args:
            feats_s: Student feature maps, one B×C×H×W tensor per tap pair.
            feats_t: Teacher feature maps, matched by index (detached here).
            weighted: Multiply each term by ``loss_weight`` (the values to log).

        Returns:
            List of 0-d tensors, one per pair, carrying the student graph.
        """
        self._check_inputs(feats_s, feats_t)
        terms = []
        for i, (fs, ft) in enumerate(zip(feats_s, feats_t)):
            term = self.pair_term(i, fs, ft.detach().to(dtype=fs.dtype))
            terms.append(term * self.loss_weight if weighted else term)
        return terms

    def forward(self, feats_s: Sequence[Tensor], feats_t: Sequence[Tensor]) -> Tensor:
        """Weighted sum over tap pairs (0-d tensor keeping the graph)."""
        return torch.stack(self.forward_terms(feats_s, feats_t, weighted=True)).sum()

    def extra_repr(self) -> str:
        return f'loss_weight={self.loss_weight}'


@LOSS_REGISTRY.register()
class KDFitNetLoss(FeatureKDLossBase):
    """FitNet hint loss (docs/feature_kd.md, "FitNet"): Σ_l d(r_l(F_S^l), F_T^l).

    ``mode: regress`` compares the adapted student features with the teacher features
    elementwise; the model applies the 1×1 regressors (``feature_kd.adapter: auto|conv1x1``)
    before calling the loss, so channel counts must be equal here. ``mode: channel_mean`` is
    yun224/DUKD's "Fitnet": both maps are reduced to their channel mean (B×1×H×W) and compared,
    no regressor (channel agnostic).

    Args:
        loss_weight: Weight of the summed term. Default 10 (SR feature baselines use L1 ×10).
        distance: ``l1`` (mean absolute error, default) or ``l2`` (mean squared error).
        mode: ``regress`` (default) or ``channel_mean``.
    """

    DISTANCES = ('l1', 'l2')
    MODES = ('regress', 'channel_mean')

    def __init__(self, loss_weight: float = 10.0, distance: str = 'l1', mode: str = 'regress') -> None:
        super().__init__(loss_weight)
        self.distance = _check_choice('KDFitNetLoss', 'distance', distance, self.DISTANCES)
        self.mode = _check_choice('KDFitNetLoss', 'mode', mode, self.MODES)
        self.uses_adapter = self.mode == 'regress'
        self.channel_agnostic = self.mode == 'channel_mean'

    def _channel_error(self, i: int, fs: Tensor, ft: Tensor) -> str:
        return (f'KDFitNetLoss (mode=regress): pair {i}: student features have {fs.shape[1]} channels after '
                f'the adapter but teacher features have {ft.shape[1]} (student {tuple(fs.shape)}, teacher '
                f'{tuple(ft.shape)}); an adapter is needed: set train.feature_kd.adapter to auto or conv1x1')

    def pair_term(self, index: int, feat_s: Tensor, feat_t: Tensor) -> Tensor:
        if self.mode == 'channel_mean':
            feat_s = feat_s.mean(dim=1, keepdim=True)
            feat_t = feat_t.mean(dim=1, keepdim=True)
        if self.distance == 'l1':
            return F.l1_loss(feat_s, feat_t, reduction='mean')
        return F.mse_loss(feat_s, feat_t, reduction='mean')

    def extra_repr(self) -> str:
        return f'loss_weight={self.loss_weight}, distance={self.distance}, mode={self.mode}'


@LOSS_REGISTRY.register()
class KDAttentionLoss(FeatureKDLossBase):
    """Attention transfer (docs/feature_kd.md, "AT (attention transfer)").

    A(F) = Σ_c |F_c|^p (B×H×W); Q = vec(A) / (‖vec(A)‖₂ + 1e-6) per sample. Per pair:

    * ``sr_l1`` (default; FAKD code, yun224/DUKD): mean(|Q_S − Q_T|) over batch and positions.
    * ``paper`` (Zagoruyko & Komodakis): (β/2) · mean over the batch of ‖Q_S − Q_T‖₂.
    * ``code`` (mdistiller style): β · mean((Q_S − Q_T)²); A uses the channel *mean* of |F|^p as
      that code does (identical to the sum after normalisation up to the 1e-6 epsilon).

    Channel agnostic.

    Args:
        loss_weight: Weight of the summed term. Default ``None`` = 10 for ``sr_l1`` and 1 for
            ``paper`` / ``code`` (whose scale is carried by β).
        mode: ``sr_l1`` | ``paper`` | ``code``.
        p: Exponent of the attention map (>= 1), default 2.
        beta: β of ``paper`` / ``code`` (default 1000). Rejected in ``sr_l1`` mode (use
            ``loss_weight`` there).
    """

    MODES = ('sr_l1', 'paper', 'code')
    EPS = 1e-6

    def __init__(self, loss_weight: Optional[float] = None, mode: str = 'sr_l1', p: float = 2,
                 beta: Optional[float] = None) -> None:
        mode = _check_choice('KDAttentionLoss', 'mode', mode, self.MODES)
        if loss_weight is None:
            loss_weight = 10.0 if mode == 'sr_l1' else 1.0
        super().__init__(loss_weight)
        self.mode = mode
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not math.isfinite(p) or p < 1:
            raise ValueError(f'KDAttentionLoss: p must be a finite number >= 1 (|F|^p with p < 1 has an '
                             f'infinite gradient at 0), got {p!r}')
        self.p = float(p)
        if mode == 'sr_l1':
            if beta is not None:
                raise ValueError('KDAttentionLoss: beta has no effect in mode sr_l1 (use loss_weight); '
                                 'beta is only used by modes paper and code')
            self.beta = None
        else:
            self.beta = _check_weight('KDAttentionLoss', 'beta', 1000.0 if beta is None else beta)

    def attention(self, feat: Tensor) -> Tensor:
        """Normalised attention vector Q (B×HW) of a B×C×H×W map."""
        a = feat.abs().pow(self.p)
        a = a.mean(dim=1) if self.mode == 'code' else a.sum(dim=1)
        a = a.flatten(1)
        return a / (a.norm(p=2, dim=1, keepdim=True) + self.EPS)

    def pair_term(self, index: int, feat_s: Tensor, feat_t: Tensor) -> Tensor:
        diff = self.attention(feat_s) - self.attention(feat_t)
        if self.mode == 'sr_l1':
            return diff.abs().mean()
        if self.mode == 'paper':
            return self.beta / 2 * diff.norm(p=2, dim=1).mean()
        return self.beta * diff.pow(2).mean()

    def extra_repr(self) -> str:
        return f'loss_weight={self.loss_weight}, mode={self.mode}, p={self.p}, beta={self.beta}'


@LOSS_REGISTRY.register()
class KDAffinityLoss(FeatureKDLossBase):
    """FAKD feature-affinity loss (docs/feature_kd.md, "FAKD (feature affinity)").

    Per sample, F (C×N, N = H·W) has each spatial column normalised over channels,
    f̂_i = f_i / (‖f_i‖₂ + 1e-8); affinity A = F̂ᵀF̂ (N×N). Per pair: mean|A_S − A_T| over
    batch and N×N entries. Channel agnostic.

    Memory: ``blocked: true`` (default) evaluates the loss tile by tile (``tile``×``tile`` blocks
    of the upper triangle, :func:`blocked_affinity_l1`) and recomputes each tile in the backward,
    so it needs O(B·C·N + B·tile²) memory. ``blocked: false`` builds the full B×N×N matrices,
    B·N²·4 bytes in float32 per network per tap (48×48 LR patches at batch 16: N = 2304,
    ≈0.34 GB), plus difference and autograd buffers of the same size. Either way the cost is
    O(B·C·N²), so the loss raises ``ValueError`` when N > ``max_hw``.

    Args:
        loss_weight: Weight of the summed term. Default 10 (FAKD code, yun224/DUKD).
        max_hw: Largest allowed H·W per map (default 65536 = 256×256); ``None`` disables the check.
            With ``blocked: false`` set it to about 4096 (64×64) to keep the full matrices small.
        blocked: Tiled, memory-lean evaluation (default) or the direct full-matrix one.
        tile: Side of the affinity tiles of the blocked path (default 512).
    """

    EPS = 1e-8

    def __init__(self, loss_weight: float = 10.0, max_hw: Optional[int] = 65536, blocked: bool = True,
                 tile: int = 512) -> None:
        super().__init__(loss_weight)
        if max_hw is not None and (isinstance(max_hw, bool) or not isinstance(max_hw, int) or max_hw <= 0):
            raise ValueError(f'KDAffinityLoss: max_hw must be a positive integer or null, got {max_hw!r}')
        if not isinstance(blocked, bool):
            raise ValueError(f'KDAffinityLoss: blocked must be true or false, got {blocked!r}')
        if isinstance(tile, bool) or not isinstance(tile, int) or tile <= 0:
            raise ValueError(f'KDAffinityLoss: tile must be a positive integer, got {tile!r}')
        self.max_hw = max_hw
        self.blocked = blocked
        self.tile = tile

    def normalised(self, feat: Tensor) -> Tensor:
        """B×C×N map with each spatial column divided by its channel norm (+ 1e-8)."""
        f = feat.flatten(2)
        return f / (f.norm(p=2, dim=1, keepdim=True) + self.EPS)

    def affinity(self, feat: Tensor) -> Tensor:
        """B×N×N affinity of a B×C×H×W map (the direct path)."""
        f = self.normalised(feat)
        return torch.bmm(f.transpose(1, 2), f)

    def pair_term(self, index: int, feat_s: Tensor, feat_t: Tensor) -> Tensor:
        b, _, h, w = feat_s.shape
        n = h * w
        if self.max_hw is not None and n > self.max_hw:
            gb = b * n * n * 4 / 1e9
            raise ValueError(f'KDAffinityLoss: pair {index}: H·W = {h}×{w} = {n} exceeds max_hw={self.max_hw}; '
                             f'the B×N×N affinity (B={b}, N={n}) has {b * n * n:.3g} entries, {gb:.2f} GB in float32 '
                             f'per network on the direct path (blocked={self.blocked}), O(B·C·N²) work either way. '
                             'Use smaller training patches or raise max_hw.')
        if self.blocked:
            return blocked_affinity_l1(self.normalised(feat_s), self.normalised(feat_t), self.tile)
        return (self.affinity(feat_s) - self.affinity(feat_t)).abs().mean()

    def extra_repr(self) -> str:
        return f'loss_weight={self.loss_weight}, max_hw={self.max_hw}, blocked={self.blocked}, tile={self.tile}'


def _upper_tiles(n: int, tile: int):
    """(rows, cols, weight) of the tiles on and above the diagonal of an N×N matrix.

    Affinities are symmetric, so an off-diagonal tile stands for itself and its transpose (weight 2).
    """
    starts = range(0, n, tile)
    for i in starts:
        for j in starts:
            if j >= i:
                yield slice(i, min(i + tile, n)), slice(j, min(j + tile, n)), 1.0 if i == j else 2.0


class _BlockedAffinityL1(torch.autograd.Function):
    """mean|F̂_SᵀF̂_S − F̂_TᵀF̂_T| over B×N×N, one tile at a time; the backward recomputes each tile.

    A tile of A_S − A_T is one product G_IᵀH_J with G = [F̂_S; F̂_T] and H = [F̂_S; −F̂_T] (channels
    stacked). With S = sign(A_S − A_T) (symmetric), ∂L/∂F̂_S = 2·F̂_S·S/(B·N²) and
    ∂L/∂F̂_T = −2·F̂_T·S/(B·N²); for an off-diagonal tile (I, J) of weight 2 that is
    g_I += 2·F̂_J·S_IJᵀ and g_J += 2·F̂_I·S_IJ.
    """

    @staticmethod
    def forward(ctx, fs: Tensor, ft: Tensor, tile: int) -> Tensor:  # type: ignore[override]
        b, _, n = fs.shape
        g, h = torch.cat([fs, ft], dim=1), torch.cat([fs, -ft], dim=1)
        gt = g.transpose(1, 2).contiguous()
        total = fs.new_zeros((), dtype=torch.float64)  # tile sums accumulate without a host sync
        for rows, cols, weight in _upper_tiles(n, tile):
            total += weight * torch.bmm(gt[:, rows], h[:, :, cols]).abs_().sum().double()
        ctx.save_for_backward(fs, ft)
        ctx.tile = tile
        return (total / (b * n * n)).to(fs.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        with torch.autocast(device_type=grad.device.type, enabled=False):
            return _BlockedAffinityL1._backward(ctx, grad)

    @staticmethod
    def _backward(ctx, grad: Tensor):
        fs, ft = ctx.saved_tensors
        b, c_s, n = fs.shape
        g, h = torch.cat([fs, ft], dim=1), torch.cat([fs, -ft], dim=1)
        gt = g.transpose(1, 2).contiguous()
        need_s, need_t = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        # one accumulator for the inputs that need a gradient: rows of g (F̂_S, F̂_T) or F̂_S alone
        f = g if need_t else fs
        acc = torch.zeros_like(f)
        for rows, cols, weight in _upper_tiles(n, ctx.tile):
            sign = torch.bmm(gt[:, rows], h[:, :, cols]).sign_()
            if weight == 1.0:  # diagonal tile: F̂_I·(S_II + S_IIᵀ)
                acc[:, :, rows] += torch.bmm(f[:, :, rows], sign + sign.transpose(1, 2))
            else:
                acc[:, :, rows].baddbmm_(f[:, :, cols], sign.transpose(1, 2), alpha=2.0)
                acc[:, :, cols].baddbmm_(f[:, :, rows], sign, alpha=2.0)
        acc.mul_(grad / (b * n * n))
        grad_s = acc[:, :c_s] if need_s else None
        grad_t = acc[:, c_s:].neg() if need_t else None
        return grad_s, grad_t, None


def blocked_affinity_l1(fs: Tensor, ft: Tensor, tile: int = 512) -> Tensor:
    """mean|F̂_SᵀF̂_S − F̂_TᵀF̂_T| of normalised B×C_S×N and B×C_T×N maps in O(B·tile²) extra memory.

    Equal to the direct full-matrix value up to float rounding (the symmetric half is summed
    twice); the gradient is exact and recomputes each tile instead of storing the B×N×N matrices.
    """
    if fs.dtype in (torch.float16, torch.bfloat16):  # N² terms: sum in float32, outside autocast
        fs, ft = fs.float(), ft.float()
    with torch.autocast(device_type=fs.device.type, enabled=False):
        return _BlockedAffinityL1.apply(fs, ft, tile)


@LOSS_REGISTRY.register()
class KDRelationLoss(FeatureKDLossBase):
    """Relational KD (docs/feature_kd.md, "RKD (relational KD)"): distance and angle potentials over the batch.

    Each sample is embedded as t_i = spatial mean of F_i (``embed: avg``, B×C) or the flattened
    map (``embed: flatten``, B×CHW). For student and teacher separately:

    * ψ_D(i, j) = ‖t_i − t_j‖₂ / μ, μ = mean of ‖t_i − t_j‖₂ over ordered pairs i ≠ j;
    * ψ_A(i, j, k) = ⟨e_ij, e_kj⟩, e_ij = (t_i − t_j) / ‖t_i − t_j‖₂ (angle at vertex j).

    Per pair: λ_D · Huber(ψ_D^S, ψ_D^T) + λ_A · Huber(ψ_A^S, ψ_A^T) (smooth L1, δ = 1), the first
    averaged over the B(B−1) ordered pairs i ≠ j, the second over the B(B−1)(B−2) triplets of
    pairwise distinct indices. (mmrazor / mdistiller average over the full B×B and B×B×B grids
    whose degenerate entries contribute 0, i.e. their values are ours × (B−1)/B and
    × (B−1)(B−2)/B².) Width agnostic.

    Degenerate cases: with B < 3 the angle term is skipped (one warning per loss instance), with
    B < 2 the distance term too (the term is then a graph-connected zero). Note that with B = 2
    the single pair's ψ_D is identically 1 for both networks, so RKD needs B ≥ 3 to carry any
    signal. Zero distances are handled with epsilons (μ clamped to ≥ 1e-8, squared distances to
    ≥ 1e-12), so identical embeddings give finite values and gradients.

    Memory: the pairwise differences are B×B×D (D = C for ``avg``, C·H·W for ``flatten``; e.g.
    B = 16, 64×48×48 maps: ≈0.15 GB float32 per network) and the angles B×B×B.

    Args:
        loss_weight: Weight of the summed term. Default 1.
        lambda_d: Weight λ_D of the distance term (default 25).
        lambda_a: Weight λ_A of the angle term (default 50; 0 disables it).
        embed: ``avg`` (default) or ``flatten``.
    """

    EMBEDS = ('avg', 'flatten')
    EPS_SQ = 1e-12
    EPS_MU = 1e-8

    def __init__(self, loss_weight: float = 1.0, lambda_d: float = 25.0, lambda_a: float = 50.0,
                 embed: str = 'avg') -> None:
        super().__init__(loss_weight)
        self.lambda_d = _check_weight('KDRelationLoss', 'lambda_d', lambda_d)
        self.lambda_a = _check_weight('KDRelationLoss', 'lambda_a', lambda_a)
        self.embed = _check_choice('KDRelationLoss', 'embed', embed, self.EMBEDS)
        self._warned_small_batch = False

    def embedding(self, feat: Tensor) -> Tensor:
        """B×D embedding of a B×C×H×W map."""
        return feat.mean(dim=(2, 3)) if self.embed == 'avg' else feat.flatten(1)

    def _differences(self, emb: Tensor):
        """Pairwise differences diff[i, j] = t_i − t_j and their norms (B×B×D, B×B)."""
        diff = emb.unsqueeze(1) - emb.unsqueeze(0)
        dist = diff.pow(2).sum(dim=-1).clamp_min(self.EPS_SQ).sqrt()
        return diff, dist

    def distance_potential(self, dist: Tensor) -> Tensor:
        """ψ_D over the ordered pairs i ≠ j (flattened, length B(B−1))."""
        b = dist.shape[0]
        off = ~torch.eye(b, dtype=torch.bool, device=dist.device)
        d = dist[off]
        return d / d.mean().clamp_min(self.EPS_MU)

    @staticmethod
    def _triplet_mask(b: int, device: torch.device) -> Tensor:
        idx = torch.arange(b, device=device)
        i, j, k = idx.view(b, 1, 1), idx.view(1, b, 1), idx.view(1, 1, b)
        return (i != j) & (j != k) & (i != k)

    def angle_potential(self, diff: Tensor, dist: Tensor) -> Tensor:
        """ψ_A over the distinct triplets (flattened, length B(B−1)(B−2))."""
        e = diff / dist.unsqueeze(-1)  # e[i, j] = (t_i − t_j)/‖·‖; e[j, j] = 0
        # angle[i, j, k] = <e[i, j], e[k, j]>
        angle = torch.einsum('ijd,kjd->ijk', e, e)
        return angle[self._triplet_mask(diff.shape[0], diff.device)]

    def pair_term(self, index: int, feat_s: Tensor, feat_t: Tensor) -> Tensor:
        b = feat_s.shape[0]
        use_angle = self.lambda_a > 0 and b >= 3
        use_dist = self.lambda_d > 0 and b >= 2
        if (self.lambda_a > 0 and b < 3) or (self.lambda_d > 0 and b < 2):
            if not self._warned_small_batch:
                skipped = 'angle term' if b == 2 else 'distance and angle terms'
                get_root_logger().warning(
                    f'KDRelationLoss: batch size {b} is too small, skipping the {skipped} (distance needs B >= 2, '
                    'angle needs B >= 3; with B = 2 the distance potential of the single pair is identically 1, '
                    'so the loss is 0 and carries no signal). Warned once.')
                self._warned_small_batch = True
        if not (use_angle or use_dist):
            return feat_s.sum() * 0.0  # graph-connected zero
        es, et = self.embedding(feat_s), self.embedding(feat_t)
        diff_s, dist_s = self._differences(es)
        diff_t, dist_t = self._differences(et)
        parts = []
        if use_dist:
            parts.append(self.lambda_d * F.smooth_l1_loss(
                self.distance_potential(dist_s), self.distance_potential(dist_t), beta=1.0, reduction='mean'))
        if use_angle:
            parts.append(self.lambda_a * F.smooth_l1_loss(
                self.angle_potential(diff_s, dist_s), self.angle_potential(diff_t, dist_t), beta=1.0,
                reduction='mean'))
        return sum(parts)

    def extra_repr(self) -> str:
        return (f'loss_weight={self.loss_weight}, lambda_d={self.lambda_d}, lambda_a={self.lambda_a}, '
                f'embed={self.embed}')
