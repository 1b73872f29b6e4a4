"""``python -m kdsr_plugins.data_prep``: demo set, DIV2K LMDBs, benchmark LR, real-photo set; check LMDBs.

User errors (missing input, existing output, corrupt LMDB) are printed as one ``error:`` line
and exit with code 2.
"""
from __future__ import annotations

import argparse
import os
import sys

import yaml

from kdsr_plugins.core.lmdb_io import check_lmdb
from kdsr_plugins.data_prep.benchmark import BENCHMARK_SETS, prepare_benchmark
from kdsr_plugins.data_prep.demo import build_demo_dataset
from kdsr_plugins.data_prep.div2k import prepare_div2k
from kdsr_plugins.data_prep.lmdb_tools import check_paired_lmdb
from kdsr_plugins.data_prep.photos import build_photo_set

USER_ERRORS = (FileNotFoundError, FileExistsError, NotADirectoryError, PermissionError, ValueError, ImportError)


def _cmd_demo(args: argparse.Namespace) -> None:
    paths = build_demo_dataset(args.out, args.scales, args.overwrite, args.max_train_images)
    print(f'demo dataset ready in {paths["root"]}: {paths["num_train"]} train / {paths["num_val"]} val images, '
          f'scales {paths["scales"]}')
    print(f'  train GT LMDB: {paths["train_gt_lmdb"]}')
    for s in paths['scales']:
        print(f'  train LQ x{s} LMDB: {paths["train_lq_lmdb"][s]}')
    print(f'  val GT LMDB: {paths["val_gt_lmdb"]}')
    for s in paths['scales']:
        print(f'  val LQ x{s} LMDB: {paths["val_lq_lmdb"][s]}')


def _cmd_div2k(args: argparse.Namespace) -> None:
    out = prepare_div2k(args.input, args.output or args.input, args.scales, crop_size=args.crop_size,
                        step=args.step, thresh_size=args.thresh_size, n_thread=args.n_thread,
                        overwrite=args.overwrite, make_lmdb=not args.no_lmdb, make_lr=args.make_lr)
    print(f'{out["num_subimages"]} sub-images from {out["num_images"]} DIV2K images'
          + (' (bicubic LR generated from HR)' if out['lr_generated'] else ''))
    print(f'  HR: {out["hr_sub"]}' + ('' if args.no_lmdb else f'  ->  {out["hr_lmdb"]}'))
    for s in sorted(out['lr_sub']):
        print(f'  LR x{s}: {out["lr_sub"][s]}' + ('' if args.no_lmdb else f'  ->  {out["lr_lmdb"][s]}'))


def _cmd_benchmark(args: argparse.Namespace) -> None:
    opts = prepare_benchmark(args.root, args.sets, args.scales, overwrite=args.overwrite)
    for scale in args.scales:
        block = {f'test_{i}': opts[name][scale] for i, name in enumerate(args.sets, 1)}
        print(f'# x{scale}: datasets block for a test YAML (use one entry as datasets.val in training)')
        print(yaml.safe_dump({'datasets': block}, sort_keys=False).rstrip())


def _cmd_photos(args: argparse.Namespace) -> None:
    out = build_photo_set(args.manifest, args.out, root=args.root, overwrite=args.overwrite, n_thread=args.n_thread)
    c = out['counts']
    print(f'photo set ready in {args.out}: {c["train"]} train photos ({out["num_train_subimages"]} sub-images), '
          f'{c["val"]} val, {c["test"]} test')
    print(f'  train GT LMDB: {out["train_gt_lmdb"]}')
    for s, p in out['train_lq_lmdb'].items():
        print(f'  train LQ x{s} LMDB: {p}')


def _cmd_check_lmdb(args: argparse.Namespace) -> None:
    decode = not args.no_decode
    if args.lq is not None:
        if args.scale is None:
            raise ValueError('--lq needs --scale')
        keys = check_paired_lmdb(args.path, args.lq, args.scale, decode=decode,
                                 allow_gt_remainder=args.allow_gt_remainder)
        print(f'OK: {len(keys)} identical keys; GT {args.path} = {args.scale} x LQ {args.lq}')
        return
    shapes = check_lmdb(args.path, decode=decode)
    sizes = sorted(set(shapes.values()))
    shown = ', '.join(str(s) for s in sizes[:3]) + (' ...' if len(sizes) > 3 else '')
    print(f'OK: {args.path}: {len(shapes)} images, shapes {shown}')


def build_parser() -> argparse.ArgumentParser:
    """Argument parser with the ``demo``, ``div2k``, ``benchmark``, ``photos`` and ``check-lmdb`` sub-commands."""
    parser = argparse.ArgumentParser(prog='python -m kdsr_plugins.data_prep', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest='command', required=True)

    p = sub.add_parser('demo', help='offline demo dataset from scikit-image images')
    p.add_argument('--out', default='datasets/demo', help='output folder (default: datasets/demo)')
    p.add_argument('--scales', type=int, nargs='+', default=[2, 3, 4])
    p.add_argument('--max-train-images', type=int, default=None, help='keep only N train sub-images')
    p.add_argument('--overwrite', action='store_true', help='rebuild even if a complete dataset exists')
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser('div2k', help='DIV2K sub-images and LMDBs (BasicSR recipe)')
    p.add_argument('--input', required=True,
                   help='folder with DIV2K_train_HR and DIV2K_train_LR_bicubic (LR made from HR if absent)')
    p.add_argument('--output', default=None, help='output folder (default: the input folder)')
    p.add_argument('--scales', type=int, nargs='+', default=[2, 3, 4])
    p.add_argument('--crop-size', type=int, default=480)
    p.add_argument('--step', type=int, default=240)
    p.add_argument('--thresh-size', type=int, default=0)
    p.add_argument('--n-thread', type=int, default=min(2, os.cpu_count() or 1), help='worker processes')
    p.add_argument('--no-lmdb', action='store_true', help='only extract sub-images')
    p.add_argument('--make-lr', action='store_true', default=None,
                   help='generate bicubic LR from HR even if DIV2K_train_LR_bicubic exists '
                        '(default: only when it is absent)')
    p.add_argument('--overwrite', action='store_true', help='replace existing sub-image folders and LMDBs')
    p.set_defaults(func=_cmd_div2k)

    p = sub.add_parser('benchmark', help='validate benchmark sets, generate missing bicubic LR')
    p.add_argument('--root', required=True, help='folder holding <Set>/HR')
    p.add_argument('--sets', nargs='+', default=list(BENCHMARK_SETS))
    p.add_argument('--scales', type=int, nargs='+', default=[4])
    p.add_argument('--overwrite', action='store_true', help='regenerate existing LR folders')
    p.set_defaults(func=_cmd_benchmark)

    p = sub.add_parser('photos', help='real-photo train/val/test set from a checksummed manifest')
    p.add_argument('--manifest', default='scripts/photo_manifest.json')
    p.add_argument('--out', default='datasets/photos', help='output folder (default: datasets/photos)')
    p.add_argument('--root', default='/', help='where the Debian package files are (default: /, installed)')
    p.add_argument('--n-thread', type=int, default=1, help='worker processes for the sub-images')
    p.add_argument('--overwrite', action='store_true', help='rebuild an existing set')
    p.set_defaults(func=_cmd_photos)

    p = sub.add_parser('check-lmdb', help='validate an LMDB, or a GT/LQ pair with --lq and --scale')
    p.add_argument('path', help='.lmdb folder (the GT one when --lq is given)')
    p.add_argument('--lq', default=None, help='LQ .lmdb folder to check against PATH')
    p.add_argument('--scale', type=int, default=None)
    p.add_argument('--no-decode', action='store_true', help='only check that keys exist')
    p.add_argument('--allow-gt-remainder', action='store_true',
                   help='accept GT up to scale-1 pixels larger than scale x LQ (non-mod-cropped GT)')
    p.set_defaults(func=_cmd_check_lmdb)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (2 for user errors)."""
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except USER_ERRORS as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print('interrupted', file=sys.stderr)
        return 130
    return 0


if __name__ == '__main__':
    sys.exit(main())
