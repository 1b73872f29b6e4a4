"""Runtime patches of BasicSR 1.4.2 functions that are unsafe on CPU, under ``torchrun`` or with untrusted files.

* resume-state loading (R1): ``weights_only`` loading, CPU-safe device mapping, frozen networks
  excluded from ``check_resume``; hook lists (``BEFORE_RESUME_LOOKUP``, ``AFTER_RESUME_LOAD``,
  ``STATE_FILE_LOADER``) let the KD core add its exact resume without this module importing it;
* distributed initialisation (R2): gloo without CUDA, nccl with it;
* option files parsed with PyYAML's safe loader (BasicSR uses the full one, which runs code);
* clearer errors: unknown registry names list close matches and the registered names (``Registry.get``).

This module imports nothing else from ``kdsr_plugins``; docs/core.md, "Compatibility fixes (R1–R4)".
"""
from __future__ import annotations

import importlib
import os
import os.path as osp
from typing import Any

import torch

_PATCHED = False


def _load_state_weights_only(path: str, map_location: Any) -> Any:
    return torch.load(path, map_location=map_location, weights_only=True)


#: How ``load_resume_state`` reads a training state (one entry; replaceable, weights-only by default).
STATE_FILE_LOADER: list[Any] = [_load_state_weights_only]
#: Callables ``hook(opt)`` run (rank 0 and others) before the resume state is looked up.
BEFORE_RESUME_LOOKUP: list[Any] = []
#: Callables ``hook(resume_state, opt)`` run after a resume state was loaded and checked.
AFTER_RESUME_LOAD: list[Any] = []


def frozen_network_keys(opt: dict) -> list[str]:
    """Top-level ``network_*`` option keys that are not the student (teachers, frozen nets)."""
    return [k for k in opt if k.startswith('network_') and k != 'network_g']


def find_latest_state(state_dir: str) -> str | None:
    """Return the path of the highest-iteration ``<iter>.state`` file in ``state_dir``."""
    if not osp.isdir(state_dir):
        return None
    iters = []
    for fname in os.listdir(state_dir):
        stem, ext = osp.splitext(fname)
        if ext == '.state' and stem.isdigit():
            iters.append(int(stem))
    return osp.join(state_dir, f'{max(iters)}.state') if iters else None


def load_resume_state(opt: dict) -> dict | None:
    """CPU-safe replacement of ``basicsr.train.load_resume_state`` (docs/core.md, "Compatibility fixes (R1–R4)").

    Auto-resume looks under ``<root_path>/experiments/<name>/training_states``; storages are
    mapped to the current CUDA device only when CUDA is used, else to the CPU. Frozen networks
    (``network_t`` ...) are added to ``path.ignore_resume_networks`` so that ``check_resume``
    does not point the teacher at a non-existent ``net_t_<iter>.pth``.
    """
    from basicsr.utils import check_resume

    for hook in BEFORE_RESUME_LOOKUP:
        hook(opt)

    resume_state_path = None
    if opt.get('auto_resume'):
        root = opt.get('root_path', os.getcwd())
        resume_state_path = find_latest_state(osp.join(root, 'experiments', opt['name'], 'training_states'))
        if resume_state_path is not None:
            opt['path']['resume_state'] = resume_state_path
    elif opt['path'].get('resume_state'):
        resume_state_path = opt['path']['resume_state']
    if resume_state_path is None:
        return None
    if not osp.isfile(resume_state_path):
        raise FileNotFoundError(f'Resume state not found: {resume_state_path}')

    if torch.cuda.is_available() and opt.get('num_gpu', 0) != 0:
        device = torch.device('cuda', torch.cuda.current_device())
    else:
        device = torch.device('cpu')
    resume_state = STATE_FILE_LOADER[0](resume_state_path, device)  # weights_only: no code runs on load

    ignore = opt['path'].get('ignore_resume_networks') or []
    if isinstance(ignore, str):
        ignore = [ignore]
    ignore = list(ignore)
    for key in frozen_network_keys(opt):
        if key not in ignore:
            ignore.append(key)
    opt['path']['ignore_resume_networks'] = ignore
    check_resume(opt, resume_state['iter'])
    for hook in AFTER_RESUME_LOAD:
        hook(resume_state, opt)
    return resume_state


def init_dist(launcher: str, backend: str | None = None, **kwargs: Any) -> None:
    """CPU-safe replacement of ``basicsr.utils.dist_util.init_dist`` (docs/core.md, "Compatibility fixes (R1–R4)").

    ``pytorch`` launcher: ``nccl`` with one device per local rank when CUDA devices exist,
    ``gloo`` otherwise. ``slurm`` is delegated to BasicSR.
    """
    import torch.distributed as dist
    import torch.multiprocessing as mp

    if mp.get_start_method(allow_none=True) is None:
        mp.set_start_method('spawn')
    if dist.is_available() and dist.is_initialized():
        return
    if launcher == 'pytorch':
        kwargs.pop('port', None)  # torchrun sets MASTER_PORT; BasicSR's port key is for slurm
        if torch.cuda.is_available() and torch.cuda.device_count() > 0:
            local_rank = int(os.environ.get('LOCAL_RANK', os.environ.get('RANK', 0)))
            torch.cuda.set_device(local_rank % torch.cuda.device_count())
            default_backend = 'nccl'
        else:
            default_backend = 'gloo'
        if backend in (None, 'nccl') and default_backend == 'gloo':
            backend = 'gloo'
        dist.init_process_group(backend=backend or default_backend, **kwargs)
    elif launcher == 'slurm':
        from basicsr.utils import dist_util
        dist_util._init_dist_slurm(backend or 'nccl', **kwargs)
    else:
        raise ValueError(f'Invalid launcher type: {launcher}')


class RegistryNameError(KeyError):
    """An unknown name in a BasicSR registry; a ``KeyError`` whose message prints as plain text."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ''


def unknown_name_message(registry: Any, name: Any) -> str:
    """BasicSR's "No object named ..." message, plus close matches, the plugin's names and a hint."""
    import difflib

    names = sorted(str(k) for k in registry._obj_map)
    lower = {n.lower(): n for n in names}
    close = difflib.get_close_matches(str(name), names, n=5, cutoff=0.6)
    close += [lower[m] for m in difflib.get_close_matches(str(name).lower(), list(lower), n=5, cutoff=0.6)
              if lower[m] not in close]
    ours = sorted(k for k, obj in registry._obj_map.items()
                  if getattr(obj, '__module__', '').startswith('kdsr_plugins'))
    lines = [f"No object named '{name}' found in '{registry._name}' registry!"]
    if close:
        lines.append(f'  Did you mean: {", ".join(close[:5])}?')
    lines.append(f'  Registered: {", ".join(names)}.')
    if ours:
        lines.append(f'  (from kdsr_plugins: {", ".join(ours)})')
    lines.append('  Names exist only once their module is imported: run python -m kdsr_plugins.train / .test, or '
                 'put `import kdsr_plugins` (and your own modules) at the top level of your entry script.')
    return '\n'.join(lines)


def _registry_get(self: Any, name: Any, suffix: str = 'basicsr') -> Any:
    """``Registry.get`` of BasicSR 1.4.2 with a helpful error for unknown names."""
    ret = self._obj_map.get(name)
    if ret is None:
        ret = self._obj_map.get(f'{name}_{suffix}')
        if ret is not None:
            print(f'Name {name} is not found, use name: {name}_{suffix}!')
    if ret is None:
        raise RegistryNameError(unknown_name_message(self, name))
    return ret


def safe_ordered_yaml() -> tuple[type, type]:
    """BasicSR's ``ordered_yaml`` on PyYAML's *safe* loader.

    BasicSR 1.4.2 parses option files with PyYAML's full ``(C)Loader``, which constructs arbitrary
    Python objects (``!!python/object/apply:os.system [...]`` runs a command while the file is
    read). The safe loader accepts every standard tag the options use (``!!float 1e-4``, ``~``).

    Returns:
        (Loader, Dumper), mappings loaded as ``OrderedDict`` as in BasicSR.
    """
    from collections import OrderedDict

    import yaml

    base = getattr(yaml, 'CSafeLoader', yaml.SafeLoader)
    dumper = getattr(yaml, 'CDumper', yaml.Dumper)

    class OrderedSafeLoader(base):  # type: ignore[misc, valid-type]
        """Safe loader building ``OrderedDict`` mappings."""

    OrderedSafeLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                                      lambda loader, node: OrderedDict(loader.construct_pairs(node)))
    dumper.add_representer(OrderedDict, lambda d, data: d.represent_dict(data.items()))
    return OrderedSafeLoader, dumper


def apply_runtime_patches() -> None:
    """Patch BasicSR's module globals used by ``train_pipeline`` / ``parse_options`` (fixes only).

    The KD core's own additions to BasicSR's pipeline (option and dataset checks, start-up guards,
    exact-resume prefetchers) are installed by ``kdsr_plugins.core.pipeline_hooks``.
    """
    global _PATCHED
    if _PATCHED:
        return
    from basicsr.utils.registry import Registry

    basicsr_train = importlib.import_module('basicsr.train')
    basicsr_train.load_resume_state = load_resume_state
    basicsr_options = importlib.import_module('basicsr.utils.options')
    basicsr_options.init_dist = init_dist
    basicsr_options.ordered_yaml = safe_ordered_yaml
    Registry.get = _registry_get
    _PATCHED = True


