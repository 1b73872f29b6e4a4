"""Fault tolerance of every KD model: SIGKILL during training or checkpoint writing, then ``--auto_resume``.

Each case trains ``python -m kdsr_plugins.train`` (through ``tests/fault_train.py``, which adds
the fault hooks) as a subprocess: tiny nets, demo LMDB, 6 iterations, a checkpoint every 2. The
run is stopped at a seeded random point (after the optimizer step of an iteration, or inside
``atomic_torch_save`` after the temporary file of a checkpoint is written and before it is
published) and killed with SIGKILL; a second process resumes with ``--auto_resume``. Checked:

* the newest *complete* state is chosen (a ``*.tmp<pid>`` file never is) and the resumed run
  starts from it (log lines, first iteration logged);
* everything the resumed model holds equals the files of that checkpoint: student ``params``
  and ``params_ema``, auxiliary modules, optimizer state (moments, steps), schedulers, iteration;
* the run completes, and its final weights equal those of an uninterrupted run bit for bit
  (random states and data position are restored; all models are deterministic on CPU).

``KDSR_FAULT_SEED`` changes the seed of the kill points (default 0).
"""
from __future__ import annotations

import os
import os.path as osp
import random
import re
import subprocess
import sys
import time
from typing import Any

import pytest
import torch

from kdsr_plugins.compat import find_latest_state
from kdsr_plugins.core.checkpoints import load_training_state_file
from kdsr_testutils import (
    TESTS_DIR,
    aggregator,
    edsr,
    experiment_dir,
    model_file,
    run_train,
    swinir,
    train_opt,
    write_yaml,
)

FAULT_TRAIN = osp.join(TESTS_DIR, 'fault_train.py')
SEED = int(os.environ.get('KDSR_FAULT_SEED', '0'))
SCALE, TOTAL, SAVE = 2, 6, 2
pytestmark = [pytest.mark.slow, pytest.mark.subprocess]  # every case trains in killed and resumed subprocesses
MODELS = ('KDModel', 'FeatureKDModel', 'DUKDModel', 'MiPKDModel', 'MTKDAggregatorModel', 'MTKDStudentModel')
WITH_AUX = ('FeatureKDModel', 'MiPKDModel')
TIMEOUT = 300


# ----------------------------------------------------------------------------------- option dicts
def swinir_tiny() -> dict:
    return swinir(SCALE)


def aggregator_net() -> dict:
    return aggregator(2, SCALE)


@pytest.fixture(scope='module')
def ckpts(random_ckpt) -> dict[str, str]:
    """Random-weight teachers (and a stage-1 aggregator) saved BasicSR-style."""
    return {'edsr16': random_ckpt(edsr(16, 2), seed=1), 'edsr16b4': random_ckpt(edsr(16, 4), seed=2),
            'edsr8': random_ckpt(edsr(8, 1), seed=3), 'swinir': random_ckpt(swinir_tiny(), seed=4),
            'aggregator': random_ckpt(aggregator_net(), seed=5)}


def model_opt(model: str, name: str, data_root: str, ckpts: dict[str, str]) -> dict:
    """A tiny training run of ``model``: x2, GT patch 32, batch 2, 6 iterations, save every 2, no validation."""
    teacher = ckpts['edsr16b4'] if model == 'MiPKDModel' else ckpts['edsr16']
    opt = train_opt(name, data_root, teacher, scale=SCALE, total_iter=TOTAL, save_freq=SAVE, model_type=model,
                    teacher=edsr(16, 4) if model == 'MiPKDModel' else edsr(16, 2))
    del opt['val'], opt['datasets']['val']
    train = opt['train']
    if model == 'FeatureKDModel':  # FitNet: 1x1 adapters 8 -> 16 channels are auxiliary modules
        train['feature_kd'] = {'positions_t': ['conv_first', 0, 1, 'conv_after_body'],
                               'positions_s': ['conv_first', 0, 1, 'conv_after_body']}
        train['feature_opt'] = {'type': 'KDFitNetLoss', 'loss_weight': 10.0, 'distance': 'l1'}
    elif model == 'DUKDModel':
        train['dukd_opt'] = {'zoom_out': True}
        train['noisy'] = {'prob': 0.3}
    elif model == 'MiPKDModel':
        train['mipkd_opt'] = {'positions_t': [1, 3], 'positions_s': [0, 1]}
        opt['find_unused_parameters'] = True
    elif model.startswith('MTKD'):
        del opt['network_t'], opt['path']['pretrain_network_t']
        opt['teachers'] = [{'name': 'edsr', 'network': edsr(8, 1), 'pretrain': ckpts['edsr8']},
                           {'name': 'swinir', 'network': swinir_tiny(), 'pretrain': ckpts['swinir']}]
        if model == 'MTKDAggregatorModel':
            opt['network_g'] = aggregator_net()
            del train['kd_opt']
        else:
            opt['aggregator'] = {'network': aggregator_net(), 'pretrain': ckpts['aggregator'],
                                 'teacher_order': ['edsr', 'swinir']}
            train['kd_opt'] = {'type': 'KDWaveletLoss', 'loss_weight': 1.0, 'levels': 1}
            train['pixel_opt']['loss_weight'] = 0.1
    return opt


# ----------------------------------------------------------------------------------- fault plans
def fault_plan(model: str) -> tuple[str, int]:
    """Seeded random kill point of ``model``: (``KDSR_FAULT_PAUSE`` value, expected resume iteration).

    Half of the draws stop after the optimizer step of an iteration in 3..6 (the newest complete
    state is then the last multiple of 2 before it); the others stop while one file of the
    checkpoint of iteration 4 or 6 is being written (the newest complete state is the previous one).
    """
    rng = random.Random(f'{SEED}-{model}')
    if rng.random() < 0.5:
        k = rng.randint(SAVE + 1, TOTAL)
        return f'step:{k}', SAVE * ((k - 1) // SAVE)
    k = rng.choice(range(2 * SAVE, TOTAL + 1, SAVE))
    files = [f'net_g_{k}.pth'] + ([f'net_aux_{k}.pth'] if model in WITH_AUX else []) + [f'{k}.state']
    return f'write:{rng.choice(files)}', k - SAVE


# ----------------------------------------------------------------------------------- helpers
def subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1', **extra)
    for key in ('KDSR_FAULT_PAUSE', 'KDSR_FAULT_MARKER', 'KDSR_FAULT_DUMP'):
        if key not in extra:
            env.pop(key, None)
    return env


def start_killed_run(yml: str, cwd: str, pause: str, log: str) -> tuple[subprocess.Popen, str]:
    marker = osp.join(cwd, f'{osp.basename(yml)}.paused')
    with open(log, 'w') as out:
        proc = subprocess.Popen([sys.executable, FAULT_TRAIN, '-opt', yml], cwd=cwd, stdout=out,
                                stderr=subprocess.STDOUT, env=subprocess_env(KDSR_FAULT_PAUSE=pause,
                                                                             KDSR_FAULT_MARKER=marker))
    return proc, marker


def kill_when_paused(proc: subprocess.Popen, marker: str, log: str) -> str:
    """Wait for the pause marker, then SIGKILL the process; returns where it paused."""
    deadline = time.monotonic() + TIMEOUT
    while not osp.exists(marker):
        if proc.poll() is not None:
            pytest.fail(f'training ended (rc {proc.returncode}) before the fault point:\n{open(log).read()[-3000:]}')
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail('training did not reach the fault point in time')
        time.sleep(0.05)
    proc.kill()  # SIGKILL: no handler, no cleanup, no flush
    assert proc.wait(timeout=30) == -9
    with open(marker) as f:
        return f.read()


def resume_run(yml: str, cwd: str, dump: str, log: str) -> str:
    with open(log, 'w') as out:
        proc = subprocess.run([sys.executable, FAULT_TRAIN, '-opt', yml, '--auto_resume'], cwd=cwd, stdout=out,
                              stderr=subprocess.STDOUT, env=subprocess_env(KDSR_FAULT_DUMP=dump), timeout=TIMEOUT)
    text = open(log).read()
    assert proc.returncode == 0, text[-4000:]
    return text


def assert_same(a: Any, b: Any, where: str) -> None:
    """Exact equality of nested state (tensors compared with ``torch.equal`` and dtype)."""
    if torch.is_tensor(a):
        assert torch.is_tensor(b) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), (where, sorted(a), sorted(b))
        for key in a:
            assert_same(a[key], b[key], f'{where}.{key}')
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f'{where}[{i}]')
    else:
        assert a == b, (where, a, b)


def load_weights(path: str) -> dict:
    return torch.load(path, map_location='cpu', weights_only=True)


def saved_checkpoint(root: str, name: str, it: int, with_aux: bool) -> dict:
    """The files of the checkpoint of iteration ``it``, loaded as the resume must see them."""
    ckpt = load_weights(model_file(root, name, 'net_g', it))
    saved = {'params': ckpt['params'], 'params_ema': ckpt['params_ema'],
             'state': load_training_state_file(osp.join(experiment_dir(root, name), 'training_states', f'{it}.state'))}
    if with_aux:
        saved['aux'] = load_weights(model_file(root, name, 'net_aux', it))['params']
    return saved


def final_weights(root: str, name: str, with_aux: bool) -> dict:
    out = {k: v for k, v in load_weights(model_file(root, name, 'net_g', 'latest')).items() if k != 'kd_meta'}
    if with_aux:
        out['aux'] = load_weights(model_file(root, name, 'net_aux', 'latest'))['params']
    return out


@pytest.fixture(scope='module')
def references(tmp_path_factory, demo_data, ckpts):
    """Final weights of uninterrupted in-process runs (one thread, as the subprocesses), per model."""
    root = tmp_path_factory.mktemp('fault_references')
    cache: dict[str, dict] = {}

    def get(model: str) -> dict:
        if model not in cache:
            threads, cwd = torch.get_num_threads(), os.getcwd()
            torch.set_num_threads(1)
            os.chdir(root)
            try:
                run_train(model_opt(model, f'ref_{model}', demo_data, ckpts), str(root))
            finally:
                os.chdir(cwd)
                torch.set_num_threads(threads)
            cache[model] = final_weights(str(root), f'ref_{model}', model in WITH_AUX)
        return cache[model]
    return get


def kill_and_resume(model: str, pause: str, expected: int, workdir, demo_data, ckpts, references) -> None:
    """The whole scenario for one model and one fault point (see the module docstring)."""
    name, root = f'ft_{model}', str(workdir)
    with_aux = model in WITH_AUX
    yml = write_yaml(model_opt(model, name, demo_data, ckpts), osp.join(root, f'{name}.yml'))
    killed_log, resumed_log = osp.join(root, 'killed.log'), osp.join(root, 'resumed.log')
    proc, marker = start_killed_run(yml, root, pause, killed_log)
    try:
        reference = references(model)  # in-process, while the subprocess starts up
    finally:
        where = kill_when_paused(proc, marker, killed_log)

    states_dir = osp.join(experiment_dir(root, name), 'training_states')
    models_dir = osp.join(experiment_dir(root, name), 'models')
    leftovers = sorted(f for d in (states_dir, models_dir) for f in os.listdir(d) if '.tmp' in f)
    if pause.startswith('write:'):  # killed mid-write: the temporary file is there, the target is not
        target = pause.split(':', 1)[1]
        assert leftovers and all(f.startswith(target + '.tmp') for f in leftovers), (where, leftovers)
        assert not osp.exists(osp.join(states_dir if target.endswith('.state') else models_dir, target))
    else:
        assert not leftovers, leftovers
    latest = find_latest_state(states_dir)
    assert latest == osp.join(states_dir, f'{expected}.state'), (pause, where, sorted(os.listdir(states_dir)))
    saved = saved_checkpoint(root, name, expected, with_aux)

    dump = osp.join(root, 'resumed_state.pt')
    text = resume_run(yml, root, dump, resumed_log)
    epoch = saved['state']['epoch']
    assert f'Resuming training from epoch: {epoch}, iter: {expected}.' in text
    assert re.search(r'Resume: skipped \d+ already-trained batches .* restored the random states', text)
    first_iter = int(re.search(r'iter:\s+(\d+),', text).group(1))
    assert first_iter == expected + 1

    restored = torch.load(dump, map_location='cpu', weights_only=True)
    assert restored['iter'] == expected and restored['epoch'] == epoch
    assert_same(restored['params'], saved['params'], 'params')
    assert_same(restored['params_ema'], saved['params_ema'], 'params_ema')
    if with_aux:
        assert_same(restored['aux'], saved['aux'], 'net_aux')
    else:
        assert 'aux' not in restored
    assert_same(restored['optimizers'], saved['state']['optimizers'], 'optimizers')
    assert restored['optimizers'][0]['state'], 'Adam moments were restored'
    assert_same(restored['schedulers'], saved['state']['schedulers'], 'schedulers')

    assert sorted(f for f in os.listdir(states_dir) if f.endswith('.state')) == ['2.state', '4.state', '6.state']
    assert_same(final_weights(root, name, with_aux), reference, f'{model}: final weights vs uninterrupted run')


# ----------------------------------------------------------------------------------- tests
@pytest.mark.parametrize('model', MODELS)
def test_sigkill_at_random_point_then_auto_resume_is_exact(model, workdir, demo_data, ckpts, references):
    pause, expected = fault_plan(model)
    kill_and_resume(model, pause, expected, workdir, demo_data, ckpts, references)


def test_sigkill_while_writing_the_training_state(workdir, demo_data, ckpts, references):
    """Killed after ``net_g_4.pth`` is complete but before ``4.state`` is published: resume from 2."""
    kill_and_resume('KDModel', 'write:4.state', 2, workdir, demo_data, ckpts, references)
