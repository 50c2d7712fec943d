"""QERA-exact: Cholesky factorisation (hwsim default) vs the reference scipy ``sqrtm`` route.

Both routes compute C* = L⁻¹ [L E]_k for a factor L of R (algorithms.md §4.4) through the same
``hwsim.quant.algorithms.qera_exact`` code (SVD of L E in float64, then a solve); only the
factor differs. Prints the wall time of each route, their ratio and the relative difference of
A·B. Target (issue 5): same A·B to 1e-5 relative, factorisation >= 10x faster.

    .venv/bin/python benchmarks/bench_qera.py            # in = out = 2048, k = 32
    .venv/bin/python benchmarks/bench_qera.py --n 512    # quick run
    .venv/bin/python benchmarks/bench_qera.py --threads 1   # on a shared, oversubscribed machine
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time


def _threads_from_argv(argv) -> None:
    """--threads N must act before numpy/scipy/torch load their BLAS thread pools."""
    if "--threads" in argv:
        n = argv[argv.index("--threads") + 1]
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = n


_threads_from_argv(sys.argv)

import torch  # noqa: E402

from hwsim.quant.algorithms import qera_exact, rtn_quantize  # noqa: E402


def make_problem(n: int, n_out: int, seed: int):
    """Correlated inputs (N = 2n samples, shared low-rank component, a few loud channels)."""
    g = torch.Generator().manual_seed(seed)
    N = 2 * n
    mix = torch.randn(n, n, generator=g, dtype=torch.float64) / n ** 0.5
    X = torch.randn(N, n, generator=g, dtype=torch.float64)
    X = X + X @ mix * 0.5 + torch.randn(N, 16, generator=g, dtype=torch.float64) @ \
        torch.randn(16, n, generator=g, dtype=torch.float64) * 0.5
    X[:, :4] *= 20.0  # outlier channels, as in LLM activations
    R = X.T @ X / N
    W = torch.randn(n_out, n, generator=g, dtype=torch.float64) * 0.02
    return W, rtn_quantize(W, "mxint4"), R  # float64 in -> float64 A, B


def timed(fn, repeat: int):
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2048, help="in = size of R_xx (default 2048)")
    ap.add_argument("--out", type=int, default=None, help="out features (default = n)")
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=3, help="repeats of the fast route (best of)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eigh", action="store_true", help="also time factor='eigh'")
    ap.add_argument("--svd-dtype", default="float64", choices=["float64", "float32"],
                    help="SVD of L E in both routes (float64: hwsim default; float32: reference)")
    ap.add_argument("--threads", type=int, default=None,
                    help="BLAS/torch threads for both routes (default: library default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    n_out = args.out or args.n
    W, Wq, R = make_problem(args.n, n_out, args.seed)
    print(f"QERA-exact, R_xx {args.n}x{args.n}, W {n_out}x{args.n}, rank {args.rank}; "
          f"SVD {args.svd_dtype}; torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} cpus, {platform.machine()}")

    t_chol, res_c = timed(lambda: qera_exact(W, Wq, R, args.rank, factor="cholesky",
                                                svd_dtype=args.svd_dtype), args.repeat)
    t_sqrtm, res_s = timed(lambda: qera_exact(W, Wq, R, args.rank, factor="sqrtm",
                                                  svd_dtype=args.svd_dtype), 1)

    C_c = res_c.A @ res_c.B
    rel = lambda C: float(torch.linalg.norm(C - C_c) / torch.linalg.norm(C_c))  # noqa: E731
    rel_s = rel(res_s.A @ res_s.B)

    # factor-only timings (the part that differs between the routes)
    tf_chol, _ = timed(lambda: torch.linalg.cholesky(R), args.repeat)
    import scipy.linalg

    tf_sqrtm, _ = timed(lambda: scipy.linalg.sqrtm(R.numpy()), 1)

    print(f"{'route':<22}{'time [s]':>10}{'rel. diff of A·B vs cholesky':>32}")
    print(f"{'cholesky (default)':<22}{t_chol:>10.3f}{0.0:>32.2e}")
    if args.eigh:
        t_eigh, res_e = timed(lambda: qera_exact(W, Wq, R, args.rank, factor="eigh",
                                                        svd_dtype=args.svd_dtype), 1)
        print(f"{'eigh':<22}{t_eigh:>10.3f}{rel(res_e.A @ res_e.B):>32.2e}")
    print(f"{'scipy sqrtm (ref.)':<22}{t_sqrtm:>10.3f}{rel_s:>32.2e}")
    print(f"speed-up cholesky vs sqrtm, end to end: {t_sqrtm / t_chol:.1f}x (target >= 10x)")
    print(f"factor only: cholesky {tf_chol:.3f} s, sqrtm {tf_sqrtm:.3f} s, "
          f"ratio {tf_sqrtm / tf_chol:.0f}x")
    print(f"J* (analytic minimum, from the SVD): {res_c.info.sigma_tail:.6e}; "
          f"J(A B) cholesky {res_c.info.j:.6e}, sqrtm {res_s.info.j:.6e}")
    ok = rel_s <= 1e-5
    print(f"same A·B to 1e-5 relative: {'yes' if ok else 'NO'} ({rel_s:.2e})")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
