"""Throughput of hwsim.formats.fake_quant (numba path) vs a numpy copy and vs the torch path.

Issue 2 targets, on 32M float32 elements with block 32 along the last axis: numba fake_quant at
>= 0.5x the rate of a numpy copy of the same array for mxint8 and >= 0.3x for the MXFP formats, and
>= 5x the project's own torch path on CPU. Two like-for-like pairs are timed: ``fake_quant(x,
out=dst)`` against ``np.copyto(dst, x)`` (both write into a warm preallocated buffer), and
``fake_quant(x)`` against ``x.copy()`` (both allocate their result, so both pay the kernel's
page-zeroing of fresh memory). The mixed ratio (allocating fake_quant vs np.copyto) is printed too.
Also times ``block_scales`` (the scale codes alone) against ``quantize`` (codes and scales).
Also reports the first-call compile time (fresh subprocess, empty NUMBA cache) and the cached
first-call time (second subprocess, same cache). All ratios come from one run.

    python benchmarks/bench_formats.py [--n 33554432] [--reps 3] [--torch-reps 1]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

FORMATS = ("mxint8", "mxfp8_e4m3", "mxfp4_e2m1")
TARGET_COPY = {"mxint8": 0.5, "mxfp8_e4m3": 0.3, "mxfp4_e2m1": 0.3}
TARGET_TORCH = 5.0
SCALE_FORMATS = ("mxint4", "mxint8")

_COLD_SNIPPET = """
import time
t0 = time.perf_counter()
import numpy as np
import hwsim.formats as F
t1 = time.perf_counter()
x = np.random.default_rng(0).standard_normal((8, 64)).astype(np.float32)
for name in {formats!r}:
    F.fake_quant(x, name)
t2 = time.perf_counter()
print(f"{{t1 - t0:.3f}} {{t2 - t1:.3f}}")
"""


def best_time(fn, reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def first_call_times(formats) -> tuple[tuple[float, float], tuple[float, float]]:
    """(import s, first fake_quant calls s) in a fresh process with an empty numba cache, then again
    in a second process that reuses that cache."""
    code = _COLD_SNIPPET.format(formats=tuple(formats))
    with tempfile.TemporaryDirectory(prefix="hwsim_numba_cache_") as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        out = []
        for _ in range(2):
            r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
            imp, call = (float(v) for v in r.stdout.split()[-2:])
            out.append((imp, call))
    return out[0], out[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=32 * 2 ** 20, help="elements (default 32M)")
    ap.add_argument("--k", type=int, default=1024, help="last-axis length (blocks of 32 along it)")
    ap.add_argument("--reps", type=int, default=3, help="repetitions (best time) for numpy/numba")
    ap.add_argument("--torch-reps", type=int, default=1, help="repetitions for the torch path")
    ap.add_argument("--no-compile", action="store_true", help="skip the compile-time subprocesses")
    args = ap.parse_args(argv)

    import torch

    import hwsim.formats as F

    rows = max(1, args.n // args.k)
    n = rows * args.k
    x = np.random.default_rng(0).standard_normal((rows, args.k)).astype(np.float32)
    dst = np.empty_like(x)
    xt = torch.from_numpy(x)
    import numba

    print(f"# hwsim.formats fake_quant benchmark: {n:,} float32 elements [{rows} x {args.k}], block 32 "
          f"along the last axis; numba threads {numba.get_num_threads()}, torch threads "
          f"{torch.get_num_threads()}")
    t_copy = best_time(lambda: np.copyto(dst, x), args.reps)
    t_alloc = best_time(lambda: x.copy(), args.reps)
    print(f"np.copyto(dst, x): {t_copy * 1e3:.1f} ms = {n / t_copy / 1e9:.2f} Gelem/s; "
          f"x.copy(): {t_alloc * 1e3:.1f} ms")
    results = []
    for name in FORMATS:
        F.fake_quant(x[:4], name)  # compile / load from cache outside the timing
        t_out = best_time(lambda: F.fake_quant(x, name, out=dst), args.reps)
        t_nb = best_time(lambda: F.fake_quant(x, name), args.reps)
        F.fake_quant(xt[:4], name)
        t_t = best_time(lambda: F.fake_quant(xt, name), args.torch_reps)
        results.append((name, t_out, t_nb, t_t))
    hdr = (f"{'format':12s} {'out= ms':>8s} {'/copyto':>8s} {'alloc ms':>9s} {'/x.copy':>8s} "
           f"{'/copyto':>8s} {'target':>7s}  {'torch ms':>9s} {'numba/torch':>11s} {'target':>7s}")
    print(hdr)
    print("-" * len(hdr))
    for name, t_out, t_nb, t_t in results:
        r_out, r_alloc, r_mixed = t_copy / t_out, t_alloc / t_nb, t_copy / t_nb
        r_torch = t_t / t_nb
        tgt = TARGET_COPY[name]
        ok1 = "ok" if min(r_out, r_alloc) >= tgt else "MISS"
        ok2 = "ok" if r_torch >= TARGET_TORCH else "MISS"
        print(f"{name:12s} {t_out * 1e3:8.1f} {r_out:8.3f} {t_nb * 1e3:9.1f} {r_alloc:8.3f} "
              f"{r_mixed:8.3f} {'>=' + str(tgt):>5s} {ok1:4s} {t_t * 1e3:9.1f} {r_torch:11.2f} "
              f"{'>=' + str(TARGET_TORCH):>5s} {ok2}")
    print("target check: both like-for-like ratios (out= vs np.copyto, allocating vs x.copy()); "
          "the mixed column is allocating fake_quant vs np.copyto")
    for name in SCALE_FORMATS:  # GPTQ's FixedGrid reads only the shared exponents of the weight
        F.block_scales(x[:4], name)
        F.quantize(x[:4], name)
        t_sc = best_time(lambda: F.block_scales(x, name), args.reps)
        t_q = best_time(lambda: F.quantize(x, name), args.reps)
        print(f"{name:12s} block_scales {t_sc * 1e3:.1f} ms ({t_copy / t_sc:.2f}x np.copyto), quantize (codes and "
              f"scales) {t_q * 1e3:.1f} ms: {t_q / t_sc:.1f}x block_scales")
    if not args.no_compile:
        (ci, cc), (wi, wc) = first_call_times(FORMATS)
        print(f"first fake_quant calls ({', '.join(FORMATS)}), fresh process, empty NUMBA_CACHE_DIR: "
              f"{cc:.2f} s (import {ci:.2f} s)")
        print(f"same, second process reusing the cache: {wc:.2f} s (import {wi:.2f} s)")
    print("command: " + " ".join([os.path.basename(sys.executable), "benchmarks/bench_formats.py"] + (argv or sys.argv[1:])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
