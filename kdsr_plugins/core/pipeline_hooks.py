"""The KD core's additions to BasicSR's training and test pipelines, installed by ``import kdsr_plugins``.

* exact resume: the train prefetchers fast-forward a resumed epoch and check SIGTERM at the end of
  each iteration (``core.resume``, ``core.preemption``); training states are read with
  ``core.checkpoints.load_training_state_file``; stale ``*.tmp<pid>`` files are removed when the
  resume state is looked up (through the hook lists of ``compat.patches.load_resume_state``);
* every option block checked at start-up (``parse_options``, see ``core.option_checks`` and
  docs/options.md), before BasicSR creates or archives any experiment folder;
* dataset blocks validated before BasicSR builds them (``build_dataset``, see
  ``core.dataset_checks``); an image that does not decode names its LMDB key or file
  (``imfrombytes``, ``FileClient.get``);
* start-up order (``core.startup``): pre-flight checks right after ``parse_options``, before any
  folder is made; ``mkdir_and_rename`` journaled so that a refused start is undone; start-up ends
  when the training loop's ``MessageLogger`` (train) or the model (test) exists.
"""
from __future__ import annotations

import importlib
import os
import os.path as osp
import sys
from typing import Any

from kdsr_plugins.compat import patches

_INSTALLED = False


def _remove_stale_temp_files(opt: dict) -> None:
    """Leftovers of killed atomic writes (docs/guarantees.md, preemption section), rank 0 only."""
    if opt.get('rank', 0) != 0:
        return
    from kdsr_plugins.core.preemption import remove_stale_temp_files
    root = opt.get('root_path', os.getcwd())
    exp = osp.join(root, 'experiments', opt['name'])
    folders = {opt['path'].get('models'), opt['path'].get('training_states'), osp.join(exp, 'models'),
               osp.join(exp, 'training_states')}
    if opt['path'].get('resume_state'):
        folders.add(osp.dirname(osp.abspath(opt['path']['resume_state'])))
    remove_stale_temp_files(sorted(f for f in folders if f))


def _schedule_resume(resume_state: dict, opt: dict) -> None:
    from kdsr_plugins.core.resume import schedule_resume
    schedule_resume(resume_state, rank=int(opt.get('rank', 0)), world_size=int(opt.get('world_size', 1)))


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

    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument('-opt', type=str, default=None)
    args, _ = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    return args.opt


def _checked_parse_options(parse_options: Any, preflight: bool = False) -> Any:
    """Wrap BasicSR's ``parse_options``: check the option file first, normalise numbers after.

    The file is loaded and checked (``core.option_checks``) before BasicSR's ``parse_options`` runs,
    so a refused start leaves no experiment folder behind; after it, numbers written as strings
    (``lr: 1e-4``, also from ``--force_yml``) are coerced in place. Read-but-ignored keys are printed
    (rank 0) as warnings: BasicSR's logger does not exist yet. With ``preflight`` (the train and test
    pipelines' references), ``core.startup.preflight`` then runs on the parsed options.
    """
    if getattr(parse_options, '_kdsr_checked', False):
        return parse_options

    def checked(root_path: str, is_train: bool = True) -> Any:
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
        if preflight:
            from kdsr_plugins.core.startup import preflight as run_preflight
            run_preflight(opt)
        return opt, args
    checked._kdsr_checked = True
    checked.__doc__ = parse_options.__doc__
    return checked


def install_pipeline_hooks() -> None:
    """Install the core's additions into BasicSR's module globals (once)."""
    global _INSTALLED
    if _INSTALLED:
        return
    from kdsr_plugins.core.checkpoints import load_training_state_file
    from kdsr_plugins.core.resume import PreemptibleCUDAPrefetcher, ResumablePrefetcher

    patches.STATE_FILE_LOADER[0] = load_training_state_file
    patches.BEFORE_RESUME_LOOKUP.append(_remove_stale_temp_files)
    patches.AFTER_RESUME_LOAD.append(_schedule_resume)
    basicsr_train = importlib.import_module('basicsr.train')
    basicsr_train.CPUPrefetcher = ResumablePrefetcher
    basicsr_train.CUDAPrefetcher = PreemptibleCUDAPrefetcher
    for module in ('basicsr.data', 'basicsr.train', 'basicsr.test'):  # each holds its own reference
        mod = importlib.import_module(module)
        mod.build_dataset = _checked_build_dataset(mod.build_dataset)
    for module in ('basicsr.utils.options', 'basicsr.train', 'basicsr.test'):
        mod = importlib.import_module(module)
        mod.parse_options = _checked_parse_options(mod.parse_options, preflight=module != 'basicsr.utils.options')
    _apply_startup_patches(basicsr_train)
    _apply_decode_patches()
    _INSTALLED = True


def _apply_startup_patches(basicsr_train: Any) -> None:
    """Journaled folder creation and end-of-start-up markers (pre-flight: ``_checked_parse_options``)."""
    from kdsr_plugins.core import startup

    basicsr_test = importlib.import_module('basicsr.test')
    for module in ('basicsr.utils.misc', 'basicsr.utils', 'basicsr.train'):
        importlib.import_module(module).mkdir_and_rename = startup.mkdir_and_rename
    basicsr_train.MessageLogger = startup.marking_start(basicsr_train.MessageLogger)
    basicsr_test.build_model = startup.marking_start(basicsr_test.build_model)


def _apply_decode_patches() -> None:
    """Undecodable images raise ``ImageDecodeError`` naming the LMDB key or file (core.dataset_checks)."""
    from basicsr.utils import img_util
    from basicsr.utils.file_client import FileClient

    from kdsr_plugins.core import dataset_checks

    original = img_util.imfrombytes
    FileClient.get = dataset_checks.recording_file_client_get(FileClient.get)
    for name, mod in list(sys.modules.items()):  # every BasicSR module holding its own reference
        in_basicsr = name == 'basicsr.utils' or name.startswith('basicsr.data')
        if in_basicsr and getattr(mod, 'imfrombytes', None) is original:
            mod.imfrombytes = dataset_checks.imfrombytes
    img_util.imfrombytes = dataset_checks.imfrombytes
