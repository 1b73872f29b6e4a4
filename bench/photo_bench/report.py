"""The benchmark's ``table.md``, ``summary.json``, PSNR curves and picture grid (docs/results.md, "Columns")."""
from __future__ import annotations

import json
import os.path as osp

import cv2

from photo_bench.config import parse_row_label, row_label
from photo_bench.stats import mean_std, paired_delta

KEYS = {'raw': 'params', 'ema': 'params_ema'}


def _per_seed(results: list[dict], key: str, metric: str) -> dict[int, float]:
    return {r['seed']: r['test'][key][metric] for r in results if key in r.get('test', {})}


def row_summary(results: list[dict]) -> dict:
    """Mean ± std over seeds of raw and EMA test PSNR/SSIM and of PSNR to the teacher's output."""
    out = {'seeds': sorted(r['seed'] for r in results), 'weight': results[0].get('weight'),
           'train_s': mean_std([r['train_s'] for r in results if r.get('train_s') is not None])[0]}
    for kind, key in KEYS.items():
        block = {}
        for metric in ('psnr', 'ssim', 'psnr_ref'):
            per = _per_seed(results, key, metric)
            if per:
                mean, std = mean_std(list(per.values()))
                block['psnr_teacher' if metric == 'psnr_ref' else metric] = {'mean': mean, 'std': std, 'per_seed': per}
        if block:
            out[kind] = block
    return out


def deltas(results: list[dict], base: list[dict] | None) -> dict | None:
    """Paired per-seed PSNR differences to a baseline row, for raw and EMA weights."""
    if not base:
        return None
    return {kind: paired_delta(_per_seed(results, key, 'psnr'), _per_seed(base, key, 'psnr'))
            for kind, key in KEYS.items() if _per_seed(results, key, 'psnr')}


def _fmt(block: dict | None, digits: int = 3) -> str:
    if not block or block.get('mean') is None:
        return '-'
    std = block.get('std')
    return f'{block["mean"]:.{digits}f}' + (f' ± {std:.{digits}f}' if std is not None else '')


def _fmt_delta(d: dict | None, kind: str) -> str:
    d = (d or {}).get(kind)
    if not d or d['mean'] is None:
        return '-'
    text = f'{d["mean"]:+.3f}' + (f' ± {d["std"]:.3f}' if d['std'] is not None else '')
    return text + (f' (p={d["p"]:.3g})' if d['p'] is not None else '')


def markdown(summary: dict) -> str:
    """``table.md``: one row per method (shipped weights), then the swept rows, the teachers and notes."""
    head = ('| Method | Loss weight | Seeds | PSNR raw | SSIM raw | PSNR EMA | SSIM EMA | Δ scratch raw | Δ kd raw '
            '| Δ scratch EMA | Δ kd EMA | PSNR to teacher (raw) |')
    lines = [f'### {summary["title"]}', '', head, '|' + '---|' * 2 + '---:|' * 10]
    for label, row in summary['rows'].items():
        if 'skipped' in row:
            lines.append(f'| {label} | skipped: {row["skipped"]} |' + ' |' * 10)
            continue
        raw, ema = row.get('raw', {}), row.get('ema', {})
        w = '-' if row.get('weight') is None else f'{row["weight"]:g}'
        lines.append(f'| {label} | {w} | {len(row["seeds"])} | {_fmt(raw.get("psnr"))} | {_fmt(raw.get("ssim"), 4)} '
                     f'| {_fmt(ema.get("psnr"))} | {_fmt(ema.get("ssim"), 4)} '
                     + ''.join(f'| {_fmt_delta(row.get(f"delta_vs_{b}"), k)} ' for k in ('raw', 'ema')
                               for b in ('scratch', 'kd'))
                     + f'| {_fmt(raw.get("psnr_teacher"), 2)} |')
    for name, t in summary['teachers'].items():
        lines.append(f'| Teacher {name} | - | - | {t["psnr"]:.3f} | {t["ssim"]:.4f} |' + ' - |' * 7)
    if agg := summary.get('aggregator'):
        for key, m in agg.items():
            lines.append(f'| MTKD aggregator ({key}) | - | 1 | {m["psnr"]:.3f} | {m["ssim"]:.4f} |' + ' - |' * 7)
    lines += ['', convergence_text(summary.get('convergence')), '', summary['notes']]
    if sweep := summary.get('sweep'):
        lines += ['', '#### Sweep (validation split, raw weights)', '',
                  '| Method | Key | Val PSNR per weight | Chosen |', '|---|---|---|---:|']
        for m, s in sweep.items():
            tried = ', '.join([f'{w}: {p:.3f}' for w, p in s['val_psnr'].items()]
                              + [f'{w}: not run yet' for w in s.get('pending', [])])
            chosen = f'{s["chosen"]:g}' if 'chosen' in s else '-'
            lines.append(f'| {m} | `{s["key"]}` | {tried} | {chosen} |')
        lines += ['', sweep_text(summary)]
    return '\n'.join(lines) + '\n'


def sweep_text(summary: dict) -> str:
    """How the sweep's trials ran and which chosen weights have no swept row, or not every seed, yet."""
    sweep = summary['sweep']
    trial = next(iter(sweep.values()))
    text = (f'Each trial: {trial["iters"]} iterations, seed {trial["seed"]}, scored on the validation split; '
            f'a swept row trains the chosen weight like the default rows ({summary["iters"]} iterations, '
            f'the same seeds).')
    rows = {m: summary['rows'].get(row_label(m, swept=True)) for m, s in sweep.items() if 'chosen' in s}
    missing = [m for m, row in rows.items() if row is None]
    if missing:
        text += f' Swept rows not run yet: {", ".join(missing)}.'
    seeds = summary.get('seeds') or []
    partial = [f'{m} ({len(row["seeds"])} of {len(seeds)})' for m, row in rows.items()
               if row and len(row.get('seeds', [])) < len(seeds)]
    if partial:
        text += f' Swept rows with seeds still to run: {", ".join(partial)}.'
    return text


def convergence_text(conv: dict | None) -> str:
    if not conv:
        return 'Scratch convergence: no scratch run with a checkpoint at 80 % of training.'
    parts = []
    for kind in ('raw', 'ema'):
        c = conv.get(f'test_{kind}')
        if c and c['mean'] is not None:
            parts.append(f'test PSNR gain over the last 20 % ({kind}) {_fmt(c)} dB')
    if (v := conv.get('val')) and v['mean'] is not None:
        parts.append(f'validation-curve gain {_fmt(v)} dB')
    verdict = conv.get('converged')
    return ('Scratch convergence (iteration {} -> {}): '.format(conv.get('from_iter'), conv.get('to_iter'))
            + '; '.join(parts) + ('' if verdict is None else f'; converged (< 0.05 dB): {"yes" if verdict else "no"}.'))


def convergence(scratch: list[dict]) -> dict | None:
    """Mean ± std over seeds of the scratch gains (test, raw and EMA; validation curve)."""
    conv = [r['convergence'] for r in scratch if r.get('convergence')]
    if not conv:
        return None
    out: dict = {}
    tests = [c['test'] for c in conv if c.get('test')]
    if tests:
        out.update(from_iter=tests[0]['from_iter'], to_iter=tests[0]['to_iter'])
        final = {r['seed']: r['test'] for r in scratch}
        for kind, key in KEYS.items():
            gains = [final[r['seed']][key]['psnr'] - r['convergence']['test'][key] for r in scratch
                     if r.get('convergence', {}).get('test', {}).get(key) is not None and key in final[r['seed']]]
            if gains:
                mean, std = mean_std(gains)
                out[f'test_{kind}'] = {'mean': mean, 'std': std, 'per_seed': gains}
    vals = [c['val']['gain'] for c in conv if c.get('val')]
    if vals:
        mean, std = mean_std(vals)
        out['val'] = {'mean': mean, 'std': std, 'per_seed': vals}
    primary = out.get('test_raw') or out.get('test_ema')
    out['converged'] = None if not primary else bool(abs(primary['mean']) < 0.05)
    return out


Series = dict[str, tuple[list[int], list[float], list[float | None]]]


def _plot_series(series: Series, path: str, title: str, ylabel: str,
                 ylim: tuple[float, float] | None = None, zero_line: bool = False) -> str:
    """One line per row (mean) with a ±1 std band in the line's colour where there is a std; one colour
    per method, its swept row dashed."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    palette = plt.get_cmap('tab10').colors
    methods = list(dict.fromkeys(parse_row_label(label)[0] for label in series))
    for label, (iters, means, stds) in series.items():
        method, swept = parse_row_label(label)  # a swept row: its method's colour, dashed
        line, = ax.plot(iters, means, label=label, marker='.' if len(iters) < 30 else None,
                        color=palette[methods.index(method) % len(palette)], linestyle='--' if swept else '-')
        if any(sd is not None for sd in stds):
            ax.fill_between(iters, [m - (sd or 0) for m, sd in zip(means, stds)],
                            [m + (sd or 0) for m, sd in zip(means, stds)], color=line.get_color(), alpha=0.15)
    if zero_line:
        ax.axhline(0.0, color='black', linewidth=0.8)
    if ylim:
        ax.set_ylim(*ylim)
    ax.set_xlabel('iteration')
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_curves(curves: dict[str, list[dict[int, float]]], path: str, title: str) -> str:
    """Validation PSNR against iteration: mean over seeds per row, ±1 std band."""
    series = {label: band for label, runs in curves.items() if (band := _mean_band(runs))}
    return _plot_series(series, path, title, 'validation PSNR (Y, dB)')


def _mean_band(curves: list[dict[int, float]]) -> tuple[list[int], list[float], list[float | None]] | None:
    """Mean and sample std (``None`` for one curve) over ``curves`` at the iterations all of them have."""
    iters = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
    if not iters:
        return None
    stats = [mean_std([c[i] for c in curves]) for i in iters]
    return iters, [m for m, _ in stats], [sd for _, sd in stats]


def paired_curve_deltas(by_seed: dict[str, dict[int, dict[int, float]]], base: str) -> Series:
    """Per row (``base`` left out): the validation curve minus ``base``'s curve of the same seed, at the
    iterations every paired seed has; ``(iterations, mean over seeds, sample std or None)``."""
    out = {}
    for label, runs in by_seed.items():
        seeds = sorted(set(runs) & set(by_seed.get(base, {})))
        if label == base or not seeds:
            continue
        diffs = [{i: runs[s][i] - by_seed[base][s][i] for i in set(runs[s]) & set(by_seed[base][s])} for s in seeds]
        if band := _mean_band(diffs):
            out[label] = band
    return out


def plot_delta_curves(by_seed: dict[str, dict[int, dict[int, float]]], base: str, path: str, title: str) -> str | None:
    """Validation PSNR minus ``base``'s of the same seed against iteration (mean, ±1 std band). The y-axis
    spans the points after the first 20 % of training, where the differences that last are visible."""
    deltas = paired_curve_deltas(by_seed, base)
    if not deltas:
        return None
    last = max(i for iters, _, _ in deltas.values() for i in iters)
    late = [m for iters, means, _ in deltas.values() for i, m in zip(iters, means) if i >= 0.2 * last]
    ylim = None
    if late:
        pad = 0.1 * (max(late) - min(late)) or 0.05
        ylim = (min(min(late), 0.0) - pad, max(max(late), 0.0) + pad)
    return _plot_series(deltas, path, title, f'validation PSNR minus {base} (same seed, dB)', ylim, zero_line=True)


def picture_grid(tiles: list[tuple[str, str]], hr_path: str, lr_path: str, scale: int, path: str, title: str,
                 crop_size: int = 96) -> str:
    """PNG crops of one test image: HR, bicubic, then ``tiles`` (``(label, image file)``)."""
    from kdsr_plugins.report.figures import Tile, draw_grid, read_bgr, textured_crop

    hr = read_bgr(hr_path)
    lr = read_bgr(lr_path)
    bicubic = cv2.resize(lr, (lr.shape[1] * scale, lr.shape[0] * scale), interpolation=cv2.INTER_CUBIC)
    hr = hr[:bicubic.shape[0], :bicubic.shape[1]]
    size = min(crop_size, hr.shape[0], hr.shape[1]) // scale * scale
    y, x = textured_crop(hr, size, align=scale)
    items = [Tile('HR', hr), Tile('bicubic', bicubic)]
    items += [Tile(label, read_bgr(p)) for label, p in tiles if osp.isfile(p)]
    draw_grid(items, (y, x, size), scale, path, title=title)
    return path


def write(summary: dict, out: str) -> dict[str, str]:
    with open(osp.join(out, 'summary.json'), 'w', encoding='utf-8') as f:
        json.dump(summary, f, indent=1, default=str)
    with open(osp.join(out, 'table.md'), 'w', encoding='utf-8') as f:
        f.write(markdown(summary))
    return {'table': osp.join(out, 'table.md'), 'summary': osp.join(out, 'summary.json')}
