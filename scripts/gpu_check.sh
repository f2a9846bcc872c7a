#!/usr/bin/env bash
# The GPU check (bench/gpu_check.py says what it runs) on an NVIDIA machine that has PyTorch and
# transformers. What AION needs beside them goes into a folder of its own, put first on PYTHONPATH
# (a venv would not see packages installed in the user site, and pip refuses to touch an "externally
# managed" system Python): from .gpu-wheels/ when that folder is there (offline; scripts/gpu_wheels.sh
# fills it on a machine with network), else from PyPI. Arguments go to bench/gpu_check.py
# (e.g. --out results.json; --dry-run for the CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TARGET=${GPU_CHECK_PACKAGES:-${TMPDIR:-/tmp}/aion-gpu-check-packages}
if [ ! -f "$TARGET/.installed" ]; then
  rm -rf "$TARGET"
  if [ -d .gpu-wheels ]; then
    "$PY" -m pip install -q --no-index --no-deps --target "$TARGET" .gpu-wheels/*.whl
  else
    "$PY" -m pip install -q --target "$TARGET" -r requirements/gpu-check.txt
    "$PY" -m pip install -q --no-deps --target "$TARGET" "bitsandbytes==0.50.2" "peft>=0.21,<0.22"
  fi
  touch "$TARGET/.installed"
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONPATH="$TARGET:$PWD"
exec "$PY" -m bench.gpu_check "$@"
