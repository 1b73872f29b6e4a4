"""FitNet regressors (docs/feature_kd.md, "FitNet"): a 1×1 conv adapter and a per-tap-pair adapter bank."""
from __future__ import annotations

from typing import List, Sequence, Tuple

from basicsr.utils.registry import ARCH_REGISTRY
from torch import Tensor, nn

__all__ = ['KDConvAdapter', 'KDAdapterBank']


@ARCH_REGISTRY.register()
class KDConvAdapter(nn.Module):
    """1×1 convolution with bias mapping student width to teacher width.

    Args:
        num_in_ch: Student channels C_S.
        num_out_ch: Teacher channels C_T.
    """

    def __init__(self, num_in_ch: int, num_out_ch: int) -> None:
        super().__init__()
        for key, value in (('num_in_ch', num_in_ch), ('num_out_ch', num_out_ch)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f'KDConvAdapter: {key} must be a positive integer, got {value!r}')
        self.num_in_ch = num_in_ch
        self.num_out_ch = num_out_ch
        self.conv = nn.Conv2d(num_in_ch, num_out_ch, kernel_size=1, stride=1, padding=0, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        """Map a B×C_S×H×W tensor to B×C_T×H×W."""
        return self.conv(x)


class KDAdapterBank(nn.Module):
    """One optional :class:`KDConvAdapter` per tap pair.

    Policies: ``auto`` creates an adapter only where student and teacher widths differ (identity
    elsewhere), ``conv1x1`` creates one for every pair, ``none`` creates none and raises at
    construction if any pair has different widths. Identity slots hold ``nn.Identity`` (no
    parameters), so state-dict keys are ``adapters.<pair index>.conv.{weight,bias}``.

    Args:
        channel_pairs: ``[(student_channels, teacher_channels), ...]``, one per tap pair.
        policy: ``auto`` | ``conv1x1`` | ``none``.
    """

    POLICIES = ('auto', 'conv1x1', 'none')

    def __init__(self, channel_pairs: Sequence[Tuple[int, int]], policy: str = 'auto') -> None:
        super().__init__()
        if policy not in self.POLICIES:
            raise ValueError(f'KDAdapterBank: unknown adapter policy {policy!r}; valid values: '
                             f'{", ".join(self.POLICIES)}')
        pairs = [tuple(p) for p in channel_pairs]
        if not pairs:
            raise ValueError('KDAdapterBank: channel_pairs is empty (need one (C_S, C_T) per tap pair)')
        for i, p in enumerate(pairs):
            if len(p) != 2:
                raise ValueError(f'KDAdapterBank: pair {i}: expected (student_channels, teacher_channels), got {p!r}')
        self.policy = policy
        self.channel_pairs: List[Tuple[int, int]] = [(int(cs), int(ct)) for cs, ct in pairs]
        mismatched = [(i, cs, ct) for i, (cs, ct) in enumerate(self.channel_pairs) if cs != ct]
        if policy == 'none' and mismatched:
            detail = ', '.join(f'pair {i}: student {cs} vs teacher {ct}' for i, cs, ct in mismatched)
            raise ValueError(f'KDAdapterBank: adapter policy none but channel counts differ ({detail}); '
                             'use adapter: auto or conv1x1')
        adapters = []
        for cs, ct in self.channel_pairs:
            if policy == 'conv1x1' or (policy == 'auto' and cs != ct):
                adapters.append(KDConvAdapter(cs, ct))
            else:
                adapters.append(nn.Identity())
        self.adapters = nn.ModuleList(adapters)

    @property
    def num_adapters(self) -> int:
        """Number of real (parametrised) adapters; 0 means the bank is a pure identity."""
        return sum(isinstance(m, KDConvAdapter) for m in self.adapters)

    def forward(self, feats_s: Sequence[Tensor]) -> List[Tensor]:
        """Apply adapter ``i`` to student feature ``i`` (B×C_S×H×W -> B×C_T×H×W)."""
        if isinstance(feats_s, Tensor) or len(feats_s) != len(self.adapters):
            n = 'a tensor' if isinstance(feats_s, Tensor) else f'{len(feats_s)} features'
            raise ValueError(f'KDAdapterBank: expected a list of {len(self.adapters)} student features, got {n}')
        out = []
        for i, (f, adapter) in enumerate(zip(feats_s, self.adapters)):
            expected = self.channel_pairs[i][0]
            if f.dim() != 4 or f.shape[1] != expected:
                raise ValueError(f'KDAdapterBank: pair {i}: expected a B×{expected}×H×W student map, '
                                 f'got {tuple(f.shape)}')
            out.append(adapter(f))
        return out

    def extra_repr(self) -> str:
        return f'policy={self.policy}, channel_pairs={self.channel_pairs}'
