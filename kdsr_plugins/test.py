"""Test entry point, BasicSR ``test.py`` semantics with the plugin registered.

Usage:
    python -m kdsr_plugins.test -opt options/test/KD/X.yml
Outputs go to ``results/<name>/`` under the current directory.

Refused before scoring (``error: ...``, exit code 2, no folder left): a ``scale`` that disagrees
with ``network_g`` or the data, and a missing ``path.pretrain_network_g`` unless
``path.allow_random_init: true`` (docs/guarantees.md, section 8).
"""
import os

import kdsr_plugins  # noqa: F401  (top level: spawned workers must re-register)

from basicsr.test import test_pipeline

from kdsr_plugins.cli_common import prepare_argv, run_entry


def main() -> None:
    prepare_argv()
    run_entry(lambda: test_pipeline(os.getcwd()))


if __name__ == '__main__':
    main()
