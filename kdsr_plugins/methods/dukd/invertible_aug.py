"""Invertible augmentations for DUKD's label-consistency regularisation (docs/dukd.md, "Method in one paragraph").

Operation pool, applied to B×C×H×W tensors in the fixed order ``i, h, v, t``:

* ``i``: colour inversion ``x -> max_val - x`` (``max_val = 1`` for [0, 1] images),
* ``h``: flip along dim -2 (rows, up-down),
* ``v``: flip along dim -1 (columns, left-right),
* ``t``: transpose H <-> W (requires square spatial size).

Every sample of a batch draws its own subset: each op is switched on independently with
probability ``p``. A plan is a boolean mask of shape ``(N, 4)`` (no index lists, so a plan
with exactly one selected sample is not special).

The exact inverse undoes the ops in reverse order (``t, v, h, i``). The reference code
(yun224/DUKD) applies the same sequence ``i, h, v, t`` again, which leaves the subsets
``{h,t}, {v,t}, {i,h,t}, {i,v,t}`` rotated by 180°; it is reproduced by ``inverse='official'``.

Typical use::

    aug = InvertibleAugmentation(p=0.3)
    plan = aug.sample(z.size(0), device=z.device)
    out = aug.invert(student(aug.apply(z, plan)), plan)   # == consistent_forward(student, z, aug)
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
from torch import Tensor

from kdsr_plugins.core.schema import check_choice

OPS: tuple[str, ...] = ('i', 'h', 'v', 't')
"""Operation names in their forward application order."""

INVERSE_MODES: tuple[str, ...] = ('exact', 'official')
"""Accepted values of ``lc_inverse``."""


@dataclass(frozen=True)
class AugPlan:
    """Per-sample selection of augmentation ops.

    Attributes:
        mask: Bool tensor of shape ``(N, 4)``; ``mask[n, k]`` switches op ``OPS[k]`` on for
            sample ``n``.
    """

    mask: Tensor

    def __post_init__(self) -> None:
        if self.mask.dim() != 2 or self.mask.size(1) != len(OPS):
            raise ValueError(f'AugPlan.mask must have shape (N, {len(OPS)}), got {tuple(self.mask.shape)}')
        if self.mask.dtype != torch.bool:
            raise ValueError(f'AugPlan.mask must be a bool tensor, got {self.mask.dtype}')

    @property
    def num_samples(self) -> int:
        """Number of samples N the plan was drawn for."""
        return int(self.mask.size(0))

    def any(self) -> bool:
        """Whether at least one op is switched on for at least one sample."""
        return bool(self.mask.any())

    def uses(self, op: str) -> bool:
        """Whether op ``op`` is switched on for at least one sample."""
        return bool(self.mask[:, OPS.index(op)].any())

    def subsets(self) -> list[str]:
        """Per-sample op subsets as strings in application order, e.g. ``['', 'ht', 'ivt']``."""
        rows = self.mask.detach().cpu().tolist()
        return [''.join(op for op, on in zip(OPS, row) if on) for row in rows]

    def to(self, device: torch.device | str) -> 'AugPlan':
        """Copy of the plan on ``device``."""
        return AugPlan(self.mask.to(device))

    @classmethod
    def from_subsets(cls, subsets: Sequence[str | Sequence[str]],
                     device: torch.device | str | None = None) -> 'AugPlan':
        """Build a plan from explicit per-sample subsets.

        Args:
            subsets: One entry per sample: a string (``'hvt'``) or a sequence of op names.
            device: Device of the mask.

        Raises:
            ValueError: On an unknown op name.
        """
        rows = []
        for subset in subsets:
            ops = list(subset)
            unknown = sorted(set(ops) - set(OPS))
            if unknown:
                raise ValueError(f'Unknown augmentation op(s) {unknown}; valid ops: {list(OPS)}')
            rows.append([op in ops for op in OPS])
        mask = torch.tensor(rows, dtype=torch.bool, device=device).reshape(len(rows), len(OPS))
        return cls(mask)


def all_subsets() -> Iterator[str]:
    """Yield the 16 subsets of ``OPS`` as strings in application order (``''`` first)."""
    for r in range(len(OPS) + 1):
        for combo in itertools.combinations(OPS, r):
            yield ''.join(combo)


def _op(x: Tensor, op: str, max_val: float) -> Tensor:
    if op == 'i':
        return max_val - x
    if op == 'h':
        return x.flip(-2)
    if op == 'v':
        return x.flip(-1)
    return x.transpose(-2, -1)


def _select(x: Tensor, op: str, sel: Tensor, max_val: float) -> Tensor:
    """Apply ``op`` to the samples where ``sel`` is True; keep the others (autograd-safe)."""
    if not bool(sel.any()):
        return x
    if op == 't' and x.size(-2) != x.size(-1):
        raise ValueError(f'Transpose augmentation needs square tensors, got spatial size '
                         f'{tuple(x.shape[-2:])}; use square patches or drop op "t"')
    sel = sel.to(x.device).view(-1, *([1] * (x.dim() - 1)))
    return torch.where(sel, _op(x, op, max_val), x)


class InvertibleAugmentation:
    """Sampler, forward and inverse of DUKD's invertible augmentations.

    Args:
        p: Per-sample, per-op probability (``train.noisy.prob``), in [0, 1].
        inverse: ``'exact'`` (default; undo in reverse order) or ``'official'`` (reference
            quirk: re-apply in forward order).
        max_val: Colour-inversion reference, ``x -> max_val - x`` (1.0 for [0, 1] images).
    """

    def __init__(self, p: float = 0.3, inverse: str = 'exact', max_val: float = 1.0) -> None:
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= float(p) <= 1.0:
            raise ValueError(f'Augmentation probability p must be a number in [0, 1], got {p!r}')
        check_choice(inverse, INVERSE_MODES, f'Unknown inverse mode {inverse!r}; valid: {list(INVERSE_MODES)}')
        self.p = float(p)
        self.inverse = inverse
        self.max_val = float(max_val)

    def __repr__(self) -> str:
        return f'{type(self).__name__}(p={self.p}, inverse={self.inverse!r}, max_val={self.max_val})'

    def sample(self, num_samples: int, generator: torch.Generator | None = None,
               device: torch.device | str | None = None) -> AugPlan:
        """Draw an independent op subset for each of ``num_samples`` samples.

        Random numbers are drawn on the CPU (from ``generator`` or the global CPU RNG, which
        BasicSR seeds), then the mask is moved to ``device``.

        Args:
            num_samples: Number of samples N (e.g. B·n zoom-in tiles).
            generator: Optional CPU generator for reproducible draws.
            device: Device of the returned mask.
        """
        if num_samples < 0:
            raise ValueError(f'num_samples must be >= 0, got {num_samples}')
        mask = torch.rand(num_samples, len(OPS), generator=generator) < self.p
        return AugPlan(mask.to(device) if device is not None else mask)

    def apply(self, x: Tensor, plan: AugPlan) -> Tensor:
        """Forward transform F: apply each sample's ops in the order i, h, v, t.

        Args:
            x: Tensor of shape (N, C, H, W); H == W is required only if some sample uses ``t``.
            plan: Plan with ``plan.num_samples == N``.

        Returns:
            The augmented tensor (``x`` itself when the plan selects nothing).

        Raises:
            ValueError: Batch-size mismatch, or ``t`` selected on a non-square tensor.
        """
        return self._run(x, plan, OPS)

    def invert(self, y: Tensor, plan: AugPlan) -> Tensor:
        """Inverse transform F⁻¹ applied to the student output of ``apply(x, plan)``.

        ``inverse='exact'`` undoes the ops in reverse order (t, v, h, i); ``'official'``
        re-applies them in forward order (wrong for {h,t}, {v,t}, {i,h,t}, {i,v,t}: 180°
        rotation).

        Args:
            y: Tensor of shape (N, C, H', W') (any spatial size, e.g. the upscaled output).
            plan: The plan used by ``apply``.
        """
        order = OPS[::-1] if self.inverse == 'exact' else OPS
        return self._run(y, plan, order)

    def _run(self, x: Tensor, plan: AugPlan, order: Sequence[str]) -> Tensor:
        if x.dim() < 3:
            raise ValueError(f'Expected a (N, C, H, W) tensor, got shape {tuple(x.shape)}')
        if x.size(0) != plan.num_samples:
            raise ValueError(f'Plan drawn for {plan.num_samples} samples, tensor has {x.size(0)}')
        if not plan.any():
            return x
        for op in order:
            x = _select(x, op, plan.mask[:, OPS.index(op)], self.max_val)
        return x


def consistent_forward(net: Callable[[Tensor], Tensor], x: Tensor, aug: InvertibleAugmentation | None,
                       generator: torch.Generator | None = None,
                       plan: AugPlan | None = None) -> Tensor:
    """Label-consistent forward ``F⁻¹(net(F(x)))`` with a freshly drawn (or given) plan.

    Args:
        net: The network (pass the DDP wrapper, not the bare model).
        x: Input batch (N, C, H, W).
        aug: Augmentation; ``None`` means label consistency off, i.e. ``net(x)``.
        generator: Optional CPU generator used when ``plan`` is None.
        plan: Explicit plan (tests, or reuse across calls).

    Returns:
        The student output in the geometry/colours of the un-augmented input.
    """
    if aug is None:
        return net(x)
    if plan is None:
        plan = aug.sample(x.size(0), generator=generator, device=x.device)
    return aug.invert(net(aug.apply(x, plan)), plan)


def rot180(x: Tensor) -> Tensor:
    """Rotate the last two dims by 180° (what the official inverse leaves on failing subsets)."""
    return x.flip(-2, -1)
