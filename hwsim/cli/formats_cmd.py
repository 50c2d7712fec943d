"""``hwsim formats list`` and ``hwsim formats show NAME``."""

from __future__ import annotations

import dataclasses

import pandas as pd


def format_table(names=None) -> pd.DataFrame:
    """One row per named format: kind, element, block size, scale, bits per element."""
    import hwsim.formats as F

    rows = []
    for name in names or F.list_formats():
        spec = F.get(name)
        kind = _kind(spec)
        rows.append({
            "name": spec.name,
            "kind": kind,
            "element_bits": spec.element_bits,
            "block": spec.block_size if spec.block_size is not None else "-",
            "scale_bits": spec.scale_bits,
            "bits_per_element": spec.bits_per_element(),
            "max": spec.max_value,
        })
    return pd.DataFrame(rows)


def _kind(spec) -> str:
    import hwsim.formats as F

    if isinstance(spec, F.FloatElem):
        return "element"
    if isinstance(spec, F.ScaledIntSpec):
        return "scaled-int"
    if spec.is_nvfp4:
        return "nvfp4"
    return "bfp" if getattr(spec.elem, "encoding", "") == "signmag" else "mx"


def describe(name: str) -> str:
    """Multi-line description of one format: fields, grid extremes and special values."""
    import hwsim.formats as F

    spec = F.get(name)
    lines = [f"{spec.name}: {type(spec).__name__}"]
    for f in dataclasses.fields(spec):
        lines.append(f"  {f.name:13s} {getattr(spec, f.name)!r}")
    lines.append(f"  bits/element  {spec.bits_per_element()}"
                 + (" (+ 32/numel for the tensor scale)" if getattr(spec, "tensor_scale", None) else "")
                 + (" (large-slice limit; pass a shape for the exact figure)"
                    if isinstance(spec, F.ScaledIntSpec) and spec.granularity != "group" else ""))
    elem = spec if isinstance(spec, F.FloatElem) else spec.elem
    if isinstance(elem, F.FloatElem):
        lines.append(f"  element grid  max {elem.max_value!r}, min normal 2^{elem.emin}, "
                     f"min subnormal 2^{elem.quantum_exp}")
        special = {"ieee": "Inf and NaN (top exponent reserved)",
                   "fn": "single NaN pattern S.1..1.1..1, no Inf",
                   "none": "none (NaN encodes as -0, Inf saturates)"}[elem.specials]
        lines.append(f"  specials      {special}; overflow "
                     + ("saturates" if elem.saturate else "follows IEEE 754 (Inf/NaN)"))
    else:
        lines.append(f"  element grid  integers [{elem.c_min}, {elem.c_max}] x 2^{elem.ie} "
                     f"(max {elem.max_value!r}, step 2^{elem.ie})")
    if isinstance(spec, F.BlockSpec):
        sc = spec.scale
        if isinstance(sc, F.ExpScale):
            lines.append(f"  shared scale  2^e, e in [{sc.e_min}, {sc.e_max}] ({sc.bits} bits, bias "
                         f"{sc.bias}); NaN code: {sc.nan_code if sc.nan else 'none (non-finite raises)'}")
        else:
            lines.append("  block scale   UE4M3 (E4M3, sign 0, NaN 0x7F) x fp32 tensor scale")
        lines.append(f"  block         {spec.block_size} elements along the reduction axis; rule "
                     f"{spec.rule.value}; rounding {spec.rounding.value}")
    if isinstance(spec, F.ScaledIntSpec):
        lines.append(f"  scale         {spec.scale.elem.name} per {spec.granularity}"
                     + (f" of {spec.group_size}" if spec.group_size else "")
                     + f"; divisor {spec.divisor_value:g} ("
                     + ("amax / divisor" if spec.symmetric else "(max - min) / divisor, asymmetric")
                     + f"); clip {spec.clip_ratio}")
    return "\n".join(lines)


def _list(args) -> int:
    import hwsim.formats as F

    print(format_table().to_string(index=False))
    print(f"\naliases: {', '.join(f'{a} = {b}' for a, b in F.ALIASES.items())}")
    print(f"name grammar:\n{F.GRAMMAR}")
    return 0


def _show(args) -> int:
    print(describe(args.name))
    return 0


def register(subparsers) -> None:
    from ._args import with_examples

    p = subparsers.add_parser("formats", help="list and inspect number formats",
                              **with_examples("hwsim formats list", "hwsim formats show int4_g128_asym",
                                              "hwsim formats demo --rows 64"))
    sub = p.add_subparsers(dest="formats_command", metavar="ACTION")
    pl = sub.add_parser("list", help="every named format with its bits per element",
                        **with_examples("hwsim formats list"))
    pl.set_defaults(func=_list)
    ps = sub.add_parser("show", help="full spec of one format (name grammar: see 'list')",
                        **with_examples("hwsim formats show mxfp4", "hwsim formats show int8_ch_hr"))
    ps.add_argument("name", help="a format name, e.g. mxint8, nvfp4, int4_g128_asym (see 'hwsim formats list')")
    ps.set_defaults(func=_show)
    from .demo_cmd import add_parser as add_demo

    add_demo(sub)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])
