"""Text reports of the gate-level check (one job: what ``hwsim cost synth`` prints).

``unit_text``: one synthesized unit beside the model; ``table_text``: the validation table of the
shipped counts; ``ratios``: the area ratios the seeds rest on, gate level against the model.
"""

from __future__ import annotations

from .catalog import FAMILIES, UnitSpec
from .validate import RESIDUAL_BOUND, validation_rows

#: (label, numerator unit, denominator unit, lanes of the numerator, lanes of the denominator):
#: per-lane area ratios of synthesized units
RATIOS = (
    ("MXINT4 / MXINT8 block dot", "block_dot_mxint4_acc32", "block_dot_mxint8_acc32", 1, 1),
    ("MXFP4 / MXINT4 block dot", "block_dot_mxfp4_e2m1_acc32", "block_dot_mxint4_acc32", 1, 1),
    ("MXFP8 / MXINT8 block dot", "block_dot_mxfp8_e4m3_acc32", "block_dot_mxint8_acc32", 1, 1),
    ("NVFP4 / MXFP4 (per lane)", "block_dot_nvfp4_acc32", "block_dot_mxfp4_e2m1_acc32", 16, 32),
    ("MXINT8 dot lane / INT8 MAC (int32)", "block_dot_mxint8_acc32", "int_mac_8x8_acc32", 32, 1),
    ("MXINT4 dot lane / INT4 MAC (int32)", "block_dot_mxint4_acc32", "int_mac_4x4_acc32", 32, 1),
    ("W4A8: MXINT8xMXINT4 B16 lane / INT8xINT4 MAC", "block_dot_mxint8_b16_x_mxint4_b16_acc32",
     "int_mac_8x4_acc32", 16, 1),
    ("4x4 / 2x2 multiplier", "mult_4x4", "mult_2x2", 1, 1),
    ("8x8 / 4x4 multiplier", "mult_8x8", "mult_4x4", 1, 1),
)


def ratios(counts: dict | None = None, tech=None) -> list[dict]:
    """Per-lane area ratios: gate level (transistors) and model (um^2)."""
    rows, _ = validation_rows(counts, tech)
    by = {r["unit"]: r for r in rows}
    out = []
    for label, num, den, ln, ld in RATIOS:
        if num in by and den in by:
            g = (by[num]["transistors"] / ln) / (by[den]["transistors"] / ld)
            m = (by[num]["model_area_um2"] / ln) / (by[den]["model_area_um2"] / ld)
            out.append({"ratio": label, "gate_level": g, "model": m, "model_over_gate": m / g})
    return out


def table_text(counts: dict | None = None, tech=None, all_rows: bool = False) -> str:
    rows, scale = validation_rows(counts, tech)
    val = [r for r in rows if r["validated"]]
    lo = min(r["residual"] for r in val)
    hi = max(r["residual"] for r in val)
    lines = [f"Gate-level validation: {len(val)} units (yosys, data/synth_counts.toml) against the model "
             f"(45 nm, horowitz45)",
             f"global scale {scale:.4f} um^2 per transistor (geometric mean of model area / transistors); "
             f"residual = model area / (scale x transistors)",
             f"residuals {lo:.3f} .. {hi:.3f} (bound: x{RESIDUAL_BOUND})", ""]
    fam_w = max(len(r["unit"]) for r in rows)
    lines.append(f"{'unit':{fam_w}s} {'transistors':>11s} {'cells':>6s} {'model um^2':>10s} {'residual':>8s}  note")
    for r in rows:
        if not (r["validated"] or all_rows or r["note"].startswith("IEEE")):
            continue
        lines.append(f"{r['unit']:{fam_w}s} {r['transistors']:11d} {r['cells']:6d} {r['model_area_um2']:10.1f} "
                     f"{r['residual']:8.3f}  {r['note']}")
    lines += ["", "per-lane area ratios (gate level = transistors, model = um^2):"]
    for r in ratios(counts, tech):
        lines.append(f"  {r['ratio']:46s} gate {r['gate_level']:6.3f}  model {r['model']:6.3f}  "
                     f"model/gate {r['model_over_gate']:.3f}")
    return "\n".join(lines)


def unit_text(spec: UnitSpec, result, tech=None) -> str:
    """One synthesized unit: cells, transistors, self-check, the model's price of it."""
    from .data import read_counts

    model = FAMILIES[spec.family].model(spec.p, tech)
    area = float(model.area_um2)
    lines = [f"unit {spec.name}: {FAMILIES[spec.family].doc}",
             f"  self-check: {result.vectors} {'(all)' if result.exhaustive else 'random'} vectors, the "
             f"synthesized gate netlist equals the arithmetic",
             f"  cells {result.cell_count}: " + ", ".join(f"{k.strip('$_')} {v}" for k, v in result.cells.items()),
             f"  transistors (stat -tech cmos) {result.transistors}",
             f"  model {getattr(model, 'name', type(model).__name__)}: {area:.2f} um^2 at 45 nm",
             f"  model area / transistors {area / result.transistors:.4f} um^2"]
    try:
        _, scale = validation_rows(read_counts(), tech)
        lines.append(f"  residual against the shipped global scale ({scale:.4f} um^2/transistor): "
                     f"{area / (scale * result.transistors):.3f}")
    except (FileNotFoundError, KeyError):  # pragma: no cover - data file missing
        pass
    lines.append(f"  synthesis: {result.seconds:.1f} s")
    return "\n".join(lines)
