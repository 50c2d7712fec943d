"""A recipe using R_xx (GPTQ by default, ``--recipe qera-exact`` ...) on SmolLM2 against the
attention-sink (BOS) weight of R_xx (issue 17): held-out perplexity on both shipped corpora at W4A8
and weight-only 3-bit, for each ``--weights`` value, with RTN.

    .venv/bin/python benchmarks/sink_weight.py                      # weights 1,16,64,256
    .venv/bin/python benchmarks/sink_weight.py --weights 1,64 --corpora brown --settings W4A8
    .venv/bin/python benchmarks/sink_weight.py --recipe qera-exact --weights 1,16

Each corpus calibrates on its calibration split and is evaluated on its evaluation split (text
the calibration never saw); GPTQ with act-order "auto" and sequential statistics, 16 x 512
calibration tokens, 2,048 evaluation tokens (the protocol of docs/quant_algorithms.md, GPTQ).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

SETTINGS = {"W4A8": dict(w="mxint4", a="mxint8"), "W3": dict(w="mxint3", a="none")}
CORPORA = ("austen", "brown")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--weights", default="1,16,64,256", help="sink weights (comma-separated)")
    p.add_argument("--corpora", default=",".join(CORPORA))
    p.add_argument("--settings", default=",".join(SETTINGS))
    p.add_argument("--n-calib", type=int, default=16)
    p.add_argument("--calib-len", type=int, default=512)
    p.add_argument("--n-tokens", type=int, default=2048)
    p.add_argument("--recipe", default="gptq", help="the recipe whose R_xx is weighted (default gptq)")
    p.add_argument("--act-order", default="auto", choices=("auto", "true", "false"),
                   help="GPTQ's act_order option (default auto: on for these static-scale formats)")
    args = p.parse_args(argv)

    import torch

    torch.set_grad_enabled(False)
    from hwsim.cli.quant_cmd import run_quantize

    print("command:", " ".join([sys.executable.rsplit("/", 1)[-1], *sys.argv]), flush=True)
    weights = [float(w) for w in args.weights.split(",")]
    act_order = {"auto": "auto", "true": True, "false": False}[args.act_order]

    def opts(recipe):
        return {"gptq": {"act_order": act_order}} if "gptq" in recipe else None
    table: dict = {}
    for corpus in args.corpora.split(","):
        fp = None
        for sname in args.settings.split(","):
            row = table.setdefault((corpus, sname), {})
            for label, recipe, sw in [("rtn", "rtn", None)] + [(f"{w:g}", args.recipe, w) for w in weights]:
                t = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    res = run_quantize(args.model, recipe, calib=corpus, eval_corpus=corpus, n_calib=args.n_calib,
                                       calib_len=args.calib_len, n_tokens=args.n_tokens, progress=False,
                                       fp_result=fp, hardware=None, sink_weight=sw, options=opts(recipe),
                                       **SETTINGS[sname])
                fp = res.pop("_fp_result")
                row["fp"] = res["fp"]["ppl"]
                row[label] = res["quant"]["ppl"]
                print(f"[{corpus} {sname}] {recipe} sink_weight {label}: ppl {row[label]:.3f} "
                      f"({time.perf_counter() - t:.0f} s)", flush=True)
    labels = ["fp", "rtn"] + [f"{w:g}" for w in weights]
    print("\n| corpus | setting | fp | RTN | " + " | ".join(f"{args.recipe} sink {w:g}" for w in weights) + " |")
    print("|---" * (len(labels) + 2) + "|")
    for (corpus, sname), row in table.items():
        best = min(weights, key=lambda w: row[f"{w:g}"])
        cells = [f"**{row[k]:.2f}**" if k == f"{best:g}" else f"{row[k]:.2f}" for k in labels]
        print(f"| {corpus} | {sname} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
