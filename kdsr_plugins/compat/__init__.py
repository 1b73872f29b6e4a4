"""Every fix that BasicSR 1.4.2 needs on current torch / torchvision, and nothing else.

``shims`` must run before the first ``import torchvision`` / ``import basicsr``; ``patches``
replaces BasicSR functions after it is imported. ``import kdsr_plugins`` applies both.
"""
from kdsr_plugins.compat.patches import apply_runtime_patches, find_latest_state, init_dist, load_resume_state
from kdsr_plugins.compat.shims import (
    install_functional_tensor_alias,
    install_import_shims,
    install_torchvision_ops_shim,
)

__all__ = ['apply_runtime_patches', 'find_latest_state', 'init_dist', 'install_functional_tensor_alias',
           'install_import_shims', 'install_torchvision_ops_shim', 'load_resume_state']
