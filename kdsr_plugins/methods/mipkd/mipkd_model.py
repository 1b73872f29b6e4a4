"""``MiPKDModel``: multi-granularity mixture-of-priors KD (docs/mipkd.md).

One iteration (docs/mipkd.md, "One iteration"):

1. teacher, ``no_grad``, through its stage runner: h0_T, boundary features F_T^1..K, T(x);
2. student through the DDP wrapper ``net_g`` with taps at ``conv_first`` and the K boundaries:
   S(x), h0_S, F_S^1..K;
3. ``l_pix`` / ``l_kd`` on S(x);
4. draw masks I_k, k* and R (:meth:`MiPKDModel.sample_plan`);
5. ONE call of the mixer bank ``net_aux``: F̂_k (→ ``l_fpm``), D(E_T(F_T)) (→ ``l_ae``),
   optionally D_S(E_S(sg F_S)) (→ ``l_ae_s``) and the block-prior-mixer path, which continues
   the routed mixed feature through the teacher's (autograd on, parameters frozen) or the bare
   student's remaining stages and tail with that network's own head feature (→ ``l_bpm``).

Design choices that are ours (no official code exists) are options of ``train.mipkd_opt``; see
docs/mipkd.md.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import torch
from basicsr.losses import build_loss
from basicsr.utils import get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY
from torch import Tensor, nn

from kdsr_plugins.core.auto_teacher import SpandrelTeacher
from kdsr_plugins.core.kd_model import KDModel
from kdsr_plugins.core.option_checks import loss_block
from kdsr_plugins.core.schema import Field, OptionError, Schema
from kdsr_plugins.core.stage_runners import (
    StageContext,
    StageRunner,
    build_stage_runner,
    feature_channels,
    num_units,
    supported_arch_names,
    unit_module_path,
)
from kdsr_plugins.core.taps import FeatureTaps
from kdsr_plugins.methods.mipkd.mipkd_mixer_arch import (
    ENC_TYPES,
    ENCODERS,
    MASK_TYPES,
    STUDENT,
    STUDENT_ADAPTERS,
    TEACHER,
    MiPKDMixerBank,
    MiPKDPlan,
    random_mask,
)

__all__ = ['MiPKDModel', 'MiPKDOptions', 'MiPKDPath', 'MIPKD_OPT_KEYS', 'DEFAULT_LOSSES']

BPM_MODES = ('single', 'chained', 'off')
BLOCK_TARGETS = ('teacher', 'gt', 'both')
_WHERE = 'train.mipkd_opt'  # option-name prefix in error messages

#: Loss blocks of the method and their defaults (used when the key is absent; ``~`` disables).
DEFAULT_LOSSES = {
    'feat_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'},
    'ae_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'},
    'block_opt': {'type': 'L1Loss', 'loss_weight': 0.1, 'reduction': 'mean'},
}


def _positions_spec(value: Any, where: str) -> Optional[list]:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or not value:
        raise OptionError(f'{where}: expected a non-empty list of body-unit indices or unit paths, got {value!r}')
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, str)):
            raise OptionError(f'{where}: entries must be ints or unit paths, got {v!r}')
    return list(value)


def _prob(name: str, default: float, doc: str) -> Field:
    return Field(name, 'number', default, doc, min=0.0, max=1.0,
                 message='{where}: expected a probability in [0, 1], got {value}')


MIPKD_SCHEMA = Schema(_WHERE, (
    Field('positions_t', 'list', None, 'teacher stage ends: body-unit indices or unit paths (~: K = 4 evenly '
          'spaced)', check=_positions_spec),
    Field('positions_s', 'list', None, 'student stage ends, matched 1:1 with positions_t', check=_positions_spec),
    Field('latent_dim', 'int', None, 'latent channels of the encoders (~: C_T)', min=1,
          message='{where}: expected a positive integer (or ~), got {value}'),
    Field('enc_type', 'str', 'cnn', 'encoder / decoder type', choices=ENC_TYPES),
    Field('enc_layers', 'int', 2, 'layers per encoder / decoder', min=1,
          message='{where}: expected an integer >= 1, got {value}'),
    Field('encoder', 'str', 'separate', 'separate: E_T and E_S; shared: one encoder; none: identity',
          choices=ENCODERS),
    Field('mask_type', 'str', 'random3d', 'mask of the feature prior mixer', choices=MASK_TYPES),
    _prob('mask_prob', 0.5, 'probability that a latent element comes from the teacher'),
    Field('use_ae_loss', 'bool', True, 'teacher auto-encoder term l_ae'),
    Field('ae_student', 'bool', False, 'student auto-encoder term l_ae_s'),
    Field('bpm_mode', 'str', 'single', 'block prior mixer: single stage, chained stages or off', choices=BPM_MODES),
    _prob('path_prob', 0.5, 'probability of routing a block-prior-mixer stage through the student'),
    Field('student_adapter', 'str', 'decoder', 'how the mixed latent returns to student width',
          choices=STUDENT_ADAPTERS),
    Field('block_target', 'str', 'teacher', 'target of l_bpm: T(x), the GT or the mean of both',
          choices=BLOCK_TARGETS),
), doc='MiPKD method block (docs/mipkd.md).')
MIPKD_OPT_KEYS = tuple(MIPKD_SCHEMA.keys)
"""Valid keys of ``train.mipkd_opt``."""


@dataclass
class MiPKDOptions:
    """Validated ``train.mipkd_opt`` (defaults as mipkd.md §3)."""

    positions_t: Optional[list] = None
    positions_s: Optional[list] = None
    latent_dim: Optional[int] = None
    enc_type: str = 'cnn'
    enc_layers: int = 2
    encoder: str = 'separate'
    mask_type: str = 'random3d'
    mask_prob: float = 0.5
    use_ae_loss: bool = True
    ae_student: bool = False
    bpm_mode: str = 'single'
    path_prob: float = 0.5
    student_adapter: str = 'decoder'
    block_target: str = 'teacher'

    @classmethod
    def from_dict(cls, block: Optional[Mapping[str, Any]]) -> 'MiPKDOptions':
        """Validate a ``train.mipkd_opt`` mapping; unknown keys raise listing the valid ones."""
        values = MIPKD_SCHEMA.check(block)
        for key in ('mask_prob', 'path_prob'):
            values[key] = float(values[key])
        return cls(**values)


def resolve_positions(net: nn.Module, spec: Sequence[int | str], what: str) -> list[int]:
    """0-based body-unit indices from ints (negative: from the end), digit strings or unit paths."""
    n = num_units(net)
    out = []
    for v in spec:
        idx: Optional[int] = None
        if isinstance(v, int):
            idx = v
        elif v.lstrip('-').isdigit():
            idx = int(v)
        else:
            matches = [i for i in range(n) if unit_module_path(net, i) == v]
            if not matches:
                raise ValueError(f'train.mipkd_opt.{what}: {v!r} is not a body unit of {type(net).__name__}; valid: '
                                 f'indices 0..{n - 1} or paths '
                                 f'{unit_module_path(net, 0)}..{unit_module_path(net, n - 1)}')
            idx = matches[0]
        if not -n <= idx < n:
            raise ValueError(f'train.mipkd_opt.{what}: unit {v!r} out of range for {type(net).__name__} with {n} '
                             f'body units')
        out.append(idx % n)
    if any(b <= a for a, b in zip(out, out[1:])):
        raise ValueError(f'train.mipkd_opt.{what}: positions must be strictly increasing, got {out} '
                         f'(from {list(spec)})')
    return out


def default_positions(n: int, k: int) -> list[int]:
    """K evenly spaced stage ends over n units, the last at the last unit (EDSR b32, K 4: 7, 15, 23, 31)."""
    return [n * (j + 1) // k - 1 for j in range(k)]


class MiPKDPath:
    """Runs teacher (route 0) or student (route 1) stages on maps for the mixer bank.

    Each network continues with its own stage runner, context and head feature h0.

    Args:
        runners: ``(teacher_runner, student_runner)``.
        contexts: ``(teacher_ctx, student_ctx)``.
    """

    def __init__(self, runners: Sequence[StageRunner], contexts: Sequence[StageContext]) -> None:
        self.runners, self.contexts = tuple(runners), tuple(contexts)

    def stage(self, route: int, k: int, m: Tensor) -> Tensor:
        """Stage ``k`` of the chosen network on map ``m``; returns a map."""
        runner, ctx = self.runners[route], self.contexts[route]
        return runner.to_map(runner.stage(k, runner.to_tokens(m, ctx), ctx), ctx)

    def finish(self, route: int, k: int, m: Tensor) -> Tensor:
        """Stages k+1..K and the tail of the chosen network, with its own h0."""
        runner, ctx = self.runners[route], self.contexts[route]
        return runner.forward_from(k, runner.to_tokens(m, ctx), ctx, h0=ctx.h0)


@MODEL_REGISTRY.register()
class MiPKDModel(KDModel):
    """MiPKD: logits KD + feature prior mixer + block prior mixer (docs/mipkd.md).

    Loss terms (weighted, logged): ``l_pix`` (``pixel_opt``), ``l_kd`` (``kd_opt``), ``l_fpm``
    (``feat_opt``, Σ_k ‖F̂_k − F_T^k‖), ``l_ae`` (``ae_opt``, Σ_k ‖D(E_T(F_T^k)) − F_T^k‖),
    ``l_ae_s`` (``ae_opt``, only with ``ae_student``), ``l_bpm`` (``block_opt``,
    ‖Ŷ_mix − T(x)‖). A term whose weight is 0 (or whose block is ``~``) is not computed.
    Method options: ``train.mipkd_opt`` (:class:`MiPKDOptions`). Distributed runs need top-level
    ``find_unused_parameters: true``.
    """

    option_fields = {'train': (
        Field('mipkd_opt', 'mapping', None, 'MiPKD method block', schema=MIPKD_SCHEMA, role='method'),
        *(Field(key, 'mapping', loss, f'loss block of l_{name} (~: off)', dynamic=loss_block, role='loss',
                nullable=True)
          for (key, loss), name in zip(DEFAULT_LOSSES.items(), ('fpm', 'ae and l_ae_s', 'bpm'))),
    )}

    def __init__(self, opt: dict) -> None:
        if opt.get('is_train', False) and opt.get('dist', False) and not opt.get('find_unused_parameters', False):
            raise ValueError('MiPKDModel: distributed training needs top-level find_unused_parameters: true (the '
                             'stochastic block routing leaves some mixer parameters unused in an iteration).')
        self.mipkd: MiPKDOptions | None = None
        super().__init__(opt)

    # ------------------------------------------------------------------ setup
    def _method_loss(self, key: str) -> nn.Module | None:
        train_opt = self.opt['train']
        loss_opt = train_opt[key] if key in train_opt else DEFAULT_LOSSES[key]
        if loss_opt is None or float(loss_opt.get('loss_weight', 1.0)) == 0.0:
            return None
        return build_loss(dict(loss_opt)).to(self.device)

    def init_method(self) -> None:
        """Validate ``train.mipkd_opt``, build losses, stage runners and student taps."""
        logger = get_root_logger()
        train_opt = self.opt['train']
        self.mipkd = o = MiPKDOptions.from_dict(train_opt.get('mipkd_opt'))
        if train_opt.get('use_cached_targets', 'auto') is True:
            raise ValueError('MiPKDModel needs the teacher features every iteration; use_cached_targets: true is '
                             'not supported (set auto or false).')
        self.cri_feat = self._method_loss('feat_opt')
        self.cri_ae = self._method_loss('ae_opt') if (o.use_ae_loss or o.ae_student) else None
        self.cri_block = self._method_loss('block_opt') if o.bpm_mode != 'off' else None
        if o.ae_student and self.cri_ae is None:
            logger.warning('mipkd_opt.ae_student is true but ae_opt is disabled: no student auto-encoder term.')

        bare_t, bare_s = self.net_t, self.get_bare_model(self.net_g)
        if isinstance(bare_t, SpandrelTeacher):
            raise ValueError(f'MiPKDModel runs the teacher stage by stage and has stage runners for '
                             f'{", ".join(supported_arch_names())} only; the auto (spandrel) teacher {bare_t.arch} '
                             f'from {bare_t.path!r} has none. Use logits KD, DUKD, MTKD or a feature method with '
                             'module-path taps for it (docs/auto_teachers.md).')
        n_t, n_s = num_units(bare_t), num_units(bare_s)
        if o.positions_t is None and o.positions_s is None:
            k = min(4, n_t, n_s)
            pos_t, pos_s = default_positions(n_t, k), default_positions(n_s, k)
        elif o.positions_t is None or o.positions_s is None:
            given = o.positions_t if o.positions_t is not None else o.positions_s
            if n_t != n_s:
                raise ValueError(f'train.mipkd_opt: teacher has {n_t} body units and student {n_s}; give both '
                                 'positions_t and positions_s.')
            pos_t = pos_s = resolve_positions(bare_t, given, 'positions_t' if o.positions_t else 'positions_s')
        else:
            pos_t = resolve_positions(bare_t, o.positions_t, 'positions_t')
            pos_s = resolve_positions(bare_s, o.positions_s, 'positions_s')
        if len(pos_t) != len(pos_s):
            raise ValueError(f'train.mipkd_opt: positions_t {pos_t} and positions_s {pos_s} must have the same length '
                             '(teacher and student stages correspond 1:1).')
        self.positions_t, self.positions_s = pos_t, pos_s
        self.runner_t = build_stage_runner(bare_t, pos_t)
        self.runner_s = build_stage_runner(bare_s, pos_s)
        self.taps_s = FeatureTaps(bare_s, ['conv_first'] + [unit_module_path(bare_s, i) for i in pos_s])
        logger.info(f'MiPKD: positions teacher {pos_t}, student {pos_s}; {o}; losses feat={self.cri_feat is not None}, '
                    f'ae={self.cri_ae is not None}, block={self.cri_block is not None}.')

    @property
    def uses_mixers(self) -> bool:
        """Whether any method term (and so the mixer bank) is active."""
        return self.cri_feat is not None or self.cri_ae is not None or self.cri_block is not None

    def build_aux_modules(self) -> nn.Module | None:
        """The mixer bank (one ``MiPKDMixer`` per position), or None if every method term is off."""
        if not self.uses_mixers:
            get_root_logger().warning('MiPKDModel: feat, ae and block terms are all off; training is plain logits KD.')
            return None
        o = self.mipkd
        c_t, c_s = feature_channels(self.net_t), feature_channels(self.get_bare_model(self.net_g))
        return MiPKDMixerBank(
            [(c_t, c_s)] * len(self.positions_t), compute_feat=self.cri_feat is not None,
            compute_ae=self.cri_ae is not None and o.use_ae_loss,
            ae_student=self.cri_ae is not None and o.ae_student,
            bpm_mode=o.bpm_mode if self.cri_block is not None else 'off',
            latent_dim=o.latent_dim, enc_type=o.enc_type, enc_layers=o.enc_layers, encoder=o.encoder,
            student_adapter=o.student_adapter)

    def has_loss_terms(self) -> bool:
        return super().has_loss_terms() or self.uses_mixers

    # ------------------------------------------------------------------ one iteration
    @property
    def bank(self) -> MiPKDMixerBank | None:
        """The bare mixer bank."""
        return None if self.net_aux is None else self.get_bare_model(self.net_aux)

    def teacher_pass(self, lq: Tensor) -> tuple[Tensor, list[Tensor], StageContext]:
        """Clean teacher pass under ``no_grad``: T(x), boundary maps F_T^k, context (h0_T)."""
        with torch.no_grad():  # the stage runner bypasses the teacher's hooks: autocast it here (core.amp)
            y_t, feats, ctx = self.amp.region_output(self.runner_t.run_all, lq)
            maps = [self.runner_t.to_map(f, ctx) for f in feats]
        return y_t, maps, ctx

    def student_context(self, h0_s: Tensor, lq: Tensor) -> StageContext:
        """Stage context of the student built from its tapped head feature (no extra head pass)."""
        ctx = StageContext(h0=h0_s, x_size=(h0_s.shape[2], h0_s.shape[3]), f0=h0_s, dtype=lq.dtype)
        ctx.f0 = self.runner_s.to_tokens(h0_s, ctx)
        return ctx

    def sample_plan(self, feats_t: Sequence[Tensor], k_star: Optional[int] = None,
                    route: Optional[int] = None) -> MiPKDPlan:
        """Draw this iteration's masks and routes (torch RNG; k*, R on the CPU generator).

        Args:
            feats_t: Teacher maps F_T^k (mask shapes and device).
            k_star, route: Single mode only: fix k* (1..K) and/or R (0 teacher, 1 student)
                instead of drawing them (cost accounting per route; tests). A fixed value
                consumes no random number.
        """
        bank, o = self.bank, self.mipkd
        n = bank.num_positions
        routes = None
        if (k_star is not None or route is not None) and bank.bpm_mode != 'single':
            raise ValueError(f'MiPKDModel.sample_plan: k_star/route can only be fixed with bpm_mode single, not '
                             f'{bank.bpm_mode!r}')
        if k_star is not None and (isinstance(k_star, bool) or not isinstance(k_star, int) or not 1 <= k_star <= n):
            raise ValueError(f'MiPKDModel.sample_plan: k_star must be in 1..{n}, got {k_star!r}')
        if route not in (None, TEACHER, STUDENT):
            raise ValueError(f'MiPKDModel.sample_plan: route must be {TEACHER} (teacher) or {STUDENT} (student), '
                             f'got {route!r}')
        if bank.bpm_mode == 'single':
            if k_star is None:
                k_star = int(torch.randint(1, n + 1, ()).item())
            if route is None:
                route = STUDENT if torch.rand(()).item() < o.path_prob else TEACHER
        elif bank.bpm_mode == 'chained':
            routes = [STUDENT if torch.rand(()).item() < o.path_prob else TEACHER for _ in range(n)]

        def draw(k: int) -> Tensor:
            b, _, h, w = feats_t[k].shape
            return random_mask(b, bank.latent_channels()[k], h, w, o.mask_prob, o.mask_type, feats_t[k].device)

        masks = [draw(k) if need else None for k, need in enumerate(bank.needed_masks(k_star))]
        chain_masks = [None] + [draw(k) for k in range(1, n)] if bank.bpm_mode == 'chained' else []
        return MiPKDPlan(masks=masks, k_star=k_star, route=route, routes=routes, chain_masks=chain_masks)

    def compute_losses(self, current_iter: int) -> OrderedDict[str, Tensor]:
        """``l_pix``, ``l_kd``, ``l_fpm``, ``l_ae`` (``l_ae_s``), ``l_bpm`` (enabled terms only)."""
        y_t, feats_t, ctx_t = self.teacher_pass(self.lq)
        with self.taps_s.capture() as taps:
            self.output = self.net_g(self.lq)
        self.check_teacher_output(self.output, y_t)
        loss_dict = self.output_losses(self.output, y_t)
        if self.net_aux is None:
            return loss_dict
        h0_s, feats_s = taps[0], taps[1:]
        plan = self.sample_plan(feats_t)
        self.last_plan = plan
        path = None
        if self.bank.bpm_mode != 'off':
            path = MiPKDPath((self.runner_t, self.runner_s), (ctx_t, self.student_context(h0_s, self.lq)))
        out = self.net_aux(feats_t, feats_s, plan, path)
        if 'feat' in out:
            loss_dict['l_fpm'] = sum(self.cri_feat(f_hat, f_t) for f_hat, f_t in zip(out['feat'], feats_t))
        if 'ae' in out:
            loss_dict['l_ae'] = sum(self.cri_ae(rec, f_t) for rec, f_t in zip(out['ae'], feats_t))
        if 'ae_s' in out:
            loss_dict['l_ae_s'] = sum(self.cri_ae(rec, f_s.detach()) for rec, f_s in zip(out['ae_s'], feats_s))
        if 'y_mix' in out:
            loss_dict['l_bpm'] = self.block_loss(out['y_mix'], y_t)
        return loss_dict

    def block_loss(self, y_mix: Tensor, y_t: Tensor) -> Tensor:
        """L_block against T(x) (``teacher``), the GT (``gt``) or the mean of both (``both``)."""
        target = self.mipkd.block_target
        if target == 'teacher':
            return self.cri_block(y_mix, y_t)
        if target == 'gt':
            return self.cri_block(y_mix, self.gt)
        return 0.5 * (self.cri_block(y_mix, y_t) + self.cri_block(y_mix, self.gt))
