"""Paired per-seed statistics and the convergence figure of the benchmark (docs/results.md, "Columns")."""
from __future__ import annotations

from collections.abc import Mapping

from kdsr_plugins.report.summary import mean_std as summary_mean_std


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (``ddof`` 1; ``None`` below two values, both ``None`` for none:
    the summary is JSON, which has no NaN)."""
    return summary_mean_std(values) if values else (None, None)


def paired_delta(method: Mapping[int, float], base: Mapping[int, float]) -> dict:
    """Per-seed paired difference ``method - base`` over the seeds both have.

    Returns ``{'seeds', 'deltas', 'mean', 'std', 'n', 'p'}``: ``p`` is the two-sided paired t-test
    p-value (``scipy.stats.ttest_rel``), ``None`` with fewer than two pairs or identical differences
    (zero variance: the t statistic is undefined).
    """
    seeds = sorted(set(method) & set(base))
    deltas = [method[s] - base[s] for s in seeds]
    mean, std = mean_std(deltas)
    p = None
    if len(seeds) >= 2 and std is not None and std > 0:
        from scipy.stats import ttest_rel

        p = float(ttest_rel([method[s] for s in seeds], [base[s] for s in seeds]).pvalue)
    return {'seeds': seeds, 'deltas': deltas, 'mean': mean, 'std': std, 'n': len(seeds), 'p': p}


def last_fraction_gain(curve: Mapping[int, float], total_iter: int, fraction: float = 0.2) -> dict | None:
    """Gain of a curve over the last ``fraction`` of training.

    Definition: ``value(T) - value(t0)`` with ``T`` the last point and ``t0`` the latest point at or
    before ``(1 - fraction) * total_iter`` (the start of the last 20 %). ``None`` without both points.
    """
    if not curve:
        return None
    last = max(curve)
    start = (1 - fraction) * total_iter
    before = [it for it in curve if it <= start + 1e-9]
    if not before or max(before) == last:
        return None
    t0 = max(before)
    return {'from_iter': t0, 'to_iter': last, 'gain': curve[last] - curve[t0]}
