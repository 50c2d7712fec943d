"""`hwsim matmul`: run the exact matmul core on random data and print the fake/fp32/exact differences."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser("matmul", help="exact block-scaled matmul: accumulator error report on random data",
                              description=__doc__)
    p.add_argument("--a", default="mxint8", help="format of the left operand (activations), e.g. mxint8")
    p.add_argument("--b", default="mxint4", help="format of the right operand (weights), e.g. mxint4")
    p.add_argument("--shape", default="16,1024,16", help="M,K,N (default 16,1024,16)")
    p.add_argument("--accumulator", default="fp32", help="fp32 | exact | fixed:W:F[:wrap][:rne]")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    import numpy as np

    import hwsim.formats as F
    from hwsim.matmul import DatapathSpec, error_report, matmul

    try:
        M, K, N = (int(v) for v in args.shape.split(","))
    except ValueError:
        raise ValueError(f"--shape={args.shape!r} is invalid; expected three integers M,K,N") from None
    rng = np.random.default_rng(args.seed)
    a = F.quantize(rng.standard_normal((M, K)).astype(np.float32), args.a)
    b = F.quantize(rng.standard_normal((N, K)).astype(np.float32), args.b).T
    dp = DatapathSpec(args.a, args.b, args.accumulator)
    y = matmul(a, b, accumulator=args.accumulator, out_format="fp32")
    r = error_report(a, b)
    ex = matmul(a, b, accumulator="exact")
    print(f"datapath {dp.name}: case {dp.case}, segment length L={dp.segment_length(K)}, "
          f"exact segment sum {dp.sum_bits(K)} bits")
    print(f"max |{args.accumulator} - exact| = {float(np.max(np.abs(y - ex))):.3e}")
    print(f"max |fake - exact| = {r.fake_vs_exact_max:.3e}   max |fp32 - exact| = {r.fp32_vs_exact_max:.3e}   "
          f"fake != fp32 on {100 * r.frac_fake_ne_fp32:.1f}% of outputs")
    print(f"docs/spec/matmul.md §7 bounds hold: fp32 {r.fp32_within_bound}, fake {r.fake_within_bound}")
    return 0
