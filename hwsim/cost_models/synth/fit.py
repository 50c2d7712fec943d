"""Fit the law shapes to the synthesized counts (one job: counts -> ``data/gate_laws.toml`` values).

Each primitive law of ``laws.py`` gets its shape from its family's transistor counts; the
published reference points (Horowitz 45 nm) give the scales at run time (``tech``):

- adder ``t (w - offset)``: the offset is fitted **jointly** over the synthesized adders (shape,
  up to a free scale) and the Horowitz 8/16/32-bit adds (area and energy, up to a free scale
  each), minimising the sum of squared log residuals (Horowitz points weighted to count as much
  as all synthesized adders), among the offsets that keep every Horowitz add within
  ``PUBLISHED_MARGIN``: the synthesized adders alone ask for a larger offset than the Horowitz
  8-bit add energy tolerates;
- multiplier: Baugh-Wooley ``t_bw (ab + beta (a+b) + gamma)`` (at least one AND gate per
  bit-product) over the Baugh-Wooley units and
  radix-4 Booth ``t_bw (alpha xy + beta_x x + beta_y y + gamma)`` (y recoded) over the Booth
  units with both operands >= ``laws.BOOTH_MIN_BITS``, each by least squares on relative
  residuals; the law takes the cheaper;
- mux2: transistors per mux bit of the barrel shifters (``W ceil(log2(S+1))`` mux bits);
- comparator ``t (w - offset)``; leading-zero counter ``k (w - offset)`` mux2 bits;
- FP multiplier / adder: the counts of mantissa- and exponent-width adder equivalents beside
  their fixed parts (``laws.fp_mul_terms`` / ``fp_add_terms``), non-negative least squares.

All fits are closed-form or a fixed grid: the same counts give the same file.
"""

from __future__ import annotations

import numpy as np

from ..laws import BOOTH_MIN_BITS, clog2


#: the joint fits keep every published point within this relative error (the calibration tolerance,
#: 15 %, less one point of margin)
PUBLISHED_MARGIN = 0.14
#: yosys' CMOS cost of a 2-input AND: an array with a 1-bit operand is one AND per bit-product
AND_TRANSISTORS = 6.0


def _by_family(units: list[dict], family: str, **match) -> list[dict]:
    return [u for u in units if u["family"] == family and all(u["params"].get(k) == v for k, v in match.items())]


def _rel_lstsq(features: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Least squares on relative residuals: min sum((F c / t - 1)^2); returns (c, min, max) of F c / t."""
    A = features / target[:, None]
    c, *_ = np.linalg.lstsq(A, np.ones(len(target)), rcond=None)
    r = A @ c
    return c, float(r.min()), float(r.max())


def _log_scale(model: np.ndarray, target: np.ndarray) -> float:
    """The scale k minimising sum(log(k model / target)^2)."""
    return float(np.exp(np.mean(np.log(target / model))))


def _log_sse(model: np.ndarray, target: np.ndarray) -> float:
    r = np.log(_log_scale(model, target) * model / target)
    return float(r @ r)


def fit_adder(units: list[dict], reference: dict) -> dict:
    """Per-bit transistors and offset of the adder law, offset fitted jointly (grid of 0.001 bit)."""
    adders = _by_family(units, "adder")
    w = np.array([u["params"]["w"] for u in adders], dtype=float)
    t = np.array([u["transistors"] for u in adders], dtype=float)
    pubs = [reference[k] for k in ("int8_add", "int16_add", "int32_add")]
    wp = np.array([r["width"] for r in pubs], dtype=float)
    area = np.array([r["area_um2"] for r in pubs], dtype=float)
    energy = np.array([r["energy_pj"] for r in pubs], dtype=float)
    weight = len(w) / (2 * len(wp))
    best = None
    for off in np.round(np.arange(0.0, 0.999, 0.001), 3):
        errs = [_log_scale(wp - off, v) * (wp - off) / v - 1 for v in (area, energy)]
        if max(float(np.abs(e).max()) for e in errs) > PUBLISHED_MARGIN:
            continue
        j = _log_sse(w - off, t) + weight * (_log_sse(wp - off, area) + _log_sse(wp - off, energy))
        if best is None or j < best[0] - 1e-15:
            best = (j, float(off))
    if best is None:
        raise ValueError("no adder offset keeps the Horowitz adds within their tolerance")
    off = best[1]
    per_bit = _log_scale(w - off, t)
    r = per_bit * (w - off) / t
    return {"per_bit_transistors": per_bit, "offset_bits": off, "units": len(w),
            "residual_min": float(r.min()), "residual_max": float(r.max())}


def fit_multiplier(units: list[dict]) -> dict:
    bw = _by_family(units, "mult", arch="baugh_wooley")
    a = np.array([u["params"]["a"] for u in bw], dtype=float)
    b = np.array([u["params"]["b"] for u in bw], dtype=float)
    t = np.array([u["transistors"] for u in bw], dtype=float)
    (k_ab, k_sum, k_1), lo, hi = _rel_lstsq(np.stack([a * b, a + b, np.ones_like(a)], 1), t)
    booth = [u for u in _by_family(units, "mult", arch="booth4")
             if min(u["params"]["a"], u["params"]["b"]) >= BOOTH_MIN_BITS]
    x = np.array([u["params"]["a"] for u in booth], dtype=float)
    y = np.array([u["params"]["b"] for u in booth], dtype=float)
    tb = np.array([u["transistors"] for u in booth], dtype=float)
    (c_xy, c_x, c_y, c_1), blo, bhi = _rel_lstsq(np.stack([x * y, x, y, np.ones_like(x)], 1), tb)
    return {"bitprod_transistors": float(k_ab), "bw_beta": float(k_sum / k_ab), "bw_gamma": float(k_1 / k_ab),
            "array_floor": AND_TRANSISTORS / float(k_ab),
            "booth_alpha": float(c_xy / k_ab), "booth_beta_x": float(c_x / k_ab), "booth_beta_y": float(c_y / k_ab),
            "booth_gamma": float(c_1 / k_ab), "booth_min_bits": BOOTH_MIN_BITS,
            "bw_units": len(t), "bw_residual_min": lo, "bw_residual_max": hi,
            "booth_units": len(tb), "booth_residual_min": blo, "booth_residual_max": bhi}


def fit_mux2(units: list[dict]) -> dict:
    sh = _by_family(units, "shifter")
    bits = np.array([u["params"]["width"] * clog2(u["params"]["positions"] + 1) for u in sh], dtype=float)
    t = np.array([u["transistors"] for u in sh], dtype=float)
    (k,), lo, hi = _rel_lstsq(bits[:, None], t)
    return {"per_bit_transistors": float(k), "units": len(t), "residual_min": lo, "residual_max": hi,
            "fitted_on": "barrel shifters, W * ceil(log2(S+1)) mux bits"}


def _linear_offset(w: np.ndarray, t: np.ndarray) -> tuple[float, float, float, float]:
    (k, c), lo, hi = _rel_lstsq(np.stack([w, np.ones_like(w)], 1), t)
    return float(k), float(-c / k), lo, hi


def fit_comparator(units: list[dict]) -> dict:
    cm = _by_family(units, "comparator")
    w = np.array([u["params"]["w"] for u in cm], dtype=float)
    t = np.array([u["transistors"] for u in cm], dtype=float)
    k, off, lo, hi = _linear_offset(w, t)
    return {"per_bit_transistors": k, "offset_bits": off, "units": len(t), "residual_min": lo, "residual_max": hi}


def fit_lzc(units: list[dict], mux_transistors: float) -> dict:
    lz = _by_family(units, "lzc")
    w = np.array([u["params"]["w"] for u in lz], dtype=float)
    t = np.array([u["transistors"] for u in lz], dtype=float) / mux_transistors
    k, off, lo, hi = _linear_offset(w, t)
    return {"mux_per_bit": k, "offset_bits": off, "units": len(t), "residual_min": lo, "residual_max": hi}


def _fp_units(units: list[dict], op: str) -> tuple[list[tuple[int, int]], np.ndarray]:
    from ..fmt import describe

    fps = _by_family(units, "fp", op=op)
    em = [(describe(u["params"]["fmt"]).exponent_bits, describe(u["params"]["fmt"]).man_bits) for u in fps]
    return em, np.array([u["transistors"] for u in fps], dtype=float)


def fit_fp(units: list[dict], adder: dict, mult: dict, mux: dict) -> dict[str, dict]:
    """Adder-equivalent counts of the FP units (``laws.fp_mul_terms`` / ``fp_add_terms``):
    non-negative least squares on relative residuals over every synthesized FP unit, the fixed
    parts (significand array, align shifter) in their own gate-level laws."""
    from scipy.optimize import nnls

    t_add, off = adder["per_bit_transistors"], adder["offset_bits"]

    def t_adder(w):
        return t_add * max(w - off, 0.0)

    def t_umult(a, b):
        return mult["bitprod_transistors"] * (a * b + mult["bw_beta"] * (a + b) + mult["bw_gamma"])

    out = {}
    for op in ("mul", "add"):
        em, t = _fp_units(units, op)
        if op == "mul":
            fixed = np.array([t_umult(m + 1, m + 1) for e, m in em])
            feats = np.array([[t_adder(m), t_adder(e - 1)] for e, m in em])
        else:
            fixed = np.array([mux["per_bit_transistors"] * (m + 4) * clog2(m + 5) for e, m in em])
            feats = np.array([[t_adder(m), t_adder(e)] for e, m in em])
        k, _ = nnls(feats / t[:, None], 1 - fixed / t)
        r = (feats @ k + fixed) / t
        out[f"fp_{op}"] = {"mant_adders": float(k[0]), "exp_adders": float(k[1]), "units": len(t),
                           "residual_min": float(r.min()), "residual_max": float(r.max())}
    return out


def fit_laws(units: list[dict], reference: dict) -> dict[str, dict]:
    """Every law shape from the unit counts (``synth_counts.toml``'s ``unit`` list)."""
    mux = fit_mux2(units)
    adder, mult = fit_adder(units, reference), fit_multiplier(units)
    return {"adder": adder, "multiplier": mult, "mux2": mux, **fit_fp(units, adder, mult, mux),
            "comparator": fit_comparator(units), "lzc": fit_lzc(units, mux["per_bit_transistors"]),
            "register": {"note": "not fitted: yosys' CMOS estimate of a D flip-flop (16 transistors) is a placeholder; "
                                 "the register law stays on its published reference (Aladdin ratio)"}}
