"""Convert official RCAN checkpoints (yulunzhang/RCAN ``RCAN_BIX{s}.pt``) to BasicSR ``RCAN`` keys.

Mapping (docs/core.md, "Official RCAN checkpoints"): ``head.0`` -> ``conv_first``; ``body.g.body.b.body.{0,2}`` ->
``body.g.residual_group.b.rcab.{0,2}``; ``...body.3.conv_du.{0,2}`` -> ``...rcab.3.attention.{1,3}``;
``body.g.body.<num_block>`` -> ``body.g.conv``; ``body.<num_group>`` -> ``conv_after_body``;
``tail.0.i`` -> ``upsample.i``; ``tail.1`` -> ``conv_last``. The mean-shift layers are dropped.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import nn

_RULES = [
    (re.compile(r'^conv_first\.(.+)$'), r'head.0.\1'),
    (re.compile(r'^body\.(\d+)\.residual_group\.(\d+)\.rcab\.([02])\.(.+)$'), r'body.\1.body.\2.body.\3.\4'),
    (re.compile(r'^body\.(\d+)\.residual_group\.(\d+)\.rcab\.3\.attention\.1\.(.+)$'),
     r'body.\1.body.\2.body.3.conv_du.0.\3'),
    (re.compile(r'^body\.(\d+)\.residual_group\.(\d+)\.rcab\.3\.attention\.3\.(.+)$'),
     r'body.\1.body.\2.body.3.conv_du.2.\3'),
    (re.compile(r'^upsample\.(\d+)\.(.+)$'), r'tail.0.\1.\2'),
    (re.compile(r'^conv_last\.(.+)$'), r'tail.1.\1'),
]
_DROPPED = re.compile(r'^(sub_mean|add_mean)\.')


def official_rcan_key(basicsr_key: str, num_group: int, num_block: int) -> str:
    """Official RCAN name of one BasicSR ``RCAN`` parameter name."""
    group_conv = re.match(r'^body\.(\d+)\.conv\.(.+)$', basicsr_key)
    if group_conv:
        return f'body.{group_conv.group(1)}.body.{num_block}.{group_conv.group(2)}'
    body_end = re.match(r'^conv_after_body\.(.+)$', basicsr_key)
    if body_end:
        return f'body.{num_group}.{body_end.group(1)}'
    for pattern, template in _RULES:
        if pattern.match(basicsr_key):
            return pattern.sub(template, basicsr_key)
    raise KeyError(f'No official RCAN name known for BasicSR key {basicsr_key!r}')


def convert_rcan_state_dict(official: Mapping[str, torch.Tensor], net: nn.Module) -> dict[str, torch.Tensor]:
    """Rename an official RCAN state dict for ``net`` (a BasicSR ``RCAN``) and check completeness.

    Raises:
        KeyError: An expected official key is missing, or official keys are left unused.
    """
    official = {(k[7:] if k.startswith('module.') else k): v for k, v in official.items()}
    num_group = len(net.body)
    num_block = len(net.body[0].residual_group)
    converted, used, missing = {}, set(), []
    for key, param in net.state_dict().items():
        source = official_rcan_key(key, num_group, num_block)
        if source not in official:
            missing.append(f'{source} (for {key})')
            continue
        if official[source].shape != param.shape:
            raise KeyError(f'Shape of {source} is {tuple(official[source].shape)}, BasicSR {key} needs '
                           f'{tuple(param.shape)}: check num_feat / num_group / num_block / upscale.')
        converted[key] = official[source]
        used.add(source)
    leftover = sorted(k for k in official if k not in used and not _DROPPED.match(k))
    if missing or leftover:
        raise KeyError(f'Official RCAN checkpoint does not match the BasicSR RCAN options: missing {missing[:6]}, '
                       f'unused {leftover[:6]}')
    return converted
