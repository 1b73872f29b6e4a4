"""kdsr_plugins: knowledge distillation for image super-resolution as a BasicSR plugin.

``import kdsr_plugins`` installs the compatibility shims, imports BasicSR, patches its
CPU-unsafe functions and registers every arch, loss, dataset and model of this package
(every ``*_arch.py``, ``*_dataset.py``, ``*_loss.py``, ``*_model.py`` under ``core/`` and
``methods/``).
"""
from kdsr_plugins import compat

compat.install_import_shims()

import basicsr  # noqa: E402,F401  (must follow the shims)

compat.apply_runtime_patches()

from kdsr_plugins.core.pipeline_hooks import install_pipeline_hooks  # noqa: E402
from kdsr_plugins.registration import import_registered_modules, registered_names  # noqa: E402

install_pipeline_hooks()

import_registered_modules()

__version__ = '0.1.0'
__all__ = ['registered_names', '__version__']
