"""Run under torchrun: train a model from a YAML, then all-gather parameter checksums.

Usage: torchrun --nproc_per_node 2 tests/ddp_train_check.py -opt X.yml --launcher pytorch --out result.json
Rank 0 writes ``{"checksums": [[...rank0...], [...rank1...]], "world_size": 2}``.
"""
import json
import os
import sys

import kdsr_plugins  # noqa: F401  (top level, spawned workers re-import this module)
import torch
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
    local = torch.tensor(checksums(model), dtype=torch.float64)
    gathered = [torch.zeros_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, local)
    if dist.get_rank() == 0:
        with open(out, 'w') as f:
            json.dump({'checksums': [g.tolist() for g in gathered], 'world_size': dist.get_world_size(),
                       'log': getattr(model, 'log_dict', {})}, f)
    dist.destroy_process_group()


if __name__ == '__main__':
    main()
