"""Run the demo's trainings and tests through the real entry points and collect the metrics."""
from __future__ import annotations

import glob
import os
import os.path as osp
import re
import subprocess
import sys
import time

import yaml

METRIC_RE = re.compile(r'#\s*(psnr|ssim):\s*([-\d.]+)')


class DemoStepError(RuntimeError):
    """A training or test subprocess of the demo failed."""


def write_yaml(opt: dict, path: str) -> str:
    os.makedirs(osp.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    return path


def run_entry_point(module: str, yml: str, cwd: str, log_path: str, extra_args: tuple[str, ...] = ()) -> float:
    """Run ``python -m <module> -opt <yml>`` in ``cwd``; return seconds; raise with the log tail on failure."""
    start = time.time()
    with open(log_path, 'w') as log:
        proc = subprocess.run([sys.executable, '-m', module, '-opt', yml, *extra_args], cwd=cwd, stdout=log,
                              stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = open(log_path).read()[-3000:]
        raise DemoStepError(f'{module} -opt {yml} failed (exit {proc.returncode}); log {log_path}:\n{tail}')
    return time.time() - start


def read_test_metrics(results_root: str, test_name: str) -> dict[str, float]:
    """Parse PSNR/SSIM from the newest ``results/<name>/test_*.log`` written by BasicSR."""
    logs = sorted(glob.glob(osp.join(results_root, test_name, f'test_{test_name}_*.log')), key=osp.getmtime)
    if not logs:
        raise DemoStepError(f'No test log for {test_name} under {results_root}')
    values = {}
    for name, value in METRIC_RE.findall(open(logs[-1]).read()):
        values.setdefault(name, float(value))  # first occurrence: the current value, not "Best"
    return values


def format_table(rows: list[dict], title: str) -> str:
    lines = [f'### {title}', '', '| Model | Params | PSNR (Y) | SSIM (Y) | Train time (s) |',
             '|---|---:|---:|---:|---:|']
    for row in rows:
        train_time = f'{row["train_s"]:.0f}' if row.get('train_s') is not None else '-'
        lines.append(f'| {row["label"]} | {row["params"]:,d} | {row["psnr"]:.3f} | {row["ssim"]:.4f} | {train_time} |')
    return '\n'.join(lines) + '\n'
