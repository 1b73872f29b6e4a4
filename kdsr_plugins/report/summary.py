"""Group runs by method across seeds, aggregate final metrics and curves, and format the table."""
from __future__ import annotations

import math
import re
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from kdsr_plugins.report.logs import Curves, Metrics, TestResult, TrainLog

#: ``<anything>_<method>_s<seed>``: the method is the last underscore-free token before ``_s<seed>``.
DEFAULT_GROUP_BY = r'(?P<method>[^_]+)_s(?P<seed>\d+)$'
#: ``..._teacher_<name>`` (optionally ``_s<seed>``): a teacher evaluated with the students.
DEFAULT_TEACHER_RE = r'(?P<method>teacher_[^_]+?)(?:_s(?P<seed>\d+))?$'


@dataclass
class Run:
    """One training and/or test run of a method.

    Attributes:
        method: Group key (e.g. ``kd``).
        seed: Seed parsed from the name (``None`` if the pattern has none).
        teacher: Whether the run is a teacher row.
        train_name: Experiment name (``experiments/<train_name>``), if any.
        test_name: Test name (``results/<test_name>``), if any.
        train: Parsed validation curves.
        test: Parsed test result.
    """

    method: str
    seed: int | None
    teacher: bool
    train_name: str | None = None
    test_name: str | None = None
    train: TrainLog | None = None
    test: TestResult | None = None

    @property
    def sample_id(self) -> str:
        """Identity of the run inside its group (the seed, else the names)."""
        return f's{self.seed}' if self.seed is not None else (self.test_name or self.train_name or '?')


@dataclass
class Group:
    """All runs of one method.

    Attributes:
        method: Group key.
        label: Display label.
        teacher: Whether it is a teacher group.
        runs: Runs by sample id (seed).
    """

    method: str
    label: str
    teacher: bool
    runs: dict[str, Run] = field(default_factory=dict)


def classify(name: str, group_by: str = DEFAULT_GROUP_BY, teacher_re: str = DEFAULT_TEACHER_RE
             ) -> tuple[str, int | None, bool] | None:
    """Method, seed and teacher flag of a run name, or ``None`` if neither pattern matches.

    The teacher pattern is tried first. The method is the ``method`` named group (else the first
    group, else the whole match); the seed is the ``seed`` named group if present.
    """
    for pattern, teacher in ((teacher_re, True), (group_by, False)):
        if not pattern:
            continue
        match = re.search(pattern, name)
        if not match:
            continue
        groups = match.groupdict()
        method = groups.get('method') or (match.group(1) if match.re.groups else match.group(0))
        seed = groups.get('seed')
        return method, (int(seed) if seed is not None else None), teacher
    return None


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (n - 1; ``None`` for a single value)."""
    if not values:
        return math.nan, None
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else None)


def build_groups(experiments: dict[str, TrainLog], results: dict[str, TestResult],
                 group_by: str = DEFAULT_GROUP_BY, teacher_re: str = DEFAULT_TEACHER_RE, include: str | None = None,
                 exclude: str | None = None,
                 labels: dict[str, str] | None = None) -> tuple[dict[str, Group], list[str]]:
    """Pair training and test runs by (method, seed) and group them by method.

    Args:
        experiments: ``{experiment name: TrainLog}`` (:func:`~kdsr_plugins.report.logs.read_experiments`).
        results: ``{test name: TestResult}`` (:func:`~kdsr_plugins.report.logs.read_results`).
        group_by: Regex (``re.search``) giving ``method`` and ``seed`` of a student run name.
        teacher_re: Regex of teacher run names (tried first; empty string: no teachers).
        include: Only names matching this regex (``re.search``) are used.
        exclude: Names matching this regex are skipped.
        labels: Display label per method key (default: the key; teachers ``Teacher (<name>)``).

    Returns:
        ``({method: Group}, [names that matched no pattern])``.
    """
    labels = labels or {}
    groups: dict[str, Group] = {}
    ignored = []
    entries = [(name, log, 'train') for name, log in experiments.items()]
    entries += [(name, res, 'test') for name, res in results.items()]
    for name, item, kind in entries:
        if (include and not re.search(include, name)) or (exclude and re.search(exclude, name)):
            continue
        found = classify(name, group_by, teacher_re)
        if found is None:
            ignored.append(name)
            continue
        method, seed, teacher = found
        default = f'Teacher ({method.split("_", 1)[1]})' if teacher and method.startswith('teacher_') else method
        group = groups.setdefault(method, Group(method, labels.get(method, default), teacher))
        run = Run(method, seed, teacher)
        run = group.runs.setdefault(run.sample_id if seed is not None else name.removeprefix('test_'), run)
        if kind == 'train':
            run.train_name, run.train = name, item
        else:
            run.test_name, run.test = name, item
    return groups, sorted(ignored)


def order_groups(groups: dict[str, Group], order: list[str] | None = None, baselines: list[str] | None = None
                 ) -> list[Group]:
    """Groups in display order: ``order`` (else baselines first, then by key), teachers last."""
    keys = list(order or [])
    if not keys:
        keys = [b for b in baselines or [] if b in groups]
        keys += sorted(k for k in groups if k not in keys and not groups[k].teacher)
    keys += sorted(k for k in groups if k not in keys)
    return [groups[k] for k in keys if k in groups]


def final_values(group: Group, dataset: str, metric: str) -> dict[str, float]:
    """Test values of a group per sample id (seed) on one dataset."""
    values = {}
    for sid, run in group.runs.items():
        if run.test and metric in run.test.metrics.get(dataset, {}):
            values[sid] = run.test.metrics[dataset][metric]
    return values


def paired_delta(group: Group, base: Group, dataset: str, metric: str) -> tuple[float, float | None, int, bool]:
    """Difference to a baseline: mean and std of per-seed differences at equal seeds.

    Returns:
        ``(mean, std, n, paired)``; without common seeds (e.g. a teacher), the difference of the means
        with ``std = None`` and ``paired = False``.
    """
    mine, theirs = final_values(group, dataset, metric), final_values(base, dataset, metric)
    common = sorted(set(mine) & set(theirs))
    if common and not group.teacher and not base.teacher:
        mean, std = mean_std([mine[s] - theirs[s] for s in common])
        return mean, std, len(common), True
    if mine and theirs:
        return mean_std(list(mine.values()))[0] - mean_std(list(theirs.values()))[0], None, 0, False
    return math.nan, None, 0, False


def _first_seen(groups: list[Group], datasets_of: Callable[[Run], Iterable[str]]) -> list[str]:
    """Dataset names ``datasets_of(run)`` over all runs, without repeats, in order of first appearance."""
    return list(dict.fromkeys(d for group in groups for run in group.runs.values() for d in datasets_of(run)))


def test_datasets(groups: list[Group]) -> list[str]:
    """Test dataset names in order of first appearance."""
    return _first_seen(groups, lambda run: run.test.metrics if run.test else {})


def metric_names(groups: list[Group], dataset: str) -> list[str]:
    """Metrics present on a dataset: psnr, ssim first, then the others alphabetically."""
    found = {m for g in groups for r in g.runs.values() if r.test for m in r.test.metrics.get(dataset, {})}
    return [m for m in ('psnr', 'ssim') if m in found] + sorted(found - {'psnr', 'ssim'})


def _digits(metric: str) -> int:
    return 4 if metric in ('ssim', 'lpips') else 3


def _fmt(mean: float, std: float | None, digits: int, sign: bool = False) -> str:
    if math.isnan(mean):
        return '–'
    text = f'{mean:+.{digits}f}' if sign else f'{mean:.{digits}f}'
    return text + (f' ± {std:.{digits}f}' if std is not None else '')


def markdown_table(groups: list[Group], dataset: str, baselines: list[str], primary: str = 'psnr',
                   title: str | None = None) -> str:
    """One markdown table: mean ± sample std per method, paired differences to the baselines.

    Args:
        groups: Groups in display order.
        dataset: Test dataset name.
        baselines: Method keys to compare against (missing ones are skipped).
        primary: Metric of the difference columns.
        title: Heading (default: dataset name).
    """
    metrics = metric_names(groups, dataset)
    by_key = {g.method: g for g in groups}
    bases = [by_key[b] for b in baselines if b in by_key]
    head = ['Method', 'Seeds'] + [f'{m.upper()} (Y)' if m in ('psnr', 'ssim') else m for m in metrics]
    head += [f'Δ {primary.upper()} vs {b.label}' for b in bases]
    lines = [f'### {title or dataset}', '', '| ' + ' | '.join(head) + ' |',
             '|---|' + '---:|' * (len(head) - 1)]
    for group in groups:
        values = {m: final_values(group, dataset, m) for m in metrics}
        if not any(values.values()):
            continue
        seeds = sorted({r.seed for r in group.runs.values() if r.seed is not None and r.test})
        cells = [group.label, ','.join(map(str, seeds)) if seeds else '–']
        cells += [_fmt(*mean_std(list(values[m].values())), _digits(m)) for m in metrics]
        for base in bases:
            if base is group:
                cells.append('—')
                continue
            mean, std, _, paired = paired_delta(group, base, dataset, primary)
            cells.append(_fmt(mean, std, _digits(primary), sign=True) + ('' if paired or math.isnan(mean) else ' †'))
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n'


def table_notes(baselines_present: bool) -> str:
    """Footnote explaining the table's statistics."""
    note = ('\nMean ± sample standard deviation (n − 1) over the listed seeds of the test results '
            '(Y channel of YCbCr, as logged by BasicSR). ')
    if baselines_present:
        note += ('Δ: mean ± standard deviation of the per-seed differences at equal seeds; † marks a '
                 'difference of means (no common seeds, e.g. teachers).')
    return note + '\n'


def mean_curve(group: Group, dataset: str, metric: str) -> tuple[list[int], list[float], list[float | None], int]:
    """Validation curve of a group: per iteration the mean and sample std over the runs that have it.

    Returns:
        ``(iterations, means, stds, number of runs with a curve)``.
    """
    curves = [run.train.curves.get(dataset, {}).get(metric, {}) for run in group.runs.values() if run.train]
    curves = [c for c in curves if c]
    iters = sorted({it for c in curves for it in c})
    means, stds = [], []
    for it in iters:
        mean, std = mean_std([c[it] for c in curves if it in c])
        means.append(mean)
        stds.append(std)
    return iters, means, stds, len(curves)


def curve_datasets(groups: list[Group]) -> list[str]:
    """Validation dataset names found in training logs, in order of first appearance."""
    return _first_seen(groups, lambda run: run.train.curves if run.train else {})


def to_json(groups: list[Group]) -> dict:
    """Everything parsed, for ``summary.json``."""
    out = {}
    for group in groups:
        runs = {}
        for sid, run in group.runs.items():
            curves: Curves = run.train.curves if run.train else {}
            metrics: Metrics = run.test.metrics if run.test else {}
            runs[sid] = {'seed': run.seed, 'train_name': run.train_name, 'test_name': run.test_name,
                         'test': metrics,
                         'curves': {d: {m: sorted(v.items()) for m, v in ms.items()} for d, ms in curves.items()}}
        out[group.method] = {'label': group.label, 'teacher': group.teacher, 'runs': runs}
    return out
