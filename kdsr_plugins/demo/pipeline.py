"""Run the demo's trainings and tests through the real entry points and collect the metrics."""
from __future__ import annotations

import argparse
import glob
import os
import os.path as osp
import subprocess
import sys
import time

import yaml

from kdsr_plugins.demo import config
from kdsr_plugins.report.logs import parse_test_log


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
    """Metrics of the first test set in the newest ``results/<name>/test_*.log`` written by BasicSR.

    Parsed by :func:`kdsr_plugins.report.logs.parse_test_log` (the one BasicSR log parser).
    """
    logs = sorted(glob.glob(osp.join(results_root, test_name, f'test_{test_name}_*.log')), key=osp.getmtime)
    if not logs:
        raise DemoStepError(f'No test log for {test_name} under {results_root}')
    with open(logs[-1], encoding='utf-8', errors='replace') as f:
        metrics = parse_test_log(f.read())
    if not metrics:
        raise DemoStepError(f'No metric in the test log {logs[-1]}')
    return dict(next(iter(metrics.values())))


def format_table(rows: list[dict], title: str, reference: dict | None = None) -> str:
    """Markdown table of the rows; with ``reference`` (the student from scratch) a column of PSNR differences."""
    delta = reference is not None
    lines = [f'### {title}', '', '| Model | Params | PSNR (Y) | ' + ('Δ PSNR | ' if delta else '')
             + 'SSIM (Y) | Train time (s) |', '|---|---:|---:|' + ('---:|' if delta else '') + '---:|---:|']
    for row in rows:
        train_time = f'{row["train_s"]:.0f}' if row.get('train_s') is not None else '-'
        diff = f' {row["psnr"] - reference["psnr"]:+.3f} |' if delta else ''
        lines.append(f'| {row["label"]} | {row["params"]:,d} | {row["psnr"]:.3f} |{diff} {row["ssim"]:.4f} | '
                     f'{train_time} |')
    return '\n'.join(lines) + '\n'


def count_params(net_opt: dict) -> int:
    """Number of parameters of a network given by its option dict."""
    from basicsr.archs import build_network
    return sum(p.numel() for p in build_network(dict(net_opt)).parameters())


def train_and_test(key: str, label: str, model_type: str, network_g: dict, train_extra: dict, top_extra: dict,
                   args: argparse.Namespace, iters: int, test_model_type: str = 'SRModel', *, prefix: str = 'demo',
                   val_freq: int | None = None, test_top_extra: dict | None = None) -> dict:
    """Train ``<prefix>_<key>_s<seed>`` in ``args.out`` and test it (images saved); return its table row.

    Args:
        args: Needs ``seed``, ``data`` and ``out`` (absolute paths).
        prefix: Experiment name prefix.
        val_freq: Validate every ``val_freq`` iterations during training (``None``: no validation, the demo).
        test_top_extra: Top-level test options (e.g. ``teachers`` for MTKD's aggregator, which runs them).
    """
    name = f'{prefix}_{key}_s{args.seed}'
    opt = config.train_options(name, model_type, network_g, args.data, iters, args.seed, train_extra, top_extra,
                               val_freq=val_freq, amp=getattr(args, 'amp', 'off'))
    yml = write_yaml(opt, osp.join(args.out, 'options', f'{name}.yml'))
    print(f'[{prefix}] training {label} ({opt["model_type"]}, {iters} iterations) ...', flush=True)
    train_s = run_entry_point('kdsr_plugins.train', yml, args.out, osp.join(args.out, 'logs', f'train_{name}.log'))
    ckpt = osp.join(args.out, 'experiments', name, 'models', 'net_g_latest.pth')
    metrics = evaluate(f'test_{name}', network_g, ckpt, args, test_model_type, test_top_extra)
    return {'key': key, 'label': label, 'params': count_params(network_g), 'train_s': train_s, 'ckpt': ckpt,
            'name': name, **metrics}


def evaluate(test_name: str, network_g: dict, ckpt: str, args: argparse.Namespace,
             model_type: str = 'SRModel', top_extra: dict | None = None) -> dict:
    """Test a checkpoint on the demo validation images (saved under ``results/<test_name>/``); return metrics."""
    opt = config.test_options(test_name, network_g, ckpt, args.data, model_type=model_type)
    opt.update(top_extra or {})
    yml = write_yaml(opt, osp.join(args.out, 'options', f'{test_name}.yml'))
    run_entry_point('kdsr_plugins.test', yml, args.out, osp.join(args.out, 'logs', f'{test_name}.log'))
    return read_test_metrics(osp.join(args.out, 'results'), test_name)


def ensure_teachers() -> dict[str, str]:
    """The shipped teacher checkpoints (``config.TEACHERS``); a missing one stops the demo with a clear message.

    The photo teachers are trained by ``bench/photo`` (hours), never here.
    """
    ckpts = {}
    for name, (_, shipped) in config.TEACHERS.items():
        if not osp.isfile(shipped):
            raise SystemExit(f'Teacher {name!r}: no checkpoint {shipped}. It ships with the repository (run the '
                             'demo from a checkout: bash demo.sh); bench/photo/README.md retrains it (hours).')
        ckpts[name] = shipped
    return ckpts
