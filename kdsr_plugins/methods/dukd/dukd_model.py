"""``DUKDModel``: Data Upcycling Knowledge Distillation (docs/dukd.md).

One iteration (``update_mode: single_step``, the paper's single objective)::

    t   = T(x)                                  (no_grad, frozen eval teacher)
    o   = S(x)                                  l_pix = w_pix·|o − y|,   l_kd = w_kd·|o − t|
    z   = HR tiles of y at LR patch size        l_zoom_in = w_kd·|F⁻¹(S(F(z))) − T(z)|
    x↓  = imresize(x, 1/s)     (zoom_out)       l_zoom_out_pix = w_pix·|S(x↓) − x|
                                                l_zoom_out_kd  = w_kd·|S(x↓) − T(x↓)|
    total = sum of the terms -> one backward -> one Adam step -> EMA

``update_mode: official_two_step`` reproduces yun224/DUKD: (l_pix + l_kd).backward(), step #1,
then the upcycled terms with the updated student, backward **without zero_grad**, step #2;
one EMA update per iteration.

F is the label-consistency augmentation (``train.noisy``), applied per sample to the groups in
``dukd_opt.lc_on`` (default: zoom-in only); the teacher always sees un-augmented inputs.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from basicsr.utils import get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY
from torch import Tensor

from kdsr_plugins.core.arch_info import pad_multiple
from kdsr_plugins.core.kd_model import KDModel
from kdsr_plugins.core.schema import Field
from kdsr_plugins.methods.dukd.invertible_aug import AugPlan, consistent_forward
from kdsr_plugins.methods.dukd.options import DUKD_SCHEMA, NOISY_SCHEMA, DUKDOptions
from kdsr_plugins.methods.dukd.upcycling import (
    ZoomInSamples,
    check_training_pair,
    zoom_in_samples,
    zoom_out_samples,
    zoom_out_size,
)


@MODEL_REGISTRY.register()
class DUKDModel(KDModel):
    """Data Upcycling KD: zoom-in / zoom-out samples and label-consistency regularisation.

    Option keys (besides ``KDModel``'s): ``train.pixel_opt`` and ``train.kd_opt`` (both
    required; their ``loss_weight`` are w_pix and w_kd), ``train.dukd_opt.{n_gt_sub, zoom_out,
    update_mode, lc_inverse, lc_on, zoom_in_crop, zoom_out_resize}``, ``train.noisy.prob``
    (see ``kdsr_plugins.methods.dukd.options``). One teacher only; no auxiliary modules.

    Attributes:
        dukd: The validated ``DUKDOptions``.
        aug: The label-consistency ``InvertibleAugmentation`` or ``None`` (``noisy`` absent).
        last_draws: Random draws of the last iteration: ``zoom_in_positions`` and
            ``plan_<group>`` (the ``AugPlan`` of each group with label consistency).
    """

    option_fields = {'train': (
        Field('dukd_opt', 'mapping', None, 'DUKD method block', schema=DUKD_SCHEMA, role='method'),
        Field('noisy', 'mapping', None, 'label consistency (absent or ~: off)', schema=NOISY_SCHEMA,
              role='method', nullable=True),
    )}

    def init_method(self) -> None:
        """Validate the DUKD options and the patch sizes; build the augmentation."""
        logger = get_root_logger()
        train_opt = self.opt['train']
        self.dukd = DUKDOptions.from_train_opt(train_opt)
        if self.cri_pix is None or self.cri_kd is None:  # from_train_opt requires both blocks already
            raise ValueError('DUKDModel needs train.pixel_opt and train.kd_opt.')
        if len(self.teachers) != 1:
            raise ValueError(f'DUKDModel distils from one teacher, got {len(self.teachers)} ({list(self.teachers)}).')
        self.scale = int(self.opt['scale'])
        self.aug = self.dukd.make_augmentation()
        self.last_draws: dict[str, Any] = {}
        self.check_patch_sizes()
        if self.opt.get('dist') and self.opt.get('find_unused_parameters', False):
            logger.warning('DUKDModel calls the student several times per backward; find_unused_parameters: false '
                           'is sufficient and recommended (docs/core.md, Distributed training).')
        for note in self.dukd.notes():
            logger.warning(note)
        if self.dukd.update_mode == 'official_two_step' and self.amp.scaler.is_enabled():
            # step #2 would add freshly scaled gradients to the ones step #1 already unscaled
            raise ValueError('DUKDModel: dukd_opt.update_mode official_two_step cannot use train.amp fp16 (one loss '
                             'scaler cannot scale gradients accumulated over two steps); use bf16 or single_step.')
        if self.dukd.update_mode == 'official_two_step':
            logger.warning('dukd_opt.update_mode: official_two_step reproduces the reference code: two Adam steps '
                           'per iteration, the original-pair gradient applied twice (docs/dukd.md, Divergences).')
        logger.info(f'DUKD options: {self.dukd.to_dict()}; label consistency: {self.aug}')

    def check_patch_sizes(self) -> None:
        """Fail at start-up when the training patch cannot give valid DUKD inputs.

        Uses ``datasets.train.gt_size`` when present: the LR patch P = gt_size / scale must be an
        integer, divisible by the scale when zoom-out is on, and every input size of an iteration
        (P, and P/s with zoom-out) must be a multiple of the window size of a SwinIR student or
        teacher (BasicSR's SwinIR does not pad itself during training).

        Raises:
            ValueError: With the offending size and what to change.
        """
        gt_size = ((self.opt.get('datasets') or {}).get('train') or {}).get('gt_size')
        if gt_size is None:
            return
        if gt_size % self.scale:
            raise ValueError(f'datasets.train.gt_size {gt_size} is not divisible by scale {self.scale}.')
        patch = gt_size // self.scale
        sizes = {'LR patch / zoom-in tile': patch}
        if self.dukd.zoom_out:
            sizes['zoom-out input'] = zoom_out_size(patch, self.scale)
        nets = {'network_g': self.opt['network_g']}
        nets.update({f'teacher {spec.name!r}': spec.network_opt for spec in self.teacher_specs})
        for net_name, net_opt in nets.items():
            multiple = pad_multiple(net_opt)
            for what, size in sizes.items():
                if size % multiple:
                    raise ValueError(f'DUKD {what} size {size} (gt_size {gt_size}, x{self.scale}) is not a multiple of '
                                     f'the window size {multiple} of {net_name} ({net_opt.get("type")}); choose '
                                     f'gt_size so that it is, or disable dukd_opt.zoom_out.')

    # ------------------------------------------------------------------ random draws (tests may override)
    def draw_zoom_in(self, gt: Tensor) -> ZoomInSamples:
        """Zoom-in tiles of the GT patch (one draw per iteration, shared by the batch)."""
        return zoom_in_samples(gt, self.scale, self.dukd.n_gt_sub, self.dukd.zoom_in_crop)

    def draw_plan(self, num_samples: int, group: str, device: torch.device) -> AugPlan:
        """Per-sample augmentation ops for one group's student forward."""
        assert self.aug is not None
        return self.aug.sample(num_samples, device=device)

    # ------------------------------------------------------------------ forwards
    def student_forward(self, x: Tensor, group: str) -> Tensor:
        """Student output through the (DDP) wrapper, label-consistent if ``group`` uses it.

        Args:
            x: Student input batch.
            group: ``'original'``, ``'zoom_in'`` or ``'zoom_out'``.

        Returns:
            ``F⁻¹(net_g(F(x)))`` with a fresh per-sample plan, or ``net_g(x)``.
        """
        if self.aug is None or not self.dukd.lc_applies(group):
            return self.net_g(x)
        plan = self.draw_plan(x.size(0), group, x.device)
        self.last_draws[f'plan_{group}'] = plan
        return consistent_forward(self.net_g, x, self.aug, plan=plan)

    def original_losses(self) -> OrderedDict[str, Tensor]:
        """``l_pix`` and ``l_kd`` of the original pair; sets ``self.output``."""
        check_training_pair(self.lq, self.gt, self.scale)
        target = self.teacher_forward(self.lq)
        self.output = self.student_forward(self.lq, 'original')
        self.check_teacher_output(self.output, target)
        return self.output_losses(self.output, target)

    def upcycled_losses(self) -> OrderedDict[str, Tensor]:
        """``l_zoom_in`` and, with zoom-out, ``l_zoom_out_pix`` / ``l_zoom_out_kd``."""
        losses: OrderedDict[str, Tensor] = OrderedDict()
        zoom_in = self.draw_zoom_in(self.gt)
        self.last_draws['zoom_in_positions'] = list(zoom_in.positions)
        target = self.teacher_forward(zoom_in.tiles)  # the teacher sees the clean tiles
        losses['l_zoom_in'] = self.cri_kd(self.student_forward(zoom_in.tiles, 'zoom_in'), target)
        if self.dukd.zoom_out:
            x_down = zoom_out_samples(self.lq, self.scale, self.dukd.zoom_out_resize)
            target = self.teacher_forward(x_down)
            out = self.student_forward(x_down, 'zoom_out')
            losses['l_zoom_out_pix'] = self.cri_pix(out, self.lq)  # the LR patch is the label
            losses['l_zoom_out_kd'] = self.cri_kd(out, target)
        return losses

    def compute_losses(self, current_iter: int) -> OrderedDict[str, Tensor]:
        """All weighted DUKD terms of one iteration (single-step objective)."""
        self.last_draws = {}
        losses = self.original_losses()
        losses.update(self.upcycled_losses())
        return losses

    # ------------------------------------------------------------------ one iteration
    def optimize_parameters(self, current_iter: int) -> None:
        """Single combined step (default) or the reference's two-step update."""
        if self.dukd.update_mode == 'single_step':
            super().optimize_parameters(current_iter)
            return
        self.optimizer_g.zero_grad(set_to_none=True)
        self.set_teacher_modes()
        self.last_draws = {}
        with self.amp.step_region():
            first = self.original_losses()
        self.amp.backward(self.total_loss(first, current_iter))
        self.amp.step(self.optimizer_g)
        # Reference behaviour: no zero_grad here, step #2 also re-applies the gradient of `first`.
        with self.amp.step_region():
            second = self.upcycled_losses()
        self.amp.backward(self.total_loss(second, current_iter))
        self.amp.step(self.optimizer_g)
        loss_dict: OrderedDict[str, Tensor] = OrderedDict(first)
        loss_dict.update(second)
        self.log_dict = self.reduce_loss_dict(loss_dict)
        self.log_dict.update(self.amp.log_values())
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)
