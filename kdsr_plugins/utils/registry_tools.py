"""Auto-import of role folders and listing of what the plugin registered."""
from __future__ import annotations

import importlib
import os
import os.path as osp
from types import ModuleType


def import_role_modules(package: str, folder: str, suffix: str) -> list[ModuleType]:
    """Import every ``*<suffix>.py`` file of a role folder, in sorted order (BasicSR's way).

    Args:
        package: Dotted package name, e.g. ``kdsr_plugins.archs``.
        folder: Filesystem path of that package.
        suffix: File-name suffix, e.g. ``_arch``.
    """
    names = sorted(osp.splitext(f)[0] for f in os.listdir(folder) if f.endswith(f'{suffix}.py'))
    return [importlib.import_module(f'{package}.{name}') for name in names]


def registered_names(prefix: str = 'kdsr_plugins') -> dict[str, list[str]]:
    """Names in BasicSR's registries whose objects come from ``prefix`` modules.

    Returns:
        ``{'ARCH': [...], 'LOSS': [...], 'MODEL': [...], 'DATASET': [...]}``, sorted.
    """
    from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, LOSS_REGISTRY, MODEL_REGISTRY

    result = {}
    for label, registry in (('ARCH', ARCH_REGISTRY), ('LOSS', LOSS_REGISTRY), ('MODEL', MODEL_REGISTRY),
                            ('DATASET', DATASET_REGISTRY)):
        result[label] = sorted(name for name, obj in registry._obj_map.items()
                               if getattr(obj, '__module__', '').startswith(prefix))
    return result
