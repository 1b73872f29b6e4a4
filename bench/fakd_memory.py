"""FAKD blocked vs direct affinity loss: time and peak memory of one training iteration vs logits KD.

Same configuration, process isolation and memory measure (peak RSS of a fresh process) as
``bench/speed_memory.py``; runs its ``kd``, ``fakd`` (blocked, the default) and ``fakd_direct``
(full B×N×N matrices) methods and writes ``bench/results/fakd_memory.md`` (+ ``.json``).

Usage:
    python bench/fakd_memory.py [--iters 4] [--warmup 1] [--out bench/results/fakd_memory.md]
"""
from __future__ import annotations

import argparse
import datetime
import os
import os.path as osp
import platform
import sys

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

import speed_memory  # noqa: E402
import torch  # noqa: E402

METHODS = ['kd', 'fakd', 'fakd_direct']
LIMIT = 1.5  # peak memory of FAKD / logits KD (issue 16)


def report(results: list[dict], command: str, machine: str) -> str:
    by = {r['method']: r for r in results if 'error' not in r}
    kd = by.get('kd')
    lines = ['# FAKD affinity loss: blocked (default) vs direct', '',
             f'Command: `{command}`; machine: {machine}, {torch.get_num_threads()} torch threads; '
             f'date: {datetime.date.today().isoformat()}.',
             f'Configuration of `bench/speed_memory.py`: EDSR 64c16b -> 32c8b, x{speed_memory.SCALE}, batch '
             f'{speed_memory.BATCH}, LR patch {speed_memory.LR_PATCH} (N = {speed_memory.LR_PATCH ** 2}), four taps; '
             'memory = peak RSS of a fresh process, as there.', '',
             '| Method | s / iter | x logits KD (time) | peak RSS (MB) | x logits KD (memory) | GFLOPs / iter |',
             '|---|---:|---:|---:|---:|---:|']
    for r in results:
        if 'error' in r:
            lines.append(f'| {r["method"]} | failed: {r["error"]} | | | | |')
            continue
        t = f'{r["step_s"] / kd["step_s"]:.2f}' if kd else '-'
        m = f'{r["peak_rss_mb"] / kd["peak_rss_mb"]:.2f}' if kd else '-'
        lines.append(f'| {r["method"]} | {r["step_s"]:.3f} | {t} | {r["peak_rss_mb"]:.0f} | {m} | {r["gflops"]:.1f} |')
    if kd and 'fakd' in by:
        ratio = by['fakd']['peak_rss_mb'] / kd['peak_rss_mb']
        lines += ['', f'Target: blocked FAKD peak memory <= {LIMIT:.1f} x logits KD: {ratio:.2f} '
                  f'({"met" if ratio <= LIMIT else "NOT met"}).']
    return '\n'.join(lines) + '\n'


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--iters', type=int, default=4)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--machine', default=f'{platform.machine()} CPU, {os.cpu_count()} cores',
                        help='machine description written to the report')
    parser.add_argument('--out', default=osp.join(osp.dirname(osp.abspath(__file__)), 'results', 'fakd_memory.md'))
    args = parser.parse_args()
    results = speed_memory.run_all(METHODS, args.iters, args.warmup, with_student=False)
    command = f'python bench/fakd_memory.py --iters {args.iters} --warmup {args.warmup}'
    speed_memory.write_results(args.out, report(results, command, args.machine), results)
    return 0


if __name__ == '__main__':
    sys.exit(main())
