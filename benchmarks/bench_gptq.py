"""GPTQ on SmolLM2-135M end to end (issue 17): calibrate / sweep / propagate, new path vs old.

New path (default): sequential statistics in one piecewise pass per block
(``quantize_model(..., calib_pass="auto")``), one damped inverse factor per shared input, rows
sharing a Hessian swept together (``gptq_quantize_many``), torch per-column rounding.
Old path (``--old``, kept reachable): the whole block once per linear group plus once to propagate
(``calib_pass="full"``) and the per-column numpy/numba rounding (``rounder="numpy"``, one sweep per
linear). Both give the same weights bit for bit (tests/quant/test_gptq.py); this script checks it.

Also prints QERA-exact's calibration (``stats_source="fp"``: R_xx of every input in one pass).

Times exclude model load and evaluation. The machine's load average is printed with the result
(on shared cores the numbers scale with the load), and a reference GEMM's speed before and after
(on an idle machine the numbers scale with it).

    .venv/bin/python benchmarks/bench_gptq.py                       # 32 x 512 tokens, mxint4 x mxint8
    .venv/bin/python benchmarks/bench_gptq.py --old --blocks 3      # ratio to the old path on 3 blocks
    .venv/bin/python benchmarks/bench_gptq.py --threads 1 --n-calib 8
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def _threads_from_argv(argv) -> None:
    if "--threads" in argv:
        n = argv[argv.index("--threads") + 1]
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = n


_threads_from_argv(sys.argv)


#: the reference GEMM of ``_machine_gflops``: float32 [n, n] x [n, n]
REFERENCE_GEMM_N = 2048


def _machine_gflops(repeats: int = 7) -> float:
    """float32 GEMM speed of this machine now (GFLOP/s, median of ``repeats``, torch's threads):
    printed before and after the runs, because the same code's wall time follows it (the 2-core
    machines hwsim is measured on vary by ±20 % over an hour with nothing else running)."""
    import statistics

    import torch

    n = REFERENCE_GEMM_N
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * n ** 3 / statistics.median(times) / 1e9


def _run(args, label, calib_pass, rounder, recipe="gptq", keep=False):
    import warnings

    import torch

    from hwsim.eval import data, models
    from hwsim.quant import get_recipe, quantize_model, quantized_linears, with_formats

    model, tok = models.load(args.model, progress=False)
    if args.blocks:
        model.model.layers = model.model.layers[:args.blocks]
        model.config.num_hidden_layers = args.blocks
    calib = data.calibration_set(tok, args.calib, n=args.n_calib, seq_len=args.calib_len, seed=0)
    rec = with_formats(get_recipe(recipe), w=args.w, a=args.a)
    if args.calib_batch:
        import dataclasses

        rec = dataclasses.replace(rec, calib_batch_size=args.calib_batch)
    if recipe == "gptq" and rounder != "auto":
        import dataclasses

        rec = dataclasses.replace(rec, options={"gptq": {**rec.options.get("gptq", {}), "rounder": rounder}})
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        rep = quantize_model(model, rec, calib, progress=False, calib_pass=calib_pass)
    total = time.perf_counter() - t0
    tm = rep.timings
    print(f"{label:28s} total {total:7.1f} s | calibrate {tm.get('calibrate', 0):6.1f} | round {tm.get('round', 0):6.1f} "
          f"(factor {tm.get('round.factor', 0):5.1f}, sweep {tm.get('round.sweep', 0):5.1f}) | "
          f"propagate {tm.get('propagate', 0):5.1f} | reconstruct {tm.get('reconstruct', 0):5.1f} | "
          f"load avg {load:.1f} -> {os.getloadavg()[0]:.1f}", flush=True)
    weights = {k: m.weight.clone() for k, m in quantized_linears(model)} if keep else None
    return total, weights


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--w", default="mxint4")
    ap.add_argument("--a", default="mxint8")
    ap.add_argument("--calib", default="brown")
    ap.add_argument("--n-calib", type=int, default=32)
    ap.add_argument("--calib-len", type=int, default=512)
    ap.add_argument("--calib-batch", type=int, default=0,
                    help="calibration sequences per block pass (0 = the recipe's calib_batch_size)")
    ap.add_argument("--blocks", type=int, default=0, help="quantize only the first N blocks (0 = all)")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    ap.add_argument("--old", action="store_true", help="also run the old path and print the ratio")
    ap.add_argument("--no-qera", action="store_true", help="skip QERA-exact's calibration")
    args = ap.parse_args(argv)

    import torch

    from hwsim.quant.threads import configure_threads

    configure_threads(args.threads)
    print(f"GPTQ {args.model} W={args.w} X={args.a} calib {args.calib} {args.n_calib} x {args.calib_len}, "
          f"blocks={args.blocks or 'all'}, torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}")
    print(f"reference GEMM ({REFERENCE_GEMM_N}^3 float32): {_machine_gflops():.0f} GFLOP/s", flush=True)
    t_new, w_new = _run(args, "new (piecewise, torch)", "auto", "auto", keep=args.old)
    if args.old:
        t_old, w_old = _run(args, "old (full passes, numpy)", "full", "numpy", keep=True)
        same = all(torch.equal(w_new[k], w_old[k]) for k in w_old) and set(w_new) == set(w_old)
        print(f"old / new = {t_old / t_new:.2f}x; weights identical: {same}")
    if not args.no_qera:
        _run(args, "qera-exact (fp stats)", "auto", "auto", recipe="qera-exact")
    print(f"reference GEMM after: {_machine_gflops():.0f} GFLOP/s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
