"""KD core: registry, teachers, checkpoints, taps, logits-KD loss, SwinIR validation padding."""
import subprocess
import sys

import kdsr_plugins

import pytest
import torch
from basicsr.archs import build_network
from basicsr.utils.registry import MODEL_REGISTRY

from kdsr_plugins.core.checkpoints import CheckpointError
from kdsr_plugins.core.taps import FeatureTaps, TapError
from kdsr_testutils import build_model_from_opt, edsr, random_batch, save_random_net, swinir, train_opt


def kd_model(tmp_path, teacher_ckpt, **kw):
    return build_model_from_opt(train_opt('core', str(tmp_path), teacher_ckpt, **kw), tmp_path)


@pytest.mark.slow
@pytest.mark.subprocess
def test_registry_lists_core_names():
    names = kdsr_plugins.registered_names()
    assert 'KDModel' in names['MODEL'] and 'KDModel' in MODEL_REGISTRY
    out = subprocess.run([sys.executable, '-m', 'kdsr_plugins', '--list'], capture_output=True, text=True, check=True)
    assert 'MODEL:' in out.stdout and 'KDModel' in out.stdout


def test_teacher_is_frozen_eval_and_unchanged(tmp_path, teacher_ckpt):
    model = kd_model(tmp_path, teacher_ckpt)
    before = {k: v.clone() for k, v in model.net_t.state_dict().items()}
    assert all(not p.requires_grad for p in model.net_t.parameters())
    for it in range(1, 4):
        model.net_t.train()  # a stray .train() must not survive into the step
        model.feed_data(random_batch(seed=it))
        model.optimize_parameters(it)
        assert not model.net_t.training
    assert all(p.grad is None for p in model.net_t.parameters())
    for k, v in model.net_t.state_dict().items():
        assert torch.equal(v, before[k]), k
    student_grads = [p.grad for p in model.net_g.parameters()]
    assert all(g is not None for g in student_grads) and any(g.abs().sum() > 0 for g in student_grads)


def test_logits_kd_loss_equals_hand_computed_value(tmp_path, teacher_ckpt):
    model = kd_model(tmp_path, teacher_ckpt, kd_opt={'type': 'L1Loss', 'loss_weight': 0.7},
                     pixel_opt={'type': 'L1Loss', 'loss_weight': 0.3})
    model.feed_data(random_batch(seed=3))
    losses = model.compute_losses(1)
    teacher = build_network(edsr(16, 2))
    teacher.load_state_dict(torch.load(teacher_ckpt)['params'])
    with torch.no_grad():
        t_out = teacher.eval()(model.lq)
        s_out = model.net_g(model.lq)
    assert list(losses) == ['l_pix', 'l_kd']
    assert losses['l_kd'].item() == pytest.approx(0.7 * (s_out - t_out).abs().mean().item(), rel=1e-5)
    assert losses['l_pix'].item() == pytest.approx(0.3 * (s_out - model.gt).abs().mean().item(), rel=1e-5)
    assert losses['l_kd'].requires_grad


def test_non_finite_loss_stops_with_iteration_named(tmp_path, teacher_ckpt):
    model = kd_model(tmp_path, teacher_ckpt)
    batch = random_batch()
    batch['gt'][0, 0, 0, 0] = float('nan')
    model.feed_data(batch)
    with pytest.raises(FloatingPointError, match='iteration 7.*l_pix=nan'):
        model.optimize_parameters(7)


@pytest.mark.parametrize('change, error, match', [
    (dict(teacher_path='missing.pth'), CheckpointError, 'not found'),
    (dict(param_key_t='params_xyz'), CheckpointError, r"param_key 'params_xyz' not found.*\['params'\]"),
    (dict(teacher=edsr(32, 2)), CheckpointError,
     r'shape of body.0.conv1.weight: checkpoint \(16, 16, 3, 3\) vs network \(32, 32, 3, 3\)'),
    (dict(teacher=edsr(16, 2, scale=4)), ValueError, 'upscales x4'),
    (dict(teacher_path=None), ValueError, 'has no checkpoint'),
])
def test_bad_teacher_options_give_clear_errors(tmp_path, teacher_ckpt, change, error, match):
    ckpt = change.get('teacher_path', teacher_ckpt) if 'teacher_path' in change else teacher_ckpt
    opt = train_opt('bad', str(tmp_path), ckpt or 'x', teacher=change.get('teacher'))
    if 'teacher_path' in change and change['teacher_path'] is None:
        opt['path']['pretrain_network_t'] = None
    if 'param_key_t' in change:
        opt['path']['param_key_t'] = change['param_key_t']
    with pytest.raises(error, match=match):
        build_model_from_opt(opt, tmp_path)


def test_both_teacher_forms_or_none_is_an_error(tmp_path, teacher_ckpt):
    opt = train_opt('bad', str(tmp_path), teacher_ckpt)
    opt['teachers'] = [{'name': 'a', 'network': edsr(16, 2), 'pretrain': teacher_ckpt}]
    with pytest.raises(ValueError, match='not both'):
        build_model_from_opt(opt, tmp_path)
    opt = train_opt('bad', str(tmp_path), None)
    with pytest.raises(ValueError, match='needs a teacher'):
        build_model_from_opt(opt, tmp_path)


def test_list_form_teachers_keep_order_and_param_keys(tmp_path):
    a = save_random_net(edsr(16, 2), str(tmp_path / 'a.pth'), seed=1, param_key='params_ema')
    b = save_random_net(edsr(8, 1), str(tmp_path / 'b.pth'), seed=2)
    opt = train_opt('multi', str(tmp_path), None)
    opt['teachers'] = [{'name': 'zeta', 'network': edsr(16, 2), 'pretrain': a, 'param_key': 'params_ema'},
                       {'name': 'alpha', 'network': edsr(8, 1), 'pretrain': b}]
    model = build_model_from_opt(opt, tmp_path)
    assert list(model.teachers) == ['zeta', 'alpha']
    assert model.net_t is model.teachers['zeta']
    expected = torch.load(a)['params_ema']['conv_first.weight']
    assert torch.equal(model.teachers['zeta'].conv_first.weight, expected)


def test_checkpoint_layouts_load(tmp_path):
    """BasicSR zoo (params / params_ema), raw state dicts, DDP 'module.' prefixes, SwinIR releases."""
    from kdsr_plugins.core.checkpoints import extract_state_dict, load_checkpoint_file

    net = build_network(edsr(8, 1))
    sd = net.state_dict()
    torch.save({'params_ema': sd}, tmp_path / 'ema.pth')
    torch.save({f'module.{k}': v for k, v in sd.items()}, tmp_path / 'raw.pth')
    assert extract_state_dict(load_checkpoint_file(str(tmp_path / 'ema.pth')), 'params_ema').keys() == sd.keys()
    raw = extract_state_dict(load_checkpoint_file(str(tmp_path / 'raw.pth')), None)
    assert raw.keys() == sd.keys()
    with pytest.raises(CheckpointError, match='bare state dict'):
        extract_state_dict(load_checkpoint_file(str(tmp_path / 'raw.pth')), 'params')
    swin_opt = swinir(2, img_size=8, upsampler='pixelshuffle')
    swin = build_network(dict(swin_opt))
    torch.save({'params': swin.state_dict()}, tmp_path / 'swinir_release.pth')  # SwinIR release layout
    swin2 = build_network(dict(swin_opt))
    swin2.load_state_dict(extract_state_dict(load_checkpoint_file(str(tmp_path / 'swinir_release.pth')), 'params'))
    (tmp_path / 'garbage.pth').write_bytes(b'not a checkpoint')
    with pytest.raises(CheckpointError, match='weights-only'):
        load_checkpoint_file(str(tmp_path / 'garbage.pth'))


def test_taps_capture_pre_and_post_skip_and_validate_paths():
    net = build_network(edsr(8, 2)).eval()
    taps = FeatureTaps(net, ['conv_first', 1, 'conv_after_body', 'upsample:in'])
    x = torch.rand(1, 3, 6, 6)
    with torch.no_grad():
        with taps.capture() as feats:
            net(x)
        x_norm = (x - net.mean) * net.img_range
        h0 = net.conv_first(x_norm)
        body = net.body(h0)
        pre_skip = net.conv_after_body(body)
    assert torch.allclose(feats[0], h0) and torch.allclose(feats[1], body)
    assert torch.allclose(feats[2], pre_skip)
    assert torch.allclose(feats[3], pre_skip + h0)
    assert taps._store == [None] * 4  # nothing kept after the context
    with torch.no_grad():
        net(x)  # outside a capture: nothing recorded
    assert taps._store == [None] * 4
    with pytest.raises(TapError, match=r"Unknown tap 'body.9'.*conv_first.*body.1"):
        FeatureTaps(net, ['body.9'])
    with pytest.raises(TapError, match=r'Body-unit tap 5 .*0\.\.1'):
        FeatureTaps(net, [5])


def test_swinir_token_taps_become_maps():
    net = build_network(swinir(2, depths=(1, 1), img_size=8, upsampler='pixelshuffle')).eval()
    taps = FeatureTaps(net, [0, 'norm', 'conv_after_body'])
    tok = FeatureTaps(net, [1], token_layout='tokens')
    x = torch.rand(2, 3, 8, 12)
    with torch.no_grad(), taps.capture() as feats, tok.capture() as tokens:
        net(x)
    assert [tuple(f.shape) for f in feats] == [(2, 12, 8, 12)] * 3
    assert tuple(tokens[0].shape) == (2, 96, 12)


def test_swinir_student_validates_any_size(tmp_path, teacher_ckpt):
    model = kd_model(tmp_path, teacher_ckpt, student=swinir(2, img_size=8, upsampler='pixelshuffle'))
    model.feed_data({'lq': torch.rand(1, 3, 10, 13)})
    model.test()
    assert tuple(model.output.shape) == (1, 3, 20, 26)


def test_optimizer_groups_and_aux_lr(tmp_path, teacher_ckpt):
    model = kd_model(tmp_path, teacher_ckpt)
    assert len(model.optimizers) == 1 and len(model.optimizer_g.param_groups) == 1
    n_student = sum(1 for p in model.net_g.parameters() if p.requires_grad)
    assert len(model.optimizer_g.param_groups[0]['params']) == n_student
    with pytest.raises(ValueError, match='optim_aux'):
        kd_model(tmp_path, teacher_ckpt, optim_aux={'momentum': 0.9})
