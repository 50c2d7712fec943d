"""SmolLM2 perplexity table of issue 11: fp, rtn, gptq, qera-exact, ostquant, ostquant+qera-exact
at W4A4KV4 and W4A8, every method at exactly the formats of the OSTQuant preset.

    .venv/bin/python benchmarks/ost_table.py                          # calib austen 16 x 512, eval brown
    .venv/bin/python benchmarks/ost_table.py --settings W4A8 --methods rtn,ostquant

Settings (from the preset ``ostquant-w4a4kv4``): W4A4KV4 = weights ``int4_ch`` (symmetric per
output channel), activations ``int4_tok_asym`` (o_proj's input ``int4_g128_asym``), K and V
``int4_g128_asym`` (one group per head of 64); W4A8 = the same weights, activations
``int8_tok_asym``, no KV quantizer. Methods: ``ostquant`` is the preset's ``ostquant+gptq``
(the stage's CPU budget: 16 steps of 1 x 256 tokens), ``ostquant+qera-exact`` is
``ostquant+gptq+qera-exact``; ``qera-exact`` is ``rtn+qera-exact`` (rank 32, factors in high
precision, R_xx of the fp model). GPTQ uses sequential statistics and act-order "auto".
Calibration on one corpus, evaluation on another one (text the calibration never saw).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
import warnings

METHODS = {
    "rtn": ("rtn",),
    "gptq": ("gptq",),
    "qera-exact": ("rtn", "qera-exact"),
    "ostquant": ("ostquant", "gptq"),
    "ostquant+qera-exact": ("ostquant", "gptq", "qera-exact"),
}
SETTINGS = ("W4A4KV4", "W4A8")
RANK = 32


def recipe(setting: str, stages: tuple[str, ...]):
    """The preset's formats with ``stages``; options and statistics as the module docstring says."""
    from hwsim.quant import get_recipe

    base = get_recipe("ostquant-w4a4kv4")
    if setting == "W4A8":
        base = get_recipe(base, layer={"x": "int8_tok_asym"}, overrides=(), attention={"k": None, "v": None})
    if "qera-exact" in stages:
        base = get_recipe(base, layer={"rank": RANK, "a": None, "b": None, "xa": None, "xab": None})
    opts = {"gptq": {"act_order": "auto"}}
    source = "sequential" if "gptq" in stages else get_recipe("+".join(stages)).stats_source
    return dataclasses.replace(base, name="+".join(stages), stages=stages, stats_source=source,
                               options={k: v for k, v in opts.items() if k in stages})


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--calib", default="austen")
    p.add_argument("--eval", default="brown")
    p.add_argument("--n-calib", type=int, default=16)
    p.add_argument("--calib-len", type=int, default=512)
    p.add_argument("--n-tokens", type=int, default=4096)
    p.add_argument("--settings", default=",".join(SETTINGS))
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    import torch

    from hwsim.eval import data, models
    from hwsim.eval.perplexity import evaluate
    from hwsim.quant import quantize_model

    torch.set_num_threads(args.threads)
    print("command:", " ".join([sys.executable.rsplit("/", 1)[-1], *sys.argv]), flush=True)
    ev = dict(seq_len=512, n_tokens=args.n_tokens, progress=False, model_name=args.model)
    fp_model, tok = models.load(args.model, progress=False)
    calib = data.calibration_set(tok, args.calib, n=args.n_calib, seq_len=args.calib_len, seed=0)
    table = {"fp": {s: evaluate(fp_model, tok, args.eval, "eval", **ev).ppl for s in args.settings.split(",")}}
    print(f"fp: {table['fp']}", flush=True)
    for m in args.methods.split(","):
        table[m] = {}
        for s in args.settings.split(","):
            model, _ = models.load(args.model, progress=False)
            t = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                quantize_model(model, recipe(s, METHODS[m]), calib, progress=False)
            secs = time.perf_counter() - t
            table[m][s] = evaluate(model, tok, args.eval, "eval", **ev).ppl
            print(f"[{s}] {m}: ppl {table[m][s]:.3f} ({secs:.0f} s quantize)", flush=True)
            del model
    settings = args.settings.split(",")
    print(f"\n### SmolLM2-135M, calib {args.calib} {args.n_calib}x{args.calib_len}, {args.eval} "
          f"{args.n_tokens} tokens\n")
    print("| method | " + " | ".join(settings) + " |")
    print("|---" * (len(settings) + 1) + "|")
    for m, row in table.items():
        print(f"| {m} | " + " | ".join(f"{row[s]:.2f}" for s in settings) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
