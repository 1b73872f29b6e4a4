"""``KDModel``: the KD core every method extends, and output ("logits") KD itself.

The core owns what all methods share (docs/core.md): frozen teachers built from options,
auxiliary trainable modules (optimised, checkpointed, resumed, DDP-wrapped), a training step
that sums loss terms without detaching them, CPU-safe device placement, atomic checkpoints,
``weights_only`` loading and SwinIR-safe validation. A method subclass overrides
``init_method`` / ``build_aux_modules`` / ``compute_losses`` and nothing else in most cases.
"""
from __future__ import annotations

import os.path as osp
from collections import OrderedDict
from copy import deepcopy
from typing import Any

import torch
from basicsr.archs import build_network
from basicsr.losses import build_loss
from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger
from basicsr.utils.dist_util import master_only
from basicsr.utils.registry import MODEL_REGISTRY
from torch import nn
from torch.nn.parallel import DataParallel, DistributedDataParallel

from kdsr_plugins.core.amp import (
    AMP_FIELD,
    CHANNELS_LAST_FIELD,
    SCALER_STATE_KEY,
    MixedPrecision,
    amp_options,
    training_state,
)
from kdsr_plugins.core.arch_info import mirror_pad, pad_multiple
from kdsr_plugins.core.checkpoints import (
    CheckpointError,
    atomic_torch_save,
    extract_state_dict,
    load_checkpoint_file,
    load_state_dict_into,
    resolve_param_key,
)
from kdsr_plugins.core.option_checks import NOOP_VAL_SELF_ENSEMBLE, loss_block, teacher_network_block
from kdsr_plugins.core.options import arch_scale
from kdsr_plugins.core.preemption import register_training_model
from kdsr_plugins.core.resume import capture_rng_state, gather_rng_states, restore_rng_state
from kdsr_plugins.core.schema import Field, Schema
from kdsr_plugins.core.teachers import (
    TEACHER_SCHEMA,
    TeacherSpec,
    build_teacher_network,
    check_teacher_scale,
    parse_teacher_specs,
)

NOOP_OPTION_KEYS = {('val', 'self_ensemble'): NOOP_VAL_SELF_ENSEMBLE}
#: ``train.optim_aux``: optimizer settings of the auxiliary modules' parameter group (~ / absent: optim_g's).
OPTIM_AUX_SCHEMA = Schema('train.optim_aux', (
    Field('lr', 'number', None, 'learning rate of the auxiliary modules', min=0.0, min_open=True),
    Field('weight_decay', 'number', None, 'weight decay of the auxiliary modules', min=0.0),
    Field('betas', 'list', None, 'Adam betas of the auxiliary modules', item='number'),
), doc='Optimizer settings of the auxiliary trainable modules (one extra parameter group of optim_g).')
OPTIM_AUX_KEYS = tuple(OPTIM_AUX_SCHEMA.keys)
CACHED_TARGET_MODES = ('auto', True, False)
USE_CACHED_TARGETS = Field('use_cached_targets', 'any', 'auto', 'auto: use the batch\'s cached teacher output '
                           '(target) when the dataset provides it; true: require it; false: always run the teachers',
                           choices=CACHED_TARGET_MODES,
                           message='train.use_cached_targets must be auto, true or false, got {value}.')


@MODEL_REGISTRY.register()
class KDModel(SRModel):
    """Output ("logits") knowledge distillation, and the base class of every KD method.

    Loss: ``pixel_opt`` (student vs GT, optional) + ``kd_opt`` (student vs teacher output).
    Subclasses add their method through the hooks ``init_method``, ``build_aux_modules`` and
    ``compute_losses``; see docs/core.md "One iteration" for the order of one iteration.

    Option keys (besides BasicSR's): ``network_t`` + ``path.{pretrain_network_t, param_key_t,
    strict_load_t}`` or a ``teachers`` list; ``train.kd_opt``; ``train.optim_aux``;
    ``train.teacher_train_mode``; ``train.use_cached_targets`` (``auto``: use the batch's cached
    teacher output ``target`` when a dataset such as ``KDCachedTargetDataset`` provides it);
    ``train.teacher_check`` (``error`` | ``warn`` | ``off``) and ``train.teacher_check_margin`` (dB
    over bicubic, see ``core.teacher_check``); ``train.amp`` (``off`` | ``bf16`` | ``fp16``) and
    ``train.channels_last`` (``core.amp``, docs/amp.md).
    """

    #: Whether inference (test mode) needs the teachers (MTKD's aggregator does).
    teachers_at_test = False
    #: Whether ``train.kd_opt`` (output KD against the first teacher) is part of the method.
    uses_output_kd = True
    #: Whether the method pads teacher inputs itself (else SwinIR teachers need window-multiple LR patches).
    pads_teacher_inputs = False
    #: Option keys this class adds per block (``''`` top level, ``path``, ``train``), on top of BasicSR's
    #: SRModel keys; subclasses add their method blocks the same way (docs/options.md).
    option_fields = {
        '': (Field('network_t', 'mapping', None, 'network block of the single teacher (or a teachers list)',
                   dynamic=teacher_network_block, role='network'),
             Field('teachers', 'list', None, 'teachers list (instead of network_t), each entry below',
                   item_schema=TEACHER_SCHEMA)),
        'path': (Field('pretrain_network_t', 'str', None, 'checkpoint of network_t (required for training)'),
                 Field('param_key_t', 'str', 'params', 'key of the network_t weights in that checkpoint',
                       nullable=True),
                 Field('strict_load_t', 'bool', True, 'load network_t strictly')),
        'train': (Field('kd_opt', 'mapping', None, 'loss block: student vs teacher output (l_kd)',
                        dynamic=loss_block, role='loss'),
                  Field('optim_aux', 'mapping', None, 'optimizer settings of the auxiliary modules',
                        schema=OPTIM_AUX_SCHEMA, nullable=True),
                  Field('teacher_train_mode', 'bool', False, 'true: teachers in train mode (reference-code quirk)'),
                  Field('teacher_check', 'any', 'error', 'start-up teacher score vs bicubic: error (stop) | warn | off '
                        '(docs/guarantees.md, section 8)', choices=('error', 'warn', 'off', True, False),
                        nullable=True),
                  Field('teacher_check_margin', 'number', 0.1, 'dB a teacher must beat bicubic by (teacher_check)'),
                  USE_CACHED_TARGETS,
                  AMP_FIELD,
                  CHANNELS_LAST_FIELD,
                  Field('perceptual_opt', 'mapping', None, 'SRModel\'s perceptual loss',
                        ignored='KD models build no perceptual loss.')),
    }

    def __init__(self, opt: dict) -> None:
        self.teachers: OrderedDict[str, nn.Module] = OrderedDict()
        self.teacher_specs: list[TeacherSpec] = []
        self.net_aux: nn.Module | None = None
        self.cached_targets: dict[str, torch.Tensor] = {}
        self._checked_teacher_output = False
        #: The iteration BasicSR's loop started last (``update_learning_rate``); a SIGTERM stop saves it.
        self.last_started_iter: int | None = None
        #: Mixed precision / memory format of the training step (``core.amp``); set up with the training settings.
        self.amp: MixedPrecision | None = None
        super().__init__(opt)
        if not self.is_train and self.teachers_at_test:
            self.build_teachers()
        if self.is_train:
            register_training_model(self)

    # ------------------------------------------------------------------ device / loading
    def model_to_device(self, net: nn.Module) -> nn.Module:
        """Move to ``self.device`` (channels-last with ``train.channels_last``); wrap in DDP (CPU: no
        ``device_ids``) or DataParallel."""
        net = net.to(self.device)
        if self.is_train and amp_options(self.opt.get('train'))[1]:
            net = net.to(memory_format=torch.channels_last)  # before wrapping: DDP's buckets follow the layout
        if self.opt['dist']:
            kwargs: dict[str, Any] = {'find_unused_parameters': self.opt.get('find_unused_parameters', False)}
            if self.device.type == 'cuda':
                kwargs['device_ids'] = [torch.cuda.current_device()]
            net = DistributedDataParallel(net, **kwargs)
        elif self.opt['num_gpu'] > 1:
            net = DataParallel(net)
        return net

    def load_network(self, net: nn.Module, load_path: str, strict: bool = True, param_key: str | None = 'params',
                     what: str = 'network') -> None:
        """BasicSR's ``load_network`` with ``weights_only`` loading and explicit errors."""
        logger = get_root_logger()
        net = self.get_bare_model(net)
        checkpoint = load_checkpoint_file(load_path, what)
        used_key = resolve_param_key(checkpoint, param_key)
        state = extract_state_dict(checkpoint, used_key, load_path)
        missing, unexpected = load_state_dict_into(net, state, strict, load_path, what)
        fallback = f' ({param_key} was asked for; the checkpoint has none)' if used_key != param_key else ''
        logger.info(f'Loading {type(net).__name__} ({what}) from {load_path}, param key [{used_key}]{fallback}.')
        if not strict and (missing or unexpected):
            logger.warning(f'Non-strict load of {what} from {load_path}: {len(missing)} key(s) missing, '
                           f'{len(unexpected)} unexpected or mismatched, left as initialised: '
                           f'{(missing + unexpected)[:10]}')

    # ------------------------------------------------------------------ teachers
    def build_teachers(self) -> None:
        """Build, load (strictly by default), freeze and ``eval()`` every teacher."""
        logger = get_root_logger()
        self.teacher_specs = parse_teacher_specs(self.opt)
        scale = int(self.opt['scale'])
        student_scale = arch_scale(self.opt['network_g'])
        if student_scale is not None and student_scale != scale:
            raise ValueError(f'network_g upscales x{student_scale} but scale is x{scale}.')
        for spec in self.teacher_specs:
            check_teacher_scale(spec, scale)
            auto = build_teacher_network(spec, scale, self.opt['network_g'])
            if auto is not None:  # built and strictly loaded from its checkpoint (docs/auto_teachers.md)
                net = auto.to(self.device)
                logger.info(f'Teacher {spec.name!r}: {auto.arch} x{auto.scale} detected by spandrel in '
                            f'{spec.pretrain}.')
            elif spec.pretrain is None:
                net = build_network(deepcopy(spec.network_opt)).to(self.device)
                if self.is_train:
                    raise ValueError(f'Teacher {spec.name!r} has no checkpoint: set '
                                     f'{"path.pretrain_network_t" if spec.name == "t" else "teachers[].pretrain"}.')
            else:
                net = build_network(deepcopy(spec.network_opt)).to(self.device)
                if not spec.strict_load:
                    logger.warning(f'Teacher {spec.name!r} is loaded non-strictly; differing keys are listed below.')
                self.load_network(net, spec.pretrain, spec.strict_load, spec.param_key, what=f'teacher {spec.name!r}')
            net.requires_grad_(False)
            net.eval()
            self.print_network(net)
            self.teachers[spec.name] = net
        self._teacher_train_mode = bool(self.opt.get('train', {}).get('teacher_train_mode', False))
        if self._teacher_train_mode:
            logger.warning('train.teacher_train_mode: true reproduces the reference codes (teacher in train mode).')

    @property
    def net_t(self) -> nn.Module:
        """The first (or only) teacher."""
        return next(iter(self.teachers.values()))

    def set_teacher_modes(self) -> None:
        """Re-assert teacher eval mode (or the quirk train mode) before each step."""
        for net in self.teachers.values():
            net.train(self._teacher_train_mode)

    @torch.no_grad()
    def teacher_forward(self, x: torch.Tensor, name: str | None = None) -> torch.Tensor:
        """Frozen teacher output under ``no_grad`` (first teacher unless ``name`` is given)."""
        net = self.teachers[name] if name is not None else self.net_t
        return net(x)

    def check_teacher_output(self, student_out: torch.Tensor, teacher_out: torch.Tensor) -> None:
        """Fail once, clearly, when teacher and student outputs cannot be compared."""
        if self._checked_teacher_output:
            return
        if student_out.shape != teacher_out.shape:
            raise ValueError(f'Teacher output {tuple(teacher_out.shape)} and student output '
                             f'{tuple(student_out.shape)} differ: check scale and channel options.')
        self._checked_teacher_output = True

    # ------------------------------------------------------------------ cached teacher outputs
    def feed_data(self, data: dict) -> None:
        """SRModel's ``lq``/``gt``, plus cached targets (batch keys ``target``, ``target_<name>``)."""
        super().feed_data(data)
        self.cached_targets = {k: v.to(self.device) for k, v in data.items()
                               if (k == 'target' or k.startswith('target_')) and torch.is_tensor(v)}

    def cached_target(self, key: str = 'target') -> torch.Tensor | None:
        """The current batch's cached target ``key``, or None to run the teacher(s) online.

        ``train.use_cached_targets``: ``auto`` (default) uses it when the batch has it; ``true``
        requires it (raises otherwise); ``false`` always returns None.
        """
        mode = USE_CACHED_TARGETS.validate((self.opt.get('train') or {}).get('use_cached_targets', 'auto'),
                                           'train.use_cached_targets')
        if mode is False:
            return None
        target = self.cached_targets.get(key)
        if target is None and mode is True:
            raise KeyError(f'train.use_cached_targets is true but the batch has no {key!r} (has: '
                           f'{sorted(self.cached_targets)}); use a dataset with cached targets '
                           '(KDCachedTargetDataset).')
        return target

    # ------------------------------------------------------------------ training settings
    def init_training_settings(self) -> None:
        self.net_g.train()
        train_opt = self.opt['train']
        self.warn_noop_keys()
        amp_mode, channels_last = amp_options(train_opt)
        self.amp = MixedPrecision(amp_mode, self.device, channels_last)  # fp16 on CPU: error before any iteration
        if train_opt.get('optim_aux') is not None:
            train_opt['optim_aux'] = OPTIM_AUX_SCHEMA.check(train_opt['optim_aux'], defaults=False)
        self.init_ema()
        self.build_teachers()
        self.cri_pix = build_loss(train_opt['pixel_opt']).to(self.device) if train_opt.get('pixel_opt') else None
        self.cri_perceptual = None
        self.cri_kd = None
        if self.uses_output_kd and train_opt.get('kd_opt'):
            self.cri_kd = build_loss(train_opt['kd_opt']).to(self.device)
        self.init_method()
        self.check_train_patch()
        self.check_teachers()
        aux = self.build_aux_modules()
        if aux is not None:
            self.net_aux = self.model_to_device(aux)
            self.print_network(self.net_aux)
            logger = get_root_logger()
            n_aux = sum(p.numel() for p in aux.parameters())
            logger.info(f'Auxiliary trainable modules: {n_aux:,d} parameters (training only).')
        if not self.has_loss_terms():
            raise ValueError(f'{type(self).__name__}: no loss configured (pixel_opt, kd_opt or the method block).')
        self.attach_amp()
        self.setup_optimizers()
        self.setup_schedulers()

    def amp_networks(self) -> dict[str, nn.Module]:
        """Hook: the bare networks whose training forwards run under ``train.amp`` / ``channels_last``.

        Student, teachers and auxiliary modules; a method adds further frozen networks (MTKD's aggregator).
        """
        nets = {'net_g': self.get_bare_model(self.net_g)}
        nets.update({f'teacher {name!r}': net for name, net in self.teachers.items()})
        if self.net_aux is not None:
            nets['net_aux'] = self.get_bare_model(self.net_aux)
        return nets

    def attach_amp(self) -> None:
        """Hook every ``amp_networks`` module (student and auxiliary modules were converted before wrapping)."""
        if not self.amp.uses_hooks:
            return
        nets = self.amp_networks()
        for label, net in nets.items():
            self.amp.attach(net, convert=label not in ('net_g', 'net_aux'))
        self.amp.log_setup(list(nets))

    def warn_noop_keys(self) -> None:
        logger = get_root_logger()
        for (block, key), why in NOOP_OPTION_KEYS.items():
            if key in (self.opt.get(block) or {}):
                logger.warning(f'Option {block}.{key} is ignored: {why}')

    def init_ema(self) -> None:
        """EMA of the student exactly as ``SRModel`` (student parameters only)."""
        self.ema_decay = self.opt['train'].get('ema_decay', 0)
        if self.ema_decay > 0:
            get_root_logger().info(f'Use Exponential Moving Average with decay: {self.ema_decay}')
            self.net_g_ema = build_network(self.opt['network_g']).to(self.device)
            if amp_options(self.opt['train'])[1]:
                self.net_g_ema.to(memory_format=torch.channels_last)
            load_path = self.opt['path'].get('pretrain_network_g')
            if load_path is not None:
                self.load_network(self.net_g_ema, load_path, self.opt['path'].get('strict_load_g', True), 'params_ema')
            else:
                self.model_ema(0)
            self.net_g_ema.eval()

    def init_method(self) -> None:
        """Hook: parse the method block, build losses and taps (teachers exist already)."""

    def teacher_check_forwards(self) -> dict[str, Any]:
        """Hook: ``{name: forward(lq) -> SR}`` of the frozen networks scored by ``check_teachers``.

        Each teacher, its input mirror-padded to the window multiple of its arch and the output cut back.
        """
        scale = int(self.opt['scale'])

        def forward_of(spec: TeacherSpec) -> Any:
            net, multiple = self.teachers[spec.name], pad_multiple(spec.network_opt)

            def forward(lq: torch.Tensor) -> torch.Tensor:
                h, w = lq.shape[-2:]
                return net(mirror_pad(lq, multiple) if multiple > 1 else lq)[:, :, :h * scale, :w * scale]
            return forward
        return {spec.name: forward_of(spec) for spec in self.teacher_specs if spec.name in self.teachers}

    def check_teachers(self) -> None:
        """Score every teacher against bicubic before the first iteration (``train.teacher_check``).

        Random-neutral and rank-independent (the sample may be random training patches, drawn from a
        fixed seed); see ``core.teacher_check``.
        """
        from kdsr_plugins.core import teacher_check

        mode, margin = teacher_check.teacher_check_options(self.opt.get('train'))
        forwards = self.teacher_check_forwards()
        if mode == 'off' or not forwards:
            return
        logger = get_root_logger()
        scale = int(self.opt['scale'])
        state = capture_rng_state()
        try:
            teacher_check.seed_everything(0)  # the same training patches on every rank: one verdict under DDP
            pairs, source = teacher_check.sample_pairs(self.opt.get('datasets') or {}, scale)
            if not pairs:
                logger.warning('Teacher sanity check skipped: no dataset block with GT images to score on.')
                return
            scores = teacher_check.score_teachers(forwards, pairs, scale, self.device, source)
        finally:
            restore_rng_state(state)
        types = {spec.name: spec.network_opt.get('type') for spec in self.teacher_specs}
        teacher_check.judge(scores, mode, margin, lambda n: f'teacher {n!r} ({types.get(n, "?")})', scale, logger)

    def lr_patch_networks(self) -> dict[str, dict]:
        """Hook: option dicts of the networks that run unpadded on the LR training patch."""
        nets = {'network_g': self.opt['network_g']}
        if not self.pads_teacher_inputs:
            nets.update({f'teacher {spec.name!r}': spec.network_opt for spec in self.teacher_specs})
        return nets

    def check_train_patch(self) -> None:
        """Fail at start-up when the LR training patch is not a multiple of a SwinIR window size.

        BasicSR's SwinIR does not pad during training, so such a patch would stop the first
        iteration with a reshape error deep inside the attention code.
        """
        gt_size = ((self.opt.get('datasets') or {}).get('train') or {}).get('gt_size')
        if not gt_size:
            return
        scale = int(self.opt['scale'])
        patch = int(gt_size) // scale
        for what, net_opt in self.lr_patch_networks().items():
            multiple = pad_multiple(net_opt)
            if patch % multiple:
                raise ValueError(f'LR training patch {patch} (datasets.train.gt_size {gt_size} / scale {scale}) is '
                                 f'not a multiple of the window size {multiple} of {what} ({net_opt.get("type")}), '
                                 f'which BasicSR does not pad in training: use a gt_size that is a multiple of '
                                 f'{scale * multiple}.')

    def build_aux_modules(self) -> nn.Module | None:
        """Hook: return the method's auxiliary trainable modules as one module, or None."""
        return None

    def has_loss_terms(self) -> bool:
        """Whether at least one loss term is configured (subclasses add theirs)."""
        return self.cri_pix is not None or self.cri_kd is not None

    def setup_optimizers(self) -> None:
        """One optimizer: student parameters, then auxiliary parameters as a second group."""
        train_opt = self.opt['train']
        logger = get_root_logger()
        student = []
        for name, param in self.net_g.named_parameters():
            if param.requires_grad:
                student.append(param)
            else:
                logger.warning(f'Params {name} will not be optimized.')
        groups: list[dict[str, Any]] = [{'params': student}]
        if self.net_aux is not None:
            aux_group = {'params': [p for p in self.net_aux.parameters() if p.requires_grad]}
            aux_group.update({k: v for k, v in (train_opt.get('optim_aux') or {}).items() if v is not None})
            groups.append(aux_group)
        optim_opt = deepcopy(train_opt['optim_g'])
        optim_type = optim_opt.pop('type')
        self.optimizer_g = self.get_optimizer(optim_type, groups, **optim_opt)
        self.optimizers.append(self.optimizer_g)

    # ------------------------------------------------------------------ one iteration
    def update_learning_rate(self, current_iter: int, warmup_iter: int = -1) -> None:
        """BasicSR's schedule step, called first in every iteration; remembers the iteration."""
        self.last_started_iter = int(current_iter)
        super().update_learning_rate(current_iter, warmup_iter)

    def optimize_parameters(self, current_iter: int) -> None:
        self.optimizer_g.zero_grad(set_to_none=True)
        self.set_teacher_modes()
        with self.amp.step_region():  # network forwards under autocast, their outputs and the losses float32
            loss_dict = self.compute_losses(current_iter)
        l_total = self.total_loss(loss_dict, current_iter)
        self.amp.backward(l_total)
        self.amp.step(self.optimizer_g)
        self.log_dict = self.reduce_loss_dict(loss_dict)
        self.log_dict.update(self.amp.log_values())
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)

    def compute_losses(self, current_iter: int) -> OrderedDict[str, torch.Tensor]:
        """Output KD: returns the weighted loss terms, each logged under its ``l_`` key."""
        target = self.cached_target('target')
        if target is None:
            target = self.teacher_forward(self.lq)
        self.output = self.net_g(self.lq)
        self.check_teacher_output(self.output, target)
        return self.output_losses(self.output, target)

    def output_losses(self, output: torch.Tensor, teacher_out: torch.Tensor | None) -> OrderedDict[str, torch.Tensor]:
        """``l_pix`` (to GT) and ``l_kd`` (to the teacher output) for one student output."""
        loss_dict: OrderedDict[str, torch.Tensor] = OrderedDict()
        if self.cri_pix is not None:
            loss_dict['l_pix'] = self.cri_pix(output, self.gt)
        if self.cri_kd is not None and teacher_out is not None:
            loss_dict['l_kd'] = self.cri_kd(output, teacher_out)
        return loss_dict

    @staticmethod
    def total_loss(loss_dict: OrderedDict[str, torch.Tensor], current_iter: int) -> torch.Tensor:
        """Sum the terms without detaching; stop on a non-finite total, naming the terms."""
        if not loss_dict:
            raise RuntimeError('No loss term was computed in this iteration.')
        total = sum(loss_dict.values())
        if not torch.isfinite(total.detach()).item():
            terms = ', '.join(f'{k}={v.detach().float().item():.4g}' for k, v in loss_dict.items())
            raise FloatingPointError(f'Non-finite loss at iteration {current_iter}: {terms}. Training stopped; '
                                     'the last saved checkpoint is left untouched.')
        return total

    # ------------------------------------------------------------------ inference
    def validation(self, dataloader, current_iter, tb_logger, save_img=False) -> None:
        """BasicSR validation, random-neutral: training randomness does not depend on ``val_freq``.

        Under DDP, validation (rank 0 only) runs the bare student: a DDP forward broadcasts the
        module's buffers (SwinIR's index and mask buffers, for one) from rank 0 to ranks that are
        not validating, which hangs the run.
        """
        state = capture_rng_state()
        wrapper = self.net_g
        if isinstance(wrapper, DistributedDataParallel):
            self.net_g = wrapper.module
        try:
            super().validation(dataloader, current_iter, tb_logger, save_img)
        finally:
            self.net_g = wrapper
            restore_rng_state(state)

    def test(self) -> None:
        """SRModel.test with SwinIR-style padding to the window size, so any size validates."""
        multiple = pad_multiple(self.opt['network_g'])
        _, _, h, w = self.lq.shape
        lq = mirror_pad(self.lq, multiple)
        net = self.net_g_ema if hasattr(self, 'net_g_ema') else self.net_g
        was_training = net.training
        net.eval()
        with torch.no_grad():
            output = net(lq)
        net.train(was_training)
        scale = self.opt['scale']
        self.output = output[:, :, :h * scale, :w * scale]

    # ------------------------------------------------------------------ checkpoints
    def save(self, epoch: int, current_iter: int) -> None:
        """Student (+EMA), auxiliary modules, then the training state (written last).

        Refuses (``FloatingPointError``) to write non-finite weights, so a diverged step never
        replaces the last good checkpoint.
        """
        self.check_finite_weights(current_iter)
        if hasattr(self, 'net_g_ema'):
            self.save_network([self.net_g, self.net_g_ema], 'net_g', current_iter, param_key=['params', 'params_ema'])
        else:
            self.save_network(self.net_g, 'net_g', current_iter)
        if self.net_aux is not None:
            self.save_network(self.net_aux, 'net_aux', current_iter)
        self.save_extra_networks(current_iter)
        self.save_training_state(epoch, current_iter)

    def check_finite_weights(self, current_iter: int) -> None:
        """Raise ``FloatingPointError`` naming the first non-finite trainable tensor (student, EMA, aux)."""
        for label, net in (('net_g', self.net_g), ('net_g_ema', getattr(self, 'net_g_ema', None)),
                           ('net_aux', self.net_aux)):
            if net is None:
                continue
            for name, param in self.get_bare_model(net).named_parameters():
                if not torch.isfinite(param.detach()).all():
                    where = 'the end of training' if current_iter == -1 else f'iteration {current_iter}'
                    raise FloatingPointError(f'Non-finite weights in {label}.{name} at {where}: not saving. '
                                             'Training stopped; the last saved checkpoint is left untouched.')

    def save_extra_networks(self, current_iter: int) -> None:
        """Hook for methods with further trainable networks to save before the state."""

    @master_only
    def save_network(self, net: nn.Module | list[nn.Module], net_label: str, current_iter: int,
                     param_key: str | list[str] = 'params') -> None:
        """BasicSR's layout (``<label>_<iter>.pth``), written atomically; failures raise."""
        label_iter = 'latest' if current_iter == -1 else current_iter
        nets = net if isinstance(net, list) else [net]
        keys = param_key if isinstance(param_key, list) else [param_key]
        if len(nets) != len(keys):
            raise ValueError('save_network: one param_key per network is needed.')
        save_dict = {}
        for net_, key in zip(nets, keys):
            state = self.get_bare_model(net_).state_dict()
            save_dict[key] = OrderedDict((k[7:] if k.startswith('module.') else k, v.detach().cpu())
                                         for k, v in state.items())
        save_dict.update(self.checkpoint_metadata(net_label))
        atomic_torch_save(save_dict, osp.join(self.opt['path']['models'], f'{net_label}_{label_iter}.pth'))

    def checkpoint_metadata(self, net_label: str) -> dict[str, Any]:
        """Hook: extra (weights-only-safe) entries stored with a network checkpoint."""
        return {}

    def save_training_state(self, epoch: int, current_iter: int) -> None:
        """``<iter>.state`` (rank 0 writes): optimizers, schedulers, epoch, iteration, random states.

        Single process: ``rng`` = this process's states. DDP: ``rng_ranks`` = every rank's states
        (index = rank), gathered from all ranks, so this method is collective under DDP (BasicSR
        calls ``save`` on every rank).
        """
        if current_iter == -1:
            return
        per_rank = gather_rng_states() if self.opt['dist'] else None
        if self.opt['rank'] != 0:
            return
        state = training_state(epoch, current_iter, self.optimizers, self.schedulers, self.amp)
        if per_rank is None:
            state['rng'] = capture_rng_state()
        else:
            state['rng'], state['rng_ranks'] = None, per_rank
        atomic_torch_save(state, osp.join(self.opt['path']['training_states'], f'{current_iter}.state'))

    def resume_training(self, resume_state: dict) -> None:
        """Restore auxiliary modules strictly (refusing a missing file), then optimizers/schedulers."""
        if self.net_aux is not None:
            path = osp.join(self.opt['path']['models'], f'net_aux_{resume_state["iter"]}.pth')
            if not osp.isfile(path):
                raise CheckpointError(f'Cannot resume: auxiliary modules checkpoint {path} is missing; refusing to '
                                      're-initialise them under restored optimizer moments.')
            self.load_network(self.net_aux, path, True, 'params', what='auxiliary modules')
        n_opt, n_sched = len(resume_state['optimizers']), len(resume_state['schedulers'])
        if n_opt != len(self.optimizers) or n_sched != len(self.schedulers):
            raise CheckpointError(f'Resume state has {n_opt} optimizer(s) / {n_sched} scheduler(s), the model has '
                                  f'{len(self.optimizers)} / {len(self.schedulers)}: was it written by another model?')
        for optimizer, state in zip(self.optimizers, resume_state['optimizers']):
            groups = len(state['param_groups'])
            if groups != len(optimizer.param_groups):
                raise CheckpointError(f'Resume state optimizer has {groups} parameter group(s), the model has '
                                      f'{len(optimizer.param_groups)} (auxiliary modules added or removed?).')
        super().resume_training(resume_state)
        for msg in self.amp.load_state_dict(resume_state.get(SCALER_STATE_KEY)):
            get_root_logger().warning(msg)

