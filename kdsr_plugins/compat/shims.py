"""Import shims for BasicSR 1.4.2 on current torchvision; they run before the first ``import basicsr``.

* the missing ``torchvision::nms``/``qnms`` schemas on a CPU torch with a CUDA torchvision wheel;
* the removed ``torchvision.transforms.functional_tensor`` module (aliased to ``_functional_tensor``).

Each shim is applied only where it is needed; on a CUDA install whose torchvision ops load, the
ops shim does nothing. This module imports nothing else from ``kdsr_plugins`` and imports torch
only when a shim runs, so the start-up hook (``install_import_hook``, installed by
``python -m kdsr_plugins --install-hook`` as a ``.pth`` file) can load it by file path at every
Python start: ``import torchvision`` / ``import basicsr`` then work without ``import kdsr_plugins``
first (docs/guarantees.md, "Environment").
"""
from __future__ import annotations

import glob
import importlib.abc
import importlib.machinery
import importlib.util
import os
import os.path as osp
import sys
from typing import Any

_TORCHVISION_LIBRARY: Any = None  # keeps the fallback op schemas registered for the process


def _torchvision_op_defined(name: str) -> bool:
    import torch

    try:
        return torch._C._dispatch_has_kernel(f'torchvision::{name}') or bool(
            torch._C._jit_get_schemas_for_operator(f'torchvision::{name}'))
    except (AttributeError, RuntimeError):
        return False


def _torchvision_ops_library_loads() -> bool:
    """Load torchvision's compiled ops the way torchvision does; report whether it worked."""
    spec = importlib.util.find_spec('torchvision')
    if spec is None or not spec.submodule_search_locations:
        return True  # no torchvision: nothing to fix
    candidates = []
    for folder in spec.submodule_search_locations:
        candidates += glob.glob(osp.join(folder, '_C*.so')) + glob.glob(osp.join(folder, '_C*.pyd'))
    if not candidates:
        return False
    import torch

    try:
        torch.ops.load_library(candidates[0])
        return True
    except (OSError, ImportError, RuntimeError):
        return False


def install_torchvision_ops_shim() -> bool:
    """Define the ``torchvision::nms``/``qnms`` schemas when torchvision's ``_C`` cannot load.

    Returns:
        True if the fallback schemas were defined.
    """
    global _TORCHVISION_LIBRARY
    if 'torchvision' in sys.modules or _TORCHVISION_LIBRARY is not None:
        return False
    if _torchvision_ops_library_loads() or _torchvision_op_defined('nms'):
        return False
    import torch

    lib = torch.library.Library('torchvision', 'DEF')  # noqa: TOR901 - must outlive this call
    lib.define('nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor')
    lib.define('qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor')
    _TORCHVISION_LIBRARY = lib
    return True


def install_functional_tensor_alias() -> bool:
    """Alias ``torchvision.transforms.functional_tensor`` (removed in torchvision 0.17)."""
    name = 'torchvision.transforms.functional_tensor'
    if name in sys.modules:
        return False
    try:
        if importlib.util.find_spec(name) is not None:
            return False
    except ModuleNotFoundError:
        pass
    from torchvision.transforms import _functional_tensor
    sys.modules[name] = _functional_tensor
    return True


def install_import_shims() -> None:
    """Install both import shims. Call before the first ``import basicsr``."""
    install_torchvision_ops_shim()
    install_functional_tensor_alias()


# ---------------------------------------------------------------------------------------------- start-up hook
#: The alias target of the removed ``torchvision.transforms.functional_tensor``.
_FUNCTIONAL_TENSOR = 'torchvision.transforms.functional_tensor'
#: File name of the start-up hook in site-packages.
HOOK_PTH = 'kdsr_plugins_shims.pth'


class _AliasLoader(importlib.abc.Loader):
    """Loads a module name as an alias of another module."""

    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Any:
        return importlib.import_module(self.target)

    def exec_module(self, module: Any) -> None:
        """Nothing to run: the target module is already executed."""


class ShimFinder(importlib.abc.MetaPathFinder):
    """Applies the import shims lazily: the ops shim before ``torchvision`` is first imported, the
    ``functional_tensor`` alias when that module is asked for. Never makes an import fail."""

    def __init__(self) -> None:
        self._busy = False

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if self._busy or fullname not in ('torchvision', _FUNCTIONAL_TENSOR):
            return None
        self._busy = True
        try:
            if fullname == 'torchvision':
                install_torchvision_ops_shim()
                return None
            if importlib.util.find_spec('torchvision.transforms._functional_tensor') is None:
                return None
            for finder in sys.meta_path:  # a real functional_tensor module (torchvision < 0.17) wins
                if finder is not self and hasattr(finder, 'find_spec'):
                    spec = finder.find_spec(fullname, path, target)
                    if spec is not None:
                        return spec
            return importlib.machinery.ModuleSpec(fullname, _AliasLoader('torchvision.transforms._functional_tensor'))
        except Exception:  # noqa: BLE001 - a start-up hook must never break an import
            return None
        finally:
            self._busy = False


def install_import_hook() -> bool:
    """Put ``ShimFinder`` first on ``sys.meta_path`` (once); what the ``.pth`` start-up hook calls."""
    if any(type(f).__name__ == 'ShimFinder' for f in sys.meta_path):
        return False
    sys.meta_path.insert(0, ShimFinder())
    return True


def hook_pth_line(shims_path: str | None = None) -> str:
    """The one ``.pth`` line that loads this file by path (not the ``kdsr_plugins`` package) and installs the hook.

    It does nothing when the file is gone (package moved or removed).
    """
    shims_path = osp.abspath(shims_path or __file__)
    return ("import os, importlib.util as u; p = " + repr(shims_path) + "; "
            "s = os.path.isfile(p) and u.spec_from_file_location('_kdsr_import_shims', p); "
            "m = s and u.module_from_spec(s); s and (s.loader.exec_module(m) or m.install_import_hook())\n")


def install_hook_file(site_dir: str | None = None) -> str:
    """Write the start-up hook ``kdsr_plugins_shims.pth`` into ``site_dir`` (default: this environment's
    site-packages) and return its path."""
    import sysconfig

    site_dir = site_dir or sysconfig.get_paths()['purelib']
    os.makedirs(site_dir, exist_ok=True)
    path = osp.join(site_dir, HOOK_PTH)
    with open(path, 'w') as f:
        f.write(hook_pth_line())
    return path
