"""Benchmark of hwsim.matmul (matmul.md §11). Speed is measured here, never asserted in tests.

CPU:  .venv/bin/python benchmarks/bench_matmul.py                 (1024^3 by default)
      .venv/bin/python benchmarks/bench_matmul.py --spec-shapes   (the §11 shapes, scaled down on CPU)
GPU:  .venv/bin/python benchmarks/bench_matmul.py --gpu           (Triton + torch backends vs bf16 matmul,
                                                                   4096^3, plus a 512^3 bit-equality check)
Codes are prepared beforehand; the median of --reps runs after a warm-up is reported, with the
effective throughput 2MNK/t and the ratio to the baseline measured in the same run. Results go to
benchmarks/results/matmul_<device>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

import hwsim.formats as F
from hwsim.matmul import matmul

PAIRS = [("mxint8", "mxint8"), ("mxint4", "mxint8"), ("mxfp4", "mxfp8_e4m3"), ("mxfp4", "mxfp4"),
         ("nvfp4", "nvfp4"), ("bfp4", "bfp8"), ("mxfp8_e4m3", "mxfp8_e4m3")]


def timeit(fn, reps, sync=lambda: None):
    fn()
    sync()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def versions():
    try:
        import triton

        tv = triton.__version__
    except Exception:
        tv = None
    import numba

    return {"torch": torch.__version__, "numba": numba.__version__, "triton": tv}


def run_cpu(shapes, pairs, reps, backends):
    rows = []
    for (M, K, N) in shapes:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((M, K)).astype(np.float32)
        w = rng.standard_normal((N, K)).astype(np.float32)
        xt, wt = torch.tensor(x), torch.tensor(w).T.contiguous()
        t_base = timeit(lambda: torch.matmul(xt, wt), reps)
        for fa, fb in pairs:
            a, b = F.quantize(x, fa), F.quantize(w, fb).T
            ta, tb = F.quantize(torch.tensor(x), fa), F.quantize(torch.tensor(w), fb).T
            cases = {"numba": lambda: matmul(a, b, backend="numba"),
                     "torch": lambda: matmul(ta, tb, backend="torch"),
                     "fake": lambda: matmul(ta, tb, mode="fake")}
            for be in backends:
                t = timeit(cases[be], reps)
                rows.append(dict(M=M, K=K, N=N, pair=f"{fa}x{fb}", backend=be, seconds=t,
                                 gflops=2 * M * N * K / t / 1e9, baseline="torch fp32 matmul",
                                 baseline_seconds=t_base, ratio=t_base / t))
                print(f"{M}x{K}x{N} {fa}x{fb:12s} {be:6s} {t*1e3:9.2f} ms  {2*M*N*K/t/1e9:8.2f} GFLOP/s  "
                      f"ratio to torch fp32 = {t_base / t:.3f}", flush=True)
    return rows


def run_gpu(shapes, pairs, reps):
    dev = torch.device("cuda")
    sync = torch.cuda.synchronize
    rows = []
    # bit equality with the numba reference on 512^3
    rng = np.random.default_rng(1)
    x = rng.standard_normal((512, 512)).astype(np.float32)
    w = rng.standard_normal((512, 512)).astype(np.float32)
    for fa, fb in [("mxint8", "mxint8"), ("mxint4", "mxint8"), ("mxfp4", "mxfp4"), ("nvfp4", "nvfp4")]:
        a, b = F.quantize(x, fa), F.quantize(w, fb).T
        ta, tb = F.quantize(torch.tensor(x, device=dev), fa), F.quantize(torch.tensor(w, device=dev), fb).T
        y_ref = matmul(a, b, backend="numba")
        for be in ("triton", "torch"):
            y = matmul(ta, tb, backend=be).cpu().numpy()
            same = np.array_equal(y.view(np.uint32), y_ref.view(np.uint32))
            print(f"512^3 {fa}x{fb} {be} bit-equal to numba: {same}", flush=True)
            rows.append(dict(check="bit-equality 512^3", pair=f"{fa}x{fb}", backend=be, equal=bool(same)))
    for (M, K, N) in shapes:
        x = torch.randn(M, K, device=dev)
        w = torch.randn(N, K, device=dev)
        xb, wb = x.bfloat16(), w.T.contiguous().bfloat16()
        t_base = timeit(lambda: torch.matmul(xb, wb), reps, sync)
        for fa, fb in pairs:
            ta, tb = F.quantize(x, fa), F.quantize(w, fb).T
            for be in ("triton", "torch"):
                t = timeit(lambda: matmul(ta, tb, backend=be), reps, sync)
                rows.append(dict(M=M, K=K, N=N, pair=f"{fa}x{fb}", backend=be, seconds=t,
                                 tflops=2 * M * N * K / t / 1e12, baseline="torch bf16 matmul",
                                 baseline_seconds=t_base, ratio=t_base / t))
                print(f"{M}x{K}x{N} {fa}x{fb:12s} {be:6s} {t*1e3:9.2f} ms  {2*M*N*K/t/1e12:7.2f} TFLOP/s  "
                      f"ratio to torch bf16 = {t_base / t:.3f}", flush=True)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpu", action="store_true", help="GPU run: Triton and torch backends vs bf16 matmul")
    ap.add_argument("--spec-shapes", action="store_true", help="the matmul.md §11 shapes (CPU: scaled down)")
    ap.add_argument("--size", type=int, default=None, help="square M=K=N (default 1024 CPU, 4096 GPU)")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--pairs", default=None, help="comma list like mxint8xmxint8,mxint4xmxint8")
    ap.add_argument("--backends", default="numba,torch,fake")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args(argv)
    pairs = PAIRS[:3] if args.pairs is None else [tuple(p.split("x", 1)) for p in args.pairs.split(",")]
    if args.gpu:
        if not torch.cuda.is_available():
            raise SystemExit("--gpu: no CUDA device visible to torch")
        shapes = [(1, 4096, 4096), (16, 4096, 11008), (512, 4096, 4096), (2048, 4096, 14336)] if args.spec_shapes \
            else [(args.size or 4096,) * 3]
        rows = run_gpu(shapes, pairs, args.reps)
        device = torch.cuda.get_device_name()
    else:
        # §11 shapes; the last two scaled down on 2 CPU cores (recorded in the output)
        shapes = [(1, 4096, 4096), (16, 4096, 11008), (128, 4096, 4096), (256, 4096, 4096)] if args.spec_shapes \
            else [(args.size or 1024,) * 3]
        rows = run_cpu(shapes, pairs, args.reps, args.backends.split(","))
        device = f"CPU {platform.processor() or platform.machine()} x{torch.get_num_threads()} threads"
    meta = dict(device=device, versions=versions(), command="python " + " ".join(
        ["benchmarks/bench_matmul.py"] + (argv if argv is not None else __import__("sys").argv[1:])))
    os.makedirs(args.out, exist_ok=True)
    tag = "gpu" if args.gpu else "cpu"
    Path(args.out, f"matmul_{tag}.json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))
    with open(Path(args.out, f"matmul_{tag}.md"), "w") as f:
        f.write(f"# hwsim.matmul benchmark ({device})\n\n`{meta['command']}`; versions {meta['versions']}\n\n")
        f.write("| M | K | N | pair | backend | ms | ratio to baseline |\n|---|---|---|---|---|---|---|\n")
        for r in rows:
            if "seconds" in r:
                f.write(f"| {r['M']} | {r['K']} | {r['N']} | {r['pair']} | {r['backend']} | "
                        f"{r['seconds']*1e3:.2f} | {r['ratio']:.3f} |\n")
    print(f"device: {device}; versions: {meta['versions']}")


if __name__ == "__main__":
    main()
