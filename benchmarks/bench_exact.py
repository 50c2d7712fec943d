"""Exact vs fake emulation: SmolLM2-135M perplexity evaluation time (issue 14).

The model is quantized once with RTN (mxint4 weights, mxint8 activations by default), then the same
``hwsim.eval.perplexity.evaluate`` (brown, 4,096 tokens in windows of 512) runs in fake mode, in exact
mode with the fp32 accumulator, and in exact mode with a fixed-point accumulator
(``fixed:24:8:saturate:rne`` by default), all in this one process, and the times are printed as
ratios to fake mode. Targets: exact/fake <= 4 with fp32 accumulation, <= 8 with the fixed one.

Every mode first runs one short warm-up window (numba compilation and the one-time conversion of the
weights to the matmul core's operand form are not timed; the conversion is per layer, once, see
docs/quant.md "Exact mode"). Threads are set explicitly for torch, numba and the BLAS pools
(threadpoolctl). The load average is printed with the result: on shared cores the times scale with
the load, the ratios much less.

    .venv/bin/python benchmarks/bench_exact.py                                   # 2 threads, 4096 tokens
    .venv/bin/python benchmarks/bench_exact.py --threads 1 --n-tokens 1024
    .venv/bin/python benchmarks/bench_exact.py --w int4_g128 --a int8_tok       # case G (float scales)
    .venv/bin/python benchmarks/bench_exact.py --profile --n-tokens 512         # cProfile of exact mode
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def _threads_from_argv(argv) -> None:
    n = argv[argv.index("--threads") + 1] if "--threads" in argv else "2"
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = n


_threads_from_argv(sys.argv)


def _set_threads(n: int):
    import numba
    import torch
    from threadpoolctl import threadpool_limits

    from hwsim.quant.threads import configure_threads

    configure_threads(n)             # torch + numba (workqueue layer)
    torch.set_num_threads(n)
    numba.set_num_threads(n)
    threadpool_limits(limits=n)      # BLAS / OpenMP pools of numpy and torch (kept for the process)


def _eval(model, tok, args, n_tokens=None):
    from hwsim.eval.perplexity import evaluate

    return evaluate(model, tok, args.corpus, "eval", seq_len=args.seq_len,
                    n_tokens=n_tokens or args.n_tokens, progress=False, model_name=args.model)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--corpus", default="brown")
    ap.add_argument("--w", default="mxint4")
    ap.add_argument("--a", default="mxint8")
    ap.add_argument("--fixed", default="fixed:24:8:saturate:rne", help="the fixed-point accumulator timed")
    ap.add_argument("--n-tokens", type=int, default=4096)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2, help="torch, numba and BLAS threads (default 2)")
    ap.add_argument("--modes", default="fake,fp32,fixed", help="comma list of fake, fp32, fixed (default all)")
    ap.add_argument("--profile", action="store_true", help="cProfile exact mode (fixed accumulator) instead")
    args = ap.parse_args(argv)

    import warnings

    import torch

    from hwsim.eval import models
    from hwsim.quant import acc_events_total, get_recipe, quantize_model, reset_acc_events, set_mode, with_formats

    _set_threads(args.threads)
    print(f"exact vs fake: {args.model} W={args.w} X={args.a}, {args.corpus} {args.n_tokens} tokens "
          f"(windows of {args.seq_len}); threads torch {torch.get_num_threads()} numba {args.threads} "
          f"BLAS {args.threads}; cpus {os.cpu_count()}; load avg {os.getloadavg()[0]:.2f}", flush=True)
    model, tok = models.load(args.model, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_model(model, with_formats(get_recipe("rtn"), w=args.w, a=args.a), None, progress=False)
    accs = {"fake": None, "fp32": "fp32", "fixed": args.fixed}
    if args.profile:
        import cProfile
        import pstats

        set_mode(model, "exact", accumulator=args.fixed)
        _eval(model, tok, args, n_tokens=args.seq_len)
        prof = cProfile.Profile()
        prof.enable()
        _eval(model, tok, args)
        prof.disable()
        pstats.Stats(prof).sort_stats("cumulative").print_stats(30)
        pstats.Stats(prof).sort_stats("tottime").print_stats(20)
        return 0
    times, ppl = {}, {}
    for mode in [m.strip() for m in args.modes.split(",")]:
        if mode == "fake":
            set_mode(model, "fake")
        else:
            set_mode(model, "exact", accumulator=accs[mode])
        _eval(model, tok, args, n_tokens=args.seq_len)          # warm-up: compilation, operand conversion
        reset_acc_events(model)
        load0 = os.getloadavg()[0]
        t0 = time.perf_counter()
        res = _eval(model, tok, args)
        times[mode] = time.perf_counter() - t0
        ppl[mode] = res.ppl
        ev = acc_events_total(model)
        evs = ""
        if ev:
            evs = (f" | events: {ev['saturations']} saturations, {ev['wraps']} wraps, {ev['rounded']} rounded "
                   f"(max {ev['max_bits_lost']} bits lost), {ev['flushed']} flushed of {ev['adds']} adds")
        label = "fake" if mode == "fake" else f"exact {accs[mode]}"
        print(f"{label:32s} {times[mode]:7.1f} s  ppl {res.ppl:.4f}  load avg {load0:.2f} -> "
              f"{os.getloadavg()[0]:.2f}{evs}", flush=True)
    if "fake" in times:
        for mode in times:
            if mode != "fake":
                target = 4 if mode == "fp32" else 8
                r = times[mode] / times["fake"]
                print(f"exact {accs[mode]} / fake = {r:.2f}x (target <= {target}x: {'met' if r <= target else 'MISSED'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
