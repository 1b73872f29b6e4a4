"""Parsers for BasicSR 1.4.2 training and test logs.

Formats (``basicsr/utils/logger.py``, ``basicsr/models/sr_model.py``, ``basicsr/train.py``):

* every record starts with ``<asctime> <LEVEL>: <message>``; multi-line messages continue on raw lines;
* the options are dumped once at the top by ``dict2str`` (``  val_freq: 25``, ``  total_iter: 200``);
* progress lines (every ``print_freq`` iterations) read
  ``[<name>..][epoch:  3, iter:   1,200, lr:(1.000e-03,)] [eta: ...] l_pix: 1.0e-02 ...``;
* a validation is ``Validation <dataset>`` followed by one ``\\t # <metric>: <value>`` line per metric,
  optionally with ``\\tBest: <value> @ <iter> iter``. The validation line itself carries no iteration:
  validations run at every multiple of ``val[val_freq]`` and once more after ``End of training``
  (with the weights of the last iteration).

Test logs (``results/<name>/test_<name>_<time>.log``) hold one validation block per test dataset.
"""
from __future__ import annotations

import glob
import math
import os.path as osp
import re
from dataclasses import dataclass, field
from datetime import datetime

_RECORD = re.compile(r'^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2},\d{3} [A-Z]+: ')
_VALIDATION = re.compile(r'INFO: Validation (?P<dataset>.+?)\s*$')
_METRIC = re.compile(r'^\t # (?P<metric>[^:\s]+): (?P<value>\S+?)'
                     r'(?:\tBest: (?P<best>\S+) @ (?P<best_iter>\S+) iter)?\s*$')
_PROGRESS = re.compile(r'\[epoch:\s*-?\d+, iter:\s*(?P<iter>[\d,]+), lr:')
_START = re.compile(r'(?:Start training from epoch: \d+, iter: |Resuming training from epoch: \d+, iter: )'
                    r'(?P<iter>\d+)')
_END = 'End of training.'
_OPTION = r'^\s+{key}: (?P<value>[-+\d.eE]+)\s*$'

#: Metrics per dataset: ``{dataset: {metric: value}}``.
Metrics = dict[str, dict[str, float]]
#: Curves per dataset and metric: ``{dataset: {metric: {iteration: value}}}``.
Curves = dict[str, dict[str, dict[int, float]]]


@dataclass
class TrainLog:
    """Validation curves of one training run (one or several log files, e.g. after resumes).

    Attributes:
        curves: ``{dataset: {metric: {iteration: value}}}``.
        val_freq: ``val.val_freq`` from the option dump (``None`` if absent).
        total_iter: ``train.total_iter`` from the option dump.
        files: Parsed log files, oldest first.
    """

    curves: Curves = field(default_factory=dict)
    val_freq: int | None = None
    total_iter: int | None = None
    files: list[str] = field(default_factory=list)


def _option(text: str, key: str) -> int | None:
    match = re.search(_OPTION.format(key=re.escape(key)), text, re.MULTILINE)
    return int(float(match.group('value'))) if match else None


def _float(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return math.nan


def _blocks(lines: list[str]) -> list[tuple[int, str, dict[str, float], dict[str, int | None]]]:
    """Validation blocks as ``(line index, dataset, {metric: value}, {metric: best iter or None})``."""
    blocks = []
    for i, line in enumerate(lines):
        match = _VALIDATION.search(line)
        if not match or not _RECORD.match(line):
            continue
        values, best_iters = {}, {}
        for follow in lines[i + 1:]:
            metric = _METRIC.match(follow)
            if not metric:
                break
            name, value = metric.group('metric'), metric.group('value')
            values[name] = _float(value)
            best_iter = metric.group('best_iter')
            same = metric.group('best') == value
            best_iters[name] = int(best_iter) if same and best_iter and best_iter.isdigit() else None
        if values:
            blocks.append((i, match.group('dataset'), values, best_iters))
    return blocks


def parse_train_log(text: str, log: TrainLog | None = None) -> TrainLog:
    """Add the validation results of one BasicSR training log to ``log`` (a new one by default).

    The iteration of a periodic validation is the next multiple of ``val_freq`` after the previous
    validation of the same dataset (or after the start/resume iteration), never earlier than the last
    progress line; without ``val_freq`` it is the iteration of an exact ``Best`` record or of the last
    progress line. The validation after ``End of training`` is assigned to ``total_iter``. Later values
    for the same iteration replace earlier ones (a resumed run repeating a validation).

    Args:
        text: Content of ``train_<name>_<time>.log``.
        log: Accumulator for several files of the same run.

    Returns:
        The accumulator.
    """
    log = log if log is not None else TrainLog()
    val_freq, total_iter = _option(text, 'val_freq'), _option(text, 'total_iter')
    log.val_freq = val_freq or log.val_freq
    log.total_iter = total_iter or log.total_iter
    lines = text.splitlines()
    blocks = {i: (dataset, values, best) for i, dataset, values, best in _blocks(lines)}
    start, last_progress, ended = 0, None, False
    previous: dict[str, int] = {}
    for i, line in enumerate(lines):
        if not _RECORD.match(line):
            continue
        if (match := _START.search(line)):
            start, last_progress, ended, previous = int(match.group('iter')), None, False, {}
        elif (match := _PROGRESS.search(line)):
            last_progress = int(match.group('iter').replace(',', ''))
        elif _END in line:
            ended = True
        elif i in blocks:
            dataset, values, best = blocks[i]
            it = _validation_iter(dataset, best, previous, start, last_progress, ended, log)
            if it is None:
                continue
            previous[dataset] = it
            for metric, value in values.items():
                log.curves.setdefault(dataset, {}).setdefault(metric, {})[it] = value
    return log


def _validation_iter(dataset: str, best: dict[str, int | None], previous: dict[str, int], start: int,
                     last_progress: int | None, ended: bool, log: TrainLog) -> int | None:
    if ended:
        return log.total_iter if log.total_iter is not None else (last_progress or previous.get(dataset))
    if log.val_freq:
        freq = log.val_freq
        it = (max(previous.get(dataset, start), start) // freq + 1) * freq
        if last_progress is not None and it < last_progress:
            it = -(-last_progress // freq) * freq
        return it
    exact = [b for b in best.values() if b is not None and b > previous.get(dataset, start)]
    return exact[0] if exact else last_progress


def parse_test_log(text: str) -> Metrics:
    """Metrics per test dataset from a ``test_<name>_<time>.log`` (the last block of a dataset wins)."""
    metrics: Metrics = {}
    for _, dataset, values, _ in _blocks(text.splitlines()):
        metrics[dataset] = dict(values)
    return metrics


def _logs(folder: str, pattern: str) -> list[str]:
    # BasicSR's time stamps (%Y%m%d_%H%M%S) sort chronologically.
    return sorted(glob.glob(osp.join(folder, pattern)))


def _run_dirs(root: str) -> list[str]:
    if not root or not osp.isdir(root):
        return []
    return sorted(d for d in glob.glob(osp.join(root, '*')) if osp.isdir(d) and '_archived_' not in osp.basename(d))


def read_experiment(folder: str) -> TrainLog | None:
    """Parse the ``train_<name>_*.log`` files of one experiment folder ``.../<name>`` (``None``: no log)."""
    name = osp.basename(osp.normpath(folder))
    files = _logs(folder, f'train_{glob.escape(name)}_*.log')
    if not files:
        return None
    log = TrainLog(files=files)
    for path in files:
        with open(path, encoding='utf-8', errors='replace') as f:
            parse_train_log(f.read(), log)
    return log


def train_span_s(folder: str) -> float:
    """Seconds the processes of one experiment folder ``.../<name>`` ran: the sum over its
    ``train_<name>_*.log`` files of the time from the first to the last time-stamped record
    (an interrupted run resumed with ``--auto_resume`` writes one log per process)."""
    name = osp.basename(osp.normpath(folder))
    total = 0.0
    for path in _logs(folder, f'train_{glob.escape(name)}_*.log'):
        with open(path, encoding='utf-8', errors='replace') as f:
            stamps = [line[:23] for line in f if _RECORD.match(line)]
        if len(stamps) > 1:
            first, last = (datetime.strptime(t, '%Y-%m-%d %H:%M:%S,%f') for t in (stamps[0], stamps[-1]))
            total += (last - first).total_seconds()
    return total


def read_experiments(root: str) -> dict[str, TrainLog]:
    """Parse every ``<root>/<name>/train_<name>_*.log`` (archived copies are skipped).

    Returns:
        ``{run name: TrainLog}`` for runs with at least one log file.
    """
    runs = {}
    for folder in _run_dirs(root):
        if (log := read_experiment(folder)) is not None:
            runs[osp.basename(folder)] = log
    return runs


@dataclass
class TestResult:
    """Final metrics of one test run.

    Attributes:
        metrics: ``{dataset: {metric: value}}`` from the newest test log.
        folder: ``results/<name>`` (holds ``visualization/<dataset>/<img>_<suffix>.png``).
        log_file: The parsed log.
    """

    metrics: Metrics
    folder: str
    log_file: str


def read_results(root: str) -> dict[str, TestResult]:
    """Parse the newest ``<root>/<name>/test_<name>_*.log`` of every test run.

    Returns:
        ``{test name: TestResult}`` for runs whose log holds at least one metric.
    """
    runs = {}
    for folder in _run_dirs(root):
        name = osp.basename(folder)
        files = _logs(folder, f'test_{glob.escape(name)}_*.log')
        for path in reversed(files):  # newest complete log first
            with open(path, encoding='utf-8', errors='replace') as f:
                metrics = parse_test_log(f.read())
            if metrics:
                runs[name] = TestResult(metrics, folder, path)
                break
    return runs
