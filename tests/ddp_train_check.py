"""Run under torchrun: train a model from a YAML, then report parameter checksums per rank.

Usage: torchrun --nproc_per_node 2 tests/ddp_train_check.py -opt X.yml --launcher pytorch --out result.json
Rank r writes ``result.json.rank<r>`` = ``{"checksums": [...], "world_size": 2, "log": {...}}``
(``kdsr_testutils.run_ddp_check`` merges them). No collective runs after training and the
process leaves with ``os._exit``: gloo's background threads occasionally abort ("terminate called
without an active exception") during interpreter teardown on this CPU build, which would fail the
check after training has already succeeded.
"""
import json
import os
import sys

import kdsr_plugins  # noqa: F401  (top level, spawned workers re-import this module)

import torch.distributed as dist
from basicsr import train as basicsr_train

CAPTURED = []


def _capture_build_model(opt):
    from basicsr.models import build_model

    model = build_model(opt)
    CAPTURED.append(model)
    return model


def checksums(model) -> list[float]:
    nets = [model.get_bare_model(model.net_g)]
    if getattr(model, 'net_aux', None) is not None:
        nets.append(model.get_bare_model(model.net_aux))
    return [float(sum(p.detach().double().sum() for p in net.parameters())) for net in nets]


def main() -> None:
    out = sys.argv[sys.argv.index('--out') + 1]
    del sys.argv[sys.argv.index('--out'):sys.argv.index('--out') + 2]
    basicsr_train.build_model = _capture_build_model
    basicsr_train.train_pipeline(os.getcwd())
    model = CAPTURED[0]
    with open(f'{out}.rank{dist.get_rank()}', 'w') as f:
        json.dump({'checksums': checksums(model), 'world_size': dist.get_world_size(),
                   'log': getattr(model, 'log_dict', {})}, f)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == '__main__':
    main()
