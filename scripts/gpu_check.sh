#!/usr/bin/env bash
# One-command GPU check of hwsim (issue 9 item 8), for a CUDA machine without network.
#
#   bash scripts/gpu_check.sh [--dry-run] [--out FILE] [--wheels DIR] [--size N] [--python PY]
#
# Runs hwsim from this source tree (PYTHONPATH=., nothing installed, pinned dependencies not
# needed) with the machine's own torch (CUDA build), triton, numba, numpy. Steps, each under its
# own time limit so that the whole stays under 6 minutes:
#   1. environment: GPU, versions; missing pure-Python test packages (pytest and its
#      dependencies) are installed offline from wheels in --wheels DIR (default ./wheels), if any.
#   2. the GPU-marked tests: tests/test_gpu.py (Triton exact GEMM bit-equal to the numba
#      reference at 512^3; torch CUDA paths of hwsim.formats equal to the numpy codec) and the
#      gpu-marked tests of tests/formats/test_backends.py when its imports are available.
#   3. the GPU benchmark: scripts/gpu_bench.py (Triton exact MXINT8 GEMM at 4096^3 against torch
#      bf16 matmul on the same GPU, as a ratio).
# Writes one results file (default gpu_check_<host>_<date>.json): environment, per-step status
# and seconds, test counts and failures, benchmark figures. Exit status 0 when every step passed.
#
# --dry-run prints the steps without running them (and checks the tools it would use).
# --cpu runs every step on CPU tensors (Triton in its interpreter, --size 64), to check this
# script on a machine without a GPU; its figures mean nothing.
# Preparing wheels beforehand, on a machine with network and the same Python version:
#   pip download --only-binary=:all: -d wheels pytest
set -u -o pipefail

DRY_RUN=0
CPU=0
OUT=""
WHEELS="wheels"
SIZE=4096
PY="${PYTHON:-python3}"
LIMIT_SETUP=30      # seconds per step: 2 x 30 + 220 + 70 = 350 s < 6 min (first numba
LIMIT_TESTS=220     # compiles included: a fresh machine has no kernel cache)
LIMIT_BENCH=70

while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY_RUN=1 ;;
        --cpu) CPU=1 ;;
        --out) OUT="$2"; shift ;;
        --wheels) WHEELS="$2"; shift ;;
        --size) SIZE="$2"; shift ;;
        --python) PY="$2"; shift ;;
        -h|--help) sed -n '2,/^set /{/^#/p}' "$0"; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 2
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONDONTWRITEBYTECODE=1
export NUMBA_CACHE_DIR="${NUMBA_CACHE_DIR:-${TMPDIR:-/tmp}/hwsim_numba_cache}"   # the tree may be read-only
export PY WHEELS
DEVICE=cuda
if [ "$CPU" = 1 ]; then
    DEVICE=cpu
    export HWSIM_GPU_TEST_DEVICE=cpu HWSIM_GPU_TEST_SIZE=${HWSIM_GPU_TEST_SIZE:-96} TRITON_INTERPRET=1
    [ "$SIZE" = 4096 ] && SIZE=64
    LIMIT_TESTS=900     # the Triton interpreter is slow; timing is not the point here
fi
export DEVICE
[ -n "$OUT" ] || OUT="gpu_check_$(hostname -s 2>/dev/null || echo host)_$(date +%Y%m%d_%H%M%S).json"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")"
T0=$(date +%s)

run_step() {  # run_step NAME LIMIT CMD...: runs CMD with a time limit, logs to $WORK/NAME.log
    local name="$1" limit="$2"; shift 2
    if [ "$DRY_RUN" = 1 ]; then
        echo "[dry-run] $name (limit ${limit}s): $*"
        echo "dry-run" > "$WORK/$name.status"; echo 0 > "$WORK/$name.seconds"
        return 0
    fi
    echo "== $name (limit ${limit}s)"
    local t rc
    t=$(date +%s)
    if declare -F "$1" >/dev/null; then   # a shell function: run it in a child bash
        set -- bash -c "$(declare -f "$1"); $1"
    fi
    timeout --kill-after=10 "$limit" "$@" > "$WORK/$name.log" 2>&1
    rc=$?
    echo $(( $(date +%s) - t )) > "$WORK/$name.seconds"
    if [ $rc -eq 0 ]; then echo passed > "$WORK/$name.status"
    elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then echo "timed out after ${limit}s" > "$WORK/$name.status"
    else echo "failed (exit $rc)" > "$WORK/$name.status"; fi
    tail -n 5 "$WORK/$name.log"
    return $rc
}

command -v timeout >/dev/null || { echo "gpu_check.sh: coreutils timeout is required" >&2; exit 2; }
command -v "$PY" >/dev/null || { echo "gpu_check.sh: $PY not found (use --python)" >&2; exit 2; }

# ---- 1. environment and offline wheels ------------------------------------------------------
setup() {
    "$PY" - <<'PYEOF'
import importlib, json, os, platform
out = {"python": platform.python_version()}
for mod in ("torch", "triton", "numba", "numpy", "pandas", "pytest"):
    try:
        out[mod] = importlib.import_module(mod).__version__
    except Exception as exc:
        out[mod] = f"missing ({type(exc).__name__})"
import torch
out["cuda_available"] = torch.cuda.is_available()
out["gpu"] = torch.cuda.get_device_name() if torch.cuda.is_available() else None
out["torch_cuda"] = torch.version.cuda
print(json.dumps(out))
if not torch.cuda.is_available() and os.environ.get("DEVICE") == "cuda":
    raise SystemExit("no CUDA device visible to torch")
PYEOF
}
install_wheels() {
    if "$PY" -c "import pytest" 2>/dev/null; then echo "pytest present"; return 0; fi
    if [ -d "$WHEELS" ] && ls "$WHEELS"/*.whl >/dev/null 2>&1; then
        "$PY" -m pip install --no-index --find-links "$WHEELS" --no-deps "$WHEELS"/*.whl
    else
        echo "pytest missing and no wheels in $WHEELS"; return 1
    fi
}
run_step wheels "$LIMIT_SETUP" install_wheels
run_step environment "$LIMIT_SETUP" setup

# ---- 2. GPU-marked tests --------------------------------------------------------------------
TEST_FILES="tests/test_gpu.py"
if [ "$DRY_RUN" = 1 ] || "$PY" -c "import hypothesis, ml_dtypes" 2>/dev/null; then
    TEST_FILES="$TEST_FILES tests/formats/test_backends.py"
fi
# shellcheck disable=SC2086
run_step gpu_tests "$LIMIT_TESTS" "$PY" -m pytest -q -m gpu -p no:cacheprovider -o addopts="" \
    --junitxml="$WORK/gpu_tests.xml" $TEST_FILES

# ---- 3. benchmark ---------------------------------------------------------------------------
run_step benchmark "$LIMIT_BENCH" "$PY" scripts/gpu_bench.py --size "$SIZE" --device "$DEVICE" \
    --out "$WORK/bench.json"

# ---- results file ---------------------------------------------------------------------------
TOTAL=$(( $(date +%s) - T0 ))
"$PY" - "$WORK" "$OUT" "$TOTAL" "$DRY_RUN" <<'PYEOF'
import json, pathlib, sys
import xml.etree.ElementTree as ET
work, out, total, dry = pathlib.Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
def read(name, default=None):
    p = work / name
    return p.read_text().strip() if p.exists() else default
res = {"dry_run": dry, "device": __import__("os").environ.get("DEVICE"), "total_seconds": total, "steps": {}}
for step in ("wheels", "environment", "gpu_tests", "benchmark"):
    res["steps"][step] = {"status": read(f"{step}.status", "not run"), "seconds": int(read(f"{step}.seconds", "0"))}
env = read("environment.log")
if env:
    try:
        res["environment"] = json.loads(env.splitlines()[0])
    except ValueError:
        res["environment"] = env[-2000:]
xml = work / "gpu_tests.xml"
if xml.exists():
    suites = ET.parse(xml).getroot()
    suites = [suites] if suites.tag == "testsuite" else list(suites)
    tot = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    tot["passed"] = tot["tests"] - tot["failures"] - tot["errors"] - tot["skipped"]
    tot["failed"] = [f"{c.get('classname')}::{c.get('name')}" for s in suites for c in s.iter("testcase")
                     if c.find("failure") is not None or c.find("error") is not None]
    res["gpu_tests"] = tot
bench = work / "bench.json"
if bench.exists():
    res["benchmark"] = json.loads(bench.read_text())
for step in ("gpu_tests", "benchmark"):
    if res["steps"][step]["status"] not in ("passed", "dry-run"):
        res.setdefault("logs", {})[step] = (read(f"{step}.log", "") or "")[-3000:]
pathlib.Path(out).write_text(json.dumps(res, indent=2) + "\n")
print(json.dumps({k: res[k] for k in ("steps", "total_seconds")}, indent=2))
print(f"results: {out}")
PYEOF
rc=0
for step in wheels environment gpu_tests benchmark; do
    st="$(cat "$WORK/$step.status" 2>/dev/null || echo 'not run')"
    [ "$st" = passed ] || [ "$st" = dry-run ] || rc=1
done
rm -rf "$WORK"
exit $rc
