"""Teacher sanity score before training: every teacher must beat bicubic upsampling clearly.

A teacher whose arch options differ from its training in ways that keep the tensor shapes
(``res_scale``, ``img_range``, ``rgb_mean`` ...), a checkpoint of another scale or degradation, a
non-strict load that left layers random, or the wrong ``param_key`` loads without error and only
produces a worse teacher. Before the first iteration each teacher is run on a few validation
images (or training patches when there is no validation set), LR crops capped at
``MAX_LR_SIZE`` pixels, under ``no_grad``; its PSNR (Y channel, crop = scale, BasicSR's
``calculate_psnr``) is logged next to MATLAB-bicubic upsampling's (docs/guarantees.md, "Teacher
sanity score").

Options (``train`` block): ``teacher_check: error | warn | off`` (default ``error``; YAML's bare
``off`` / ``false`` mean ``off``) and ``teacher_check_margin`` (dB the teacher must beat bicubic
by, default ``DEFAULT_MARGIN_DB``).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from copy import deepcopy
from dataclasses import dataclass
from typing import Any

import torch

TEACHER_CHECK_MODES = ('error', 'warn', 'off')
DEFAULT_MARGIN_DB = 0.1
#: Images (or training patches) scored per teacher.
NUM_IMAGES = 4
#: LR crops are at most this many pixels high and wide (centre crop): keeps the check cheap.
MAX_LR_SIZE = 64
LIKELY_CAUSES = ('arch options that keep the tensor shapes but differ from how the checkpoint was trained '
                 '(res_scale, img_range, rgb_mean, ...), a checkpoint of another scale or degradation, a non-strict '
                 'load (strict_load_t / strict_load: false) that left layers randomly initialised, or the wrong '
                 'param_key (params vs params_ema)')


class TeacherCheckError(ValueError):
    """A teacher that does not beat bicubic upsampling by the required margin."""


@dataclass
class TeacherScore:
    """PSNR of one teacher and of bicubic upsampling on the same crops."""

    name: str
    psnr: float
    bicubic: float
    num_images: int
    source: str

    @property
    def gain(self) -> float:
        return self.psnr - self.bicubic


def teacher_check_options(train_opt: Mapping[str, Any] | None) -> tuple[str, float]:
    """``(mode, margin_db)`` from the ``train`` block.

    Raises:
        ValueError: An unknown mode or a margin that is not a number.
    """
    train_opt = train_opt or {}
    mode = train_opt.get('teacher_check', 'error')
    if mode is False or mode is None:
        mode = 'off'
    elif mode is True:
        mode = 'error'
    if mode not in TEACHER_CHECK_MODES:
        raise ValueError(f'train.teacher_check: invalid value {mode!r}; valid: {list(TEACHER_CHECK_MODES)}.')
    margin = train_opt.get('teacher_check_margin', DEFAULT_MARGIN_DB)
    if isinstance(margin, bool) or not isinstance(margin, (int, float)):
        raise ValueError(f'train.teacher_check_margin: expected a number of dB, got {margin!r}.')
    return mode, float(margin)


def _centre_crop(lq: torch.Tensor, gt: torch.Tensor, scale: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    h, w = lq.shape[-2:]
    ch, cw = min(h, size), min(w, size)
    y, x = (h - ch) // 2, (w - cw) // 2
    return lq[:, y:y + ch, x:x + cw], gt[:, y * scale:(y + ch) * scale, x * scale:(x + cw) * scale]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (the caller saves and restores the random states around the check)."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def close_lmdb_envs(dataset: Any) -> None:
    """Close the LMDB environments a dataset opened (one process may open an LMDB only once at a time)."""
    envs = getattr(getattr(getattr(dataset, 'file_client', None), 'client', None), '_client', None)
    if isinstance(envs, dict):
        for env in envs.values():
            env.close()


def sample_pairs(datasets_opt: Mapping[str, Any], scale: int, num: int = NUM_IMAGES,
                 max_lr: int = MAX_LR_SIZE) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], str]:
    """Up to ``num`` (LQ, GT) crops: validation images if any block has GT, else training patches.

    Returns:
        The CHW float pairs in [0, 1] and a description of where they come from ('' if none).
    """
    from basicsr.data import build_dataset

    blocks = [(k, v) for k, v in (datasets_opt or {}).items() if isinstance(v, Mapping) and v.get('dataroot_gt')]
    blocks.sort(key=lambda kv: kv[0].split('_')[0] == 'train')  # validation first
    for key, block in blocks:
        block = deepcopy(dict(block))
        block.setdefault('phase', key.split('_')[0])
        block['scale'] = scale
        dataset = build_dataset(block)
        n = len(dataset)
        if n == 0:
            continue
        k = min(num, n)
        indices = sorted({round(i * (n - 1) / max(1, k - 1)) for i in range(k)})
        pairs = []
        try:
            for index in indices:
                item = dataset[index]
                if torch.is_tensor(item.get('lq')) and torch.is_tensor(item.get('gt')):
                    pairs.append(_centre_crop(item['lq'], item['gt'], scale, max_lr))
        finally:
            close_lmdb_envs(dataset)
        if pairs:
            kind = 'training patch(es)' if block['phase'] == 'train' else 'image(s)'
            return pairs, f'{len(pairs)} {kind} of datasets.{key} ({block.get("name", "?")})'
    return [], ''


def y_psnr(sr: torch.Tensor, gt: torch.Tensor, scale: int) -> float:
    """BasicSR's ``calculate_psnr`` (Y channel, crop = scale) of CHW [0, 1] tensors."""
    from basicsr.metrics import calculate_psnr
    from basicsr.utils import tensor2img

    return float(calculate_psnr(tensor2img(sr.detach().cpu()), tensor2img(gt.cpu()), crop_border=scale,
                                test_y_channel=True))


def bicubic(lq: torch.Tensor, scale: int) -> torch.Tensor:
    """MATLAB-style bicubic upsampling (BasicSR's ``imresize``), the classic SR baseline."""
    from basicsr.utils.matlab_functions import imresize

    return imresize(lq.cpu(), scale).clamp(0, 1)


@torch.no_grad()
def score_teachers(forwards: Mapping[str, Callable[[torch.Tensor], torch.Tensor]],
                   pairs: Sequence[tuple[torch.Tensor, torch.Tensor]], scale: int, device: torch.device,
                   source: str) -> list[TeacherScore]:
    """Mean PSNR of each teacher (``forwards[name](lq NCHW) -> SR NCHW``) and of bicubic on ``pairs``."""
    base = sum(y_psnr(bicubic(lq, scale), gt, scale) for lq, gt in pairs) / len(pairs)
    scores = []
    for name, forward in forwards.items():
        total = 0.0
        for lq, gt in pairs:
            total += y_psnr(forward(lq[None].to(device))[0], gt, scale)
        scores.append(TeacherScore(name, total / len(pairs), base, len(pairs), source))
    return scores


def judge(scores: Sequence[TeacherScore], mode: str, margin: float, describe: Callable[[str], str],
          scale: int, logger: Any) -> None:
    """Log each score; a teacher less than ``margin`` dB over bicubic raises (``error``) or warns (``warn``)."""
    bad = []
    for s in scores:
        line = (f'Teacher sanity check: {describe(s.name)} {s.psnr:.2f} dB, bicubic {s.bicubic:.2f} dB '
                f'({s.gain:+.2f} dB; PSNR Y, crop {scale}, {s.source}, LR crops <= {MAX_LR_SIZE} px).')
        logger.info(line)
        if not s.gain >= margin:  # NaN fails too
            bad.append(s)
    if not bad:
        return
    names = ', '.join(f'{describe(s.name)} {s.psnr:.2f} dB vs bicubic {s.bicubic:.2f} dB ({s.gain:+.2f})' for s in bad)
    msg = (f'Teacher sanity check failed: {names} on {bad[0].source}; a trained x{scale} teacher beats bicubic '
           f'upsampling clearly (required: +{margin:g} dB, train.teacher_check_margin). Likely causes: '
           f'{LIKELY_CAUSES}. Set train.teacher_check: warn to train anyway, or off to skip this check.')
    if mode == 'error':
        raise TeacherCheckError(msg)
    logger.warning(msg)
