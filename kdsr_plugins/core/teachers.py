"""Teacher specifications from options: single (``network_t``) and list (``teachers``) forms."""
from __future__ import annotations

import os.path as osp
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from kdsr_plugins.core.auto_teacher import AUTO_PARAM_KEY, build_auto_teacher, is_auto, net_in_channels
from kdsr_plugins.core.option_checks import teacher_network_block
from kdsr_plugins.core.options import arch_scale
from kdsr_plugins.core.schema import REQUIRED, Field, Schema

#: One entry of the top-level ``teachers`` list.
TEACHER_SCHEMA = Schema('teachers[]', (
    Field('name', 'any', REQUIRED, 'teacher name [a-z0-9_]+ (log keys, cached targets target_<name>)'),
    Field('network', 'mapping', REQUIRED, 'network block of the teacher', dynamic=teacher_network_block,
          role='network'),
    Field('pretrain', 'str', None, 'teacher checkpoint (required for training)'),
    Field('param_key', 'str', 'params', 'key of the weights in the checkpoint (type auto: default auto)',
          nullable=True),
    Field('strict_load', 'bool', True, 'load strictly'),
), doc='One frozen teacher; the list order is the canonical teacher order.')
TEACHER_ENTRY_KEYS = tuple(TEACHER_SCHEMA.keys)
_NAME_RE = re.compile(r'^[a-z0-9_]+$')


@dataclass
class TeacherSpec:
    """One frozen teacher: how to build it and where its weights are."""

    name: str
    network_opt: dict
    pretrain: str | None
    param_key: str | None = 'params'
    strict_load: bool = True


def _default_param_key(net_opt: Mapping[str, Any]) -> str:
    """``params`` (BasicSR layout), or ``auto`` (spandrel's unwrapping) for ``type: auto`` networks."""
    return AUTO_PARAM_KEY if is_auto(net_opt) else 'params'


def parse_teacher_specs(opt: Mapping[str, Any]) -> list[TeacherSpec]:
    """Normalise ``network_t`` + ``path.*_t`` or the ``teachers`` list into an ordered list.

    Raises:
        ValueError: Both forms given, neither given, malformed entries or duplicate names.
    """
    has_single, has_list = 'network_t' in opt, opt.get('teachers') is not None
    if has_single and has_list:
        raise ValueError('Give either network_t (single teacher) or teachers (list), not both.')
    if not has_single and not has_list:
        raise ValueError('A KD model needs a teacher: set network_t (+ path.pretrain_network_t) or a teachers list.')
    path_opt = opt.get('path') or {}
    if has_single:
        pretrain = path_opt.get('pretrain_network_t')
        net_opt = dict(opt['network_t'])
        return [TeacherSpec('t', net_opt, osp.expanduser(pretrain) if pretrain else None,
                            path_opt.get('param_key_t', _default_param_key(net_opt)),
                            bool(path_opt.get('strict_load_t', True)))]
    entries = opt['teachers']
    if not isinstance(entries, list) or not entries:
        raise ValueError('teachers must be a non-empty list of {name, network, pretrain, param_key, strict_load}.')
    specs, seen = [], set()
    for index, entry in enumerate(entries):
        where = f'teachers[{index}]'
        TEACHER_SCHEMA.check(entry, where, defaults=False)
        name = str(entry['name'])
        if not _NAME_RE.match(name):
            raise ValueError(f'{where}.name {name!r} must match [a-z0-9_]+.')
        if name in seen:
            raise ValueError(f'Duplicate teacher name {name!r}.')
        seen.add(name)
        pretrain = entry.get('pretrain')
        net_opt = dict(entry['network'])
        specs.append(TeacherSpec(name, net_opt, osp.expanduser(pretrain) if pretrain else None,
                                 entry.get('param_key', _default_param_key(net_opt)),
                                 bool(entry.get('strict_load', True))))
    return specs


def check_teacher_scale(spec: TeacherSpec, scale: int) -> None:
    """Raise if a teacher's declared upscale differs from the run's ``scale``."""
    teacher_scale = arch_scale(spec.network_opt)
    if teacher_scale is not None and teacher_scale != scale:
        raise ValueError(f'Teacher {spec.name!r} ({spec.network_opt.get("type")}) upscales x{teacher_scale}, '
                         f'but the run (scale / network_g) is x{scale}.')


def build_teacher_network(spec: TeacherSpec, scale: int, student_opt: Mapping[str, Any]) -> nn.Module | None:
    """The network of an auto (spandrel) teacher, built and loaded from its checkpoint; None for other types.

    Other teachers are built from their options by BasicSR's ``build_network`` and loaded by the caller.
    """
    if not is_auto(spec.network_opt):
        return None
    if not spec.strict_load:
        raise ValueError(f'Teacher {spec.name!r}: network type auto is always loaded strictly (strict_load: false '
                         'is not supported).')
    return build_auto_teacher(spec.network_opt, spec.pretrain, scale, spec.param_key, net_in_channels(student_opt),
                              f'teacher {spec.name!r}')
