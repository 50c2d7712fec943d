"""Benchmark of hwsim.matmul (docs/spec/matmul.md §11). Speed is measured here, never asserted in tests.

CPU:  .venv/bin/python benchmarks/bench_matmul.py                 (1024^3 by default)
      .venv/bin/python benchmarks/bench_matmul.py --spec-shapes   (docs/spec/matmul.md §11 shapes, scaled down on CPU)
GPU:  .venv/bin/python benchmarks/bench_matmul.py --gpu           (Triton + torch backends vs bf16 matmul,
                                                                   4096^3, plus a 512^3 bit-equality check)
CPU backends (exact mode, fp32 accumulator unless "fake"):
  numba-tiled  numpy QTensors, backend="numba-tiled" (the tiled numba kernel)
  numba  numpy QTensors, backend="numba" (the per-output reference kernels; not in the default list)
  torch  torch CPU QTensors, backend="torch" (the batched-GEMM path)
  auto   numpy QTensors, backend="auto" (what matmul() picks on CPU: the batched-GEMM path)
  fake   torch QTensors, mode="fake" (dequantize + fp32 GEMM; not bit-exact)
Codes are prepared beforehand; the median of --reps runs after a warm-up is reported, with the
effective throughput 2MNK/t and the ratio to the baseline (torch fp32 matmul on the same shape),
which is re-measured right before each backend in the same run. Before timing, the exact CPU
backends are checked to agree bit for bit on the benchmark operands. Results go to
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


def _to_torch_q(q):
    """The same QTensor with torch codes/scales (codes prepared beforehand, no re-quantization)."""
    conv = lambda x: None if x is None else torch.as_tensor(np.ascontiguousarray(x))  # noqa: E731
    return F.QTensor.from_codes(q.spec, conv(q.codes), scales=conv(q.scales), zero_points=conv(q.zero_points),
                                tensor_scale=q.tensor_scale, shape=q.shape, axis=q.axis)


def _bits(y):
    y = y.numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    u = np.ascontiguousarray(y, np.float32).view(np.uint32)
    return np.where(np.isnan(y), np.uint32(0x7FC00000), u)


def _pair(text):
    """("mxint8", "mxint4") from "mxint8xmxint4": the split at the "x" where both sides are formats."""
    for i, ch in enumerate(text):
        if ch == "x" and 0 < i < len(text) - 1:
            try:
                F.get(text[:i]), F.get(text[i + 1:])
            except ValueError:
                continue
            return text[:i], text[i + 1:]
    raise SystemExit(f"--pairs: {text!r} is not two format names joined by 'x'")


def run_cpu(shapes, pairs, reps, backends):
    rows = []
    for (M, K, N) in shapes:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((M, K)).astype(np.float32)
        w = rng.standard_normal((N, K)).astype(np.float32)
        xt, wt = torch.tensor(x), torch.tensor(w).T.contiguous()
        for fa, fb in pairs:
            a, wq = F.quantize(x, fa), F.quantize(w, fb)
            b = wq.T
            ta, tb = _to_torch_q(a), _to_torch_q(wq).T
            cases = {"numba-tiled": lambda: matmul(a, b, backend="numba-tiled"),
                     "numba": lambda: matmul(a, b, backend="numba"),
                     "torch": lambda: matmul(ta, tb, backend="torch"),
                     "auto": lambda: matmul(a, b),
                     "fake": lambda: matmul(ta, tb, mode="fake")}
            exact = [be for be in backends if be != "fake"]
            ref = _bits(cases[exact[0]]()) if exact else None
            same = all(np.array_equal(ref, _bits(cases[be]())) for be in exact[1:])
            print(f"{M}x{K}x{N} {fa}x{fb}: exact backends {exact} bit-equal: {same}", flush=True)
            for be in backends:
                # the baseline is re-timed next to every backend, so that a change of machine load
                # during the run shifts both numbers of a ratio alike
                t_base = timeit(lambda: torch.matmul(xt, wt), reps)
                t = timeit(cases[be], reps)
                rows.append(dict(M=M, K=K, N=N, pair=f"{fa}x{fb}", backend=be, seconds=t,
                                 gflops=2 * M * N * K / t / 1e9, baseline="torch fp32 matmul",
                                 baseline_seconds=t_base, ratio=t_base / t,
                                 bit_equal_exact_backends=bool(same)))
                print(f"{M}x{K}x{N} {fa}x{fb:12s} {be:11s} {t*1e3:9.2f} ms  {2*M*N*K/t/1e9:8.2f} GFLOP/s  "
                      f"ratio to torch fp32 ({t_base*1e3:.2f} ms) = {t_base / t:.3f}", flush=True)
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
    ap.add_argument("--spec-shapes", action="store_true", help="the docs/spec/matmul.md §11 shapes (CPU: scaled down)")
    ap.add_argument("--size", type=int, default=None, help="square M=K=N (default 1024 CPU, 4096 GPU)")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--pairs", default=None, help="comma list like mxint8xmxint8,mxint4xmxint8")
    ap.add_argument("--backends", default="numba-tiled,torch,auto,fake",
                    help="comma list of numba-tiled, numba, torch, auto, fake (numba: the per-output reference "
                         "kernels, slow at 1024^3)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args(argv)
    pairs = PAIRS[:3] if args.pairs is None else [_pair(p) for p in args.pairs.split(",")]
    if args.gpu:
        if not torch.cuda.is_available():
            raise SystemExit("--gpu: no CUDA device visible to torch")
        shapes = [(1, 4096, 4096), (16, 4096, 11008), (512, 4096, 4096), (2048, 4096, 14336)] if args.spec_shapes \
            else [(args.size or 4096,) * 3]
        rows = run_gpu(shapes, pairs, args.reps)
        device = torch.cuda.get_device_name()
    else:
        # docs/spec/matmul.md §11 shapes; the last two scaled down on 2 CPU cores (recorded in the output)
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
        f.write("| M | K | N | pair | backend | ms | baseline ms | ratio to baseline |\n"
                "|---|---|---|---|---|---|---|---|\n")
        for r in rows:
            if "seconds" in r:
                f.write(f"| {r['M']} | {r['K']} | {r['N']} | {r['pair']} | {r['backend']} | "
                        f"{r['seconds']*1e3:.2f} | {r['baseline_seconds']*1e3:.2f} | {r['ratio']:.3f} |\n")
    print(f"device: {device}; versions: {meta['versions']}")


if __name__ == "__main__":
    main()
