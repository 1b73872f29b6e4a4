"""bench/gpu_check.py on CPU (tiny data): every step runs and the gpu.md-style report is written."""
from __future__ import annotations

import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SCRIPT = osp.join(ROOT, 'bench', 'gpu_check.py')
MODELS = ['KDModel', 'FeatureKDModel (FAKD)', 'FeatureKDModel (FitNet)', 'DUKDModel', 'MiPKDModel',
          'MTKDAggregatorModel', 'MTKDStudentModel']


def _run(*args: str, cwd: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, SCRIPT, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=900)


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.ddp
def test_gpu_check_runs_on_cpu_and_writes_report(tmp_path):
    out = tmp_path / 'gpu.md'
    proc = _run('--device', 'cpu', '--amp', 'off', '--size', 'tiny', '--iters', '1', '--warmup', '1',
                '--work', str(tmp_path / 'work'), '--out', str(out), cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = out.read_text()
    assert text.startswith('# GPU check') and 'Command: `python bench/gpu_check.py --device cpu' in text
    assert 'date: ' in text and 'CPU' in text
    for model in MODELS:
        assert f'| {model} | off | false | ' in text, model
    assert 'kdsr_plugins.train` then `python -m kdsr_plugins.test' in text
    assert '| resume (MiPKDModel' in text and 'torchrun --nproc_per_node 1` (gloo' in text
    assert text.rstrip().endswith('All steps passed.')


@pytest.mark.subprocess
def test_gpu_check_fails_loudly(tmp_path):
    proc = _run('--amp', 'off,fp8', cwd=str(tmp_path))
    assert proc.returncode == 2 and '--amp' in proc.stderr
    if not torch.cuda.is_available():
        proc = _run('--device', 'cuda', '--out', str(tmp_path / 'gpu.md'), cwd=str(tmp_path))
        assert proc.returncode == 1 and 'FAILED: setup: --device cuda' in proc.stderr
        assert not (tmp_path / 'gpu.md').exists()
