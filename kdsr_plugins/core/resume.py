"""Bit-exact resume: random states in training states, and the resumed epoch's data order.

BasicSR resumes at the start of the saved epoch, so a resumed run sees the first batches of that
epoch again and continues from a different random state. Our models also store the random
states (Python, NumPy, torch, CUDA) at save time; on resume the patched prefetcher skips the
batches the interrupted run had already consumed in that epoch and then restores those states,
so the continuation sees the same batches and the same random draws as an uninterrupted run.
Validation is made random-neutral (it restores the states it found), so ``val_freq`` does not
perturb training. Under DDP every rank's random states are gathered to rank 0 and stored as the
list ``rng_ranks`` (index = rank); on resume rank k restores entry k, so DDP resume is bit-exact
too (same world size required; otherwise only the data position is restored, with a warning).

The prefetcher's ``next()`` (called at the end of every iteration) is also where a SIGTERM stop
is carried out (``kdsr_plugins.core.preemption.check_preemption``).
"""
from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from basicsr.data.prefetch_dataloader import CPUPrefetcher, CUDAPrefetcher
from basicsr.utils import get_root_logger

#: Set by ``load_resume_state`` and consumed by the first ``reset()`` of the train prefetcher.
_PENDING: dict[str, Any] | None = None


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy, torch (and CUDA) random states, in types ``weights_only`` loading accepts.

    NumPy's MT19937 key array is stored as an int64 tensor, so a training state holding these
    states loads with ``torch.load(..., weights_only=True)``.
    """
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {'python': random.getstate(), 'numpy': (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss,
                                                    cached), 'torch': torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of ``capture_rng_state`` (also accepts NumPy's own state tuple)."""
    random.setstate(state['python'])
    name, keys, pos, has_gauss, cached = state['numpy']
    keys = keys.cpu().numpy() if torch.is_tensor(keys) else np.asarray(keys)
    np.random.set_state((name, keys.astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state['torch'].cpu())
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state['cuda']])


def gather_rng_states() -> list[dict[str, Any]] | None:
    """Every rank's ``capture_rng_state()`` (index = rank) on all ranks; None without DDP. Collective."""
    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()):
        return None
    states: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(states, capture_rng_state())
    return states


def rng_state_for_rank(resume_state: dict[str, Any], rank: int, world_size: int) -> tuple[Any, str | None]:
    """The random states rank ``rank`` must restore, and a warning when they cannot be restored."""
    per_rank = resume_state.get('rng_ranks')
    if per_rank is not None:
        if len(per_rank) != world_size:
            return None, (f'the state holds the random states of {len(per_rank)} rank(s), this run has {world_size}; '
                          'only the data position is restored (not bit-exact).')
        return per_rank[rank], None
    rng = resume_state.get('rng')
    if rng is not None and world_size > 1:
        return None, ('the state was written by a single-process run; under DDP only the data position is '
                      'restored (not bit-exact).')
    return rng, None


def schedule_resume(resume_state: dict[str, Any], rank: int = 0, world_size: int = 1) -> None:
    """Remember where the interrupted run stood in its epoch (and this rank's random states, if saved)."""
    global _PENDING
    rng, warning = rng_state_for_rank(resume_state, rank, world_size)
    _PENDING = {'epoch': int(resume_state['epoch']), 'iter': int(resume_state['iter']), 'rng': rng,
                'warning': warning}


class ResumablePrefetcher(CPUPrefetcher):
    """``CPUPrefetcher`` that, after a resume, fast-forwards the first epoch to the saved position.

    Its ``next()`` runs at the end of every iteration: there a SIGTERM stop saves and exits.
    """

    def next(self) -> Any:
        from kdsr_plugins.core.preemption import check_preemption
        check_preemption(int(getattr(self.ori_loader.sampler, 'epoch', 0)))
        return super().next()

    def reset(self) -> None:
        global _PENDING
        super().reset()
        plan, _PENDING = _PENDING, None
        if plan is None:
            return
        per_epoch = len(self.ori_loader)
        done = plan['iter'] - plan['epoch'] * per_epoch
        logger = get_root_logger()
        if plan.get('warning'):
            logger.warning(f'Resume: {plan["warning"]}')
        if not 0 <= done <= per_epoch:
            logger.warning(f'Resume: iteration {plan["iter"]} is not inside epoch {plan["epoch"]} of {per_epoch} '
                           'batches (dataset or batch size changed?); data order is not restored.')
            return
        for _ in range(done):
            next(self.loader)
        if plan['rng'] is not None:
            restore_rng_state(plan['rng'])
        logger.info(f'Resume: skipped {done} already-trained batches of epoch {plan["epoch"]}'
                    f'{" and restored the random states" if plan["rng"] is not None else ""}.')


class PreemptibleCUDAPrefetcher(CUDAPrefetcher):
    """``CUDAPrefetcher`` (``prefetch_mode: cuda``) with the end-of-iteration SIGTERM check.

    The resumed epoch is not fast-forwarded here (only ``ResumablePrefetcher`` does that).
    """

    def next(self) -> Any:
        from kdsr_plugins.core.preemption import check_preemption
        check_preemption(int(getattr(self.ori_loader.sampler, 'epoch', 0)))
        return super().next()
