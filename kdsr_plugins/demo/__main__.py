"""The main job: ``python -m kdsr_plugins.demo``.

1. builds the offline demo dataset (scikit-image images, x4 LMDBs) under ``datasets/demo``;
2. takes the shipped real-photo teachers of ``bench/teachers/`` (EDSR f48b16; MTKD's second teacher,
   RCAN f48g4b4); a missing one stops the demo with a clear message (they are never trained here);
3. trains the benchmark's student from scratch and with each KD method for the same iterations and
   seed, through ``python -m kdsr_plugins.train`` (bf16 + channels-last on a CPU with native bf16);
4. evaluates every student and the teachers with ``python -m kdsr_plugins.test``;
5. prints a PSNR/SSIM table (Y channel, crop 4, difference to scratch), writes it to
   ``<out>/results.md``, and prints the stored real-photo benchmark table with its command.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

import kdsr_plugins  # noqa: F401  (top level: registers the plugin in spawned workers too)

from kdsr_plugins.data_prep.demo import build_demo_dataset
from kdsr_plugins.demo import config
from kdsr_plugins.demo.pipeline import count_params, ensure_teachers, evaluate, format_table, train_and_test
from kdsr_plugins.demo.runs import RUNS, runs_by_key
from kdsr_plugins.demo.stored import stored_benchmark

#: The photo benchmark's single-teacher rows. MTKD (mtkd1,mtkd2) is left out by default: its aggregator
#: needs far more iterations than a demo run has (docs/results.md).
DEFAULT_METHODS = ('scratch', 'kd', 'fitnet', 'at', 'fakd', 'rkd', 'dukd', 'mipkd')
#: Long enough for the students to separate beyond the first iterations, short enough for <= 10 min on 2 cores.
DEFAULT_ITERS = 800


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='python -m kdsr_plugins.demo', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', default='demo_output', help='working folder (experiments/, results/, results.md)')
    parser.add_argument('--data', default='datasets/demo', help='demo dataset folder (built if missing)')
    parser.add_argument('--iters', type=int, default=DEFAULT_ITERS, help='training iterations of every student')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--methods', default=','.join(DEFAULT_METHODS),
                        help=f'comma-separated subset of: {", ".join(run.key for run in RUNS)} '
                             '(default: the single-teacher methods of the photo benchmark)')
    parser.add_argument('--amp', choices=('auto', 'off', 'bf16'), default='auto',
                        help='train.amp of every run (with channels-last); auto: bf16 on a CPU with native bf16')
    parser.add_argument('--jobs', type=int, default=min(2, os.cpu_count() or 1),
                        help='runs trained in parallel, one thread each (default: min(2, CPUs))')
    return parser.parse_args(argv)


def run_methods(runs: list, ckpts: dict[str, str], args: argparse.Namespace) -> list[dict]:
    """Train and test every run, ``args.jobs`` at a time (a run starts once the runs it needs are done).

    Returns the table rows in the order of ``runs``.
    """
    done: dict[str, dict] = {}
    pending = list(runs)
    selected = {run.key for run in runs}
    for run in runs:
        missing = [k for k in run.needs if k not in selected]
        if missing:
            raise SystemExit(f'Demo method {run.key!r} needs {missing}; add them to --methods.')

    def start(pool: ThreadPoolExecutor, run) -> Future:
        train_extra, top_extra = run.make_options(ckpts, done)
        test_extra = run.test_top_extra(ckpts) if run.test_top_extra else None
        return pool.submit(train_and_test, run.key, run.label, run.model_type, run.student or config.STUDENT,
                           train_extra, top_extra, args, args.iters, run.test_model_type, test_top_extra=test_extra)

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        running: dict[Future, str] = {}
        while pending or running:
            for run in [r for r in pending if all(k in done for k in r.needs)]:
                running[start(pool, run)] = run.key
                pending.remove(run)
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                done[running.pop(future)] = future.result()
    return [done[run.key] for run in runs]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out, args.data = osp.abspath(args.out), osp.abspath(args.data)
    if args.amp == 'auto':
        args.amp = config.default_precision()
    if args.jobs > 1:  # small CPU convolutions gain little from a 2nd thread; parallel runs use the cores better
        os.environ.setdefault('OMP_NUM_THREADS', '1')
    known = runs_by_key()
    keys = [k.strip() for k in args.methods.split(',') if k.strip()]
    unknown = [k for k in keys if k not in known]
    if unknown:
        print(f'Unknown demo method(s) {unknown}; valid: {list(known)}', file=sys.stderr)
        return 2
    start = time.time()
    for sub in ('options', 'logs'):
        os.makedirs(osp.join(args.out, sub), exist_ok=True)
    print(f'[demo] building the demo dataset in {args.data} ...', flush=True)
    build_demo_dataset(args.data, scales=(config.SCALE,))
    ckpts = ensure_teachers()
    rows = run_methods([known[k] for k in [run.key for run in RUNS if run.key in keys]], ckpts, args)
    for name, (net_opt, _) in config.TEACHERS.items():
        metrics = evaluate(f'test_demo_teacher_{name}', net_opt, ckpts[name], args)
        rows.append({'label': f'Teacher ({name})', 'params': count_params(net_opt), 'train_s': None, **metrics})
    elapsed = time.time() - start
    precision = 'float32' if args.amp == 'off' else f'{args.amp} + channels-last'
    scratch = next((r for r in rows if r.get('key') == 'scratch'), None)
    table = format_table(rows, f'Demo x4, {args.iters} iterations, seed {args.seed}, {precision} '
                               '(validation: coffee, rocket)', reference=scratch)
    note = (f'\nY-channel PSNR/SSIM, crop 4, raw weights (`params`), single pass; Δ: PSNR minus the student from '
            f'scratch. Two validation images and one seed: a demonstration, not a measurement (seed-to-seed spread '
            f'is about 0.1-0.3 dB). Total demo time: {elapsed:.0f} s.\n')
    note += stored_benchmark()
    with open(osp.join(args.out, 'results.md'), 'w') as f:
        f.write(table + note)
    print('\n' + table + note)
    print(f'[demo] table written to {osp.join(args.out, "results.md")}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
