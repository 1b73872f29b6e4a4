"""Training entry point, BasicSR ``train.py`` semantics with the plugin registered.

Usage:
    python -m kdsr_plugins.train -opt options/train/KD/X.yml [--launcher pytorch] [--auto_resume] [--debug]
    torchrun --nproc_per_node 2 -m kdsr_plugins.train -opt X.yml --launcher pytorch
Outputs go to ``experiments/``, ``tb_logger/`` under the current directory.

SIGTERM (sent by SLURM and Kubernetes before a kill) stops the run at the end of the current
iteration with a checkpoint and a resumable training state, exit status 143; ``--auto_resume``
continues from it. A finished distributed run ends with a barrier and ``destroy_process_group``
(docs/guarantees.md, "Preemption and distributed exits").

Options, data, checkpoints and teachers are checked before the first iteration; a refused start
prints ``error: ...`` (exit code 2; ``--debug``: the traceback) and leaves no folder behind
(docs/guarantees.md, section 8).
"""
import os
import sys

import kdsr_plugins  # noqa: F401,I001  (first: installs the shims basicsr needs; spawned workers re-register)

from basicsr.train import train_pipeline

from kdsr_plugins.cli_common import prepare_argv, run_entry
from kdsr_plugins.core.preemption import (
    TrainingPreempted,
    finish_distributed,
    install_sigterm_handler,
    uninstall_sigterm_handler,
)


def main() -> None:
    prepare_argv()
    run_entry(_train_until_done_or_preempted)


def _train_until_done_or_preempted() -> None:
    install_sigterm_handler()
    try:
        train_pipeline(os.getcwd())
    except TrainingPreempted as stop:
        finish_distributed()
        sys.stdout.flush()
        sys.stderr.flush()
        raise SystemExit(stop.code) from None
    finally:
        uninstall_sigterm_handler()
    finish_distributed()


if __name__ == '__main__':
    main()
