"""Shipped option YAMLs: up to date with the generator, parse, name registered classes, build."""
import glob
import os.path as osp
import subprocess
import sys

import pytest
import yaml
from basicsr.archs import build_network
from basicsr.utils.options import ordered_yaml
from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, LOSS_REGISTRY, MODEL_REGISTRY

from kdsr_testutils import ROOT

YAMLS = sorted(glob.glob(osp.join(ROOT, 'options', '**', '*.yml'), recursive=True))


def load(path):
    with open(path) as f:
        return yaml.load(f, Loader=ordered_yaml()[0])


def loss_types(block):
    if isinstance(block, dict):
        if 'type' in block and isinstance(block['type'], str) and 'loss_weight' in block:
            yield block['type']
        for value in block.values():
            yield from loss_types(value)
    elif isinstance(block, list):
        for value in block:
            yield from loss_types(value)


@pytest.mark.subprocess
def test_yamls_match_generator():
    proc = subprocess.run([sys.executable, osp.join(ROOT, 'scripts', 'make_options.py'), '--check'],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_there_are_yamls_for_every_family_and_scale():
    names = [osp.basename(p) for p in YAMLS]
    for family in ('EDSR', 'RCAN', 'SwinIR'):
        for scale in (2, 3, 4):
            assert f'train_KD_{family}_x{scale}' in ' '.join(names), (family, scale)


@pytest.mark.parametrize('path', YAMLS, ids=lambda p: osp.relpath(p, ROOT))
def test_yaml_names_registered_classes_and_paper_metrics(path):
    opt = load(path)
    assert opt['model_type'] in MODEL_REGISTRY, opt['model_type']
    assert 'debug' not in opt['name']
    for phase, dataset in opt['datasets'].items():
        assert dataset['type'] in DATASET_REGISTRY
        if phase == 'train':
            assert dataset['gt_size'] % opt['scale'] == 0
    for key, value in opt.items():
        if key.startswith('network_'):
            assert value['type'] in ARCH_REGISTRY or (key == 'network_t' and value['type'] == 'auto')
    for entry in opt.get('teachers') or []:  # auto: built from the checkpoint by spandrel (docs/auto_teachers.md)
        assert entry['network']['type'] in ARCH_REGISTRY or entry['network']['type'] == 'auto'
    for loss in loss_types(opt.get('train', {})):
        assert loss in LOSS_REGISTRY, loss
    for metric in opt['val']['metrics'].values():
        assert metric['test_y_channel'] is True and metric['crop_border'] == opt['scale']


@pytest.mark.slow
@pytest.mark.parametrize('family', ['EDSR', 'RCAN', 'SwinIR'])
def test_paper_pair_networks_build_with_expected_sizes(family):
    opt = load(osp.join(ROOT, 'options', 'train', 'KD', f'train_KD_{family}_x4' + {
        'EDSR': 'c256b32_c64b32', 'RCAN': 'g10b20_g10b6', 'SwinIR': 'e180d6_e60d4'}[family] + '.yml'))
    def count(net_opt):
        return sum(p.numel() for p in build_network(dict(net_opt)).parameters()) / 1e6

    expected = {'EDSR': (43.09, 2.70), 'RCAN': (15.59, 5.17), 'SwinIR': (11.90, 1.24)}[family]
    assert count(opt['network_t']) == pytest.approx(expected[0], abs=0.01)
    assert count(opt['network_g']) == pytest.approx(expected[1], abs=0.01)
