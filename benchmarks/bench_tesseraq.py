"""TesseraQ's CPU budget on SmolLM2-135M end to end (issue 10): wall time and peak memory.

Quantizes every decoder linear with ``quantize_model(model, "tesseraq", calib)`` (the stage's
``budget="cpu"``: the 10-stage schedule, 5 Adam steps per stage, batch 2) on ``--n-calib`` x
``--calib-len`` calibration tokens, and prints the wall time split by stage (capture/propagate,
training), the time per training step, the peak resident memory of the process (ru_maxrss) and,
with ``--eval``, the perplexity of the result next to RTN's. Times exclude model load and
evaluation; the machine's load average is printed with them (on shared cores they scale with it).

    .venv/bin/python benchmarks/bench_tesseraq.py                      # 32 x 256 tokens, int3_g128_asym
    .venv/bin/python benchmarks/bench_tesseraq.py --w mxint4 --a mxint8 --eval brown
    .venv/bin/python benchmarks/bench_tesseraq.py --blocks 2 --iters 10  # a quick look
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time


def _threads(n: int) -> None:
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--w", default="int3_g128_asym", help="weight format (default int3_g128_asym)")
    p.add_argument("--a", default="none", help="activation format (default none: weight-only)")
    p.add_argument("--calib", default="austen")
    p.add_argument("--n-calib", type=int, default=32)
    p.add_argument("--calib-len", type=int, default=256)
    p.add_argument("--budget", default="cpu", choices=("cpu", "paper"))
    p.add_argument("--iters", type=int, default=None, help="Adam steps per stage (default: the budget's)")
    p.add_argument("--lr", type=float, default=None, help="learning rate of the rounding logits (default: the budget's)")
    p.add_argument("--scale-lr", type=float, default=None, help="learning rate of the DST parameters (default: the budget's)")
    p.add_argument("--blocks", type=int, default=0, help="only the first N decoder blocks (0: all)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--eval", default=None, help="also evaluate perplexity on this corpus, with RTN for reference")
    p.add_argument("--n-tokens", type=int, default=4096)
    args = p.parse_args(argv)
    _threads(args.threads)
    import warnings

    import torch

    from hwsim.eval import data, models
    from hwsim.eval.perplexity import evaluate
    from hwsim.quant import get_recipe, quantize_model, with_formats
    from hwsim.quant.algorithms.tesseraq_block import stage_options

    torch.set_num_threads(args.threads)

    def load():
        model, tok = models.load(args.model, progress=False)
        if args.blocks:
            model.model.layers = model.model.layers[:args.blocks]
            model.config.num_hidden_layers = args.blocks
        return model, tok

    model, tok = load()
    calib = data.calibration_set(tok, args.calib, n=args.n_calib, seq_len=args.calib_len, seed=0)
    opts = {"budget": args.budget} | {k: v for k, v in (("iters_per_stage", args.iters), ("lr", args.lr),
                                                        ("scale_lr", args.scale_lr)) if v is not None}
    rec = with_formats(get_recipe("tesseraq", options={"tesseraq": opts}), w=args.w, a=args.a)
    topts = stage_options(**rec.stage_options("tesseraq"))
    n_blocks = len(model.model.layers)
    steps = n_blocks * len(topts.taus) * topts.iters_per_stage
    load_avg = os.getloadavg()[0]
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rep = quantize_model(model, rec, calib, progress=False)
    wall = time.perf_counter() - t0
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    print(f"TesseraQ {args.budget} budget on {args.model} ({n_blocks} blocks), W={args.w} X={args.a}, "
          f"calib {args.calib} {args.n_calib}x{args.calib_len}, {args.threads} threads, load avg {load_avg:.1f}")
    print(f"  schedule {len(topts.taus)} stages x {topts.iters_per_stage} steps x batch {topts.batch_size}: "
          f"{steps} training steps, lr {topts.lr:g}, scale_lr {topts.scale_lr:g}")
    print(f"  wall {wall:.1f} s (target < 360 s); " + ", ".join(f"{k} {v:.1f} s" for k, v in rep.timings.items()
                                                                 if k != "total"))
    print(f"  {1e3 * rep.timings.get('round', wall) / max(steps, 1):.1f} ms per training step (incl. hardening "
          f"and the per-block MSE checks)")
    print(f"  peak resident memory {peak_gib:.2f} GiB (target < 6 GiB)")
    if args.eval:
        ev = dict(seq_len=512, n_tokens=args.n_tokens, progress=False, model_name=args.model)
        ppl_tq = evaluate(model, tok, args.eval, "eval", **ev).ppl
        del model
        rtn, _ = load()
        quantize_model(rtn, with_formats(get_recipe("rtn"), w=args.w, a=args.a), progress=False)
        ppl_rtn = evaluate(rtn, tok, args.eval, "eval", **ev).ppl
        fp, _ = load()
        ppl_fp = evaluate(fp, tok, args.eval, "eval", **ev).ppl
        print(f"  perplexity on {args.eval} ({args.n_tokens} tokens): fp {ppl_fp:.3f}, rtn {ppl_rtn:.3f}, "
              f"tesseraq {ppl_tq:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
