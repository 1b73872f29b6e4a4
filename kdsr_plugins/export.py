"""``python -m kdsr_plugins.export``: the trained student as ONNX (checked with onnxruntime) or safetensors.

Usage::

    python -m kdsr_plugins.export -opt options/test/KD/test_KD_EDSR_x4c256b32_c64b32.yml --format onnx \\
        --out edsr_x4.onnx
    python -m kdsr_plugins.export -opt <test yml> --format safetensors --out edsr_x4.safetensors

The student is ``network_g`` of the test YAML, loaded strictly from ``path.pretrain_network_g``
under ``path.param_key_g`` (``params_ema``: the EMA weights; BasicSR's default ``params``). The ONNX
graph takes RGB [0, 1] NCHW with dynamic height and width (and batch); networks that need window-multiple
inputs (SwinIR) are exported inside a wrapper that mirror-pads and crops exactly like validation,
with batch 1 (BasicSR's SwinIR makes the batch a constant when traced).
The export is checked against PyTorch on a few images (the first test set's LR images, else random)
and fails when the maximum absolute difference exceeds ``--atol`` (1e-4). See docs/export.md.
"""
from __future__ import annotations

import argparse
import glob
import json
import os.path as osp
import sys
import warnings
from collections.abc import Sequence
from typing import Any

import kdsr_plugins  # noqa: F401  (registries)

import torch
from torch import nn

from kdsr_plugins.core.arch_info import pad_multiple
from kdsr_plugins.core.checkpoints import (
    CheckpointError,
    extract_state_dict,
    load_checkpoint_file,
    load_state_dict_into,
)

ONNX_MISSING = ('ONNX export needs the optional packages onnx and onnxruntime: pip install -c constraints.txt '
                '"kdsr_plugins[onnx]" (or bash install.sh).')
SAFETENSORS_MISSING = 'safetensors output needs the package safetensors: pip install "kdsr_plugins[onnx]".'
RANDOM_SIZES = ((48, 40), (37, 53), (64, 21))  # h, w of the random check images (odd sizes on purpose)
IMAGE_EXTS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff')


class ExportError(RuntimeError):
    """The options, checkpoint or check of an export are wrong."""


class PadCrop(nn.Module):
    """Mirror-pad the input bottom/right to a multiple of ``multiple``, run ``net``, crop to ``scale`` x input.

    The same padding as validation (``docs/export.md``, "Export"), written without Python
    branches on sizes so that the traced graph keeps height and width dynamic.
    """

    def __init__(self, net: nn.Module, multiple: int, scale: int) -> None:
        super().__init__()
        self.net, self.multiple, self.scale = net, multiple, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2], x.shape[-1]
        pad_h = (self.multiple - h % self.multiple) % self.multiple
        pad_w = (self.multiple - w % self.multiple) % self.multiple
        x = torch.cat([x, x.flip(2)], 2)[:, :, :h + pad_h]
        x = torch.cat([x, x.flip(3)], 3)[:, :, :, :w + pad_w]
        return self.net(x)[:, :, :h * self.scale, :w * self.scale]


def load_options(path: str) -> dict:
    """A BasicSR option YAML as a dict."""
    import yaml
    from basicsr.utils.options import ordered_yaml

    if not osp.isfile(path):
        raise ExportError(f'Option file not found: {path!r}')
    with open(path, encoding='utf-8') as f:
        return yaml.load(f, Loader=ordered_yaml()[0])


def load_student(opt: dict) -> tuple[nn.Module, str, str]:
    """``(network_g in eval mode, checkpoint path, param key)``, strictly loaded."""
    from basicsr.archs import build_network

    path_opt = opt.get('path') or {}
    ckpt = path_opt.get('pretrain_network_g')
    if not ckpt:
        raise ExportError('The options have no path.pretrain_network_g: nothing to export.')
    ckpt = osp.expanduser(ckpt)
    param_key = path_opt.get('param_key_g', 'params')
    net = build_network(dict(opt['network_g']))
    state = extract_state_dict(load_checkpoint_file(ckpt, 'student (network_g)'), param_key, ckpt)
    load_state_dict_into(net, state, True, ckpt, 'student (network_g)')
    net.requires_grad_(False)
    return net.eval(), ckpt, param_key


def export_module(opt: dict, net: nn.Module) -> nn.Module:
    """``net``, or ``net`` inside :class:`PadCrop` when its arch needs window-multiple inputs."""
    multiple = pad_multiple(opt['network_g'])
    return PadCrop(net, multiple, int(opt['scale'])).eval() if multiple > 1 else net


def check_images(opt: dict, count: int, max_side: int) -> tuple[list[torch.Tensor], str]:
    """Up to ``count`` LR images of the first test set with a ``dataroot_lq`` folder, else random ones.

    Images are cropped to ``max_side`` (top-left) to keep the check fast; returns the tensors and where they came from.
    """
    import cv2

    for name, ds in (opt.get('datasets') or {}).items():
        root = osp.expanduser(str((ds or {}).get('dataroot_lq', '')))
        names = glob.glob(osp.join(root, '*')) if osp.isdir(root) else []
        files = sorted(f for f in names if f.lower().endswith(IMAGE_EXTS))
        if files:
            images = []
            for f in files[:count]:
                img = cv2.imread(f, cv2.IMREAD_COLOR)[:max_side, :max_side, ::-1]
                images.append(torch.from_numpy(img.astype('float32') / 255.0).permute(2, 0, 1)[None].contiguous())
            return images, f'{len(images)} LR image(s) of datasets.{name} ({root})'
    gen = torch.Generator().manual_seed(0)
    in_ch = int(opt['network_g'].get('num_in_ch', opt['network_g'].get('in_chans', 3)))
    images = [torch.rand(1, in_ch, h, w, generator=gen) for h, w in RANDOM_SIZES[:count]]
    return images, f'{len(images)} random [0, 1] image(s) of sizes {[tuple(i.shape[-2:]) for i in images]}'


def export_onnx(module: nn.Module, out: str, opset: int = 17, sample: torch.Tensor | None = None,
                dynamic_batch: bool = True) -> None:
    """Trace ``module`` to ONNX with dynamic height and width (and batch) (input ``lq``, output ``sr``)."""
    try:
        import onnx
    except ImportError as err:
        raise ImportError(ONNX_MISSING) from err
    sample = sample if sample is not None else torch.rand(1, 3, 32, 32)
    batch = {0: 'batch'} if dynamic_batch else {}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter('ignore')  # tracer warnings about Python ints from shapes (kept dynamic in the graph)
        torch.onnx.export(module, (sample,), out, dynamo=False, opset_version=opset, input_names=['lq'],
                          output_names=['sr'], dynamic_axes={'lq': {**batch, 2: 'height', 3: 'width'},
                                                             'sr': {**batch, 2: 'sr_height', 3: 'sr_width'}})
    onnx.checker.check_model(onnx.load(out))


def check_onnx(module: nn.Module, out: str, images: Sequence[torch.Tensor], batch_check: bool = False) -> float:
    """Maximum absolute difference between onnxruntime (CPU) and PyTorch over ``images``.

    ``batch_check`` adds the first image as a batch of two (for a dynamic batch axis).
    """
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise ImportError(ONNX_MISSING) from err
    session = ort.InferenceSession(out, providers=['CPUExecutionProvider'])
    worst = 0.0
    images = list(images) + ([torch.cat([images[0], images[0].flip(-1)])] if batch_check and images else [])
    with torch.no_grad():
        for x in images:
            ref = module(x).numpy()
            got = session.run(['sr'], {'lq': x.numpy()})[0]
            if got.shape != ref.shape:
                raise ExportError(f'ONNX output {got.shape} differs from PyTorch {ref.shape} for input '
                                  f'{tuple(x.shape)}.')
            worst = max(worst, float(abs(got - ref).max()))
    return worst


def export_safetensors(net: nn.Module, out: str, meta: dict[str, str]) -> None:
    """The weights alone (with the network options as metadata)."""
    try:
        from safetensors.torch import save_file
    except ImportError as err:
        raise ImportError(SAFETENSORS_MISSING) from err
    save_file({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, out, metadata=meta)


def run_export(opt_path: str, fmt: str, out: str, opset: int = 17, images: int = 3, max_side: int = 96,
               atol: float = 1e-4) -> dict[str, Any]:
    """Export the student of ``opt_path``; returns a summary (``max_abs_diff`` for ONNX).

    Raises:
        ExportError: Bad options, or an ONNX check above ``atol``.
        ImportError: The optional packages are missing (message says what to install).
    """
    if opset < 17:
        raise ExportError(f'--opset must be >= 17, got {opset}.')
    opt = load_options(opt_path)
    net, ckpt, param_key = load_student(opt)
    info: dict[str, Any] = {'format': fmt, 'out': out, 'checkpoint': ckpt, 'param_key': param_key,
                            'network': opt['network_g']['type'], 'scale': int(opt['scale'])}
    if fmt == 'safetensors':
        export_safetensors(net, out, {'network_g': json.dumps(dict(opt['network_g'])), 'scale': str(opt['scale']),
                                      'param_key': str(param_key), 'source': ckpt})
        return info
    if fmt != 'onnx':
        raise ExportError(f'--format must be onnx or safetensors, got {fmt!r}.')
    module = export_module(opt, net)
    # BasicSR's SwinIR turns the batch size into a constant when traced (int() in window_reverse): batch 1 there
    padded = isinstance(module, PadCrop)
    export_onnx(module, out, opset, dynamic_batch=not padded)
    tensors, source = check_images(opt, images, max_side)
    diff = check_onnx(module, out, tensors, batch_check=not padded)
    info.update(opset=opset, padded=padded, dynamic_batch=not padded, check=source, max_abs_diff=diff, atol=atol)
    if diff > atol:
        raise ExportError(f'ONNX and PyTorch outputs differ by up to {diff:.3g} (> --atol {atol:g}) on {source}.')
    return info


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    p = argparse.ArgumentParser(prog='python -m kdsr_plugins.export', description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('-opt', required=True, help='test option YAML (network_g, path.pretrain_network_g, param_key_g)')
    p.add_argument('--format', choices=['onnx', 'safetensors'], default='onnx')
    p.add_argument('--out', required=True, help='output file')
    p.add_argument('--opset', type=int, default=17, help='ONNX opset (>= 17, default 17)')
    p.add_argument('--images', type=int, default=3, help='check images (default 3)')
    p.add_argument('--max-side', type=int, default=96, help='crop check images to this side (default 96)')
    p.add_argument('--atol', type=float, default=1e-4, help='largest accepted |ONNX - PyTorch| (default 1e-4)')
    args = p.parse_args(argv)
    try:
        info = run_export(args.opt, args.format, args.out, args.opset, args.images, args.max_side, args.atol)
    except (ExportError, CheckpointError, ImportError, OSError, ValueError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    if args.format == 'onnx':
        print(f'[export] {info["network"]} x{info["scale"]} ({info["param_key"]} of {info["checkpoint"]}) -> '
              f'{info["out"]} (opset {info["opset"]}, dynamic {"batch/" if info["dynamic_batch"] else ""}height/width'
              f'{", pad/crop wrapper" if info["padded"] else ""})')
        print(f'[export] onnxruntime vs PyTorch on {info["check"]}: max |diff| = {info["max_abs_diff"]:.3g} '
              f'(atol {info["atol"]:g})')
    else:
        print(f'[export] {info["network"]} weights ({info["param_key"]} of {info["checkpoint"]}) -> {info["out"]}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
