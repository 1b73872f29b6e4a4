"""Runtime patches of BasicSR 1.4.2 functions that are unsafe on CPU, under ``torchrun`` or with untrusted files.

* resume-state loading (R1): ``weights_only`` loading, CPU-safe device mapping, frozen networks
  excluded from ``check_resume``, and a hand-over to the exact-resume prefetcher
  (``kdsr_plugins.core.resume``);
* distributed initialisation (R2): gloo without CUDA, nccl with it;
* the train prefetchers' end-of-iteration SIGTERM check (``kdsr_plugins.core.preemption``);
  stale ``*.tmp<pid>`` checkpoint files removed when the resume state is looked up;
* option files parsed with PyYAML's safe loader (BasicSR uses the full one, which runs code);
* clearer errors: unknown registry names list close matches and the registered names
  (``Registry.get``), and dataset blocks are validated before BasicSR builds them
  (``build_dataset``, see ``kdsr_plugins.core.dataset_checks``);
* every option block checked at start-up (``parse_options``, see ``kdsr_plugins.core.option_checks``
  and docs/options.md), before BasicSR creates or archives any experiment folder.
  (``build_dataset``, see ``kdsr_plugins.core.dataset_checks``); an image that does not decode
  names its LMDB key or file (``imfrombytes``, ``FileClient.get``);
* start-up order (``kdsr_plugins.core.startup``): pre-flight checks right after ``parse_options``,
  before any folder is made; ``mkdir_and_rename`` journaled so that a refused start is undone;
  start-up ends when the training loop's ``MessageLogger`` (train) or the model (test) exists.
"""
from __future__ import annotations

import importlib
import os
import os.path as osp
from typing import Any

import torch

_PATCHED = False


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

    if opt.get('rank', 0) == 0:  # leftovers of killed atomic writes (docs/guarantees.md, preemption section)
        from kdsr_plugins.core.preemption import remove_stale_temp_files
        root = opt.get('root_path', os.getcwd())
        exp = osp.join(root, 'experiments', opt['name'])
        folders = {opt['path'].get('models'), opt['path'].get('training_states'), osp.join(exp, 'models'),
                   osp.join(exp, 'training_states')}
        if opt['path'].get('resume_state'):
            folders.add(osp.dirname(osp.abspath(opt['path']['resume_state'])))
        remove_stale_temp_files(sorted(f for f in folders if f))

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
    from kdsr_plugins.core.checkpoints import load_training_state_file
    resume_state = load_training_state_file(resume_state_path, device)  # weights_only: no code runs on load

    ignore = opt['path'].get('ignore_resume_networks') or []
    if isinstance(ignore, str):
        ignore = [ignore]
    ignore = list(ignore)
    for key in frozen_network_keys(opt):
        if key not in ignore:
            ignore.append(key)
    opt['path']['ignore_resume_networks'] = ignore
    check_resume(opt, resume_state['iter'])
    from kdsr_plugins.core.resume import schedule_resume
    schedule_resume(resume_state, rank=int(opt.get('rank', 0)), world_size=int(opt.get('world_size', 1)))
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


def _checked_build_dataset(build_dataset: Any) -> Any:
    """Wrap BasicSR's ``build_dataset`` so paired LMDB blocks are validated first (core.dataset_checks)."""
    if getattr(build_dataset, '_kdsr_checked', False):
        return build_dataset

    def checked(dataset_opt: dict) -> Any:
        from kdsr_plugins.core.dataset_checks import check_dataset_opt
        check_dataset_opt(dataset_opt)
        return build_dataset(dataset_opt)
    checked._kdsr_checked = True
    checked.__doc__ = build_dataset.__doc__
    return checked


def option_path_from_argv(argv: list[str] | None = None) -> str | None:
    """The ``-opt`` argument of a BasicSR command line, or None."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument('-opt', type=str, default=None)
    args, _ = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    return args.opt


def _checked_parse_options(parse_options: Any) -> Any:
    """Wrap BasicSR's ``parse_options``: check the option file first, normalise numbers after.

    The file is loaded and checked (``core.option_checks``) before BasicSR's ``parse_options`` runs,
    so a refused start leaves no experiment folder behind; after it, numbers written as strings
    (``lr: 1e-4``, also from ``--force_yml``) are coerced in place. Read-but-ignored keys are printed
    (rank 0) as warnings: BasicSR's logger does not exist yet.
    """
    if getattr(parse_options, '_kdsr_checked', False):
        return parse_options

    def checked(root_path: str, is_train: bool = True) -> Any:
        import sys

        from kdsr_plugins.core.option_checks import check_num_gpu, check_option_file, load_option_file

        path = option_path_from_argv()
        warnings: list[str] = []
        if path is not None:
            raw = load_option_file(path)
            warnings = check_option_file(raw, is_train)
            check_num_gpu(raw)
        opt, args = parse_options(root_path, is_train)
        check_option_file(opt, is_train, in_place=True)
        if opt.get('rank', 0) == 0:
            for msg in warnings:
                print(f'Option warning: {msg}', file=sys.stderr, flush=True)
        return opt, args
    checked._kdsr_checked = True
    checked.__doc__ = parse_options.__doc__
    return checked


def apply_runtime_patches() -> None:
    """Patch BasicSR's module globals used by ``train_pipeline`` / ``parse_options``."""
    global _PATCHED
    if _PATCHED:
        return
    from basicsr.utils.registry import Registry

    from kdsr_plugins.core.resume import PreemptibleCUDAPrefetcher, ResumablePrefetcher

    basicsr_train = importlib.import_module('basicsr.train')
    basicsr_train.load_resume_state = load_resume_state
    basicsr_train.CPUPrefetcher = ResumablePrefetcher
    basicsr_train.CUDAPrefetcher = PreemptibleCUDAPrefetcher
    basicsr_options = importlib.import_module('basicsr.utils.options')
    basicsr_options.init_dist = init_dist
    basicsr_options.ordered_yaml = safe_ordered_yaml
    Registry.get = _registry_get
    for module in ('basicsr.data', 'basicsr.train', 'basicsr.test'):  # each holds its own reference
        mod = importlib.import_module(module)
        mod.build_dataset = _checked_build_dataset(mod.build_dataset)
    for module in ('basicsr.utils.options', 'basicsr.train', 'basicsr.test'):
        mod = importlib.import_module(module)
        mod.parse_options = _checked_parse_options(mod.parse_options)
    _apply_startup_patches(basicsr_train)
    _apply_decode_patches()
    _PATCHED = True


def _apply_startup_patches(basicsr_train: Any) -> None:
    """Pre-flight after ``parse_options``, journaled folder creation, end-of-start-up markers."""
    from kdsr_plugins.core import startup

    basicsr_test = importlib.import_module('basicsr.test')
    for mod in (basicsr_train, basicsr_test):
        mod.parse_options = startup.checked_parse_options(mod.parse_options)
    for module in ('basicsr.utils.misc', 'basicsr.utils', 'basicsr.train'):
        importlib.import_module(module).mkdir_and_rename = startup.mkdir_and_rename
    basicsr_train.MessageLogger = startup.marking_start(basicsr_train.MessageLogger)
    basicsr_test.build_model = startup.marking_start(basicsr_test.build_model)


def _apply_decode_patches() -> None:
    """Undecodable images raise ``ImageDecodeError`` naming the LMDB key or file (core.dataset_checks)."""
    from basicsr.utils.file_client import FileClient

    from kdsr_plugins.core import dataset_checks

    import sys

    from basicsr.utils import img_util

    original = img_util.imfrombytes
    FileClient.get = dataset_checks.recording_file_client_get(FileClient.get)
    for name, mod in list(sys.modules.items()):  # every BasicSR module holding its own reference
        if (name == 'basicsr.utils' or name.startswith('basicsr.data')) and getattr(mod, 'imfrombytes', None) is original:
            mod.imfrombytes = dataset_checks.imfrombytes
    img_util.imfrombytes = dataset_checks.imfrombytes
