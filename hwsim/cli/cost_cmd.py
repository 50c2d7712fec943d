"""``hwsim cost ...``: the analytic cost model (gemm, model, lqer-table, calibration, units, fit-fpga, synth)."""

from __future__ import annotations

import argparse

from ._args import int_at_least, with_examples

#: help of --acc-bits; the range is ``hwsim.cost_models.fpga.ACC_BITS_RANGE`` (checked by a test)
_ACC_BITS_HELP = "fixed-point baselines' accumulator width, 16..64 (default 32)"


#: help of --acc: the one accumulator grammar (hwsim.matmul.datapath.parse_accumulator, docs/matmul.md)
_ACC_HELP = ("accumulator, as in hwsim matmul --accumulator: int<W> / window(<W>) / <W> (a W-bit register, "
             "e.g. int24), fixed:W[:F][:wrap][:rne] (saturating unless :wrap; the clamp mux is charged), "
             "fp32 | fp16 | bf16 (float units); at least as wide as one unit's partial result "
             "(default: int32 for integer and block units, fp32 for float units)")


def _acc_bits(text: str) -> int:
    """argparse type of --acc-bits: ``fpga.check_acc_bits`` (imported only when the option is given)."""
    from hwsim.cost_models.fpga import check_acc_bits

    try:
        return check_acc_bits(int(text) if text.strip().lstrip("+-").isdigit() else text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: {exc}") from None


_FMT_HELP = "a hwsim.formats name (see 'hwsim formats list') or 'none' (not quantized: costed as fp16)"


def _array_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("accelerator")
    g.add_argument("--rows", type=int_at_least(1), default=32, help="array rows R (default 32)")
    g.add_argument("--cols", type=int_at_least(1), default=32, help="array columns C (default 32)")
    g.add_argument("--dataflow", default="ws", help="ws | os | is: weight, output or input stationary (default ws)")
    g.add_argument("--scalesim-compat", action="store_true", help="charge the full array per fold (scale-sim-v2)")
    g.add_argument("--node", default="45nm",
                   help="technology node, e.g. 45nm, 28nm, 7nm (default 45nm); below the smallest table node "
                        "(7nm) the factors are extrapolated and a warning is printed on stderr")
    g.add_argument("--library", default="horowitz45", help="horowitz45 (default) | aladdin40 | path.toml")
    g.add_argument("--tech-file", default=None, help="user technology TOML (nodes, overrides)")
    g.add_argument("--dram", default="HBM2", help="DRAM type (default HBM2)")
    g.add_argument("--bandwidth", type=float, default=None, help="DRAM bandwidth in GB/s (default 256)")
    g.add_argument("--acc", default=None, help=_ACC_HELP)


def _technology(args):
    import sys

    from hwsim.cost_models import Technology, load_user_file

    if getattr(args, "tech_file", None):
        tech = load_user_file(args.tech_file).at_node(args.node)
    else:
        tech = Technology(library=args.library, node_nm=args.node, dram_type=getattr(args, "dram", "HBM2"),
                          dram_bandwidth_gbps=getattr(args, "bandwidth", None))
    for w in tech.warnings:
        print(f"hwsim: warning: --node {args.node}: {w}", file=sys.stderr)
    return tech


def _make_array(args, acc=True):
    """The array of the options; ``acc=False`` leaves its default accumulator unset (``hwsim cost model``
    gives --acc to the linears of its kind instead, see ``workload.from_config``)."""
    from hwsim.cost_models import SystolicArray

    return SystolicArray(args.rows, args.cols, args.dataflow, args.scalesim_compat, tech=_technology(args),
                         acc=args.acc if acc else None)


_PREFIXES = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, ""), (1e-3, "m"), (1e-6, "µ"), (1e-9, "n"),
             (1e-12, "p"), (1e-15, "f"))


def eng(value: float, unit: str, digits: int = 4) -> str:
    """``value`` (in ``unit``: s, J, W, ...) with an SI prefix: 0.00342 s -> '3.42 ms'."""
    if value == 0 or value != value:
        return f"{value:g} {unit}"
    for scale, prefix in _PREFIXES:
        if abs(value) >= scale:
            return f"{value / scale:.{digits}g} {prefix}{unit}"
    scale, prefix = _PREFIXES[-1]
    return f"{value / scale:.{digits}g} {prefix}{unit}"


def area_text(um2: float) -> str:
    """Silicon area in mm² (µm² below 0.01 mm²)."""
    return f"{um2 / 1e6:.4g} mm²" if um2 >= 1e4 else f"{um2:.4g} µm²"


def bytes_text(n: float) -> str:
    """A byte count with a binary prefix (B, KiB, MiB, GiB, TiB)."""
    for scale, unit in ((2 ** 40, "TiB"), (2 ** 30, "GiB"), (2 ** 20, "MiB"), (2 ** 10, "KiB")):
        if n >= scale:
            return f"{n / scale:.4g} {unit}"
    return f"{int(n)} B"


def _total_line(key: str, v) -> tuple[str, str]:
    """(label, value with its unit) of one ``cost_model`` total."""
    if key.endswith("_pj"):
        return key[:-3].replace("_", " "), eng(v * 1e-12, "J")
    if key.endswith("_s"):
        return key[:-2].replace("_", " "), eng(v, "s")
    if key == "area_mm2":
        return "area", area_text(v * 1e6)
    if "bytes" in key:
        labels = {"dram_bytes": "DRAM traffic", "weight_bytes": "weights",
                  "kv_cache_bytes_per_seq": "KV cache per sequence"}
        return labels.get(key, key.replace("_", " ")), bytes_text(v)
    return key.replace("_", " ") if not key.startswith("TOPS") else key, (f"{v:.4g}" if isinstance(v, float) else
                                                                          str(v))


def _gemm(args) -> int:
    arr = _make_array(args)
    r = arr.gemm(args.M, args.K, args.N, args.a, args.w)
    area = arr.area(args.a, args.w, k=args.K)
    print(f"{arr!r}")
    print(f"GEMM A[{r.M}x{r.K}] ({r.a_format}) x W[{r.K}x{r.N}] ({r.w_format}); PE {r.pe}, {r.lanes} lane(s)")
    rows = [("folds (rows, cols)", f"{r.folds[0]} x {r.folds[1]}"), ("compute cycles", r.compute_cycles),
            ("stall cycles", r.stall_cycles), ("cycles", r.cycles), ("latency", eng(r.latency_s, "s")),
            ("utilization", f"{r.utilization:.4f}  (PE actions / (R*C x compute cycles); DRAM stalls excluded)"),
            ("utilization w/ stalls", f"{r.utilization * r.compute_cycles / r.cycles:.4f}  (the same over all cycles)"),
            ("mapping efficiency", f"{r.mapping_efficiency:.4f}"),
            ("energy", eng(r.energy_pj * 1e-12, "J")), ("energy per MAC", eng(r.energy_pj / r.macs * 1e-12, "J")),
            ("area", area_text(area.total_um2))]
    for k, v in rows:
        print(f"  {k:22s} {v}")
    print("energy breakdown (pJ):")
    for k, v in r.energy_breakdown.items():
        print(f"  {k:22s} {v:.6g}")
    print("area breakdown (um^2):")
    for k, v in area.breakdown.items():
        print(f"  {k:22s} {v:.6g}")
    print("DRAM bytes:", r.dram_bytes)
    print("SRAM accesses (elements):", r.sram_accesses)
    for w in r.warnings:
        print("warning:", w)
    return 0


def _model(args) -> int:
    import pandas as pd

    from hwsim.cost_models import cost_model, from_config
    from hwsim.cost_models.workload import LowRank

    arr = _make_array(args, acc=False)
    phases = ("prefill", "decode") if args.phase == "both" else (args.phase,)
    lr = LowRank(args.rank, args.lr_format, args.lr_format) if args.rank else None
    pd.set_option("display.width", 200)
    for ph in phases:
        spec = from_config(args.model, args.w, args.a, phase=ph, seq=args.seq, batch=args.batch,
                           context=args.context, lowrank=lr, hadamard_down=args.hadamard_down,
                           include_attention=not args.no_attention, head_tokens=args.head, acc=args.acc)
        res = cost_model(spec, arr, lowrank_placement=args.lowrank_placement)
        df = res.per_layer
        cols = ["linear", "M", "K", "N", "w_fmt", "x_fmt", "macs", "cycles", "stall_cycles", "energy_pj",
                "dram_bytes", "weight_bytes"]
        if args.rank:
            cols.insert(8, "lowrank_cycles")
        if args.hadamard_down:
            cols.insert(8, "transform_cycles")
        print(f"== {spec.name}: {ph}, M = {spec.M}, {spec.layers} layers; {arr!r}")
        print("workload: " + _workload_text(spec, ph))
        if args.all_layers:
            print(df[["layer"] + cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        else:
            print("layer 0 (every layer has the same linears):")
            print(df[df.layer == 0][cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
            per = df.groupby("layer")[["macs", "cycles", "energy_pj", "dram_bytes"]].sum()
            print(f"per layer: cycles {per.cycles.iloc[0]}, energy {eng(per.energy_pj.iloc[0] * 1e-12, 'J')}, "
                  f"DRAM {bytes_text(per.dram_bytes.iloc[0])}")
        print("totals:")
        for k, v in res.totals.items():
            if k == "area_um2":
                continue  # shown as area (mm²)
            label, text = _total_line(k, v)
            print(f"  {label:24s} {text}")
        for w in res.warnings:
            print("warning:", w)
        print()
    return 0


def _workload_text(spec, phase: str) -> str:
    """What the costed pass includes and leaves out (printed above the table)."""
    linears = "/".join(lin.name.removesuffix("_proj") for lin in spec.layer_linears[0])
    parts = [f"{spec.layers} x ({linears} linears"]
    if spec.include_attention:
        parts.append(" + attention QK^T and PV at " + str(spec.attn_fmt)
                     + (", KV-cache reads" if phase == "decode" else ""))
    parts.append(")")
    left = ["embeddings", "norms", "softmax", "activations", "RoPE"]
    if spec.head_M:
        where = "each sequence's last position" if spec.head_M < spec.M else "every position"
        parts.append(f" + lm_head at {spec.head.w_fmt} on {where} ({spec.head_M} row{'s' if spec.head_M != 1 else ''}, --head)")
    else:
        left.insert(0, "lm_head (--head none)")
    if not spec.include_attention:
        left.insert(0, "attention (--no-attention)")
    return "".join(parts) + "; not costed: " + ", ".join(left)


def _lqer(args) -> int:
    from hwsim.cost_models import fpga

    print(fpga.format_report(args.acc_bits))
    return 0


def _calibration(args) -> int:
    from hwsim.cost_models import calibration_table

    _technology(args)  # validates the node and library, warns when the node is extrapolated
    df = calibration_table(args.node, args.library)
    print(f"Calibration at {args.node} (library {args.library}); published = Horowitz ISSCC 2014 "
          f"(45 nm, scaled to the node), MAESTRO for the int8 MAC")
    print(df.to_string(index=False, float_format=lambda v: f"{v:.4g}", formatters={
        "energy_error": "{:+.1%}".format, "area_error": lambda v: "" if v != v else f"{v:+.1%}"}))
    return 0


def _units(args) -> int:
    from hwsim.cost_models import unit_table

    df = unit_table(args.a, args.w, args.acc, k=args.K, tech=_technology(args))
    print(df.to_string(index=False, float_format=lambda v: f"{v:.5g}"))
    return 0


def _fit(args) -> int:
    from hwsim.cost_models import fpga

    fit = fpga.fit_constants(args.acc_bits)
    for k, v in fit["constants"].items():
        print(f"{k:20s} {v:.6g}{' (at bound)' if fit['at_bound'][k] else ''}")
    for k, v in fit["residuals"].items():
        print(f"  {k:22s} {v:+.1%}")
    if args.write:
        fpga.write_constants(fit)
        print(f"wrote {fpga.DATA_FILE}")
    return 0


def _synth(args) -> int:
    from hwsim.cost_models.synth.cli import run

    return run(args)


def register(subparsers) -> None:
    cost = subparsers.add_parser(
        "cost", help="analytic area/energy/latency cost model",
        description="Analytic cost model of a systolic-array accelerator (docs/cost_models.md).",
        **with_examples("hwsim cost gemm --M 512 --K 4096 --N 11008 --a mxint8 --w mxint4",
                        "hwsim cost model --model smollm2-135m --w mxint4 --a mxint8 --phase decode",
                        "hwsim cost units --w mxfp4 --a mxfp8_e4m3"))
    sub = cost.add_subparsers(dest="cost_command", metavar="SUBCOMMAND")
    cost.set_defaults(func=lambda a: (cost.print_help(), 2)[1])

    g = sub.add_parser("gemm", help="cost one GEMM A[M,K] x W[K,N] on a systolic array",
                       description="Cycles, energy and area of one GEMM A[M,K] x W[K,N] on a systolic array.",
                       **with_examples("hwsim cost gemm --M 512 --K 4096 --N 11008 --a mxint8 --w mxint4",
                                       "hwsim cost gemm --M 1 --K 4096 --N 4096 --a int8_tok --w int4_g128 "
                                       "--acc int32 --node 7nm",
                                       "hwsim cost gemm --M 64 --K 1024 --N 1024 --a none --w mxint4  "
                                       "# weight-only: fp16 activations"))
    g.add_argument("--M", type=int_at_least(1), required=True, help="rows of A (tokens)")
    g.add_argument("--K", type=int_at_least(1), required=True, help="reduction length (input features)")
    g.add_argument("--N", type=int_at_least(1), required=True, help="columns of W (output features)")
    g.add_argument("--a", default="mxint8", help=f"activation format: {_FMT_HELP} (default mxint8)")
    g.add_argument("--w", default="mxint4", help=f"weight format: {_FMT_HELP} (default mxint4)")
    _array_args(g)
    g.set_defaults(func=_gemm)

    m = sub.add_parser("model", help="cost a whole model (per-layer table and totals)",
                       description="Cost every linear layer of a LLaMA-style model for prefill and/or decode.",
                       **with_examples("hwsim cost model --model smollm2-135m --w mxint4 --a mxint8",
                                       "hwsim cost model --phase decode --context 2048 --rank 32",
                                       "hwsim cost model --w int4_g128 --a none  # weight-only"))
    m.add_argument("--model", default="smollm2-135m", help="known name (smollm2-135m, llama-2-7b) or config path")
    m.add_argument("--w", default="mxint4", help=f"weight format of every linear: {_FMT_HELP} (default mxint4)")
    m.add_argument("--a", default="mxint8", help=f"activation format of every linear: {_FMT_HELP} (default mxint8)")
    m.add_argument("--phase", default="both", choices=["prefill", "decode", "both"], help="which pass (default both)")
    m.add_argument("--seq", type=int_at_least(1), default=512, help="prefill tokens per sequence (default 512)")
    m.add_argument("--batch", type=int_at_least(1), default=1, help="sequences per batch (default 1)")
    m.add_argument("--context", type=int_at_least(1), default=None, help="decode KV length (default: --seq)")
    m.add_argument("--rank", type=int_at_least(0), default=0,
                   help="low-rank branch rank, at most min(in, out) of every linear (0: none)")
    m.add_argument("--lr-format", default="mxint8", help=f"low-rank factor format: {_FMT_HELP} (default mxint8)")
    m.add_argument("--lowrank-placement", default="separate", choices=["separate", "shared"],
                   help="low-rank branch on a separate 1/16 array (default) or on the main array")
    m.add_argument("--hadamard-down", action="store_true", help="online Hadamard before down_proj")
    m.add_argument("--no-attention", action="store_true",
                   help="leave out the attention GEMMs (QK^T, PV) and the KV-cache reads (costed by default)")
    m.add_argument("--head", default="last", choices=["last", "all", "none"],  # workload.HEAD_TOKENS
                   help="prefill positions that go through lm_head: last (each sequence's last, the logits "
                        "generation needs; default), all (scoring, perplexity), none (leave lm_head out); "
                        "a decode step always runs it")
    m.add_argument("--all-layers", action="store_true", help="print every layer")
    _array_args(m)
    m.set_defaults(func=_model)

    q = sub.add_parser("lqer-table", help="reproduce the LQER paper's FPGA resource table",
                       **with_examples("hwsim cost lqer-table", "hwsim cost lqer-table --acc-bits 24"))
    q.add_argument("--acc-bits", type=_acc_bits, default=32, help=_ACC_BITS_HELP)
    q.set_defaults(func=_lqer)

    c = sub.add_parser("calibration", help="component calibration table vs Horowitz ISSCC 2014",
                       **with_examples("hwsim cost calibration", "hwsim cost calibration --node 7nm"))
    c.add_argument("--node", default="45nm", help="technology node (default 45nm)")
    c.add_argument("--library", default="horowitz45", help="horowitz45 (default) | aladdin40 | path.toml")
    c.set_defaults(func=_calibration)

    u = sub.add_parser("units", help="area and action energies of the units for a format pair",
                       **with_examples("hwsim cost units --w mxfp4 --a mxfp8_e4m3",
                                       "hwsim cost units --w int4_g128 --a int8_tok --acc int32 --K 4096"))
    u.add_argument("--w", "--fmt-w", dest="w", required=True, help=f"weight format: {_FMT_HELP}")
    u.add_argument("--a", "--fmt-a", dest="a", required=True, help=f"activation format: {_FMT_HELP}")
    u.add_argument("--acc", default=None, help=_ACC_HELP)
    u.add_argument("--K", type=int_at_least(1), default=4096, help="reduction length (per-token quantizers)")
    u.add_argument("--node", default="45nm", help="technology node (default 45nm)")
    u.add_argument("--library", default="horowitz45", help="horowitz45 (default) | aladdin40 | path.toml")
    u.set_defaults(func=_units)

    f = sub.add_parser("fit-fpga", help="refit the FPGA LUT constants over the LQER table",
                       **with_examples("hwsim cost fit-fpga", "hwsim cost fit-fpga --acc-bits 32 --write"))
    f.add_argument("--acc-bits", type=_acc_bits, default=32, help=_ACC_BITS_HELP)
    f.add_argument("--write", action="store_true", help="write data/fpga_lut.toml")
    f.set_defaults(func=_fit)

    y = sub.add_parser("synth", help="synthesize a unit with yosys and compare its gate count with the model",
                       description="Gate-level check of the cost model (docs/cost_models.md): structural Verilog "
                                   "of a unit, synthesized by yosys, its netlist simulated against the arithmetic, "
                                   "its transistor count beside the model's area.",
                       **with_examples("hwsim cost synth mult a=8 b=8 arch=booth4",
                                       "hwsim cost synth block_dot fa=mxint4 fw=mxint4 acc=32 --verilog mxint4.v",
                                       "hwsim cost synth fp op=mul fmt=fp8_e4m3",
                                       "hwsim cost synth --table  # the shipped validation table (no yosys)",
                                       "hwsim cost synth --refit --jobs 2  # regenerate the two data files"))
    y.add_argument("family", nargs="?", help="unit family: mult, adder, adder_tree, shifter, comparator, max_tree, "
                                             "lzc, fp, int_mac, block_dot")
    y.add_argument("params", nargs="*", help="the family's parameters as key=value (e.g. a=8 b=8 arch=booth4)")
    y.add_argument("--verilog", default=None, help="also write the unit's Verilog to this file")
    y.add_argument("--table", action="store_true", help="print the validation table of the shipped data")
    y.add_argument("--all", action="store_true", help="with --table: also the per-architecture multiplier rows")
    y.add_argument("--list", action="store_true", help="list the units a full --refit synthesizes")
    y.add_argument("--refit", action="store_true",
                   help="synthesize and check every unit, rewrite data/synth_counts.toml and data/gate_laws.toml")
    y.add_argument("--jobs", type=int_at_least(1), default=None, help="worker processes for --refit (default: cores)")
    y.set_defaults(func=_synth)
