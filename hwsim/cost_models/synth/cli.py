"""``hwsim cost synth``: what the sub-command does (one job; the parser lives in hwsim.cli.cost_cmd)."""

from __future__ import annotations

import sys

FAMILY_HELP = ("mult a= b= arch=baugh_wooley|booth4|unsigned; adder w=; adder_tree inputs= w=; "
               "shifter width= positions=; comparator w=; max_tree inputs= w=; lzc w=; fp op=mul|add fmt=; "
               "int_mac a= b= acc=; block_dot fa= fw= acc= [window=]")


def parse_params(items: list[str]) -> dict:
    """['a=8', 'fmt=fp8_e4m3'] -> {'a': 8, 'fmt': 'fp8_e4m3'}; ValueError naming a bad item."""
    out = {}
    for it in items:
        key, sep, val = it.partition("=")
        if not sep or not key:
            raise ValueError(f"parameter {it!r} is not key=value ({FAMILY_HELP})")
        out[key] = int(val) if val.lstrip("-").isdigit() else val
    return out


def run(args) -> int:
    from . import yosys
    from .catalog import FAMILIES, default_units, unit
    from .report import table_text, unit_text

    if args.table:
        print(table_text(all_rows=args.all))
        return 0
    if args.list:
        for s in default_units():
            print(s.name)
        return 0
    if args.refit:
        from .flow import refit

        done = [0]
        total = len(default_units())

        def progress(r):
            done[0] += 1

        print(f"synthesizing and checking {total} units with {yosys.version()} ...", file=sys.stderr)
        rep = refit(args.jobs, progress=progress)
        print(f"wrote data/synth_counts.toml ({rep.units} units) and data/gate_laws.toml in {rep.seconds:.0f} s "
              f"({rep.cpu_seconds:.0f} CPU s)")
        print(table_text())
        return 0
    if not args.family:
        print("hwsim cost synth: give a unit family and its parameters, --table, --list or --refit "
              f"(families: {', '.join(sorted(FAMILIES))})", file=sys.stderr)
        return 2
    try:
        spec = unit(args.family, **parse_params(args.params))
        mod = FAMILIES[spec.family].build(spec.p)
    except (ValueError, KeyError, TypeError) as exc:
        msg = exc.args[0] if isinstance(exc, ValueError) else f"missing or unknown parameter {exc}"
        print(f"hwsim cost synth: {msg}\n  families and parameters: {FAMILY_HELP}", file=sys.stderr)
        return 2
    from .flow import header, synthesize_unit

    if args.verilog:
        with open(args.verilog, "w") as fh:
            fh.write(mod.verilog(header()))
    try:
        res = synthesize_unit(spec)
    except yosys.YosysMissing as exc:
        print(f"hwsim cost synth: {exc}", file=sys.stderr)
        return 1
    print(unit_text(spec, res))
    return 0
