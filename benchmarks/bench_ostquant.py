"""OSTQuant's CPU budget on SmolLM2-135M end to end (issue 11): wall time, time per training step,
peak memory, QSUR before/after and perplexity.

Runs ``quantize_model(model, RECIPE, calib)`` (default ``ostquant-w4a4kv4``: the ``ostquant``
stage with its ``budget="cpu"`` — 16 steps of 1 x 256 tokens from 16 sequences — then GPTQ) on
``--n-calib`` x ``--calib-len`` calibration tokens and prints the wall time split by stage, the
training's seconds per step (the stage's ``trained`` event), the peak resident memory of the
process (ru_maxrss), with ``--qsur`` the QSUR^(1/d) of every quantizer input of the first
``--qsur-blocks`` blocks before and after the transforms, and with ``--eval`` the perplexity next
to full precision and RTN at the same formats. Times exclude model load, QSUR and evaluation; the
machine's load average is printed with them (on shared cores they scale with it).

    .venv/bin/python benchmarks/bench_ostquant.py                          # W4A4KV4, austen 16 x 256
    .venv/bin/python benchmarks/bench_ostquant.py --eval brown --qsur
    .venv/bin/python benchmarks/bench_ostquant.py --recipe ostquant-mx-w4a4kv8 --steps 4
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time

#: the issue's targets for the CPU budget on 2 cores
TARGET_WALL_S = 8 * 60
TARGET_PEAK_GIB = 8.0


def _threads(n: int) -> None:
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = str(n)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--recipe", default="ostquant-w4a4kv4", help="an ostquant preset (default ostquant-w4a4kv4)")
    p.add_argument("--calib", default="austen")
    p.add_argument("--n-calib", type=int, default=16)
    p.add_argument("--calib-len", type=int, default=256)
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the budget's)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--qsur", action="store_true", help="print QSUR before/after the transforms")
    p.add_argument("--qsur-blocks", type=int, default=4, help="blocks shown in the QSUR table (default 4)")
    p.add_argument("--eval", default=None, help="also evaluate perplexity on this corpus, with fp and RTN")
    p.add_argument("--n-tokens", type=int, default=4096)
    args = p.parse_args(argv)
    _threads(args.threads)
    import warnings

    import torch

    from hwsim.eval import data, models
    from hwsim.eval.perplexity import evaluate
    from hwsim.quant import get_recipe, quantize_model
    from hwsim.quant.calibrate import as_token_ids
    from hwsim.quant.qsur import format_qsur_table, qsur_table

    torch.set_num_threads(args.threads)
    model, tok = models.load(args.model, progress=False)
    calib = data.calibration_set(tok, args.calib, n=args.n_calib, seq_len=args.calib_len, seed=0)
    rec = get_recipe(args.recipe)
    if args.steps is not None:  # the preset's options, with the stage's step count replaced
        rec = get_recipe(rec, options={**rec.options, "ostquant": {**rec.options.get("ostquant", {}),
                                                                  "steps": args.steps}})
    qsur = {"seconds": 0.0}
    hook = None
    if args.qsur:
        ids = as_token_ids(calib)
        qsur["before"] = qsur_table(model, ids)

        def hook(m, ad):  # QSUR after the transforms, timed to be left out of the wall time
            t = time.perf_counter()
            qsur["after"] = qsur_table(m, ids, adapter=ad)
            qsur["seconds"] = time.perf_counter() - t
    load_avg = os.getloadavg()[0]
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rep = quantize_model(model, rec, calib, progress=False, on_transformed=hook)
    wall = time.perf_counter() - t0 - qsur["seconds"]
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    trained = next(e for e in rep.events if e.get("stage") == "ostquant" and e.get("kind") == "trained")["value"]
    print(f"{args.recipe} on {args.model}, calib {args.calib} {args.n_calib}x{args.calib_len}, {args.threads} threads, "
          f"load avg {load_avg:.1f}")
    print(f"  wall {wall:.1f} s (target < {TARGET_WALL_S} s); " + ", ".join(f"{k} {v:.1f} s" for k, v in rep.timings.items() if k != "total"))
    print(f"  training: {trained['steps']} steps, {trained['seconds']:.1f} s, {trained['seconds_per_step']:.2f} s per "
          f"step, student {trained['student']}, loss {trained['loss_first']:.4f} -> {trained['loss_last']:.4f}")
    print(f"  peak resident memory {peak_gib:.2f} GiB (target < {TARGET_PEAK_GIB:g} GiB)")
    if args.qsur:
        keep = lambda rows: [r for r in rows if r["block"] < args.qsur_blocks]  # noqa: E731
        print("\n" + format_qsur_table(keep(qsur["before"]), keep(qsur["after"])) + "\n")
    if args.eval:
        ev = dict(seq_len=512, n_tokens=args.n_tokens, progress=False, model_name=args.model)
        ppl_ost = evaluate(model, tok, args.eval, "eval", **ev).ppl
        del model
        rtn, _ = models.load(args.model, progress=False)
        rtn_rec = get_recipe(args.recipe)
        import dataclasses

        quantize_model(rtn, dataclasses.replace(rtn_rec, name="rtn", stages=("rtn",), options={}), progress=False)
        ppl_rtn = evaluate(rtn, tok, args.eval, "eval", **ev).ppl
        del rtn
        fp, _ = models.load(args.model, progress=False)
        ppl_fp = evaluate(fp, tok, args.eval, "eval", **ev).ppl
        print(f"  perplexity on {args.eval} ({args.n_tokens} tokens): fp {ppl_fp:.3f}, rtn {ppl_rtn:.3f}, "
              f"{args.recipe} {ppl_ost:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
