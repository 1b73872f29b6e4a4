"""Preemption (SIGTERM), clean distributed shutdown and removal of stale temporary checkpoint files.

See docs/guarantees.md, "Preemption and distributed exits". In short:

* ``install_sigterm_handler`` (called by ``python -m kdsr_plugins.train`` on every rank) makes
  SIGTERM set a flag instead of killing the process.
* At the end of every iteration (the patched train prefetcher's ``next()``, see
  ``kdsr_plugins.core.resume``) ``check_preemption`` asks whether any rank got the signal (one
  ``all_reduce`` under DDP, so all ranks stop at the same iteration); if so the model saves a
  checkpoint and a resumable training state of the iteration just finished, the run logs it and
  raises ``TrainingPreempted`` (exit status 143 = 128 + SIGTERM, "terminated by SIGTERM").
* ``finish_distributed`` ends the entry point with a barrier and ``destroy_process_group``.
* ``remove_stale_temp_files`` deletes ``<file>.tmp<pid>`` files (left by killed atomic writes)
  whose writer process no longer exists.
"""
from __future__ import annotations

import os
import os.path as osp
import re
import signal
import threading
from typing import Any

import torch

#: Exit status of a run stopped by SIGTERM after saving a resumable state (128 + SIGTERM).
PREEMPTED_EXIT_CODE = 128 + int(signal.SIGTERM)
#: Temporary files of ``kdsr_plugins.core.checkpoints.atomic_torch_save``: ``<name>.tmp<pid>``.
TEMP_FILE_RE = re.compile(r'^(?P<target>.+)\.tmp(?P<pid>\d+)$')

_STATE: dict[str, Any] = {'installed': False, 'requested': False, 'previous': None, 'model': None, 'removed': []}


class TrainingPreempted(SystemExit):
    """Raised at the end of an iteration after SIGTERM, once the resumable state is written."""

    def __init__(self, current_iter: int | None) -> None:
        super().__init__(PREEMPTED_EXIT_CODE)
        self.current_iter = current_iter


def _on_sigterm(signum: int, frame: Any) -> None:
    _STATE['requested'] = True


def install_sigterm_handler() -> bool:
    """Make SIGTERM request a stop at the end of the current iteration (main thread only).

    Returns:
        Whether the handler was installed (signal handlers need the main thread).
    """
    _STATE['requested'] = False
    if threading.current_thread() is not threading.main_thread():
        return False
    if not _STATE['installed']:
        _STATE['previous'] = signal.signal(signal.SIGTERM, _on_sigterm)
        _STATE['installed'] = True
    return True


def uninstall_sigterm_handler() -> None:
    """Restore the SIGTERM handler found by ``install_sigterm_handler`` and forget the model."""
    if _STATE['installed'] and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _STATE['previous'] or signal.SIG_DFL)
    _STATE.update(installed=False, requested=False, previous=None, model=None)


def request_stop() -> None:
    """What the SIGTERM handler does (for callers that catch the signal themselves)."""
    _STATE['requested'] = True


def register_training_model(model: Any) -> None:
    """Remember the model being trained, so the end-of-iteration check can save it.

    Also logs the stale temporary files removed at start (the logger is ready by now; BasicSR's
    root logger must not be created before ``train_pipeline`` sets up its log file).
    """
    _STATE['model'] = model
    removed, _STATE['removed'] = _STATE['removed'], []
    if removed:
        from basicsr.utils import get_root_logger
        get_root_logger().info(f'Removed {len(removed)} stale temporary file(s) of interrupted checkpoint writes: '
                               f'{[osp.basename(p) for p in removed]}')


def _dist_ready() -> bool:
    import torch.distributed as dist
    return dist.is_available() and dist.is_initialized()


def stop_requested(device: torch.device | str = 'cpu') -> bool:
    """Whether SIGTERM reached this process or, under DDP, any rank (collective: call on all ranks)."""
    flag = bool(_STATE['requested'])
    if not _dist_ready():
        return flag
    import torch.distributed as dist
    tensor = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item() > 0)


def check_preemption(epoch: int) -> None:
    """End-of-iteration hook: after SIGTERM, save a resumable state of the last iteration and stop.

    Does nothing unless the handler is installed (so in-process runs and tests are unaffected).
    All ranks call it at the same point; the saving is collective (per-rank random states).

    Raises:
        TrainingPreempted: A stop was requested; the state of the last finished iteration is saved.
    """
    if not _STATE['installed']:
        return
    model = _STATE['model']
    device = getattr(model, 'device', 'cpu')
    if not stop_requested(device):
        return
    from basicsr.utils import get_root_logger
    logger = get_root_logger()
    current_iter = getattr(model, 'last_started_iter', None) if model is not None else None
    if current_iter is None:
        logger.warning('SIGTERM received before the first iteration of this run: nothing new to save; exiting '
                       f'with status {PREEMPTED_EXIT_CODE}.')
        raise TrainingPreempted(None)
    logger.warning(f'SIGTERM received: saving the checkpoint and training state of iteration {current_iter} '
                   f'(epoch {epoch}), then exiting with status {PREEMPTED_EXIT_CODE}. Continue with --auto_resume.')
    model.save(epoch, current_iter)
    logger.info(f'Preempted at iteration {current_iter}: resumable state saved.')
    raise TrainingPreempted(current_iter)


def finish_distributed() -> None:
    """Barrier, then ``destroy_process_group`` (no-op without an initialised process group)."""
    if not _dist_ready():
        return
    import gc

    import torch.distributed as dist
    try:
        dist.barrier()
    finally:
        gc.collect()  # drop unreachable DDP wrappers (their reducers hold the process group) first
        dist.destroy_process_group()


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temp_files(folders: list[str]) -> list[str]:
    """Delete ``<file>.tmp<pid>`` files in ``folders`` whose writing process is gone.

    Only names matching our temporary pattern are touched; a file whose pid is alive on this
    host (possibly a concurrent writer) is kept.

    Returns:
        The removed paths.
    """
    removed = []
    for folder in folders:
        if not folder or not osp.isdir(folder):
            continue
        for fname in sorted(os.listdir(folder)):
            match = TEMP_FILE_RE.match(fname)
            path = osp.join(folder, fname)
            if match is None or not osp.isfile(path) or pid_alive(int(match.group('pid'))):
                continue
            try:
                os.remove(path)
            except FileNotFoundError:
                continue
            removed.append(path)
    _STATE['removed'] = _STATE['removed'] + removed
    return removed
