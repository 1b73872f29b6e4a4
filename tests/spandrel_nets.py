"""Tiny spandrel-detectable SR networks with random weights, saved the way their authors distribute them."""
from __future__ import annotations

import os.path as osp

import kdsr_plugins  # noqa: F401  (torchvision shim before spandrel)

import torch
from torch import nn

#: architecture -> how its authors ship checkpoints (HAT/SwinIR: BasicSR dicts; ESRGAN: bare; SPAN: safetensors)
LAYOUTS = {'HAT': 'params_ema', 'SwinIR': 'params', 'ESRGAN': 'bare', 'SPAN': 'safetensors'}


def tiny_net(arch: str, scale: int = 4) -> nn.Module:
    """A seeded tiny instance of ``arch`` (HAT, SwinIR, ESRGAN as BasicSR's RRDBNet, SPAN)."""
    torch.manual_seed({'HAT': 1, 'SwinIR': 2, 'ESRGAN': 3, 'SPAN': 4}[arch] * 10 + scale)
    if arch == 'HAT':
        from spandrel.architectures.HAT import HAT
        return HAT(img_size=16, embed_dim=12, depths=(1,), num_heads=(2,), window_size=4, compress_ratio=3,
                   squeeze_factor=4, upscale=scale, num_feat=8, mlp_ratio=1.0)
    if arch == 'SwinIR':
        from spandrel.architectures.SwinIR import SwinIR
        return SwinIR(img_size=16, embed_dim=12, depths=[1], num_heads=[2], window_size=4, upscale=scale,
                      upsampler='pixelshuffle', mlp_ratio=1.0)
    if arch == 'ESRGAN':  # the authors' new-arch RRDBNet keys (spandrel converts them); grow width 32 is fixed
        from basicsr.archs.rrdbnet_arch import RRDBNet
        return RRDBNet(num_in_ch=3, num_out_ch=3, num_feat=8, num_block=1, num_grow_ch=32, scale=scale)
    if arch == 'SPAN':
        from spandrel.architectures.SPAN import SPAN
        return SPAN(num_in_ch=3, num_out_ch=3, feature_channels=8, upscale=scale)
    raise ValueError(arch)


def save_checkpoint(net: nn.Module, folder: str, arch: str, layout: str | None = None) -> str:
    """Write ``net`` as ``layout`` (``params``, ``params_ema``, ``bare`` or ``safetensors``); returns the path."""
    layout = layout or LAYOUTS[arch]
    state = {k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}
    if layout == 'safetensors':
        from safetensors.torch import save_file
        path = osp.join(folder, f'{arch}.safetensors')
        save_file(state, path)
        return path
    path = osp.join(folder, f'{arch}_{layout}.pth')
    torch.save(state if layout == 'bare' else {layout: state}, path)
    return path


def make_checkpoint(folder: str, arch: str, scale: int = 4, layout: str | None = None) -> tuple[str, nn.Module]:
    """Build, save and return ``(path, net in eval mode)``."""
    net = tiny_net(arch, scale).eval()
    return save_checkpoint(net, folder, arch, layout), net
