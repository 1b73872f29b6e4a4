"""Auto (spandrel) teachers: ``network_t: {type: auto}`` built from the checkpoint alone (docs/auto_teachers.md)."""
from __future__ import annotations

import os.path as osp
import subprocess
import sys

import pytest
import torch

pytest.importorskip('spandrel')

from spandrel_nets import LAYOUTS, make_checkpoint  # noqa: E402

from kdsr_plugins.core.auto_teacher import AutoTeacherError, SpandrelTeacher, build_auto_teacher  # noqa: E402
from kdsr_testutils import build_model_from_opt, edsr, random_batch, save_random_net, train_opt, write_yaml  # noqa: E402

ARCHS = list(LAYOUTS)
REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def _auto_opt(ckpt: str, scale: int = 4, model_type: str = 'KDModel', **extra) -> dict:
    opt = train_opt('auto_t', '/nonexistent', ckpt, model_type=model_type, scale=scale, student=edsr(8, 1, scale),
                    teacher={'type': 'auto'}, ema=0, **extra)
    return opt


@pytest.mark.parametrize('arch', ARCHS)
def test_detects_arch_scale_and_matches_the_network(tmp_path, arch):
    path, net = make_checkpoint(str(tmp_path), arch)
    teacher = build_auto_teacher({'type': 'auto'}, path, 4)
    assert isinstance(teacher, SpandrelTeacher)
    assert teacher.arch == arch and teacher.scale == 4
    teacher.eval()
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(teacher(x), net(x), atol=1e-5)  # same weights, same function
        # an odd-size input that misses the minimum (HAT/SwinIR: 16) is padded and cropped back
        assert teacher(torch.rand(1, 3, 9, 7)).shape == (1, 3, 36, 28)


@pytest.mark.parametrize('arch', ['HAT', 'ESRGAN'])
def test_wrong_scale_is_refused_naming_the_file(tmp_path, arch):
    path, _ = make_checkpoint(str(tmp_path), arch, scale=2)
    with pytest.raises(AutoTeacherError, match=r'upscales x2, but the run \(scale\) is x4') as err:
        build_auto_teacher({'type': 'auto'}, path, 4)
    assert path in str(err.value)


def test_unknown_arch_non_sr_and_wrong_arch_are_refused(tmp_path):
    edsr_ckpt = save_random_net(edsr(8, 1, 4), str(tmp_path / 'edsr.pth'))  # spandrel has no BasicSR EDSR
    with pytest.raises(AutoTeacherError, match='cannot detect the architecture') as err:
        build_auto_teacher({'type': 'auto'}, edsr_ckpt, 4)
    assert 'edsr.pth' in str(err.value)
    from spandrel.architectures.SPAN import SPAN
    torch.save({'params': SPAN(num_in_ch=3, num_out_ch=3, feature_channels=8, upscale=1).state_dict()},
               tmp_path / 'x1.pth')
    with pytest.raises(AutoTeacherError, match='not a super-resolution model'):
        build_auto_teacher({'type': 'auto'}, str(tmp_path / 'x1.pth'), 4)
    path, _ = make_checkpoint(str(tmp_path), 'SPAN')
    with pytest.raises(AutoTeacherError, match="network.arch is 'HAT'"):
        build_auto_teacher({'type': 'auto', 'arch': 'HAT'}, path, 4)
    assert build_auto_teacher({'type': 'auto', 'arch': 'span'}, path, 4).arch == 'SPAN'
    with pytest.raises(ValueError, match='Unknown option key'):
        build_auto_teacher({'type': 'auto', 'num_feat': 8}, path, 4)
    with pytest.raises(AutoTeacherError, match='none is set'):
        build_auto_teacher({'type': 'auto'}, None, 4)


def test_explicit_param_key_and_weights_only(tmp_path):
    path, _ = make_checkpoint(str(tmp_path), 'HAT', layout='params')
    assert build_auto_teacher({'type': 'auto'}, path, 4, param_key='params').arch == 'HAT'
    from kdsr_plugins.core.checkpoints import CheckpointError
    with pytest.raises(CheckpointError, match="param_key 'net' not found"):
        build_auto_teacher({'type': 'auto'}, path, 4, param_key='net')
    evil = tmp_path / 'evil.pth'
    torch.save({'params': {'w': torch.zeros(1)}, 'obj': SpandrelTeacher}, evil)  # a pickled class: not weights-only
    with pytest.raises(CheckpointError, match='weights-only'):
        build_auto_teacher({'type': 'auto'}, str(evil), 4)


@pytest.mark.parametrize('arch', ARCHS)
def test_kd_iterations_with_each_arch(tmp_path, arch):
    """Logits KD from each auto teacher: frozen, eval, not in the optimizer; the student learns."""
    path, _ = make_checkpoint(str(tmp_path), arch)
    model = build_model_from_opt(_auto_opt(path), tmp_path)
    teacher = model.net_t
    assert isinstance(teacher, SpandrelTeacher) and teacher.arch == arch
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    optimised = {id(p) for g in model.optimizer_g.param_groups for p in g['params']}
    assert not optimised & {id(p) for p in teacher.parameters()}
    with torch.no_grad():  # SPAN re-derives its eval conv from its (frozen) training convs in each eval forward
        teacher(torch.rand(1, 3, 8, 8))
    before = [p.detach().clone() for p in teacher.parameters()]
    student_before = [p.detach().clone() for p in model.net_g.parameters()]
    for it in range(1, 3):
        model.feed_data(random_batch(scale=4, size=8, seed=it))  # LR 8 < HAT/SwinIR minimum 16: padded
        model.optimize_parameters(it)
    assert set(model.log_dict) == {'l_pix', 'l_kd'}
    assert all(torch.isfinite(torch.tensor(v)) for v in model.log_dict.values())
    assert all(torch.equal(a, b) for a, b in zip(before, teacher.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(student_before, model.net_g.parameters()))
    assert not teacher.training


def test_teacher_list_of_three_archs_in_mtkd(tmp_path):
    """An MTKD teacher list of three different spandrel teachers (stage-1 aggregator training)."""
    teachers = []
    for arch in ('HAT', 'SwinIR', 'SPAN'):
        path, _ = make_checkpoint(str(tmp_path), arch)
        teachers.append({'name': arch.lower(), 'network': {'type': 'auto', 'arch': arch}, 'pretrain': path})
    opt = _auto_opt(None, model_type='MTKDAggregatorModel')
    opt['teachers'] = teachers
    opt['network_g'] = {'type': 'MTKDDCTSwin', 'num_teachers': 3, 'upscale': 4, 'img_size': 32, 'window_size': 4,
                        'embed_dim': 12, 'depths': [1], 'num_heads': [2], 'mlp_ratio': 2, 'num_feat': 8}
    opt['train'].pop('kd_opt')
    model = build_model_from_opt(opt, tmp_path)
    assert [t.arch for t in model.teachers.values()] == ['HAT', 'SwinIR', 'SPAN']
    model.feed_data(random_batch(scale=4, size=8))
    model.optimize_parameters(1)
    assert all(torch.isfinite(torch.tensor(v)) for v in model.log_dict.values())


def test_dukd_with_auto_teacher(tmp_path):
    path, _ = make_checkpoint(str(tmp_path), 'SPAN')
    opt = _auto_opt(path, model_type='DUKDModel', dukd_opt={})
    opt['datasets']['train']['gt_size'] = 32
    model = build_model_from_opt(opt, tmp_path)
    model.feed_data(random_batch(scale=4, size=8))
    model.optimize_parameters(1)
    assert 'l_kd' in ''.join(model.log_dict) and all(torch.isfinite(torch.tensor(v)) for v in model.log_dict.values())


def test_feature_kd_taps_by_module_path_or_refused(tmp_path):
    path, _ = make_checkpoint(str(tmp_path), 'HAT')
    feature = {'feature_kd': {'positions_t': ['conv_after_body'], 'positions_s': ['conv_after_body'],
                              'adapter': 'conv1x1'},
               'feature_opt': {'type': 'KDFitNetLoss', 'loss_weight': 1.0}}
    opt = _auto_opt(path, model_type='FeatureKDModel', **feature)
    opt['datasets']['train']['gt_size'] = 64  # LR 16: the HAT teacher does not pad it
    model = build_model_from_opt(opt, tmp_path)
    model.feed_data(random_batch(scale=4, size=16))
    model.optimize_parameters(1)
    assert 'l_feat' in model.log_dict and torch.isfinite(torch.tensor(model.log_dict['l_feat']))
    opt['train']['feature_kd']['positions_t'] = [0]  # body-unit index: no stage runner for HAT
    with pytest.raises(ValueError, match='Valid module paths|unsupported'):
        build_model_from_opt(opt, tmp_path)
    opt['train']['feature_kd']['positions_t'] = ['body.nope']
    with pytest.raises(ValueError, match='Valid module paths.*conv_after_body'):
        build_model_from_opt(opt, tmp_path)
    opt['train']['feature_kd']['positions_t'] = ['conv_after_body']
    opt['datasets']['train']['gt_size'] = 32  # LR 8 < 16: the teacher would pad, features would not match
    with pytest.raises(ValueError, match='would be padded by the teacher'):
        build_model_from_opt(opt, tmp_path)


def test_mipkd_refuses_auto_teacher(tmp_path):
    path, _ = make_checkpoint(str(tmp_path), 'SPAN')
    with pytest.raises(ValueError, match='stage runners for .*SPAN'):
        build_model_from_opt(_auto_opt(path, model_type='MiPKDModel'), tmp_path)


@pytest.mark.slow
@pytest.mark.subprocess
def test_train_cli_with_auto_teacher(tmp_path, demo_data):
    """``python -m kdsr_plugins.train`` end to end from an ESRGAN checkpoint (bare state dict)."""
    path, _ = make_checkpoint(str(tmp_path), 'ESRGAN')
    opt = train_opt('auto_cli', demo_data, path, scale=4, student=edsr(8, 1, 4), teacher={'type': 'auto'},
                    total_iter=2, save_freq=2, ema=0.999)
    opt['datasets']['train']['gt_size'] = 32
    yml = write_yaml(opt, str(tmp_path / 'auto.yml'))
    env = {**__import__('os').environ, 'PYTHONPATH': REPO}
    proc = subprocess.run([sys.executable, '-m', 'kdsr_plugins.train', '-opt', yml], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert osp.isfile(tmp_path / 'experiments' / 'auto_cli' / 'models' / 'net_g_2.pth')
    log = open(next((tmp_path / 'experiments' / 'auto_cli').glob('train_*.log'))).read()
    assert 'ESRGAN x4 detected by spandrel' in log


def test_teacher_output_cache_from_auto_teacher(tmp_path, demo_data):
    """``cache_teacher_outputs`` builds the auto teacher the same way and stores its outputs."""
    import lmdb
    from basicsr.utils import imfrombytes

    from kdsr_plugins.core.kd_cached_target_dataset import decode_target, read_cache_meta
    from kdsr_plugins.tools import cache_teacher_outputs as cache_cli

    path, net = make_checkpoint(str(tmp_path), 'SPAN')
    opt = train_opt('auto_cache', demo_data, path, scale=4, student=edsr(8, 1, 4), teacher={'type': 'auto'})
    yml = write_yaml(opt, str(tmp_path / 'cache.yml'))
    written = cache_cli.main(['-opt', yml, '--device', 'cpu', '--out', str(tmp_path / 'cache')])
    assert list(written) == ['target']
    cache = written['target']
    assert read_cache_meta(cache)['teachers'][0]['type'] == 'auto'
    env = lmdb.open(osp.join(demo_data, 'train_LR_X4_sub.lmdb'), readonly=True, lock=False)
    with env.begin() as txn:
        key, raw = next(iter(txn.cursor()))
        lq = imfrombytes(raw, float32=True)
    env.close()
    x = torch.from_numpy(lq[:, :, ::-1].copy()).permute(2, 0, 1)[None]
    with torch.no_grad():
        expected = net(x)[0].permute(1, 2, 0).numpy()[:, :, ::-1].clip(-0.25, 1.25)
    env = lmdb.open(cache, readonly=True, lock=False)
    with env.begin() as txn:
        got = decode_target(txn.get(key), 'png16', (-0.25, 1.25))
    env.close()
    assert got.shape == expected.shape and abs(got - expected).max() <= 1.5 / 65535 / 2 + 1e-5
