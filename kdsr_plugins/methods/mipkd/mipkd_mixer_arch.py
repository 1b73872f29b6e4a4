"""MiPKD feature prior mixers (docs/mipkd.md, "One iteration"): one ``MiPKDMixer`` per position, and the bank.

A mixer encodes a teacher map F_T (C_T channels) and a student map F_S (C_S channels) into a
shared latent space (C_lat channels), mixes the two latents with a random mask
(``I = 1`` keeps the teacher latent) and decodes the result back to the teacher feature space.
An optional second decoder D_S maps a latent to the student space, so that a mixed feature can
continue through the student's blocks (block prior mixer, student route).

:class:`MiPKDMixerBank` holds the mixers of all positions and performs, in ONE forward call,
everything that uses mixer parameters in an iteration (FPM, auto-encoder reconstructions and the
block-prior-mixer path), which keeps ``DistributedDataParallel`` happy (docs/core.md, "Distributed training", rule 4).
The bank is plain PyTorch: it runs the network stages through a duck-typed ``path`` object
(``stage(route, k, m)``, ``finish(route, k, m)``) supplied by the model.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Protocol, Sequence

import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import Tensor, nn

from kdsr_plugins.core.schema import check_choice

__all__ = ['MiPKDMixer', 'MiPKDMixerBank', 'MiPKDPlan', 'random_mask', 'TEACHER', 'STUDENT',
           'ENC_TYPES', 'ENCODERS', 'STUDENT_ADAPTERS', 'MASK_TYPES']

#: Route values of the block prior mixer (R = 0 teacher, R = 1 student).
TEACHER, STUDENT = 0, 1
ENC_TYPES = ('cnn', 'mlp')
ENCODERS = ('separate', 'shared', 'none')
STUDENT_ADAPTERS = ('decoder', 'conv1x1', 'shared')
MASK_TYPES = ('random3d', 'spatial', 'channel')


def _positive_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f'MiPKDMixer: {what} must be a positive integer, got {value!r}')
    return value


def _conv_stack(in_ch: int, out_ch: int, mid_ch: int, layers: int, kernel: int) -> nn.Sequential:
    """``layers`` convolutions separated by LeakyReLU(0.2): in→mid, mid→mid, …, mid→out.

    Encoders use ``out_ch = mid_ch = C_lat``; decoders ``in_ch = mid_ch = C_lat``.
    """
    pad = kernel // 2
    mods: List[nn.Module] = []
    for i in range(layers):
        c_in = in_ch if i == 0 else mid_ch
        c_out = out_ch if i == layers - 1 else mid_ch
        if i > 0:
            mods.append(nn.LeakyReLU(0.2, inplace=False))
        mods.append(nn.Conv2d(c_in, c_out, kernel, 1, pad))
    return nn.Sequential(*mods)


def random_mask(batch: int, channels: int, height: int, width: int, prob: float, mask_type: str = 'random3d',
                device: torch.device | str | None = None, generator: torch.Generator | None = None) -> Tensor:
    """Bernoulli(``prob``) mixing mask; ``True`` keeps the teacher latent.

    Args:
        batch, channels, height, width: Latent shape B×C_lat×H×W.
        prob: P(I = 1), in [0, 1].
        mask_type: ``random3d`` (B×C×H×W, element-wise), ``spatial`` (B×1×H×W, shared over
            channels) or ``channel`` (B×C×1×1, shared over positions).
        device: Device of the mask.
        generator: Optional torch generator (default: the global RNG of ``device``).

    Returns:
        A bool tensor that broadcasts against the latent.
    """
    if not 0.0 <= float(prob) <= 1.0:
        raise ValueError(f'mask prob must be in [0, 1], got {prob!r}')
    shapes = {'random3d': (batch, channels, height, width), 'spatial': (batch, 1, height, width),
              'channel': (batch, channels, 1, 1)}
    check_choice(mask_type, shapes, f'unknown mask_type {mask_type!r}; valid values: {", ".join(MASK_TYPES)}')
    return torch.rand(shapes[mask_type], device=device, generator=generator) < float(prob)


@ARCH_REGISTRY.register()
class MiPKDMixer(nn.Module):
    """Feature prior mixer of one distillation position (docs/mipkd.md, "One iteration").

    Sub-modules (``enc_type: cnn``; ``mlp`` uses 1×1 convolutions): ``enc_t`` E_T (C_T→C_lat),
    ``enc_s`` E_S (C_S→C_lat), ``dec`` D (C_lat→C_T), optional ``dec_s`` D_S (C_lat→C_S) and
    optional ``adapter`` (1×1 conv C_T→C_S, ``student_adapter: conv1x1``). With
    ``encoder: shared`` the student uses E_T after ``proj_s`` (1×1 conv C_S→C_T, only when the
    widths differ); with ``encoder: none`` the latent is the teacher feature space itself.

    Args:
        num_t_ch: Teacher width C_T.
        num_s_ch: Student width C_S.
        latent_dim: C_lat (default C_T). Must equal C_T (or be None) with ``encoder: none``.
        enc_type: ``cnn`` (3×3 convs) or ``mlp`` (1×1 convs).
        enc_layers: Convolutions per encoder / decoder (≥ 1).
        encoder: ``separate`` | ``shared`` | ``none``.
        student_adapter: How a mixed latent enters the student (block prior mixer):
            ``decoder`` (D_S), ``conv1x1`` (1×1 conv on D's output) or ``shared`` (D's output
            as is; needs C_T = C_S).
        student_path: Whether to build the student-route module of ``student_adapter``.
        student_decoder: Force building D_S (the student auto-encoder needs it).
    """

    def __init__(self, num_t_ch: int, num_s_ch: int, latent_dim: Optional[int] = None, enc_type: str = 'cnn',
                 enc_layers: int = 2, encoder: str = 'separate', student_adapter: str = 'decoder',
                 student_path: bool = True, student_decoder: bool = False) -> None:
        super().__init__()
        c_t, c_s = _positive_int(num_t_ch, 'num_t_ch'), _positive_int(num_s_ch, 'num_s_ch')
        layers = _positive_int(enc_layers, 'enc_layers')
        for key, value, valid in (('enc_type', enc_type, ENC_TYPES), ('encoder', encoder, ENCODERS),
                                  ('student_adapter', student_adapter, STUDENT_ADAPTERS)):
            check_choice(value, valid, f'MiPKDMixer: unknown {key} {value!r}; valid values: {", ".join(valid)}')
        if encoder == 'none':
            if latent_dim not in (None, c_t):
                raise ValueError(f'MiPKDMixer: encoder none mixes in the teacher space, so latent_dim must be '
                                 f'~ or {c_t} (C_T), got {latent_dim!r}')
            c_lat = c_t
        else:
            c_lat = c_t if latent_dim is None else _positive_int(latent_dim, 'latent_dim')
        if student_path and student_adapter == 'shared' and c_t != c_s:
            raise ValueError(f'MiPKDMixer: student_adapter shared feeds the C_T-wide mixed feature to the student '
                             f'unchanged and needs C_T = C_S, got C_T={c_t}, C_S={c_s}; use decoder or conv1x1')
        kernel = 3 if enc_type == 'cnn' else 1
        self.num_t_ch, self.num_s_ch, self.latent_dim = c_t, c_s, c_lat
        self.enc_type, self.enc_layers, self.encoder = enc_type, layers, encoder
        self.student_adapter = student_adapter if student_path else None
        self.enc_t = _conv_stack(c_t, c_lat, c_lat, layers, kernel) if encoder != 'none' else None
        self.enc_s = _conv_stack(c_s, c_lat, c_lat, layers, kernel) if encoder == 'separate' else None
        self.proj_s = nn.Conv2d(c_s, c_t, 1) if encoder != 'separate' and c_s != c_t else None
        self.dec = _conv_stack(c_lat, c_t, c_lat, layers, kernel)
        need_dec_s = student_decoder or (student_path and student_adapter == 'decoder')
        self.dec_s = _conv_stack(c_lat, c_s, c_lat, layers, kernel) if need_dec_s else None
        self.adapter = nn.Conv2d(c_t, c_s, 1) if student_path and student_adapter == 'conv1x1' else None

    # ------------------------------------------------------------------ pieces
    def _check(self, f: Tensor, channels: int, what: str) -> None:
        if f.dim() != 4 or f.shape[1] != channels:
            raise ValueError(f'MiPKDMixer: {what} must be a B×{channels}×H×W map, got {tuple(f.shape)}')

    def encode_t(self, f_t: Tensor) -> Tensor:
        """Z_T = E_T(F_T)."""
        self._check(f_t, self.num_t_ch, 'teacher feature')
        return f_t if self.enc_t is None else self.enc_t(f_t)

    def encode_s(self, f_s: Tensor) -> Tensor:
        """Z_S = E_S(F_S) (``shared``: E_T after the 1×1 projection; ``none``: the projection)."""
        self._check(f_s, self.num_s_ch, 'student feature')
        if self.enc_s is not None:
            return self.enc_s(f_s)
        if self.proj_s is not None:
            f_s = self.proj_s(f_s)
        return f_s if self.enc_t is None else self.enc_t(f_s)

    @staticmethod
    def mix(z_t: Tensor, z_s: Tensor, mask: Tensor) -> Tensor:
        """Z_mix = I ⊙ Z_T + (1 − I) ⊙ Z_S for a bool (or 0/1) mask ``I``."""
        return torch.where(mask.bool(), z_t, z_s)

    def decode(self, z: Tensor) -> Tensor:
        """F̂ = D(Z), teacher feature space."""
        return self.dec(z)

    def decode_s(self, z: Tensor) -> Tensor:
        """D_S(Z), student feature space."""
        if self.dec_s is None:
            raise RuntimeError('MiPKDMixer: no student decoder D_S was built')
        return self.dec_s(z)

    def to_student(self, z: Tensor, f_hat: Optional[Tensor] = None) -> Tensor:
        """Student-route input from a mixed latent (``f_hat`` = D(z) if already computed)."""
        if self.student_adapter is None:
            raise RuntimeError('MiPKDMixer: built without a student path (student_path=False)')
        if self.student_adapter == 'decoder':
            return self.decode_s(z)
        f_hat = self.decode(z) if f_hat is None else f_hat
        return f_hat if self.adapter is None else self.adapter(f_hat)

    def route_input(self, route: int, z: Tensor, f_hat: Optional[Tensor] = None) -> Tensor:
        """Input of the chosen network's next stage: F̂ (teacher route) or the student adapter's output."""
        if route == TEACHER:
            return self.decode(z) if f_hat is None else f_hat
        return self.to_student(z, f_hat)

    def forward(self, f_t: Tensor, f_s: Tensor, mask: Tensor) -> Tensor:
        """F̂ = D(I ⊙ E_T(F_T) + (1 − I) ⊙ E_S(F_S))."""
        return self.decode(self.mix(self.encode_t(f_t), self.encode_s(f_s), mask))

    def extra_repr(self) -> str:
        return (f'C_T={self.num_t_ch}, C_S={self.num_s_ch}, C_lat={self.latent_dim}, enc_type={self.enc_type}, '
                f'enc_layers={self.enc_layers}, encoder={self.encoder}, student_adapter={self.student_adapter}')


@dataclass
class MiPKDPlan:
    """Random draws of one iteration (docs/mipkd.md, "One iteration").

    Attributes:
        masks: I_k per position (bool, broadcastable to the latent), ``None`` where unused.
        k_star: Single mode: the 1-based position k* whose mixed feature is routed.
        route: Single mode: R (0 teacher route, 1 student route).
        routes: Chained mode: R_1..R_K.
        chain_masks: Chained mode: fresh masks I'_k for k = 2..K (index 0 is ``None``).
    """

    masks: List[Optional[Tensor]]
    k_star: Optional[int] = None
    route: Optional[int] = None
    routes: Optional[List[int]] = None
    chain_masks: List[Optional[Tensor]] = field(default_factory=list)


class StagePath(Protocol):
    """What the bank needs to run network stages (implemented by the model)."""

    def stage(self, route: int, k: int, m: Tensor) -> Tensor:
        """Stage k of the teacher (route 0) or student (route 1) on a map; returns a map."""

    def finish(self, route: int, k: int, m: Tensor) -> Tensor:
        """Stages k+1..K and the tail (with that network's own head feature); returns the SR output."""


class MiPKDMixerBank(nn.Module):
    """All mixers of a MiPKD model; one forward computes every mixer-dependent tensor.

    Args:
        channel_pairs: ``[(C_T, C_S), ...]`` per position.
        compute_feat: Return F̂_k for every position (FPM loss).
        compute_ae: Return D(E_T(F_T)) per position (teacher auto-encoder loss).
        ae_student: Return D_S(E_S(sg(F_S))) per position (student auto-encoder loss).
        bpm_mode: ``single``, ``chained`` or ``off``.
        **mixer_kwargs: ``latent_dim``, ``enc_type``, ``enc_layers``, ``encoder``, ``student_adapter``.
    """

    BPM_MODES = ('single', 'chained', 'off')

    def __init__(self, channel_pairs: Sequence[Sequence[int]], compute_feat: bool = True, compute_ae: bool = True,
                 ae_student: bool = False, bpm_mode: str = 'single', **mixer_kwargs) -> None:
        super().__init__()
        check_choice(bpm_mode, self.BPM_MODES,
                     f'MiPKDMixerBank: unknown bpm_mode {bpm_mode!r}; valid: {", ".join(self.BPM_MODES)}')
        pairs = [tuple(int(c) for c in p) for p in channel_pairs]
        if not pairs or any(len(p) != 2 for p in pairs):
            raise ValueError(f'MiPKDMixerBank: need one (C_T, C_S) pair per position, got {channel_pairs!r}')
        self.channel_pairs = pairs
        self.compute_feat, self.compute_ae, self.ae_student = bool(compute_feat), bool(compute_ae), bool(ae_student)
        self.bpm_mode = bpm_mode
        self.mixers = nn.ModuleList(
            MiPKDMixer(c_t, c_s, student_path=bpm_mode != 'off', student_decoder=self.ae_student, **mixer_kwargs)
            for c_t, c_s in pairs)

    @property
    def num_positions(self) -> int:
        return len(self.mixers)

    def latent_channels(self) -> List[int]:
        """C_lat per position (mask shapes)."""
        return [m.latent_dim for m in self.mixers]

    def needed_masks(self, k_star: Optional[int] = None) -> List[bool]:
        """Which positions need a mask I_k this iteration."""
        if self.compute_feat:
            return [True] * self.num_positions
        first = {'single': k_star, 'chained': 1, 'off': None}[self.bpm_mode]
        return [k + 1 == first for k in range(self.num_positions)]

    def forward(self, feats_t: Sequence[Tensor], feats_s: Sequence[Tensor], plan: MiPKDPlan,
                path: Optional[StagePath] = None) -> Dict[str, object]:
        """Run the mixers.

        Args:
            feats_t: Teacher maps F_T^k (constants).
            feats_s: Student maps F_S^k (with graph).
            plan: Masks and routes of this iteration.
            path: Stage executor; required unless ``bpm_mode`` is ``off``.

        Returns:
            ``feat``: list of F̂_k; ``ae``: list of D(E_T(F_T^k)); ``ae_s``: list of
            D_S(E_S(sg(F_S^k))); ``y_mix``: the assembled network's output. Only the enabled
            entries are present (each present tensor must enter the loss: DDP).
        """
        n = self.num_positions
        if len(feats_t) != n or len(feats_s) != n or len(plan.masks) != n:
            raise ValueError(f'MiPKDMixerBank: expected {n} teacher features, student features and masks, got '
                             f'{len(feats_t)}, {len(feats_s)}, {len(plan.masks)}')
        z_t: List[Optional[Tensor]] = [None] * n
        z_mix: List[Optional[Tensor]] = [None] * n
        f_hat: List[Optional[Tensor]] = [None] * n

        def teacher_latent(k: int) -> Tensor:
            if z_t[k] is None:
                z_t[k] = self.mixers[k].encode_t(feats_t[k])
            return z_t[k]

        def mixed(k: int) -> Tensor:
            if z_mix[k] is None:
                if plan.masks[k] is None:
                    raise ValueError(f'MiPKDMixerBank: position {k + 1} needs a mask')
                z_mix[k] = self.mixers[k].mix(teacher_latent(k), self.mixers[k].encode_s(feats_s[k]), plan.masks[k])
            return z_mix[k]

        def decoded(k: int) -> Tensor:
            if f_hat[k] is None:
                f_hat[k] = self.mixers[k].decode(mixed(k))
            return f_hat[k]

        out: Dict[str, object] = {}
        if self.compute_feat and self.compute_ae:
            # D(Z_mix) and D(Z_T) in one decoder call per position (batch-wise independent: same values)
            ae = []
            for k, m in enumerate(self.mixers):
                f_hat[k], rec = m.decode(torch.cat([mixed(k), teacher_latent(k)])).split(feats_t[k].shape[0])
                ae.append(rec)
            out['feat'], out['ae'] = list(f_hat), ae
        elif self.compute_feat:
            out['feat'] = [decoded(k) for k in range(n)]
        elif self.compute_ae:
            out['ae'] = [m.decode(teacher_latent(k)) for k, m in enumerate(self.mixers)]
        if self.ae_student:
            out['ae_s'] = [m.decode_s(m.encode_s(f.detach())) for m, f in zip(self.mixers, feats_s)]
        if self.bpm_mode != 'off':
            if path is None:
                raise ValueError('MiPKDMixerBank: the block prior mixer needs a stage path')
            out['y_mix'] = self._single(plan, path, mixed, f_hat) if self.bpm_mode == 'single' else \
                self._chained(plan, path, mixed, f_hat, teacher_latent)
        return out

    def _single(self, plan: MiPKDPlan, path: StagePath, mixed, f_hat) -> Tensor:
        k_star, route = plan.k_star, plan.route
        if k_star is None or route not in (TEACHER, STUDENT) or not 1 <= k_star <= self.num_positions:
            raise ValueError(f'MiPKDMixerBank: single mode needs k_star in 1..{self.num_positions} and route 0/1, '
                             f'got k_star={k_star!r}, route={route!r}')
        k = k_star - 1
        u = self.mixers[k].route_input(route, mixed(k), f_hat[k])
        return path.finish(route, k_star, u)

    def _chained(self, plan: MiPKDPlan, path: StagePath, mixed, f_hat, teacher_latent) -> Tensor:
        n = self.num_positions
        routes = plan.routes
        if routes is None or len(routes) != n or any(r not in (TEACHER, STUDENT) for r in routes):
            raise ValueError(f'MiPKDMixerBank: chained mode needs {n} routes in {{0, 1}}, got {routes!r}')
        if n > 1 and (len(plan.chain_masks) != n or any(m is None for m in plan.chain_masks[1:])):
            raise ValueError(f'MiPKDMixerBank: chained mode needs fresh masks for positions 2..{n}')
        net = routes[0]
        f = self.mixers[0].route_input(net, mixed(0), f_hat[0])
        for k in range(1, n):
            mixer = self.mixers[k]
            g = path.stage(net, k + 1, f)
            z_run = mixer.encode_t(g) if net == TEACHER else mixer.encode_s(g)
            z = mixer.mix(teacher_latent(k), z_run, plan.chain_masks[k])
            net = routes[k]
            f = mixer.route_input(net, z)
        return path.finish(net, n, f)

    def extra_repr(self) -> str:
        return (f'positions={self.num_positions}, channel_pairs={self.channel_pairs}, feat={self.compute_feat}, '
                f'ae={self.compute_ae}, ae_student={self.ae_student}, bpm_mode={self.bpm_mode}')
