"""DUKDModel: loss bookkeeping, frozen teacher, two-step quirk, real training runs, CPU DDP (dukd.md §12)."""
import dataclasses
import glob
import os.path as osp
import types
from collections import OrderedDict

import pytest
import torch
import yaml
from basicsr.archs import build_network
from basicsr.utils.matlab_functions import imresize
from basicsr.utils.registry import MODEL_REGISTRY

from kdsr_plugins.core.teachers import parse_teacher_specs
from kdsr_plugins.methods.dukd.dukd_model import DUKDModel
from kdsr_plugins.methods.dukd.invertible_aug import AugPlan, all_subsets
from kdsr_plugins.methods.dukd.options import DUKDOptions
from kdsr_testutils import (
    ROOT,
    build_model_from_opt,
    edsr,
    model_file,
    random_batch,
    reference_augment,
    run_ddp_check,
    run_train,
    save_random_net,
    train_opt,
)
from kdsr_testutils import swinir as tiny_swinir

SUBSETS = list(all_subsets())
W_PIX, W_KD = 5.0, 0.5


# ---------------------------------------------------------------------------------------------
# Independent reference implementations
# ---------------------------------------------------------------------------------------------



def ref_invert(y, subset, official=False):
    """F⁻¹: exact = reverse order t, v, h, i; official = forward order again."""
    for op in ('ihvt' if official else 'tvhi'):
        if op in subset:
            y = reference_augment(y, op)
    return y


def ref_student(net, x, subsets=None, official=False):
    """Per-sample F⁻¹(net(F(x_k))) (or net(x) when ``subsets`` is None)."""
    if subsets is None:
        return net(x)
    return torch.cat([ref_invert(net(reference_augment(x[k:k + 1], s)), s, official) for k, s in enumerate(subsets)])


def ref_tiles(gt, positions, patch):
    """Tile-major zoom-in batch: tiles[k*B + b] = crop k of image b."""
    return torch.cat([gt[:, :, top:top + patch, left:left + patch] for top, left in positions], dim=0)


def ref_zoom_out(lq, scale):
    return torch.stack([imresize(img, 1 / scale) for img in lq], dim=0)


def l1(a, b):
    return (a - b).abs().mean()


def fixed_plans(offsets):
    """A ``draw_plan`` replacement cycling through all 16 subsets (group-specific offset)."""
    def draw_plan(num_samples, group, device):
        off = offsets[group]
        return AugPlan.from_subsets([SUBSETS[(off + k) % 16] for k in range(num_samples)], device=device)
    return draw_plan


# ---------------------------------------------------------------------------------------------
# Model construction helpers
# ---------------------------------------------------------------------------------------------

def swinir(scale, embed_dim=12, depths=(1,), window=8, img_size=16, drop_path_rate=0.1, upsampler='pixelshuffle'):
    """The shared tiny SwinIR with DUKD's defaults here: window 8, stochastic depth 0.1."""
    return tiny_swinir(scale, embed_dim, depths, window, img_size, upsampler, drop_path_rate=drop_path_rate)


def dukd_opt(root, scale=2, dukd=None, noisy=None, teacher=None, student=None, gt_size=None, data_root=None,
             **train_kw):
    """Tiny DUKD option dict (w_pix 5, w_kd 0.5); ``train_kw`` go into the ``train`` block."""
    teacher = teacher or edsr(16, 1, scale)
    ckpt = save_random_net(teacher, osp.join(str(root), f'teacher_x{scale}_{teacher["type"]}.pth'), seed=1)
    extra = {'pixel_opt': {'type': 'L1Loss', 'loss_weight': W_PIX, 'reduction': 'mean'},
             'kd_opt': {'type': 'L1Loss', 'loss_weight': W_KD, 'reduction': 'mean'},
             'dukd_opt': dict(dukd or {})}
    if noisy is not None:
        extra['noisy'] = noisy
    extra.update(train_kw)
    opt = train_opt('dukd', data_root or str(root), ckpt, model_type='DUKDModel', scale=scale,
                    student=student or edsr(8, 1, scale), teacher=teacher, **extra)
    opt['datasets']['train']['gt_size'] = gt_size or 16 * scale
    return opt


def build(root, **kw):
    return build_model_from_opt(dukd_opt(root, **kw), root)


def load_teacher(model):
    spec = model.teacher_specs[0]
    net = build_network(dict(spec.network_opt))
    net.load_state_dict(torch.load(spec.pretrain)['params'])
    return net.eval()


def adam_steps(model):
    first = model.optimizer_g.param_groups[0]['params'][0]
    return int(model.optimizer_g.state[first]['step'])


# ---------------------------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------------------------

def test_registered_and_options(tmp_path):
    assert 'DUKDModel' in MODEL_REGISTRY
    model = build(tmp_path, dukd={'n_gt_sub': [2], 'zoom_out': True}, noisy={'prob': 0.3})
    assert isinstance(model, DUKDModel) and model.net_aux is None
    assert model.dukd.n_gt_sub == 2 and model.dukd.zoom_out and model.dukd.update_mode == 'single_step'
    assert model.aug is not None and model.aug.p == 0.3 and model.aug.inverse == 'exact'
    assert build(tmp_path).aug is None  # no noisy block: label consistency off


@pytest.mark.parametrize('change, match', [
    (dict(dukd={'zoom_outt': True}), r'Unknown key.*zoom_outt.*valid keys'),
    (dict(kd_opt=None), 'kd_opt'),
    (dict(scale=4, gt_size=42), 'gt_size 42 is not divisible by scale 4'),
    (dict(scale=4, gt_size=4 * 10, dukd={'zoom_out': True}), 'LR patch size 10 is not divisible by scale 4'),
    (dict(student=swinir(2), gt_size=2 * 12), r'LR patch / zoom-in tile size 12 .* window size 8 of network_g'),
    (dict(teacher=swinir(2, window=16), gt_size=2 * 16, dukd={'zoom_out': True}),
     r"zoom-out input size 8 .* window size 16 of teacher 't'"),
])
def test_bad_options_fail_at_init(tmp_path, change, match):
    with pytest.raises(ValueError, match=match):
        build(tmp_path, **change)


def test_one_teacher_only(tmp_path):
    opt = dukd_opt(tmp_path)
    ckpt = opt['path'].pop('pretrain_network_t')
    opt['teachers'] = [{'name': 'a', 'network': opt.pop('network_t'), 'pretrain': ckpt},
                       {'name': 'b', 'network': edsr(16, 1, 2), 'pretrain': ckpt}]
    with pytest.raises(ValueError, match='one teacher'):
        build_model_from_opt(opt, tmp_path)


# ---------------------------------------------------------------------------------------------
# Loss bookkeeping
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize('scale, n, lc_on, crop, resize', [
    (4, 2, ['zoom_in'], 'grid', 'matlab'),
    (2, 3, ['zoom_in', 'zoom_out', 'original'], 'random', 'torch'),
])
def test_total_loss_equals_hand_assembled_sum(tmp_path, scale, n, lc_on, crop, resize):
    patch = 8
    model = build(tmp_path, scale=scale, gt_size=patch * scale, noisy={'prob': 0.3},
                  dukd={'n_gt_sub': n, 'zoom_out': True, 'lc_on': lc_on, 'zoom_in_crop': crop,
                        'zoom_out_resize': resize})
    model.draw_plan = fixed_plans({'original': 3, 'zoom_in': 7, 'zoom_out': 11})
    model.feed_data(random_batch(scale=scale, batch=2, size=patch, seed=4))
    losses = model.compute_losses(1)
    total = model.total_loss(losses, 1)

    lq, gt = model.lq, model.gt
    student, teacher = model.get_bare_model(model.net_g), load_teacher(model)
    positions = model.last_draws['zoom_in_positions']
    assert len(positions) == n
    if crop == 'grid':
        assert all(top % patch == 0 and left % patch == 0 for top, left in positions)
        assert len(set(positions)) == n
    plans = {g: fixed_plans({'original': 3, 'zoom_in': 7, 'zoom_out': 11})(b, g, 'cpu').subsets()
             for g, b in (('original', 2), ('zoom_in', 2 * n), ('zoom_out', 2))}
    for group in ('original', 'zoom_in', 'zoom_out'):
        assert (f'plan_{group}' in model.last_draws) == (group in lc_on)
    with torch.no_grad():
        z = ref_tiles(gt, positions, patch)
        x_down = ref_zoom_out(lq, scale)
        assert x_down.shape[-1] == patch // scale
        o = ref_student(student, lq, plans['original'] if 'original' in lc_on else None)
        o_z = ref_student(student, z, plans['zoom_in'])
        o_d = ref_student(student, x_down, plans['zoom_out'] if 'zoom_out' in lc_on else None)
        expected = OrderedDict([
            ('l_pix', W_PIX * l1(o, gt)),
            ('l_kd', W_KD * l1(o, teacher(lq))),
            ('l_zoom_in', W_KD * l1(o_z, teacher(z))),
            ('l_zoom_out_pix', W_PIX * l1(o_d, lq)),
            ('l_zoom_out_kd', W_KD * l1(o_d, teacher(x_down))),
        ])
    assert list(losses) == list(expected)
    for key, value in expected.items():
        assert losses[key].item() == pytest.approx(value.item(), rel=1e-5, abs=1e-7), key
        assert losses[key].requires_grad, key
    assert total.item() == pytest.approx(sum(v.item() for v in expected.values()), rel=1e-5)
    assert total.requires_grad


def test_official_inverse_leaves_ht_samples_rotated(tmp_path):
    model = build(tmp_path, noisy={'prob': 0.3}, dukd={'lc_inverse': 'official'})
    model.draw_plan = lambda num, group, device: AugPlan.from_subsets(['ht'] * num, device=device)
    model.feed_data(random_batch(scale=2, batch=2, size=8, seed=2))
    losses = model.compute_losses(1)
    student, teacher = model.get_bare_model(model.net_g), load_teacher(model)
    with torch.no_grad():
        z = ref_tiles(model.gt, model.last_draws['zoom_in_positions'], 8)
        exact = ref_student(student, z, ['ht'] * z.size(0))
        official = ref_student(student, z, ['ht'] * z.size(0), official=True)
        assert torch.allclose(official, exact.flip(-2, -1), atol=1e-6)
        expected = W_KD * l1(official, teacher(z))
    assert list(losses) == ['l_pix', 'l_kd', 'l_zoom_in']
    assert losses['l_zoom_in'].item() == pytest.approx(expected.item(), rel=1e-5)


def test_noisy_prob_zero_equals_absent(tmp_path):
    batch = random_batch(scale=2, batch=2, size=8, seed=5)
    results, weights = [], None
    for noisy in (None, {'prob': 0.0}):
        model = build(tmp_path, noisy=noisy, dukd={'zoom_out': True})
        if weights is None:
            weights = model.net_g.state_dict()
        model.net_g.load_state_dict(weights)
        model.feed_data(batch)
        torch.manual_seed(123)
        results.append({k: v.item() for k, v in model.compute_losses(1).items()})
        if noisy is None:
            assert 'plan_zoom_in' not in model.last_draws
        else:
            assert not model.last_draws['plan_zoom_in'].any()
    assert results[0] == results[1]


def test_every_term_trains_the_student_and_teacher_gets_nothing(tmp_path):
    model = build(tmp_path, noisy={'prob': 0.5}, dukd={'zoom_out': True, 'lc_on': ['zoom_in', 'original']})
    teacher_before = {k: v.clone() for k, v in model.net_t.state_dict().items()}
    model.feed_data(random_batch(scale=2, batch=2, size=8, seed=6))
    losses = model.compute_losses(1)
    assert list(losses) == ['l_pix', 'l_kd', 'l_zoom_in', 'l_zoom_out_pix', 'l_zoom_out_kd']
    for key, term in losses.items():
        model.optimizer_g.zero_grad(set_to_none=True)
        term.backward(retain_graph=True)
        grads = [p.grad for p in model.net_g.parameters() if p.grad is not None]
        assert grads and any(g.abs().sum() > 0 for g in grads), key
    assert all(p.grad is None and not p.requires_grad for p in model.net_t.parameters())

    for it, mode in enumerate(('single_step', 'official_two_step'), start=2):
        model.dukd = dataclasses.replace(model.dukd, update_mode=mode)
        model.net_t.train()  # a stray .train() must not survive into the step
        model.feed_data(random_batch(scale=2, batch=2, size=8, seed=it))
        model.optimize_parameters(it)
        assert not model.net_t.training
        assert all(p.grad is None for p in model.net_t.parameters())
    for k, v in model.net_t.state_dict().items():
        assert torch.equal(v, teacher_before[k]), k


def test_swinir_teacher_deterministic_unless_train_mode_quirk(tmp_path):
    teacher = swinir(2, depths=(2, 2), window=4, img_size=8, drop_path_rate=0.5)
    x = torch.rand(2, 3, 8, 8)
    for quirk in (False, True):
        model = build(tmp_path, teacher=teacher, gt_size=16, teacher_train_mode=quirk)
        model.set_teacher_modes()
        torch.manual_seed(0)
        a = model.teacher_forward(x)
        b = model.teacher_forward(x)
        assert model.net_t.training is quirk
        assert torch.equal(a, b) == (not quirk)  # stochastic depth only in the quirk mode
        assert not a.requires_grad


# ---------------------------------------------------------------------------------------------
# Update modes
# ---------------------------------------------------------------------------------------------

def _spy(model):
    calls = {'step': [], 'zero_grad': 0, 'ema': 0}
    step, zero_grad, ema = model.optimizer_g.step, model.optimizer_g.zero_grad, model.model_ema

    def spy_step(*a, **k):
        params = list(model.net_g.parameters())
        calls['step'].append(([p.detach().clone() for p in params], [p.grad.detach().clone() for p in params]))
        return step(*a, **k)

    def spy_zero_grad(*a, **k):
        calls['zero_grad'] += 1
        return zero_grad(*a, **k)

    def spy_ema(*a, **k):
        calls['ema'] += 1
        return ema(*a, **k)
    model.optimizer_g.step, model.optimizer_g.zero_grad, model.model_ema = spy_step, spy_zero_grad, spy_ema
    return calls


def test_single_step_one_adam_step_per_iteration(tmp_path):
    model = build(tmp_path, noisy={'prob': 0.3}, dukd={'zoom_out': True})
    calls = _spy(model)
    for it in (1, 2):
        model.feed_data(random_batch(scale=2, batch=2, size=8, seed=it))
        model.optimize_parameters(it)
        assert adam_steps(model) == it
    assert len(calls['step']) == 2 and calls['zero_grad'] == 2 and calls['ema'] == 2
    assert set(model.log_dict) == {'l_pix', 'l_kd', 'l_zoom_in', 'l_zoom_out_pix', 'l_zoom_out_kd'}


def test_official_two_step_update(tmp_path):
    model = build(tmp_path, noisy={'prob': 0.3}, dukd={'zoom_out': True, 'update_mode': 'official_two_step'})
    model.draw_plan = fixed_plans({'zoom_in': 7})
    calls = _spy(model)
    for it in (1, 2):
        model.feed_data(random_batch(scale=2, batch=2, size=8, seed=it))
        model.optimize_parameters(it)
        assert adam_steps(model) == 2 * it  # two Adam steps (and bias-correction advances) per iteration
        assert calls['zero_grad'] == it and calls['ema'] == it
    assert len(calls['step']) == 4
    assert set(model.log_dict) == {'l_pix', 'l_kd', 'l_zoom_in', 'l_zoom_out_pix', 'l_zoom_out_kd'}

    # Last iteration: step #2 used grad(l_pix + l_kd at the old weights) + grad(upcycled terms at the new weights).
    (_, grads1), (params2, grads2) = calls['step'][2], calls['step'][3]
    student = build_network(dict(model.opt['network_g']))
    for p, v in zip(student.parameters(), params2):
        p.data.copy_(v)
    teacher = load_teacher(model)
    lq, gt = model.lq, model.gt
    z = ref_tiles(gt, model.last_draws['zoom_in_positions'], 8)
    x_down = ref_zoom_out(lq, 2)
    o_z = ref_student(student, z, model.last_draws['plan_zoom_in'].subsets())
    o_d = student(x_down)
    with torch.no_grad():
        t_z, t_d = teacher(z), teacher(x_down)
    second = W_KD * l1(o_z, t_z) + W_PIX * l1(o_d, lq) + W_KD * l1(o_d, t_d)
    g_second = torch.autograd.grad(second, list(student.parameters()))
    for g1, g2, gs in zip(grads1, grads2, g_second):
        assert torch.allclose(g2, g1 + gs, rtol=1e-4, atol=1e-6)
    assert any(g.abs().sum() > 0 for g in grads1)


# ---------------------------------------------------------------------------------------------
# Real training runs (train_pipeline on the demo LMDB)
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def spy_runs(monkeypatch):
    """Record each iteration's ``log_dict`` and each validation's metric results (in-process runs)."""
    record = {'logs': [], 'metrics': []}
    optimize, validate = DUKDModel.optimize_parameters, DUKDModel.nondist_validation

    def spy_optimize(self, current_iter):
        optimize(self, current_iter)
        record['logs'].append(dict(self.log_dict))

    def spy_validate(self, dataloader, current_iter, tb_logger, save_img):
        validate(self, dataloader, current_iter, tb_logger, save_img)
        record['metrics'].append(dict(self.metric_results))
    monkeypatch.setattr(DUKDModel, 'optimize_parameters', spy_optimize)
    monkeypatch.setattr(DUKDModel, 'nondist_validation', spy_validate)
    return record


def test_train_pipeline_edsr_x4_lr32(workdir, demo_data, spy_runs):
    opt = dukd_opt(workdir, scale=4, gt_size=128, data_root=demo_data, noisy={'prob': 0.3},
                   dukd={'n_gt_sub': [2], 'zoom_out': True, 'lc_on': ['zoom_in', 'zoom_out', 'original']})
    opt.update(name='dukd_edsr_x4')  # validation once, at the end of training
    opt['train']['total_iter'] = 2
    run_train(opt, workdir)
    assert len(spy_runs['logs']) == 2
    assert list(spy_runs['logs'][-1]) == ['l_pix', 'l_kd', 'l_zoom_in', 'l_zoom_out_pix', 'l_zoom_out_kd']
    assert all(torch.isfinite(torch.tensor(list(log.values()))).all() for log in spy_runs['logs'])
    assert len(spy_runs['metrics']) == 1 and spy_runs['metrics'][0]['psnr'] > 0
    ckpt = torch.load(model_file(workdir, 'dukd_edsr_x4', 'net_g', 'latest'))
    assert set(ckpt) == {'params', 'params_ema'}


def test_train_pipeline_swinir_student_validates_non_window_multiple(workdir, demo_data, spy_runs):
    # pixelshuffledirect: the classical upsampler's fixed 64-channel convs at 128x128 dominate CPU time
    student = swinir(4, embed_dim=12, depths=(1,), window=8, img_size=32, upsampler='pixelshuffledirect')
    opt = dukd_opt(workdir, scale=4, gt_size=128, data_root=demo_data, student=student, noisy={'prob': 0.3},
                   dukd={'zoom_out': True, 'update_mode': 'official_two_step'})
    sizes = [line.split()[1] for line in open(osp.join(demo_data, 'val_LR_X4.lmdb', 'meta_info.txt'))]
    dims = [int(v) for s in sizes for v in s.strip('()').split(',')[:2]]
    assert any(d % 8 for d in dims), dims  # the demo val set is not a window multiple
    opt.update(name='dukd_swinir_x4')  # validation once, at the end of training
    opt['train']['total_iter'] = 2
    run_train(opt, workdir)
    assert len(spy_runs['logs']) == 2
    assert list(spy_runs['logs'][-1]) == ['l_pix', 'l_kd', 'l_zoom_in', 'l_zoom_out_pix', 'l_zoom_out_kd']
    assert len(spy_runs['metrics']) == 1 and spy_runs['metrics'][0]['psnr'] > 0
    assert osp.isfile(model_file(workdir, 'dukd_swinir_x4', 'net_g', 'latest'))


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.ddp
def test_ddp_two_process_cpu_identical_parameters(workdir, demo_data):
    """Default single step; the student wrapper runs 3 times per backward (all groups consistent)."""
    name = 'dukd_ddp'
    opt = dukd_opt(workdir, scale=2, gt_size=32, data_root=demo_data, noisy={'prob': 0.3},
                   dukd={'zoom_out': True, 'lc_on': ['zoom_in', 'zoom_out', 'original']})
    opt.update(name=name, find_unused_parameters=False)
    opt['logger']['save_checkpoint_freq'] = 100
    del opt['val'], opt['datasets']['val']  # keep the subprocess run short
    opt['train']['total_iter'] = 3
    result = run_ddp_check(opt, workdir)
    rank0, rank1 = result['checksums']
    assert rank0 == rank1
    assert set(result['log']) == {'l_pix', 'l_kd', 'l_zoom_in', 'l_zoom_out_pix', 'l_zoom_out_kd'}


# ---------------------------------------------------------------------------------------------
# Shipped option YAMLs (dukd.md §5.1)
# ---------------------------------------------------------------------------------------------

#: (family, scale) -> w_pix, w_kd, n_gt_sub, zoom_out, noisy prob (None = no block); public configs.
PUBLIC = {('edsr', 2): (5.0, 1.0, 2, True, 0.3), ('edsr', 3): (5.0, 1.0, 1, True, 0.3),
          ('edsr', 4): (5.0, 1.0, 1, True, 0.3), ('rcan', 2): (1.0, 1.0, 1, False, None),
          ('rcan', 3): (2.0, 1.0, 1, True, 0.3), ('rcan', 4): (1.0, 1.0, 1, False, 0.0),
          ('swinir', 2): (5.0, 1.0, 1, False, 0.3), ('swinir', 3): (5.0, 1.0, 1, False, 0.3),
          ('swinir', 4): (5.0, 1.0, 1, False, 0.3)}


def test_shipped_yamls_match_public_configs():
    root = ROOT
    files = sorted(glob.glob(osp.join(root, 'options', 'train', 'DUKD', 'train_DUKD_*.yml')))
    assert len(files) == 18
    for path in files:
        opt = yaml.safe_load(open(path))
        family, scale = osp.basename(path).split('_')[2].lower(), int(opt['scale'])
        w_pix, w_kd, n, zoom_out, prob = PUBLIC[(family, scale)]
        o = DUKDOptions.from_train_opt(opt['train'])
        assert (o.w_pix, o.w_kd, o.n_gt_sub, o.zoom_out, o.noisy_prob) == (w_pix, w_kd, n, zoom_out, prob), path
        assert (o.update_mode, o.lc_inverse, o.lc_on) == ('single_step', 'exact', ('zoom_in',)), path
        assert opt['model_type'] == 'DUKDModel' and opt['find_unused_parameters'] is False
        train_set = opt['datasets']['train']
        assert train_set['gt_size'] == 48 * scale and train_set['batch_size_per_gpu'] == 16
        assert opt['train']['ema_decay'] == 0.999 and opt['manual_seed'] == 10
        if family == 'swinir':
            assert opt['network_g']['embed_dim'] == 60 and opt['network_t']['embed_dim'] == 180
        if (family, scale) == ('edsr', 4):
            assert opt['path']['strict_load_g'] is False
            assert 'DUKD_EDSR_x2c256b32_c64b32' in opt['path']['pretrain_network_g']
        fake = types.SimpleNamespace(opt=opt, scale=scale, dukd=o, teacher_specs=parse_teacher_specs(opt))
        DUKDModel.check_patch_sizes(fake)  # every input size valid for the nets (SwinIR window 8)
    tests = glob.glob(osp.join(root, 'options', 'test', 'DUKD', 'test_DUKD_*.yml'))
    assert len(tests) == 9
