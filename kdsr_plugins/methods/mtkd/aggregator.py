"""MTKD's frozen aggregator: loading a stage-1 checkpoint (ours or the public code's), teacher-order checks, teacher SR.

Used by ``MTKDStudentModel`` (stage 2) and by the teacher-output cache tool. See docs/mtkd.md.
"""
from __future__ import annotations

import os.path as osp
from collections.abc import Mapping, Sequence
from copy import deepcopy
from typing import Any

import torch
from basicsr.archs import build_network
from torch import nn

from kdsr_plugins.core.arch_info import mirror_pad
from kdsr_plugins.core.checkpoints import (
    CheckpointError,
    extract_state_dict,
    is_state_dict,
    load_checkpoint_file,
    load_state_dict_into,
)
from kdsr_plugins.core.option_checks import network_block
from kdsr_plugins.core.options import arch_scale
from kdsr_plugins.core.schema import Field, Schema, check_choice
from kdsr_plugins.core.teachers import TeacherSpec
from kdsr_plugins.methods.mtkd.public_checkpoint import (
    PUBLIC_MTKD_MASK_MODE,
    PUBLIC_MTKD_OUTPUT_CONVENTION,
    convert_public_mtkd_aggregator,
)

__all__ = ['AGGREGATOR_KEYS', 'TeacherOrderError', 'check_teacher_order', 'kd_meta_of', 'load_aggregator', 'teacher_sr']

AGGREGATOR_FORMATS = ('basicsr', 'public_mtkd')
ORDER_CHECK_MODES = ('error', 'warn')
#: The top-level ``aggregator`` block of MTKD stage 2.
AGGREGATOR_SCHEMA = Schema('aggregator', (
    Field('network', 'mapping', None, 'network block of the aggregator (num_teachers / upscale default to the run)',
          dynamic=network_block, role='network'),
    Field('pretrain', 'str', None, 'stage-1 checkpoint (required)'),
    Field('param_key', 'str', 'params_ema', 'key of the weights (falls back to params)', nullable=True),
    Field('strict_load', 'bool', True, 'load strictly'),
    Field('teacher_order', 'list', None, 'teacher names in the order the aggregator was trained with (required '
          'without kd_meta)'),
    Field('teacher_order_check', 'str', 'error', 'error | warn on a teacher-order mismatch', choices=ORDER_CHECK_MODES,
          message='teacher_order_check must be one of ' + str(ORDER_CHECK_MODES) + ', got {value}.'),
    Field('format', 'str', 'basicsr', 'checkpoint format', choices=AGGREGATOR_FORMATS,
          message='aggregator.format must be one of ' + str(AGGREGATOR_FORMATS) + ', got {value}.'),
), doc='Frozen MTKD aggregator of stage 2 (docs/mtkd.md); aggregator: ~ with train.fixed_teacher_weights for the '
       'fixed-weight baseline.')
AGGREGATOR_KEYS = tuple(AGGREGATOR_SCHEMA.keys)


class TeacherOrderError(ValueError):
    """The teachers of a run do not match the order/types an aggregator was trained with."""


# --------------------------------------------------------------------------------------------- helpers
@torch.no_grad()
def teacher_sr(net: nn.Module, x: torch.Tensor, multiple: int, scale: int) -> torch.Tensor:
    """SR output of a frozen network on ``x`` padded to ``multiple`` (SwinIR window), cropped back."""
    h, w = x.shape[-2:]
    out = net(mirror_pad(x, multiple) if multiple > 1 else x)
    return out[:, :, :h * scale, :w * scale]


def kd_meta_of(specs: Sequence[TeacherSpec], scale: int, aggregator: nn.Module) -> dict[str, Any]:
    """The ``kd_meta`` entry of an aggregator checkpoint (weights-only-safe types only)."""
    return {'teacher_order': [s.name for s in specs],
            'teacher_types': [str(s.network_opt.get('type')) for s in specs],
            'num_teachers': len(specs), 'scale': int(scale),
            'output_convention': str(getattr(aggregator, 'output_convention', 'image')),
            'mask_mode': str(getattr(aggregator, 'mask_mode', 'dct_label'))}


def check_teacher_order(names: Sequence[str], trained_order: Sequence[str], source: str, mode: str = 'error',
                        types: Sequence[str] | None = None, trained_types: Sequence[str] | None = None) -> str | None:
    """Compare the run's teachers with the order an aggregator was trained with.

    Returns:
        A warning message (mode ``warn``) or None when they match.

    Raises:
        TeacherOrderError: Mismatch and mode ``error``.
    """
    check_choice(mode, ORDER_CHECK_MODES, f'teacher_order_check must be one of {ORDER_CHECK_MODES}, got {mode!r}.')
    problems = []
    if list(names) != list(trained_order):
        problems.append(f'{source} was trained on the teacher outputs stacked in the order {list(trained_order)}, '
                        f'but this run\'s teachers list is {list(names)}')
    elif types is not None and trained_types is not None and list(types) != list(trained_types):
        problems.append(f'{source} was trained with teacher archs {list(trained_types)}, this run declares '
                        f'{list(types)} under the same names')
    if not problems:
        return None
    msg = (f'Teacher order mismatch: {problems[0]}. The aggregator input is the channel stack of the teacher '
           'outputs in canonical order, so a permuted stack gives a wrong target: reorder the teachers list '
           '(names and archs) to match, or set teacher_order_check: warn to proceed anyway.')
    if mode == 'error':
        raise TeacherOrderError(msg)
    return msg


def load_aggregator(agg_opt: Mapping[str, Any], specs: Sequence[TeacherSpec], scale: int,
                    device: torch.device | str = 'cpu') -> tuple[nn.Module, dict[str, Any], list[str]]:
    """Build, load (strictly by default), check and freeze the stage-2 aggregator.

    Args:
        agg_opt: The ``aggregator`` block: ``network`` (``num_teachers``/``upscale`` default to the
            run's), ``pretrain`` (required), ``param_key`` (``params_ema``, falls back to
            ``params``), ``strict_load`` (true), ``teacher_order`` (required without ``kd_meta``),
            ``teacher_order_check`` (``error`` | ``warn``), ``format`` (``basicsr`` | ``public_mtkd``).
        specs: The run's teachers, in canonical order.
        scale: The run's scale.
        device: Target device.

    Returns:
        (frozen eval network, effective kd_meta, warnings).

    Raises:
        ValueError / TeacherOrderError / CheckpointError: Inconsistent options or checkpoint.
    """
    AGGREGATOR_SCHEMA.check(agg_opt, defaults=False)
    warnings: list[str] = []
    if 'network' not in agg_opt:
        raise ValueError('aggregator needs a network block ({type: MTKDDCTSwin, ...}).')
    fmt = AGGREGATOR_SCHEMA['format'].validate(agg_opt.get('format', 'basicsr'), 'aggregator.format')
    net_opt = dict(agg_opt['network'])
    net_opt.setdefault('num_teachers', len(specs))
    net_opt.setdefault('upscale', int(scale))
    if int(net_opt['num_teachers']) != len(specs):
        raise ValueError(f'aggregator.network.num_teachers is {net_opt["num_teachers"]}, the run has '
                         f'{len(specs)} teachers.')
    if arch_scale(net_opt) != int(scale):
        raise ValueError(f'aggregator.network upscales x{arch_scale(net_opt)}, the run is x{scale}.')
    if fmt == 'public_mtkd':
        convention = net_opt.setdefault('output_convention', PUBLIC_MTKD_OUTPUT_CONVENTION)
        if convention != PUBLIC_MTKD_OUTPUT_CONVENTION:
            raise ValueError(f'aggregator.format public_mtkd: checkpoints of the public MTKD code encode the '
                             f'{PUBLIC_MTKD_OUTPUT_CONVENTION!r} output convention, but network.output_convention '
                             f'is {convention!r}.')
        mask_mode = net_opt.setdefault('mask_mode', PUBLIC_MTKD_MASK_MODE)
        if mask_mode != PUBLIC_MTKD_MASK_MODE:
            raise ValueError(f'aggregator.format public_mtkd: checkpoints of the public MTKD code were trained with '
                             f'its attention masks (mask_mode {PUBLIC_MTKD_MASK_MODE!r}), but network.mask_mode is '
                             f'{mask_mode!r}: remove it or set it to {PUBLIC_MTKD_MASK_MODE!r}.')
    pretrain = agg_opt.get('pretrain')
    if not pretrain:
        raise ValueError('aggregator.pretrain is required: the stage-1 checkpoint '
                         '(experiments/<stage-1 name>/models/net_g_latest.pth).')
    pretrain = osp.expanduser(str(pretrain))
    param_key = agg_opt.get('param_key', 'params_ema')
    strict = bool(agg_opt.get('strict_load', True))
    net = build_network(deepcopy(net_opt))

    ckpt = load_checkpoint_file(pretrain, 'aggregator')
    kd_meta = dict(ckpt['kd_meta']) if isinstance(ckpt, Mapping) and isinstance(ckpt.get('kd_meta'), Mapping) else None
    if fmt == 'public_mtkd':
        key = None
        if not is_state_dict(ckpt) and param_key is not None:
            key = param_key if param_key in ckpt else ('params' if param_key == 'params_ema' else param_key)
        try:
            state = convert_public_mtkd_aggregator(ckpt, key)
        except KeyError as err:
            raise CheckpointError(f'aggregator {pretrain!r}: {err.args[0]}') from err
    else:
        state = extract_state_dict(ckpt, param_key, pretrain)
        masks = [k for k in state if k.endswith('attn_mask')]
        if masks and strict:
            raise CheckpointError(f'aggregator {pretrain!r} holds attn_mask buffers ({masks[0]}, ...): it looks like '
                                  'a checkpoint of the public MTKD code; set aggregator.format: public_mtkd (and '
                                  'aggregator.teacher_order).')
    load_state_dict_into(net, state, strict, pretrain, 'aggregator')

    names = [s.name for s in specs]
    types = [str(s.network_opt.get('type')) for s in specs]
    declared = agg_opt.get('teacher_order')
    mode = agg_opt.get('teacher_order_check', 'error')
    if kd_meta is not None:
        if declared is not None and list(declared) != list(kd_meta.get('teacher_order', [])):
            raise TeacherOrderError(f'aggregator.teacher_order {list(declared)} contradicts the checkpoint\'s '
                                    f'kd_meta.teacher_order {kd_meta.get("teacher_order")} ({pretrain!r}).')
        for key, value in (('scale', int(scale)), ('num_teachers', len(specs)),
                           ('output_convention', getattr(net, 'output_convention', None)),
                           ('mask_mode', getattr(net, 'mask_mode', None))):
            if key in kd_meta and value is not None and kd_meta[key] != value:
                raise ValueError(f'aggregator {pretrain!r} was trained with {key} = {kd_meta[key]!r}, '
                                 f'aggregator.network gives {value!r}: set it to {kd_meta[key]!r}.')
        msg = check_teacher_order(names, kd_meta.get('teacher_order', []), f'aggregator {pretrain!r}', mode,
                                  types, kd_meta.get('teacher_types'))
    else:
        if declared is None:
            raise TeacherOrderError(f'aggregator {pretrain!r} has no kd_meta (public MTKD or foreign checkpoint): '
                                    'set aggregator.teacher_order to the teacher names in the order it was trained '
                                    'with (the public MTKD stage-1 order is [edsr, swinir, rcan]).')
        msg = check_teacher_order(names, declared, f'aggregator {pretrain!r} (aggregator.teacher_order)', mode)
        kd_meta = {'teacher_order': list(declared), 'num_teachers': len(declared), 'scale': int(scale),
                   'output_convention': str(getattr(net, 'output_convention', 'image')),
                   'mask_mode': str(getattr(net, 'mask_mode', 'dct_label'))}
    if msg:
        warnings.append(msg)
    net.requires_grad_(False)
    net.eval()
    return net.to(device), {**kd_meta, 'pretrain': pretrain, 'format': fmt}, warnings
