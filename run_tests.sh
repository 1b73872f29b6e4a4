#!/usr/bin/env bash
# Command 2 of the README: install what is missing into .venv, then run the whole test suite.
# Extra arguments go to pytest (e.g. -k resume -x). A first argument --fast skips the tests marked
# slow, subprocess or ddp (the developer loop; CI and a plain run keep running everything).
set -euo pipefail
cd "$(dirname "$0")"
bash install.sh
if [ "${1:-}" = --fast ]; then shift; set -- -m 'not slow and not subprocess and not ddp' "$@"; fi
exec .venv/bin/python -m pytest -q -p no:cacheprovider tests "$@"
