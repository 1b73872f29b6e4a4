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

if "$VPY" -c "import torch, torchvision, basicsr, kdsr_plugins, skimage, pytest, spandrel, onnxruntime" >/dev/null 2>&1 \
   && [ -f "$VENV/.kdsr_installed" ] && [ "$VENV/.kdsr_installed" -nt setup.py ]; then
  exit 0
fi

echo "[install] installing pinned dependencies (CPU torch 2.13.0, torchvision 0.28.0)"
# torch must be pinned: an unpinned torch resolves to the newest CUDA build (several GB).
"$VPY" -m pip install -q -c constraints.txt \
  torch==2.13.0 torchvision==0.28.0 "setuptools>=70.1" wheel numpy opencv-python-headless \
  pyyaml lmdb requests "scipy<2" tqdm tensorboard scikit-image matplotlib pytest \
  safetensors einops typing_extensions onnx onnxruntime ml_dtypes flatbuffers
# spandrel (auto teachers) declares an unpinned torch requirement: installed without dependencies.
"$VPY" -m pip install -q -c constraints.txt --no-deps spandrel
# basicsr is an sdist whose setup_requires would pull a CUDA torch into an isolated build env.
"$VPY" -m pip install -q --no-deps --no-build-isolation basicsr==1.4.2
"$VPY" -m pip install -q --no-deps --no-build-isolation -e .
touch "$VENV/.kdsr_installed"
echo "[install] done: $VENV"
