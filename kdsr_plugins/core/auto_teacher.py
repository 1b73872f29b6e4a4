"""Teachers built from a checkpoint alone (``network: {type: auto}``) with spandrel's ``ModelLoader``.

spandrel (optional extra ``kdsr_plugins[spandrel]``) detects the architecture and hyper-parameters
of a state dict (HAT, DAT, SwinIR, Swin2SR, RCAN, ESRGAN/RRDBNet, SPAN, OmniSR, ...) and builds
the network with the weights loaded strictly. The file itself is read here with weights-only
loading (``torch.load(weights_only=True)`` or safetensors). See docs/auto_teachers.md.
"""
from __future__ import annotations

import os.path as osp
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kdsr_plugins.core.checkpoints import CheckpointError, extract_state_dict, load_checkpoint_file

AUTO_TYPE = 'auto'
#: ``param_key`` meaning "unwrap the way spandrel does" (params_ema, params, state_dict, model, net ...).
AUTO_PARAM_KEY = 'auto'
AUTO_OPTION_KEYS = ('type', 'arch')
SPANDREL_MISSING = ('network type auto needs the optional package spandrel: pip install -c constraints.txt '
                    '"kdsr_plugins[spandrel]" (or bash install.sh).')


class AutoTeacherError(ValueError):
    """A checkpoint cannot serve as an auto (spandrel) teacher."""


def is_auto(net_opt: Mapping[str, Any] | None) -> bool:
    """Whether a network option dict asks for an auto (spandrel) network."""
    return isinstance(net_opt, Mapping) and net_opt.get('type') == AUTO_TYPE


def import_spandrel() -> Any:
    """Import spandrel or raise a clear ``ImportError``.

    ``import kdsr_plugins`` (always done before this module runs) has applied the torchvision ops
    shim that spandrel's ``import torchvision`` needs on a CPU torch.
    """
    try:
        import spandrel
    except ImportError as err:
        raise ImportError(SPANDREL_MISSING) from err
    return spandrel


def load_weights_file(path: str, param_key: str | None = AUTO_PARAM_KEY, what: str = 'checkpoint'
                      ) -> dict[str, torch.Tensor]:
    """State dict of a ``.safetensors`` or weights-only torch file.

    Args:
        path: The checkpoint file.
        param_key: ``auto`` (spandrel's unwrapping), a BasicSR key (``params``, ``params_ema``), or
            None for a bare state dict.
        what: Label used in error messages.
    """
    path = osp.expanduser(path)
    if path.lower().endswith('.safetensors'):
        if not osp.isfile(path):
            raise CheckpointError(f'{what} not found: {path!r}')
        try:
            from safetensors.torch import load_file
        except ImportError as err:
            raise ImportError(f'Reading {path!r} needs safetensors: pip install "kdsr_plugins[spandrel]".') from err
        try:
            checkpoint: Any = load_file(path, device='cpu')
        except Exception as err:  # safetensors raises its own SafetensorError
            raise CheckpointError(f'Cannot read {what} {path!r} as a safetensors file: {err}') from err
    else:
        checkpoint = load_checkpoint_file(path, what)
    if param_key == AUTO_PARAM_KEY:
        if not isinstance(checkpoint, Mapping):
            raise CheckpointError(f'{path!r} holds a {type(checkpoint).__name__}, not a state dict.')
        return dict(import_spandrel().canonicalize_state_dict(dict(checkpoint)))
    return extract_state_dict(checkpoint, param_key, path)


class SpandrelTeacher(nn.Module):
    """A spandrel SR network as a teacher: RGB [0, 1] NCHW in, ``scale`` x larger out, any input size.

    Inputs that miss the network's size requirements (spandrel's ``size_requirements``: minimum,
    multiple, square) are padded bottom/right (reflect, then replicate as spandrel does) and the
    output cropped back, so the teacher accepts every LR patch the BasicSR teachers accept.
    Unlike spandrel's descriptor call, the output is not clamped (teachers of the other types are not).

    Attributes:
        model: The spandrel network (module paths of feature taps resolve inside it, see :attr:`tap_root`).
        arch: spandrel's architecture name, e.g. ``HAT``.
    """

    def __init__(self, descriptor: Any, path: str) -> None:
        super().__init__()
        self.model: nn.Module = descriptor.model
        self.arch: str = str(descriptor.architecture.name)
        self.arch_id: str = str(descriptor.architecture.id)
        self.scale: int = int(descriptor.scale)
        self.input_channels: int = int(descriptor.input_channels)
        self.output_channels: int = int(descriptor.output_channels)
        self.size_requirements = descriptor.size_requirements
        self.path = path
        self._call_fn: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = getattr(descriptor, '_call_fn', None)

    @property
    def tap_root(self) -> nn.Module:
        """The module whose paths feature taps name (the spandrel network itself)."""
        return self.model

    def padding(self, height: int, width: int) -> tuple[int, int]:
        """``(pad_h, pad_w)`` this network needs for an input of ``height`` x ``width``."""
        pad_w, pad_h = self.size_requirements.get_padding(width, height)
        return pad_h, pad_w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        pad_h, pad_w = self.padding(h, w)
        if pad_h or pad_w:
            reflect_w, reflect_h = min(pad_w, w - 1), min(pad_h, h - 1)
            x = F.pad(x, (0, reflect_w, 0, reflect_h), 'reflect')
            if pad_w > reflect_w or pad_h > reflect_h:
                x = F.pad(x, (0, pad_w - reflect_w, 0, pad_h - reflect_h), 'replicate')
        out = self._call_fn(self.model, x) if self._call_fn is not None else self.model(x)
        return out[..., :h * self.scale, :w * self.scale] if (pad_h or pad_w) else out

    def extra_repr(self) -> str:
        return f'arch={self.arch}, scale={self.scale}, path={self.path!r}'


def net_in_channels(net_opt: Mapping[str, Any]) -> int:
    """Input channels a BasicSR network option dict declares (3 by default)."""
    for key in ('num_in_ch', 'in_chans', 'in_nc'):
        if key in net_opt:
            return int(net_opt[key])
    return 3


def build_auto_teacher(net_opt: Mapping[str, Any], path: str | None, scale: int, param_key: str | None = AUTO_PARAM_KEY,
                       in_channels: int = 3, what: str = 'teacher') -> SpandrelTeacher:
    """Detect, build and strictly load an SR network from the checkpoint ``path`` alone.

    Args:
        net_opt: ``{type: auto}``, optionally with ``arch`` (spandrel's name, e.g. ``HAT``) to insist on.
        path: The checkpoint (``.pth``/``.pt``/``.safetensors``).
        scale: The run's ``scale``; the detected scale must equal it.
        param_key: See :func:`load_weights_file`.
        in_channels: The student's input channels; the teacher's must equal them.
        what: Label used in error messages.

    Raises:
        AutoTeacherError: Unknown architecture, non-SR model, scale or channel mismatch, wrong ``arch``.
    """
    from kdsr_plugins.core.options import check_option_keys
    check_option_keys(net_opt, AUTO_OPTION_KEYS, f'{what} network (type auto)')
    if not path:
        raise AutoTeacherError(f'{what}: network type auto builds the network from its checkpoint, and none is '
                               'set (path.pretrain_network_t or teachers[].pretrain).')
    spandrel = import_spandrel()
    state = load_weights_file(path, param_key, what)
    try:
        descriptor = spandrel.ModelLoader().load_from_state_dict(state)
    except spandrel.UnsupportedModelError:
        raise AutoTeacherError(f'{what}: spandrel {spandrel.__version__} cannot detect the architecture of {path!r} '
                               f'({len(state)} tensors, first keys {list(state)[:4]}); build it with an explicit '
                               'network type instead (e.g. EDSR, RCAN, SwinIR).') from None
    except (RuntimeError, KeyError, ValueError, AssertionError) as err:
        raise AutoTeacherError(f'{what}: spandrel detected an architecture in {path!r} but could not load it: '
                               f'{err}') from err
    arch = descriptor.architecture.name
    purpose = getattr(descriptor, 'purpose', None)
    if not isinstance(descriptor, spandrel.ImageModelDescriptor) or purpose != 'SR' or int(descriptor.scale) < 2:
        raise AutoTeacherError(f'{what}: {path!r} is a {arch} model for {purpose!r} at x{descriptor.scale}, '
                               'not a super-resolution model (purpose SR, scale >= 2).')
    if int(descriptor.scale) != int(scale):
        raise AutoTeacherError(f'{what}: {path!r} ({arch}) upscales x{descriptor.scale}, but the run (scale) is '
                               f'x{scale}.')
    expected = net_opt.get('arch')
    if expected is not None and str(expected).lower() not in (arch.lower(), str(descriptor.architecture.id).lower()):
        raise AutoTeacherError(f'{what}: network.arch is {expected!r} but {path!r} holds a {arch} model.')
    if descriptor.input_channels != in_channels or descriptor.output_channels != in_channels:
        raise AutoTeacherError(f'{what}: {path!r} ({arch}) maps {descriptor.input_channels} to '
                               f'{descriptor.output_channels} channels, the student {in_channels} to {in_channels}.')
    return SpandrelTeacher(descriptor, path)
