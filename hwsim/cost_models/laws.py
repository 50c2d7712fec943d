"""The scaling laws of the cost model: pure functions of a coefficient dict (a leaf module).

Every law maps a component's parameters to ``(area um^2, energy pJ)`` at the library node, from the
coefficients that ``tech.Technology`` derives from its reference points (docs/spec/cost_model.md §3)
and from the gate-level shapes of ``data/gate_laws.toml`` (yosys synthesis of every unit family,
``hwsim cost synth --refit``; docs/cost_models.md "Gate-level validation"). ``tech`` uses them to
fit the FP calibration factors, ``components`` to cost each component; neither formula is written
anywhere else. The FP units are written once, as lists of terms (``fp_mul_terms`` /
``fp_add_terms``): ``components.FPMultiplier.parts()`` builds its parts from the same list that
``p_fpmul_raw`` sums.

Energy has the area's structure: within a family the switched capacitance is proportional to the
gate count, so every law multiplies one shape by an area and an energy coefficient.
"""

from __future__ import annotations

import math

AE = tuple[float, float]  # (area um^2, energy pJ) at the library node

#: the FP calibration factor kappa weighs in above this total width (bits) ...
KAPPA_FROM_BITS = 8
#: ... and fully from this one (IEEE half precision and wider: the published units)
KAPPA_FULL_BITS = 16
#: Booth recoding is considered for operands of at least this many bits
BOOTH_MIN_BITS = 4


def clog2(x: int) -> int:
    """ceil(log2 x), 0 for x <= 1."""
    return 0 if x <= 1 else math.ceil(math.log2(x))


def _bits(c, name: str, w: float) -> float:
    """Effective width of a ``linear`` law with an offset: w - {name}.offset_bits (>= 0)."""
    return max(w - c.get(f"{name}.offset_bits", 0.0), 0.0)


def p_adder(c, w) -> AE:
    """``linear``: w-bit adder, adder.area_per_bit * (w - adder.offset_bits), same for energy.

    The offset (a fraction of a bit, gate level) is the half adder at the LSB and the unused carry
    out of a w-bit adder with a w-bit result."""
    n = _bits(c, "adder", w)
    return c["adder.area_per_bit"] * n, c["adder.energy_per_bit"] * n


def array_shape(c, a, b) -> float:
    """Size of an a x b array multiplier in bit-products: ab + bw_beta (a + b) + bw_gamma (the
    Baugh-Wooley fit; an unsigned array synthesizes within a few per cent of it), and at least
    array_floor * ab (one AND gate per bit-product: a 1-bit operand)."""
    return max(a * b + c["multiplier.bw_beta"] * (a + b) + c["multiplier.bw_gamma"],
               c["multiplier.array_floor"] * a * b)


def mult_shape(c, a, b) -> float:
    """Size of an a x b signed multiplier in Baugh-Wooley bit-products: the cheaper of

    - Baugh-Wooley array: ab + bw_beta (a + b) + bw_gamma;
    - radix-4 Booth (operands of >= BOOTH_MIN_BITS bits), recoding either operand:
      booth_alpha xy + booth_beta_x x + booth_beta_y y + booth_gamma (y recoded).
    """
    bw = array_shape(c, a, b)
    if min(a, b) < BOOTH_MIN_BITS:
        return bw

    def booth(x, y):
        return (c["multiplier.booth_alpha"] * x * y + c["multiplier.booth_beta_x"] * x
                + c["multiplier.booth_beta_y"] * y + c["multiplier.booth_gamma"])

    return min(bw, booth(a, b), booth(b, a))


def p_mult(c, a, b) -> AE:
    """``bw_booth``: a x b multiplier, multiplier.{area,energy}_alpha * mult_shape(a, b)."""
    s = mult_shape(c, a, b)
    return c["multiplier.area_alpha"] * s, c["multiplier.energy_alpha"] * s


def p_umult(c, a, b) -> AE:
    """``array``: a x b unsigned array multiplier (FP significands), alpha * array_shape(a, b)."""
    s = array_shape(c, a, b)
    return c["multiplier.area_alpha"] * s, c["multiplier.energy_alpha"] * s


def p_bits(c, name, bits) -> AE:
    """``linear`` per bit for register, comparator and mux2: {name}.area_per_bit * (bits - offset)."""
    n = _bits(c, name, bits)
    return c[f"{name}.area_per_bit"] * n, c[f"{name}.energy_per_bit"] * n


def shifter_mux_bits(w, s, in_bits=None) -> int:
    """Mux2 bits of a W-bit barrel shifter over S positions: W * ceil(log2(S+1)) (``w_log2s``);
    with a narrower P-bit input, stage k only muxes the P + 2^k - 1 bits the data can reach, about
    P * ceil(log2(S+1)) + S in all (gate level), whichever is smaller."""
    k = clog2(s + 1)
    full = w * k
    if in_bits is None or in_bits >= w:
        return full
    return min(full, in_bits * k + s)


def p_shifter(c, w, s, in_bits=None) -> AE:
    """``w_log2s``: a barrel shifter is shifter_mux_bits(W, S, P) mux2 bits."""
    return p_bits(c, "mux2", shifter_mux_bits(w, s, in_bits))


def lzc_mux_bits(c, w) -> float:
    """Mux2 bits of a w-bit leading-zero counter: lzc.mux_per_bit * (w - lzc.offset_bits).

    A tree of (valid, count) nodes: a node over 2^l bits muxes an (l-1)-bit count, so the muxes
    sum to about one per input bit (gate level), not w * log2 w."""
    return c["lzc.mux_per_bit"] * max(w - c["lzc.offset_bits"], 0.0)


def p_lzc(c, w) -> AE:
    """``linear`` (in mux2 bits): a w-bit leading-zero counter, lzc_mux_bits(w) mux2 bits."""
    return p_bits(c, "mux2", lzc_mux_bits(c, w))


# law name -> function of (c, *args); the names the FP term lists use
LAWS = {"adder": p_adder, "mult": p_mult, "umult": p_umult, "mux2": lambda c, bits: p_bits(c, "mux2", bits),
        "comparator": lambda c, w: p_bits(c, "comparator", w), "shifter": p_shifter, "lzc": p_lzc}


def fp_mul_terms(e: int, m: int, c) -> tuple[tuple[str, str, tuple[int, ...], float], ...]:
    """(part, law, args, count) of an FP multiplier, e exponent and m stored mantissa bits.

    The unsigned significand product (an array) and, in adder equivalents fitted to the gate-level
    minifloat and IEEE multipliers of ``synth.fp.fp_multiplier``: fp_mul.mant_adders m-bit adders
    (leading-zero count, normalise and denormalise shifters, round, pack, saturate) and
    fp_mul.exp_adders (e-1)-bit adders (exponent sum, bias, normalisation and denormalisation
    amounts)."""
    p = m + 1
    return (("significand_mult", "umult", (p, p), 1.0),
            ("normalise_round", "adder", (m,), c["fp_mul.mant_adders"]),
            ("exponent", "adder", (e - 1,), c["fp_mul.exp_adders"]))


def fp_add_terms(e: int, m: int, c) -> tuple[tuple[str, str, tuple[int, ...], float], ...]:
    """(part, law, args, count) of an FP adder (``synth.fp.fp_adder``): the (p+3)-bit align shifter
    with guard/round/sticky and, in adder equivalents fitted to the gate-level adders,
    fp_add.mant_adders m-bit adders (swap, significand add, leading zeros, normalise, round) and
    fp_add.exp_adders e-bit adders (magnitude compare, exponent difference and adjust, saturate)."""
    p = m + 1
    return (("align", "shifter", (p + 3, p + 3), 1.0),
            ("significand", "adder", (m,), c["fp_add.mant_adders"]),
            ("exponent", "adder", (e,), c["fp_add.exp_adders"]))


def kappa_weight(e: int, m: int) -> float:
    """Exponent r of the FP calibration factor kappa^r for a unit of n = 1 + e + m bits: 0 up to
    KAPPA_FROM_BITS (minifloat elements: the gate-level structure, checked by synthesis), 1 from
    KAPPA_FULL_BITS (FP16 and wider: the published units), linear in log2 n between."""
    n = 1 + e + m
    r = math.log2(n / KAPPA_FROM_BITS) / math.log2(KAPPA_FULL_BITS / KAPPA_FROM_BITS)
    return min(max(r, 0.0), 1.0)


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
    return sum_terms(c, fp_mul_terms(e, m, c))


def p_fpadd_raw(c, e, m) -> AE:
    """FP adder before its calibration factor kappa."""
    return sum_terms(c, fp_add_terms(e, m, c))
