"""Ship a trained real-photo network: small weights file plus a card with its measured test PSNR.

Given a BasicSR experiment folder (``experiments/<name>``) and its training option file, this

1. loads the chosen checkpoint (``models/net_g_latest.pth`` by default, ``--iter N`` for
   ``net_g_N.pth``) and writes only its ``params`` tensors to ``<out>/<card name>.pth``;
2. measures PSNR and SSIM (Y channel, ``crop_border`` = scale) on the test split of the photo set
   with BasicSR's own code path: ``PairedImageDataset`` (val phase: GT cropped to ``LQ x scale``),
   one full-image forward pass, ``tensor2img`` and ``basicsr.metrics.calculate_psnr`` /
   ``calculate_ssim`` — what ``SRModel.nondist_validation`` and ``python -m kdsr_plugins.test``
   compute;
3. writes ``<out>/<card name>.yml``: the exact ``network_g`` options (``res_scale`` included),
   the parameter count, the training recipe taken from the option file, the iterations trained,
   the checksum of the weights and of the data manifest, and the test metrics per image and on
   average. Nothing in the card is typed in by hand.

    python bench/photo/teacher_card.py --exp "$RUNS/experiments/photo_teacher_edsr_f48b16_x4" \
        --opt bench/photo/teacher_edsr.yml --name teacher_edsr_f48b16_x4 \
        --data "$RUNS/datasets/photos" --out bench/teachers

Use ``--no-weights`` for a card alone (e.g. the scratch-student probe), ``--threads`` to pick
the torch thread count (default 1).
"""
from __future__ import annotations

import argparse
import datetime
import glob
import os
import os.path as osp
import re
import sys

import kdsr_plugins  # noqa: F401  (torchvision shims, then basicsr; registers the plugin)

import basicsr
import torch
import yaml

from kdsr_plugins.data_prep.photos import sha256_file

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
from photo_bench import scoring  # noqa: E402


def checkpoint_path(exp: str, iteration: int | None) -> tuple[str, bool]:
    """``(path, finished)`` of the checkpoint to ship: ``net_g_latest.pth`` (written at the end of
    training) or ``net_g_<iteration>.pth``."""
    name = 'net_g_latest.pth' if iteration is None else f'net_g_{iteration}.pth'
    path = osp.join(exp, 'models', name)
    if not osp.isfile(path):
        have = sorted(osp.basename(p) for p in glob.glob(osp.join(exp, 'models', 'net_g_*.pth')))
        raise SystemExit(f'no checkpoint {path}; available: {", ".join(have) or "none"}')
    return path, iteration is None


def load_params(path: str) -> dict[str, torch.Tensor]:
    ckpt = torch.load(path, map_location='cpu', weights_only=True)
    params = ckpt.get('params', ckpt) if isinstance(ckpt, dict) else ckpt
    return {k[7:] if k.startswith('module.') else k: v.detach().clone().float().contiguous()
            for k, v in params.items()}


def evaluate(network_opt: dict, params: dict[str, torch.Tensor], data_root: str, scale: int,
             split: str = 'test') -> dict:
    """Y-channel PSNR/SSIM (crop_border = scale) of a network on a split, per image and mean.

    The benchmark's own scoring (``bench/photo_bench/scoring.py``), so card and benchmark agree.
    """
    res = scoring.score(scoring.build_net(network_opt, params), scoring.image_pairs(osp.join(data_root, split), scale),
                        scale)
    for name, m in res['per_image'].items():
        print(f'  {name}: PSNR {m["psnr"]:.3f} SSIM {m["ssim"]:.4f}', flush=True)
    return {'dataset': f'photos/{split}', 'num_images': len(res['per_image']), 'crop_border': scale,
            'test_y_channel': True, 'psnr': res['psnr'], 'ssim': res['ssim'], 'per_image': res['per_image']}


def best_val_from_log(exp: str) -> dict | None:
    """Best validation PSNR BasicSR logged (``Best: X @ N iter``), if any."""
    best = None
    for log in sorted(glob.glob(osp.join(exp, 'train_*.log'))):
        with open(log, encoding='utf-8', errors='replace') as f:
            for m in re.finditer(r'# psnr: ([\d.]+)\tBest: ([\d.]+) @ (\d+) iter', f.read()):
                best = {'psnr': float(m.group(2)), 'iter': int(m.group(3))}
    return best


def make_card(args: argparse.Namespace) -> dict:
    with open(args.opt, encoding='utf-8') as f:
        opt = yaml.safe_load(f)
    scale = int(opt['scale'])
    ckpt, finished = checkpoint_path(args.exp, args.iter)
    iters = int(opt['train']['total_iter']) if finished else args.iter
    params = load_params(ckpt)
    print(f'{args.name}: {ckpt} ({iters} iterations); testing on {args.data}/test ...', flush=True)
    metrics = evaluate(opt['network_g'], params, args.data, scale)
    train = opt['train']
    ds = opt['datasets']['train']
    card = {
        'name': args.name,
        'experiment': opt['name'],
        'scale': scale,
        'network_g': opt['network_g'],
        'num_params': int(sum(v.numel() for v in params.values())),
        'param_key': 'params',
        'iterations': iters,
        'finished': finished,
        'recipe': {
            'option_file': osp.relpath(osp.abspath(args.opt), osp.dirname(osp.dirname(osp.dirname(
                osp.abspath(__file__))))),
            'model_type': opt['model_type'], 'manual_seed': opt.get('manual_seed'),
            'train_data': {k: ds[k] for k in ('dataroot_gt', 'dataroot_lq', 'gt_size', 'batch_size_per_gpu',
                                              'use_hflip', 'use_rot') if k in ds},
            'lr_patch': ds['gt_size'] // scale,
            'optim_g': train['optim_g'], 'scheduler': train.get('scheduler'), 'total_iter': train['total_iter'],
            'warmup_iter': train.get('warmup_iter'), 'ema_decay': train.get('ema_decay', 0),
            'pixel_opt': train.get('pixel_opt'),
            **{k: train[k] for k in ('amp', 'channels_last') if k in train},
            'validation': 'photos/val (8 images), used for choosing settings',
        },
        'best_val': best_val_from_log(args.exp),
        'test': metrics,
        'data_manifest_sha256': sha256_file(args.manifest) if osp.isfile(args.manifest) else None,
        'software': {'torch': str(torch.__version__), 'basicsr': str(basicsr.__version__)},
        'measured': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ'),
    }
    os.makedirs(args.out, exist_ok=True)
    if not args.no_weights:
        wpath = osp.join(args.out, f'{args.name}.pth')
        torch.save({'params': params}, wpath)
        card['weights'] = {'file': osp.basename(wpath), 'sha256': sha256_file(wpath), 'bytes': osp.getsize(wpath)}
    cpath = osp.join(args.out, f'{args.name}.yml')
    with open(cpath, 'w', encoding='utf-8') as f:
        f.write('# Card written by bench/photo/teacher_card.py; test metrics measured, not typed in.\n')
        yaml.safe_dump(card, f, sort_keys=False, default_flow_style=None, width=110)
    print(f'{args.name}: test PSNR {metrics["psnr"]:.3f} dB, SSIM {metrics["ssim"]:.4f} -> {cpath}')
    return card


def main(argv: list[str] | None = None) -> int:
    root = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--exp', required=True, help='experiment folder (experiments/<name>)')
    ap.add_argument('--opt', required=True, help='training option file of the experiment')
    ap.add_argument('--name', required=True, help='card / weights file name (without extension)')
    ap.add_argument('--iter', type=int, default=None, help='ship net_g_<iter>.pth instead of net_g_latest.pth')
    ap.add_argument('--data', default='datasets/photos', help='photo set root (with test/HR, test/LR_bicubic)')
    ap.add_argument('--manifest', default=osp.join(root, 'scripts', 'photo_manifest.json'))
    ap.add_argument('--out', default=osp.join(root, 'bench', 'teachers'))
    ap.add_argument('--no-weights', action='store_true', help='write the card only')
    ap.add_argument('--threads', type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    make_card(args)
    return 0


if __name__ == '__main__':
    sys.exit(main())
