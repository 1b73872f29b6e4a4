"""Quality benchmark on the demo data: every demo method vs scratch and logits KD, several seeds.

For each seed and method (``kdsr_plugins.demo.runs.RUNS``: the demo's student, teachers and option
recipes), trains ``quality_<method>_s<seed>`` through ``python -m kdsr_plugins.train`` for the same
iterations, validating every ``--val-freq`` iterations (Y-channel PSNR/SSIM on the held-out demo
validation images), tests it with ``python -m kdsr_plugins.test`` (SR images saved), tests the
teachers (``test_quality_teacher_<name>``) and then writes, through ``kdsr_plugins.report``,

    <out>/table.md          mean ± sample std over seeds, paired differences to scratch and logits KD
    <out>/psnr_curves.png   validation PSNR against iteration per method (mean, ±1 std band)
    <out>/grid.png          crop of LR, every student (first seed), the teachers and HR
    <out>/summary.json      everything parsed

Working files (options, logs, experiments/, results/) go to ``--work`` (default ``<out>/work``).

Re-scoring the real-photo benchmark's kept students (``bench/photo_benchmark.py``) on any Set5-style
folder (``HR/`` + ``LR_bicubic/X<scale>/``, LR named ``<stem>x<scale>.<ext>`` or ``<stem>.<ext>``)::

    python bench/quality.py --score-only --test-root DIR --scale 4 --out OUT [--students DIR]
                            [--param-key params|params_ema]

writes ``OUT/summary.json`` (``{"results": [{"method", "seed", "psnr_y", "ssim_y"}, ...]}``) and
``OUT/table.md``; the student network comes from ``<students>/students.json``.

Usage:
    python bench/quality.py [--iters 200] [--val-freq 25] [--seeds 0 1 2] [--methods scratch,kd,...]
                            [--out bench/results/quality] [--skip-done] [--teacher edsr=PATH]
"""
from __future__ import annotations

import argparse
import glob
import os
import os.path as osp
import sys
import time

import kdsr_plugins  # noqa: F401  (top level: registers the plugin)

from kdsr_plugins.data_prep.demo import build_demo_dataset
from kdsr_plugins.demo import config
from kdsr_plugins.demo.pipeline import ensure_teachers, evaluate, train_and_test
from kdsr_plugins.demo.runs import RUNS, runs_by_key
from kdsr_plugins.report import ReportOptions, build_report

PREFIX = 'quality'


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see ``--help``)."""
    keys = [run.key for run in RUNS]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--iters', type=int, default=200, help='training iterations of every student (default: 200)')
    p.add_argument('--val-freq', type=int, default=25, help='validation every N iterations (default: 25)')
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2], help='seeds (default: 0 1 2)')
    p.add_argument('--methods', default=','.join(keys), help=f'comma-separated subset of: {", ".join(keys)}')
    p.add_argument('--out', default='bench/results/quality', help='report folder (default: %(default)s)')
    p.add_argument('--work', help='working folder for options/logs/experiments/results (default: <out>/work)')
    p.add_argument('--data', default='datasets/demo', help='demo dataset folder (built if missing)')
    p.add_argument('--teacher', action='append', default=[], metavar='NAME=PATH',
                   help=f'teacher checkpoint to use instead of the shipped one ({", ".join(config.TEACHERS)})')
    p.add_argument('--skip-done', action='store_true',
                   help='keep runs whose test log already exists in the working folder (resume a benchmark)')
    p.add_argument('--report-only', action='store_true', help='only rebuild the report from the working folder')
    p.add_argument('--crop', help='Y,X,SIZE of the grid crop in HR pixels (default: most textured window)')
    p.add_argument('--grid-image', help='validation image of the grid (default: the first)')
    return p.parse_args(argv)


def _done(work: str, test_name: str) -> bool:
    return bool(glob.glob(osp.join(work, 'results', test_name, f'test_{test_name}_*.log')))


def teacher_checkpoints(args: argparse.Namespace) -> dict[str, str]:
    """``--teacher`` overrides, else the shipped teachers."""
    given = {}
    for item in args.teacher:
        name, sep, path = item.partition('=')
        if not sep or name not in config.TEACHERS:
            raise SystemExit(f'--teacher wants NAME=PATH with NAME in {list(config.TEACHERS)}, got {item!r}')
        if not osp.isfile(path):
            raise SystemExit(f'--teacher {name}: no file {path}')
        given[name] = osp.abspath(path)
    if len(given) == len(config.TEACHERS):
        return given
    return {**ensure_teachers(), **given}


def run_benchmark(args: argparse.Namespace, keys: list[str]) -> None:
    """Train and test every (seed, method), then test the teachers."""
    known = runs_by_key()
    ckpts = teacher_checkpoints(args)
    for seed in args.seeds:
        ns = argparse.Namespace(out=args.work, data=args.data, seed=seed)
        done: dict[str, dict] = {}
        for key in [run.key for run in RUNS if run.key in keys]:
            run = known[key]
            name = f'{PREFIX}_{key}_s{seed}'
            missing = [k for k in run.needs if k not in done]
            if missing:
                print(f'[quality] skipping {name}: needs {missing}', file=sys.stderr)
                continue
            if args.skip_done and _done(args.work, f'test_{name}'):
                print(f'[quality] {name}: test log exists, kept', flush=True)
                done[key] = {'key': key, 'ckpt': osp.join(args.work, 'experiments', name, 'models',
                                                           'net_g_latest.pth')}
                continue
            train_extra, top_extra = run.make_options(ckpts, done)
            test_extra = getattr(run, 'test_top_extra', None)  # e.g. MTKD's aggregator runs the teachers
            kwargs = {'test_top_extra': test_extra(ckpts)} if test_extra else {}
            start = time.time()
            done[key] = train_and_test(key, run.label, run.model_type, run.student or config.STUDENT, train_extra,
                                       top_extra, ns, args.iters, run.test_model_type, prefix=PREFIX,
                                       val_freq=args.val_freq, **kwargs)
            print(f'[quality] {name}: PSNR {done[key]["psnr"]:.3f} SSIM {done[key]["ssim"]:.4f} '
                  f'({time.time() - start:.0f} s)', flush=True)
    ns = argparse.Namespace(out=args.work, data=args.data, seed=0)
    for name, (net_opt, _) in config.TEACHERS.items():
        test_name = f'test_{PREFIX}_teacher_{name}'
        if not (args.skip_done and _done(args.work, test_name)):
            evaluate(test_name, net_opt, ckpts[name], ns)


def report(args: argparse.Namespace, keys: list[str]) -> dict[str, str]:
    """Write the report of the benchmark's runs (``quality_*`` names only) to ``args.out``."""
    known = runs_by_key()
    labels = {key: run.label for key, run in known.items()}
    crop = tuple(int(v) for v in args.crop.split(',')) if args.crop else None
    seeds = ' '.join(map(str, args.seeds))
    title = (f'Quality on the demo data: x{config.SCALE}, {args.iters} iterations, seeds {seeds}, '
             f'validation every {args.val_freq} iterations')
    opt = ReportOptions(results=osp.join(args.work, 'results'), out=args.out,
                        experiments=osp.join(args.work, 'experiments'), include=rf'^(test_)?{PREFIX}_',
                        labels=labels, order=[k for k in keys if k in known], baselines=['scratch', 'kd'],
                        hr=osp.join(args.data, 'val_HR'), lr=osp.join(args.data, f'val_LR_X{config.SCALE}'),
                        scale=config.SCALE, crop=crop, grid_image=args.grid_image, title=title)
    return build_report(opt)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    if '--score-only' in argv:
        sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
        from photo_bench.rescore import main as score_only

        return score_only([a for a in argv if a != '--score-only'])
    args = parse_args(argv)
    args.out, args.data = osp.abspath(args.out), osp.abspath(args.data)
    args.work = osp.abspath(args.work or osp.join(args.out, 'work'))
    known = runs_by_key()
    keys = [k.strip() for k in args.methods.split(',') if k.strip()]
    if unknown := [k for k in keys if k not in known]:
        print(f'Unknown method(s) {unknown}; valid: {list(known)}', file=sys.stderr)
        return 2
    if args.iters < 1 or args.val_freq < 1:
        print('--iters and --val-freq must be positive', file=sys.stderr)
        return 2
    start = time.time()
    if not args.report_only:
        for sub in ('options', 'logs'):
            os.makedirs(osp.join(args.work, sub), exist_ok=True)
        build_demo_dataset(args.data, scales=(config.SCALE,))
        run_benchmark(args, keys)
    written = report(args, keys)
    with open(written['table'], encoding='utf-8') as f:
        print('\n' + f.read())
    for kind, path in written.items():
        print(f'[quality] {kind}: {path}')
    print(f'[quality] total {time.time() - start:.0f} s')
    return 0


if __name__ == '__main__':
    sys.exit(main())
