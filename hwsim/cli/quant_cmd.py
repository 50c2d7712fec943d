"""hwsim quantize: quantize a model with a recipe, then compare perplexity with full precision.

Prints a table of perplexity (fp vs quantized), bits per weight, time per stage and the cost of the
quantized model on an accelerator. Every argument is checked before the model is loaded.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from ._args import int_at_least, with_examples

#: default --threads: the cores this process may use, at most this many (BLAS contention on a
#: shared machine costs far more than the last cores gain)
DEFAULT_MAX_THREADS = 4

__all__ = ["register", "handler", "run_quantize", "format_table"]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "quantize", help="quantize a model with a recipe (rtn, gptq, tesseraq, lqer, l2qer, qera-*) and measure "
                         "perplexity", description=__doc__,
        **with_examples("hwsim quantize --model smollm2-135m --recipe l2qer --w mxint4 --a mxint8 --rank 32",
                        "hwsim quantize --recipe gptq+qera-exact --w int3_g128_asym --rank 32 --eval brown",
                        "hwsim quantize --recipe my_recipe.toml --save out/q  # a TOML recipe file (docs/quant.md)",
                        "hwsim quantize --recipe rtn --w mxint4 --a mxint8 --mode exact --accumulator fixed:24:8:rne",
                        "hwsim quantize --list-recipes"))
    p.add_argument("--model", default="smollm2-135m", help="zoo name, local directory or HF id (default smollm2-135m)")
    p.add_argument("--recipe", default="l2qer",
                   help="preset name (see --list-recipes), stages joined by '+' (e.g. gptq+l2qer, "
                        "tesseraq+qera-exact), or a TOML recipe file (docs/quant.md)")
    p.add_argument("--w", default=None, help="weight format (hwsim.formats name), e.g. mxint4, bfp4, int4_g128_asym")
    p.add_argument("--a", default=None,
                   help="activation format (X and, where the recipe quantizes them, XA/XAB and A/B); 'none' = bypass")
    p.add_argument("--lowrank-fmt", default=None, help="format of the low-rank factors A and B ('none' = high precision)")
    p.add_argument("--rank", type=int_at_least(0), default=None, help="rank k of the low-rank branch")
    p.add_argument("--mode", choices=("fake", "exact"), default=None, help="emulation mode (default fake)")
    p.add_argument("--accumulator", default=None, metavar="SPEC",
                   help="exact mode's accumulator: fp32 (default), exact, fixed:W[:F][:saturate|:wrap][:truncate|:rne] "
                        "(e.g. fixed:24:8:saturate:rne) or int<W>; its events (saturations, wraps, bits lost) are "
                        "reported per layer")
    p.add_argument("--calib", default="austen", help="calibration corpus (austen, brown, wikitext2, file:PATH)")
    p.add_argument("--n-calib", type=int_at_least(1), default=32, help="calibration sequences (default 32)")
    p.add_argument("--calib-len", type=int_at_least(1), default=512, help="tokens per calibration sequence (default 512)")
    p.add_argument("--eval", default="austen", help="evaluation corpus, or 'none' to skip perplexity")
    p.add_argument("--seq-len", type=int_at_least(1), default=512, help="evaluation window length (default 512)")
    p.add_argument("--n-tokens", type=int_at_least(0, "0: the whole split"), default=2048, help="evaluated tokens cap (default 2048; 0 = whole split)")
    p.add_argument("--no-fp", action="store_true", help="skip the full-precision perplexity")
    p.add_argument("--seed", type=int, default=0, help="calibration sampling seed")
    p.add_argument("--save", default=None, help="directory to save the quantized model to")
    p.add_argument("--json", default=None, help="write the results as JSON to this file")
    p.add_argument("--opt", action="append", default=[], metavar="STAGE.KEY=VALUE",
                   help="stage option, repeatable, e.g. gptq.act_order=false (values parsed as JSON, else strings)")
    p.add_argument("--sink-weight", type=float, default=None,
                   help="weight of each calibration sequence's first (BOS, attention-sink) position in the statistics "
                        "(default: 16 in R_xx, 1 in AWQ's; docs/quant_algorithms.md)")
    p.add_argument("--list-recipes", action="store_true",
                   help="list the recipe presets and the registered stages with their options, and exit")
    hw = p.add_argument_group("accelerator the quantized model is costed on (hwsim.cost_models)")
    hw.add_argument("--rows", type=int_at_least(1), default=32, help="systolic array rows (default 32)")
    hw.add_argument("--cols", type=int_at_least(1), default=32, help="systolic array columns (default 32)")
    hw.add_argument("--dataflow", default="ws", help="ws | os | is (default ws)")
    hw.add_argument("--node", type=float, default=7.0, help="technology node in nm (default 7)")
    hw.add_argument("--dram", default="HBM2", help="DRAM type (default HBM2)")
    hw.add_argument("--prefill-seq", type=int_at_least(1), default=512, help="tokens of the costed prefill pass (default 512)")
    hw.add_argument("--decode-context", type=int_at_least(1), default=512, help="KV length of the costed decode step (default 512)")
    hw.add_argument("--no-cost", action="store_true", help="skip the cost of the quantized model")
    p.add_argument("--threads", type=int_at_least(1), default=None,
                   help=f"torch and numba threads (default: the cores this process may use, at most "
                        f"{DEFAULT_MAX_THREADS})")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--qsur", action="store_true",
                   help="print a per-layer QSUR table of the quantizer inputs before and after the recipe's transforms "
                        "(on the first calibration sequences, at most 4096 tokens)")
    p.set_defaults(func=handler)


def handler(args) -> int:
    if args.list_recipes:
        print(list_recipes_text())
        return 0
    hardware = check_arguments(args)
    from hwsim.quant.threads import configure_threads

    configure_threads(args.threads or min(len(os.sched_getaffinity(0)), DEFAULT_MAX_THREADS))
    res = run_quantize(args.model, args.recipe, w=args.w, a=args.a, lowrank=args.lowrank_fmt, rank=args.rank,
                       mode=args.mode, accumulator=args.accumulator, calib=args.calib, n_calib=args.n_calib, calib_len=args.calib_len,
                       eval_corpus=None if str(args.eval).lower() == "none" else args.eval,
                       seq_len=args.seq_len, n_tokens=args.n_tokens or None, with_fp=not args.no_fp,
                       seed=args.seed, save=args.save, progress=not args.quiet, hardware=hardware,
                       options=parse_options(args.opt), sink_weight=args.sink_weight, qsur=args.qsur)
    res.pop("_fp_result", None)
    print(format_table([res]))
    if res.get("qsur"):
        from hwsim.quant.qsur import format_qsur_table

        print("\n" + format_qsur_table(res["qsur"]["before"], res["qsur"]["after"]))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=1, default=str)
    return 0


def check_arguments(args):
    """Every argument checked before the model is loaded (issue 15): recipe and formats, model
    name, corpora, save and JSON paths, accelerator. Returns the HardwarePoint (None with --no-cost)."""
    import sys

    from hwsim.eval import data as edata
    from hwsim.eval import models as emodels
    from hwsim.quant.serialize import check_save_path

    if args.accumulator is not None:
        _check_accumulator_flag(args.accumulator)
    rec = build_recipe(args.recipe, w=args.w, a=args.a, lowrank=args.lowrank_fmt, rank=args.rank, mode=args.mode,
                       options=parse_options(args.opt), sink_weight=args.sink_weight, accumulator=args.accumulator)
    emodels.check_model(args.model)
    if rec.needs_calibration or args.qsur:
        _checked("--calib", edata.check_corpus, args.calib)
    if str(args.eval).lower() != "none":
        _checked("--eval", edata.check_corpus, args.eval)
    if args.save:
        check_save_path(args.save)
    if args.json:
        parent = os.path.dirname(os.path.abspath(args.json))
        if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
            raise ValueError(f"--json {args.json!r}: directory {parent!r} does not exist or is not writable")
    if args.no_cost:
        return None
    from hwsim.dse import HardwarePoint, accelerator

    hardware = HardwarePoint(rows=args.rows, cols=args.cols, dataflow=args.dataflow, node_nm=args.node,
                             dram=args.dram, prefill_seq=args.prefill_seq, decode_context=args.decode_context)
    for w in accelerator(hardware).tech.warnings:  # validates the accelerator; an extrapolated node is said
        print(f"hwsim: warning: --node {args.node:g}: {w}", file=sys.stderr)
    _check_costed_accumulator(rec)
    return hardware


def _check_costed_accumulator(rec) -> None:
    """In exact mode the cost follows the accumulator (docs/cost_models.md): one the cost model
    refuses on the recipe's default (activation, weight) pair is an error before any work."""
    if rec.mode != "exact" or rec.accumulator == "fp32":
        return
    from hwsim.cost_models import build_pe
    from hwsim.cost_models.workload import _hp, _record_acc

    lay = rec.layer
    x, w = _hp(lay.x), _hp(lay.w)
    acc = _record_acc({"mode": "exact", "accumulator": rec.accumulator}, x, None)
    if acc is None:
        return
    try:
        build_pe(x, w, acc)
    except ValueError as exc:
        raise ValueError(f"--accumulator {rec.accumulator!r}: the cost model cannot size it on "
                         f"{lay.w or 'none'} x {lay.x or 'none'} ({exc}); give a wider accumulator or --no-cost") from None


def _check_accumulator_flag(value: str) -> None:
    """--accumulator parses (hwsim.matmul grammar); the error names the flag, the value, the valid forms."""
    from hwsim.quant.qlinear import check_accumulator

    check_accumulator(value, "--accumulator")


def _checked(flag: str, check, value):
    try:
        return check(value)
    except ValueError as exc:
        raise ValueError(f"{flag} {value!r}: {exc}") from None


def list_recipes_text() -> str:
    """The presets and every registered stage with its options (``--list-recipes``)."""
    from hwsim.quant import get_recipe, list_recipes
    from hwsim.quant.stages import all_stages

    lines = ["presets:"]
    for name in list_recipes():
        r = get_recipe(name)
        lay = r.layer
        lines.append(f"  {name:18s} stages={'+'.join(r.stages):22s} W={lay.w} X={lay.x} rank={lay.rank} "
                     f"A={lay.a} B={lay.b} XA={lay.xa} XAB={lay.xab} axes={lay.lowrank_axes}")
    lines.append("stages (a pipeline joins them with '+': [transform]* + rounding [+ reconstruction]; "
                 "options: --opt STAGE.KEY=VALUE):")
    for stage in all_stages().values():
        lines.append("  " + stage.summary())
    return "\n".join(lines)


def parse_options(items) -> dict[str, dict[str, Any]]:
    """``["gptq.act_order=false", ...]`` -> ``{"gptq": {"act_order": False}}`` (JSON values, else strings)."""
    out: dict[str, dict[str, Any]] = {}
    for item in items or ():
        key, sep, val = str(item).partition("=")
        stage, dot, name = key.partition(".")
        if not sep or not dot or not stage or not name:
            raise ValueError(f"--opt {item!r}: expected STAGE.KEY=VALUE, e.g. gptq.act_order=false")
        try:
            v = json.loads(val)
        except ValueError:
            v = val
        out.setdefault(stage.strip(), {})[name.strip()] = v
    return out


def build_recipe(recipe: str, *, w=None, a=None, lowrank=None, rank=None, mode=None, options=None,
                 sink_weight=None, accumulator=None):
    import dataclasses

    from hwsim.quant import get_recipe, validate_recipe, with_formats

    r = with_formats(get_recipe(recipe), w=w, a=a, lowrank=lowrank, rank=rank, mode=mode, accumulator=accumulator)
    if options:
        merged = {k: dict(v) for k, v in r.options.items()}
        for stage, kv in options.items():
            merged.setdefault(stage, {}).update(kv)
        r = dataclasses.replace(r, options=merged)
    if sink_weight is not None:
        r = dataclasses.replace(r, sink_weight=float(sink_weight))
    return validate_recipe(r)


def run_quantize(model_name: str, recipe: str, *, w=None, a=None, lowrank=None, rank=None, mode=None,
                 accumulator: str | None = None, calib: str = "austen", n_calib: int = 32, calib_len: int = 512, eval_corpus: str | None = "austen",
                 seq_len: int = 512, n_tokens: int | None = 2048, with_fp: bool = True, seed: int = 0,
                 save: str | None = None, progress: bool = True, fp_result: Any = None,
                 hardware: Any = None, options: dict | None = None, sink_weight: float | None = None,
                 qsur: bool = False) -> dict[str, Any]:
    """Load, (evaluate fp,) calibrate + quantize, evaluate, and cost the quantized model on
    ``hardware`` (a ``hwsim.dse.HardwarePoint``; None: no cost); returns a plain dict. In exact mode
    with a fixed-point accumulator, ``acc_events`` holds the accumulator events of the evaluation per
    layer and ``acc_events_total`` their sum."""
    import torch

    from hwsim.eval import data as edata
    from hwsim.eval import models as emodels
    from hwsim.eval.perplexity import evaluate
    from hwsim.quant import quantize_model, save_quantized

    torch.manual_seed(seed)
    rec = build_recipe(recipe, w=w, a=a, lowrank=lowrank, rank=rank, mode=mode, options=options,
                       sink_weight=sink_weight, accumulator=accumulator)
    times: dict[str, float] = {}
    t = time.perf_counter()
    model, tok = emodels.load(model_name, progress=progress)
    times["load"] = time.perf_counter() - t
    out: dict[str, Any] = {"model": model_name, "recipe": rec.name, "stages": list(rec.stages),
                           "w": rec.layer.w, "x": rec.layer.x, "rank": rec.layer.rank if rec.reconstruction else 0,
                           "lowrank": [rec.layer.a, rec.layer.b] if rec.reconstruction else None,
                           "mode": rec.mode, "accumulator": rec.accumulator}
    ev = dict(seq_len=seq_len, n_tokens=n_tokens, progress=progress, model_name=model_name)
    if eval_corpus and with_fp:
        if fp_result is None:
            t = time.perf_counter()
            fp_result = evaluate(model, tok, eval_corpus, "eval", **ev)
            times["eval_fp"] = time.perf_counter() - t
        out["fp"] = fp_result.as_dict()
    calib_set = None
    if rec.needs_calibration or qsur:
        t = time.perf_counter()
        calib_set = edata.calibration_set(tok, calib, n=n_calib, seq_len=calib_len, seed=seed)
        times["calib_data"] = time.perf_counter() - t
    hook = None
    if qsur:  # QSUR of every quantizer input, before and after the transform stages
        from hwsim.quant.calibrate import as_token_ids
        from hwsim.quant.qsur import qsur_table

        ids = as_token_ids(calib_set)
        out["qsur"] = {"before": qsur_table(model, ids), "after": None}
        hook = lambda m, ad: out["qsur"].__setitem__("after", qsur_table(m, ids, adapter=ad))  # noqa: E731
    t = time.perf_counter()
    report = quantize_model(model, rec, calib_set, progress=progress, on_transformed=hook)
    times["quantize"] = time.perf_counter() - t
    for k, v in report.timings.items():
        if k != "total":
            times[f"quantize.{k}"] = v
    out["bits_per_weight"] = report.bits_per_weight
    out["n_quantized"] = report.n_quantized
    out["calib"] = report.calib
    out["events"] = len(report.events)
    out["options"] = {k: dict(v) for k, v in rec.options.items()}
    if report.resolved:
        out["resolved"] = report.resolved
    if eval_corpus:
        from hwsim.quant import acc_events, acc_events_total, reset_acc_events

        reset_acc_events(model)   # the events of the evaluation only (not of calibration passes)
        t = time.perf_counter()
        res = evaluate(model, tok, eval_corpus, "eval", **ev)
        times["eval_q"] = time.perf_counter() - t
        out["quant"] = res.as_dict()
        if rec.mode == "exact":
            out["acc_events"] = acc_events(model)
            out["acc_events_total"] = acc_events_total(model)
    if hardware is not None:
        from hwsim.dse import cost_metrics
        from hwsim.quant import model_records

        t = time.perf_counter()
        out["cost"] = {"hardware": hardware.to_dict(), "label": hardware.label,
                       **cost_metrics(model_records(model), model.config, hardware)}
        times["cost"] = time.perf_counter() - t
    if save:
        t = time.perf_counter()
        save_quantized(model, save, extra={"cli": out})
        times["save"] = time.perf_counter() - t
    out["times"] = times
    out["_fp_result"] = fp_result
    return out


def format_table(results: list[dict[str, Any]]) -> str:
    """Markdown table: one fp row (if present) then one row per quantized result, plus times."""
    lines = []
    first = results[0]
    proto = (first.get("quant") or first.get("fp") or {}).get("protocol")
    if proto:
        lines.append(f"protocol: model={proto['model']} corpus={proto['corpus']}:{proto['split']} "
                     f"seq_len={proto['seq_len']} n_tokens={proto['n_tokens']} metric={proto['metric']} "
                     f"bos={proto['bos']} dtype={proto['dtype']}")
    if first.get("calib"):
        lines.append("calibration: " + ", ".join(f"{k}={v}" for k, v in first["calib"].items()))
    lines.append("")
    lines.append("| method | stages | W | X | rank | bits/weight | ppl | bits/byte | quantize s |")
    lines.append("|---|---|---|---|---|---|---|---|---|")
    fp = next((r["fp"] for r in results if r.get("fp")), None)
    if fp:
        lines.append(f"| fp | - | {proto['dtype'] if proto else 'fp32'} | - | - | 32 | {fp['ppl']:.3f} | "
                     f"{fp['bits_per_byte']:.4f} | - |")
    for r in results:
        q = r.get("quant") or {}
        ppl = f"{q['ppl']:.3f}" if q else "-"
        bpb = f"{q['bits_per_byte']:.4f}" if q else "-"
        lines.append(f"| {r['recipe']} | {'+'.join(r['stages'])} | {r['w']} | {r['x'] or '-'} | {r['rank'] or '-'} | "
                     f"{r['bits_per_weight']:.3f} | {ppl} | {bpb} | {r['times'].get('quantize', 0):.1f} |")
    costed = [r for r in results if r.get("cost")]
    if costed:
        lines.append("")
        lines.append(f"cost on {costed[0]['cost']['label']} (prefill {costed[0]['cost']['hardware']['prefill_seq']} "
                     f"tokens; decode one token at context {costed[0]['cost']['hardware']['decode_context']}):")
        lines.append("")
        lines.append("| method | area mm^2 | prefill uJ/token | decode uJ/token | prefill ms | decode ms | weights MB |")
        lines.append("|---|---|---|---|---|---|---|")
        for r in costed:
            c = r["cost"]
            lines.append(f"| {r['recipe']} | {c['area_mm2']:.3f} | {c['energy_per_token_uj']:.3f} | "
                         f"{c['decode_energy_per_token_uj']:.3f} | {c['prefill_latency_ms']:.3f} | "
                         f"{c['decode_latency_ms']:.4f} | {c['weight_mb']:.2f} |")
            if c.get("not_costed"):
                lines.append(f"not costed (outside the decoder layers): {', '.join(c['not_costed'])}")
    lines.append("")
    for r in results:
        if r.get("options") or r.get("resolved"):
            lines.append(f"options [{r['recipe']}]: {json.dumps(r.get('options') or {})}"
                         + (f"; resolved: {json.dumps(r['resolved'])}" if r.get("resolved") else ""))
    for r in results:
        tot = r.get("acc_events_total")
        if r.get("mode") == "exact":
            lines.append(f"exact mode [{r['recipe']}]: accumulator {r.get('accumulator', 'fp32')}"
                         + (f"; events over the evaluation: {_events_text(tot)}; "
                            f"{sum(1 for e in r['acc_events'].values() if e['saturations'] + e['wraps'])} of "
                            f"{len(r['acc_events'])} layers overflowed (per layer: --json)" if tot else ""))
    for r in results:
        lines.append(f"time per stage [{r['recipe']}] (s): " + ", ".join(
            f"{k}={v:.1f}" for k, v in r["times"].items()))
    return "\n".join(lines)


def _events_text(e: dict[str, Any]) -> str:
    return (f"{e['adds']} adds, {e['saturations']} saturations, {e['wraps']} wraps, {e['rounded']} rounded "
            f"(max {e['max_bits_lost']} bits lost), {e['flushed']} flushed"
            + ("" if e.get("complete", True) else " (incomplete count)"))
