#!/usr/bin/env bash
# Downloads, on a machine with network, the wheels the GPU check needs beside a machine's own PyTorch and
# transformers, into .gpu-wheels/ (git-ignored), for an offline NVIDIA machine: carry that folder along and
# scripts/gpu_check.sh installs from it. PYVER: the GPU machine's Python (default 3.12).
set -euo pipefail
cd "$(dirname "$0")/.."
PYVER=${PYVER:-3.12}
PIP="${PIP:-python3 -m pip}"
DEST=.gpu-wheels
rm -rf "$DEST" && mkdir -p "$DEST"
target=(--only-binary=:all: --python-version "$PYVER" --implementation cp
        --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64
        --platform manylinux_2_24_x86_64 --platform any)
# The service's web stack and settings, with their own dependencies (none of them pulls torch).
$PIP download -q -d "$DEST" "${target[@]}" -r requirements/gpu-check.txt
# bitsandbytes and peft without their dependencies (torch, transformers, numpy...: the machine has them).
$PIP download -q -d "$DEST" "${target[@]}" --no-deps "bitsandbytes==0.50.2" "peft>=0.21,<0.22"
du -sh "$DEST"
