"""``python -m kdsr_plugins.export``: ONNX round trip against PyTorch, safetensors, missing extras (docs/export.md)."""
from __future__ import annotations

import os.path as osp
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from basicsr.archs import build_network

from kdsr_plugins.core.checkpoints import CheckpointError
from kdsr_plugins.export import PadCrop, main, run_export
from kdsr_testutils import edsr, write_yaml

ort = pytest.importorskip('onnxruntime')
REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
RGB_MEAN = [0.4488, 0.4371, 0.4040]
STUDENTS = {
    'EDSR': edsr(8, 1, 4),
    'RCAN': dict(type='RCAN', num_in_ch=3, num_out_ch=3, num_feat=8, num_group=1, num_block=1, squeeze_factor=4,
                 upscale=4, res_scale=1, img_range=255.0, rgb_mean=RGB_MEAN),
    'SwinIR': dict(type='SwinIR', upscale=4, in_chans=3, img_size=16, window_size=4, img_range=1.0, depths=[1],
                   embed_dim=12, num_heads=[2], mlp_ratio=2, upsampler='pixelshuffledirect', resi_connection='1conv'),
}


def _test_yml(tmp_path, arch: str, param_key: str = 'params_ema', lq_root: str | None = None) -> tuple[str, dict]:
    """A trained-student checkpoint (params != params_ema) and the test YAML that names it."""
    torch.manual_seed(0)
    net_opt = STUDENTS[arch]
    raw, ema = build_network(dict(net_opt)).state_dict(), build_network(dict(net_opt)).state_dict()
    ckpt = str(tmp_path / f'net_g_{arch}.pth')
    torch.save({'params': raw, 'params_ema': ema}, ckpt)
    opt = {'name': f'test_{arch}', 'model_type': 'KDModel', 'scale': 4, 'num_gpu': 0,
           'datasets': {'test_1': {'name': 'tiny', 'type': 'PairedImageDataset', 'dataroot_gt': str(tmp_path),
                                   'dataroot_lq': lq_root or str(tmp_path / 'none'), 'io_backend': {'type': 'disk'}}},
           'network_g': net_opt, 'path': {'pretrain_network_g': ckpt, 'param_key_g': param_key, 'strict_load_g': True},
           'val': {'metrics': {}}}
    return write_yaml(opt, str(tmp_path / f'test_{arch}.yml')), {'params': raw, 'params_ema': ema}


@pytest.mark.parametrize('arch', ['EDSR', 'RCAN', 'SwinIR'])
def test_onnx_round_trip_with_dynamic_sizes(tmp_path, arch):
    yml, states = _test_yml(tmp_path, arch)
    out = str(tmp_path / f'{arch}.onnx')
    info = run_export(yml, 'onnx', out)
    assert info['max_abs_diff'] <= 1e-4 and info['opset'] == 17 and info['padded'] == (arch == 'SwinIR')
    # an independent check: the EMA weights, sizes the export never saw, against the plain network
    net = build_network(dict(STUDENTS[arch])).eval()
    net.load_state_dict(states['params_ema'])
    module = PadCrop(net, 4, 4) if arch == 'SwinIR' else net
    session = ort.InferenceSession(out, providers=['CPUExecutionProvider'])
    batch = 1 if arch == 'SwinIR' else 2  # SwinIR: batch 1 (docs/export.md)
    for h, w in ((13, 29), (30, 7)):
        x = torch.rand(batch, 3, h, w)
        got = session.run(['sr'], {'lq': x.numpy()})[0]
        with torch.no_grad():
            ref = module(x).numpy()
        assert got.shape == (batch, 3, 4 * h, 4 * w) and np.abs(got - ref).max() <= 1e-4


def test_padcrop_matches_validation_padding():
    from kdsr_plugins.core.arch_info import mirror_pad
    net = build_network(dict(STUDENTS['SwinIR'])).eval()
    x = torch.rand(1, 3, 10, 7)
    with torch.no_grad():
        assert torch.equal(PadCrop(net, 4, 4)(x), net(mirror_pad(x, 4))[:, :, :40, :28])


def test_raw_weights_dataset_images_and_cli(tmp_path, capsys):
    lq = tmp_path / 'lq'
    lq.mkdir()
    for i in range(2):
        cv2.imwrite(str(lq / f'{i}.png'), np.random.RandomState(i).randint(0, 256, (20 + i, 17, 3), np.uint8))
    yml, _ = _test_yml(tmp_path, 'EDSR', param_key='params', lq_root=str(lq))
    assert main(['-opt', yml, '--format', 'onnx', '--out', str(tmp_path / 'e.onnx')]) == 0
    text = capsys.readouterr().out
    assert '(params of' in text and '2 LR image(s) of datasets.test_1' in text and 'max |diff|' in text


def test_safetensors_holds_the_selected_weights(tmp_path):
    from safetensors import safe_open
    yml, states = _test_yml(tmp_path, 'RCAN')
    out = str(tmp_path / 'rcan.safetensors')
    run_export(yml, 'safetensors', out)
    with safe_open(out, 'pt') as f:
        assert set(f.keys()) == set(states['params_ema'])
        assert all(torch.equal(f.get_tensor(k), v) for k, v in states['params_ema'].items())
        assert f.metadata()['param_key'] == 'params_ema' and '"RCAN"' in f.metadata()['network_g']


def test_missing_extra_and_bad_checkpoint_messages(tmp_path, monkeypatch, capsys):
    yml, _ = _test_yml(tmp_path, 'EDSR')
    monkeypatch.setitem(sys.modules, 'onnx', None)  # "import onnx" raises ImportError
    with pytest.raises(ImportError, match=r'kdsr_plugins\[onnx\]'):
        run_export(yml, 'onnx', str(tmp_path / 'x.onnx'))
    assert main(['-opt', yml, '--out', str(tmp_path / 'x.onnx')]) == 1
    assert 'onnx and onnxruntime' in capsys.readouterr().err
    monkeypatch.delitem(sys.modules, 'onnx')
    bad = tmp_path / 'bad.yml'
    bad.write_text(open(yml).read().replace('params_ema', 'nope'))
    with pytest.raises(CheckpointError, match="param_key 'nope' not found"):
        run_export(str(bad), 'onnx', str(tmp_path / 'y.onnx'))
    strict = tmp_path / 'strict.yml'
    strict.write_text(open(yml).read().replace('num_feat: 8', 'num_feat: 16'))
    with pytest.raises(CheckpointError, match='strict loading'):
        run_export(str(strict), 'safetensors', str(tmp_path / 'z.safetensors'))


@pytest.mark.slow
@pytest.mark.subprocess
def test_module_entry_point(tmp_path):
    yml, _ = _test_yml(tmp_path, 'EDSR')
    proc = subprocess.run([sys.executable, '-m', 'kdsr_plugins.export', '-opt', yml, '--format', 'safetensors',
                           '--out', str(tmp_path / 'w.safetensors')], capture_output=True, text=True, timeout=300,
                          check=False,
                          env={**__import__('os').environ, 'PYTHONPATH': REPO})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert osp.isfile(tmp_path / 'w.safetensors') and 'weights (params_ema' in proc.stdout
