"""Shared fixtures and markers. The plugin import is at top level (spawned workers re-import this module).

Markers (``bash run_tests.sh --fast`` deselects all three): ``slow`` (more than ~3 s),
``subprocess`` (spawns Python processes), ``ddp`` (2-process torchrun runs; also ``subprocess``).
"""
import json
import os
import os.path as osp
import sys

import kdsr_plugins  # noqa: F401

import pytest
import torch

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))  # kdsr_testutils, fault_train, ddp_*_check
from kdsr_testutils import edsr, save_random_net  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: takes more than ~3 s (deselected by run_tests.sh --fast)')
    config.addinivalue_line('markers', 'subprocess: spawns Python processes (deselected by run_tests.sh --fast)')
    config.addinivalue_line('markers', 'ddp: 2-process torchrun DDP run (deselected by run_tests.sh --fast)')


@pytest.fixture(scope='session')
def demo_data(tmp_path_factory):
    """A small demo dataset (x2, x4), built once per test session."""
    from kdsr_plugins.data_prep.demo import build_demo_dataset

    root = tmp_path_factory.mktemp('demo_data')
    build_demo_dataset(str(root), scales=(2, 4), max_train_images=8)
    return str(root)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """Run in an empty directory (BasicSR writes experiments/ and results/ under the CWD)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope='module')
def single_thread():
    """One intra-op thread for a module of tiny-net tests (threading only adds overhead there)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def cpu_fp16_allowed(monkeypatch):
    """Models built in the test accept fp16 on CPU (normally refused), so the loss-scaler path runs here."""
    from kdsr_plugins.core import amp as amp_module
    real = amp_module.MixedPrecision
    for module in ('kdsr_plugins.core.kd_model', 'kdsr_plugins.core.amp_sr_model'):
        monkeypatch.setattr(f'{module}.MixedPrecision', lambda *a, **k: real(*a, allow_cpu_fp16=True, **k))


@pytest.fixture
def teacher_ckpt(tmp_path):
    """The default KD teacher: EDSR f16 b2 x2, seed 1, saved as ``<tmp_path>/teacher.pth`` (``params``)."""
    return save_random_net(edsr(16, 2), str(tmp_path / 'teacher.pth'), seed=1)


@pytest.fixture(scope='session')
def random_ckpt(tmp_path_factory):
    """Factory ``random_ckpt(net_opt, seed=0, param_key='params') -> path`` of a seeded random-weight checkpoint.

    One file per (network, seed, key) for the whole session: callers must not modify it.
    """
    root = tmp_path_factory.mktemp('random_ckpts')
    made: dict[str, str] = {}

    def make(net_opt: dict, seed: int = 0, param_key: str = 'params') -> str:
        key = json.dumps([net_opt, seed, param_key], sort_keys=True)
        if key not in made:
            made[key] = save_random_net(net_opt, str(root / f'net{len(made)}.pth'), seed=seed, param_key=param_key)
        return made[key]
    return make


@pytest.fixture(scope='session')
def mtkd_ckpts(random_ckpt):
    """Teachers of the tiny MTKD runs (x4): EDSR f8 b1 (seed 1), SwinIR (seed 2)."""
    from kdsr_testutils import MTKD_SCALE, mtkd_swinir

    return {'edsr': random_ckpt(edsr(8, 1, MTKD_SCALE), seed=1), 'swinir': random_ckpt(mtkd_swinir(), seed=2)}


@pytest.fixture(scope='session')
def mtkd_stage1(tmp_path_factory, demo_data, mtkd_ckpts):
    """One real MTKD stage-1 train_pipeline run (2 iterations, validation with teachers at the end)."""
    from kdsr_testutils import logged_run, model_file, mtkd_stage1_opt

    root = tmp_path_factory.mktemp('mtkd_stage1')
    old = os.getcwd()
    os.chdir(root)
    try:
        opt = mtkd_stage1_opt('mtkd_s1', demo_data, mtkd_ckpts, total_iter=2, val_freq=2, save_freq=2)
        log = logged_run(opt, root)
    finally:
        os.chdir(old)
    return {'root': root, 'opt': opt, 'ckpt': model_file(root, 'mtkd_s1', 'net_g', 'latest'), 'log': log}
