"""PSNR after a short training on the demo data in float32 vs bf16 (``train.amp``, docs/amp.md).

For each method (``kdsr_plugins.demo.runs.RUNS``: the demo student, teachers and option recipes;
KD models only, SRModel has no ``train.amp``) and seed, trains ``ampq_<method>_<amp>_s<seed>``
through ``python -m kdsr_plugins.train`` twice, with ``train.amp: off`` and ``train.amp: bf16``
(same iterations, seed and data order), tests both with ``python -m kdsr_plugins.test`` (float32
inference on the demo validation images, Y-channel PSNR/SSIM) and writes the table and the PSNR
difference (target of issue 16: within 0.02 dB) to ``--out`` (markdown + json).

Usage:
    python bench/amp_quality.py [--iters 100] [--seeds 0] [--methods kd] [--channels-last]
                                [--out bench/results/amp_quality.md] [--work /tmp/amp_quality]
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import sys
import time

import kdsr_plugins  # noqa: F401  (top level: registers the plugin)

import torch

from kdsr_plugins.data_prep.demo import build_demo_dataset
from kdsr_plugins.demo import config
from kdsr_plugins.demo.pipeline import ensure_teachers, train_and_test
from kdsr_plugins.demo.runs import runs_by_key

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from photo_bench.stats import mean_std, paired_delta  # noqa: E402

PREFIX = 'ampq'
TARGET_DB = 0.02


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--iters', type=int, default=100, help='training iterations of every run (default: 100)')
    p.add_argument('--seeds', type=int, nargs='+', default=[0])
    p.add_argument('--methods', default='kd', help='comma-separated demo methods (KD models; default: kd)')
    p.add_argument('--channels-last', action='store_true', help='train.channels_last: true in both runs')
    p.add_argument('--data', default='datasets/demo', help='demo dataset folder (built if missing)')
    p.add_argument('--work', default=osp.join('/tmp', 'amp_quality'), help='working folder')
    p.add_argument('--out', default=osp.join(osp.dirname(osp.abspath(__file__)), 'results', 'amp_quality.md'))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.data, args.work = osp.abspath(args.data), osp.abspath(args.work)
    known = runs_by_key()
    keys = [k.strip() for k in args.methods.split(',') if k.strip()]
    bad = [k for k in keys if k not in known or known[k].model_type == 'SRModel' or known[k].needs]
    if bad:
        print(f'Not a single-stage KD demo method: {bad}', file=sys.stderr)
        return 2
    for sub in ('options', 'logs'):
        os.makedirs(osp.join(args.work, sub), exist_ok=True)
    build_demo_dataset(args.data, scales=(config.SCALE,))
    ckpts = ensure_teachers()
    rows = []
    for seed in args.seeds:
        ns = argparse.Namespace(out=args.work, data=args.data, seed=seed)
        for key in keys:
            run = known[key]
            row = {'method': key, 'seed': seed}
            for amp in ('off', 'bf16'):
                train_extra, top_extra = run.make_options(ckpts, {})
                train_extra = {**train_extra, 'amp': amp, 'channels_last': args.channels_last}
                result = train_and_test(f'{key}_{amp}', run.label, run.model_type, run.student or config.STUDENT,
                                        train_extra, top_extra, ns, args.iters, run.test_model_type, prefix=PREFIX)
                row[amp] = {'psnr': result['psnr'], 'ssim': result['ssim'], 'train_s': result['train_s']}
                print(f'[amp_quality] {key} seed {seed} amp {amp}: PSNR {result["psnr"]:.3f} '
                      f'({result["train_s"]:.0f} s)', flush=True)
            row['delta_db'] = row['bf16']['psnr'] - row['off']['psnr']
            rows.append(row)
    write(args, rows)
    return 0


def seed_summary(rows: list[dict]) -> list[str]:
    """Per method over seeds: mean bf16 - float32 difference (paired t-test) against the float32 seed spread."""
    methods = list(dict.fromkeys(r['method'] for r in rows))
    if all(sum(r['method'] == m for r in rows) < 2 for m in methods):
        return []
    lines = ['', '| Method | seeds | mean bf16 - float32 (dB) | paired p | abs(mean) <= '
             f'{TARGET_DB} dB | float32 seed spread (std, dB) |', '|---|---:|---:|---:|---|---:|']
    for m in methods:
        mine = [r for r in rows if r['method'] == m]
        d = paired_delta({r['seed']: r['bf16']['psnr'] for r in mine}, {r['seed']: r['off']['psnr'] for r in mine})
        spread = mean_std([r['off']['psnr'] for r in mine])[1]
        p = '-' if d['p'] is None else f'{d["p"]:.3g}'
        std = '' if d['std'] is None else f' ± {d["std"]:.3f}'
        lines.append(f'| {m} | {d["n"]} | {d["mean"]:+.3f}{std} | {p} | '
                     f'{"yes" if abs(d["mean"]) <= TARGET_DB else "no"} | '
                     f'{"-" if spread is None else f"{spread:.3f}"} |')
    return lines


def write(args: argparse.Namespace, rows: list[dict]) -> None:
    command = 'python bench/amp_quality.py ' + ' '.join(sys.argv[1:])
    lines = [f'# float32 vs bf16 training: PSNR on the demo data (x{config.SCALE})', '',
             f'Command: `{command}`; date {time.strftime("%Y-%m-%d")}; CPU, OMP_NUM_THREADS '
             f'{os.environ.get("OMP_NUM_THREADS", "unset")}, torch {torch.__version__}, CPU capability '
             f'{torch.backends.cpu.get_cpu_capability()}.', '',
             f'Demo student EDSR {config.STUDENT["num_feat"]}c{config.STUDENT["num_block"]}b, teacher EDSR '
             f'{config.TEACHERS["edsr"][0]["num_feat"]}c{config.TEACHERS["edsr"][0]["num_block"]}b, '
             f'{args.iters} iterations, batch 8, LR patch 24; channels-last '
             f'{"on" if args.channels_last else "off"}; Y-channel PSNR (dB) / SSIM of float32 inference on the demo '
             'validation images.', '',
             '| Method | seed | PSNR float32 | PSNR bf16 | bf16 - float32 (dB) | SSIM float32 | SSIM bf16 | '
             'train s float32 | train s bf16 |', '|---|---:|---:|---:|---:|---:|---:|---:|---:|']
    for r in rows:
        lines.append(f'| {r["method"]} | {r["seed"]} | {r["off"]["psnr"]:.3f} | {r["bf16"]["psnr"]:.3f} | '
                     f'{r["delta_db"]:+.3f} | {r["off"]["ssim"]:.4f} | {r["bf16"]["ssim"]:.4f} | '
                     f'{r["off"]["train_s"]:.0f} | {r["bf16"]["train_s"]:.0f} |')
    worst = max((abs(r['delta_db']) for r in rows), default=float('nan'))
    lines += ['', f'Target (issue 16): |bf16 - float32| <= {TARGET_DB} dB per run: '
              f'{"met" if worst <= TARGET_DB else "NOT met"} (largest {worst:.3f} dB).']
    lines += seed_summary(rows)
    text = '\n'.join(lines) + '\n'
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    with open(args.out, 'w') as f:
        f.write(text)
    with open(osp.splitext(args.out)[0] + '.json', 'w') as f:
        json.dump(rows, f, indent=1)
    print(text)


if __name__ == '__main__':
    sys.exit(main())
