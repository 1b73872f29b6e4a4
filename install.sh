#!/usr/bin/env bash
# Create (or reuse) a local virtual environment with the pinned CPU stack, BasicSR 1.4.2 and
# kdsr_plugins (editable). Safe to re-run: it only installs what is missing.
# Usage: bash install.sh [VENV_DIR]   (default: .venv)
set -euo pipefail
cd "$(dirname "$0")"
VENV="${1:-${KDSR_VENV:-.venv}}"
PY="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[install] creating virtual environment in $VENV"
  "$PY" -m venv "$VENV"
fi
VPY="$VENV/bin/python"

if "$VPY" -c "import kdsr_plugins, torch, torchvision, basicsr, skimage, pytest" >/dev/null 2>&1 \
   && [ -f "$VENV/.kdsr_installed" ] && [ "$VENV/.kdsr_installed" -nt setup.py ]; then
  # start-up hook (import torchvision / basicsr without importing kdsr_plugins first), for older installs too
  "$VPY" -c "import torchvision" >/dev/null 2>&1 || "$VPY" -m kdsr_plugins --install-hook
  exit 0
fi

echo "[install] installing pinned dependencies (CPU torch 2.13.0, torchvision 0.28.0)"
# torch must be pinned: an unpinned torch resolves to the newest CUDA build (several GB).
"$VPY" -m pip install -q -c constraints.txt \
  torch==2.13.0 torchvision==0.28.0 "setuptools>=70.1" wheel numpy opencv-python-headless \
  pyyaml lmdb requests "scipy<2" tqdm tensorboard scikit-image matplotlib pytest
# basicsr is an sdist whose setup_requires would pull a CUDA torch into an isolated build env.
"$VPY" -m pip install -q --no-deps --no-build-isolation basicsr==1.4.2
"$VPY" -m pip install -q --no-deps --no-build-isolation -e .
# start-up hook: `import torchvision` / `import basicsr` work without importing kdsr_plugins first
"$VPY" -m kdsr_plugins --install-hook
touch "$VENV/.kdsr_installed"
echo "[install] done: $VENV"
