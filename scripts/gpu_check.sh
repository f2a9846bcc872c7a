#!/usr/bin/env bash
# The GPU check (bench/gpu_check.py says what it runs) on an NVIDIA machine that has PyTorch and
# transformers: a venv over the machine's own packages, plus what AION needs beside them — from
# .gpu-wheels/ when that folder is there (offline: scripts/gpu_wheels.sh fills it elsewhere), else from
# PyPI. Arguments go to bench/gpu_check.py (e.g. --out results.json; --dry-run for the CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${GPU_CHECK_VENV:-${TMPDIR:-/tmp}/aion-gpu-check-venv}
[ -x "$VENV/bin/python" ] || "$PY" -m venv --system-site-packages "$VENV"
needs=(fastapi uvicorn sse-starlette pydantic-settings prometheus-client httpx "peft>=0.21,<0.22" "bitsandbytes==0.50.2")
if [ -d .gpu-wheels ]; then
  "$VENV/bin/python" -m pip install -q --no-index --find-links .gpu-wheels "${needs[@]}"
else
  "$VENV/bin/python" -m pip install -q -r requirements/gpu-check.txt "bitsandbytes==0.50.2"
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONPATH="$PWD"
exec "$VENV/bin/python" -m bench.gpu_check "$@"
