"""``AmpSRModel``: the student trained alone under ``train.amp`` / ``train.channels_last`` (docs/amp.md)."""
from __future__ import annotations

import os.path as osp

import pytest
import torch
from torch import nn

from kdsr_plugins.core.amp import SCALER_STATE_KEY
from kdsr_plugins.core.option_checks import check_option_file
from kdsr_plugins.core.schema import OptionError
from kdsr_testutils import build_model_from_opt, random_batch, train_opt


def scratch_opt(root, **train_extra) -> dict:
    opt = train_opt('amp_scratch', str(root), None, model_type='AmpSRModel', **train_extra)
    for key in ('kd_opt', 'teacher_check'):
        del opt['train'][key]
    return opt


def conv_output_dtypes(net: nn.Module) -> list:
    seen: list = []
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            m.register_forward_hook(lambda mod, args, out: seen.append(out.dtype))
    return seen


def test_bf16_forward_float32_loss_and_weights(tmp_path, single_thread):
    model = build_model_from_opt(scratch_opt(tmp_path, amp='bf16', channels_last=True), tmp_path)
    student = model.get_bare_model(model.net_g)
    dtypes = conv_output_dtypes(student)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    model.feed_data(random_batch(2, size=16))
    model.optimize_parameters(1)
    assert dtypes and set(dtypes) == {torch.bfloat16}
    assert model.output.dtype == torch.float32
    assert set(model.log_dict) == {'l_pix'} and torch.isfinite(torch.tensor(model.log_dict['l_pix']))
    assert any(not torch.equal(before[k], v) for k, v in student.state_dict().items())
    assert all(p.dtype == torch.float32 for p in student.parameters())
    convs = [p for p in student.parameters() if p.dim() == 4 and p.shape[-1] > 1]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    del model.net_g_ema  # validation on the trained weights, not on the EMA copy
    dtypes.clear()
    model.test()  # validation is not autocast
    assert dtypes and set(dtypes) == {torch.float32} and model.output.dtype == torch.float32


def test_amp_off_equals_basicsr_srmodel(tmp_path, single_thread):
    """With ``amp: off`` the step is SRModel's: the same weights after two iterations."""
    ours = build_model_from_opt(scratch_opt(tmp_path, amp='off'), tmp_path)
    opt = scratch_opt(tmp_path)
    opt['model_type'] = 'SRModel'
    theirs = build_model_from_opt(opt, tmp_path)
    theirs.get_bare_model(theirs.net_g).load_state_dict(ours.get_bare_model(ours.net_g).state_dict())
    for i in range(2):
        for model in (ours, theirs):
            model.feed_data(random_batch(2, size=16, seed=i))
            model.optimize_parameters(i + 1)
    for a, b in zip(ours.net_g.parameters(), theirs.net_g.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7)


def test_fp16_scaler_state_saved_and_restored(tmp_path, cpu_fp16_allowed):
    opt = scratch_opt(tmp_path, amp='fp16')
    model = build_model_from_opt(opt, tmp_path)
    model.feed_data(random_batch(2, size=16))
    model.optimize_parameters(1)
    assert {'amp_scale', 'amp_skipped_steps'} <= set(model.log_dict)
    model.amp.scaler.update(512.0)
    model.amp.skipped_steps = 2
    model.save_training_state(0, 1)
    state = torch.load(osp.join(model.opt['path']['training_states'], '1.state'), weights_only=True)
    assert state[SCALER_STATE_KEY]['skipped_steps'] == 2 and len(state['optimizers']) == 1
    resumed = build_model_from_opt(opt, tmp_path)
    resumed.resume_training(state)
    assert resumed.amp.scaler.get_scale() == 512.0 and resumed.amp.skipped_steps == 2


def test_fp16_on_cpu_is_refused(tmp_path):
    with pytest.raises(OptionError, match='fp16 needs a CUDA device'):
        build_model_from_opt(scratch_opt(tmp_path, amp='fp16'), tmp_path)


def test_option_check_accepts_amp_for_ampsrmodel_and_refuses_it_for_srmodel(tmp_path):
    opt = scratch_opt(tmp_path, amp='bf16', channels_last=True)
    check_option_file(opt)
    opt['model_type'] = 'SRModel'
    with pytest.raises(OptionError, match='amp'):
        check_option_file(opt)


def test_registered_by_import():
    from basicsr.utils.registry import MODEL_REGISTRY

    from kdsr_plugins.core.amp_sr_model import AmpSRModel
    assert MODEL_REGISTRY.get('AmpSRModel') is AmpSRModel
