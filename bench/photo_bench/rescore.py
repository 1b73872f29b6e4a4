"""``python bench/quality.py --score-only``: re-score the benchmark's kept students on a Set5-style folder."""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp

import torch

from photo_bench import scoring
from photo_bench.config import METHODS, REPO
from photo_bench.stats import mean_std

DEFAULT_STUDENTS = osp.join(REPO, 'bench', 'results', 'photo_x4', 'students')


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog='python bench/quality.py --score-only', description=__doc__)
    p.add_argument('--test-root', required=True, help='Set5-style folder: HR/ and LR_bicubic/X<scale>/')
    p.add_argument('--scale', type=int, required=True)
    p.add_argument('--out', required=True, help='output folder (table.md, summary.json)')
    p.add_argument('--students', default=DEFAULT_STUDENTS, help='folder of <method>_seed<k>.pth + students.json')
    p.add_argument('--param-key', default='params', choices=('params', 'params_ema'),
                   help='weights scored (default: raw params)')
    return p.parse_args(argv)


def rescore(students: str, test_root: str, scale: int, param_key: str = 'params') -> list[dict]:
    """``[{'method', 'seed', 'psnr_y', 'ssim_y'}]`` of every student of the card, in method then seed order."""
    card = scoring.read_students_card(students)
    if int(card['scale']) != scale:
        raise SystemExit(f'the students are x{card["scale"]}, --scale is {scale}')
    pairs = scoring.image_pairs(test_root, scale)
    order = {m: i for i, m in enumerate(METHODS)}
    entries = sorted(card['students'].items(), key=lambda kv: (order.get(kv[1]['method'], 99), kv[1]['seed']))
    results = []
    for file, info in entries:
        if info['method'] not in order:
            raise SystemExit(f'{file}: unknown method label {info["method"]!r}')
        params = scoring.load_params(osp.join(students, file), param_key)
        if params is None:
            raise SystemExit(f'{file} has no {param_key!r}')
        res = scoring.score(scoring.build_net(card['network_g'], params), pairs, scale)
        results.append({'method': info['method'], 'seed': int(info['seed']), 'psnr_y': res['psnr'],
                        'ssim_y': res['ssim']})
        print(f'[score] {info["method"]} seed {info["seed"]}: PSNR {res["psnr"]:.3f} SSIM {res["ssim"]:.4f}',
              flush=True)
    return results


def markdown(results: list[dict], test_root: str, param_key: str) -> str:
    lines = [f'### Re-scored students on {test_root} ({param_key}, Y channel, crop = scale)', '',
             '| Method | Seeds | PSNR (Y) | SSIM (Y) | Per seed PSNR |', '|---|---:|---:|---:|---|']
    for m in dict.fromkeys(r['method'] for r in results):
        rows = [r for r in results if r['method'] == m]
        (pm, ps), (sm, ss) = mean_std([r['psnr_y'] for r in rows]), mean_std([r['ssim_y'] for r in rows])
        per = ', '.join(f'{r["seed"]}: {r["psnr_y"]:.3f}' for r in rows)
        lines.append(f'| {m} | {len(rows)} | {pm:.3f}' + (f' ± {ps:.3f}' if ps is not None else '')
                     + f' | {sm:.4f}' + (f' ± {ss:.4f}' if ss is not None else '') + f' | {per} |')
    return '\n'.join(lines) + '\n'


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    results = rescore(osp.abspath(args.students), args.test_root, args.scale, args.param_key)
    os.makedirs(args.out, exist_ok=True)
    with open(osp.join(args.out, 'summary.json'), 'w', encoding='utf-8') as f:
        json.dump({'results': results}, f, indent=1)
    with open(osp.join(args.out, 'table.md'), 'w', encoding='utf-8') as f:
        f.write(markdown(results, args.test_root, args.param_key))
    print(f'[score] {osp.join(args.out, "table.md")}, {osp.join(args.out, "summary.json")}')
    return 0
