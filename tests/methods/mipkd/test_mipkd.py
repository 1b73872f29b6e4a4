"""MiPKD (mipkd.md): mixers, masks, hand-computed loss terms, gradients, compression types,
real training runs (EDSR, SwinIR), resume, 2-process CPU DDP, shipped YAMLs."""
import copy
import glob
import os.path as osp
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
import yaml
from basicsr.utils.registry import ARCH_REGISTRY, MODEL_REGISTRY
from torch import nn

from kdsr_plugins.methods.mipkd.mipkd_mixer_arch import STUDENT, TEACHER, MiPKDMixer, MiPKDPlan, random_mask
from kdsr_plugins.methods.mipkd.mipkd_model import (
    MIPKD_OPT_KEYS,
    MiPKDModel,
    MiPKDOptions,
    MiPKDPath,
    default_positions,
)
from kdsr_testutils import (
    ROOT,
    build_model_from_opt,
    edsr,
    experiment_dir,
    model_file,
    random_batch,
    run_ddp_check,
    run_train,
    save_random_net,
    train_opt,
)
from kdsr_testutils import swinir as tiny_swinir

POS = {'positions_t': [1, 3], 'positions_s': [0, 1]}  # teacher EDSR b4 -> student EDSR b2, K = 2


pytestmark = pytest.mark.usefixtures('single_thread')


def swinir(embed_dim: int, stages: int, scale: int = 2) -> dict:
    """The shared tiny SwinIR with ``stages`` one-block stages (pixelshuffle)."""
    return tiny_swinir(scale, embed_dim, [1] * stages, upsampler='pixelshuffle')


def mipkd_opt(tmp_path, teacher=None, student=None, name='mipkd', seed=1, **mipkd):
    """Option dict of a tiny MiPKD run; ``mipkd`` keys go to train.mipkd_opt unless they end in ``_opt``."""
    teacher = teacher or edsr(16, 4)
    ckpt = save_random_net(teacher, str(tmp_path / f'teacher_{name}.pth'), seed=seed)
    losses = {k: mipkd.pop(k) for k in list(mipkd) if k.endswith('_opt')}
    opt = train_opt(name, str(tmp_path), ckpt, model_type='MiPKDModel', student=student or edsr(8, 2),
                    teacher=teacher, mipkd_opt=mipkd, **losses)
    opt['find_unused_parameters'] = True
    return opt


def build(tmp_path, **kw):
    return build_model_from_opt(mipkd_opt(tmp_path, **kw), tmp_path)


def l1(w):
    return {'type': 'L1Loss', 'loss_weight': w, 'reduction': 'mean'}


# ---------------------------------------------------------------------------- hand computation helpers
def conv_stack(seq: nn.Sequential, x):
    """The mixer's conv stack recomputed with F.conv2d / F.leaky_relu from its weights."""
    convs = [m for m in seq if isinstance(m, nn.Conv2d)]
    for j, c in enumerate(convs):
        if j:
            x = F.leaky_relu(x, 0.2)
        x = F.conv2d(x, c.weight, c.bias, padding=c.padding)
    return x


def edsr_features(net, x, positions):
    h0 = net.conv_first((x - net.mean.type_as(x)) * net.img_range)
    f, feats = h0, []
    for i, block in enumerate(net.body):
        f = block(f)
        if i in positions:
            feats.append(f)
    return h0, feats


def edsr_continue(net, f, first_unit, h0):
    for block in list(net.body)[first_unit:]:
        f = block(f)
    r = net.conv_after_body(f) + h0
    return net.conv_last(net.upsample(r)) / net.img_range + net.mean.type_as(f)


def fixed_plan(model, lq, mode, k_star=None, route=None, routes=None, seed=5):
    g = torch.Generator().manual_seed(seed)
    c_lat = model.bank.latent_channels()
    b, _, h, w = lq.shape
    masks = [random_mask(b, c, h, w, 0.5, generator=g) for c in c_lat]
    chain = [None] + [random_mask(b, c, h, w, 0.5, generator=g) for c in c_lat[1:]] if mode == 'chained' else []
    return MiPKDPlan(masks=masks, k_star=k_star, route=route, routes=routes, chain_masks=chain)


def force_plan(model, plan):
    model.sample_plan = lambda feats_t: plan


# ---------------------------------------------------------------------------- mixer and masks
def test_registered_and_parameter_counts_match_spec():
    assert 'MiPKDMixer' in ARCH_REGISTRY and 'MiPKDModel' in MODEL_REGISTRY
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    for (c_t, c_s), cnn, mlp in [((256, 64), 3835712, 427840), ((64, 64), 295424, 33280),
                                 ((180, 60), 1945320, 217320)]:
        assert count(MiPKDMixer(c_t, c_s)) == cnn
        assert count(MiPKDMixer(c_t, c_s, enc_type='mlp')) == mlp


@pytest.mark.parametrize('kw', [{}, dict(enc_type='mlp', enc_layers=3, latent_dim=12), dict(encoder='shared'),
                                dict(encoder='none', student_adapter='conv1x1'), dict(enc_layers=1)])
def test_mixer_shapes(kw):
    mixer = MiPKDMixer(16, 8, **kw)
    f_t, f_s = torch.randn(2, 16, 6, 5), torch.randn(2, 8, 6, 5)
    z_t, z_s = mixer.encode_t(f_t), mixer.encode_s(f_s)
    assert z_t.shape == z_s.shape == (2, mixer.latent_dim, 6, 5)
    mask = random_mask(2, mixer.latent_dim, 6, 5, 0.5)
    f_hat = mixer(f_t, f_s, mask)
    assert f_hat.shape == f_t.shape
    assert mixer.route_input(STUDENT, mixer.mix(z_t, z_s, mask)).shape == f_s.shape
    with pytest.raises(ValueError, match='B×8×H×W'):
        mixer.encode_s(f_t)


def test_mask_statistics_and_teacher_selection():
    torch.manual_seed(0)
    for p in (0.25, 0.5, 0.75):
        m = random_mask(4, 16, 24, 24, p)
        assert m.dtype == torch.bool and m.shape == (4, 16, 24, 24)
        assert abs(m.float().mean().item() - p) < 0.01
        assert abs(m[0].float().mean().item() - p) < 0.02 and not torch.equal(m[0], m[1])  # per sample
    a, b = random_mask(2, 8, 8, 8, 0.5), random_mask(2, 8, 8, 8, 0.5)
    assert not torch.equal(a, b)  # fresh draws
    s = random_mask(64, 8, 8, 8, 0.5, 'spatial')
    assert s.shape == (64, 1, 8, 8) and abs(s.float().mean().item() - 0.5) < 0.03
    c = random_mask(64, 8, 8, 8, 0.5, 'channel')
    assert c.shape == (64, 8, 1, 1) and abs(c.float().mean().item() - 0.5) < 0.05
    assert random_mask(2, 3, 4, 4, 1.0).all() and not random_mask(2, 3, 4, 4, 0.0).any()
    with pytest.raises(ValueError, match='valid values'):
        random_mask(2, 3, 4, 4, 0.5, 'grid')
    # I = 1 keeps the teacher latent: F_hat = D(E_T(F_T)), no gradient to E_S
    mixer = MiPKDMixer(16, 8)
    f_t, f_s = torch.randn(2, 16, 5, 5), torch.randn(2, 8, 5, 5)
    f_hat = mixer(f_t, f_s, random_mask(2, 16, 5, 5, 1.0))
    assert torch.equal(f_hat, mixer.decode(mixer.encode_t(f_t)))
    f_hat.abs().sum().backward()
    assert all(p.grad.abs().sum() == 0 for p in mixer.enc_s.parameters())
    assert all(p.grad.abs().sum() > 0 for p in mixer.enc_t.parameters())


# ---------------------------------------------------------------------------- loss terms by hand
CASES = [('single', 1, TEACHER, None, 'teacher'), ('single', 2, STUDENT, None, 'both'),
         ('chained', None, None, [STUDENT, TEACHER], 'teacher'), ('chained', None, None, [TEACHER, STUDENT], 'gt')]


@pytest.mark.parametrize('mode, k_star, route, routes, block_target', CASES)
def test_each_loss_term_equals_hand_computed_value(tmp_path, mode, k_star, route, routes, block_target):
    w = dict(pixel_opt=l1(0.4), kd_opt=l1(0.5), feat_opt=l1(0.7), ae_opt=l1(0.3), block_opt=l1(0.2))
    model = build(tmp_path, bpm_mode=mode, ae_student=True, block_target=block_target, **POS, **w)
    model.feed_data(random_batch(size=8, seed=4))
    lq, gt = model.lq, model.gt
    plan = fixed_plan(model, lq, mode, k_star, route, routes)
    force_plan(model, plan)
    losses = model.compute_losses(1)
    assert list(losses) == ['l_pix', 'l_kd', 'l_fpm', 'l_ae', 'l_ae_s', 'l_bpm']

    net_t, net_s, bank = model.net_t, model.get_bare_model(model.net_g), model.bank
    pt, ps = POS['positions_t'], POS['positions_s']
    with torch.no_grad():
        y_t, y_s = net_t(lq), net_s(lq)
        h0_t, f_t = edsr_features(net_t, lq, pt)
        h0_s, f_s = edsr_features(net_s, lq, ps)
        mx = bank.mixers
        z_t = [conv_stack(m.enc_t, f) for m, f in zip(mx, f_t)]
        z_s = [conv_stack(m.enc_s, f) for m, f in zip(mx, f_s)]
        z_mix = [torch.where(mask, a, b) for mask, a, b in zip(plan.masks, z_t, z_s)]
        f_hat = [conv_stack(m.dec, z) for m, z in zip(mx, z_mix)]
        mean = lambda a, b: (a - b).abs().mean().item()  # noqa: E731
        expect = {
            'l_pix': 0.4 * mean(y_s, gt), 'l_kd': 0.5 * mean(y_s, y_t),
            'l_fpm': 0.7 * sum(mean(a, b) for a, b in zip(f_hat, f_t)),
            'l_ae': 0.3 * sum(mean(conv_stack(m.dec, z), f) for m, z, f in zip(mx, z_t, f_t)),
            'l_ae_s': 0.3 * sum(mean(conv_stack(m.dec_s, conv_stack(m.enc_s, f)), f) for m, f in zip(mx, f_s)),
        }
        nets, h0s, pos = (net_t, net_s), (h0_t, h0_s), (pt, ps)
        if mode == 'single':
            k = k_star - 1
            u = f_hat[k] if route == TEACHER else conv_stack(mx[k].dec_s, z_mix[k])
            y_mix = edsr_continue(nets[route], u, pos[route][k] + 1, h0s[route])
        else:  # K = 2: route 1 at position 1, one chained stage, route 2 at position 2
            r1, r2 = routes
            f = f_hat[0] if r1 == TEACHER else conv_stack(mx[0].dec_s, z_mix[0])
            for block in list(nets[r1].body)[pos[r1][0] + 1:pos[r1][1] + 1]:
                f = block(f)
            z_run = conv_stack(mx[1].enc_t if r1 == TEACHER else mx[1].enc_s, f)
            z = torch.where(plan.chain_masks[1], z_t[1], z_run)
            u = conv_stack(mx[1].dec if r2 == TEACHER else mx[1].dec_s, z)
            y_mix = edsr_continue(nets[r2], u, pos[r2][1] + 1, h0s[r2])
        expect['l_bpm'] = 0.2 * {'teacher': mean(y_mix, y_t), 'gt': mean(y_mix, gt),
                                 'both': 0.5 * (mean(y_mix, y_t) + mean(y_mix, gt))}[block_target]
    for key, value in expect.items():
        assert losses[key].item() == pytest.approx(value, rel=1e-5, abs=1e-7), key
        assert losses[key].requires_grad, key


def test_zero_weight_terms_are_not_computed(tmp_path):
    model = build(tmp_path, feat_opt=l1(0.0), ae_opt=None, **POS)
    model.feed_data(random_batch(size=8))
    assert list(model.compute_losses(1)) == ['l_pix', 'l_kd', 'l_bpm']
    assert sum(m is not None for m in model.last_plan.masks) == 1  # only k* needs a mask
    model = build(tmp_path, name='off', bpm_mode='off', use_ae_loss=False, **POS)
    model.feed_data(random_batch(size=8))
    assert list(model.compute_losses(1)) == ['l_pix', 'l_kd', 'l_fpm']
    assert all(m.dec_s is None and m.adapter is None for m in model.bank.mixers)

def test_sample_plan_fixed_draws(tmp_path):
    model = build(tmp_path, feat_opt=l1(0.0), ae_opt=None, **POS)
    feats = [torch.zeros(2, 16, 4, 4)] * 2
    for k_star in (1, 2):
        for route in (TEACHER, STUDENT):
            plan = model.sample_plan(feats, k_star=k_star, route=route)
            assert (plan.k_star, plan.route) == (k_star, route)
            assert [m is not None for m in plan.masks] == [k_star == 1, k_star == 2]  # the fixed k* gets the mask
    torch.manual_seed(3)
    drawn = model.sample_plan(feats)
    torch.manual_seed(3)
    with_fixed_route = model.sample_plan(feats, route=drawn.route)
    assert with_fixed_route.k_star == drawn.k_star
    for kw, match in [(dict(k_star=3), 'k_star must be in 1..2'), (dict(k_star=True), 'k_star'),
                      (dict(route=2), 'route must be')]:
        with pytest.raises(ValueError, match=match):
            model.sample_plan(feats, **kw)
    chained = build(tmp_path, name='chained', bpm_mode='chained', **POS)
    with pytest.raises(ValueError, match='only be fixed with bpm_mode single'):
        chained.sample_plan(feats, k_star=1)


# ---------------------------------------------------------------------------- runner consistency
@pytest.mark.parametrize('pair', ['edsr', 'swinir'])
def test_routes_reproduce_network_outputs_from_their_own_features(tmp_path, pair):
    if pair == 'edsr':
        model = build(tmp_path, **POS)
    else:
        model = build(tmp_path, teacher=swinir(16, 3), student=swinir(8, 2), positions_t=[0, 2],
                      positions_s=[0, 1])
    model.net_g.eval()  # SwinIR stochastic depth off for the equality check
    lq = random_batch(size=8, seed=2)['lq']
    y_t, feats_t, ctx_t = model.teacher_pass(lq)
    with model.taps_s.capture() as taps:
        y_s = model.net_g(lq)
    path = MiPKDPath((model.runner_t, model.runner_s), (ctx_t, model.student_context(taps[0], lq)))
    with torch.no_grad():
        assert torch.allclose(y_t, model.net_t(lq), atol=1e-6)
        for k in (1, 2):
            assert torch.allclose(path.finish(TEACHER, k, feats_t[k - 1]), y_t, atol=1e-6)
            assert torch.allclose(path.finish(STUDENT, k, taps[k]), y_s, atol=1e-6)
        assert torch.allclose(path.stage(TEACHER, 2, feats_t[0]), feats_t[1], atol=1e-6)
        for route in (TEACHER, STUDENT):  # every route and k*: HR output shape
            plan = fixed_plan(model, lq, 'single', k_star=1, route=route)
            out = model.bank(feats_t, taps[1:], plan, path)
            assert out['y_mix'].shape == y_t.shape


# ---------------------------------------------------------------------------- gradients
def grads(term, params):
    gs = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
    return sum(0.0 if g is None else g.abs().sum().item() for g in gs)


@pytest.mark.parametrize('route', [TEACHER, STUDENT])
def test_gradients_reach_student_and_mixers_never_teacher(tmp_path, route):
    model = build(tmp_path, ae_student=True, **POS)
    model.feed_data(random_batch(size=8, seed=1))
    plan = fixed_plan(model, model.lq, 'single', k_star=1, route=route)
    force_plan(model, plan)
    losses = model.compute_losses(1)
    student = list(model.net_g.parameters())
    mx = model.bank.mixers[0]  # position k* = 1
    part = {n: list(getattr(mx, n).parameters()) for n in ('enc_t', 'enc_s', 'dec', 'dec_s')}
    g = {term: {n: grads(losses[term], p) for n, p in [('student', student), *part.items()]}
         for term in ('l_fpm', 'l_ae', 'l_ae_s', 'l_bpm')}
    assert all(g['l_fpm'][n] > 0 for n in ('student', 'enc_t', 'enc_s', 'dec')) and g['l_fpm']['dec_s'] == 0
    assert g['l_ae']['enc_t'] > 0 and g['l_ae']['dec'] > 0
    assert g['l_ae']['student'] == 0 and g['l_ae']['enc_s'] == 0
    assert g['l_ae_s']['enc_s'] > 0 and g['l_ae_s']['dec_s'] > 0 and g['l_ae_s']['student'] == 0
    assert g['l_bpm']['student'] > 0 and g['l_bpm']['enc_s'] > 0 and g['l_bpm']['enc_t'] > 0
    if route == TEACHER:  # through the frozen teacher's blocks (autograd on)
        assert g['l_bpm']['dec'] > 0 and g['l_bpm']['dec_s'] == 0
    else:
        assert g['l_bpm']['dec_s'] > 0 and g['l_bpm']['dec'] == 0
    assert all(not p.requires_grad for p in model.net_t.parameters())
    model.total_loss(losses, 1).backward()
    assert all(p.grad is None for p in model.net_t.parameters())


# ---------------------------------------------------------------------------- compression types
@pytest.mark.parametrize('teacher, student, extra', [
    (edsr(16, 4), edsr(8, 4), {}),  # width only; default positions (K = 4)
    (edsr(16, 4), edsr(8, 4), dict(encoder='shared', enc_type='mlp', student_adapter='conv1x1', mask_type='spatial')),
    (edsr(16, 4), edsr(16, 2), dict(bpm_mode='chained', **POS)),  # depth only
    (edsr(16, 4), edsr(16, 2), dict(encoder='none', student_adapter='shared', mask_type='channel', **POS)),
], ids=['width', 'width-shared-mlp', 'depth-chained', 'depth-none-shared'])
def test_width_and_depth_compression_train(tmp_path, teacher, student, extra):
    model = build(tmp_path, teacher=teacher, student=student, **extra)
    if not extra:
        assert model.positions_t == model.positions_s == [0, 1, 2, 3]
    t_before = {k: v.clone() for k, v in model.net_t.state_dict().items()}
    s_before = [p.detach().clone() for p in model.net_g.parameters()]
    a_before = [p.detach().clone() for p in model.net_aux.parameters()]
    routes = set()
    for it in range(1, 4):
        model.feed_data(random_batch(size=8, seed=it))
        model.optimize_parameters(it)
        assert {'l_pix', 'l_kd', 'l_fpm', 'l_ae', 'l_bpm'} <= set(model.log_dict)
        assert all(torch.isfinite(torch.tensor(v)) for v in model.log_dict.values())
        routes.add(model.last_plan.route if model.last_plan.routes is None else tuple(model.last_plan.routes))
    assert all(not torch.equal(a, p) for a, p in zip(s_before, model.net_g.parameters()))
    assert sum(not torch.equal(a, p) for a, p in zip(a_before, model.net_aux.parameters())) > len(a_before) // 2
    assert all(torch.equal(v, model.net_t.state_dict()[k]) for k, v in t_before.items())


def test_default_positions():
    assert default_positions(32, 4) == [7, 15, 23, 31] and default_positions(16, 4) == [3, 7, 11, 15]
    assert default_positions(10, 4) == [1, 4, 6, 9]


# ---------------------------------------------------------------------------- options
@pytest.mark.parametrize('kw, match', [
    (dict(mask_ratio=0.5), r"Unknown option key\(s\) \['mask_ratio'\].*valid keys: \['ae_student'"),
    (dict(enc_type='transformer'), r"enc_type: invalid value 'transformer'; valid: \['cnn', 'mlp'\]"),
    (dict(mask_prob=1.5), 'probability in'),
    (dict(enc_layers=0), 'enc_layers'),
    (dict(positions_t=[1, 3], positions_s=[1]), 'same length'),
    (dict(positions_t=[3, 1], positions_s=[0, 1]), 'strictly increasing'),
    (dict(positions_t=[1, 9], positions_s=[0, 1]), 'out of range'),
    (dict(positions_t=[1], ), 'give both'),
    (dict(student_adapter='shared', **POS), 'needs C_T = C_S'),
    (dict(encoder='none', latent_dim=4, **POS), 'latent_dim must be'),
])
def test_bad_options_raise(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        build(tmp_path, **kw)


def test_option_forms_and_distributed_guard(tmp_path):
    model = build(tmp_path, positions_t=['body.1', -1], positions_s=['body.0', '1'])
    assert model.positions_t == [1, 3] and model.positions_s == [0, 1]
    assert set(MIPKD_OPT_KEYS) == set(MiPKDOptions.__dataclass_fields__)
    opt = mipkd_opt(tmp_path, name='dist', **POS)
    opt.update(is_train=True, dist=True, find_unused_parameters=False)
    with pytest.raises(ValueError, match='find_unused_parameters: true'):
        MiPKDModel(opt)
    model = build_model_from_opt(mipkd_opt(tmp_path, name='infer', **POS), tmp_path, is_train=False)
    assert model.net_aux is None and not model.teachers  # inference: student only
    model.feed_data(random_batch(size=8))
    model.test()
    assert model.output.shape == (2, 3, 16, 16)
    opt = mipkd_opt(tmp_path, name='cached', **POS)
    opt['train']['use_cached_targets'] = True
    with pytest.raises(ValueError, match='use_cached_targets'):
        build_model_from_opt(opt, tmp_path)


# ---------------------------------------------------------------------------- real runs
@pytest.mark.slow
def test_train_pipeline_edsr_then_resume_restores_mixers(workdir, demo_data, monkeypatch):
    name = 'mipkd_edsr'
    opt = mipkd_opt(workdir, name=name, teacher=edsr(16, 4), student=edsr(8, 2), **POS)
    opt['datasets'] = train_opt(name, demo_data, None)['datasets']
    opt['train']['total_iter'] = 2
    run_train(opt, workdir)
    saved_aux = torch.load(model_file(workdir, name, 'net_aux', 2))['params']
    state = torch.load(osp.join(experiment_dir(workdir, name), 'training_states', '2.state'), weights_only=False)
    snaps = []
    original = MiPKDModel.resume_training

    def spy(self, resume_state):
        original(self, resume_state)
        snaps.append(({k: v.clone() for k, v in self.bank.state_dict().items()},
                      copy.deepcopy(self.optimizer_g.state_dict())))
    logs = []
    original_log = MiPKDModel.get_current_log
    monkeypatch.setattr(MiPKDModel, 'resume_training', spy)
    monkeypatch.setattr(MiPKDModel, 'get_current_log', lambda self: logs.append(original_log(self)) or logs[-1])
    opt['train']['total_iter'] = 4
    run_train(opt, workdir, '--auto_resume')
    bank_state, optim_state = snaps[0]
    assert set(bank_state) == set(saved_aux) and all(torch.equal(bank_state[k], v) for k, v in saved_aux.items())
    assert len(optim_state['param_groups']) == 2 and len(optim_state['param_groups'][1]['params']) == len(saved_aux)
    saved_moments = state['optimizers'][0]['state']
    aux_idx = [i for i in optim_state['param_groups'][1]['params'] if i in saved_moments]
    assert aux_idx and all(i in optim_state['state'] for i in aux_idx)  # mixers were optimised, then restored
    for idx in aux_idx:
        for key in ('exp_avg', 'exp_avg_sq', 'step'):
            assert torch.equal(optim_state['state'][idx][key], saved_moments[idx][key])
    for it in (4, 'latest'):
        assert osp.isfile(model_file(workdir, name, 'net_aux', it))
    assert list(logs[-1]) == ['l_pix', 'l_kd', 'l_fpm', 'l_ae', 'l_bpm'] and len(logs) == 2  # iterations 3, 4


@pytest.mark.slow
def test_train_pipeline_tiny_swinir(workdir, demo_data):
    name = 'mipkd_swinir'
    opt = mipkd_opt(workdir, name=name, teacher=swinir(16, 3), student=swinir(8, 2), positions_t=[0, 2],
                    positions_s=[0, 1])
    opt['datasets'] = train_opt(name, demo_data, None)['datasets']
    opt['train']['total_iter'] = 2
    run_train(opt, workdir)
    assert osp.isfile(model_file(workdir, name, 'net_aux', 'latest'))
    ckpt = torch.load(model_file(workdir, name, 'net_g', 'latest'))
    assert set(ckpt) == {'params', 'params_ema'}


# single, path_prob 1: every iteration runs bare student stages after the wrapped forward, with k*
# (hence the unused mixers) differing between ranks; chained, 0.5: 12 route draws mix both networks.
@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.ddp
@pytest.mark.parametrize('mode, path_prob', [('single', 1.0), ('chained', 0.5)])
def test_ddp_two_process_cpu_identical_student_and_mixers(workdir, demo_data, mode, path_prob):
    name = f'mipkd_ddp_{mode}'
    opt = mipkd_opt(workdir, name=name, bpm_mode=mode, path_prob=path_prob, ae_student=True, **POS)
    opt['datasets'] = train_opt(name, demo_data, None)['datasets']
    opt['train'].update(total_iter=3)
    opt['logger']['save_checkpoint_freq'] = 100
    result = run_ddp_check(opt, workdir)
    rank0, rank1 = result['checksums']
    assert result['world_size'] == 2 and len(rank0) == 2  # student + mixer bank
    assert rank0 == rank1
    assert {'l_fpm', 'l_ae', 'l_ae_s', 'l_bpm'} <= set(result['log'])


# ---------------------------------------------------------------------------- shipped YAMLs
def _units(net_opt):
    return {'EDSR': lambda o: o['num_block'], 'RCAN': lambda o: o['num_group'],
            'SwinIR': lambda o: len(o['depths'])}[net_opt['type']](net_opt)


@pytest.mark.subprocess
def test_shipped_yamls_are_current_and_valid():
    proc = subprocess.run([sys.executable, osp.join(ROOT, 'scripts', 'make_options.py'), '--method', 'mipkd',
                           '--check'], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    files = sorted(glob.glob(osp.join(ROOT, 'options', 'train', 'MiPKD', '*.yml')))
    assert len(files) == 18 and len(glob.glob(osp.join(ROOT, 'options', 'test', 'MiPKD', '*.yml'))) == 18
    lite = [p for p in files if p.endswith('_lite.yml')]
    assert len(lite) == 3  # the cheaper preset (docs/mipkd.md): latent_dim = student width, MLP encoders
    for path in lite:
        opt = yaml.safe_load(open(path))
        assert opt['train']['mipkd_opt']['latent_dim'] == opt['network_g']['num_feat'], path
        assert opt['train']['mipkd_opt']['enc_type'] == 'mlp', path
    for path in files:
        opt = yaml.safe_load(open(path))
        assert opt['model_type'] == 'MiPKDModel' and opt['find_unused_parameters'] is True
        o = MiPKDOptions.from_dict(opt['train']['mipkd_opt'])
        assert len(o.positions_t) == len(o.positions_s) >= 2
        assert max(o.positions_t) < _units(opt['network_t']) and max(o.positions_s) < _units(opt['network_g'])
        assert opt['train']['block_opt']['loss_weight'] == 0.1 and opt['train']['feat_opt']['loss_weight'] == 1.0
