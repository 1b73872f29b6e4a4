"""Official RCAN -> BasicSR conversion on a synthetic official-named state dict."""
import os.path as osp
import subprocess
import sys

import pytest
import torch
from basicsr.archs import build_network

from kdsr_plugins.core.rcan_convert import convert_rcan_state_dict
from kdsr_testutils import ROOT, rcan


def official_state(scale, num_group=2, num_block=2, feat=16, seed=0):
    """An official-RCAN-named state dict, written from the official layout independently of the converter."""
    g = torch.Generator().manual_seed(seed)
    sd = {}

    def conv(o, i, k=3):
        return {'weight': torch.randn(o, i, k, k, generator=g), 'bias': torch.randn(o, generator=g)}

    def put(prefix, params):
        sd.update({f'{prefix}.{k}': v for k, v in params.items()})

    put('sub_mean', conv(3, 3, 1))
    put('add_mean', conv(3, 3, 1))
    put('head.0', conv(feat, 3))
    for gi in range(num_group):
        for b in range(num_block):
            put(f'body.{gi}.body.{b}.body.0', conv(feat, feat))
            put(f'body.{gi}.body.{b}.body.2', conv(feat, feat))
            put(f'body.{gi}.body.{b}.body.3.conv_du.0', conv(feat // 4, feat, 1))
            put(f'body.{gi}.body.{b}.body.3.conv_du.2', conv(feat, feat // 4, 1))
        put(f'body.{gi}.body.{num_block}', conv(feat, feat))
    put(f'body.{num_group}', conv(feat, feat))
    ups = [0, 2] if scale == 4 else [0]
    for i in ups:
        put(f'tail.0.{i}', conv(feat * (4 if scale == 4 else scale * scale), feat))
    put('tail.1', conv(3, feat))
    return sd


@pytest.mark.parametrize('scale', [2, 3, 4])
def test_conversion_maps_every_key_and_loads_strictly(scale):
    net = build_network(rcan(16, 2, 2, scale))
    official = official_state(scale)
    state = convert_rcan_state_dict(official, net)
    net.load_state_dict(state, strict=True)
    assert torch.equal(net.conv_first.weight, official['head.0.weight'])
    assert torch.equal(net.body[1].conv.weight, official['body.1.body.2.weight'])
    assert torch.equal(net.conv_after_body.bias, official['body.2.bias'])
    assert torch.equal(net.body[0].residual_group[1].rcab[3].attention[3].weight,
                       official['body.0.body.1.body.3.conv_du.2.weight'])
    assert torch.equal(net.conv_last.weight, official['tail.1.weight'])


def test_missing_or_extra_keys_fail():
    net = build_network(rcan(16, 2, 2, 4))
    official = official_state(4)
    del official['body.1.body.0.body.2.weight']
    with pytest.raises(KeyError, match='missing'):
        convert_rcan_state_dict(official, net)
    with pytest.raises(KeyError, match='Shape'):
        convert_rcan_state_dict(official_state(4, feat=8), net)


@pytest.mark.slow
@pytest.mark.subprocess
def test_cli_writes_basicsr_layout_and_refuses_overwrite(tmp_path):
    src, dst = tmp_path / 'RCAN_BIX2.pt', tmp_path / 'rcan_basicsr.pth'
    torch.save(official_state(2), src)
    cmd = [sys.executable, osp.join(ROOT, 'scripts', 'convert_rcan_checkpoint.py'), str(src), str(dst), '--scale', '2',
           '--num-feat', '16', '--num-group', '2', '--num-block', '2', '--squeeze-factor', '4']
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    assert set(torch.load(dst)) == {'params'}
    again = subprocess.run(cmd, capture_output=True, text=True)
    assert again.returncode == 2 and 'exists' in again.stderr
