#!/usr/bin/env bash
# Create (or reuse) a local virtual environment with the pinned CPU stack, BasicSR 1.4.2 and
# kdsr_plugins (editable). Safe to re-run: when the environment was installed from the same
# pyproject.toml and constraints.txt and imports, it returns in seconds without calling pip.
# Usage: bash install.sh [VENV_DIR]   (default: .venv)
set -euo pipefail
cd "$(dirname "$0")"
VENV="${1:-${KDSR_VENV:-.venv}}"
PY="${PYTHON:-python3}"
STAMP="$VENV/.kdsr_installed"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[install] creating virtual environment in $VENV"
  "$PY" -m venv "$VENV"
fi
VPY="$VENV/bin/python"

# What the install depends on: the package metadata, the pins and this recipe (content, not mtimes,
# so a fresh checkout or a branch switch that leaves them unchanged does not reinstall).
WANT="$(cat pyproject.toml constraints.txt install.sh | "$VPY" -c 'import hashlib,sys;print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())')"

# Fast check (no pip, no torch import): every pin of constraints.txt is the installed version, the
# other packages are present, and kdsr_plugins resolves to this checkout (the editable install).
installed() {
  [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] || return 1
  env -u PYTHONPATH "$VPY" - "$PWD" >/dev/null 2>&1 <<'PYEOF'
import os.path as osp
import sys
from importlib.metadata import PackageNotFoundError, version
from importlib.util import find_spec

root = sys.argv[1]
try:
    for line in open(osp.join(root, 'constraints.txt')):
        name, _, pinned = line.split('#')[0].strip().partition('==')
        if name and version(name).split('+')[0] != pinned:  # 2.13.0+cpu satisfies ==2.13.0
            sys.exit(1)
except PackageNotFoundError:
    sys.exit(1)
mods = ('basicsr', 'numpy', 'cv2', 'yaml', 'lmdb', 'scipy', 'skimage', 'matplotlib', 'tensorboard', 'pytest', 'spandrel', 'onnxruntime')
spec = find_spec('kdsr_plugins')  # locates the package without importing it (no torch import)
ok = spec is not None and spec.origin is not None and all(find_spec(m) is not None for m in mods)
sys.exit(0 if ok and osp.realpath(spec.origin) == osp.realpath(osp.join(root, 'kdsr_plugins', '__init__.py')) else 1)
PYEOF
}

if installed; then
  exit 0
fi

echo "[install] installing pinned dependencies (CPU torch 2.13.0, torchvision 0.28.0)"
# torch must be pinned: an unpinned torch resolves to the newest CUDA build (several GB).
"$VPY" -m pip install -q -c constraints.txt \
  torch==2.13.0 torchvision==0.28.0 "setuptools>=70.1" wheel numpy opencv-python-headless \
  pyyaml lmdb requests "scipy<2" tqdm tensorboard scikit-image matplotlib pytest ruff \
  safetensors einops typing_extensions onnx onnxruntime ml_dtypes flatbuffers
# spandrel (auto teachers) declares an unpinned torch requirement: installed without dependencies.
"$VPY" -m pip install -q -c constraints.txt --no-deps spandrel
# basicsr is an sdist whose setup_requires would pull a CUDA torch into an isolated build env.
"$VPY" -m pip install -q --no-deps --no-build-isolation basicsr==1.4.2
"$VPY" -m pip install -q --no-deps --no-build-isolation -e .
# The full check once, after pip: kdsr_plugins imports (shims, then torch, torchvision, basicsr).
env -u PYTHONPATH "$VPY" -c 'import kdsr_plugins' || {
  echo "[install] error: $VPY cannot import kdsr_plugins after installing" >&2
  exit 1
}
# start-up hook: `import torchvision` / `import basicsr` work without importing kdsr_plugins first
"$VPY" -m kdsr_plugins --install-hook
echo "$WANT" > "$STAMP"
if ! installed; then
  echo "[install] error: the environment in $VENV does not match constraints.txt or this checkout" >&2
  exit 1
fi
echo "[install] done: $VENV"
