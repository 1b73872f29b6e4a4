"""Seconds per training iteration of candidate x4 teachers and students on one CPU thread.

One iteration = forward, L1 loss, backward and an Adam step on a random batch (the same work as
BasicSR's ``SRModel.optimize_parameters``, without data loading), after two warm-up iterations.

    OMP_NUM_THREADS=1 python bench/photo/time_candidates.py [--iters 5] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import kdsr_plugins  # noqa: F401  (torchvision shims, then basicsr)

import torch
from basicsr.archs.edsr_arch import EDSR
from basicsr.archs.rcan_arch import RCAN

RGB_MEAN = [0.4488, 0.4371, 0.4040]


def edsr(f: int, b: int) -> dict:
    return dict(type='EDSR', num_in_ch=3, num_out_ch=3, num_feat=f, num_block=b, upscale=4, res_scale=1.0,
                img_range=255.0, rgb_mean=RGB_MEAN)


def rcan(f: int, g: int, b: int, sq: int = 8) -> dict:
    return dict(type='RCAN', num_in_ch=3, num_out_ch=3, num_feat=f, num_group=g, num_block=b, squeeze_factor=sq,
                upscale=4, res_scale=1, img_range=255.0, rgb_mean=RGB_MEAN)


def build(opt: dict) -> torch.nn.Module:
    opt = dict(opt)
    return {'EDSR': EDSR, 'RCAN': RCAN}[opt.pop('type')](**opt)


def n_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def time_iter(net: torch.nn.Module, batch: int, patch: int, iters: int) -> float:
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    x = torch.rand(batch, 3, patch, patch)
    y = torch.rand(batch, 3, patch * 4, patch * 4)
    times = []
    for i in range(iters + 2):
        t = time.perf_counter()
        opt.zero_grad()
        loss = torch.nn.functional.l1_loss(net(x), y)
        loss.backward()
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2]


CANDIDATES = {
    'edsr_f64b16': edsr(64, 16), 'edsr_f64b10': edsr(64, 10), 'edsr_f48b16': edsr(48, 16),
    'rcan_f64g5b3': rcan(64, 5, 3), 'rcan_f48g4b4': rcan(48, 4, 4), 'rcan_f48g5b5': rcan(48, 5, 5),
    'edsr_f16b4': edsr(16, 4), 'edsr_f16b2': edsr(16, 2), 'edsr_f12b2': edsr(12, 2), 'edsr_f8b2': edsr(8, 2),
}
SETTINGS = [(16, 32), (8, 48), (8, 32)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument('--iters', type=int, default=5)
    ap.add_argument('--only', nargs='*', default=None)
    ap.add_argument('--json', default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    rows = []
    for name, opt in CANDIDATES.items():
        if args.only and name not in args.only:
            continue
        net = build(opt)
        for batch, patch in SETTINGS:
            s = time_iter(net, batch, patch, args.iters)
            rows.append({'name': name, 'params': n_params(net), 'batch': batch, 'lr_patch': patch, 's_per_iter': s,
                         'network': opt})
            print(f'{name:14s} {n_params(net):>9,d} params  batch {batch:2d} x LR {patch}: {s:.3f} s/iter', flush=True)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'torch': torch.__version__, 'threads': 1, 'rows': rows}, f, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
