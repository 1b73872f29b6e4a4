"""Facts about the stock BasicSR archs used as students and teachers (EDSR, RCAN, SwinIR)."""
from __future__ import annotations

from torch import nn

# arch class name -> name of the ModuleList / Sequential holding the body units
BODY_UNIT_CONTAINERS = {'EDSR': 'body', 'RCAN': 'body', 'SwinIR': 'layers'}


def arch_name(net: nn.Module) -> str:
    return type(net).__name__


def body_unit_container(net: nn.Module) -> str:
    """Attribute name of the body units (``body`` or ``layers``) of a supported arch.

    Raises:
        ValueError: The arch has no known body-unit layout.
    """
    name = arch_name(net)
    if name not in BODY_UNIT_CONTAINERS:
        raise ValueError(f'Integer taps / body units are defined for {sorted(BODY_UNIT_CONTAINERS)}, not {name}; '
                         'use module paths instead.')
    return BODY_UNIT_CONTAINERS[name]


def num_body_units(net: nn.Module) -> int:
    return len(getattr(net, body_unit_container(net)))


def body_unit_path(net: nn.Module, index: int) -> str:
    """Module path of the ``index``-th (0-based; negative counts from the end) body unit."""
    n = num_body_units(net)
    if not -n <= index < n:
        raise ValueError(f'Body unit index {index} out of range for {arch_name(net)} with {n} units.')
    return f'{body_unit_container(net)}.{index % n}'


def feature_channels(net: nn.Module) -> int:
    """Width of the body features (``num_feat`` for EDSR/RCAN, ``embed_dim`` for SwinIR)."""
    return int(net.conv_first.out_channels)


def pad_multiple(net_opt: dict) -> int:
    """Spatial multiple an input must have (SwinIR: ``window_size``; others: 1)."""
    if net_opt.get('type') == 'SwinIR':
        return int(net_opt.get('window_size', 7))
    return 1
