"""``python -m kdsr_plugins.train`` with fault-injection hooks, for tests/core/test_fault_tolerance.py.

Usage: python tests/fault_train.py -opt X.yml [--auto_resume]   (same arguments as kdsr_plugins.train)

Environment variables (all optional; without them this is exactly ``kdsr_plugins.train``):

* ``KDSR_FAULT_PAUSE=step:<k>``: stop after the optimizer step of iteration ``k`` (before that
  iteration's save), write ``KDSR_FAULT_MARKER`` and sleep until killed.
* ``KDSR_FAULT_PAUSE=write:<file name>``: stop inside the real ``atomic_torch_save`` of that file
  (e.g. ``4.state``, ``net_g_4.pth``), after the temporary file is written and before
  ``os.replace`` publishes it, write the marker and sleep until killed: a kill "during
  checkpoint writing", deterministically.
* ``KDSR_FAULT_PAUSE=term:<k>``: after the optimizer step of iteration ``k`` write the marker
  and wait (on rank 0 only) until SIGTERM has been received, then carry on: the run must then
  stop at the end of iteration ``k`` with a resumable state (preemption tests).
* ``KDSR_FAULT_DUMP=<path>``: after ``model.resume_training``, save what the model holds (bare
  student, EMA, auxiliary modules, optimizer and scheduler state dicts, the resumed iteration)
  to ``path`` for comparison with the checkpoint files.

The test sends SIGKILL once the marker exists; the sleep is bounded so that a process left
behind by an aborted test ends by itself.
"""
from __future__ import annotations

import os
import os.path as osp
import time
from typing import Any

import kdsr_plugins  # noqa: F401  (top level: spawned workers must re-register)

import torch
from basicsr import train as basicsr_train

from kdsr_plugins.core import checkpoints
from kdsr_plugins.train import main as train_main

PAUSE_SECONDS = 300


def pause_here(where: str) -> None:
    """Announce the pause through the marker file, then wait to be killed."""
    marker = os.environ['KDSR_FAULT_MARKER']
    with open(marker + '.part', 'w') as f:
        f.write(where)
    os.replace(marker + '.part', marker)
    time.sleep(PAUSE_SECONDS)
    raise SystemExit(f'fault_train: not killed within {PAUSE_SECONDS} s at {where}')


def wait_for_sigterm(where: str) -> None:
    """Announce the pause through the marker file, then wait until the SIGTERM handler has run."""
    from kdsr_plugins.core import preemption

    marker = os.environ['KDSR_FAULT_MARKER']
    with open(marker + '.part', 'w') as f:
        f.write(f'{where} pid {os.getpid()}')
    os.replace(marker + '.part', marker)
    deadline = time.monotonic() + PAUSE_SECONDS
    while not preemption._STATE['requested']:
        if time.monotonic() > deadline:
            raise SystemExit(f'fault_train: no SIGTERM within {PAUSE_SECONDS} s at {where}')
        time.sleep(0.02)


class _PausingOs:
    """Stands in for ``os`` inside ``kdsr_plugins.core.checkpoints``: pauses before one ``os.replace``."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def replace(self, src: str, dst: str) -> None:
        if osp.basename(dst) == self.target:
            assert osp.isfile(src) and src != dst
            pause_here(f'write {dst} (temporary file {osp.basename(src)} written, not yet replaced)')
        os.replace(src, dst)


def _model_snapshot(model: Any, resume_state: dict) -> dict:
    bare = model.get_bare_model
    snap = {'iter': int(resume_state['iter']), 'epoch': int(resume_state['epoch']),
            'params': bare(model.net_g).state_dict(),
            'optimizers': [o.state_dict() for o in model.optimizers],
            'schedulers': [s.state_dict() for s in model.schedulers]}
    if hasattr(model, 'net_g_ema'):
        snap['params_ema'] = model.net_g_ema.state_dict()
    if getattr(model, 'net_aux', None) is not None:
        snap['aux'] = bare(model.net_aux).state_dict()
    return snap


def install_hooks() -> None:
    """Install the hooks the environment asks for."""
    pause = os.environ.get('KDSR_FAULT_PAUSE')
    dump = os.environ.get('KDSR_FAULT_DUMP')
    pause_iter = None
    wait_iter = None
    if pause:
        kind, _, arg = pause.partition(':')
        if kind == 'write':
            checkpoints.os = _PausingOs(arg)
        elif kind == 'step':
            pause_iter = int(arg)
        elif kind == 'term':
            wait_iter = int(arg) if os.environ.get('RANK', '0') == '0' else None
        else:
            raise ValueError(f'KDSR_FAULT_PAUSE: unknown kind {kind!r}')
    build_model = basicsr_train.build_model

    def build_and_hook(opt: dict) -> Any:
        model = build_model(opt)
        if pause_iter is not None or wait_iter is not None:
            optimize = model.optimize_parameters

            def optimize_then_pause(current_iter: int) -> None:
                optimize(current_iter)
                if current_iter == pause_iter:
                    pause_here(f'step {current_iter}')
                if current_iter == wait_iter:
                    wait_for_sigterm(f'step {current_iter}')
            model.optimize_parameters = optimize_then_pause
        if dump:
            resume = model.resume_training

            def resume_then_dump(resume_state: dict) -> None:
                resume(resume_state)
                torch.save(_model_snapshot(model, resume_state), dump)
            model.resume_training = resume_then_dump
        return model
    basicsr_train.build_model = build_and_hook


if __name__ == '__main__':
    install_hooks()
    train_main()
