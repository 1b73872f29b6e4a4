"""FeatureKDModel: option forms, taps and probes, loss values, gradients, pipeline, resume, DDP."""
import copy
import glob
import logging
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
import yaml
from basicsr.archs import build_network
from basicsr.losses import build_loss
from basicsr.utils.registry import MODEL_REGISTRY

from kdsr_plugins.core.checkpoints import CheckpointError
from kdsr_plugins.core.taps import TapError
from kdsr_plugins.methods.feature_kd.feature_kd_model import FeatureKDModel, parse_feature_kd_options
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
    write_yaml,
)

TAPS = ['conv_first', 0, 1, 'conv_after_body']
LOSSES = {
    'fitnet': {'type': 'KDFitNetLoss', 'loss_weight': 10.0, 'distance': 'l1'},
    'at': {'type': 'KDAttentionLoss', 'loss_weight': 10.0, 'mode': 'sr_l1'},
    'fakd': {'type': 'KDAffinityLoss', 'loss_weight': 10.0},
    'rkd': {'type': 'KDRelationLoss', 'loss_weight': 1.0},
}


def fkd_opt(data_root, ckpt, loss='fitnet', name='fkd', taps_t=TAPS, taps_s=TAPS, adapter=None, **kw):
    feature_kd = {'positions_t': list(taps_t), 'positions_s': list(taps_s)}
    if adapter is not None:
        feature_kd['adapter'] = adapter
    train_extra = {'feature_kd': feature_kd, 'feature_opt': dict(LOSSES[loss])}
    train_extra.update(kw.pop('train_extra', {}))
    return train_opt(name, str(data_root), ckpt, model_type='FeatureKDModel', **kw, **train_extra)


def build(tmp_path, opt, is_train=True):
    return build_model_from_opt(opt, tmp_path, is_train=is_train)


def edsr_taps(net, x, taps):
    """EDSR features computed by hand from the submodules (no hooks)."""
    h0 = net.conv_first((x - net.mean.type_as(x)) * net.img_range)
    feats, f = {'conv_first': h0}, h0
    for i, block in enumerate(net.body):
        f = block(f)
        feats[i] = f
    feats['conv_after_body'] = net.conv_after_body(f)
    return [feats[t] for t in taps]


def load_teacher(ckpt, net_opt=None):
    net = build_network(net_opt or edsr(16, 2))
    net.load_state_dict(torch.load(ckpt)['params'])
    return net.eval()


# ----------------------------------------------------------------------------- construction
@pytest.mark.parametrize('loss', list(LOSSES))
def test_model_built_from_yaml(tmp_path, teacher_ckpt, loss):
    assert 'FeatureKDModel' in MODEL_REGISTRY
    yml = write_yaml(fkd_opt(tmp_path, teacher_ckpt, loss), str(tmp_path / 'fkd.yml'))
    with open(yml) as f:
        opt = yaml.safe_load(f)
    model = build(tmp_path, opt)
    assert isinstance(model, FeatureKDModel)
    (term,) = model.feature_terms
    assert type(term.loss).__name__ == LOSSES[loss]['type'] and term.log_key == 'l_feat'
    assert term.pair_keys == ['l_feat_0', 'l_feat_1', 'l_feat_2', 'l_feat_3']
    assert term.channel_pairs == [(8, 16)] * 4
    assert model.net_t.training is False and model.net_g.training is True  # probe restored the modes
    if loss == 'fitnet':
        assert model.net_aux.banks['fitnet'].num_adapters == 4
        assert len(model.optimizer_g.param_groups) == 2
        aux_params = {id(p) for p in model.net_aux.parameters()}
        assert {id(p) for p in model.optimizer_g.param_groups[1]['params']} == aux_params
    else:
        assert model.net_aux is None and len(model.optimizer_g.param_groups) == 1


def test_probe_leaves_global_rng_untouched(tmp_path, teacher_ckpt):
    torch.manual_seed(123)
    build(tmp_path, fkd_opt(tmp_path, teacher_ckpt, 'at'))
    after_fkd = torch.rand(3)
    torch.manual_seed(123)
    build(tmp_path, train_opt('kd', str(tmp_path), teacher_ckpt))
    assert torch.equal(after_fkd, torch.rand(3))


@pytest.mark.parametrize('student, adapter, expected', [
    (edsr(16, 2), 'auto', 0), (edsr(16, 2), 'conv1x1', 4), (edsr(8, 2), 'auto', 4), (edsr(8, 2), 'conv1x1', 4)])
def test_adapter_policies(tmp_path, teacher_ckpt, student, adapter, expected):
    model = build(tmp_path, fkd_opt(tmp_path, teacher_ckpt, student=student, adapter=adapter))
    if expected == 0:
        assert model.net_aux is None and not model.feature_terms[0].adapted
    else:
        assert model.net_aux.banks['fitnet'].num_adapters == expected


def test_test_mode_builds_only_the_student(tmp_path, teacher_ckpt):
    model = build(tmp_path, fkd_opt(tmp_path, teacher_ckpt), is_train=False)
    assert isinstance(model, FeatureKDModel)
    assert not model.teachers and model.net_aux is None
    assert model.teacher_taps is None and model.student_taps is None and model.feature_terms == []
    # a shipped test YAML (teacher checkpoint paths are not needed in test mode)
    with open(osp.join(ROOT, 'options/test/FeatureKD/test_FitNet_EDSR_x4c256b32_c64b32.yml')) as f:
        opt = yaml.safe_load(f)
    assert opt['model_type'] == 'FeatureKDModel' and 'network_t' not in opt
    opt['path']['pretrain_network_g'] = None
    opt['num_gpu'] = 0  # parse_options would resolve 'auto'
    model = build(tmp_path, opt, is_train=False)
    assert not model.teachers and model.net_aux is None
    model.feed_data({'lq': torch.rand(1, 3, 6, 7)})
    model.test()
    assert tuple(model.output.shape) == (1, 3, 24, 28)


# ----------------------------------------------------------------------------- values and gradients
@pytest.mark.parametrize('loss', list(LOSSES))
def test_l_feat_equals_loss_on_hand_captured_features(tmp_path, teacher_ckpt, loss):
    taps_t, taps_s = ['conv_first', 1, 'conv_after_body'], ['conv_first', 0, 'conv_after_body']
    model = build(tmp_path, fkd_opt(tmp_path, teacher_ckpt, loss, taps_t=taps_t, taps_s=taps_s))
    model.feed_data(random_batch(batch=4, size=12, seed=5))
    losses = model.compute_losses(1)
    assert list(losses) == ['l_pix', 'l_kd', 'l_feat']

    teacher = load_teacher(teacher_ckpt)  # independent of the model's teacher and hooks
    with torch.no_grad():
        feats_t = edsr_taps(teacher, model.lq, taps_t)
        feats_s = edsr_taps(model.get_bare_model(model.net_g), model.lq, taps_s)
        if loss == 'fitnet':
            convs = [a.conv for a in model.net_aux.banks['fitnet'].adapters]
            feats_s = [F.conv2d(f, c.weight, c.bias) for f, c in zip(feats_s, convs)]
        reference = build_loss(LOSSES[loss])
        expected = reference.forward_terms(feats_s, feats_t, weighted=True)
    assert losses['l_feat'].item() == pytest.approx(sum(e.item() for e in expected), rel=1e-5)
    assert losses['l_feat'].item() > 0
    for i, value in enumerate(expected):
        assert model._pair_logs[f'l_feat_{i}'].item() == pytest.approx(value.item(), rel=1e-5)
    assert losses['l_feat'].requires_grad


@pytest.mark.slow
@pytest.mark.parametrize('loss', list(LOSSES))
def test_gradients_reach_student_and_adapter_never_teacher(tmp_path, teacher_ckpt, loss):
    model = build(tmp_path, fkd_opt(tmp_path, teacher_ckpt, loss))
    teacher_before = {k: v.clone() for k, v in model.net_t.state_dict().items()}
    model.feed_data(random_batch(batch=3, seed=2))
    model.compute_losses(1)['l_feat'].backward()  # the feature term alone
    student_grads = [p.grad for p in model.net_g.parameters() if p.grad is not None]
    assert student_grads and any(g.abs().sum() > 0 for g in student_grads)
    assert model.get_bare_model(model.net_g).conv_first.weight.grad.abs().sum() > 0
    if loss == 'fitnet':
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.net_aux.parameters())
    assert all(p.grad is None for p in model.net_t.parameters())
    model.optimize_parameters(2)
    assert all(p.grad is None for p in model.net_t.parameters())
    assert all(torch.equal(v, teacher_before[k]) for k, v in model.net_t.state_dict().items())
    assert set(model.log_dict) == {'l_pix', 'l_kd', 'l_feat', 'l_feat_0', 'l_feat_1', 'l_feat_2', 'l_feat_3'}
    assert model.log_dict['l_feat'] == pytest.approx(sum(model.log_dict[f'l_feat_{i}'] for i in range(4)), rel=1e-5)


@pytest.mark.slow
def test_list_form_terms_are_logged_separately(tmp_path, teacher_ckpt):
    terms = [{'positions_t': TAPS, 'positions_s': TAPS, 'loss': LOSSES['fitnet']},
             {'name': 'attn', 'positions': ['conv_first', 'conv_after_body'], 'loss': LOSSES['at']}]
    opt = train_opt('multi', str(tmp_path), teacher_ckpt, model_type='FeatureKDModel',
                    feature_kd={'terms': terms})
    model = build(tmp_path, opt)
    batch = random_batch(batch=2, seed=4)
    model.feed_data(batch)
    losses = model.compute_losses(1)
    assert list(losses) == ['l_pix', 'l_kd', 'l_feat_fitnet', 'l_feat_attn']
    assert list(model._pair_logs) == [f'l_feat_fitnet_{i}' for i in range(4)] + ['l_feat_attn_0', 'l_feat_attn_1']
    assert list(model.net_aux.banks) == ['fitnet']
    assert len(model.student_taps) == 4  # shared module paths are hooked once
    # each term equals the same loss configured alone (same seed -> same student and adapters)
    single = build(tmp_path, fkd_opt(tmp_path, teacher_ckpt, 'at', taps_t=TAPS[::3], taps_s=TAPS[::3]))
    single.get_bare_model(single.net_g).load_state_dict(model.get_bare_model(model.net_g).state_dict())
    single.feed_data(batch)
    assert single.compute_losses(1)['l_feat'].item() == pytest.approx(losses['l_feat_attn'].item(), rel=1e-6)
    model.optimize_parameters(2)
    assert {'l_feat_fitnet', 'l_feat_attn', 'l_feat_attn_1'} <= set(model.log_dict)

    opt['train']['feature_kd']['log_pairs'] = False
    quiet = build(tmp_path, opt)
    quiet.feed_data(batch)
    quiet.optimize_parameters(1)
    assert set(quiet.log_dict) == {'l_pix', 'l_kd', 'l_feat_fitnet', 'l_feat_attn'}


# ----------------------------------------------------------------------------- errors
def _with(opt, **train_changes):
    opt = copy.deepcopy(opt)
    for key, value in train_changes.items():
        if value is None:
            opt['train'].pop(key, None)
        else:
            opt['train'][key] = value
    return opt


@pytest.mark.parametrize('changes, error, match', [
    (dict(feature_kd={'positions_t': TAPS, 'positions_s': TAPS, 'adaptor': 'auto'}), ValueError,
     r"Unknown option key\(s\) \['adaptor'\] in train.feature_kd; valid keys: \['adapter', 'log_pairs', "
     r"'positions', 'positions_s', 'positions_t', 'terms'\]"),
    (dict(feature_kd={'positions_t': TAPS, 'positions_s': TAPS[:3]}), ValueError, 'positions_t has 4 taps but'),
    (dict(feature_kd={'positions_t': TAPS}), ValueError, 'needs the taps'),
    (dict(feature_kd={'positions': TAPS, 'positions_s': TAPS}), ValueError, 'not both'),
    (dict(feature_kd={'positions': [True]}), ValueError, 'a tap is a module path string'),
    (dict(feature_kd={'positions': TAPS, 'adapter': 'conv3x3'}), ValueError,
     'unknown value .conv3x3.; valid values: auto, conv1x1, none'),
    (dict(feature_kd={'positions': TAPS, 'log_pairs': 'yes'}), ValueError, 'log_pairs must be true or false'),
    (dict(feature_opt=None), ValueError, 'needs its loss: train.feature_opt'),
    (dict(feature_kd=None), ValueError, 'feature_opt needs its taps'),
    (dict(feature_kd=None, feature_opt=None), ValueError, 'Use KDModel for output KD only'),
    (dict(feature_distillation={'positions': TAPS, 'type': 'SA'}), ValueError, 'not both'),
    (dict(feature_opt={'type': 'L1Loss', 'loss_weight': 1.0}), TypeError, 'not a feature-KD loss'),
    (dict(feature_opt={'type': 'KDAttentionLoss', 'loss_weight': 1.0}, feature_kd={'positions': TAPS,
                                                                                  'adapter': 'conv1x1'}),
     ValueError, 'conv1x1 only applies to'),
    (dict(feature_kd={'terms': [{'positions': TAPS, 'loss': LOSSES['at'], 'weight': 2}]}, feature_opt=None),
     ValueError, r"\['weight'\] in train.feature_kd.terms\[0\]; valid keys: \['adapter', 'loss', 'name', "
                 r"'positions', 'positions_s', 'positions_t'\]"),
    (dict(feature_kd={'terms': [{'positions': TAPS, 'loss': LOSSES['at']}]}), ValueError,
     'cannot be combined with train.feature_kd.terms'),
    (dict(feature_kd={'terms': [{'positions': TAPS}]}, feature_opt=None), ValueError, 'needs a loss'),
    (dict(feature_kd={'terms': [{'positions': TAPS, 'loss': LOSSES['at']}] * 2}, feature_opt=None), ValueError,
     r"duplicate term name\(s\) \['at'\]"),
    (dict(feature_kd={'terms': [{'positions': TAPS, 'loss': LOSSES['at'], 'name': 'Bad-Name'}]}, feature_opt=None),
     ValueError, 'must match'),
    (dict(feature_kd={'terms': [{'positions': TAPS, 'loss': LOSSES['at'], 'name': 'a'},
                                {'positions': TAPS, 'loss': LOSSES['fakd'], 'name': 'a_0'}]}, feature_opt=None),
     ValueError, 'clashing log keys'),
    (dict(feature_kd={'terms': [{'positions': TAPS, 'loss': LOSSES['at']}], 'adapter': 'auto'}, feature_opt=None),
     ValueError, r"move \['adapter'\] into each terms\[\] entry"),
    (dict(feature_distillation={'positions': TAPS, 'type': 'SA'}, feature_kd=None, feature_opt={'type': 'L1Loss'}),
     ValueError, 'feature_opt.loss_weight, which is missing'),
    (dict(feature_distillation={'positions': {'t': TAPS, 's': TAPS}, 'type': 'SA'}, feature_kd=None),
     ValueError, r"\['s'\] in train.feature_distillation.positions"),
    (dict(feature_distillation={'positions': TAPS, 'type': 'FSP'}, feature_kd=None), NotImplementedError,
     'not supported'),
])
def test_option_errors_are_clear(tmp_path, teacher_ckpt, changes, error, match):
    opt = _with(fkd_opt(tmp_path, teacher_ckpt), **changes)
    with pytest.raises(error, match=match):
        build(tmp_path, opt)


@pytest.mark.parametrize('taps_t, taps_s, kw, error, match', [
    (TAPS, ['conv_first', 0, 'body.7', 'conv_after_body'], {}, TapError,
     r"train.feature_kd.positions_s\[2\] = 'body.7' is not a tap of the student \(EDSR\): Unknown tap "
     r"'body.7' for EDSR. Valid module paths .*conv_first.*body.1"),
    (['conv_first', 5], ['conv_first', 0], {}, TapError,
     r"positions_t\[1\] = 5 is not a tap of the teacher \(EDSR\).*out of range"),
    (['conv_first'], ['upsample'], dict(adapter='conv1x1'), ValueError,
     r"pair 0 \(teacher 'conv_first' -> \(1, 16, 8, 8\), student 'upsample' -> \(1, 8, 16, 16\).*spatial sizes "
     "differ"),
    (TAPS, TAPS, dict(adapter='none'), ValueError,
     r"adapter none but channel counts differ at pair 0 \(teacher 'conv_first' -> \(1, 16, 8, 8\), student "
     r"'conv_first' -> \(1, 8, 8, 8\).*Set adapter: auto"),
])
def test_tap_and_shape_errors_at_construction(tmp_path, teacher_ckpt, taps_t, taps_s, kw, error, match):
    with pytest.raises(error, match=match):
        build(tmp_path, fkd_opt(tmp_path, teacher_ckpt, taps_t=taps_t, taps_s=taps_s, **kw))


def test_yun224_feature_distillation_form(tmp_path, teacher_ckpt):
    base = fkd_opt(tmp_path, teacher_ckpt)
    opt = _with(base, feature_kd=None, feature_opt={'type': 'L1Loss', 'loss_weight': 7.0},
                feature_distillation={'positions': {'t': ['conv_first', 1], 'g': ['conv_first', 0]}, 'type': 'SA'})
    model = build(tmp_path, opt)
    (term,) = model.feature_terms
    assert type(term.loss).__name__ == 'KDAffinityLoss' and term.loss.loss_weight == 7.0
    assert term.spec.positions_t == ['conv_first', 1] and term.spec.positions_s == ['conv_first', 0]
    opt['train']['feature_distillation'] = {'positions': TAPS, 'type': 'Fitnet'}
    model = build(tmp_path, opt)  # channel_mean: no regressor, widths 8 vs 16 accepted
    assert model.feature_terms[0].loss.mode == 'channel_mean' and model.net_aux is None
    model.feed_data(random_batch(seed=1))
    assert model.compute_losses(1)['l_feat'].requires_grad


# ----------------------------------------------------------------------------- shipped YAMLs
def _narrow(net_opt):
    """Same body units (hence the same taps), tiny width and tiny units."""
    net_opt = dict(net_opt)
    if net_opt['type'] == 'EDSR':
        net_opt['num_feat'] = 16 if net_opt['num_feat'] == 256 else 8
    elif net_opt['type'] == 'RCAN':
        net_opt.update(num_feat=16, num_block=1)
    else:
        net_opt.update(embed_dim=12 if net_opt['embed_dim'] == 180 else 6, depths=[1] * len(net_opt['depths']))
    return net_opt


@pytest.mark.slow
@pytest.mark.subprocess
def test_shipped_yamls_are_current_and_build(tmp_path):
    proc = subprocess.run([sys.executable, 'scripts/make_options.py', '--method', 'feature_kd', '--check'],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    files = sorted(glob.glob(osp.join(ROOT, 'options/train/FeatureKD/*.yml')))
    assert len(files) == 36 and len(glob.glob(osp.join(ROOT, 'options/test/FeatureKD/*.yml'))) == 36
    expected_taps = {'EDSR': (['conv_first', 10, 21, 'conv_after_body'],) * 2,
                     'RCAN': (['conv_first', 2, 6, 'conv_after_body'],) * 2,
                     'SwinIR': (['conv_first', 1, 3, 'conv_after_body'], ['conv_first', 0, 2, 'conv_after_body'])}
    shipped_losses = {  # kd_core spec §9.2-§9.5 defaults
        'FitNet': {'type': 'KDFitNetLoss', 'loss_weight': 10.0, 'distance': 'l1', 'mode': 'regress'},
        'AT': {'type': 'KDAttentionLoss', 'loss_weight': 10.0, 'mode': 'sr_l1', 'p': 2},
        'FAKD': {'type': 'KDAffinityLoss', 'loss_weight': 10.0, 'max_hw': 65536, 'blocked': True, 'tile': 512},
        'RKD': {'type': 'KDRelationLoss', 'loss_weight': 1.0, 'lambda_d': 25.0, 'lambda_a': 50.0, 'embed': 'avg'}}
    for path in files:
        with open(path) as f:
            opt = yaml.safe_load(f)
        assert opt['model_type'] == 'FeatureKDModel'
        (spec,), log_pairs = parse_feature_kd_options(opt['train'])
        assert (spec.positions_t, spec.positions_s) == expected_taps[opt['network_g']['type']], path
        assert log_pairs is True and spec.adapter == 'auto'
        assert spec.loss_opt == shipped_losses[osp.basename(path).split('_')[1]], path
        assert opt['train']['pixel_opt']['loss_weight'] == opt['train']['kd_opt']['loss_weight'] == 1.0
    # the x4 FitNet YAML of every pair builds (narrowed nets with the same body units, random teacher):
    # the taps resolve, the probe passes and the adapters are where the widths differ
    for family, tag, adapters in (('EDSR', 'c256b32_c64b32', 4), ('RCAN', 'g10b20_g10b6', 0),
                                  ('SwinIR', 'e180d6_e60d4', 4)):
        with open(osp.join(ROOT, f'options/train/FeatureKD/train_FitNet_{family}_x4{tag}.yml')) as f:
            opt = yaml.safe_load(f)
        opt['network_t'], opt['network_g'] = _narrow(opt['network_t']), _narrow(opt['network_g'])
        opt['path']['pretrain_network_t'] = save_random_net(opt['network_t'], str(tmp_path / 't.pth'))
        opt['num_gpu'] = 0
        model = build(tmp_path, opt)
        assert (model.net_aux.banks['fitnet'].num_adapters if model.net_aux is not None else 0) == adapters


# ----------------------------------------------------------------------------- real training runs
class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.fixture
def basicsr_log():
    """Messages of BasicSR's root logger (in-process runs may not get their own log file)."""
    handler = _Collect()
    logger = logging.getLogger('basicsr')
    level = logger.level
    logger.setLevel(logging.INFO)  # an earlier get_root_logger() without log file leaves it unset
    logger.addHandler(handler)
    yield handler.lines
    logger.removeHandler(handler)
    logger.setLevel(level)


@pytest.mark.slow
@pytest.mark.parametrize('loss', list(LOSSES))
def test_short_training_run(workdir, demo_data, teacher_ckpt, basicsr_log, loss):
    name = f'fkd_run_{loss}'
    validate = loss == 'fakd'  # demo val LR maps have H·W > max_hw: FAKD must not run in validation
    opt = fkd_opt(demo_data, teacher_ckpt, loss, name=name, total_iter=3, save_freq=3,
                  val_freq=3 if validate else 100)
    if loss == 'rkd':
        opt['datasets']['train']['batch_size_per_gpu'] = 3  # the angle term needs B >= 3
    run_train(opt, workdir)
    log = '\n'.join(basicsr_log)
    assert 'l_feat:' in log and 'l_feat_3:' in log and 'l_kd:' in log
    if validate:
        assert 'Validation demo_val' in log
    models = sorted(os.listdir(osp.join(experiment_dir(workdir, name), 'models')))
    if loss == 'fitnet':
        assert models == ['net_aux_3.pth', 'net_aux_latest.pth', 'net_g_3.pth', 'net_g_latest.pth']
        assert set(torch.load(model_file(workdir, name, 'net_aux', 3))['params']) == {
            f'banks.fitnet.adapters.{i}.conv.{k}' for i in range(4) for k in ('weight', 'bias')}
    else:
        assert models == ['net_g_3.pth', 'net_g_latest.pth']


@pytest.mark.slow
def test_fitnet_resume_restores_adapters_and_refuses_without_them(workdir, demo_data, teacher_ckpt, monkeypatch):
    name = 'fkd_resume'
    run_train(fkd_opt(demo_data, teacher_ckpt, name=name, total_iter=2), workdir)
    saved = torch.load(model_file(workdir, name, 'net_aux', 2))['params']
    snapshots = []
    original = FeatureKDModel.resume_training

    def spy(self, state):
        original(self, state)
        snapshots.append({k: v.clone() for k, v in self.get_bare_model(self.net_aux).state_dict().items()})
    monkeypatch.setattr(FeatureKDModel, 'resume_training', spy)
    run_train(fkd_opt(demo_data, teacher_ckpt, name=name, total_iter=4), workdir, '--auto_resume')
    assert snapshots and snapshots[0].keys() == saved.keys()
    assert all(torch.equal(snapshots[0][k], v) for k, v in saved.items())
    assert osp.isfile(model_file(workdir, name, 'net_aux', 4))

    os.remove(model_file(workdir, name, 'net_aux', 4))
    with pytest.raises(CheckpointError, match=r'net_aux_4.pth is missing'):
        run_train(fkd_opt(demo_data, teacher_ckpt, name=name, total_iter=6), workdir, '--auto_resume')


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.ddp
def test_ddp_two_process_fitnet_identical_student_and_adapters(workdir, demo_data, teacher_ckpt):
    opt = fkd_opt(demo_data, teacher_ckpt, name='fkd_ddp', total_iter=3, save_freq=100)
    result = run_ddp_check(opt, workdir)
    rank0, rank1 = result['checksums']
    assert len(rank0) == 2 and rank0 == rank1  # student, adapters
    assert {'l_feat', 'l_feat_0', 'l_kd'} <= set(result['log'])
