#!/usr/bin/env bash
# Command 2 of the README: install what is missing into .venv, then run the whole test suite.
# Extra arguments go to pytest (e.g. -k resume -x).
set -euo pipefail
cd "$(dirname "$0")"
bash install.sh
exec .venv/bin/python -m pytest -q -p no:cacheprovider tests "$@"
