"""SmolLM2 perplexity table: fp and any recipes or pipelines (default: rtn, gptq, l2qer, qera-exact,
tesseraq, tesseraq+qera-exact, gptq+l2qer) at W4A8 and at weight-only 3-bit settings.

    .venv/bin/python benchmarks/ppl_table.py                       # defaults below
    .venv/bin/python benchmarks/ppl_table.py --n-calib 8 --n-tokens 1024   # quicker

Settings: W4A8 = weights ``mxint4`` (blocks of 32 along in), activations ``mxint8`` (and, for
LQER/L²QER, A, B and the branch outputs ``mxint8``; QERA keeps A/B in high precision), rank 32.
W3 weight-only = ``mxint3`` weights, no activation quantizer, rank 64, factors in high precision;
W3g128 the same with ``int3_g128_asym`` weights (TesseraQ's paper setting, DST active).
TesseraQ runs its stage's CPU budget (docs/quant_algorithms.md, "TesseraQ").
GPTQ uses the same weight format (block exponents fixed from W) and sequential statistics.
Caveat (docs/evaluation.md): SmolLM2 was distributed as GGUF Q4_1 and is dequantized on load.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings

METHODS = ("rtn", "gptq", "l2qer", "qera-exact", "tesseraq", "tesseraq+qera-exact", "gptq+l2qer")
SETTINGS = {
    "W4A8": dict(w="mxint4", a="mxint8", rank=32),
    "W3A16": dict(w="mxint3", a="none", rank=64, lowrank="none"),
    "W3g128A16": dict(w="int3_g128_asym", a="none", rank=64, lowrank="none"),
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--calib", default="austen")
    p.add_argument("--eval", default="austen")
    p.add_argument("--n-calib", type=int, default=32)
    p.add_argument("--calib-len", type=int, default=512)
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--n-tokens", type=int, default=2048)
    p.add_argument("--settings", default=",".join(SETTINGS))
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    import torch

    torch.set_grad_enabled(False)
    from hwsim.cli.quant_cmd import format_table, run_quantize
    from hwsim.quant import get_recipe

    print("command:", " ".join([sys.executable.rsplit("/", 1)[-1], *sys.argv]), flush=True)
    fp = None
    all_rows = {}
    for sname in args.settings.split(","):
        setting = SETTINGS[sname]
        rows = []
        for m in args.methods.split(","):
            kw = dict(setting)
            if get_recipe(m).reconstruction is None:
                kw.pop("rank")
                kw.pop("lowrank", None)
            t = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = run_quantize(args.model, m, calib=args.calib, n_calib=args.n_calib, calib_len=args.calib_len,
                                   eval_corpus=args.eval, seq_len=args.seq_len, n_tokens=args.n_tokens,
                                   progress=False, fp_result=fp, hardware=None, **kw)
            fp = res.pop("_fp_result")
            rows.append(res)
            q = res.get("quant", {})
            print(f"[{sname}] {m}: ppl {q.get('ppl', float('nan')):.3f} bpw {res['bits_per_weight']:.3f} "
                  f"({time.perf_counter() - t:.0f} s)", flush=True)
        print(f"\n### SmolLM2-135M, {sname}\n")
        print(format_table(rows), flush=True)
        all_rows[sname] = rows
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(all_rows, fh, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
