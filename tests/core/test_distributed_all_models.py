"""2-process CPU DDP (torchrun, gloo) for the model without its own DDP test, plus logging and validation.

The other models have their DDP test next to them (see docs/guarantees.md):
``test_pipeline.py::test_ddp_two_process_cpu_identical_parameters`` (KDModel),
``test_feature_kd_model.py::test_ddp_two_process_fitnet_identical_student_and_adapters``,
``test_dukd_model.py::test_ddp_two_process_cpu_identical_parameters``,
``test_mipkd.py::test_ddp_two_process_cpu_identical_student_and_mixers``,
``test_mtkd_models.py::test_stage2_ddp_two_process_cpu`` (MTKDStudentModel).

Here MTKDAggregatorModel (MTKD stage 1) trains under DDP with validation during and after
training and no EMA, so validation runs the DDP-trained network itself; ``tests/ddp_hardening_check.py``
reports per rank what was computed, logged and evaluated.
"""
from __future__ import annotations

import glob
import json
import os
import os.path as osp
import subprocess
import sys

import pytest

from kdsr_testutils import (
    TESTS_DIR,
    aggregator,
    edsr,
    experiment_dir,
    free_port,
    save_random_net,
    swinir,
    train_opt,
    write_yaml,
)

SCALE = 2


def torchrun_check(opt: dict, workdir) -> dict:
    """Train ``opt`` with 2 processes under torchrun and return ``ddp_hardening_check.py``'s report."""
    yml = write_yaml(opt, str(workdir / f'{opt["name"]}.yml'))
    out = str(workdir / f'{opt["name"]}.json')
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_port', str(free_port()),
           osp.join(TESTS_DIR, 'ddp_hardening_check.py'), '-opt', yml, '--launcher', 'pytorch', '--out', out]
    proc = subprocess.run(cmd, cwd=workdir, env=dict(os.environ, OMP_NUM_THREADS='1'), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-4000:])
    with open(out) as f:
        result = json.load(f)
    assert result['world_size'] == 2
    return result


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.ddp
def test_ddp_mtkd_aggregator_identical_ranks_reduced_logs_single_validation(workdir, demo_data):
    swin = swinir(SCALE)
    name = 'mtkd_s1_ddp'
    opt = train_opt(name, demo_data, None, model_type='MTKDAggregatorModel', scale=SCALE, total_iter=3,
                    student=aggregator(2, SCALE), ema=0, save_freq=100, val_freq=2)
    opt['teachers'] = [
        {'name': 'edsr', 'network': edsr(8, 1), 'pretrain': save_random_net(edsr(8, 1), str(workdir / 'e.pth'), 1)},
        {'name': 'swinir', 'network': swin, 'pretrain': save_random_net(swin, str(workdir / 's.pth'), 2)}]
    del opt['train']['kd_opt']
    result = torchrun_check(opt, workdir)

    rank0, rank1 = result['checksums']
    assert rank0 == rank1, 'aggregator parameters differ between ranks'

    # logged losses are reduced across ranks: rank 0 logs the mean of both ranks' local terms
    local0, local1 = result['local_losses']
    logged = result['logged'][0]
    assert len(logged) == len(local0) == len(local1) == 3
    for it, (log, a, b) in enumerate(zip(logged, local0, local1), 1):
        assert set(log) == set(a) == {'l_pix'}
        assert a['l_pix'] != b['l_pix'], 'the ranks trained on the same data'
        assert log['l_pix'] == pytest.approx((a['l_pix'] + b['l_pix']) / 2, rel=1e-6), it

    # validation (at iteration 2 and after training) runs on rank 0 only, once each time
    assert result['validations'] == [2, 0]
    assert 'psnr' in result['metrics'][0] and result['metrics'][1] == {}
    (log_file,) = glob.glob(osp.join(experiment_dir(workdir, name), 'train_*.log'))
    with open(log_file) as f:
        text = f.read()
    assert text.count('Validation demo_val') == 2
    assert text.count('# psnr:') == 2
