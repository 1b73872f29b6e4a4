#!/usr/bin/env bash
# GPU check of the package on one CUDA device (about 8 minutes at most): every model type under
# train.amp off / bf16 / fp16, the train and test entry points, CUDA resume and a 1-process nccl
# torchrun (bench/gpu_check.py). Figures go to bench/results/gpu.md; any error exits non-zero with a
# "FAILED: <step>: <reason>" line.
#
# Usage: bash bench/gpu_check.sh [extra bench/gpu_check.py arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0}
if ! timeout 480 "$PYTHON" bench/gpu_check.py --device cuda --amp off,bf16,fp16 "$@"; then
    echo "FAILED: bench/gpu_check.sh (see the FAILED line above; exit status 124 = the 8-minute limit)" >&2
    exit 1
fi
echo "gpu_check: passed, figures in bench/results/gpu.md"
