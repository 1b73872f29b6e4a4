"""Import shims for BasicSR 1.4.2 on current torchvision; they run before the first ``import basicsr``.

* the missing ``torchvision::nms``/``qnms`` schemas on a CPU torch with a CUDA torchvision wheel;
* the removed ``torchvision.transforms.functional_tensor`` module (aliased to ``_functional_tensor``).

Each shim is applied only where it is needed; on a CUDA install whose torchvision ops load, the
ops shim does nothing. This module imports nothing else from ``kdsr_plugins``.
"""
from __future__ import annotations

import glob
import importlib.util
import os.path as osp
import sys
from typing import Any

import torch

_TORCHVISION_LIBRARY: Any = None  # keeps the fallback op schemas registered for the process


def _torchvision_op_defined(name: str) -> bool:
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
