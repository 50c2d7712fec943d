"""Benchmark of hwsim.cost_models: whole-model costing and a 10,000-point design sweep.

Run: .venv/bin/python benchmarks/bench_cost_models.py
Prints wall times and points per second measured in this run (never asserted).
"""

from __future__ import annotations

import time

import numpy as np
import pandas  # noqa: F401  (imported before timing: a one-time ~0.6 s import, not costing work)

from hwsim.cost_models import SystolicArray, cost_model, from_config
from hwsim.cost_models.units import _build_pe


def bench_model() -> None:
    arr = SystolicArray(32, 32, "ws")
    for label in ("cold", "warm"):
        if label == "cold":
            _build_pe.cache_clear()
        t0 = time.perf_counter()
        for phase in ("prefill", "decode"):
            spec = from_config("smollm2-135m", "mxint4", "mxint8", phase=phase, seq=512)
            res = cost_model(spec, arr)
        dt = time.perf_counter() - t0
        print(f"SmolLM2-135M (30 layers x 7 linears), prefill 512 + decode, {label}: {dt * 1e3:.1f} ms "
              f"({len(res.per_layer)} linears per phase)")


def bench_sweep() -> None:
    sizes = np.unique(np.round(np.geomspace(2, 512, 30)).astype(int))
    shapes = [(r, c) for r in sizes for c in sizes]
    pairs = [("mxint8", "mxint4"), ("mxint8", "mxint8"), ("mxfp8_e4m3", "mxfp4"), ("int8_tok", "int8_ch"),
             ("fp16", "fp16"), ("fp16", "int4_g128")]
    arr = SystolicArray(16, 16, "ws")
    t0 = time.perf_counter()
    df = arr.sweep(512, 4096, 11008, shapes, ("ws", "os", "is"), pairs)
    dt = time.perf_counter() - t0
    print(f"sweep: {len(df)} points ({len(shapes)} shapes x 3 dataflows x {len(pairs)} format pairs) on "
          f"GEMM 512x4096x11008: {dt:.3f} s, {len(df) / dt:,.0f} points/s (vectorised)")
    # scalar path for comparison (one .gemm per point), on a subset
    sub = shapes[:: max(1, len(shapes) // 100)]
    t0 = time.perf_counter()
    n = 0
    for r, c in sub:
        for d in ("ws", "os", "is"):
            SystolicArray(int(r), int(c), d).gemm(512, 4096, 11008, "mxint8", "mxint4")
            n += 1
    dt2 = time.perf_counter() - t0
    print(f"scalar .gemm path: {n} points in {dt2:.3f} s, {n / dt2:,.0f} points/s; "
          f"vectorised/scalar = {(len(df) / dt) / (n / dt2):.1f}x")


if __name__ == "__main__":
    bench_model()
    bench_sweep()
