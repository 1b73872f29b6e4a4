"""2-process CPU DDP (torchrun, gloo) throughput against one process, through the real entry point.

Same global batch (16 = 2 x 8 vs 1 x 16), logits KD, EDSR 64c16b teacher -> 32c8b student, x4,
LR patch 48, on the demo LMDBs. Seconds per iteration are BasicSR's own averaged iteration times
(log lines ``time (data): t``) after the first logged window.

Usage: python bench/ddp_throughput.py [--iters 24] [--out bench/results/ddp_throughput.md]
"""
from __future__ import annotations

import argparse
import glob
import os
import os.path as osp
import re
import socket
import subprocess
import sys
import tempfile
from copy import deepcopy

import kdsr_plugins  # noqa: F401

import torch
import yaml
from basicsr.archs import build_network

from kdsr_plugins.data_prep.demo import build_demo_dataset
from kdsr_plugins.demo import config

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from speed_memory import STUDENT, TEACHER  # noqa: E402

TIME_RE = re.compile(r'time \(data\): ([\d.]+)')


def options(name: str, data: str, teacher_ckpt: str, batch: int, iters: int) -> dict:
    opt = config.train_options(name, 'KDModel', STUDENT, data, iters, seed=0,
                               train_extra={'kd_opt': {'type': 'L1Loss', 'loss_weight': 1.0}},
                               top_extra={'network_t': deepcopy(TEACHER),
                                          'path': {'pretrain_network_g': None, 'pretrain_network_t': teacher_ckpt}})
    opt['datasets'] = config.datasets(data, lr_patch=48, batch=batch)
    opt['logger'].update(print_freq=4, save_checkpoint_freq=10 ** 6)
    return opt


def seconds_per_iter(work: str, name: str) -> float:
    log = sorted(glob.glob(osp.join(work, 'experiments', name, f'train_{name}_*.log')))[-1]
    times = [float(t) for t in TIME_RE.findall(open(log).read())][1:]  # drop the warm-up window
    return sum(times) / len(times)


def run(cmd: list[str], work: str, env: dict) -> None:
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--iters', type=int, default=24)
    parser.add_argument('--data', default='datasets/demo')
    parser.add_argument('--out', default=osp.join(osp.dirname(osp.abspath(__file__)), 'results', 'ddp_throughput.md'))
    args = parser.parse_args()
    data = osp.abspath(args.data)
    build_demo_dataset(data, scales=(4,))
    work = tempfile.mkdtemp(prefix='ddp_bench_')
    teacher_ckpt = osp.join(work, 'teacher.pth')
    torch.save({'params': build_network(deepcopy(TEACHER)).state_dict()}, teacher_ckpt)
    results = {}
    for label, nproc, batch in (('1 process, batch 16', 1, 16), ('2-process DDP, 2 x 8', 2, 8)):
        name = f'ddp_bench_{nproc}'
        yml = osp.join(work, f'{name}.yml')
        with open(yml, 'w') as f:
            yaml.safe_dump(options(name, data, teacher_ckpt, batch, args.iters), f)
        if nproc == 1:
            cmd = [sys.executable, '-m', 'kdsr_plugins.train', '-opt', yml]
            env = dict(os.environ)
        else:
            with socket.socket() as sock:
                sock.bind(('127.0.0.1', 0))
                port = sock.getsockname()[1]
            cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_port', str(port),
                   '-m', 'kdsr_plugins.train', '-opt', yml, '--launcher', 'pytorch']
            env = dict(os.environ, OMP_NUM_THREADS=str(max(1, torch.get_num_threads() // 2)))
        print(f'[bench] {label} ...', flush=True)
        run(cmd, work, env)
        results[label] = seconds_per_iter(work, name)
    one, two = results.values()
    text = '\n'.join([
        '# 2-process CPU DDP throughput', '',
        f'Logits KD, EDSR 64c16b -> 32c8b, x4, LR patch 48, global batch 16, {args.iters} iterations on the demo '
        f'LMDB; BasicSR\'s averaged iteration time after the first window (machine: {os.cpu_count()} CPUs).', '',
        '| Run | s / iter | images / s |', '|---|---:|---:|',
        *[f'| {k} | {v:.3f} | {16 / v:.1f} |' for k, v in results.items()], '',
        f'DDP speed-up: {one / two:.2f}x', ''])
    os.makedirs(osp.dirname(args.out), exist_ok=True)
    with open(args.out, 'w') as f:
        f.write(text)
    print(text)
    return 0


if __name__ == '__main__':
    sys.exit(main())
