"""Shared argv handling of the ``train`` / ``test`` entry points."""
from __future__ import annotations

import sys
from collections.abc import Callable


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


def user_error_types() -> tuple[type[BaseException], ...]:
    """Exceptions that report a user's mistake (options, data, checkpoints), printed without a traceback.

    ``ValueError`` covers the package's option, dataset (``DatasetOptionError``), start-up
    (``StartupError``), teacher-check and decode (``ImageDecodeError``) errors and PyYAML-free
    option errors; ``CheckpointError`` and ``RegistryNameError`` are listed explicitly.
    """
    import yaml

    from kdsr_plugins.compat.patches import RegistryNameError
    from kdsr_plugins.core.checkpoints import CheckpointError

    return (ValueError, CheckpointError, RegistryNameError, FileNotFoundError, yaml.YAMLError)


def user_error_message(err: BaseException) -> str:
    """The message of a user error; a DataLoader worker's re-raised error shows its original last line."""
    text = str(err).strip() or type(err).__name__
    if 'Original Traceback' in text:  # torch.utils.data re-raises worker errors with the traceback as text
        lines = [line for line in text.splitlines() if line.strip()]
        last = lines[-1]
        text = last.split(': ', 1)[1] if ': ' in last else last
    return text


def run_entry(pipeline: Callable[[], None], argv: list[str] | None = None) -> None:
    """Run a BasicSR pipeline: refused starts leave no folder behind; user errors print one message.

    An expected user error prints ``error: <what is wrong, how to fix>`` on stderr and exits with
    code 2; ``--debug`` (also BasicSR's debug mode) shows the traceback instead.
    """
    from kdsr_plugins.core.startup import startup_guard

    argv = sys.argv if argv is None else argv
    debug = '--debug' in argv
    try:
        with startup_guard():
            pipeline()
    except user_error_types() as err:
        if debug:
            raise
        print(f'error: {user_error_message(err)}', file=sys.stderr)
        print('(run with --debug for the traceback)', file=sys.stderr, flush=True)
        raise SystemExit(2) from None
