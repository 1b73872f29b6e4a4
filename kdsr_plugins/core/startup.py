"""Start-up guards: pre-flight checks right after option parsing, and the undo of a refused start.

BasicSR 1.4.2's ``train_pipeline`` parses the options, then creates (or archives, by renaming)
``experiments/<name>`` and ``tb_logger/<name>``, and only then builds the datasets and the model;
``test_pipeline`` does the same with ``results/<name>``. Two measures keep a refused start from
leaving anything behind (docs/guarantees.md, "Start-up guards"):

* **pre-flight** (``preflight``): BasicSR's ``parse_options`` is wrapped (``compat`` patch) so that
  the checks of ``PREFLIGHT_CHECKS`` (scale of network and data, checkpoints that exist, the
  dataset checks of ``core.dataset_checks``, and any check another module registers) run before
  any folder is made;
* **journal** (``StartupJournal``): the folders BasicSR creates or archives while the entry point
  runs are recorded; an error before the first training iteration (the model build with its
  teacher check, the resume) removes what this run created and renames archived folders back.
  Nothing that existed before the run is deleted.
"""
from __future__ import annotations

import os
import os.path as osp
import shutil
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from kdsr_plugins.core.options import arch_scale

#: ``path`` option (test entry): score a network that has no checkpoint, on purpose.
ALLOW_RANDOM_INIT_KEY = 'allow_random_init'


class StartupError(ValueError):
    """An option or input that cannot work, found before the first iteration."""


# ---------------------------------------------------------------------------------------------- journal
@dataclass
class StartupJournal:
    """Folders created / archived by this run while ``active``, undone by ``rollback`` before ``started``."""

    active: bool = False
    started: bool = False
    created: list[tuple[str, list[str]]] = field(default_factory=list)  # (folder, new parent folders)
    renamed: list[tuple[str, str]] = field(default_factory=list)  # (path, archived path)

    def reset(self, active: bool) -> None:
        self.active, self.started = active, False
        self.created, self.renamed = [], []

    def mark_started(self) -> None:
        """Start-up is over: from now on the run's folders are kept whatever happens."""
        self.started = True

    def rollback(self) -> list[str]:
        """Remove the folders this run created and rename archived ones back; returns what was done."""
        done = []
        for path, parents in reversed(self.created):
            if osp.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
                done.append(f'removed {path}')
            for parent in parents:  # only if empty: another run may have written there meanwhile
                try:
                    os.rmdir(parent)
                except OSError:
                    pass
        for path, archived in reversed(self.renamed):
            if osp.isdir(archived):
                if osp.isdir(path):
                    shutil.rmtree(path, ignore_errors=True)
                os.rename(archived, path)
                done.append(f'renamed {archived} back to {path}')
        self.created, self.renamed = [], []
        return done


JOURNAL = StartupJournal()


def mkdir_and_rename(path: str) -> None:
    """BasicSR's ``mkdir_and_rename`` (archive an existing folder, make a new one), journaled."""
    from basicsr.utils.misc import get_time_str

    record = JOURNAL.active and not JOURNAL.started
    if osp.exists(path):
        new_name = path + '_archived_' + get_time_str()
        print(f'Path already exists. Rename it to {new_name}', flush=True)
        os.rename(path, new_name)
        if record:
            JOURNAL.renamed.append((path, new_name))
        os.makedirs(path, exist_ok=True)
        return
    parents, parent = [], osp.dirname(osp.abspath(path))
    while parent and not osp.exists(parent):
        parents.append(parent)
        parent = osp.dirname(parent)
    os.makedirs(path, exist_ok=True)
    if record:
        JOURNAL.created.append((path, parents))


@contextmanager
def startup_guard() -> Iterator[StartupJournal]:
    """Journal the entry point's folders; on an error before ``mark_started``, undo them and re-raise."""
    JOURNAL.reset(active=True)
    try:
        yield JOURNAL
    except BaseException:
        if not JOURNAL.started:
            for line in JOURNAL.rollback():
                print(f'[kdsr] refused start: {line}', file=sys.stderr, flush=True)
        raise
    finally:
        JOURNAL.reset(active=False)


# ---------------------------------------------------------------------------------------------- pre-flight
def check_scales(opt: Mapping[str, Any]) -> None:
    """``scale`` must equal the upscale of ``network_g`` (when it declares one)."""
    if 'scale' not in opt or not isinstance(opt.get('network_g'), Mapping):
        return
    scale, net_scale = int(opt['scale']), arch_scale(opt['network_g'])
    if net_scale is not None and net_scale != scale:
        raise StartupError(f'scale is {scale} but network_g ({opt["network_g"].get("type")}) upscales x{net_scale}: '
                           f'set scale: {net_scale} (the data must be x{net_scale} too), or use an x{scale} network.')


def check_checkpoints(opt: Mapping[str, Any]) -> None:
    """Every ``path.pretrain_network_*`` and ``teachers[].pretrain`` that is set must be a file
    (``pretrain_network_g`` not when resuming: BasicSR then loads the run's own checkpoint; the test
    entry checks ``pretrain_network_g`` only).

    The test entry also needs ``path.pretrain_network_g`` unless ``path.allow_random_init: true``
    says that a randomly initialised network is to be scored.
    """
    path_opt = opt.get('path') or {}
    training = opt.get('is_train', True)
    resuming = training and (opt.get('auto_resume') or path_opt.get('resume_state'))
    if training:  # a test needs only network_g (a model that runs teachers at test time checks their files)
        wanted = [(f'path.{k}', v) for k, v in path_opt.items() if k.startswith('pretrain_network') and v
                  and not (resuming and k == 'pretrain_network_g')]  # a resume replaces it with the run's own
    else:
        wanted = [('path.pretrain_network_g', path_opt['pretrain_network_g'])] if path_opt.get(
            'pretrain_network_g') else []
    for i, entry in enumerate(opt.get('teachers') or [] if training else []):
        if isinstance(entry, Mapping) and entry.get('pretrain'):
            wanted.append((f'teachers[{i}].pretrain', entry['pretrain']))
    for key, value in wanted:
        value = osp.expanduser(str(value))
        if not osp.isfile(value):
            raise StartupError(f'{key}: checkpoint not found: {value!r} (relative paths are resolved from the '
                               f'current directory {os.getcwd()!r}).')
    if opt.get('is_train', True):
        return
    allow = path_opt.get(ALLOW_RANDOM_INIT_KEY, False)
    if not path_opt.get('pretrain_network_g') and not allow:
        raise StartupError('path.pretrain_network_g is not set: the test would score a randomly initialised '
                           f'{(opt.get("network_g") or {}).get("type", "network")}. Set it to the checkpoint to '
                           f'test, or add path.{ALLOW_RANDOM_INIT_KEY}: true if random weights are meant.')


def pop_allow_random_init(opt: dict) -> bool:
    """Remove ``path.allow_random_init`` (BasicSR's ``make_exp_dirs`` would make a folder of every path key)."""
    path_opt = opt.get('path')
    if not isinstance(path_opt, dict) or ALLOW_RANDOM_INIT_KEY not in path_opt:
        return False
    value = path_opt.pop(ALLOW_RANDOM_INIT_KEY)
    if not isinstance(value, bool):
        raise StartupError(f'path.{ALLOW_RANDOM_INIT_KEY}: expected true/false, got {value!r}.')
    return value


def check_datasets(opt: Mapping[str, Any]) -> None:
    """The start-up dataset checks of ``core.dataset_checks`` on every dataset block."""
    from kdsr_plugins.core.dataset_checks import check_dataset_opt

    for dataset_opt in (opt.get('datasets') or {}).values():
        if isinstance(dataset_opt, Mapping):
            check_dataset_opt(dataset_opt)


#: Checks run by ``preflight`` in order, each ``check(opt)`` raising a ``ValueError`` on bad input.
#: Other modules append theirs (e.g. option-key checks); they run before any folder is made.
PREFLIGHT_CHECKS: list[Callable[[dict], None]] = [check_scales, check_checkpoints, check_datasets]


def preflight(opt: dict) -> None:
    """Run every pre-flight check on the parsed options (before BasicSR creates any folder)."""
    allow = pop_allow_random_init(opt)
    if allow:
        opt.setdefault('path', {})[ALLOW_RANDOM_INIT_KEY] = True  # for check_checkpoints, removed again below
    try:
        for check in PREFLIGHT_CHECKS:
            check(opt)
    finally:
        (opt.get('path') or {}).pop(ALLOW_RANDOM_INIT_KEY, None)
    if allow and not (opt.get('path') or {}).get('pretrain_network_g'):
        print(f'[kdsr] path.{ALLOW_RANDOM_INIT_KEY}: true: network_g keeps its random initialisation.', flush=True)


def marking_start(factory: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a callable (BasicSR's ``MessageLogger`` / test ``build_model``) to end start-up once it returns."""
    if getattr(factory, '_kdsr_marks_start', False):
        return factory

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = factory(*args, **kwargs)
        JOURNAL.mark_started()
        return result
    wrapper._kdsr_marks_start = True  # type: ignore[attr-defined]
    wrapper.__doc__ = factory.__doc__
    return wrapper
