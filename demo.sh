#!/usr/bin/env bash
# Command 1 of the README: install what is missing into .venv, then run the demo (main job).
# Extra arguments go to `python -m kdsr_plugins.demo` (e.g. --iters 300 --methods scratch,kd).
set -euo pipefail
cd "$(dirname "$0")"
bash install.sh
exec .venv/bin/python -m kdsr_plugins.demo "$@"
