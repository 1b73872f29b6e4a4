#!/usr/bin/env bash
# Command 2 of the README: install what is missing into .venv, then run the whole test suite
# (what CI runs). `--fast` skips the tests marked slow, subprocess or ddp (the developer loop).
# Other arguments go to pytest (e.g. -k resume -x). The exit code is pytest's.
# Usage: bash run_tests.sh [--fast] [PYTEST_ARGS...]
set -euo pipefail
cd "$(dirname "$0")"
ARGS=()
for arg in "$@"; do
  if [ "$arg" = "--fast" ]; then
    ARGS+=(-m "not slow and not subprocess and not ddp")
  else
    ARGS+=("$arg")
  fi
done
bash install.sh
exec .venv/bin/python -m pytest -q -p no:cacheprovider tests "${ARGS[@]}"
