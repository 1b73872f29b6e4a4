"""Convert an official RCAN checkpoint to BasicSR layout (``{'params': state_dict}``), verified by a strict load.

Usage:
    python scripts/convert_rcan_checkpoint.py RCAN_BIX4.pt RCAN_BIX4_basicsr.pth --scale 4
        [--num-group 10 --num-block 20 --num-feat 64 --squeeze-factor 16] [--overwrite]
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys

import kdsr_plugins  # noqa: F401  (top level, as every entry module)

import torch
from basicsr.archs import build_network

from kdsr_plugins.core.checkpoints import load_checkpoint_file
from kdsr_plugins.core.rcan_convert import convert_rcan_state_dict


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('src')
    parser.add_argument('dst')
    parser.add_argument('--scale', type=int, required=True)
    parser.add_argument('--num-feat', type=int, default=64)
    parser.add_argument('--num-group', type=int, default=10)
    parser.add_argument('--num-block', type=int, default=20)
    parser.add_argument('--squeeze-factor', type=int, default=16)
    parser.add_argument('--overwrite', action='store_true')
    args = parser.parse_args(argv)
    if osp.exists(args.dst) and not args.overwrite:
        print(f'error: {args.dst} exists; pass --overwrite to replace it', file=sys.stderr)
        return 2
    net = build_network(dict(type='RCAN', num_in_ch=3, num_out_ch=3, num_feat=args.num_feat, num_group=args.num_group,
                             num_block=args.num_block, squeeze_factor=args.squeeze_factor, upscale=args.scale,
                             res_scale=1, img_range=255.0, rgb_mean=[0.4488, 0.4371, 0.4040]))
    official = load_checkpoint_file(args.src, 'official RCAN checkpoint')
    try:
        state = convert_rcan_state_dict(official, net)
    except KeyError as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    net.load_state_dict(state, strict=True)
    torch.save({'params': state}, args.dst)
    print(f'wrote {args.dst} ({sum(v.numel() for v in state.values()):,d} parameters)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
