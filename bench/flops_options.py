"""Arithmetic cost of training option files relative to logits KD with the same networks.

For each option file, builds the model it describes (random teacher weights; nothing is trained
or loaded) and its logits-KD twin (same student, teacher, ``pixel_opt`` and ``kd_opt``), runs one
training iteration of each on a batch of 1 LR patch (``gt_size / scale``) under
``torch.utils.flop_counter.FlopCounterMode`` and reports GFLOPs (forward + backward) and the
ratio. Ratios do not depend on the batch size. MiPKD's cost depends on the block-mixer draw
(k*, R): the expectation is exact (every draw counted once, weighted by its probability).

With ``--variants``, MiPKD files are also counted with the cost-relevant options changed, so the
cost of each part of the method shows: the block prior mixer alone, no block prior mixer,
``latent_dim`` = the student width, ``enc_type: mlp``, and both.

Usage:
    python bench/flops_options.py [--variants] [--out bench/results/flops_options.md] [FILE.yml ...]
    (default files: the shipped x4 MiPKD options, one per teacher/student pair)
"""
from __future__ import annotations

import argparse
import glob
import os.path as osp
import sys
import tempfile
from copy import deepcopy

import kdsr_plugins  # noqa: F401  (top level: registers the plugin)

import torch
import yaml
from basicsr.archs import build_network
from basicsr.models import build_model

from kdsr_plugins.core.stage_runners import feature_channels

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from speed_memory import routing_draws, step_gflops, write_results  # noqa: E402

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEFAULT_FILES = sorted(glob.glob(osp.join(ROOT, 'options', 'train', 'MiPKD', 'train_MiPKD_*_x4*.yml')))
TRAIN_KEYS_KEPT = ('optim_g', 'scheduler', 'pixel_opt', 'kd_opt')


def mipkd_variants(c_s: int) -> dict[str, dict]:
    """Label -> changes to the ``train`` block (``mipkd_opt`` entries are merged)."""
    return {
        'block prior mixer only (feat_opt, ae_opt: ~)': {'feat_opt': None, 'ae_opt': None},
        'no block prior mixer (bpm_mode: off)': {'mipkd_opt': {'bpm_mode': 'off'}},
        f'latent_dim: {c_s} (= C_S)': {'mipkd_opt': {'latent_dim': c_s}},
        'enc_type: mlp': {'mipkd_opt': {'enc_type': 'mlp'}},
        f'latent_dim: {c_s}, enc_type: mlp': {'mipkd_opt': {'latent_dim': c_s, 'enc_type': 'mlp'}},
    }


def with_changes(train: dict, changes: dict) -> dict:
    train = deepcopy(train)
    for key, value in changes.items():
        if key == 'mipkd_opt':
            train['mipkd_opt'] = {**(train.get('mipkd_opt') or {}), **value}
        else:
            train[key] = value
    return train


def build_opt(yml: dict, train: dict, model_type: str, teacher_ckpt: str, root: str) -> dict:
    return {'name': 'flops', 'model_type': model_type, 'scale': yml['scale'], 'num_gpu': 0, 'is_train': True,
            'dist': False, 'rank': 0, 'world_size': 1, 'network_g': deepcopy(yml['network_g']),
            'network_t': deepcopy(yml['network_t']),
            'path': {'pretrain_network_g': None, 'pretrain_network_t': teacher_ckpt, 'models': root,
                     'training_states': root},
            'train': {**deepcopy(train), 'ema_decay': 0, 'total_iter': 1}}


def count_file(path: str, variants: bool) -> list[dict]:
    """Rows ``{file, setting, gflops, kd_gflops}`` for one option file."""
    with open(path) as f:
        yml = yaml.safe_load(f)
    for key in ('network_g', 'network_t', 'train', 'scale', 'model_type'):
        if key not in yml:
            raise SystemExit(f'{path}: no {key!r}; this benchmark needs a single-teacher KD training option file')
    scale, gt_size = yml['scale'], yml['datasets']['train']['gt_size']
    lr = gt_size // scale
    g = torch.Generator().manual_seed(0)
    data = {'lq': torch.rand(1, 3, lr, lr, generator=g), 'gt': torch.rand(1, 3, lr * scale, lr * scale, generator=g)}
    root = tempfile.mkdtemp()
    teacher_ckpt = osp.join(root, 'teacher.pth')
    torch.save({'params': build_network(deepcopy(yml['network_t'])).state_dict()}, teacher_ckpt)

    def gflops(train: dict, model_type: str) -> float:
        torch.manual_seed(0)
        model = build_model(build_opt(yml, train, model_type, teacher_ckpt, root))
        return step_gflops(model, data, routing_draws(model))
    kd = gflops({k: yml['train'][k] for k in TRAIN_KEYS_KEPT if k in yml['train']}, 'KDModel')
    settings = {'as configured': {}}
    if variants and yml['model_type'] == 'MiPKDModel':
        settings.update(mipkd_variants(feature_channels(build_network(deepcopy(yml['network_g'])))))
    rows = []
    for label, changes in settings.items():
        value = gflops(with_changes(yml['train'], changes), yml['model_type'])
        rows.append({'file': osp.relpath(path, ROOT), 'setting': label, 'gflops': value, 'kd_gflops': kd})
        print(f'[flops] {osp.basename(path)} | {label}: {value:.1f} GFLOPs, x{value / kd:.2f} logits KD', flush=True)
    return rows


def report(rows: list[dict]) -> str:
    lines = ['# Arithmetic per training iteration relative to logits KD', '',
             'GFLOPs of one training iteration (forward + backward, batch of one LR training patch; ratios are '
             'batch-independent), counted by `bench/flops_options.py`. "x logits KD" divides by the same networks '
             'trained with logits KD only. MiPKD values are the expectation over the block-mixer draws (k*, R).', '',
             '| Option file | Setting | GFLOPs / iter | logits KD GFLOPs | x logits KD |', '|---|---|---:|---:|---:|']
    for r in rows:
        lines.append(f'| `{osp.basename(r["file"])}` | {r["setting"]} | {r["gflops"]:.1f} | {r["kd_gflops"]:.1f} | '
                     f'{r["gflops"] / r["kd_gflops"]:.2f} |')
    return '\n'.join(lines) + '\n'


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('files', nargs='*', default=DEFAULT_FILES)
    parser.add_argument('--variants', action='store_true', help='also count MiPKD with cost-relevant options changed')
    parser.add_argument('--out', default=osp.join(ROOT, 'bench', 'results', 'flops_options.md'))
    args = parser.parse_args()
    missing = [f for f in args.files if not osp.isfile(f)]
    if missing:
        parser.error(f'option file(s) not found: {", ".join(missing)}')
    rows = [row for path in args.files for row in count_file(path, args.variants)]
    write_results(args.out, report(rows), rows)
    return 0


if __name__ == '__main__':
    sys.exit(main())
