"""Minifloat multiplier and adder drawn bit by bit (one job: the structure of the FP units).

Both take the element format as a ``hwsim.formats`` FloatElem (``ebits``, ``mbits``, ``bias``,
``emax``, ``max_mantissa``; subnormals on), operate on finite codes (the units build no NaN/Inf
logic; the formats saturate) and round to nearest even, saturating at the largest finite value:

- ``fp_multiplier``: unsigned significand product, exponent sum, leading-zero count and left
  normalisation (subnormal inputs), right denormalisation with sticky (subnormal results),
  round, saturate;
- ``fp_adder``: magnitude compare and swap, exponent difference, align with guard/round/sticky,
  add or subtract, leading-zero count, normalise (limited at the subnormal exponent), round,
  saturate.

Rounding writes the result as ``((E - 1) << m) + significand`` (hidden bit included) and adds the
round bit to the whole word, so a carry out of the significand moves into the exponent and a
subnormal that rounds up becomes the smallest normal without extra logic.
"""

from __future__ import annotations

from .arith import add, clog2, greater, increment, lzc, mult_unsigned, mux_word, shift_left, shift_right, sub, zext
from .rtl import ZERO, Module, const_bits


def _signed_bits(lo: int, hi: int) -> int:
    """Two's-complement width holding every integer in [lo, hi]."""
    n = 1
    while not (-(1 << (n - 1)) <= lo and hi < (1 << (n - 1))):
        n += 1
    return n


def decode(m: Module, code: list[str], elem) -> tuple[str, list[str], list[str]]:
    """(sign, effective exponent field max(E, 1) (e bits), significand with hidden bit (m+1 bits))."""
    e, mb = elem.ebits, elem.mbits
    mant, ex = code[:mb], code[mb:mb + e]
    nz = m.or_reduce(ex, "enz")
    eff = [m.or_(ex[0], m.not_(nz), "eef")] + list(ex[1:])
    sign = code[mb + e] if len(code) > mb + e else ZERO
    return sign, eff, list(mant) + [nz]


def max_word(elem) -> int:
    """The largest finite magnitude code: top exponent field, largest mantissa there."""
    return ((elem.emax + elem.bias) << elem.mbits) | elem.max_mantissa


def round_and_pack(m: Module, e_minus_1: list[str], kept: list[str], guard: str, sticky: str, zero: str,
                   elem) -> list[str]:
    """e + m magnitude bits: ((E - 1) << m) + kept, + round-to-nearest-even, saturated; 0 if ``zero``."""
    mb = elem.mbits
    width = max(len(e_minus_1) + mb, len(kept)) + 1
    word = add(m, zext(kept, width), [ZERO] * mb + list(e_minus_1), width, signed=False)
    m.section("round to nearest even: guard and (sticky or lsb)")
    word = increment(m, word, m.and_(guard, m.or_(sticky, kept[0], "rs"), "rup"))
    top = max_word(elem)
    m.section(f"saturate at the largest finite code {top:#x}")
    over = greater(m, word, const_bits(top, width))
    word = mux_word(m, over, word, const_bits(top, width))
    nz = m.not_(zero)
    return [m.and_(b, nz, "z") for b in word[:elem.ebits + mb]]


def fp_multiplier(m: Module, x: list[str], y: list[str], elem) -> list[str]:
    """x * y in the element format ``elem`` (codes, 1 + e + m bits each)."""
    e, mb, bias = elem.ebits, elem.mbits, elem.bias
    p = mb + 1
    m.section("decode")
    sx, ex, gx = decode(m, x, elem)
    sy, ey, gy = decode(m, y, elem)
    m.section(f"significand product {p} x {p}")
    prod = mult_unsigned(m, gx, gy)
    m.section("leading zeros and left normalisation")
    lz, zero = lzc(m, prod)
    norm = shift_left(m, prod, lz)
    # E_r = ex + ey - bias + 1 - lz: biased exponent of the normalised product
    lo, hi = 2 - bias + 1 - 2 * p, 2 * ((1 << e) - 1) - bias + 1
    we = _signed_bits(lo - 1, hi)
    m.section("result exponent E - 1 = ex + ey - bias - lz")
    esum = add(m, ex, ey, e + 1, signed=False)
    u = sub(m, add(m, zext(esum, we), const_bits(-bias, we), we), zext(lz, we), we)    # E_r - 1
    neg = u[-1]
    m.section("denormalise: shift right by 1 - E_r when E_r < 1")
    k = clog2(2 * p + 1)
    d = [m.and_(b, neg, "dn") for b in increment(m, [m.xor(b, neg, "dx") for b in u], neg)]
    sat = m.or_reduce(d[k:], "dsat")
    amt = [m.or_(b, sat, "da") for b in d[:k]]
    shifted, st = shift_right(m, norm, amt, ZERO, sticky=True)
    e_minus_1 = [m.and_(b, m.not_(neg), "ef") for b in u[:-1]]
    kept = shifted[p:]                     # the top p = m + 1 bits, hidden bit first
    guard = shifted[p - 1]
    sticky = m.or_(m.or_reduce(shifted[:p - 1], "st"), st, "st")
    return round_and_pack(m, e_minus_1, kept, guard, sticky, zero, elem) + [m.xor(sx, sy, "sgn")]


def fp_adder(m: Module, x: list[str], y: list[str], elem) -> list[str]:
    """x + y in the element format ``elem`` (codes, 1 + e + m bits each)."""
    e, mb = elem.ebits, elem.mbits
    p = mb + 1
    m.section("decode; compare magnitudes (the codes order as the values)")
    sx, ex, gx = decode(m, x, elem)
    sy, ey, gy = decode(m, y, elem)
    y_big = greater(m, y[:e + mb], x[:e + mb])
    m.section("swap so that |big| >= |small|")
    s_big = m.mux(y_big, sx, sy)
    e_big = mux_word(m, y_big, ex, ey)
    e_small = mux_word(m, y_big, ey, ex)
    g_big = mux_word(m, y_big, gx, gy)
    g_small = mux_word(m, y_big, gy, gx)
    effective_sub = m.xor(sx, sy, "esub")
    m.section("exponent difference and alignment with guard, round, sticky")
    diff = sub(m, e_big, e_small, e + 1, signed=False)[:e]
    k = clog2(p + 4)
    sat = m.or_reduce(diff[k:], "asat")
    amt = [m.or_(b, sat, "aa") for b in diff[:k]]
    aligned, st = shift_right(m, [ZERO, ZERO, ZERO] + g_small, amt, ZERO, sticky=True)
    aligned = [m.or_(aligned[0], st, "as")] + aligned[1:]
    m.section("add or subtract the significands (p + 4 bits)")
    big = [ZERO, ZERO, ZERO] + g_big + [ZERO]
    small = [m.xor(b, effective_sub, "sx") for b in aligned + [ZERO]]
    total = add(m, big, small, p + 4, signed=False, cin=effective_sub)
    m.section("normalise: shift left by min(leading zeros, E_big)")
    lz, zero = lzc(m, total)
    wl = max(len(lz), e)
    lz_w, eb_w = zext(lz, wl), zext(e_big, wl)
    limit = greater(m, lz_w, eb_w)
    shift = mux_word(m, limit, lz_w, eb_w)
    norm = shift_left(m, total, shift[:clog2(p + 5)] if wl > clog2(p + 5) else shift)
    m.section("exponent E - 1 = E_big - shift")
    e_minus_1 = sub(m, zext(e_big, e + 1), zext(shift, e + 1), e + 1, signed=False)
    kept = norm[4:]
    guard = norm[3]
    sticky = m.or_reduce(norm[:3], "st")
    mag = round_and_pack(m, e_minus_1, kept, guard, sticky, zero, elem)
    return mag + [m.and_(s_big, m.not_(zero), "sgn")]
