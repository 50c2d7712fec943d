"""GPU benchmark of scripts/gpu_check.sh: the Triton exact MXINT8 GEMM against torch bf16 matmul.

    PYTHONPATH=. python scripts/gpu_bench.py [--size 4096] [--reps 10] [--out FILE.json]

Both run on the same GPU and the same [S, S] x [S, S] shape: ``hwsim.matmul.matmul(a, b,
backend="triton")`` on MXINT8 QTensors quantized beforehand (fp32 accumulator, bit-exact; the time
includes the operand preparation matmul does on every call) and ``torch.matmul`` on bf16 copies.
Times are medians of ``--reps`` runs after a warm-up, each ended by torch.cuda.synchronize().
The ratio is t(bf16) / t(triton): the fraction of the vendor GEMM's speed that the emulation
reaches. ``--device cpu`` (with TRITON_INTERPRET=1 and a small --size) exercises the script
without a GPU. Writes one JSON object to --out (or stdout).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def run(size: int, reps: int, device: str) -> dict:
    import numpy as np
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from bench_matmul import timeit   # median of reps after a warm-up, each ended by sync()

    import hwsim.formats as F
    from hwsim.matmul import matmul, triton_backend
    from hwsim.matmul.operands import prepare

    dev = torch.device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    gen = torch.Generator(device=dev).manual_seed(0)
    x = torch.randn(size, size, device=dev, generator=gen)
    w = torch.randn(size, size, device=dev, generator=gen)
    qa, qb = F.quantize(x, "mxint8"), F.quantize(w, "mxint8").T
    covered = triton_backend.covers(prepare(qa, qb))
    y = matmul(qa, qb, backend="triton")
    # the same bits as the CPU reference on a corner of the problem (the full 4096^3 numba run is slow)
    k = min(size, 256)
    qa_c = F.quantize(x[:k, :k].cpu().numpy(), "mxint8")
    qb_c = F.quantize(w[:k, :k].cpu().numpy(), "mxint8").T
    y_c = matmul(F.quantize(x[:k, :k], "mxint8"), F.quantize(w[:k, :k], "mxint8").T, backend="triton")
    bit_equal = bool(np.array_equal(y_c.cpu().numpy().view(np.uint32),
                                    matmul(qa_c, qb_c, backend="numba").view(np.uint32)))
    xb, wb = x.bfloat16(), w.T.contiguous().bfloat16()
    t_bf16 = timeit(lambda: torch.matmul(xb, wb), reps, sync)
    t_tri = timeit(lambda: matmul(qa, qb, backend="triton"), reps, sync)
    flops = 2.0 * size ** 3
    return {
        "benchmark": "Triton exact MXINT8 GEMM vs torch bf16 matmul", "M": size, "K": size, "N": size,
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else device,
        "triton_covers_pair": bool(covered), "finite": bool(torch.isfinite(y).all()),
        f"bit_equal_to_numba_{k}^3": bit_equal, "reps": reps,
        "triton_seconds": t_tri, "triton_tflops": flops / t_tri / 1e12,
        "bf16_seconds": t_bf16, "bf16_tflops": flops / t_bf16 / 1e12,
        "ratio_bf16_time_over_triton_time": t_bf16 / t_tri,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", default=None, help="JSON file (default: stdout)")
    args = ap.parse_args(argv)
    try:
        res = run(args.size, args.reps, args.device)
        rc = 0
    except Exception as exc:  # reported in the results file, not lost in a traceback
        res = {"error": f"{type(exc).__name__}: {exc}"}
        rc = 1
    text = json.dumps(res, indent=2)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    print(text)
    return rc


if __name__ == "__main__":
    sys.exit(main())
