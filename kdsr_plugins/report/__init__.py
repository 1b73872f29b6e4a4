"""Turn BasicSR training logs and test results into a quality table, curves and a picture grid.

``python -m kdsr_plugins.report --experiments experiments --results results --out report`` writes

* ``table.md``: per method (runs grouped across seeds by a name pattern, ``<prefix>_<method>_s<seed>``
  by default) the test PSNR/SSIM as mean ± sample std, and paired per-seed differences to baselines;
* ``psnr_curves.png``: validation PSNR against iteration per method (mean, ±1 std band);
* ``grid.png``: one crop of LR (nearest-upscaled), every method's SR output, the teachers and HR;
* ``summary.json``: everything parsed.
"""
from __future__ import annotations

import json
import os
import os.path as osp
from dataclasses import dataclass, field

from kdsr_plugins.report.logs import TrainLog, parse_test_log, parse_train_log, read_experiments, read_results
from kdsr_plugins.report.summary import (
    DEFAULT_GROUP_BY,
    DEFAULT_TEACHER_RE,
    Group,
    Run,
    build_groups,
    curve_datasets,
    markdown_table,
    mean_std,
    order_groups,
    table_notes,
    test_datasets,
    to_json,
)

__all__ = [
    'DEFAULT_GROUP_BY',
    'DEFAULT_TEACHER_RE',
    'ReportOptions',
    'TrainLog',
    'build_groups',
    'build_report',
    'mean_std',
    'parse_test_log',
    'parse_train_log',
    'read_experiments',
    'read_results',
]


@dataclass
class ReportOptions:
    """Options of :func:`build_report` (the CLI flags of ``python -m kdsr_plugins.report``).

    Attributes:
        results: ``results/`` folder (test runs: ``<name>/test_<name>_*.log``, ``visualization/``).
        out: Output folder.
        experiments: ``experiments/`` folder (training logs with validation), optional.
        group_by: Regex (``re.search``) with named groups ``method`` and (optionally) ``seed``.
        teacher_re: Regex of teacher runs (tried first; ``''`` disables).
        include: Only run names matching this regex.
        exclude: Skip run names matching this regex.
        labels: Display label per method key.
        order: Method keys in display order (others follow).
        baselines: Method keys of the difference columns (and first in the default order).
        metric: Metric of the curves and of the difference columns.
        val_dataset: Validation dataset of the curves (default: the first found).
        grid_image: Image stem of the grid (default: the first saved image).
        grid_dataset: Visualization sub-folder (default: any).
        grid_seed: Seed of the student outputs shown (default: the smallest available).
        hr: HR image file or folder (``<image>.<ext>``) of the grid.
        lr: LR image file or folder of the grid.
        scale: SR scale (default: HR/LR size ratio; 1 without LR).
        crop: ``(y, x, size)`` in HR pixels (default: the most textured window).
        crop_size: Side of the default crop in HR pixels.
        grid_cols: Tiles per grid row.
        title: Title of the table section.
        efficiency_opts: Option YAMLs whose student and teachers get an efficiency table
            (``efficiency.md``, ``efficiency.json`` and a section of ``table.md``).
        efficiency_lr: LR size ``(w, h)`` of the counts (default 1280x720 / scale).
        efficiency_latency_lr: LR size of the latency runs (default ``efficiency_lr``).
        efficiency_repeats: Timed forwards per network (0: no latency).
        efficiency_threads: CPU threads of the latency runs.
    """

    results: str
    out: str
    experiments: str | None = None
    group_by: str = DEFAULT_GROUP_BY
    teacher_re: str = DEFAULT_TEACHER_RE
    include: str | None = None
    exclude: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    baselines: list[str] = field(default_factory=lambda: ['scratch', 'kd'])
    metric: str = 'psnr'
    val_dataset: str | None = None
    grid_image: str | None = None
    grid_dataset: str | None = None
    grid_seed: int | None = None
    hr: str | None = None
    lr: str | None = None
    scale: int | None = None
    crop: tuple[int, int, int] | None = None
    crop_size: int = 96
    grid_cols: int | None = None
    title: str | None = None
    efficiency_opts: list[str] = field(default_factory=list)
    efficiency_lr: tuple[int, int] | None = None
    efficiency_latency_lr: tuple[int, int] | None = None
    efficiency_repeats: int = 5
    efficiency_threads: int = 1


def _log(msg: str) -> None:
    print(f'[report] {msg}', flush=True)


def build_report(opt: ReportOptions) -> dict[str, str]:
    """Parse the logs and write ``table.md``, ``psnr_curves.png``, ``grid.png`` and ``summary.json``.

    A picture whose inputs are missing (no validation curves, no saved SR images) is skipped with a
    message; the table is always written.

    Returns:
        ``{'table': path, 'curves': path, 'grid': path, 'summary': path}`` for the files written.

    Raises:
        FileNotFoundError: No test result matches under ``opt.results``.
    """
    os.makedirs(opt.out, exist_ok=True)
    experiments = read_experiments(opt.experiments) if opt.experiments else {}
    results = read_results(opt.results)
    by_key, ignored = build_groups(experiments, results, opt.group_by, opt.teacher_re, opt.include, opt.exclude,
                                   opt.labels)
    groups = order_groups(by_key, opt.order, opt.baselines)
    if not any(r.test for g in groups for r in g.runs.values()):
        raise FileNotFoundError(f'No test log under {opt.results} matches the patterns (group-by {opt.group_by!r}, '
                                f'teachers {opt.teacher_re!r}, include {opt.include!r}).')
    written = {}
    sections = [f'## {opt.title or "Quality report"}', '']
    for dataset in test_datasets(groups):
        sections.append(markdown_table(groups, dataset, opt.baselines, opt.metric, title=f'Test set `{dataset}`'))
    sections.append(table_notes(any(b in by_key for b in opt.baselines)))
    unpaired = [f'{g.label} ({sid})' for g in groups for sid, r in g.runs.items() if r.train and not r.test]
    if unpaired:
        sections.append(f'Runs without a test result (curves only): {", ".join(unpaired)}.\n')
    if ignored:
        sections.append(f'Names matching no pattern (ignored): {", ".join(ignored)}.\n')
    if opt.efficiency_opts:
        sections.append(_efficiency(opt, written))
    written['table'] = osp.join(opt.out, 'table.md')
    with open(written['table'], 'w', encoding='utf-8') as f:
        f.write('\n'.join(sections))
    with open(osp.join(opt.out, 'summary.json'), 'w', encoding='utf-8') as f:
        json.dump(to_json(groups), f, indent=1)
    written['summary'] = osp.join(opt.out, 'summary.json')

    from kdsr_plugins.report import figures  # matplotlib only when pictures are drawn

    val_sets = curve_datasets(groups)
    val_dataset = opt.val_dataset or (val_sets[0] if val_sets else None)
    tests = test_datasets(groups)
    teacher_set = val_dataset if val_dataset in tests else (tests[0] if tests else None)
    curves = osp.join(opt.out, 'psnr_curves.png')
    if val_dataset and figures.plot_curves(groups, val_dataset, curves, opt.metric, teacher_dataset=teacher_set):
        written['curves'] = curves
    else:
        _log('no validation curves found (train with val.val_freq and pass --experiments): psnr_curves.png skipped')
    grid = _grid(groups, opt, figures)
    if grid:
        written['grid'] = grid
    return written


def _efficiency(opt: ReportOptions, written: dict[str, str]) -> str:
    """Measure the networks of ``opt.efficiency_opts``; write efficiency.md/.json; return the table.md section."""
    from kdsr_plugins.report.efficiency import markdown_efficiency, measure_option_files, rows_to_json

    _log(f'efficiency: measuring the networks of {len(opt.efficiency_opts)} option file(s)')
    rows = measure_option_files(opt.efficiency_opts, opt.efficiency_lr, opt.efficiency_latency_lr,
                                max(opt.efficiency_repeats, 1), opt.efficiency_threads, opt.efficiency_repeats > 0)
    section = '### Efficiency\n\n' + markdown_efficiency(rows)
    written['efficiency'] = osp.join(opt.out, 'efficiency.md')
    with open(written['efficiency'], 'w', encoding='utf-8') as f:
        f.write(section)
    written['efficiency_json'] = osp.join(opt.out, 'efficiency.json')
    with open(written['efficiency_json'], 'w', encoding='utf-8') as f:
        json.dump(rows_to_json(rows), f, indent=1)
    return section


def _pick_run(group: Group, seed: int | None) -> Run | None:
    runs = [r for r in group.runs.values() if r.test]
    if seed is not None:
        runs = [r for r in runs if r.seed == seed] or runs
    return min(runs, key=lambda r: (r.seed is None, r.seed or 0, r.test_name or '')) if runs else None


def cv2_upscale(img, scale: int):
    """Nearest-neighbour upscaling (the LR input at HR size, to choose a crop on)."""
    import cv2

    return cv2.resize(img, (img.shape[1] * scale, img.shape[0] * scale), interpolation=cv2.INTER_NEAREST)


def _grid(groups: list[Group], opt: ReportOptions, figures) -> str | None:
    students = [g for g in groups if not g.teacher]
    seeds = sorted({r.seed for g in students for r in g.runs.values() if r.test and r.seed is not None})
    seed = opt.grid_seed if opt.grid_seed is not None else (seeds[0] if seeds else None)
    picked = [(g, run) for g in groups if (run := _pick_run(g, seed if not g.teacher else None))]
    image = opt.grid_image
    if image is None:
        for _, run in picked:
            stems = figures.list_sr_images(run.test.folder, run.test_name, opt.grid_dataset)
            if stems:
                image = stems[0]
                break
    if image is None:
        _log('no saved SR images (test with val.save_img: true): grid.png skipped')
        return None
    outputs = []
    for group, run in picked:
        path = figures.sr_image_path(run.test.folder, run.test_name, image, opt.grid_dataset)
        if path:
            label = group.label if group.teacher or run.seed == seed else f'{group.label} (s{run.seed})'
            outputs.append((label, figures.read_bgr(path)))
        else:
            _log(f'no SR image {image!r} for {group.label}: left out of the grid')
    hr_path, lr_path = figures.find_image(opt.hr, image), figures.find_image(opt.lr, image)
    for flag, given, found in (('--hr', opt.hr, hr_path), ('--lr', opt.lr, lr_path)):
        if given and not found:
            _log(f'{flag} {given}: no image {image!r} (looked for {image}.<ext> and '
                 f'{figures.image_key(image)}[x<scale>].<ext>): its tile is left out of the grid'
                 + (' and the dB labels too' if flag == '--hr' else ''))
    hr = figures.read_bgr(hr_path) if hr_path else None
    lr = figures.read_bgr(lr_path) if lr_path else None
    if not outputs and hr is None:
        _log(f'no pictures for image {image!r}: grid.png skipped')
        return None
    scale = opt.scale
    if not scale and lr is not None:
        ref_h = hr.shape[0] if hr is not None else outputs[0][1].shape[0]
        scale = max(1, round(ref_h / lr.shape[0]))
    scale = scale or 1
    crop = opt.crop
    # the crop is chosen on HR (else on the LR input, upscaled): never on one model's output
    if hr is not None:
        ref = hr
    elif lr is not None:
        ref = cv2_upscale(lr, scale)
        _log('no HR image: the crop is chosen on the LR input')
    else:
        ref = outputs[0][1]
        _log(f'no HR or LR image: the crop is chosen on the output of {outputs[0][0]!r}')
    if crop is None:
        size = max(scale, min(opt.crop_size, ref.shape[0], ref.shape[1]) // scale * scale)
        crop = (*figures.textured_crop(ref, size, align=scale), size)
    elif crop[0] < 0 or crop[1] < 0 or crop[0] + crop[2] > ref.shape[0] or crop[1] + crop[2] > ref.shape[1]:
        raise ValueError(f'Crop (y, x, size) = {crop} does not fit the {ref.shape[1]}x{ref.shape[0]} image {image!r}.')
    tiles = []
    if hr is not None:
        tiles.append(figures.Tile(f'HR {image} (crop box)', hr, whole=True))
    if lr is not None:
        tiles.append(figures.Tile(f'LR (nearest ×{scale})', lr, lr=True))
    for label, img in outputs:
        if hr is not None:
            label += f'\n{figures.y_psnr(img, hr, scale if opt.scale or lr is not None else 0):.2f} dB'
        tiles.append(figures.Tile(label, img))
    if hr is not None:
        tiles.append(figures.Tile('HR', hr))
    y, x, size = crop
    title = f'{image}: crop y={y}, x={x}, {size}×{size} HR px'
    title += f', students seed {seed}' if seed is not None else ''
    title += '; dB = PSNR (Y) of the whole image' if hr is not None else ''
    path = osp.join(opt.out, 'grid.png')
    figures.draw_grid(tiles, crop, scale, path, title=title, cols=opt.grid_cols)
    return path
