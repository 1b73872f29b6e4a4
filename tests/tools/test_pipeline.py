"""Real BasicSR train_pipeline / test_pipeline runs on the demo LMDB (tiny nets, few iterations)."""
import copy
import glob
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

from kdsr_plugins.core.kd_model import KDModel
from kdsr_testutils import (
    edsr,
    experiment_dir,
    list_states,
    model_file,
    run_ddp_check,
    run_train,
    save_random_net,
    train_opt,
    write_yaml,
)


def kd_opt(workdir, demo_data, name, **kw):
    ckpt = save_random_net(edsr(16, 2), str(workdir / 'teacher.pth'), seed=1)
    return train_opt(name, demo_data, ckpt, **kw)


@pytest.mark.slow
@pytest.mark.subprocess
def test_train_then_test_pipeline(workdir, demo_data):
    opt = kd_opt(workdir, demo_data, 'kd_pipeline', total_iter=4, val_freq=4)
    yml = write_yaml(opt, str(workdir / 'kd_pipeline.yml'))
    proc = subprocess.run([sys.executable, '-m', 'kdsr_plugins.train', '-opt', yml], cwd=workdir,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    models = osp.join(experiment_dir(workdir, 'kd_pipeline'), 'models')
    assert sorted(os.listdir(models)) == ['net_g_2.pth', 'net_g_4.pth', 'net_g_latest.pth']
    assert list_states(workdir, 'kd_pipeline') == ['2.state', '4.state']
    ckpt = torch.load(osp.join(models, 'net_g_latest.pth'))
    assert set(ckpt) == {'params', 'params_ema'}
    log = open(glob.glob(osp.join(experiment_dir(workdir, 'kd_pipeline'), 'train_*.log'))[0]).read()
    assert 'l_pix:' in log and 'l_kd:' in log

    test = {'name': 'kd_pipeline_test', 'model_type': 'KDModel', 'scale': 2, 'num_gpu': 0,
            'datasets': {'test_1': dict(opt['datasets']['val'])}, 'network_g': opt['network_g'],
            'path': {'pretrain_network_g': osp.join(models, 'net_g_latest.pth'), 'param_key_g': 'params_ema',
                     'strict_load_g': True},
            'val': {'save_img': True, 'suffix': None, 'metrics': opt['val']['metrics']}}
    proc = subprocess.run([sys.executable, '-m', 'kdsr_plugins.test', '-opt', write_yaml(test, str(workdir / 't.yml'))],
                          cwd=workdir, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result_dir = osp.join(str(workdir), 'results', 'kd_pipeline_test')
    assert len(glob.glob(osp.join(result_dir, 'visualization', 'demo_val', '*.png'))) == 2
    test_log = open(glob.glob(osp.join(result_dir, 'test_*.log'))[0]).read()
    assert '# psnr:' in test_log


@pytest.mark.slow
def test_resume_restores_saved_state_then_completes(workdir, demo_data, monkeypatch):
    name = 'kd_resume'
    run_train(kd_opt(workdir, demo_data, name, total_iter=2), workdir)
    saved_net = torch.load(model_file(workdir, name, 'net_g', 2))
    saved_state = torch.load(osp.join(experiment_dir(workdir, name), 'training_states', '2.state'),
                             weights_only=False)
    snapshots = []
    original = KDModel.resume_training

    def spy(self, state):
        original(self, state)
        snapshots.append({'params': {k: v.clone() for k, v in self.net_g.state_dict().items()},
                          'params_ema': {k: v.clone() for k, v in self.net_g_ema.state_dict().items()},
                          'optim': copy.deepcopy(self.optimizer_g.state_dict()),
                          'sched': copy.deepcopy(self.schedulers[0].state_dict()),
                          'teacher_path': self.teacher_specs[0].pretrain})
    monkeypatch.setattr(KDModel, 'resume_training', spy)
    run_train(kd_opt(workdir, demo_data, name, total_iter=4), workdir, '--auto_resume')

    snap = snapshots[0]
    for key in ('params', 'params_ema'):
        for k, v in saved_net[key].items():
            assert torch.equal(snap[key][k], v), (key, k)
    exp_state = saved_state['optimizers'][0]['state']
    for idx, moments in exp_state.items():
        for k in ('exp_avg', 'exp_avg_sq', 'step'):
            assert torch.equal(snap['optim']['state'][idx][k], moments[k])
    assert snap['sched'] == saved_state['schedulers'][0]
    assert snap['teacher_path'].endswith('teacher.pth')  # not rewritten to net_t_<iter>.pth
    assert list_states(workdir, name) == ['2.state', '4.state']
    assert osp.isfile(model_file(workdir, name, 'net_g', 'latest'))


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.ddp
def test_ddp_two_process_cpu_identical_parameters(workdir, demo_data):
    opt = kd_opt(workdir, demo_data, 'kd_ddp', total_iter=3, save_freq=100)
    result = run_ddp_check(opt, workdir)
    rank0, rank1 = result['checksums']
    assert rank0 == rank1
    assert 'l_kd' in result['log']


@pytest.mark.slow
def test_resume_is_bit_exact_with_an_uninterrupted_run(workdir, demo_data):
    """8 train images, batch 2: 4 iterations per epoch; interrupt mid-epoch (iteration 3) and resume."""
    ckpt = save_random_net(edsr(16, 2), str(workdir / 'teacher.pth'), seed=1)
    full = train_opt('full', demo_data, ckpt, total_iter=6, save_freq=3, val_freq=3)
    run_train(full, workdir)
    part = train_opt('part', demo_data, ckpt, total_iter=3, save_freq=3, val_freq=2)
    run_train(part, workdir)
    part['train']['total_iter'] = 6
    run_train(part, workdir, '--auto_resume')
    a = torch.load(model_file(workdir, 'full', 'net_g', 'latest'))
    b = torch.load(model_file(workdir, 'part', 'net_g', 'latest'))
    for key in ('params', 'params_ema'):
        for name, value in a[key].items():
            assert torch.equal(value, b[key][name]), (key, name)
