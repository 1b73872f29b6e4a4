"""Real-photo benchmark driver (``bench/photo_benchmark.py``) and re-scoring (``bench/quality.py --score-only``).

Tiny photo set (scikit-image photos through ``data_prep photos``), tiny random teachers, a few iterations.
"""
from __future__ import annotations

import json
import os
import os.path as osp
import subprocess
import sys

import cv2
import numpy as np
import pytest
import yaml
from kdsr_testutils import ROOT, edsr, save_random_net

BENCH = osp.join(ROOT, 'bench')
sys.path.insert(0, BENCH)

from photo_bench import stats  # noqa: E402

SCALE = 4


def make_photo_set(root: str) -> str:
    """A photo set: 1 train photo (16 sub-images of 96), 1 val and 2 test photos, x4."""
    import skimage

    from kdsr_plugins.data_prep.photos import build_photo_set, sha256_file, source_path

    photos = []
    for f, split, size in (('astronaut.png', 'train', [192, 192]), ('coffee.png', 'val', [96, 72]),
                           ('rocket.jpg', 'test', [96, 96]), ('chelsea.png', 'test', [120, 96])):
        src = {'kind': 'skimage', 'version': skimage.__version__, 'file': f}
        photos.append({'name': f.split('.')[0], 'split': split, 'source': src, 'sha256': sha256_file(source_path(src)),
                       'resize_to': size})
    man = {'format': 1, 'max_pixels': 200000, 'mod': 12, 'scales': [SCALE], 'crop_size': 48, 'step': 48,
           'photos': photos}
    path = osp.join(root, 'manifest.json')
    with open(path, 'w') as f:
        json.dump(man, f)
    out = osp.join(root, 'photos')
    build_photo_set(path, out, progress=False)
    return out


def make_config(root: str, data: str, n_teachers: int = 1, methods=('scratch', 'kd', 'fitnet'),
                sweep: bool = False) -> str:
    """A benchmark config with tiny random EDSR teachers (f8b2) and student (f4b1)."""
    teachers = []
    for i in range(n_teachers):
        ckpt = save_random_net(edsr(8, 2, SCALE), osp.join(root, f'teacher{i}.pth'), seed=i)
        teachers.append({'name': f't{i}', 'network': edsr(8, 2, SCALE), 'pretrain': ckpt,
                         'taps': ['conv_first', 1, 'conv_after_body'], 'mipkd_positions': [1]})
    shipped = {'scratch': 'Scratch/train_Scratch_EDSR_x4c64b32.yml', 'kd': 'KD/train_KD_EDSR_x4c256b32_c64b32.yml',
               'fitnet': 'FeatureKD/train_FitNet_EDSR_x4c256b32_c64b32.yml',
               'mtkd': 'MTKD/train_MTKD_EDSRbl_x4.yml'}
    spec = {m: {'options': f'options/train/{shipped[m]}'} for m in methods}
    if 'mtkd' in spec:
        spec['mtkd']['stage1'] = 'options/train/MTKD/train_MTKD_DCTSwin_x4_edsr_swinir_rcan.yml'
    if sweep:
        spec['kd']['sweep'] = {'key': 'train.kd_opt.loss_weight', 'values': [0.5, 1.0]}
    cfg = {'name': 'tiny', 'scale': SCALE, 'data': data, 'iters': 4, 'seeds': [0, 1], 'val_freq': 2,
           'recipe': {'batch_size': 2, 'gt_size': 32, 'lr': 1e-3, 'warmup_iter': -1, 'eta_min': 1e-6,
                      'ema_decay': 0.9},
           'student': {'network_g': edsr(4, 1, SCALE), 'taps': ['conv_first', 0, 'conv_after_body'],
                       'mipkd_positions': [0]},
           'teachers': teachers, 'teacher_check': 'off', 'cache_teacher': True, 'methods': spec,
           'mtkd': {'aggregator': {'type': 'MTKDDCTSwin', 'img_size': 32, 'window_size': 4, 'embed_dim': 12,
                                   'depths': [1], 'num_heads': [2], 'mlp_ratio': 2, 'num_feat': 8},
                    'aggregator_iters': 2},
           'sweep': {'iters': 2, 'seed': 0}}
    path = osp.join(root, 'bench.yml')
    with open(path, 'w') as f:
        yaml.safe_dump(cfg, f, sort_keys=False)
    return path


def run_bench(*args: str, cwd: str) -> subprocess.CompletedProcess:
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONPATH': ROOT}
    proc = subprocess.run([sys.executable, osp.join(BENCH, 'photo_benchmark.py'), *args], cwd=cwd, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc
