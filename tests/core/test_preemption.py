"""Preemption and distributed exits: SIGTERM -> resumable state -> ``--auto_resume``; DDP resume bit-exact;
stale ``*.tmp<pid>`` files removed at start; a finished ``torchrun`` run exits 0 every time.

The SIGTERM runs use ``tests/fault_train.py`` (``KDSR_FAULT_PAUSE=term:<k>``): rank 0 stops after
the optimizer step of iteration k, writes a marker and waits until its SIGTERM handler has run;
the test sends SIGTERM once the marker exists, so the stop iteration is deterministic. The run
must then finish iteration k, save ``net_g_<k>.pth`` and ``<k>.state`` and exit with 143.
"""
from __future__ import annotations

import os
import os.path as osp
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from test_fault_tolerance import (  # noqa: F401
    FAULT_TRAIN,
    TIMEOUT,
    assert_same,
    ckpts,
    final_weights,
    model_opt,
    references,
    resume_run,
    saved_checkpoint,
    subprocess_env,
)

from kdsr_plugins.compat import find_latest_state
from kdsr_plugins.core import preemption
from kdsr_plugins.core.checkpoints import load_training_state_file
from kdsr_plugins.core.resume import rng_state_for_rank
from kdsr_testutils import (
    edsr,
    experiment_dir,
    free_port,
    model_file,
    save_random_net,
    train_opt,
    write_yaml,
)

MODEL = 'DUKDModel'  # random zoom-out / noise draws in every step, plus flip/rotation augmentation
STOP_AT = 3


def dead_pid() -> int:
    """The id of a process that has just exited."""
    proc = subprocess.Popen([sys.executable, '-c', 'pass'])
    proc.wait()
    return proc.pid


def read(path: str) -> str:
    with open(path) as f:
        return f.read()


def start_run(cmd: list[str], cwd: str, log: str, **env: str) -> subprocess.Popen:
    with open(log, 'w') as out:
        return subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=subprocess_env(**env),
                                start_new_session=True)


def sigterm_when_paused(proc: subprocess.Popen, marker: str, log: str, group: bool = False) -> int:
    """Wait for the marker, send SIGTERM (to the whole process group with ``group``), return the exit status."""
    deadline = time.monotonic() + TIMEOUT
    while not osp.exists(marker):
        if proc.poll() is not None:
            pytest.fail(f'training ended (rc {proc.returncode}) before iteration {STOP_AT}:\n{read(log)[-3000:]}')
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail('training did not reach the stop point in time')
        time.sleep(0.05)
    if group:
        os.killpg(proc.pid, signal.SIGTERM)  # as SLURM does: every process of the job step
    else:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f'no exit within 120 s of SIGTERM:\n{read(log)[-3000:]}')


# ----------------------------------------------------------------------------------- unit level
def test_stale_temp_files_are_removed_only_when_their_writer_is_gone(tmp_path):
    gone, alive = dead_pid(), os.getpid()
    names = [f'net_g_4.pth.tmp{gone}', f'4.state.tmp{gone}', f'net_g_6.pth.tmp{alive}', 'notes.tmp', 'x.tmpabc',
             'net_g_4.pth']
    for name in names:
        (tmp_path / name).write_bytes(b'x')
    removed = preemption.remove_stale_temp_files([str(tmp_path), str(tmp_path / 'missing')])
    assert sorted(osp.basename(p) for p in removed) == sorted(names[:2])
    assert sorted(os.listdir(tmp_path)) == sorted(names[2:])
    preemption._STATE['removed'] = []


def test_rank_k_restores_entry_k_of_the_saved_random_states():
    states = [{'rank': 0}, {'rank': 1}]
    assert rng_state_for_rank({'rng': None, 'rng_ranks': states}, 1, 2) == ({'rank': 1}, None)
    assert rng_state_for_rank({'rng': None, 'rng_ranks': states}, 0, 2) == ({'rank': 0}, None)
    rng, warning = rng_state_for_rank({'rng': None, 'rng_ranks': states}, 0, 4)
    assert rng is None and 'this run has 4' in warning
    rng, warning = rng_state_for_rank({'rng': {'single': True}}, 0, 2)
    assert rng is None and 'single-process' in warning
    assert rng_state_for_rank({'rng': {'single': True}}, 0, 1) == ({'single': True}, None)


def test_sigterm_handler_only_sets_a_flag():
    assert preemption.PREEMPTED_EXIT_CODE == 143
    try:
        assert preemption.install_sigterm_handler()
        assert not preemption.stop_requested()
        os.kill(os.getpid(), signal.SIGTERM)  # would end pytest without the handler
        time.sleep(0.05)
        assert preemption.stop_requested()
    finally:
        preemption.uninstall_sigterm_handler()
    assert signal.getsignal(signal.SIGTERM) is not preemption._on_sigterm
    preemption.check_preemption(0)  # not installed: no-op


# ----------------------------------------------------------------------------------- single process
@pytest.mark.slow
@pytest.mark.subprocess
def test_sigterm_saves_the_current_iteration_and_auto_resume_is_exact(workdir, demo_data, ckpts, references):  # noqa: F811
    root, name = str(workdir), f'sigterm_{MODEL}'
    yml = write_yaml(model_opt(MODEL, name, demo_data, ckpts), osp.join(root, f'{name}.yml'))
    marker, log = osp.join(root, 'paused'), osp.join(root, 'stopped.log')
    proc = start_run([sys.executable, FAULT_TRAIN, '-opt', yml], root, log, KDSR_FAULT_PAUSE=f'term:{STOP_AT}',
                     KDSR_FAULT_MARKER=marker)
    try:
        reference = references(MODEL)  # in-process, while the subprocess starts up
    finally:
        rc = sigterm_when_paused(proc, marker, log)
    text = read(log)
    assert rc == 143, text[-3000:]
    assert f'SIGTERM received: saving the checkpoint and training state of iteration {STOP_AT}' in text
    assert f'Preempted at iteration {STOP_AT}: resumable state saved.' in text
    states_dir = osp.join(experiment_dir(root, name), 'training_states')
    models_dir = osp.join(experiment_dir(root, name), 'models')
    assert find_latest_state(states_dir) == osp.join(states_dir, f'{STOP_AT}.state')
    assert osp.isfile(model_file(root, name, 'net_g', STOP_AT))
    assert not osp.exists(model_file(root, name, 'net_g', 'latest'))
    saved = saved_checkpoint(root, name, STOP_AT, with_aux=False)
    assert saved['state']['iter'] == STOP_AT and saved['state']['rng'] is not None

    # leftovers of killed writes: removed at start when their writer is gone, kept when it is alive
    gone = dead_pid()
    stale = [osp.join(models_dir, f'net_g_4.pth.tmp{gone}'), osp.join(states_dir, f'4.state.tmp{gone}')]
    live = osp.join(models_dir, f'net_g_8.pth.tmp{os.getpid()}')
    for path in stale + [live]:
        with open(path, 'wb') as f:
            f.write(b'partial')

    dump = osp.join(root, 'resumed_state.pt')
    text = resume_run(yml, root, dump, osp.join(root, 'resumed.log'))
    assert f'Resuming training from epoch: {saved["state"]["epoch"]}, iter: {STOP_AT}.' in text
    assert 'restored the random states' in text
    assert int(re.search(r'iter:\s+(\d+),', text).group(1)) == STOP_AT + 1
    assert 'Removed 2 stale temporary file(s)' in text
    assert not any(osp.exists(p) for p in stale) and osp.exists(live)
    restored = torch.load(dump, map_location='cpu', weights_only=True)
    assert_same(restored['params'], saved['params'], 'params')
    assert_same(restored['optimizers'], saved['state']['optimizers'], 'optimizers')
    assert_same(final_weights(root, name, False), reference, f'{MODEL}: final weights vs uninterrupted run')


# ----------------------------------------------------------------------------------- DDP
def torchrun(script_args: list[str], nproc: int = 2) -> list[str]:
    return [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', str(nproc), '--master_port',
            str(free_port()), *script_args, '--launcher', 'pytorch']


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.ddp
def test_ddp_sigterm_then_auto_resume_is_bit_exact(workdir, demo_data, ckpts):  # noqa: F811
    """2 ranks: uninterrupted vs SIGTERM at iteration 3 + ``--auto_resume``; every rank's random states restored."""
    root = str(workdir)
    ref_name, name = f'ddp_ref_{MODEL}', f'ddp_sigterm_{MODEL}'
    ref_yml = write_yaml(model_opt(MODEL, ref_name, demo_data, ckpts), osp.join(root, f'{ref_name}.yml'))
    yml = write_yaml(model_opt(MODEL, name, demo_data, ckpts), osp.join(root, f'{name}.yml'))
    ref = subprocess.run(torchrun([FAULT_TRAIN, '-opt', ref_yml]), cwd=root, env=subprocess_env(), timeout=TIMEOUT,
                         capture_output=True, text=True, check=False)
    assert ref.returncode == 0, ref.stdout[-2000:] + ref.stderr[-3000:]

    marker, log = osp.join(root, 'paused'), osp.join(root, 'stopped.log')
    proc = start_run(torchrun([FAULT_TRAIN, '-opt', yml]), root, log, KDSR_FAULT_PAUSE=f'term:{STOP_AT}',
                     KDSR_FAULT_MARKER=marker)
    rc = sigterm_when_paused(proc, marker, log, group=True)
    text = read(log)
    assert rc != 0, 'a preempted run must not report success'
    assert f'Preempted at iteration {STOP_AT}: resumable state saved.' in text, text[-4000:]
    states_dir = osp.join(experiment_dir(root, name), 'training_states')
    assert find_latest_state(states_dir) == osp.join(states_dir, f'{STOP_AT}.state')
    state = load_training_state_file(osp.join(states_dir, f'{STOP_AT}.state'))
    assert state['rng'] is None and len(state['rng_ranks']) == 2
    assert not torch.equal(state['rng_ranks'][0]['torch'], state['rng_ranks'][1]['torch'])  # ranks draw differently

    resumed = subprocess.run(torchrun([FAULT_TRAIN, '-opt', yml, '--auto_resume']), cwd=root, env=subprocess_env(),
                             timeout=TIMEOUT, capture_output=True, text=True, check=False)
    out = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, out[-4000:]
    assert f'Resuming training from epoch: {state["epoch"]}, iter: {STOP_AT}.' in out
    assert 'restored the random states' in out
    assert_same(final_weights(root, name, False), final_weights(root, ref_name, False),
                'DDP: final weights vs uninterrupted 2-process run')


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.ddp
def test_finished_torchrun_run_exits_zero_ten_times_in_a_row(workdir, demo_data):
    """``torchrun -m kdsr_plugins.train``: 2 ranks, tiny nets, 2 iterations, 10 repeats, each exit status 0."""
    teacher = save_random_net(edsr(4, 1), str(workdir / 'teacher.pth'), seed=1)
    opt = train_opt('ddp_exit', demo_data, teacher, total_iter=2, save_freq=100, student=edsr(4, 1),
                    teacher=edsr(4, 1), ema=0)
    del opt['val'], opt['datasets']['val']
    yml = write_yaml(opt, osp.join(str(workdir), 'ddp_exit.yml'))
    for repeat in range(10):
        cwd = workdir / f'run{repeat}'
        cwd.mkdir()
        proc = subprocess.run(torchrun(['-m', 'kdsr_plugins.train', '-opt', yml]), cwd=str(cwd),
                              env=subprocess_env(), timeout=TIMEOUT, capture_output=True, text=True, check=False)
        assert proc.returncode == 0, (repeat, proc.stdout[-2000:], proc.stderr[-4000:])
        assert osp.isfile(model_file(str(cwd), 'ddp_exit', 'net_g', 'latest')), repeat
