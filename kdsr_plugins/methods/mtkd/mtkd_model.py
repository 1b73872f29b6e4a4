"""MTKD (docs/mtkd.md): stage 1 ``MTKDAggregatorModel`` and stage 2 ``MTKDStudentModel`` on ``KDModel``.

Stage 1 trains ``net_g`` = the DCTSwin aggregator on the channel stack of the frozen teachers'
SR outputs (canonical = ``teachers`` list order) against GT with ``pixel_opt``; its checkpoints
carry ``kd_meta`` (teacher order and types, scale, output convention, mask mode). Stage 2 trains a
student with ``kd_opt`` (``KDWaveletLoss``) against the frozen aggregator's output plus
``pixel_opt`` (L1, 0.1) against GT; the aggregator comes from an ``aggregator:`` block and its
teacher order is checked against ``kd_meta`` (or ``aggregator.teacher_order``). Both models use
cached teacher/aggregator outputs from the batch (``KDCachedTargetDataset``) when present.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import torch
from basicsr.utils import get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY
from torch import nn

from kdsr_plugins.core.arch_info import mirror_pad, pad_multiple
from kdsr_plugins.core.checkpoints import (
    CheckpointError,
    extract_state_dict,
    load_checkpoint_file,
    load_state_dict_into,
    resolve_param_key,
)
from kdsr_plugins.core.kd_model import KDModel
from kdsr_plugins.core.option_checks import loss_block
from kdsr_plugins.core.schema import Field
from kdsr_plugins.core.teachers import parse_teacher_specs
from kdsr_plugins.methods.mtkd.aggregator import AGGREGATOR_SCHEMA, check_teacher_order, kd_meta_of, load_aggregator
from kdsr_plugins.methods.mtkd.public_checkpoint import (
    PUBLIC_MTKD_MASK_MODE,
    PUBLIC_MTKD_OUTPUT_CONVENTION,
    convert_public_mtkd_aggregator,
)

__all__ = ['MTKDAggregatorModel', 'MTKDStudentModel']

DEFAULT_STAGE2_KD_OPT = {'type': 'KDWaveletLoss', 'loss_weight': 1.0, 'levels': 1}
DEFAULT_STAGE2_PIXEL_OPT = {'type': 'L1Loss', 'loss_weight': 0.1, 'reduction': 'mean'}


# --------------------------------------------------------------------------------------------- base
class _MTKDBase(KDModel):
    """Shared by both stages: padded teacher forwards, cached-or-online teacher stack."""

    #: Teacher inputs are mirror-padded to the SwinIR window here (any LR patch size works).
    pads_teacher_inputs = True

    def teacher_sr(self, x: torch.Tensor, name: str) -> torch.Tensor:
        """Teacher ``name``'s SR output of ``x`` (no_grad; SwinIR teachers padded to their window)."""
        spec = next(s for s in self.teacher_specs if s.name == name)
        multiple = pad_multiple(spec.network_opt)
        h, w = x.shape[-2:]
        scale = int(self.opt['scale'])
        out = self.teacher_forward(mirror_pad(x, multiple) if multiple > 1 else x, name)
        return out[:, :, :h * scale, :w * scale]

    def teacher_outputs(self, x: torch.Tensor, use_cache: bool = True) -> list[torch.Tensor]:
        """Every teacher's output in canonical order: cached ``target_<name>`` if present, else online."""
        outs = []
        for name in self.teachers:
            cached = self.cached_target(f'target_{name}') if use_cache else None
            if cached is not None:
                b, _, h, w = x.shape
                expected = (b, 3, h * int(self.opt['scale']), w * int(self.opt['scale']))
                if tuple(cached.shape) != expected:
                    raise ValueError(f'Cached output of teacher {name!r} is {tuple(cached.shape)}, expected '
                                     f'{expected}.')
                outs.append(cached)
            else:
                outs.append(self.teacher_sr(x, name))
        return outs

    def _check_teacher_pretrains(self) -> None:
        if not self.is_train:
            missing = [s.name for s in self.teacher_specs if s.pretrain is None]
            if missing:
                raise ValueError(f'{type(self).__name__} needs the teachers at test time: teachers {missing} have '
                                 'no pretrain checkpoint.')


# --------------------------------------------------------------------------------------------- stage 1
@MODEL_REGISTRY.register()
class MTKDAggregatorModel(_MTKDBase):
    """MTKD stage 1: train the DCTSwin aggregator (``net_g``) on frozen teacher outputs against GT.

    Loss: ``pixel_opt`` (L1, logged ``l_pix``) between ``net_g(stack(T_1(x), ..., T_N(x)))`` and GT.
    Validation/test runs the teachers (``teachers_at_test``). Checkpoints ``net_g_*.pth`` carry
    ``kd_meta``. Loading a checkpoint into ``net_g`` (fine-tune, resume, test) checks its
    ``kd_meta.teacher_order`` against ``teachers`` (error); public-MTKD checkpoints (with
    ``attn_mask`` buffers) are converted and need ``output_convention: mean255``.
    """

    teachers_at_test = True
    uses_output_kd = False
    option_fields = {'train': (Field('kd_opt', 'mapping', None, 'not used', dynamic=loss_block, role='loss',
                                     ignored='MTKDAggregatorModel trains against GT only.'),)}

    def load_network(self, net: nn.Module, load_path: str, strict: bool = True, param_key: str | None = 'params',
                     what: str = 'network') -> None:
        """Teachers as the core; the aggregator with kd_meta / public-format handling."""
        if what != 'network':
            super().load_network(net, load_path, strict, param_key, what)
            return
        bare = self.get_bare_model(net)
        ckpt = load_checkpoint_file(load_path, 'aggregator (network_g)')
        state = extract_state_dict(ckpt, param_key, load_path)
        logger = get_root_logger()
        if any(k.endswith('attn_mask') for k in state):
            if getattr(bare, 'output_convention', None) != PUBLIC_MTKD_OUTPUT_CONVENTION:
                raise CheckpointError(f'{load_path!r} is a public-MTKD aggregator checkpoint (attn_mask buffers): '
                                      f'set network_g.output_convention: {PUBLIC_MTKD_OUTPUT_CONVENTION}.')
            if getattr(bare, 'mask_mode', PUBLIC_MTKD_MASK_MODE) != PUBLIC_MTKD_MASK_MODE:
                raise CheckpointError(f'{load_path!r} is a public-MTKD aggregator checkpoint (attn_mask buffers), '
                                      f'trained with the public attention masks: set network_g.mask_mode: '
                                      f'{PUBLIC_MTKD_MASK_MODE} (the default).')
            state = convert_public_mtkd_aggregator(state)
            logger.warning(f'{load_path!r}: public-MTKD checkpoint converted; it has no kd_meta, so the teacher order '
                           'cannot be verified (the public stage-1 order is [edsr, swinir, rcan]).')
        load_state_dict_into(bare, state, strict, load_path, 'aggregator (network_g)')
        logger.info(f'Loading {type(bare).__name__} (aggregator) from {load_path}, '
                    f'param key [{resolve_param_key(ckpt, param_key)}].')
        meta = ckpt.get('kd_meta') if isinstance(ckpt, Mapping) else None
        if isinstance(meta, Mapping):
            specs = parse_teacher_specs(self.opt)
            check_teacher_order([s.name for s in specs], meta.get('teacher_order', []), f'aggregator {load_path!r}',
                                'error', [str(s.network_opt.get('type')) for s in specs], meta.get('teacher_types'))
            for key in ('output_convention', 'mask_mode'):
                if key in meta and getattr(bare, key, meta[key]) != meta[key]:
                    raise ValueError(f'{load_path!r} was trained with {key} = {meta[key]!r}, network_g gives '
                                     f'{getattr(bare, key)!r}.')

    def build_teachers(self) -> None:
        super().build_teachers()
        self._check_teacher_pretrains()
        bare = self.get_bare_model(self.net_g)
        n = getattr(bare, 'num_teachers', None)
        if n is not None and int(n) != len(self.teachers):
            raise ValueError(f'network_g (aggregator) takes {n} teachers (num_teachers), the teachers list has '
                             f'{len(self.teachers)}: {list(self.teachers)}.')

    def init_method(self) -> None:
        if self.opt['train'].get('kd_opt'):
            get_root_logger().warning('MTKDAggregatorModel ignores train.kd_opt (stage 1 trains against GT only).')
        self.cached_check()

    def cached_check(self) -> None:
        """Validate per-teacher caches of a ``KDCachedTargetDataset`` training set."""
        dataset = (self.opt.get('datasets') or {}).get('train') or {}
        if dataset.get('type') != 'KDCachedTargetDataset' or self.opt['train'].get('use_cached_targets') is False:
            return
        from kdsr_plugins.core.kd_cached_target_dataset import check_cached_targets

        for msg in check_cached_targets(dataset, int(self.opt['scale']), list(self.teachers), 'teachers'):
            get_root_logger().warning(msg)

    def has_loss_terms(self) -> bool:
        return self.cri_pix is not None

    def compute_losses(self, current_iter: int) -> OrderedDict[str, torch.Tensor]:
        """``l_pix`` = pixel_opt(aggregator(teacher stack), GT)."""
        stack = torch.cat(self.teacher_outputs(self.lq), dim=1)
        self.output = self.net_g(stack)
        return OrderedDict(l_pix=self.cri_pix(self.output, self.gt))

    def test(self) -> None:
        """LR -> every teacher (padded as needed) -> stack -> aggregator (EMA copy if any)."""
        net = self.net_g_ema if hasattr(self, 'net_g_ema') else self.net_g
        was_training = net.training
        net.eval()
        with torch.no_grad():
            self.output = net(torch.cat(self.teacher_outputs(self.lq, use_cache=False), dim=1))
        net.train(was_training)

    def checkpoint_metadata(self, net_label: str) -> dict[str, Any]:
        if net_label != 'net_g':
            return {}
        return {'kd_meta': kd_meta_of(self.teacher_specs, int(self.opt['scale']), self.get_bare_model(self.net_g))}


# --------------------------------------------------------------------------------------------- stage 2
@MODEL_REGISTRY.register()
class MTKDStudentModel(_MTKDBase):
    """MTKD stage 2: student vs the frozen aggregator's output (``kd_opt``) plus GT (``pixel_opt``).

    L = kd_opt(S(x), G(stack(T_i(x)))) + pixel_opt(S(x), y); defaults (when the keys are absent):
    ``kd_opt`` = ``KDWaveletLoss`` (1.0, levels 1), ``pixel_opt`` = L1 (0.1). Logged ``l_kd``, ``l_pix``.
    With ``aggregator: ~`` and ``train.fixed_teacher_weights: [w_1, ..., w_N]`` the no-aggregator
    baseline sum_i w_i * kd_opt(S, T_i) is used instead (logged ``l_kd_<name>``).
    """

    option_fields = {
        '': (Field('aggregator', 'mapping', None, 'frozen stage-1 aggregator', schema=AGGREGATOR_SCHEMA,
                   role='method', nullable=True),),
        'train': (Field('kd_opt', 'mapping', DEFAULT_STAGE2_KD_OPT, 'loss block: student vs aggregator output (l_kd)',
                        dynamic=loss_block, role='loss'),
                  Field('pixel_opt', 'mapping', DEFAULT_STAGE2_PIXEL_OPT, 'loss block: student vs GT (l_pix)',
                        dynamic=loss_block, role='loss'),
                  Field('fixed_teacher_weights', 'list', None, 'weights w_i of the no-aggregator baseline (with '
                        'aggregator: ~)', item='number')),
    }

    def init_training_settings(self) -> None:
        train_opt = self.opt['train']
        if 'kd_opt' not in train_opt:
            train_opt['kd_opt'] = dict(DEFAULT_STAGE2_KD_OPT)
        if 'pixel_opt' not in train_opt:
            train_opt['pixel_opt'] = dict(DEFAULT_STAGE2_PIXEL_OPT)
        self.aggregator: nn.Module | None = None
        self.aggregator_meta: dict[str, Any] = {}
        super().init_training_settings()

    def init_method(self) -> None:
        logger = get_root_logger()
        agg_opt = self.opt.get('aggregator')
        weights = self.opt['train'].get('fixed_teacher_weights')
        if self.cri_kd is None:
            raise ValueError('MTKDStudentModel needs train.kd_opt (distillation loss; default KDWaveletLoss).')
        if (agg_opt is None) == (weights is None):
            raise ValueError('MTKDStudentModel needs exactly one of an aggregator block (MTKD) or '
                             'train.fixed_teacher_weights with aggregator: ~ (fixed-weight multi-teacher baseline).')
        self.fixed_teacher_weights = None
        if weights is not None:
            if len(weights) != len(self.teachers):
                raise ValueError(f'train.fixed_teacher_weights has {len(weights)} weights for {len(self.teachers)} '
                                 f'teachers {list(self.teachers)}.')
            self.fixed_teacher_weights = [float(w) for w in weights]
        else:
            self.aggregator, self.aggregator_meta, warnings = load_aggregator(
                agg_opt, self.teacher_specs, int(self.opt['scale']), self.device)
            for msg in warnings:
                logger.warning(msg)
            n = sum(p.numel() for p in self.aggregator.parameters())
            logger.info(f'Frozen aggregator {type(self.aggregator).__name__} ({n:,d} parameters) from '
                        f'{self.aggregator_meta["pretrain"]}; teacher order {self.aggregator_meta["teacher_order"]}.')
        self.cached_check()

    def cached_check(self) -> None:
        """Validate the caches of a ``KDCachedTargetDataset`` training set against this run."""
        dataset = (self.opt.get('datasets') or {}).get('train') or {}
        if dataset.get('type') != 'KDCachedTargetDataset' or self.opt['train'].get('use_cached_targets') is False:
            return
        from kdsr_plugins.core.kd_cached_target_dataset import check_cached_targets

        per_teacher = self.aggregator is None or not isinstance(dataset.get('dataroot_target'), str)
        expect = 'teachers' if per_teacher else 'aggregator'  # per-teacher caches + online aggregator work too
        for msg in check_cached_targets(dataset, int(self.opt['scale']), list(self.teachers), expect,
                                        self.aggregator_meta.get('pretrain')):
            get_root_logger().warning(msg)

    def set_teacher_modes(self) -> None:
        super().set_teacher_modes()
        if self.aggregator is not None:
            self.aggregator.eval()

    def amp_networks(self) -> dict[str, nn.Module]:
        nets = super().amp_networks()
        if self.aggregator is not None:
            nets['aggregator'] = self.aggregator
        return nets

    @torch.no_grad()
    def aggregate(self, x: torch.Tensor) -> torch.Tensor:
        """I_MT = G(stack of the teacher outputs of ``x``) under no_grad."""
        return self.aggregator(torch.cat(self.teacher_outputs(x), dim=1))

    def compute_losses(self, current_iter: int) -> OrderedDict[str, torch.Tensor]:
        if self.fixed_teacher_weights is not None:
            targets = self.teacher_outputs(self.lq)
            self.output = self.net_g(self.lq)
            self.check_teacher_output(self.output, targets[0])
            loss_dict = self.output_losses(self.output, None)
            for name, weight, target in zip(self.teachers, self.fixed_teacher_weights, targets):
                loss_dict[f'l_kd_{name}'] = weight * self.cri_kd(self.output, target)
            return loss_dict
        per_teacher = 'target' not in self.cached_targets and any(k.startswith('target_') for k in self.cached_targets)
        target = None if per_teacher else self.cached_target('target')
        if target is None:  # online, or from cached per-teacher outputs
            target = self.aggregate(self.lq)
        self.output = self.net_g(self.lq)
        self.check_teacher_output(self.output, target)
        return self.output_losses(self.output, target)
