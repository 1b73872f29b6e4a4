"""``python -m kdsr_plugins.report``: quality table, PSNR curves and a crop grid from BasicSR runs.

Example (the layout BasicSR writes under the working directory)::

    python -m kdsr_plugins.report --experiments experiments --results results --out report \\
        --hr datasets/demo/val_HR --lr datasets/demo/val_LR_X4 --label kd="Logits KD"

Runs are grouped across seeds by ``--group-by`` (default: ``<prefix>_<method>_s<seed>`` for both the
experiment ``quality_kd_s0`` and its test ``test_quality_kd_s0``); names matching ``--teacher-regex``
(default ``..._teacher_<name>``) are teacher rows.
"""
from __future__ import annotations

import argparse
import sys

from kdsr_plugins.report import DEFAULT_GROUP_BY, DEFAULT_TEACHER_RE, ReportOptions, build_report
from kdsr_plugins.report.efficiency import parse_size


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(',') if t.strip()]


def _crop(text: str) -> tuple[int, int, int]:
    try:
        y, x, size = (int(v) for v in text.split(','))
    except ValueError:
        raise argparse.ArgumentTypeError(f'--crop wants Y,X,SIZE (HR pixels), got {text!r}') from None
    if size <= 0:
        raise argparse.ArgumentTypeError('--crop SIZE must be positive')
    return y, x, size


def _label(text: str) -> tuple[str, str]:
    key, sep, label = text.partition('=')
    if not sep or not key:
        raise argparse.ArgumentTypeError(f'--label wants KEY=TEXT, got {text!r}')
    return key, label


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see ``--help``)."""
    p = argparse.ArgumentParser(prog='python -m kdsr_plugins.report', description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--experiments', help='experiments/ folder (training logs with validation curves)')
    p.add_argument('--results', required=True, help='results/ folder (test logs and visualization/)')
    p.add_argument('--out', required=True, help='output folder (table.md, psnr_curves.png, grid.png, summary.json)')
    p.add_argument('--group-by', default=DEFAULT_GROUP_BY,
                   help='regex with named groups method and seed (default: %(default)s)')
    p.add_argument('--teacher-regex', default=DEFAULT_TEACHER_RE,
                   help="regex of teacher runs, tried first; '' for none (default: %(default)s)")
    p.add_argument('--include', help='only run names matching this regex')
    p.add_argument('--exclude', help='skip run names matching this regex')
    p.add_argument('--label', action='append', type=_label, default=[], metavar='KEY=TEXT',
                   help='display label of a method (repeatable)')
    p.add_argument('--order', type=_csv, default=[], help='method keys in display order, comma-separated')
    p.add_argument('--baselines', type=_csv, default=['scratch', 'kd'],
                   help='method keys of the difference columns (default: scratch,kd)')
    p.add_argument('--metric', default='psnr', help='metric of the curves and differences (default: psnr)')
    p.add_argument('--val-dataset', help='validation dataset of the curves (default: the first found)')
    p.add_argument('--title', help='title of the table section')
    g = p.add_argument_group('grid')
    g.add_argument('--grid-image', help='image stem (default: the first saved SR image)')
    g.add_argument('--grid-dataset', help='visualization sub-folder (test dataset name)')
    g.add_argument('--grid-seed', type=int, help='seed of the students shown (default: the smallest)')
    g.add_argument('--hr', help='HR image, or folder with <image>.<ext>')
    g.add_argument('--lr', help='LR image, or folder with <image>.<ext> (or <image>x<scale>.<ext>)')
    g.add_argument('--scale', type=int, help='SR scale (default: HR/LR size ratio)')
    g.add_argument('--crop', type=_crop, help='Y,X,SIZE of the crop in HR pixels (default: most textured window)')
    g.add_argument('--crop-size', type=int, default=96, help='side of the default crop in HR pixels (default: 96)')
    g.add_argument('--grid-cols', type=int, help='tiles per row (default: up to 7)')
    e = p.add_argument_group('efficiency (params, GFLOPs, peak memory, CPU latency of students and teachers)')
    e.add_argument('--efficiency-opt', nargs='+', default=[], metavar='YML',
                   help='option YAMLs whose network_g and network_t / teachers are measured (efficiency.md)')
    e.add_argument('--efficiency-lr', type=parse_size, metavar='WxH',
                   help='LR size of the counts (default 1280x720 / scale)')
    e.add_argument('--efficiency-latency-lr', type=parse_size, metavar='WxH',
                   help='LR size of the latency runs (default: --efficiency-lr)')
    e.add_argument('--efficiency-repeats', type=int, default=5, help='timed forwards per network; 0: no latency')
    e.add_argument('--efficiency-threads', type=int, default=1, help='CPU threads of the latency runs (default 1)')
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = parse_args(argv)
    opt = ReportOptions(results=args.results, out=args.out, experiments=args.experiments, group_by=args.group_by,
                        teacher_re=args.teacher_regex, include=args.include, exclude=args.exclude,
                        labels=dict(args.label), order=args.order, baselines=args.baselines, metric=args.metric,
                        val_dataset=args.val_dataset, grid_image=args.grid_image, grid_dataset=args.grid_dataset,
                        grid_seed=args.grid_seed, hr=args.hr, lr=args.lr, scale=args.scale, crop=args.crop,
                        crop_size=args.crop_size, grid_cols=args.grid_cols, title=args.title,
                        efficiency_opts=args.efficiency_opt, efficiency_lr=args.efficiency_lr,
                        efficiency_latency_lr=args.efficiency_latency_lr,
                        efficiency_repeats=args.efficiency_repeats, efficiency_threads=args.efficiency_threads)
    try:
        written = build_report(opt)
    except (FileNotFoundError, ValueError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    with open(written['table'], encoding='utf-8') as f:
        print(f.read())
    for kind, path in written.items():
        print(f'[report] {kind}: {path}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
