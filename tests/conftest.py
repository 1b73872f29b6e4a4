"""Shared fixtures. The plugin import is at top level (spawned workers re-import this module)."""
import os

import pytest
import torch

import kdsr_plugins  # noqa: F401

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


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
