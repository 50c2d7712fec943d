"""``hwsim cost ...``: the analytic cost model (gemm, model, lqer-table, calibration, units, fit-fpga)."""

from __future__ import annotations

import argparse


def _array_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rows", type=int, default=32, help="array rows R (default 32)")
    p.add_argument("--cols", type=int, default=32, help="array columns C (default 32)")
    p.add_argument("--dataflow", default="ws", help="ws | os | is (default ws)")
    p.add_argument("--scalesim-compat", action="store_true", help="charge the full array per fold (scale-sim-v2)")
    p.add_argument("--node", default="45nm", help="technology node, e.g. 45nm, 28nm, 7nm (default 45nm)")
    p.add_argument("--library", default="horowitz45", help="horowitz45 (default) | aladdin40 | path.toml")
    p.add_argument("--tech-file", default=None, help="user technology TOML (nodes, overrides)")
    p.add_argument("--dram", default="HBM2", help="DRAM type (default HBM2)")
    p.add_argument("--bandwidth", type=float, default=None, help="DRAM bandwidth in GB/s (default 256)")
    p.add_argument("--acc", default=None, help="accumulator: int width, int32, window(32), fp32")


def _make_array(args):
    from hwsim.cost_models import SystolicArray, Technology, load_user_file

    if args.tech_file:
        tech = load_user_file(args.tech_file).at_node(args.node)
    else:
        tech = Technology(library=args.library, node_nm=args.node, dram_type=args.dram,
                          dram_bandwidth_gbps=args.bandwidth)
    acc = int(args.acc) if args.acc and args.acc.isdigit() else args.acc
    return SystolicArray(args.rows, args.cols, args.dataflow, args.scalesim_compat, tech=tech, acc=acc)


def _gemm(args) -> int:
    arr = _make_array(args)
    r = arr.gemm(args.M, args.K, args.N, args.a, args.w)
    area = arr.area(args.a, args.w, k=args.K)
    print(f"{arr!r}")
    print(f"GEMM A[{r.M}x{r.K}] ({r.a_format}) x W[{r.K}x{r.N}] ({r.w_format}); PE {r.pe}, {r.lanes} lane(s)")
    rows = [("folds (rows, cols)", f"{r.folds[0]} x {r.folds[1]}"), ("compute cycles", r.compute_cycles),
            ("stall cycles", r.stall_cycles), ("cycles", r.cycles), ("latency (s)", f"{r.latency_s:.4g}"),
            ("utilization", f"{r.utilization:.4f}"), ("mapping efficiency", f"{r.mapping_efficiency:.4f}"),
            ("energy (pJ)", f"{r.energy_pj:.6g}"), ("energy per MAC (pJ)", f"{r.energy_pj / r.macs:.4g}"),
            ("area (um^2)", f"{area.total_um2:.6g}")]
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

    arr = _make_array(args)
    phases = ("prefill", "decode") if args.phase == "both" else (args.phase,)
    lr = LowRank(args.rank, args.lr_format, args.lr_format) if args.rank else None
    pd.set_option("display.width", 200)
    for ph in phases:
        spec = from_config(args.model, args.w, args.a, phase=ph, seq=args.seq, batch=args.batch,
                           context=args.context, lowrank=lr, hadamard_down=args.hadamard_down)
        res = cost_model(spec, arr, lowrank_placement=args.lowrank_placement)
        df = res.per_layer
        cols = ["linear", "M", "K", "N", "w_fmt", "x_fmt", "macs", "cycles", "stall_cycles", "energy_pj",
                "dram_bytes", "weight_bytes"]
        if args.rank:
            cols.insert(8, "lowrank_cycles")
        if args.hadamard_down:
            cols.insert(8, "transform_cycles")
        print(f"== {spec.name}: {ph}, M = {spec.M}, {spec.layers} layers; {arr!r}")
        if args.all_layers:
            print(df[["layer"] + cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        else:
            print("layer 0 (every layer has the same linears):")
            print(df[df.layer == 0][cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
            per = df.groupby("layer")[["macs", "cycles", "energy_pj", "dram_bytes"]].sum()
            print(f"per layer: cycles {per.cycles.iloc[0]}, energy {per.energy_pj.iloc[0]:.4g} pJ, "
                  f"DRAM {per.dram_bytes.iloc[0]} B")
        print("totals:")
        for k, v in res.totals.items():
            print(f"  {k:24s} {v:.6g}" if isinstance(v, float) else f"  {k:24s} {v}")
        for w in res.warnings:
            print("warning:", w)
        print()
    return 0


def _lqer(args) -> int:
    from hwsim.cost_models import fpga

    print(fpga.format_report(args.acc_bits))
    return 0


def _calibration(args) -> int:
    from hwsim.cost_models import calibration_table

    df = calibration_table(args.node, args.library)
    print(f"Calibration at {args.node} (library {args.library}); published = Horowitz ISSCC 2014 "
          f"(45 nm, scaled to the node), MAESTRO for the int8 MAC")
    print(df.to_string(index=False, float_format=lambda v: f"{v:.4g}", formatters={
        "energy_error": "{:+.1%}".format, "area_error": lambda v: "" if v != v else f"{v:+.1%}"}))
    return 0


def _units(args) -> int:
    from hwsim.cost_models import Technology, unit_table

    tech = Technology(library=args.library, node_nm=args.node)
    df = unit_table(args.fmt_a, args.fmt_w, args.acc, k=args.K, tech=tech)
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


def register(subparsers) -> None:
    cost = subparsers.add_parser("cost", help="analytic area/energy/latency cost model")
    sub = cost.add_subparsers(dest="cost_command", metavar="SUBCOMMAND")
    cost.set_defaults(func=lambda a: (cost.print_help(), 2)[1])

    g = sub.add_parser("gemm", help="cost one GEMM A[M,K] x W[K,N] on a systolic array")
    g.add_argument("--M", type=int, required=True)
    g.add_argument("--K", type=int, required=True)
    g.add_argument("--N", type=int, required=True)
    g.add_argument("--a", default="mxint8", help="activation format (default mxint8)")
    g.add_argument("--w", default="mxint4", help="weight format (default mxint4)")
    _array_args(g)
    g.set_defaults(func=_gemm)

    m = sub.add_parser("model", help="cost a whole model (per-layer table and totals)")
    m.add_argument("--model", default="smollm2-135m", help="known name (smollm2-135m, llama-2-7b) or config path")
    m.add_argument("--w", default="mxint4")
    m.add_argument("--a", default="mxint8")
    m.add_argument("--phase", default="both", choices=["prefill", "decode", "both"])
    m.add_argument("--seq", type=int, default=512)
    m.add_argument("--batch", type=int, default=1)
    m.add_argument("--context", type=int, default=None)
    m.add_argument("--rank", type=int, default=0, help="low-rank branch rank (0: none)")
    m.add_argument("--lr-format", default="mxint8", help="low-rank factor format")
    m.add_argument("--lowrank-placement", default="separate", choices=["separate", "shared"])
    m.add_argument("--hadamard-down", action="store_true", help="online Hadamard before down_proj")
    m.add_argument("--all-layers", action="store_true", help="print every layer")
    _array_args(m)
    m.set_defaults(func=_model)

    q = sub.add_parser("lqer-table", help="reproduce the LQER paper's FPGA resource table")
    q.add_argument("--acc-bits", type=int, default=32, help="fixed-point baselines' accumulator width")
    q.set_defaults(func=_lqer)

    c = sub.add_parser("calibration", help="component calibration table vs Horowitz ISSCC 2014")
    c.add_argument("--node", default="45nm")
    c.add_argument("--library", default="horowitz45")
    c.set_defaults(func=_calibration)

    u = sub.add_parser("units", help="area and action energies of the units for a format pair")
    u.add_argument("--fmt-w", required=True)
    u.add_argument("--fmt-a", required=True)
    u.add_argument("--acc", default=None)
    u.add_argument("--K", type=int, default=4096, help="reduction length (per-token quantizers)")
    u.add_argument("--node", default="45nm")
    u.add_argument("--library", default="horowitz45")
    u.set_defaults(func=_units)

    f = sub.add_parser("fit-fpga", help="refit the FPGA LUT constants over the LQER table")
    f.add_argument("--acc-bits", type=int, default=32)
    f.add_argument("--write", action="store_true", help="write data/fpga_lut.toml")
    f.set_defaults(func=_fit)
