"""Shared argv handling of the ``train`` / ``test`` entry points."""
from __future__ import annotations

import sys


def normalise_launcher_argv(argv: list[str]) -> list[str]:
    """Rewrite ``--local-rank`` (current launchers) to BasicSR 1.4.2's ``--local_rank``."""
    out = []
    for arg in argv:
        if arg.startswith('--local-rank'):
            arg = '--local_rank' + arg[len('--local-rank'):]
        out.append(arg)
    return out


def prepare_argv() -> None:
    sys.argv = normalise_launcher_argv(sys.argv)
