"""Golden losses: every shipped training YAML, shrunk to tiny networks, gives the stored ``l_*`` values.

Each ``options/train/**/*.yml`` is loaded as shipped and shrunk (``shrink_options``): every network keeps
its arch type, upsampler, residual scale and number of body units (EDSR blocks, RCAN groups, SwinIR /
DCT-Swin stages), so the method blocks (tap positions, MiPKD positions, width vs depth compression,
adapters) stay valid and unchanged, while widths, per-unit depths and windows become tiny. Teachers,
aggregators and fine-tuning students are random networks drawn from fixed seeds and saved as
checkpoint files, so they load through the real paths (``param_key``, ``format: public_mtkd``, ``kd_meta``);
cached-target runs get cache meta files and seeded targets in the batch. The model is built with
BasicSR's ``build_model`` (``num_gpu: 0``, ``is_train: true``), fed one seeded batch, and one
``optimize_parameters(1)`` is run; every ``l_*`` of ``log_dict`` must equal the value stored in
``tests/fixtures/golden_losses.json`` (rel 1e-5), so a silent change of any method's loss fails here.

After an intended change of a loss, regenerate the file and review its diff::

    python tests/core/test_golden_losses.py --regenerate        # or: KDSR_REGEN_GOLDEN=1 pytest <this file>
"""
from __future__ import annotations

import copy
import glob
import json
import os
import os.path as osp
import random
import sys

if __name__ == '__main__':  # run as a script: the same imports as under pytest
    sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
    import kdsr_plugins  # noqa: F401

import numpy as np
import pytest
import torch
import yaml

from kdsr_testutils import ROOT, build_model_from_opt, tiny_net

GOLDEN = osp.join(ROOT, 'tests', 'fixtures', 'golden_losses.json')
YAMLS = sorted(osp.relpath(p, ROOT) for p in glob.glob(osp.join(ROOT, 'options', 'train', '**', '*.yml'),
                                                        recursive=True))
REL = 1e-5
BATCH = 3  # RKD: distances of 2 samples normalise to 1 and an angle needs 3


def lr_patch(scale: int) -> int:
    """LR patch side: a multiple of the tiny window 4 and of ``scale`` (DUKD zoom-out divides it by ``scale``)."""
    return 12 if scale == 3 else 16


def shrink_net(net: dict, lr: int, scale: int) -> dict:
    """A tiny network of the same arch type and unit count as ``net`` (see the module docstring)."""
    net = dict(net)
    kind = net['type']
    if kind == 'EDSR':
        net['num_feat'] = 16 if net['num_feat'] >= 256 else 8  # c256 -> 16, c64 -> 8 (width ratio direction kept)
    elif kind == 'RCAN':
        net.update(num_feat=max(8, net['num_feat'] // 8), num_block=max(1, net['num_block'] // 10), squeeze_factor=4)
    elif kind in ('SwinIR', 'MTKDDCTSwin'):
        stages = len(net['depths'])
        net.update(depths=[1] * stages, num_heads=[2] * stages, window_size=4,
                   embed_dim=12 if net['embed_dim'] >= 96 else 8)
        if kind == 'SwinIR':
            net['img_size'] = lr
        else:  # the aggregator sees the teachers' SR outputs
            net.update(img_size=lr * scale, num_feat=8)
    elif kind == 'auto':  # spandrel teacher: a tiny network of the same arch where one exists (tests/spandrel_nets.py)
        arch = net.get('arch')
        return {'type': 'auto', 'arch': arch} if arch in TINY_AUTO_ARCHS else {'type': 'auto'}
    else:
        raise ValueError(f'golden losses: no tiny form for arch {kind!r}; add one to shrink_net.')
    return net


#: spandrel archs with a tiny form in tests/spandrel_nets.py; other auto teachers get the SPAN stand-in.
TINY_AUTO_ARCHS = ('HAT', 'SwinIR', 'ESRGAN', 'SPAN')


def save_teacher(net_opt: dict, root: str, name: str, seed: int, param_key: str | None, scale: int) -> str:
    """Seeded random teacher weights: BasicSR archs under ``param_key``, auto teachers as their authors ship them."""
    if net_opt['type'] == 'auto':
        import spandrel_nets

        arch = net_opt.get('arch', 'SPAN')
        folder = osp.join(root, f'teacher_{name}')
        os.makedirs(folder, exist_ok=True)
        return spandrel_nets.save_checkpoint(spandrel_nets.tiny_net(arch, scale), folder, arch)
    return save_net(net_opt, osp.join(root, f'teacher_{name}.pth'), seed, (param_key or 'params',))


def save_net(net_opt: dict, path: str, seed: int, keys=('params',), prefix: str = '', extra: dict | None = None) -> str:
    """Seeded random weights of ``net_opt`` saved under every key of ``keys`` (plus ``extra`` entries)."""
    sd = {prefix + k: v for k, v in tiny_net(net_opt, seed).state_dict().items()}
    torch.save({**{k: sd for k in keys}, **(extra or {})}, path)
    return path


def shrink_options(opt: dict, root: str) -> tuple[dict, dict]:
    """The tiny runnable form of a shipped training option dict and its seeded batch.

    Checkpoints and cache meta files are written under ``root``.
    """
    opt = copy.deepcopy(opt)
    scale = int(opt['scale'])
    lr = lr_patch(scale)
    opt.update(num_gpu=0, manual_seed=10)
    opt['name'] = 'golden_' + opt['name']
    train_set = opt['datasets']['train']
    train_set.update(gt_size=lr * scale, batch_size_per_gpu=BATCH, num_worker_per_gpu=0)
    opt['network_g'] = shrink_net(opt['network_g'], lr, scale)
    path = opt['path']
    seed = 1
    if opt.get('network_t'):
        opt['network_t'] = shrink_net(opt['network_t'], lr, scale)
        path['pretrain_network_t'] = save_teacher(opt['network_t'], root, 't', seed, path.get('param_key_t'), scale)
    for entry in opt.get('teachers') or []:
        seed += 1
        entry['network'] = shrink_net(entry['network'], lr, scale)
        entry['pretrain'] = save_teacher(entry['network'], root, entry['name'], seed, entry.get('param_key'), scale)
    agg = opt.get('aggregator')
    if agg:
        agg['network'] = shrink_net(agg['network'], lr, scale)
        keys = ('params', 'params_ema')
        if agg.get('format') == 'public_mtkd':  # the public code's layout: DataParallel prefix, no kd_meta
            agg['pretrain'] = save_net(agg['network'], osp.join(root, 'aggregator_public.pth'), 20, keys, 'module.')
        else:
            teachers = opt['teachers']
            meta = {'teacher_order': [t['name'] for t in teachers],
                    'teacher_types': [t['network']['type'] for t in teachers], 'num_teachers': len(teachers),
                    'scale': scale, 'output_convention': agg['network'].get('output_convention', 'image'),
                    'mask_mode': agg['network'].get('mask_mode', 'dct_label')}
            agg['pretrain'] = save_net(agg['network'], osp.join(root, 'aggregator.pth'), 20, keys,
                                       extra={'kd_meta': meta})
    if path.get('pretrain_network_g'):  # fine-tuning from a pretrained student
        path['pretrain_network_g'] = save_net(opt['network_g'], osp.join(root, 'student.pth'), 30,
                                              (path.get('param_key_g') or 'params',))

    g = torch.Generator().manual_seed(0)
    batch = {'lq': torch.rand(BATCH, 3, lr, lr, generator=g),
             'gt': torch.rand(BATCH, 3, lr * scale, lr * scale, generator=g)}
    if 'dataroot_target' in train_set:  # cached targets: meta files the model checks, seeded targets in the batch
        from kdsr_plugins.core.kd_cached_target_dataset import CACHE_META_FILE, target_roots

        names = [t['name'] for t in opt.get('teachers') or []]
        targets = train_set['dataroot_target']
        targets = ({n: osp.join(root, f'cache_{n}') for n in targets} if isinstance(targets, dict)
                   else osp.join(root, 'cache_aggregator'))
        train_set['dataroot_target'] = targets
        for key, cache in target_roots(targets).items():
            os.makedirs(cache)
            meta = {'kind': 'teacher', 'name': key[len('target_'):], 'encoding': 'png16', 'scale': scale,
                    'value_range': [-0.25, 1.25]}
            if key == 'target':
                meta.update(kind='aggregator', name='aggregator', teacher_order=names,
                            aggregator={'pretrain': agg['pretrain'], 'param_key': agg.get('param_key')})
            with open(osp.join(cache, CACHE_META_FILE), 'w') as f:
                json.dump(meta, f)
            batch[key] = torch.rand(BATCH, 3, lr * scale, lr * scale, generator=g)
    return opt, batch


def golden_losses(yml: str, root: str) -> dict[str, float]:
    """``l_*`` values of one ``optimize_parameters(1)`` of the tiny form of ``yml`` (relative to the repository)."""
    with open(osp.join(ROOT, yml)) as f:
        opt, batch = shrink_options(yaml.safe_load(f), root)
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    model = build_model_from_opt(opt, root)
    torch.manual_seed(1)  # method draws (masks, routes, augmentations, stochastic depth) after the build
    random.seed(1)
    np.random.seed(1)
    model.feed_data(batch)
    model.optimize_parameters(1)
    losses = {k: float(v) for k, v in model.log_dict.items() if k.startswith('l_')}
    assert losses, f'{yml}: no l_* entry in log_dict {sorted(model.log_dict)}'
    return losses


def group_key(opt: dict) -> str:
    """What decides a tiny run's losses apart from the scale: model type, method and loss blocks, tiny networks."""
    train = {k: v for k, v in opt['train'].items()
             if k not in ('total_iter', 'warmup_iter', 'scheduler', 'optim_g', 'optim_aux', 'ema_decay')}
    nets = [opt.get('network_g'), opt.get('network_t')] + [t['network'] for t in opt.get('teachers') or []]
    agg = opt.get('aggregator') or {}
    nets.append(agg.get('network'))
    nets = [{k: v for k, v in shrink_net(n, 16, 2).items() if k not in ('upscale', 'img_size')} if n else None
            for n in nets]
    target = opt['datasets']['train'].get('dataroot_target')
    agg_keys = {k: v for k, v in agg.items() if k not in ('network', 'pretrain')}
    return json.dumps([opt['model_type'], train, nets, agg_keys, type(target).__name__,
                       bool(opt['path'].get('pretrain_network_g'))], sort_keys=True)


def representatives() -> set[str]:
    """The first YAML of each group of ``group_key`` (the fast lane runs these, the full suite every YAML)."""
    first: dict[str, str] = {}
    for yml in YAMLS:
        with open(osp.join(ROOT, yml)) as f:
            first.setdefault(group_key(yaml.safe_load(f)), yml)
    return set(first.values())


def load_golden() -> dict:
    with open(GOLDEN) as f:
        return json.load(f)


def regenerate(tmp_root: str) -> dict:
    """Recompute every YAML's losses and write ``tests/fixtures/golden_losses.json``."""
    values = {}
    for i, yml in enumerate(YAMLS):
        root = osp.join(tmp_root, str(i))
        os.makedirs(root)
        values[yml] = golden_losses(yml, root)
    os.makedirs(osp.dirname(GOLDEN), exist_ok=True)
    with open(GOLDEN, 'w') as f:
        json.dump(values, f, indent=1, sort_keys=True)
        f.write('\n')
    return values


pytestmark = pytest.mark.usefixtures('single_thread')  # tiny nets: threads only add overhead (and contention)


@pytest.fixture(scope='module')
def golden(tmp_path_factory):
    if os.environ.get('KDSR_REGEN_GOLDEN') == '1':
        regenerate(str(tmp_path_factory.mktemp('golden_regen')))
    return load_golden()


def test_golden_file_lists_every_shipped_training_yaml(golden):
    assert len(YAMLS) >= 100 and len(FAST) >= 30
    assert sorted(golden) == YAMLS, 'YAMLs added or removed: regenerate (see the module docstring)'


FAST = representatives()
CASES = [pytest.param(y, id=osp.relpath(y, osp.join('options', 'train')),
                      marks=() if y in FAST else pytest.mark.slow) for y in YAMLS]


@pytest.mark.parametrize('yml', CASES)
def test_tiny_run_of_shipped_yaml_gives_golden_losses(yml, golden, tmp_path):
    expected = golden.get(yml)
    assert expected is not None, f'{yml} has no golden values: regenerate (see the module docstring)'
    got = golden_losses(yml, str(tmp_path))
    assert sorted(got) == sorted(expected), f'{yml}: loss terms changed'
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=REL, abs=1e-9), f'{yml}: {key} = {got[key]!r}, golden {value!r}'


if __name__ == '__main__':
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--regenerate', action='store_true', help=f'rewrite {osp.relpath(GOLDEN, ROOT)}')
    args = parser.parse_args()
    if not args.regenerate:
        parser.error('nothing to do: pass --regenerate (the checks run under pytest)')
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        print(f'{len(regenerate(tmp))} YAMLs -> {GOLDEN}')
