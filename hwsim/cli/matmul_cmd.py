"""`hwsim matmul`: run the exact matmul core on random data and print the fake/fp32/exact differences."""

from __future__ import annotations

import argparse

from ._args import with_examples


#: peak bytes of ``hwsim matmul`` per operand element (float64 draw, float32 copy, codes) and per
#: output element (the fp32/exact/fake results and their differences), measured on 2048x256x2048
#: and 64x16384x64 (21 and 87 bytes) and rounded up
BYTES_PER_OPERAND_ELEMENT = 24
BYTES_PER_OUTPUT_ELEMENT = 96


def memory_estimate(M: int, K: int, N: int) -> int:
    """Bytes ``hwsim matmul --shape M,K,N`` needs at its peak (an estimate, see the constants)."""
    return BYTES_PER_OPERAND_ELEMENT * (M * K + N * K) + BYTES_PER_OUTPUT_ELEMENT * M * N


def available_memory() -> int | None:
    """MemAvailable of /proc/meminfo in bytes (None where unknown)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _gib(n: float) -> str:
    return f"{n / 2 ** 40:.1f} TiB" if n >= 2 ** 40 else f"{n / 2 ** 30:.1f} GiB"


def parse_shape(text: str) -> tuple[int, int, int]:
    """``M,K,N`` as three positive integers, else a ValueError naming --shape."""
    try:
        M, K, N = (int(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--shape={text!r} is invalid; expected three integers M,K,N, e.g. 16,1024,16") from None
    if min(M, K, N) < 1:
        raise ValueError(f"--shape={text!r}: M, K and N must be >= 1")
    return M, K, N


def register(subparsers) -> None:
    p = subparsers.add_parser("matmul", help="exact block-scaled matmul: accumulator error report on random data",
                              description=__doc__,
                              **with_examples("hwsim matmul", "hwsim matmul --a mxfp8_e4m3 --b mxfp4 --shape 8,4096,8",
                                              "hwsim matmul --accumulator fixed:32:16:wrap --seed 1"))
    p.add_argument("--a", default="mxint8", help="format of the left operand (activations), e.g. mxint8")
    p.add_argument("--b", default="mxint4", help="format of the right operand (weights), e.g. mxint4")
    p.add_argument("--shape", default="16,1024,16",
                   help="M,K,N (default 16,1024,16); refused when the memory estimate exceeds what is available")
    p.add_argument("--accumulator", default="fp32",
                   help="fp32 (default) | exact | fixed:W[:F][:wrap][:rne] (F defaults to W//2, saturating) | "
                        "int<W> / window(<W>) / <W> (= fixed:W:W//2:wrap), W in 2..62 here; the grammar of "
                        "hwsim cost --acc (docs/matmul.md)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random operands (default 0)")
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    M, K, N = parse_shape(args.shape)
    need, have = memory_estimate(M, K, N), available_memory()
    if have is not None and need > have:
        raise ValueError(f"--shape={args.shape}: needs about {_gib(need)} of memory ({BYTES_PER_OPERAND_ELEMENT} B per "
                         f"element of A and B, {BYTES_PER_OUTPUT_ELEMENT} B per output), {_gib(have)} is available; "
                         "give a smaller shape, e.g. 16,1024,16")

    import numpy as np

    import hwsim.formats as F
    from hwsim.matmul import DatapathSpec, error_report, matmul

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
