"""Teacher sanity score before training (docs/guarantees.md, "Teacher sanity score").

The shipped demo teachers (x4, trained with res_scale 1.0) must pass; every mistake that keeps the
tensor shapes (arch options, wrong param_key, extra random layers, non-strict loads) must stop the
run before the first iteration, unless train.teacher_check says warn / off.
"""
import os.path as osp
import random
from copy import deepcopy

import numpy as np
import pytest
import torch
from basicsr.archs import build_network

from kdsr_plugins.core.checkpoints import CheckpointError
from kdsr_plugins.core.teacher_check import (
    DEFAULT_MARGIN_DB,
    TeacherCheckError,
    sample_pairs,
    score_teachers,
    teacher_check_options,
)
from kdsr_plugins.demo import config
from kdsr_testutils import build_model_from_opt, edsr, train_opt

# The mistake cases use the small demo EDSR f32b6 (about +0.4 dB over bicubic on the demo crops): a teacher
# whose lead over bicubic is larger than what a mistake costs it passes the check (docs/guarantees.md).
EDSR_T = config.edsr(32, 6)
EDSR_CKPT = osp.join(config.ASSETS, 'teacher_edsr_f32b6_x4.pth')
RCAN_T, RCAN_CKPT = config.TEACHERS['rcan']


def demo_opt(demo_data, teacher=None, ckpt=EDSR_CKPT, mode='error', **path):
    opt = train_opt('tcheck', demo_data, ckpt, scale=4, student=edsr(8, 1, 4), teacher=teacher or dict(EDSR_T),
                    teacher_check=mode, ema=0)
    opt['path'].update(path)
    return opt


@pytest.mark.slow
def test_shipped_demo_teachers_beat_bicubic(demo_data, tmp_path):
    pairs, source = sample_pairs(demo_opt(demo_data)['datasets'], 4)
    assert len(pairs) == 2 and 'datasets.val' in source  # validation images are preferred
    forwards = {}
    for name, (net_opt, ckpt) in config.TEACHERS.items():
        net = build_network(deepcopy(net_opt)).eval()
        net.load_state_dict(torch.load(ckpt)['params'])
        forwards[name] = net
    for score in score_teachers(forwards, pairs, 4, torch.device('cpu'), source):
        assert score.gain >= DEFAULT_MARGIN_DB, score
    opt = demo_opt(demo_data)
    opt.pop('network_t'), opt['path'].pop('pretrain_network_t')
    opt['teachers'] = [{'name': n, 'network': dict(o), 'pretrain': c} for n, (o, c) in config.TEACHERS.items()]
    model = build_model_from_opt(opt, tmp_path)  # teachers list form, check on: passes
    assert list(model.teachers) == ['edsr', 'rcan']


@pytest.mark.parametrize('option, value', [('res_scale', 0.1), ('img_range', 1.0)])
def test_shape_preserving_arch_option_mistakes_are_refused(demo_data, tmp_path, option, value):
    """Found case: the shipped YAMLs' EDSR res_scale 0.1 with the demo teachers (trained with 1.0)."""
    teacher = dict(EDSR_T, **{option: value})
    with pytest.raises(TeacherCheckError, match=r"teacher 't' \(EDSR\) [\d.]+ dB vs bicubic [\d.]+ dB .*res_scale.*"
                                                r"train.teacher_check: warn"):
        build_model_from_opt(demo_opt(demo_data, teacher), tmp_path)


@pytest.mark.slow
def test_wrong_param_key_is_refused(demo_data, tmp_path):
    """A checkpoint whose params_ema entry is not the trained teacher (e.g. an untrained EMA copy)."""
    trained = torch.load(EDSR_CKPT)['params']
    torch.manual_seed(0)
    random_state = build_network(deepcopy(EDSR_T)).state_dict()
    ckpt = str(tmp_path / 't.pth')
    torch.save({'params': trained, 'params_ema': random_state}, ckpt)
    build_model_from_opt(demo_opt(demo_data, ckpt=ckpt, param_key_t='params'), tmp_path)
    with pytest.raises(TeacherCheckError, match='param_key'):
        build_model_from_opt(demo_opt(demo_data, ckpt=ckpt, param_key_t='params_ema'), tmp_path)


@pytest.mark.slow
def test_non_strict_teacher_loads(demo_data, tmp_path):
    """strict_load_t: false with a teacher of the wrong width loads practically nothing: refused; with a
    checkpoint lacking layers (left random): refused by the score."""
    with pytest.raises(CheckpointError, match='would load 3 of its .* values .*practically nothing'):
        build_model_from_opt(demo_opt(demo_data, dict(EDSR_T, num_feat=48), strict_load_t=False), tmp_path)
    state = torch.load(EDSR_CKPT)['params']
    partial = str(tmp_path / 'partial.pth')
    torch.save({'params': {k: v for k, v in state.items() if not k.startswith('conv_last')}}, partial)
    with pytest.raises(TeacherCheckError, match='non-strict load'):
        build_model_from_opt(demo_opt(demo_data, ckpt=partial, strict_load_t=False), tmp_path)


def test_only_the_bad_teacher_of_a_list_is_named(demo_data, tmp_path):
    opt = demo_opt(demo_data)
    opt.pop('network_t'), opt['path'].pop('pretrain_network_t')
    opt['teachers'] = [{'name': 'good', 'network': dict(EDSR_T), 'pretrain': EDSR_CKPT},
                       {'name': 'bad', 'network': dict(EDSR_T, res_scale=0.1), 'pretrain': EDSR_CKPT}]
    with pytest.raises(TeacherCheckError) as info:
        build_model_from_opt(opt, tmp_path)
    assert "teacher 'bad'" in str(info.value) and "teacher 'good'" not in str(info.value)


def test_warn_and_off_modes(demo_data, tmp_path, monkeypatch):
    bad = dict(EDSR_T, res_scale=0.1)
    build_model_from_opt(demo_opt(demo_data, bad, mode='warn'), tmp_path)
    import kdsr_plugins.core.teacher_check as tc

    calls = []
    monkeypatch.setattr(tc, 'sample_pairs', lambda *a, **k: calls.append(a) or ([], ''))
    build_model_from_opt(demo_opt(demo_data, bad, mode='off'), tmp_path)
    build_model_from_opt(demo_opt(demo_data, bad, mode=False), tmp_path)  # YAML's bare `off`
    assert calls == []


def test_check_options():
    assert teacher_check_options({}) == ('error', DEFAULT_MARGIN_DB)
    assert teacher_check_options({'teacher_check': False}) == ('off', DEFAULT_MARGIN_DB)
    assert teacher_check_options({'teacher_check': 'warn', 'teacher_check_margin': 0.5}) == ('warn', 0.5)
    with pytest.raises(ValueError, match=r"train.teacher_check: invalid value 'strict'; valid: \['error', 'warn'"):
        teacher_check_options({'teacher_check': 'strict'})
    with pytest.raises(ValueError, match='teacher_check_margin: expected a number'):
        teacher_check_options({'teacher_check_margin': '0.1dB'})


def test_margin_option_decides(demo_data, tmp_path):
    """A demo teacher beats bicubic by about 0.4 dB on the demo crops: a 5 dB margin refuses it."""
    opt = demo_opt(demo_data)
    opt['train']['teacher_check_margin'] = 5.0
    with pytest.raises(TeacherCheckError, match=r'required: \+5 dB'):
        build_model_from_opt(opt, tmp_path)


def test_training_patches_without_validation_and_random_neutral(demo_data, tmp_path):
    opt = demo_opt(demo_data, mode='off')
    del opt['datasets']['val'], opt['val']
    model = build_model_from_opt(opt, tmp_path)
    pairs, source = sample_pairs(opt['datasets'], 4)
    assert len(pairs) == 4 and 'training patch' in source and pairs[0][1].shape[-1] == 32
    model.opt['train']['teacher_check'] = 'error'
    random.seed(3), np.random.seed(3), torch.manual_seed(3)
    model.check_teachers()  # random training crops inside, states restored
    after = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    random.seed(3), np.random.seed(3), torch.manual_seed(3)
    assert after == (random.random(), float(np.random.rand()), float(torch.rand(1)))
