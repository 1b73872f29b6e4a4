"""``AmpSRModel``: BasicSR's ``SRModel`` trained under ``train.amp`` / ``train.channels_last`` (docs/amp.md).

The from-scratch baseline at the precision of the KD models: BasicSR's own ``SRModel`` has no
mixed precision (and refuses the two keys at start-up), so a student trained alone under bf16 for
a comparison with a bf16 KD run uses this model type. Everything else is ``SRModel``'s: losses
(``pixel_opt``, ``perceptual_opt``), EMA, validation, saving.
"""
from __future__ import annotations

import os.path as osp
from collections import OrderedDict

import torch
from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger
from basicsr.utils.dist_util import master_only
from basicsr.utils.registry import MODEL_REGISTRY
from torch import nn

from kdsr_plugins.core.amp import (
    AMP_FIELD,
    CHANNELS_LAST_FIELD,
    SCALER_STATE_KEY,
    MixedPrecision,
    amp_options,
    training_state,
)
from kdsr_plugins.core.checkpoints import atomic_torch_save

__all__ = ['AmpSRModel', 'apply_precision']


def apply_precision(opt: dict, amp: str, channels_last: bool) -> None:
    """Set ``train.amp`` / ``train.channels_last`` of a training option dict in place.

    The student trained alone (``model_type: SRModel``, which has neither key) becomes ``AmpSRModel``,
    so every row of a comparison trains at the same precision. ``off`` without channels-last: unchanged.
    """
    if amp == 'off' and not channels_last:
        return
    opt['train'].update(amp=amp, channels_last=channels_last)
    if opt['model_type'] == 'SRModel':
        opt['model_type'] = 'AmpSRModel'


@MODEL_REGISTRY.register()
class AmpSRModel(SRModel):
    """``SRModel`` whose training forwards run under ``train.amp`` (``off`` | ``bf16`` | ``fp16``), losses in float32.

    ``train.channels_last`` puts the student and its inputs in channels-last memory format. The
    fp16 loss-scaler state is saved in every training state (key ``amp_scaler``) and restored on resume.
    """

    option_fields = {'train': (AMP_FIELD, CHANNELS_LAST_FIELD)}

    def __init__(self, opt: dict) -> None:
        self.amp: MixedPrecision | None = None
        super().__init__(opt)

    def model_to_device(self, net: nn.Module) -> nn.Module:
        if self.is_train and amp_options(self.opt.get('train'))[1]:
            net = net.to(memory_format=torch.channels_last)  # before any wrapping
        return super().model_to_device(net)

    def init_training_settings(self) -> None:
        mode, channels_last = amp_options(self.opt['train'])
        self.amp = MixedPrecision(mode, self.device, channels_last)  # fp16 on CPU: error before any iteration
        super().init_training_settings()
        if self.amp.uses_hooks:
            self.amp.attach(self.get_bare_model(self.net_g), convert=False)
            self.amp.log_setup(['net_g'])

    def optimize_parameters(self, current_iter: int) -> None:
        self.optimizer_g.zero_grad(set_to_none=True)
        with self.amp.step_region():  # the student's forward under autocast, its output float32
            self.output = self.net_g(self.lq)
        terms: OrderedDict[str, torch.Tensor] = OrderedDict()
        if self.cri_pix:
            terms['l_pix'] = self.cri_pix(self.output, self.gt)
        if self.cri_perceptual:
            l_percep, l_style = self.cri_perceptual(self.output, self.gt)
            if l_percep is not None:
                terms['l_percep'] = l_percep
            if l_style is not None:
                terms['l_style'] = l_style
        if not terms:
            raise ValueError('AmpSRModel: no loss configured (train.pixel_opt or train.perceptual_opt).')
        self.amp.backward(torch.stack(list(terms.values())).sum())
        self.amp.step(self.optimizer_g)
        self.log_dict = self.reduce_loss_dict(terms)
        self.log_dict.update(self.amp.log_values())
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)

    @master_only
    def save_training_state(self, epoch: int, current_iter: int) -> None:
        """BasicSR's training state plus the fp16 loss-scaler state (written atomically)."""
        if current_iter == -1:
            return
        state = training_state(epoch, current_iter, self.optimizers, self.schedulers, self.amp)
        atomic_torch_save(state, osp.join(self.opt['path']['training_states'], f'{current_iter}.state'))

    def resume_training(self, resume_state: dict) -> None:
        super().resume_training(resume_state)
        for msg in self.amp.load_state_dict(resume_state.get(SCALER_STATE_KEY)):
            get_root_logger().warning(msg)
