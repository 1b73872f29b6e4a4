"""Run under torchrun: train from a YAML, then report what each rank did (tests/core/test_distributed_all_models.py).

Usage: torchrun --nproc_per_node 2 tests/ddp_hardening_check.py -opt X.yml --launcher pytorch --out result.json

Rank 0 writes a JSON object with, per rank (lists indexed by rank):

* ``checksums``: float64 sums of the student's and the auxiliary modules' parameters;
* ``local_losses``: each iteration's loss terms as computed on that rank (before reduction);
* ``logged``: each iteration's ``log_dict`` (what BasicSR logs; meaningful on rank 0);
* ``validations``: how many times ``nondist_validation`` (the actual evaluation) ran;
* ``metrics``: the metric results of the last evaluation (empty where none ran);

plus ``world_size``.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any

import kdsr_plugins  # noqa: F401  (top level, spawned workers re-import this module)

import torch
import torch.distributed as dist
from basicsr import train as basicsr_train
from ddp_train_check import checksums  # noqa: E402  (same folder: the script directory is on sys.path)

RECORD: dict[str, Any] = {'model': None, 'local_losses': [], 'logged': [], 'validations': 0, 'metrics': {}}


def _hooked_build_model(opt: dict) -> Any:
    from basicsr.models import build_model

    model = build_model(opt)
    RECORD['model'] = model
    reduce, evaluate = model.reduce_loss_dict, model.nondist_validation

    def recording_reduce(loss_dict: dict) -> dict:
        RECORD['local_losses'].append({k: float(v.detach().mean()) for k, v in loss_dict.items()})
        log = reduce(loss_dict)
        RECORD['logged'].append(dict(log))
        return log

    def counting_validation(*args: Any, **kwargs: Any) -> None:
        RECORD['validations'] += 1
        evaluate(*args, **kwargs)
        RECORD['metrics'] = {k: float(v) for k, v in getattr(model, 'metric_results', {}).items()}
    model.reduce_loss_dict = recording_reduce
    model.nondist_validation = counting_validation
    return model


def main() -> None:
    out = sys.argv[sys.argv.index('--out') + 1]
    del sys.argv[sys.argv.index('--out'):sys.argv.index('--out') + 2]
    basicsr_train.build_model = _hooked_build_model
    basicsr_train.train_pipeline(os.getcwd())
    mine = {'checksums': checksums(RECORD['model']), 'local_losses': RECORD['local_losses'],
            'logged': RECORD['logged'], 'validations': RECORD['validations'], 'metrics': RECORD['metrics']}
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, mine)
    if dist.get_rank() == 0:
        result = {key: [g[key] for g in gathered] for key in mine}
        result['world_size'] = dist.get_world_size()
        with open(out, 'w') as f:
            json.dump(result, f)
    # leave without interpreter teardown: see ddp_train_check.py (gloo threads may abort there)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == '__main__':
    torch.set_num_threads(1)
    main()
