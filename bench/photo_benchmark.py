"""Real-photo KD benchmark: every method at equal iterations and seeds, through ``kdsr_plugins.train``.

For each method of the config (``bench/photo/benchmark.yml``; scratch, kd, fitnet, at, fakd, rkd,
dukd, mipkd, mtkd) and seed, writes a run option file made from the shipped method YAML under
``options/train/`` (the papers' loss weights) with the benchmark's student, teacher(s), data,
recipe, iterations and seed substituted, trains it with ``python -m kdsr_plugins.train`` (one
thread), scores raw and EMA weights on the test split and keeps the student. MTKD trains its
stage-1 aggregator once (first seed) and then the stage-2 student per seed; it needs two or more
teachers. Logits KD and MTKD stage 2 read the teacher-output cache (``cache_teacher: true``).

    python bench/photo_benchmark.py --config bench/photo/benchmark.yml [--out bench/results/<name>]
        [--methods scratch,kd,...] [--seeds 0 1 2] [--iters N] [--jobs N] [--skip-done] [--sweep]
        [--report-only]

``--skip-done``: a finished run (``<out>/work/results/<run>.json`` with the same options) is not
redone and an interrupted one resumes (BasicSR ``--auto_resume``). ``--sweep``: per method, the
loss weights of ``methods.<m>.sweep`` are each trained ``sweep.iters`` iterations (seed
``sweep.seed``) and scored on the VALIDATION split; the best is trained like the default row and
reported as a second row. Outputs in ``<out>``: ``table.md``, ``summary.json``, ``psnr_curves.png``,
``grid.png``, ``students/<method>_seed<k>.pth`` (+ ``students.json``, the network card) and
``students_swept/``; working files in ``<out>/work`` (git-ignored).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import os.path as osp
import sys
import time

os.environ.setdefault('OMP_NUM_THREADS', '1')
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

import kdsr_plugins  # noqa: E402,F401  (top level: registers the plugin)

import torch  # noqa: E402
from photo_bench import report, scoring  # noqa: E402
from photo_bench.config import (  # noqa: E402
    METHODS,
    REPO,
    Benchmark,
    load_benchmark,
    parse_row_label,
    read_yaml,
    row_label,
    run_name,
    run_options,
)
from photo_bench.runner import Driver, Run  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--config', default=osp.join(REPO, 'bench', 'photo', 'benchmark.yml'))
    p.add_argument('--out', help='output folder (default: bench/results/<config name>)')
    p.add_argument('--work', help='working folder (default: <out>/work)')
    p.add_argument('--methods', help=f'comma-separated subset of: {", ".join(METHODS)} (default: the config\'s)')
    p.add_argument('--seeds', type=int, nargs='+', help='seeds (default: the config\'s, at least 3)')
    p.add_argument('--data', help='photo set root (default: the config\'s data, relative to the CWD)')
    p.add_argument('--iters', type=int, help='training iterations of every student (default: the config\'s)')
    p.add_argument('--jobs', type=int, default=1, help='runs trained in parallel, one thread each')
    p.add_argument('--skip-done', action='store_true', help='keep finished runs, resume interrupted ones')
    p.add_argument('--sweep', action='store_true', help='loss-weight sweep on the validation split + swept rows')
    p.add_argument('--report-only', action='store_true', help='rebuild the report from the stored run results')
    return p.parse_args(argv)


def plan(bm: Benchmark, methods: list[str]) -> tuple[list[Run], dict[str, str]]:
    """Default-weight runs of every (method, seed) and the methods skipped with the reason."""
    runs, skipped = [], {}
    agg = bm.aggregator_run
    for m in methods:
        if m == 'mtkd':
            if len(bm.teachers) < 2:
                skipped[m] = f'MTKD needs >= 2 teachers, the config lists {len(bm.teachers)}'
                continue
            runs.append(Run(agg, 'mtkd1', bm.aggregator_seed, bm.aggregator_iters))
        runs += [Run(run_name(m, s), m, s, bm.iters, needs=[agg] if m == 'mtkd' else []) for s in bm.seeds]
    return runs, skipped


def sweep_trials(bm: Benchmark, methods: list[str], skipped: dict[str, str]) -> list[Run]:
    """The sweep's trials; one whose options equal a default run's (but the name) reuses that run."""
    agg = [bm.aggregator_run]
    trials = []
    for m in methods:
        if m in skipped or not bm.methods[m].get('sweep'):
            continue
        for w in bm.methods[m]['sweep']['values']:
            run = Run(f'sweep_{m}_w{w:g}_s{bm.sweep_seed}', m, bm.sweep_seed, bm.sweep_iters, 'sweep', float(w),
                      list(agg) if m == 'mtkd' else [])
            default = run_name(m, bm.sweep_seed)
            if bm.sweep_seed in bm.seeds and same_training(bm, run, Run(default, m, bm.sweep_seed, bm.iters)):
                run.reuse = default
                run.needs.append(default)
            trials.append(run)
    return trials


def same_training(bm: Benchmark, a: Run, b: Run) -> bool:
    """Whether two runs train the same thing: equal option dicts but the experiment name."""
    def opts(r: Run) -> dict:
        return {k: v for k, v in run_options(bm, r.method, r.name, r.seed, r.iters, weight=r.weight).items()
                if k != 'name'}
    return opts(a) == opts(b)


def default_weight(bm: Benchmark, method: str) -> float:
    """The swept loss weight of the method's default row: the config's ``overrides`` of it, else the shipped YAML's."""
    key = bm.methods[method]['sweep']['key']
    if key in bm.methods[method].get('overrides', {}):
        return float(bm.methods[method]['overrides'][key])
    node = read_yaml(bm.methods[method]['options'])
    for k in key.split('.'):
        node = node[k]
    return float(node)


def choose(bm: Benchmark, trials: list[Run], results: dict[str, dict]) -> dict[str, dict]:
    """Per method: validation PSNR (raw weights) of every trial weight and the best one.

    A method with a trial not run yet (``--report-only`` of an unfinished sweep) lists it under
    ``pending`` and has no ``chosen`` weight.
    """
    out: dict[str, dict] = {}
    for run in trials:
        s = out.setdefault(run.method, {'key': bm.methods[run.method]['sweep']['key'], 'val_psnr': {},
                                        'shipped': default_weight(bm, run.method), 'iters': run.iters,
                                        'seed': run.seed})
        if run.name in results:
            s['val_psnr'][f'{run.weight:g}'] = results[run.name]['val']['params']['psnr']
        else:
            s.setdefault('pending', []).append(f'{run.weight:g}')
    for s in out.values():
        if 'pending' not in s:
            s['chosen'] = float(max(s['val_psnr'], key=s['val_psnr'].get))
    return out


def has_swept_runs(s: dict) -> bool:
    """Whether a method's sweep entry chose a weight other than the shipped one (its swept row trains runs of
    its own; otherwise the default runs serve it)."""
    return 'chosen' in s and s['chosen'] != s.get('shipped')


def swept_runs(bm: Benchmark, sweep: dict[str, dict]) -> list[Run]:
    agg = [bm.aggregator_run]
    return [Run(run_name(m, seed, swept=True), m, seed, bm.iters, 'swept', s['chosen'], agg if m == 'mtkd' else [])
            for m, s in sweep.items() if has_swept_runs(s) for seed in bm.seeds]


def build_summary(bm: Benchmark, drv: Driver, methods: list[str], skipped: dict[str, str],
                  sweep: dict[str, dict], elapsed: float) -> dict:
    res = drv.results
    by_row: dict[str, list[dict]] = {}
    for m in methods:
        if m in skipped:
            continue
        by_row[m] = [res[n] for s in bm.seeds if (n := run_name(m, s)) in res]
    for m, s in sweep.items():
        if 'chosen' not in s:
            continue
        names = [run_name(m, seed, swept=has_swept_runs(s)) for seed in bm.seeds]
        by_row[row_label(m, swept=True)] = [res[n] for n in names if n in res]
    rows: dict[str, dict] = {}
    for label, results in by_row.items():
        if not results:
            continue
        row = report.row_summary(results)
        m = parse_row_label(label)[0]
        if row['weight'] is None and bm.methods[m].get('sweep'):
            row['weight'] = default_weight(bm, m)
        row['delta_vs_scratch'] = report.deltas(results, by_row.get('scratch')) if label != 'scratch' else None
        row['delta_vs_kd'] = report.deltas(results, by_row.get('kd')) if label != 'kd' else None
        rows[label] = row
    for m, why in skipped.items():
        rows[m] = {'skipped': why}
    agg = res.get(bm.aggregator_run, {}).get('test')
    drv.teacher_outputs()
    seeds = ' '.join(map(str, bm.seeds))
    return {
        'benchmark': bm.name, 'config': osp.relpath(bm.path, REPO) if bm.path.startswith(REPO) else bm.path,
        'title': (f'{run_label(bm)}: x{bm.scale}, {bm.iters} iterations, seeds {seeds}, test split of the photo set '
                  f'{osp.basename(osp.normpath(bm.data))}/'),
        'scale': bm.scale, 'iters': bm.iters, 'seeds': bm.seeds, 'student': bm.student,
        'teachers': {n: {'psnr': t['psnr'], 'ssim': t['ssim']} for n, t in drv.teacher_scores.items()},
        'aggregator': agg, 'rows': rows, 'convergence': report.convergence(by_row.get('scratch', [])),
        'sweep': sweep or None, 'elapsed_s': elapsed, 'trained_this_call': drv.trained,
        'runs': {n: {k: v for k, v in r.items() if k not in ('test', 'val')} for n, r in res.items()},
        'written': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ'),
        'notes': ('Y-channel PSNR/SSIM, crop = scale, full-image forward, mean over test images then mean ± '
                  'sample std over seeds. Raw = `params`, EMA = `params_ema`. Δ: paired per-seed difference '
                  '(PSNR, dB), mean ± std, p = two-sided paired t-test. PSNR to teacher: student output vs '
                  'the first teacher\'s output. Swept rows: loss weight chosen on the validation split.'),
    }


def run_label(bm: Benchmark) -> str:
    """The benchmark's name with its config file, so variants that share a name tell apart in titles."""
    return f'{bm.name} ({osp.basename(bm.path)})'


def plotted_rows(summary: dict) -> list[str]:
    """Rows with runs of their own: not skipped, and no swept row whose sweep kept the shipped weight
    (its runs are the default row's)."""
    sweep = summary.get('sweep') or {}

    def own_runs(label: str) -> bool:
        m, swept = parse_row_label(label)
        return not swept or has_swept_runs(sweep.get(m, {}))
    return [label for label, row in summary['rows'].items() if 'skipped' not in row and own_runs(label)]


def figures(bm: Benchmark, drv: Driver, summary: dict, out: str) -> dict[str, str]:
    from kdsr_plugins.report.logs import read_experiments

    logs = read_experiments(osp.join(drv.work, 'experiments'))
    val = f'{bm.name}_val'

    def curve(name: str) -> dict[int, float]:
        if name in logs:
            return logs[name].curves.get(val, {}).get('psnr', {})
        return {int(it): v for it, v in drv.results.get(name, {}).get('val_curve', {}).items()}

    by_seed, missing = {}, []
    for label in plotted_rows(summary):
        m, swept = parse_row_label(label)
        if runs := {s: c for s in bm.seeds if (c := curve(run_name(m, s, swept)))}:
            by_seed[label] = runs
        else:
            missing.append(label)
    lacking = f'\nno stored curve (trained before curves were kept): {", ".join(missing)}' if missing else ''
    curves = {label: list(runs.values()) for label, runs in by_seed.items()}
    written = {'curves': report.plot_curves(curves, osp.join(out, 'psnr_curves.png'),
                                            f'{run_label(bm)}: validation PSNR (mean ± std over seeds){lacking}')}
    delta_title = f'{run_label(bm)}: validation PSNR minus scratch, paired by seed (mean ± std){lacking}'
    if delta := report.plot_delta_curves(by_seed, 'scratch', osp.join(out, 'psnr_delta_curves.png'), delta_title):
        written['delta_curves'] = delta
    pair = drv.grid_pair
    seed = bm.seeds[0]
    t = bm.teachers[0].name
    tiles = [(f'teacher {t}', osp.join(drv.work, 'teacher_sr', t, f'{pair.name}.png'))]
    for label in plotted_rows(summary):
        m, swept = parse_row_label(label)
        tiles.append((f'{label} s{seed}', drv.grid_tile(run_name(m, seed, swept), m, seed,
                                                        'swept' if swept else 'default')))
    written['grid'] = report.picture_grid(tiles, pair.hr, pair.lr, bm.scale, osp.join(out, 'grid.png'),
                                          f'{pair.name} (test), raw weights, seed {seed}')
    return written


def results_of_another_config(out: str, bm: Benchmark) -> str | None:
    """The config whose results ``out`` already holds, when it is not ``bm``'s (file name compared,
    so a snapshot of the same config elsewhere still matches); ``None`` when free or the same."""
    path = osp.join(out, 'summary.json')
    if not osp.isfile(path):
        return None
    with open(path, encoding='utf-8') as f:
        config = json.load(f).get('config') or ''
    return config if config and osp.basename(config) != osp.basename(bm.path) else None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    bm = load_benchmark(args.config)
    if args.iters:
        bm.iters = args.iters
    if args.data:
        bm.data = args.data
    if args.seeds:
        bm.seeds = args.seeds
    methods = [m.strip() for m in args.methods.split(',')] if args.methods else [m for m in METHODS if m in bm.methods]
    if bad := [m for m in methods if m not in bm.methods]:
        print(f'method(s) {bad} not in the config {args.config} (has: {list(bm.methods)})', file=sys.stderr)
        return 2
    methods = [m for m in METHODS if m in methods]
    if not bm.teachers and any(m != 'scratch' for m in methods):
        print('the config lists no teacher', file=sys.stderr)
        return 2
    out = osp.abspath(args.out or osp.join(REPO, bm.raw.get('out') or osp.join('bench', 'results', bm.name)))
    if other := results_of_another_config(out, bm):
        print(f'{out} holds the results of {other}, not of {args.config}: pass another --out', file=sys.stderr)
        return 2
    work = osp.abspath(args.work or osp.join(out, 'work'))
    os.makedirs(out, exist_ok=True)
    with open(osp.join(out, '.gitignore'), 'w') as f:
        f.write('work/\n')
    start = time.time()
    drv = Driver(bm, out, work, args.skip_done or args.report_only, args.jobs)
    runs, skipped = plan(bm, methods)
    for m, why in skipped.items():
        print(f'[bench] skipping {m}: {why}', flush=True)
    trials = sweep_trials(bm, methods, skipped) if args.sweep else []
    if args.report_only:
        drv.results.update(drv.stored_results())
    else:
        drv.run_all(runs + trials)
    sweep = choose(bm, trials, drv.results) if trials else {}
    if sweep and not args.report_only:
        drv.run_all(swept_runs(bm, sweep))
    summary = build_summary(bm, drv, methods, skipped, sweep, time.time() - start)
    written = report.write(summary, out)
    written.update(figures(bm, drv, summary, out))
    for folder in ('students', 'students_swept'):
        files = {osp.basename(r['student']): {'method': r['method'], 'seed': r['seed'], 'weight': r.get('weight')}
                 for r in drv.results.values()
                 if r.get('student') and osp.basename(osp.dirname(r['student'])) == folder}
        if files:
            written[folder] = scoring.write_students_card(osp.join(out, folder), bm.student, bm.scale, files)
    with open(written['table'], encoding='utf-8') as f:
        print('\n' + f.read())
    for kind, path in written.items():
        print(f'[bench] {kind}: {path}')
    print(f'[bench] trained {len(drv.trained)} run(s) this call; total {time.time() - start:.0f} s')
    return 0


if __name__ == '__main__':
    sys.exit(main())
