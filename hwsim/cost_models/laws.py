"""The scaling laws of the cost model: pure functions of a coefficient dict (a leaf module).

Every law maps a component's parameters to ``(area um^2, energy pJ)`` at the library node, from the
coefficients that ``tech.Technology`` fits to its reference points (docs/spec/cost_model.md §3). ``tech``
uses them to fit the FP calibration factors, ``components`` to cost each component; neither
formula is written anywhere else. The FP units are written once, as lists of terms
(``fp_mul_terms`` / ``fp_add_terms``): ``components.FPMultiplier.parts()`` builds its parts from
the same list that ``p_fpmul_raw`` sums.
"""

from __future__ import annotations

import math

AE = tuple[float, float]  # (area um^2, energy pJ) at the library node


def clog2(x: int) -> int:
    """ceil(log2 x), 0 for x <= 1."""
    return 0 if x <= 1 else math.ceil(math.log2(x))


def p_adder(c, w) -> AE:
    """``linear``: w-bit adder, adder.area_per_bit * w, adder.energy_per_bit * w."""
    return c["adder.area_per_bit"] * w, c["adder.energy_per_bit"] * w


def p_mult(c, a, b) -> AE:
    """``pp_cpa``: a x b multiplier, alpha*a*b (partial products) + beta*(a+b) (final adder)."""
    return (c["multiplier.area_alpha"] * a * b + c["multiplier.area_beta"] * (a + b),
            c["multiplier.energy_alpha"] * a * b + c["multiplier.energy_beta"] * (a + b))


def p_bits(c, name, bits) -> AE:
    """``linear`` per bit for register, comparator and mux2: {name}.area_per_bit * bits."""
    return c[f"{name}.area_per_bit"] * bits, c[f"{name}.energy_per_bit"] * bits


def p_shifter(c, w, s) -> AE:
    """``w_log2s``: a W-bit barrel shifter over S positions is W * ceil(log2(S+1)) mux2 bits."""
    return p_bits(c, "mux2", w * clog2(s + 1))


def p_lzc(c, w) -> AE:
    """``nlog2n``: a w-bit leading-zero counter is w * ceil(log2 w) mux2 bits."""
    return p_bits(c, "mux2", w * clog2(w))


# law name -> function of (c, *args); the names the FP term lists use
LAWS = {"adder": p_adder, "mult": p_mult, "mux2": lambda c, bits: p_bits(c, "mux2", bits),
        "shifter": p_shifter, "lzc": p_lzc}


def fp_mul_terms(e: int, m: int) -> tuple[tuple[str, str, tuple[int, ...], int], ...]:
    """(part, law, args, count) of an FP multiplier, e exponent and m stored mantissa bits."""
    p = m + 1
    return (("significand_mult", "mult", (p, p), 1), ("exponent_add", "adder", (e + 2,), 2),
            ("normalise", "mux2", (p,), 1), ("round", "adder", (p + 1,), 1))


def fp_add_terms(e: int, m: int) -> tuple[tuple[str, str, tuple[int, ...], int], ...]:
    """(part, law, args, count) of an FP adder: align, add, normalise, round."""
    p = m + 1
    return (("exp_diff", "adder", (e + 1,), 1), ("swap", "mux2", (2 * p + e,), 1),
            ("align", "shifter", (p + 3, p + 3), 1), ("significand_add", "adder", (p + 4,), 1),
            ("lzc", "lzc", (p + 4,), 1), ("normalise", "shifter", (p + 4, p + 4), 1),
            ("round", "adder", (p + 1,), 1), ("exp_adjust", "adder", (e + 1,), 1))


def sum_terms(c, terms) -> AE:
    """Summed (area, energy) of (part, law, args, count) terms."""
    area = energy = 0.0
    for _, law, args, n in terms:
        a, e = LAWS[law](c, *args)
        area += n * a
        energy += n * e
    return area, energy


def p_fpmul_raw(c, e, m) -> AE:
    """FP multiplier before its calibration factor kappa (docs/spec/cost_model.md §3)."""
    return sum_terms(c, fp_mul_terms(e, m))


def p_fpadd_raw(c, e, m) -> AE:
    """FP adder before its calibration factor kappa."""
    return sum_terms(c, fp_add_terms(e, m))
