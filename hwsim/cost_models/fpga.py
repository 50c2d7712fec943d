"""FPGA LUT model and the LQER-paper comparison mode (docs/spec/cost_model.md §7).

The published numbers are post-synthesis FPGA resource counts ("FPGA LUT (HLS design)") of the
MASE HLS designs for one token through one 4096 -> 11008 layer on 16-lane dot-product engines,
with the L2QER low-rank hardware counted at 1/16. They are not ASIC areas.

The model: each design is an inventory (engines, FP16 operators, multiplier bit-products, adder
bits, mux bits) derived from its formats; LUTs = inventory . constants, with five global constants
fitted once by bounded least squares on relative residuals over the seven published rows.
There is no per-method or per-row constant.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DATA_FILE = Path(__file__).with_name("data") / "fpga_lut.toml"
LANES = 16
CONSTANTS = ("lut_per_bitprod", "lut_per_adder_bit", "lut_per_mux_bit", "lut_per_fp16_op", "lut_per_engine")
#: physical floors for UltraScale+ fabric (0.5 LUT per bit-product, one LUT per carry-chain bit,
#: a LUT6 is a 4:1 mux = three 2:1 mux bits)
LOWER_BOUNDS = (0.5, 1.0, 1.0 / 3.0, 0.0, 0.0)
LABEL = "FPGA LUT (HLS design)"


@dataclass(frozen=True)
class Inventory:
    """Resource inventory of an HLS design (counts, not LUTs)."""

    engines: float = 0.0
    fp16_ops: float = 0.0
    bitprods: float = 0.0
    adder_bits: float = 0.0
    mux_bits: float = 0.0
    register_bits: float = 0.0

    def __add__(self, o: "Inventory") -> "Inventory":
        return Inventory(*(a + b for a, b in zip(self.vector(True), o.vector(True))))

    def scaled(self, k: float) -> "Inventory":
        return Inventory(*(k * a for a in self.vector(True)))

    def vector(self, with_regs: bool = False) -> tuple[float, ...]:
        v = (self.bitprods, self.adder_bits, self.mux_bits, self.fp16_ops, self.engines)
        if with_regs:
            return (self.engines, self.fp16_ops, self.bitprods, self.adder_bits, self.mux_bits, self.register_bits)
        return v

    def luts(self, constants) -> float:
        return float(np.dot(self.vector(), constants))


def shifter_mux_bits(width: int, positions: int) -> int:
    """2:1 mux bits of a barrel shifter: width * ceil(log2(positions + 1))."""
    return width * math.ceil(math.log2(positions + 1)) if positions > 0 else 0


# --------------------------------------------------------------------------------------------
# design inventories (docs/spec/cost_model.md §7.4), P = 16 lanes
# --------------------------------------------------------------------------------------------

def fp16_engine() -> Inventory:
    return Inventory(engines=1, fp16_ops=2 * LANES)


def fixed_point_engine(a: int, b: int, acc_bits: int = 32) -> Inventory:
    """16 a x b multipliers; 15 tree adders + accumulator, all at acc_bits (HLS ``int`` sums)."""
    return Inventory(engines=1, bitprods=LANES * a * b, adder_bits=LANES * acc_bits, register_bits=acc_bits)


def mxint_engine(a: int, b: int) -> Inventory:
    """MASE block-FP dot-product engine a x b: narrow tree of declared width, block accumulator."""
    m = max(a, b) - 1
    adders = (LANES - 1) * (a + b + 2) + 3 * 9 + max(a, b)
    mux = 3 * (a + b + 2) + shifter_mux_bits(m, m) + 2 * m
    return Inventory(engines=1, bitprods=LANES * a * b, adder_bits=adders, mux_bits=mux, register_bits=9 + m + 1)


def reblock_cast(m: int) -> Inventory:
    """Re-blocking cast of 16 elements: max-exponent compares/selects + per-element subtract/shift."""
    return Inventory(engines=1, adder_bits=(LANES - 1) * 9 + LANES * 9,
                     mux_bits=(LANES - 1) * 9 + LANES * shifter_mux_bits(m, m))


def block_add(m: int) -> Inventory:
    """Final block add of 16 elements."""
    return Inventory(engines=1, adder_bits=LANES * (9 + m + 1), mux_bits=LANES * (shifter_mux_bits(m, m) + 2 * m))


def l2qer_mxint(a_bits: int, w_bits: int, branch_bits: int | None = None, branch_share: float = 1 / LANES
                ) -> tuple[Inventory, Inventory]:
    """(main, branch) inventories of L2QER with MXINT formats.

    main: MXINT engine a x w; branch (X.A and XA.B): 2 engines at the branch widths (activations
    at ``a_bits``, the low-rank factors at ``branch_bits``, default = a_bits), 2 re-blocking casts
    and the final block add. The branch is charged at ``branch_share`` (1/16: 1/16 of the lanes).
    """
    bb = a_bits if branch_bits is None else branch_bits
    m = max(a_bits, bb) - 1
    branch = mxint_engine(a_bits, bb) + mxint_engine(a_bits, bb) + reblock_cast(m) + reblock_cast(m) + block_add(m)
    return mxint_engine(a_bits, w_bits), branch.scaled(branch_share)


def llm_int4(acc_bits: int = 32) -> Inventory:
    """LLM.int4(): fp16 outlier engine + int4 engine + quantize/gather/scatter (docs/spec/cost_model.md §7.4)."""
    return Inventory(engines=4, fp16_ops=32 + 32 + 32 + 16 + 16 + 16, bitprods=LANES * 4 * 4,
                     adder_bits=LANES * acc_bits + LANES * 16, mux_bits=LANES * 16)


def gptq_awq_w4() -> Inventory:
    """GPTQ/AWQ W4 g128: 16 dequantizers (int->fp16 + 2 mul) + FP16 engine."""
    return Inventory(engines=2, fp16_ops=LANES * 3 + 2 * LANES)


# --------------------------------------------------------------------------------------------
# published table (docs/spec/cost_model.md §7.2)
# --------------------------------------------------------------------------------------------

PUBLISHED = (
    # method, published area, description of the cell
    ("FP16", 6125.0, "6125"),
    ("LLM.int4()", 130019.0, "129619 + 400"),
    ("GPTQ/AWQ W4", 85714.0, "85514 + 200"),
    ("AQAS-like W4A8", 2760.0, "2760"),
    ("OmniQuant-like W6A6", 2364.0, "2364"),
    ("L2QER MXINT W4A8", (5164 - 1782) / 16 + 1782, "(5164 - 1782)/16 + 1782"),
    ("L2QER MXINT W4A6", (3727 - 1246) / 16 + 1246, "(3727 - 1246)/16 + 1246"),
)
PUBLISHED_PARTS = {"L2QER MXINT W4A8": (1782.0, 5164.0), "L2QER MXINT W4A6": (1246.0, 3727.0)}


#: valid ``acc_bits`` of the fixed-point baselines: 16 = the exact sum of one engine's 16 products
#: of at most 12 bits (8x4 and 6x6: 12 + log2 16); 64 = the widest native HLS integer (long long)
ACC_BITS_RANGE = (16, 64)


def check_acc_bits(acc_bits: int) -> int:
    """``acc_bits`` as an int in ``ACC_BITS_RANGE``, else a ValueError naming the range and why."""
    lo, hi = ACC_BITS_RANGE
    why = (f"valid: {lo}..{hi} (the fixed-point baselines' accumulator must hold the exact sum of an engine's "
           f"{LANES} products of up to 12 bits, {lo} bits, and be an HLS integer, at most {hi} bits)")
    if isinstance(acc_bits, bool) or not isinstance(acc_bits, (int, np.integer)):
        raise ValueError(f"acc_bits={acc_bits!r} is not an integer; {why}")
    if not lo <= acc_bits <= hi:
        raise ValueError(f"acc_bits={acc_bits!r} is out of range; {why}")
    return int(acc_bits)


def inventories(acc_bits: int = 32) -> dict[str, Inventory]:
    """Design inventory per published row; ``acc_bits``: the fixed-point baselines' sum width
    (``ACC_BITS_RANGE``)."""
    acc_bits = check_acc_bits(acc_bits)
    w4a8 = l2qer_mxint(8, 4)
    w4a6 = l2qer_mxint(6, 4)
    return {
        "FP16": fp16_engine(),
        "LLM.int4()": llm_int4(acc_bits),
        "GPTQ/AWQ W4": gptq_awq_w4(),
        "AQAS-like W4A8": fixed_point_engine(8, 4, acc_bits),
        "OmniQuant-like W6A6": fixed_point_engine(6, 6, acc_bits),
        "L2QER MXINT W4A8": w4a8[0] + w4a8[1],
        "L2QER MXINT W4A6": w4a6[0] + w4a6[1],
    }


def fit_constants(acc_bits: int = 32) -> dict:
    """Bounded least squares on relative residuals over the seven rows (deterministic).

    Returns {"constants": {name: value}, "at_bound": {name: bool}, "residuals": {method: r}}.
    """
    from scipy.optimize import lsq_linear

    inv = inventories(acc_bits)
    A = np.array([inv[m].vector() for m, _, _ in PUBLISHED], dtype=float)
    pub = np.array([p for _, p, _ in PUBLISHED], dtype=float)
    Aw = A / pub[:, None]
    res = lsq_linear(Aw, np.ones(len(pub)), bounds=(np.array(LOWER_BOUNDS), np.full(5, np.inf)),
                     method="bvls", tol=1e-14)
    x = np.maximum(res.x, LOWER_BOUNDS)
    model = A @ x
    return {
        "constants": dict(zip(CONSTANTS, map(float, x))),
        "at_bound": {c: bool(abs(v - lb) <= 1e-9 * max(1.0, lb)) for c, v, lb in zip(CONSTANTS, x, LOWER_BOUNDS)},
        "residuals": {m: float(model[i] / pub[i] - 1) for i, (m, _, _) in enumerate(PUBLISHED)},
        "acc_bits": acc_bits,
    }


def load_constants() -> dict:
    """The stored constants (``data/fpga_lut.toml``; regenerate with ``hwsim cost fit-fpga``)."""
    with open(DATA_FILE, "rb") as fh:
        return tomllib.load(fh)


def write_constants(fit: dict, path: Path = DATA_FILE) -> None:
    lines = ["# FPGA LUT model constants, fitted once over the seven rows of the LQER hw-perf table",
             "# (docs/spec/cost_model.md §7.3) by bounded least squares on relative residuals.",
             "# Regenerate with `hwsim cost fit-fpga`. Floors: UltraScale+ fabric.",
             f"acc_bits = {fit['acc_bits']}", "", "[constants]"]
    lines += [f"{k} = {v!r}" for k, v in fit["constants"].items()]
    lines += ["", "[at_bound]"] + [f"{k} = {str(v).lower()}" for k, v in fit["at_bound"].items()]
    lines += ["", "[residuals]"] + [f'"{k}" = {v!r}' for k, v in fit["residuals"].items()]
    path.write_text("\n".join(lines) + "\n")


def _constants(constants) -> np.ndarray:
    if constants is None:
        c = load_constants()["constants"]
    elif isinstance(constants, dict):
        c = constants.get("constants", constants)
    else:
        return np.asarray(constants, dtype=float)
    return np.array([c[k] for k in CONSTANTS], dtype=float)


def design_luts(acc_bits: int = 32, constants=None) -> dict[str, float]:
    """Model LUTs per published row with the given (default: stored) constants."""
    x = _constants(constants)
    return {m: inv.luts(x) for m, inv in inventories(acc_bits).items()}


def lqer_table(acc_bits: int = 32, constants=None):
    """DataFrame: method, model_area, published_area, residual (+ precision cell and label).

    ``residual`` = model/published - 1. Units: FPGA LUT (HLS design).
    """
    import pandas as pd

    model = design_luts(acc_bits, constants)
    rows = [{"method": m, "model_area": model[m], "published_area": p, "residual": model[m] / p - 1,
             "published_cell": cell, "unit": LABEL} for m, p, cell in PUBLISHED]
    return pd.DataFrame(rows)


def headline(acc_bits: int = 32, constants=None) -> float:
    """model(AQAS-like W4A8) / model(L2QER MXINT W4A8) (published 1.36; 1.385 unrounded)."""
    m = design_luts(acc_bits, constants)
    return m["AQAS-like W4A8"] / m["L2QER MXINT W4A8"]


def mxint_parts(constants=None) -> dict[str, dict[str, float]]:
    """Main and total (main + full-parallel branch) LUTs of the L2QER rows vs the published parts."""
    x = _constants(constants)
    out = {}
    for name, (a, w) in (("L2QER MXINT W4A8", (8, 4)), ("L2QER MXINT W4A6", (6, 4))):
        main, branch = l2qer_mxint(a, w, branch_share=1.0)
        pm, pt = PUBLISHED_PARTS[name]
        out[name] = {"model_main": main.luts(x), "published_main": pm,
                     "model_total": main.luts(x) + branch.luts(x), "published_total": pt}
    return out


def sensitivity(acc_values=(32, 28, 24, 20, 16), constants=None) -> "object":
    """Headline ratio vs the fixed-point baselines' accumulator width (constants held fixed)."""
    import pandas as pd

    return pd.DataFrame([{"acc_bits": a, "headline": headline(a, constants)} for a in acc_values])


def format_report(acc_bits: int = 32) -> str:
    """The text printed by ``hwsim cost lqer-table``."""
    stored = load_constants()
    tab = lqer_table(acc_bits)
    lines = [f"LQER-paper comparison: one token through a 4096x11008 layer, 16-lane engines, "
             f"low-rank path at 1/16 parallelism. Unit: {LABEL}.", ""]
    t = tab[["method", "published_cell", "published_area", "model_area", "residual"]].copy()
    lines.append(t.to_string(index=False, formatters={"published_area": "{:.1f}".format,
                                                      "model_area": "{:.1f}".format,
                                                      "residual": "{:+.1%}".format}))
    lines.append("")
    lines.append("constants (fitted once over all rows; * = at its physical floor):")
    for k, v in stored["constants"].items():
        lines.append(f"  {k:20s} {v:10.4f}{' *' if stored['at_bound'][k] else ''}")
    m = dict(zip(tab.method, tab.model_area))
    lines.append("")
    lines.append(f"headline AQAS-like W4A8 / L2QER MXINT W4A8 = {headline(acc_bits):.3f} "
                 f"(published 1.36 rounded, 2760/1993.4 = 1.385)")
    lines.append(f"AQAS-like / OmniQuant-like = {m['AQAS-like W4A8'] / m['OmniQuant-like W6A6']:.3f} "
                 f"(published {2760 / 2364:.2f}; not reproducible by a bit-monotone model)")
    lines.append("sensitivity of the headline to the integer designs' accumulator width:")
    for _, r in sensitivity().iterrows():
        lines.append(f"  acc_bits = {int(r.acc_bits):2d}: headline = {r.headline:.3f}")
    lines.append("L2QER parts (model vs published; branch at full parallelism):")
    for name, d in mxint_parts().items():
        lines.append(f"  {name}: main {d['model_main']:.0f} vs {d['published_main']:.0f}, "
                     f"total {d['model_total']:.0f} vs {d['published_total']:.0f}")
    return "\n".join(lines)
