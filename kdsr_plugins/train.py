"""Training entry point, BasicSR ``train.py`` semantics with the plugin registered.

Usage:
    python -m kdsr_plugins.train -opt options/train/KD/X.yml [--launcher pytorch] [--auto_resume] [--debug]
    torchrun --nproc_per_node 2 -m kdsr_plugins.train -opt X.yml --launcher pytorch
Outputs go to ``experiments/``, ``tb_logger/`` under the current directory.

Options, data, checkpoints and teachers are checked before the first iteration; a refused start
prints ``error: ...`` (exit code 2; ``--debug``: the traceback) and leaves no folder behind
(docs/guarantees.md, section 6).
"""
import os

import kdsr_plugins  # noqa: F401  (top level: spawned workers must re-register)
from basicsr.train import train_pipeline

from kdsr_plugins.cli_common import prepare_argv, run_entry


def main() -> None:
    prepare_argv()
    run_entry(lambda: train_pipeline(os.getcwd()))


if __name__ == '__main__':
    main()
