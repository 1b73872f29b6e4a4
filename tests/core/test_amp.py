"""Mixed precision (``train.amp``) and channels-last (``train.channels_last``) of every KD model (docs/amp.md)."""
from __future__ import annotations

import glob
import os.path as osp
import subprocess
import sys

import pytest
import torch
from torch import nn

from kdsr_plugins.core.amp import SCALER_STATE_KEY, MixedPrecision, amp_options, to_channels_last, to_float32
from kdsr_plugins.core.option_checks import check_option_file, model_class, model_fields
from kdsr_plugins.core.schema import OptionError
from kdsr_testutils import (
    MTKD_ORDER,
    MTKD_SCALE,
    build_model_from_opt,
    edsr,
    experiment_dir,
    model_file,
    mtkd_aggregator,
    mtkd_stage1_opt,
    mtkd_stage2_opt,
    random_batch,
    run_ddp_check,
    run_train,
    save_random_net,
    train_opt,
    write_yaml,
)

MODEL_TYPES = ('KDModel', 'FeatureKDModel', 'DUKDModel', 'MiPKDModel', 'MTKDAggregatorModel', 'MTKDStudentModel')


def model_opt(model_type: str, root, mtkd_ckpts: dict, **train_extra) -> tuple[dict, int]:
    """A tiny training option dict of ``model_type`` (random teachers) and its scale."""
    if model_type.startswith('MTKD'):
        if model_type == 'MTKDAggregatorModel':
            opt = mtkd_stage1_opt('amp_' + model_type, str(root), mtkd_ckpts)
        else:
            agg = save_random_net(mtkd_aggregator(2), str(root / 'aggregator.pth'), seed=3)
            opt = mtkd_stage2_opt('amp_' + model_type, str(root), mtkd_ckpts, agg, aggregator={
                'network': mtkd_aggregator(2), 'pretrain': agg, 'teacher_order': list(MTKD_ORDER)})
        opt['train'].update(train_extra)
        return opt, MTKD_SCALE
    ckpt = save_random_net(edsr(16, 2), str(root / 'teacher.pth'), seed=1)
    method = {'FeatureKDModel': {'feature_kd': {'positions_t': [0, 1], 'positions_s': [0, 1]},
                                 'feature_opt': {'type': 'KDFitNetLoss', 'loss_weight': 1.0}},
              'DUKDModel': {'dukd_opt': {'n_gt_sub': 1, 'zoom_out': True}, 'noisy': {'prob': 0.5}},
              'MiPKDModel': {'mipkd_opt': {'positions_t': [0, 1], 'positions_s': [0, 1]}}}.get(model_type, {})
    opt = train_opt('amp_' + model_type, str(root), ckpt, model_type=model_type, **method, **train_extra)
    return opt, 2


def conv_dtypes(net: nn.Module, seen: list) -> None:
    """Record the output dtype of the first Conv2d of ``net`` on every forward."""
    conv = next(m for m in net.modules() if isinstance(m, nn.Conv2d))
    conv.register_forward_hook(lambda m, a, out: seen.append(out.dtype))


def spatial_weights(net: nn.Module) -> list[torch.Tensor]:
    """Conv weights whose layout differs between the two formats (k x k kernels, several input channels)."""
    return [p for p in net.parameters() if p.dim() == 4 and p.shape[1] > 1 and p.shape[2] * p.shape[3] > 1]


# ---------------------------------------------------------------------- options
@pytest.mark.parametrize('model_type', MODEL_TYPES)
def test_every_model_type_declares_amp_and_channels_last(model_type):
    train = model_fields(model_class(model_type))['train']
    fields = {f.name: f for f in train}
    assert fields['amp'].default == 'off' and fields['channels_last'].default is False


@pytest.mark.subprocess
def test_options_reference_lists_amp_for_every_model_type():
    for model_type in MODEL_TYPES:
        proc = subprocess.run([sys.executable, '-m', 'kdsr_plugins', '--options', model_type], capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert 'amp' in proc.stdout and 'channels_last' in proc.stdout, model_type


@pytest.mark.parametrize('value, expected', [('off', 'off'), (False, 'off'), ('bf16', 'bf16'), ('fp16', 'fp16')])
def test_amp_values_are_normalised(value, expected):
    assert amp_options({'amp': value}) == (expected, False)
    assert amp_options(None) == ('off', False)


@pytest.mark.parametrize('value', ['float16', 'on', True, 'BF16', 16])
def test_invalid_amp_value_is_a_clear_error(value):
    with pytest.raises(OptionError, match='train.amp must be off, bf16 or fp16'):
        amp_options({'amp': value})
    with pytest.raises(OptionError, match='channels_last'):
        amp_options({'channels_last': 'yes'})


def test_invalid_amp_in_an_option_file_stops_before_training(workdir, demo_data, teacher_ckpt):
    opt = train_opt('amp_bad', demo_data, teacher_ckpt, amp='float16')
    with pytest.raises(OptionError, match='train.amp must be off, bf16 or fp16'):
        check_option_file(opt, is_train=True)


def test_fp16_on_cpu_is_refused_before_the_first_iteration(tmp_path, mtkd_ckpts):
    opt, _ = model_opt('KDModel', tmp_path, mtkd_ckpts, amp='fp16')
    with pytest.raises(OptionError, match='fp16 needs a CUDA device.*bf16'):
        build_model_from_opt(opt, tmp_path)


# ---------------------------------------------------------------------- helpers
def test_float32_and_channels_last_helpers_recurse():
    x = torch.rand(1, 2, 3, 4, dtype=torch.bfloat16)
    out = to_float32({'a': [x, (x.half(), 3)], 'b': torch.ones(2, dtype=torch.int64)})
    assert out['a'][0].dtype == out['a'][1][0].dtype == torch.float32 and out['a'][1][1] == 3
    assert out['b'].dtype == torch.int64
    cl = to_channels_last([torch.rand(1, 3, 4, 5), torch.rand(3, 4)])
    assert cl[0].is_contiguous(memory_format=torch.channels_last) and cl[1].dim() == 2


def test_scaler_state_round_trip_and_skipped_steps():
    """fp16 loss scaling on CPU (tests only): an inf gradient skips the step, the state restores scale and count."""
    amp = MixedPrecision('fp16', torch.device('cpu'), allow_cpu_fp16=True)
    param = nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([param], lr=0.1)
    amp.backward((param * float('inf')).sum())
    assert amp.step(opt) is False and amp.skipped_steps == 1
    assert torch.equal(param.detach(), torch.ones(3))  # the skipped step left the weights alone
    opt.zero_grad()
    amp.backward(param.sum())
    assert amp.step(opt) is True and amp.skipped_steps == 1
    state = amp.state_dict()
    assert state['skipped_steps'] == 1 and state['scaler']['scale'] == amp.scaler.get_scale()
    assert amp.log_values() == {'amp_scale': amp.scaler.get_scale(), 'amp_skipped_steps': 1.0}
    fresh = MixedPrecision('fp16', torch.device('cpu'), allow_cpu_fp16=True)
    assert fresh.load_state_dict(state) == []
    assert fresh.scaler.get_scale() == amp.scaler.get_scale() and fresh.skipped_steps == 1
    assert 'starts afresh' in fresh.load_state_dict(None)[0]
    off = MixedPrecision('bf16', torch.device('cpu'))
    assert off.state_dict() is None and off.log_values() == {}
    assert 'ignored' in off.load_state_dict(state)[0]


# ---------------------------------------------------------------------- every model type, bf16 on CPU
@pytest.mark.slow
@pytest.mark.parametrize('channels_last', [False, True], ids=['nchw', 'channels_last'])
@pytest.mark.parametrize('model_type', MODEL_TYPES)
def test_every_model_type_trains_with_bf16_float32_losses(model_type, channels_last, tmp_path, mtkd_ckpts,
                                                          single_thread):
    opt, scale = model_opt(model_type, tmp_path, mtkd_ckpts, amp='bf16', channels_last=channels_last)
    model = build_model_from_opt(opt, tmp_path)
    student, teacher = model.get_bare_model(model.net_g), next(iter(model.teachers.values()))
    student_dtypes, teacher_dtypes, loss_dtypes = [], [], []
    conv_dtypes(student, student_dtypes)
    conv_dtypes(teacher, teacher_dtypes)
    compute = model.compute_losses

    def spy(it):
        losses = compute(it)
        loss_dtypes.extend(v.dtype for v in losses.values())
        assert model.output.dtype == torch.float32
        return losses
    model.compute_losses = spy
    before = {k: v.clone() for k, v in student.state_dict().items()}
    for i in range(2):
        model.feed_data(random_batch(scale, size=16, seed=i))
        model.optimize_parameters(i + 1)
    assert student_dtypes and set(student_dtypes) == {torch.bfloat16}
    assert teacher_dtypes and set(teacher_dtypes) == {torch.bfloat16}
    assert loss_dtypes and set(loss_dtypes) == {torch.float32}
    assert all(torch.isfinite(torch.tensor(v)) for v in model.log_dict.values())
    assert any(not torch.equal(before[k], v) for k, v in student.state_dict().items())
    weights = spatial_weights(student)
    assert all(p.dtype == torch.float32 for p in student.parameters())  # master weights stay float32
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in weights) == channels_last
    for net in (*model.teachers.values(), *([model.get_bare_model(model.net_aux)] if model.net_aux else [])):
        convs = spatial_weights(net)  # FitNet adapters are 1x1 convs: the same in both layouts
        assert not convs or all(p.is_contiguous(memory_format=torch.channels_last) for p in convs) == channels_last
    # validation forwards are not autocast
    student_dtypes.clear()
    model.feed_data(random_batch(scale, size=16, seed=5))
    model.test()
    assert model.output.dtype == torch.float32


@pytest.mark.slow
def test_mtkd_stage2_aggregator_runs_under_autocast(tmp_path, mtkd_ckpts, single_thread):
    opt, scale = model_opt('MTKDStudentModel', tmp_path, mtkd_ckpts, amp='bf16', channels_last=True)
    model = build_model_from_opt(opt, tmp_path)
    seen = []
    conv_dtypes(model.aggregator, seen)
    model.feed_data(random_batch(scale, size=16))
    model.optimize_parameters(1)
    assert seen == [torch.bfloat16]


@pytest.mark.slow
def test_off_is_unchanged_by_the_amp_machinery(tmp_path, mtkd_ckpts, single_thread):
    """``amp: off`` and no channels-last register no hook: the same losses as before the feature."""
    opt, _ = model_opt('KDModel', tmp_path, mtkd_ckpts)
    model = build_model_from_opt(opt, tmp_path)
    assert not model.get_bare_model(model.net_g)._forward_pre_hooks
    model.feed_data(random_batch(2))
    model.optimize_parameters(1)
    assert set(model.log_dict) == {'l_pix', 'l_kd'}


@pytest.mark.slow
def test_dukd_official_two_step_refuses_fp16(tmp_path, mtkd_ckpts, cpu_fp16_allowed):
    opt, _ = model_opt('DUKDModel', tmp_path, mtkd_ckpts, amp='fp16')
    opt['train']['dukd_opt']['update_mode'] = 'official_two_step'
    with pytest.raises(ValueError, match='official_two_step cannot use train.amp fp16'):
        build_model_from_opt(opt, tmp_path)


@pytest.mark.slow
def test_fp16_scaler_state_is_saved_and_restored(tmp_path, mtkd_ckpts, cpu_fp16_allowed):
    """fp16 (allowed on CPU for the test): the training state holds the scaler, a resumed model gets it back."""
    opt, _ = model_opt('KDModel', tmp_path, mtkd_ckpts, amp='fp16')
    model = build_model_from_opt(opt, tmp_path)
    model.feed_data(random_batch(2))
    model.optimize_parameters(1)
    assert {'amp_scale', 'amp_skipped_steps'} <= set(model.log_dict)
    model.amp.scaler.update(1024.0)
    model.amp.skipped_steps = 3
    model.save_training_state(0, 1)
    state = torch.load(osp.join(model.opt['path']['training_states'], '1.state'), weights_only=True)
    assert state[SCALER_STATE_KEY]['skipped_steps'] == 3
    resumed = build_model_from_opt(opt, tmp_path)
    resumed.resume_training(state)
    assert resumed.amp.scaler.get_scale() == 1024.0 and resumed.amp.skipped_steps == 3


# ---------------------------------------------------------------------- resume with bf16
@pytest.mark.slow
def test_bf16_resume_is_bit_exact_with_an_uninterrupted_bf16_run(workdir, demo_data):
    """As tests/tools/test_pipeline.py's resume test, with train.amp bf16 and channels-last."""
    ckpt = save_random_net(edsr(16, 2), str(workdir / 'teacher.pth'), seed=1)
    extra = {'amp': 'bf16', 'channels_last': True}
    full = train_opt('full', demo_data, ckpt, total_iter=6, save_freq=3, val_freq=3, **extra)
    run_train(full, workdir)
    part = train_opt('part', demo_data, ckpt, total_iter=3, save_freq=3, val_freq=2, **extra)
    run_train(part, workdir)
    part['train']['total_iter'] = 6
    run_train(part, workdir, '--auto_resume')
    a = torch.load(model_file(workdir, 'full', 'net_g', 'latest'))
    b = torch.load(model_file(workdir, 'part', 'net_g', 'latest'))
    plain = torch.load(model_file(workdir, 'full', 'net_g', 3))
    for key in ('params', 'params_ema'):
        for name, value in a[key].items():
            assert torch.equal(value, b[key][name]), (key, name)
    assert osp.isdir(experiment_dir(workdir, 'part')) and plain['params']


@pytest.mark.slow
@pytest.mark.subprocess
def test_yaml_amp_off_and_bf16_train_through_the_entry_point(workdir, demo_data, teacher_ckpt):
    """``amp: off`` (YAML reads it as false) and ``bf16`` through ``python -m kdsr_plugins.train``."""
    for value in ('off', 'bf16'):
        opt = train_opt(f'amp_yaml_{value}', demo_data, teacher_ckpt, total_iter=2, save_freq=2, val_freq=2)
        yml = write_yaml(opt, str(workdir / f'{value}.yml'))
        with open(yml) as f:  # unquoted, as a user writes it
            text = f.read().replace("  teacher_check: 'off'\n", f"  teacher_check: 'off'\n  amp: {value}\n")
        assert f'  amp: {value}\n' in text
        with open(yml, 'w') as f:
            f.write(text)
        proc = subprocess.run([sys.executable, '-m', 'kdsr_plugins.train', '-opt', yml], cwd=workdir,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        log_file = glob.glob(osp.join(experiment_dir(workdir, opt['name']), 'train_*.log'))[0]
        with open(log_file) as f:
            log = f.read()
        assert ('Mixed precision: train.amp bf16' in log) == (value == 'bf16')
        assert 'l_kd:' in log


def test_bf16_on_a_cpu_without_native_bf16_warns(monkeypatch):
    from kdsr_plugins.core import amp as amp_module
    monkeypatch.setattr(amp_module, 'native_bf16_cpu', lambda: False)
    assert 'slow path' in amp_module.slow_precision_warning('bf16', 'cpu')
    assert amp_module.slow_precision_warning('bf16', 'cuda') is None
    assert amp_module.slow_precision_warning('off', 'cpu') is None
    monkeypatch.setattr(amp_module, 'native_bf16_cpu', lambda: True)
    assert amp_module.slow_precision_warning('bf16', 'cpu') is None


# ---------------------------------------------------------------------- DDP
@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.ddp
@pytest.mark.parametrize('model_type', ['KDModel', 'FeatureKDModel'])
def test_ddp_two_process_bf16_channels_last_identical_ranks(model_type, workdir, demo_data, mtkd_ckpts):
    """The core's DDP wrapping with bf16 + channels-last (FeatureKDModel: DDP-wrapped FitNet adapters too)."""
    opt, _ = model_opt(model_type, workdir, mtkd_ckpts, amp='bf16', channels_last=True)
    opt['datasets'] = train_opt('x', demo_data, None)['datasets']
    opt.update(name=f'amp_ddp_{model_type}')
    opt['train']['total_iter'] = 2
    opt['logger']['save_checkpoint_freq'] = 100
    result = run_ddp_check(opt, workdir)
    rank0, rank1 = result['checksums']
    assert rank0 == rank1
    assert 'l_kd' in result['log'] and all(v == v for v in result['log'].values())  # logged, finite-ish
