"""Stage runners: run a BasicSR SR network as head / stages / tail (docs/core.md, "Stage runners").

A stage runner executes a *bare* network with its own submodules, split at body-unit
boundaries, so that a forward pass can be resumed from an intermediate feature (MiPKD's block
prior mixer, CrossKD) and finished with an explicitly given head feature ``h0``.

Body units: EDSR residual blocks ``body.i``, RCAN residual groups ``body.i``, SwinIR RSTBs
``layers.i`` (0-based, the same convention as integer feature taps).

Example::

    runner = build_stage_runner(net, [3, 7])
    ctx = runner.head(x)
    f1 = runner.stage(1, ctx.f0, ctx)
    f2 = runner.stage(2, f1, ctx)
    y = runner.tail(f2, ctx)            # == net(x) in eval mode
    y2 = runner.forward_from(1, f1, ctx)  # stages 2..K, then the tail

No operation of a runner works in place on ``h0`` or on any tensor it returns.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Type

import torch
from basicsr.archs.edsr_arch import EDSR
from basicsr.archs.rcan_arch import RCAN
from basicsr.archs.swinir_arch import SwinIR
from torch import Tensor, nn

__all__ = [
    'StageContext',
    'StageRunner',
    'EDSRStageRunner',
    'RCANStageRunner',
    'SwinIRStageRunner',
    'RUNNER_REGISTRY',
    'build_stage_runner',
    'get_runner_class',
    'num_units',
    'unit_module_path',
    'feature_channels',
    'supported_arch_names',
]


@dataclass
class StageContext:
    """Per-input state produced by :meth:`StageRunner.head`.

    Attributes:
        h0: Head feature map ``conv_first(x')`` (B×C×H×W). Never modified in place.
        x_size: Spatial size (H, W) of the LR feature maps.
        f0: Running feature at the start of stage 1, in native form (map for EDSR/RCAN,
            where it is the very tensor ``h0``; tokens B×HW×C for SwinIR).
        dtype: dtype of the network input; the de-normalisation mean is cast to it.
    """

    h0: Tensor
    x_size: Tuple[int, int]
    f0: Tensor
    dtype: torch.dtype


def _unwrap(net: nn.Module) -> nn.Module:
    """Returns the bare module of a (Distributed)DataParallel wrapper, else ``net``."""
    if isinstance(net, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        return net.module
    return net


class StageRunner:
    """Base class: boundary bookkeeping and the head / stage / tail protocol.

    Subclasses set ``arch_name`` / ``unit_container`` and implement :meth:`units`,
    :meth:`feature_channels`, :meth:`head`, :meth:`_apply_unit` and :meth:`_finish`.

    Args:
        net: Bare network (a DDP/DP wrapper is unwrapped).
        boundaries: Strictly increasing 0-based body-unit indices b_1 < … < b_K. Stage k runs
            units b_{k-1}+1 … b_k (b_0 = -1); units after b_K run in the tail. An empty
            sequence (K = 0) is allowed: the tail then runs the whole body.
    """

    arch_name: str = ''
    unit_container: str = ''

    def __init__(self, net: nn.Module, boundaries: Sequence[int]) -> None:
        self.net = _unwrap(net)
        self.check_net(self.net)
        self.num_units = len(self.units(self.net))
        self.boundaries: Tuple[int, ...] = _validate_boundaries(boundaries, self.num_units,
                                                                self.arch_name)
        starts = (-1, ) + self.boundaries
        self._stage_ranges: List[range] = [
            range(starts[k] + 1, starts[k + 1] + 1) for k in range(len(self.boundaries))
        ]
        self._tail_range = range(starts[-1] + 1, self.num_units)

    # ------------------------------------------------------------------ arch hooks
    @classmethod
    def check_net(cls, net: nn.Module) -> None:
        """Raises if ``net`` has a configuration this runner cannot reproduce."""

    @classmethod
    def units(cls, net: nn.Module) -> Sequence[nn.Module]:
        """Returns the body units of ``net`` (indexable, ordered)."""
        return getattr(net, cls.unit_container)

    @classmethod
    def feature_channels(cls, net: nn.Module) -> int:
        """Returns the body feature width C."""
        raise NotImplementedError

    @classmethod
    def unit_module_path(cls, i: int) -> str:
        """Returns the ``named_modules()`` path of body unit ``i``."""
        return f'{cls.unit_container}.{i}'

    def head(self, x: Tensor) -> StageContext:
        """Runs normalisation and the shallow head.

        Args:
            x: LR input, B×C_in×H×W.

        Returns:
            The context holding ``h0``, ``x_size``, ``f0`` and the input dtype.
        """
        raise NotImplementedError

    def _apply_unit(self, unit: nn.Module, f: Tensor, ctx: StageContext) -> Tensor:
        raise NotImplementedError

    def _finish(self, f: Tensor, ctx: StageContext, h0: Tensor) -> Tensor:
        """Body end, global residual with ``h0``, reconstruction, de-normalisation."""
        raise NotImplementedError

    def _check_feature(self, f: Tensor, ctx: StageContext, what: str) -> None:
        """Raises a clear error when ``f`` is not in the runner's native form."""

    # ------------------------------------------------------------------ public API
    @property
    def num_stages(self) -> int:
        """Number of stages K (= number of boundaries)."""
        return len(self.boundaries)

    def stage_units(self, k: int) -> range:
        """Returns the body-unit indices run by stage ``k`` (1-based)."""
        self._check_stage_index(k)
        return self._stage_ranges[k - 1]

    @property
    def tail_units(self) -> range:
        """Body-unit indices run by the tail (those after b_K; may be empty)."""
        return self._tail_range

    def stage(self, k: int, f: Tensor, ctx: StageContext) -> Tensor:
        """Runs stage ``k`` (1..K) on the running feature ``f`` (native form)."""
        self._check_stage_index(k)
        self._check_feature(f, ctx, f'stage {k} input')
        return self._run_units(self._stage_ranges[k - 1], f, ctx)

    def tail(self, f: Tensor, ctx: StageContext, h0: Optional[Tensor] = None) -> Tensor:
        """Runs the units after b_K, the body end and the reconstruction.

        Args:
            f: Running feature after stage K (native form).
            ctx: Context from :meth:`head` (supplies ``x_size``, the input dtype and the
                default ``h0``).
            h0: Head feature used in the global residual; defaults to ``ctx.h0``. MiPKD passes
                the head feature of the network that owns this tail.

        Returns:
            The SR output, de-normalised (B×C_out×sH×sW).
        """
        self._check_feature(f, ctx, 'tail input')
        if h0 is None:
            h0 = ctx.h0
        f = self._run_units(self._tail_range, f, ctx)
        return self._finish(f, ctx, h0)

    def forward_from(self, k: int, f: Tensor, ctx: StageContext,
                     h0: Optional[Tensor] = None) -> Tensor:
        """Continues feature ``f`` from boundary ``k`` to the output of this network.

        Runs stages k+1..K and then the tail. ``k = 0`` starts from ``f0``'s position
        (before stage 1); ``k = K`` runs the tail only.

        Args:
            k: Boundary index in 0..K.
            f: Feature at boundary ``k`` (native form; SwinIR tokens).
            ctx: Context from :meth:`head`.
            h0: Head feature for the global residual; defaults to ``ctx.h0``.

        Returns:
            The SR output.
        """
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= self.num_stages:
            raise ValueError(f'forward_from: k must be an int in 0..{self.num_stages} '
                             f'(K = number of boundaries), got {k!r}')
        for j in range(k + 1, self.num_stages + 1):
            f = self.stage(j, f, ctx)
        return self.tail(f, ctx, h0=h0)

    def run_all(self, x: Tensor) -> Tuple[Tensor, List[Tensor], StageContext]:
        """Runs head, every stage and the tail.

        Returns:
            ``(y, [f_1, …, f_K], ctx)`` with native-form boundary features.
        """
        ctx = self.head(x)
        feats: List[Tensor] = []
        f = ctx.f0
        for k in range(1, self.num_stages + 1):
            f = self.stage(k, f, ctx)
            feats.append(f)
        return self.tail(f, ctx), feats, ctx

    def to_map(self, f: Tensor, ctx: StageContext) -> Tensor:
        """Converts a native-form feature to a B×C×H×W map (identity for conv nets)."""
        return f

    def to_tokens(self, m: Tensor, ctx: StageContext) -> Tensor:
        """Converts a B×C×H×W map to the native form (identity for conv nets)."""
        return m

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(arch={self.arch_name}, num_units={self.num_units}, '
                f'boundaries={list(self.boundaries)}, tail_units={list(self._tail_range)})')

    # ------------------------------------------------------------------ helpers
    def _check_stage_index(self, k: int) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= self.num_stages:
            raise ValueError(f'stage index must be an int in 1..{self.num_stages} '
                             f'(K = number of boundaries {list(self.boundaries)}), got {k!r}')

    def _run_units(self, idx: range, f: Tensor, ctx: StageContext) -> Tensor:
        units = self.units(self.net)
        for i in idx:
            f = self._apply_unit(units[i], f, ctx)
        return f

    def _mean(self, ctx: StageContext, ref: Tensor) -> Tensor:
        """This network's RGB mean on ``ref``'s device with the input dtype (``type_as(x)``)."""
        return self.net.mean.to(device=ref.device, dtype=ctx.dtype)


class _ConvStageRunner(StageRunner):
    """Shared runner for EDSR and RCAN (docs/core.md, "Stage runners"); features are maps throughout."""

    unit_container = 'body'

    @classmethod
    def feature_channels(cls, net: nn.Module) -> int:
        return net.conv_first.out_channels

    def head(self, x: Tensor) -> StageContext:
        _check_input(x)
        net = self.net
        mean = net.mean.type_as(x)
        h0 = net.conv_first((x - mean) * net.img_range)
        return StageContext(h0=h0, x_size=(h0.shape[2], h0.shape[3]), f0=h0, dtype=x.dtype)

    def _apply_unit(self, unit: nn.Module, f: Tensor, ctx: StageContext) -> Tensor:
        return unit(f)

    def _finish(self, f: Tensor, ctx: StageContext, h0: Tensor) -> Tensor:
        net = self.net
        r = net.conv_after_body(f) + h0  # out of place: h0 may feed several tails
        y = net.conv_last(net.upsample(r))
        return y / net.img_range + self._mean(ctx, y)

    def _check_feature(self, f: Tensor, ctx: StageContext, what: str) -> None:
        if f.dim() != 4:
            raise ValueError(f'{self.arch_name} {what} must be a B×C×H×W map, '
                             f'got shape {tuple(f.shape)}')


class EDSRStageRunner(_ConvStageRunner):
    """EDSR: units are the residual blocks ``body.i``."""

    arch_name = 'EDSR'


class RCANStageRunner(_ConvStageRunner):
    """RCAN: units are the residual groups ``body.i`` (group skip included)."""

    arch_name = 'RCAN'


class SwinIRStageRunner(StageRunner):
    """SwinIR (docs/core.md, "Stage runners"): units are the RSTBs ``layers.i``; features are tokens B×HW×C.

    Boundary features are pre-norm (the final LayerNorm belongs to the tail). Inputs must
    already be a multiple of the window size (BasicSR 1.4.2's ``SwinIR.forward`` does not pad
    either, so ``net(x)`` fails on such inputs too).
    """

    arch_name = 'SwinIR'
    unit_container = 'layers'
    supported_upsamplers = ('pixelshuffle', 'pixelshuffledirect')

    @classmethod
    def check_net(cls, net: nn.Module) -> None:
        if net.upsampler not in cls.supported_upsamplers:
            raise NotImplementedError(
                f'SwinIR stage runner supports upsampler in {list(cls.supported_upsamplers)}, '
                f'got {net.upsampler!r}')

    @classmethod
    def feature_channels(cls, net: nn.Module) -> int:
        return net.embed_dim

    @staticmethod
    def window_sizes(net: nn.Module) -> List[int]:
        """Effective window sizes of all Swin blocks (a block may shrink it to its img_size)."""
        sizes = {blk.window_size for layer in net.layers for blk in layer.residual_group.blocks}
        return sorted(sizes)

    def head(self, x: Tensor) -> StageContext:
        _check_input(x)
        net = self.net
        h, w = x.shape[2], x.shape[3]
        for ws in self.window_sizes(net):
            if h % ws or w % ws:
                raise ValueError(f'SwinIR stage runner: input size {h}×{w} must be a multiple of '
                                 f'window_size {ws}; pad the input first (BasicSR 1.4.2 SwinIR '
                                 f'does not pad in forward)')
        mean = net.mean.type_as(x)
        h0 = net.conv_first((x - mean) * net.img_range)
        x_size = (h0.shape[2], h0.shape[3])
        t = net.patch_embed(h0)  # flatten + transpose, then its LayerNorm if patch_norm
        if net.ape:
            if t.shape[1] != net.absolute_pos_embed.shape[1]:
                raise ValueError(f'SwinIR with ape=True needs inputs of img_size '
                                 f'{tuple(net.patch_embed.img_size)} '
                                 f'({net.absolute_pos_embed.shape[1]} tokens), got {h}×{w}')
            t = t + net.absolute_pos_embed
        t = net.pos_drop(t)
        return StageContext(h0=h0, x_size=x_size, f0=t, dtype=x.dtype)

    def _apply_unit(self, unit: nn.Module, f: Tensor, ctx: StageContext) -> Tensor:
        return unit(f, ctx.x_size)

    def _finish(self, f: Tensor, ctx: StageContext, h0: Tensor) -> Tensor:
        net = self.net
        t = net.norm(f)
        m = net.patch_unembed(t.contiguous(), ctx.x_size)
        r = net.conv_after_body(m) + h0
        if net.upsampler == 'pixelshuffle':
            y = net.conv_last(net.upsample(net.conv_before_upsample(r)))
        else:  # pixelshuffledirect
            y = net.upsample(r)
        return y / net.img_range + self._mean(ctx, y)

    def _check_feature(self, f: Tensor, ctx: StageContext, what: str) -> None:
        h, w = ctx.x_size
        if f.dim() != 3 or f.shape[1] != h * w:
            raise ValueError(f'SwinIR {what} must be tokens B×HW×C with HW = {h}×{w}, got shape '
                             f'{tuple(f.shape)} (use runner.to_tokens for maps)')

    def to_map(self, f: Tensor, ctx: StageContext) -> Tensor:
        """Tokens B×HW×C → map B×C×H×W."""
        self._check_feature(f, ctx, 'to_map input')
        b, _, c = f.shape
        return f.transpose(1, 2).reshape(b, c, ctx.x_size[0], ctx.x_size[1])

    def to_tokens(self, m: Tensor, ctx: StageContext) -> Tensor:
        """Map B×C×H×W → tokens B×HW×C."""
        if m.dim() != 4 or tuple(m.shape[2:]) != tuple(ctx.x_size):
            raise ValueError(f'SwinIR to_tokens input must be a B×C×{ctx.x_size[0]}×'
                             f'{ctx.x_size[1]} map, got shape {tuple(m.shape)}')
        return m.flatten(2).transpose(1, 2)


RUNNER_REGISTRY: Dict[Type[nn.Module], Type[StageRunner]] = {
    EDSR: EDSRStageRunner,
    RCAN: RCANStageRunner,
    SwinIR: SwinIRStageRunner,
}


def supported_arch_names() -> List[str]:
    """Names of the arch classes that have a stage runner."""
    return [cls.__name__ for cls in RUNNER_REGISTRY]


def get_runner_class(net: nn.Module) -> Type[StageRunner]:
    """Returns the runner class for ``net``'s arch (subclasses resolve via the MRO).

    Raises:
        TypeError: The arch has no stage runner.
    """
    bare = _unwrap(net)
    for cls in type(bare).__mro__:
        if cls in RUNNER_REGISTRY:
            return RUNNER_REGISTRY[cls]
    raise TypeError(f'No stage runner for arch {type(bare).__name__}; supported archs: '
                    f'{", ".join(supported_arch_names())}')


def build_stage_runner(bare_net: nn.Module, boundaries: Sequence[int]) -> StageRunner:
    """Builds the stage runner of ``bare_net`` split at ``boundaries``.

    Args:
        bare_net: An EDSR, RCAN or SwinIR instance (a DDP/DP wrapper is unwrapped).
        boundaries: Strictly increasing 0-based body-unit indices (may be empty).

    Raises:
        TypeError: Unsupported arch or non-integer boundary.
        ValueError: Boundaries not strictly increasing or out of range.
        NotImplementedError: Unsupported SwinIR upsampler.
    """
    return get_runner_class(bare_net)(bare_net, boundaries)


def num_units(bare_net: nn.Module) -> int:
    """Number of body units (EDSR blocks, RCAN groups, SwinIR RSTBs)."""
    net = _unwrap(bare_net)
    return len(get_runner_class(net).units(net))


def unit_module_path(bare_net: nn.Module, i: int) -> str:
    """Module path of body unit ``i`` (``'body.i'`` or ``'layers.i'``), 0-based."""
    n = num_units(bare_net)
    if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < n:
        raise ValueError(f'body-unit index must be an int in 0..{n - 1}, got {i!r}')
    return get_runner_class(bare_net).unit_module_path(i)


def feature_channels(bare_net: nn.Module) -> int:
    """Body feature width (EDSR/RCAN ``num_feat``, SwinIR ``embed_dim``)."""
    net = _unwrap(bare_net)
    return get_runner_class(net).feature_channels(net)


def _check_input(x: Tensor) -> None:
    if not isinstance(x, Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f'stage runner input must be a B×C×H×W tensor, got {shape}')


def _validate_boundaries(boundaries: Sequence[int], n: int, arch: str) -> Tuple[int, ...]:
    if isinstance(boundaries, (str, bytes)) or not hasattr(boundaries, '__iter__'):
        raise TypeError(f'boundaries must be a sequence of ints, got {boundaries!r}')
    boundaries = list(boundaries)
    out: List[int] = []
    for b in boundaries:
        try:
            if isinstance(b, bool):
                raise TypeError
            b = operator.index(b)  # accepts numpy ints, rejects floats
        except TypeError:
            raise TypeError(f'boundaries must be ints (0-based body-unit indices), got {b!r} '
                            f'in {list(boundaries)}') from None
        if not 0 <= b < n:
            raise ValueError(f'boundary {b} out of range for {arch} with {n} body units '
                             f'(valid 0..{n - 1}); boundaries={list(boundaries)}')
        if out and b <= out[-1]:
            raise ValueError(f'boundaries must be strictly increasing, got {list(boundaries)}')
        out.append(b)
    return tuple(out)
