"""The committed real-photo benchmark results the demo prints after its own table.

Each table is printed with the command that reproduces it (the method rows its ``summary.json``
holds) and a reading made from that summary, so the text never says more than the stored numbers.
"""
from __future__ import annotations

import json
import os.path as osp

from kdsr_plugins.demo import config

#: Below this two-sided paired t-test p-value a difference to scratch is called significant.
ALPHA = 0.05


def read_summary(folder: str) -> dict:
    """The ``summary.json`` beside a stored table; ``{}`` without one."""
    path = osp.join(folder, 'summary.json')
    if not osp.isfile(path):
        return {}
    with open(path, encoding='utf-8') as f:
        return json.load(f)


def stored_methods(summary: dict) -> list[str]:
    """The trained default method rows of a stored summary (skipped and swept rows left out)."""
    return [label for label, row in summary.get('rows', {}).items() if 'skipped' not in row and ' ' not in label]


def _delta_text(method: str, delta: dict) -> str:
    seeds = delta['n']
    text = f'{method} {delta["mean"]:+.3f} dB ({seeds} seed{"s" if seeds != 1 else ""}'
    if delta.get('p') is not None:
        text += f', p = {delta["p"]:.2g}'
    return text + ')'


def reading(summary: dict) -> str:
    """One sentence per outcome from the paired raw-weight deltas against scratch of every trained row.

    A method is better (worse) than the student alone when every seed's delta is positive (negative)
    and the paired t-test gives p < ``ALPHA`` (or the deltas are identical); other rows with two or
    more seeds are "not distinguishable", rows with one seed are listed apart.
    """
    groups: dict[str, list[str]] = {'better': [], 'worse': [], 'unclear': [], 'single': []}
    for method, row in summary.get('rows', {}).items():
        delta = (row.get('delta_vs_scratch') or {}).get('raw')
        if not delta or delta.get('mean') is None:
            continue
        deltas, p = delta['deltas'], delta.get('p')
        sure = (p is not None and p < ALPHA) or (p is None and delta.get('std') == 0)
        if len(deltas) < 2:
            group = 'single'
        elif sure and all(d > 0 for d in deltas):
            group = 'better'
        elif sure and all(d < 0 for d in deltas):
            group = 'worse'
        else:
            group = 'unclear'
        groups[group].append(_delta_text(method, delta))
    words = {'better': 'better than the student trained alone on every seed',
             'worse': 'worse on every seed',
             'unclear': 'not distinguishable from it (mixed signs or p >= 0.05)',
             'single': 'one seed so far'}
    parts = [f'{words[k]}: {", ".join(v)}' for k, v in groups.items() if v]
    if not parts:
        return ''
    return ('Reading (paired PSNR difference to scratch, raw weights): '
            + '; '.join(parts) + '.\n')


def reproducing_command(folder: str, summary: dict, iters_arg: str = '') -> str:
    """The benchmark command that rebuilds the table of ``folder``: the config, iterations, method rows
    and sweep its ``summary.json`` records (``iters_arg`` and the default config without one)."""
    bench_config = summary.get('config') or 'bench/photo/benchmark.yml'
    iters = f' --iters {summary["iters"]}' if summary.get('iters') else iters_arg
    methods = stored_methods(summary)
    return (f'OMP_NUM_THREADS=1 python bench/photo_benchmark.py --config {bench_config} '
            f'--data datasets/photos{iters}{" --methods " + ",".join(methods) if methods else ""} '
            f'--out {osp.relpath(folder, config.REPO)} --jobs 2 --skip-done'
            f'{" --sweep" if summary.get("sweep") else ""}')


def stored_table(table: str, heading: str, intro: str, iters_arg: str = '') -> str:
    """One stored table under ``heading`` with its command and reading; ``''`` when it is not there."""
    if not osp.isfile(table):
        return ''
    folder = osp.dirname(table)
    with open(table, encoding='utf-8') as f:
        text = f.read().strip()
    summary = read_summary(folder)
    command = reproducing_command(folder, summary, iters_arg)
    return f'\n## {heading}\n\n{intro} Produced by `{command}` (docs/results.md says what it means):\n\n{text}\n\n' \
        + reading(summary)


def stored_benchmark() -> str:
    """The committed real-photo benchmark tables (the measurement the demo illustrates): the
    1,200-iteration table, then the same student at convergence (4,800 iterations)."""
    if not osp.isfile(config.BENCHMARK_TABLE):
        return f'\n(No stored benchmark table at {config.BENCHMARK_TABLE}: see docs/results.md.)\n'
    return (stored_table(config.BENCHMARK_TABLE, 'Stored result of the real-photo benchmark (10 held-out test photos)',
                         'A fixed budget of 1,200 iterations.')
            + stored_table(config.CONVERGED_TABLE, 'The same student trained to convergence (4,800 iterations)',
                           'The table above measures a fixed budget of 1,200 iterations; here every student trains '
                           '4x longer, until the scratch student gains < 0.05 dB over the last 20 %.',
                           ' --iters 4800'))
