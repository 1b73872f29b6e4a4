"""Seconds per training iteration of benchmark runs at the real configuration (sizing the benchmark).

Writes each run's options with ``bench/photo_benchmark.py``'s own option builder (validation off,
progress every 10 iterations), trains ``--iters`` iterations through ``python -m kdsr_plugins.train``
on one thread and measures s/iter from the BasicSR log timestamps between the progress lines at
iteration 10 and the last one (start-up, teacher check and data-loader start excluded). ``kd`` is
timed with the teacher-output cache (built first, its time reported) and, as ``kd_online``, with the
teacher run every iteration (the cost of the feature-KD methods' teacher forward).

    python bench/photo/time_benchmark_runs.py --config bench/photo/benchmark.yml --data datasets/photos \
        [--methods scratch,kd,kd_online] [--iters 50] [--out bench/results/photo_x4_timing]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import os.path as osp
import re
import sys
import time

os.environ.setdefault('OMP_NUM_THREADS', '1')
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import kdsr_plugins  # noqa: E402,F401

from photo_bench.config import load_benchmark, run_options  # noqa: E402
from photo_bench.runner import Driver, Run  # noqa: E402

from kdsr_plugins.demo.pipeline import run_entry_point, write_yaml  # noqa: E402

_LINE = re.compile(r'^(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2},\d{3}) INFO: \[.*?iter:\s*([\d,]+), lr:', re.M)


def seconds_per_iter(log_text: str) -> dict:
    """s/iter between the first and last progress lines of a BasicSR training log."""
    points = [(datetime.datetime.strptime(t, '%Y-%m-%d %H:%M:%S,%f'), int(i.replace(',', '')))
              for t, i in _LINE.findall(log_text)]
    if len(points) < 2:
        raise SystemExit('fewer than two progress lines in the log')
    (t0, i0), (t1, i1) = points[0], points[-1]
    return {'from_iter': i0, 'to_iter': i1, 's_per_iter': (t1 - t0).total_seconds() / (i1 - i0)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--config', required=True)
    ap.add_argument('--data')
    ap.add_argument('--methods', default='scratch,kd,kd_online')
    ap.add_argument('--iters', type=int, default=50)
    ap.add_argument('--out', default='bench/results/photo_x4_timing')
    args = ap.parse_args(argv)
    bm = load_benchmark(args.config)
    if args.data:
        bm.data = args.data
    out = osp.abspath(args.out)
    drv = Driver(bm, out, osp.join(out, 'work'), skip_done=False, jobs=1)
    figures = {'config': args.config, 'iters': args.iters, 'threads': os.environ.get('OMP_NUM_THREADS'),
               'measured': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ'), 'runs': {}}
    for key in args.methods.split(','):
        method = 'kd' if key == 'kd_online' else key
        run = Run(f'timing_{key}', method, 0, args.iters)
        cache = None
        if key == 'kd':
            start = time.time()
            cache = drv.ensure_cache(run)
            figures['cache_build_s'] = time.time() - start
        opt = run_options(bm, method, run.name, 0, args.iters, cache=cache)
        opt.pop('val')
        opt['logger'].update(print_freq=10, save_checkpoint_freq=10 ** 9)
        yml = write_yaml(opt, osp.join(out, 'work', 'options', f'{run.name}.yml'))
        wall = run_entry_point('kdsr_plugins.train', yml, drv.work, osp.join(drv.work, 'logs', f'{run.name}.log'))
        logs = sorted(f for f in os.listdir(osp.join(drv.work, 'experiments', run.name)) if f.endswith('.log'))
        with open(osp.join(drv.work, 'experiments', run.name, logs[-1]), encoding='utf-8') as f:
            figures['runs'][key] = {**seconds_per_iter(f.read()), 'wall_s': wall, 'model_type': opt['model_type'],
                                    'cached_targets': bool(cache)}
        print(f'[timing] {key}: {figures["runs"][key]}', flush=True)
    with open(osp.join(out, 'timing.json'), 'w', encoding='utf-8') as f:
        json.dump(figures, f, indent=1)
    print(json.dumps(figures, indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
