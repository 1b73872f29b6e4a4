"""Bad-input catalogue: entries not covered next to their feature (see docs/guarantees.md for the rest).

Each case checks that the run stops early with a message naming the problem and the fix: unknown
registry names in a training YAML (the registry message itself: tests/compat/test_patches.py),
LMDB layout and pairing problems, GT images smaller than ``gt_size``, SwinIR
patch sizes, a student whose scale differs from the run's, a resume state of another model,
non-finite losses or weights (the last good checkpoint is kept and resuming from it works), and
untrusted or corrupt checkpoint and state files (``weights_only`` loading: no code runs).
"""
from __future__ import annotations

import io
import os
import os.path as osp
import shutil

import pytest
import torch
from basicsr.data import build_dataset

from kdsr_plugins.core.checkpoints import CheckpointError
from kdsr_plugins.core.dataset_checks import DatasetOptionError
from kdsr_plugins.core.kd_model import KDModel
from kdsr_testutils import (
    build_model_from_opt,
    edsr,
    experiment_dir,
    list_states,
    model_file,
    run_train,
    save_random_net,
    short_run,
    swinir,
    train_opt,
)

SWINIR_W8 = swinir(2, window_size=8)


# ------------------------------------------------------------------------------ registry names
def test_unknown_names_in_a_training_yaml_stop_before_training(workdir, demo_data, teacher_ckpt):
    opt = short_run(demo_data, teacher_ckpt, 'bad_loss', kd_opt={'type': 'L1loss', 'loss_weight': 1.0})
    with pytest.raises(KeyError, match="No object named 'L1loss' found in 'loss' registry!\n  Did you mean: L1Loss"):
        run_train(opt, workdir)
    assert not osp.exists(experiment_dir(workdir, 'bad_loss') + '/training_states/2.state')


# ------------------------------------------------------------------------------ LMDB datasets
@pytest.fixture
def lq_copy(demo_data, tmp_path):
    """A writable copy of the x2 train LQ LMDB."""
    target = str(tmp_path / 'train_LR_X2_copy.lmdb')
    shutil.copytree(osp.join(demo_data, 'train_LR_X2_sub.lmdb'), target)
    return target


def _with_lq(opt: dict, lq: str) -> dict:
    opt['datasets']['train']['dataroot_lq'] = lq
    return opt


def test_lmdb_without_meta_info_is_named_with_the_fix(workdir, demo_data, teacher_ckpt, lq_copy):
    os.remove(osp.join(lq_copy, 'meta_info.txt'))
    opt = _with_lq(short_run(demo_data, teacher_ckpt, 'no_meta'), lq_copy)
    with pytest.raises(DatasetOptionError, match=r'datasets.train \(demo_train, PairedImageDataset\): missing '
                                                 r'meta_info.txt in .*train_LR_X2_copy.lmdb \(BasicSR lists the keys'):
        run_train(opt, workdir)


def test_lmdb_gt_lq_key_mismatch_lists_the_keys(workdir, demo_data, teacher_ckpt, lq_copy):
    meta = osp.join(lq_copy, 'meta_info.txt')
    with open(meta) as f:
        lines = f.readlines()
    dropped = lines[0].split('.')[0]
    with open(meta, 'w') as f:
        f.writelines(lines[1:])
    opt = _with_lq(short_run(demo_data, teacher_ckpt, 'keys'), lq_copy)
    with pytest.raises(DatasetOptionError, match=f'have different keys .*only in GT: {dropped}; only in LQ: \\.'):
        run_train(opt, workdir)
    with open(meta, 'w') as f:  # listed in meta_info.txt but not stored in the database
        f.writelines(lines + ['ghost_s0000_0000.png (120,120,3) 1\n'])
    with pytest.raises(DatasetOptionError, match='meta_info.txt keys missing from the LMDB .*ghost_s0000_0000'):
        run_train(opt, workdir)


def test_lmdb_of_another_scale_is_named(workdir, demo_data, teacher_ckpt):
    opt = _with_lq(short_run(demo_data, teacher_ckpt, 'scale'), osp.join(demo_data, 'train_LR_X4_sub.lmdb'))
    with pytest.raises(DatasetOptionError, match=r'GT is not 2 x LQ for 8 key\(s\): .* GT 240x240x3 LQ 60x60x3'):
        run_train(opt, workdir)


def test_gt_smaller_than_gt_size_fails_at_start_not_mid_training(workdir, demo_data, teacher_ckpt):
    opt = short_run(demo_data, teacher_ckpt, 'big_patch')
    opt['datasets']['train']['gt_size'] = 256
    with pytest.raises(DatasetOptionError, match=r'8 of 8 GT images in .* are smaller than gt_size 256: '
                                                 r'astronaut_s0000_0000 \(240x240\)'):
        run_train(opt, workdir)


def test_validation_lmdb_may_have_uncropped_gt(demo_data):
    """Outside training BasicSR crops GT to scale x LQ: GT of another scale (scored by its corner) is
    refused, a smaller one too (docs/guarantees.md, "Data checks before training")."""
    common = dict(type='PairedImageDataset', name='val', phase='val', io_backend={'type': 'lmdb'}, scale=2,
                  dataroot_gt=osp.join(demo_data, 'val_HR.lmdb'))
    assert len(build_dataset({**common, 'dataroot_lq': osp.join(demo_data, 'val_LR_X2.lmdb')})) == 2
    with pytest.raises(DatasetOptionError, match='GT is larger than 2 x LQ .*the data look x4'):
        build_dataset({**common, 'dataroot_lq': osp.join(demo_data, 'val_LR_X4.lmdb')})
    with pytest.raises(DatasetOptionError, match='GT is smaller than 4 x LQ'):
        build_dataset({**common, 'scale': 4, 'dataroot_lq': osp.join(demo_data, 'val_LR_X2.lmdb')})


# ------------------------------------------------------------------------------ patch sizes and scales
@pytest.mark.parametrize('where', ['student', 'teacher'])
def test_swinir_patch_not_a_window_multiple_fails_at_build(tmp_path, teacher_ckpt, where):
    """BasicSR's SwinIR does not pad in training: LR patch 12 with window 8 would crash in the first step."""
    if where == 'student':
        opt = train_opt('swin', str(tmp_path), teacher_ckpt, student=SWINIR_W8)
    else:
        ckpt = save_random_net(SWINIR_W8, str(tmp_path / 'swin_t.pth'))
        opt = train_opt('swin', str(tmp_path), ckpt, teacher=SWINIR_W8)
    opt['datasets']['train']['gt_size'] = 24
    what = 'network_g' if where == 'student' else "teacher 't'"
    with pytest.raises(ValueError, match=rf'LR training patch 12 \(datasets.train.gt_size 24 / scale 2\) is not a '
                                         rf'multiple of the window size 8 of {what} \(SwinIR\).*multiple of 16'):
        build_model_from_opt(opt, tmp_path)
    opt['datasets']['train']['gt_size'] = 32
    build_model_from_opt(opt, tmp_path)


def test_student_scale_differs_from_run_scale(tmp_path):
    ckpt = save_random_net(edsr(16, 2, scale=4), str(tmp_path / 't4.pth'))
    opt = train_opt('s', str(tmp_path), ckpt, scale=4, student=edsr(8, 2, scale=2), teacher=edsr(16, 2, scale=4))
    with pytest.raises(ValueError, match='network_g upscales x2 but scale is x4'):
        build_model_from_opt(opt, tmp_path)


# ------------------------------------------------------------------------------ resume states
def test_resume_state_of_another_model_is_refused(workdir, demo_data, teacher_ckpt):
    """A FitNet state (student + adapter parameter groups) resumed by a KDModel config."""
    fitnet = short_run(demo_data, teacher_ckpt, 'switch', total_iter=2, model_type='FeatureKDModel',
                       feature_kd={'positions': ['conv_first']},
                       feature_opt={'type': 'KDFitNetLoss', 'loss_weight': 1.0})
    run_train(fitnet, workdir)
    plain = short_run(demo_data, teacher_ckpt, 'switch', total_iter=4)
    with pytest.raises(CheckpointError, match=r'optimizer has 2 parameter group\(s\), the model has 1'):
        run_train(plain, workdir, '--auto_resume')


# ------------------------------------------------------------------------------ non-finite values
def test_non_finite_loss_stops_run_and_keeps_last_good_checkpoint(workdir, demo_data, teacher_ckpt, monkeypatch):
    name = 'nan_loss'
    original = KDModel.compute_losses

    def nan_at_3(self, current_iter):
        losses = original(self, current_iter)
        if current_iter == 3:
            losses['l_kd'] = losses['l_kd'] * float('nan')
        return losses
    monkeypatch.setattr(KDModel, 'compute_losses', nan_at_3)
    with pytest.raises(FloatingPointError, match=r'Non-finite loss at iteration 3: l_pix=[\d.e+-]+, l_kd=nan'):
        run_train(short_run(demo_data, teacher_ckpt, name), workdir)
    assert list_states(workdir, name) == ['2.state']
    assert sorted(os.listdir(osp.join(experiment_dir(workdir, name), 'models'))) == ['net_g_2.pth']
    monkeypatch.setattr(KDModel, 'compute_losses', original)  # the cause is gone: resume from the last good state
    run_train(short_run(demo_data, teacher_ckpt, name), workdir, '--auto_resume')
    assert list_states(workdir, name) == ['2.state', '4.state']


def test_non_finite_weights_are_never_saved(workdir, demo_data, teacher_ckpt, monkeypatch):
    """A finite loss whose update still diverges (e.g. an overflowing gradient) at a checkpoint iteration."""
    name = 'nan_weights'
    original = KDModel.optimize_parameters

    def diverge_at_4(self, current_iter):
        original(self, current_iter)
        if current_iter == 4:
            with torch.no_grad():
                self.get_bare_model(self.net_g).conv_last.weight[0, 0, 0, 0] = float('inf')
    monkeypatch.setattr(KDModel, 'optimize_parameters', diverge_at_4)
    with pytest.raises(FloatingPointError, match=r'Non-finite weights in net_g.conv_last.weight at iteration 4: '
                                                 'not saving'):
        run_train(short_run(demo_data, teacher_ckpt, name), workdir)
    assert list_states(workdir, name) == ['2.state']
    assert not osp.exists(model_file(workdir, name, 'net_g', 4))
    assert all(torch.isfinite(v).all() for v in torch.load(model_file(workdir, name, 'net_g', 2))['params'].values())


# ------------------------------------------------------------------------------ untrusted files
class _RunsCodeOnLoad:
    """Unpickling this object calls ``os.makedirs(<path>)``: what a malicious checkpoint could do."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return os.makedirs, (self.path,)


def test_checkpoints_and_states_are_loaded_weights_only(workdir, demo_data, teacher_ckpt):
    evidence = str(workdir / 'code_ran')
    bad_teacher = str(workdir / 'evil_teacher.pth')
    torch.save({'params': torch.load(teacher_ckpt)['params'], 'payload': _RunsCodeOnLoad(evidence)}, bad_teacher)
    with pytest.raises(CheckpointError, match='as a weights-only torch file'):
        build_model_from_opt(train_opt('evil', str(workdir), bad_teacher), workdir)
    assert not osp.exists(evidence)
    with open(teacher_ckpt, 'rb') as f:
        data = f.read()
    with open(bad_teacher, 'wb') as f:  # an interrupted download or copy
        f.write(data[:len(data) // 2])
    with pytest.raises(CheckpointError, match=r"Cannot read teacher 't' .*evil_teacher.pth.* \(truncated, corrupt"):
        build_model_from_opt(train_opt('evil', str(workdir), bad_teacher), workdir)

    name = 'evil_state'
    run_train(short_run(demo_data, teacher_ckpt, name, total_iter=2), workdir)
    states = osp.join(experiment_dir(workdir, name), 'training_states')
    good = torch.load(osp.join(states, '2.state'), weights_only=True)  # our states are weights-only files
    assert set(good) == {'epoch', 'iter', 'optimizers', 'schedulers', 'rng'}
    shutil.copy(model_file(workdir, name, 'net_g', 2), model_file(workdir, name, 'net_g', 4))
    torch.save({**good, 'iter': 4, 'payload': _RunsCodeOnLoad(evidence)}, osp.join(states, '4.state'))
    with pytest.raises(CheckpointError, match=r'Cannot read training state .*4.state.* with weights_only loading'):
        run_train(short_run(demo_data, teacher_ckpt, name), workdir, '--auto_resume')
    assert not osp.exists(evidence)

    buffer = io.BytesIO()
    torch.save(good, buffer)
    with open(osp.join(states, '4.state'), 'wb') as f:  # truncated (a copy gone wrong: our own writes are atomic)
        f.write(buffer.getvalue()[:buffer.tell() // 2])
    with pytest.raises(CheckpointError, match='Remove it to resume from the previous state'):
        run_train(short_run(demo_data, teacher_ckpt, name), workdir, '--auto_resume')
    os.remove(osp.join(states, '4.state'))
    run_train(short_run(demo_data, teacher_ckpt, name), workdir, '--auto_resume')
    assert list_states(workdir, name) == ['2.state', '4.state']
