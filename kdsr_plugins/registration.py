"""Auto-import of the registered modules (BasicSR's suffix rule, recursive) and listing of what they registered."""
from __future__ import annotations

import importlib
import os
import os.path as osp
from types import ModuleType

#: File-name suffixes of registered modules, in the order BasicSR imports its own roles.
ROLE_SUFFIXES = ('_arch', '_dataset', '_loss', '_model')
#: Sub-packages searched for registered modules.
REGISTERED_PACKAGES = ('core', 'methods')


def find_role_modules(package: str, folder: str, suffix: str) -> list[str]:
    """Dotted names of every ``*<suffix>.py`` file under ``folder`` (recursively), sorted by path.

    Args:
        package: Dotted package name of ``folder``, e.g. ``kdsr_plugins.methods``.
        folder: Filesystem path of that package.
        suffix: File-name suffix, e.g. ``_arch``.
    """
    names = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(('_', '.')))
        rel = osp.relpath(root, folder)
        prefix = package if rel == '.' else f'{package}.{rel.replace(os.sep, ".")}'
        names += [f'{prefix}.{osp.splitext(f)[0]}' for f in sorted(files) if f.endswith(f'{suffix}.py')]
    return names


def import_registered_modules() -> list[ModuleType]:
    """Import every registered module of ``kdsr_plugins.core`` and ``kdsr_plugins.methods``."""
    here = osp.dirname(osp.abspath(__file__))
    modules = []
    for suffix in ROLE_SUFFIXES:
        for sub in REGISTERED_PACKAGES:
            for name in find_role_modules(f'kdsr_plugins.{sub}', osp.join(here, sub), suffix):
                modules.append(importlib.import_module(name))
    return modules


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
