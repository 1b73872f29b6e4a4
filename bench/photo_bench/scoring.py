"""Score networks on a Set5-style folder (``HR/`` + ``LR_bicubic/X<s>/``) and keep students.

Metrics are BasicSR's ``calculate_psnr`` / ``calculate_ssim`` on the Y channel with
``crop_border`` = scale, on one full-image forward pass, GT cut to ``LR size x scale`` (what
``PairedImageDataset`` does in the val phase and ``SRModel.nondist_validation`` scores).
"""
from __future__ import annotations

import json
import os
import os.path as osp
from copy import deepcopy
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from basicsr.archs import build_network
from basicsr.metrics import calculate_psnr, calculate_ssim
from basicsr.utils import img2tensor, tensor2img

IMAGE_EXTS = ('.png', '.bmp', '.jpg', '.jpeg', '.tif', '.tiff')
STUDENTS_CARD = 'students.json'


@dataclass
class Pair:
    """One test image: its stem (HR name without extension) and HR/LR paths."""

    name: str
    hr: str
    lr: str


def image_pairs(root: str, scale: int) -> list[Pair]:
    """HR/LR pairs of a Set5-style folder; LR named ``<stem>x<scale>.<ext>`` or ``<stem>.<ext>``."""
    hr_dir, lr_dir = osp.join(root, 'HR'), osp.join(root, 'LR_bicubic', f'X{scale}')
    for d in (hr_dir, lr_dir):
        if not osp.isdir(d):
            raise FileNotFoundError(f'{root} is not a Set5-style folder: no {d}')
    lrs = {osp.splitext(f)[0]: osp.join(lr_dir, f) for f in os.listdir(lr_dir) if f.lower().endswith(IMAGE_EXTS)}
    pairs, missing = [], []
    for f in sorted(os.listdir(hr_dir)):
        stem, ext = osp.splitext(f)
        if ext.lower() not in IMAGE_EXTS:
            continue
        lr = lrs.get(f'{stem}x{scale}') or lrs.get(stem)
        if lr is None:
            missing.append(f)
        else:
            pairs.append(Pair(stem, osp.join(hr_dir, f), lr))
    if missing or not pairs:
        raise FileNotFoundError(f'{lr_dir}: no LR image for {missing or "any HR image"} '
                                f'(expected <stem>x{scale}.<ext> or <stem>.<ext>)')
    return pairs


def read_image(path: str) -> np.ndarray:
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f'cannot read image {path}')
    return img


def build_net(network_opt: dict, params: dict[str, torch.Tensor]) -> torch.nn.Module:
    """A network from its BasicSR options with ``params`` strict-loaded, in eval mode."""
    net = build_network(deepcopy(network_opt))
    net.load_state_dict({k[7:] if k.startswith('module.') else k: v for k, v in params.items()}, strict=True)
    return net.eval()


@torch.no_grad()
def super_resolve(net: torch.nn.Module, lr_bgr: np.ndarray) -> np.ndarray:
    """BGR uint8 SR output of one full-image forward pass (as BasicSR tests)."""
    lq = img2tensor(lr_bgr.astype(np.float32) / 255., bgr2rgb=True, float32=True).unsqueeze(0)
    return tensor2img([net(lq).clamp_(0, 1)])


def y_metrics(sr: np.ndarray, ref: np.ndarray, scale: int, ssim: bool = True) -> dict[str, float]:
    """Y-channel PSNR (and SSIM), crop = scale; ``ref`` cut to the SR size."""
    ref = ref[:sr.shape[0], :sr.shape[1]]
    out = {'psnr': float(calculate_psnr(sr, ref, crop_border=scale, test_y_channel=True))}
    if ssim:
        out['ssim'] = float(calculate_ssim(sr, ref, crop_border=scale, test_y_channel=True))
    return out


def score(net: torch.nn.Module, pairs: list[Pair], scale: int, references: dict[str, np.ndarray] | None = None,
          keep: dict[str, np.ndarray] | None = None) -> dict:
    """Mean and per-image Y PSNR/SSIM of ``net`` on ``pairs``.

    Args:
        references: Optional ``{image: BGR}`` (e.g. the teacher's outputs): adds ``psnr_ref`` (PSNR of
            the output against that reference, how closely the network imitates it).
        keep: Optional dict that receives every SR output ``{image: BGR}``.
    """
    per_image = {}
    for pair in pairs:
        sr = super_resolve(net, read_image(pair.lr))
        gt = read_image(pair.hr)
        row = y_metrics(sr, gt[:sr.shape[0], :sr.shape[1]], scale)
        if references is not None:
            row['psnr_ref'] = y_metrics(sr, references[pair.name], scale, ssim=False)['psnr']
        per_image[pair.name] = row
        if keep is not None:
            keep[pair.name] = sr
    keys = next(iter(per_image.values())).keys()
    return {**{k: sum(r[k] for r in per_image.values()) / len(per_image) for k in keys}, 'per_image': per_image}


def load_params(path: str, key: str) -> dict[str, torch.Tensor] | None:
    """``key`` of a checkpoint (``None`` if the file has no such key)."""
    ckpt = torch.load(path, map_location='cpu', weights_only=True)
    return ckpt.get(key) if isinstance(ckpt, dict) else None


def keep_student(ckpt: str, dest: str) -> str:
    """Copy ``params`` (and ``params_ema`` when trained with EMA) of a BasicSR checkpoint to ``dest``."""
    state = torch.load(ckpt, map_location='cpu', weights_only=True)
    kept = {k: {n: t.detach().clone().contiguous() for n, t in state[k].items()}
            for k in ('params', 'params_ema') if k in state}
    os.makedirs(osp.dirname(osp.abspath(dest)), exist_ok=True)
    torch.save(kept, dest)
    return dest


def write_students_card(folder: str, network_g: dict, scale: int, files: dict[str, dict]) -> str:
    """``<folder>/students.json``: the student network options, scale and ``{file: {method, seed}}``."""
    path = osp.join(folder, STUDENTS_CARD)
    card = {'network_g': network_g, 'scale': scale, 'param_keys': ['params', 'params_ema'], 'students': files}
    os.makedirs(folder, exist_ok=True)
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(card, f, indent=1, sort_keys=False)
    return path


def read_students_card(folder: str) -> dict:
    path = osp.join(folder, STUDENTS_CARD)
    if not osp.isfile(path):
        raise FileNotFoundError(f'{path} missing: the student folder must hold the card written by the benchmark')
    with open(path, encoding='utf-8') as f:
        return json.load(f)
