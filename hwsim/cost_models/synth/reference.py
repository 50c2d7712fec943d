"""Arithmetic the synthesized netlists must equal (one job: expected outputs from inputs).

Integer units: exact integer arithmetic in numpy int64 (wrapped to the port width where the unit
wraps). Minifloat units: the exact result (products and sums of two minifloats are exact in
float64, and a sum of two minifloats with 3-bit significands is exact in float32 too) encoded by
``hwsim.formats`` (``encode_floats``: round to nearest even, saturating), so the netlists are
checked against the project's own format semantics. Block floating-point dot products: the
windowed fixed-point sum the unit defines (products aligned to the block's largest exponent,
truncated to the window), and, where the window is exact, the float dot product of the decoded
elements.
"""

from __future__ import annotations

import numpy as np


def wrap(v: np.ndarray, bits: int, signed: bool = True) -> np.ndarray:
    """v modulo 2^bits, as two's complement (signed) or unsigned."""
    v = np.asarray(v, dtype=np.int64) & ((1 << bits) - 1)
    if signed:
        v = np.where(v >= 1 << (bits - 1), v - (1 << bits), v)
    return v


def leading_zeros(x: np.ndarray, width: int) -> np.ndarray:
    x = np.asarray(x, dtype=np.int64)
    bl = np.zeros_like(x)
    t = x.copy()
    while (t > 0).any():
        bl += t > 0
        t >>= 1
    return width - bl


# ------------------------------------------------------------------------ minifloats

def elem_fields(codes: np.ndarray, elem) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sign, effective exponent field max(E, 1), significand incl. hidden bit) of element codes."""
    c = np.asarray(codes, dtype=np.int64)
    mb, e = elem.mbits, elem.ebits
    mant = c & ((1 << mb) - 1)
    ex = (c >> mb) & ((1 << e) - 1)
    sign = (c >> (mb + e)) & 1
    sig = mant + np.where(ex > 0, 1 << mb, 0)
    return sign, np.maximum(ex, 1), sig


def elem_values(codes: np.ndarray, elem) -> np.ndarray:
    """Exact float64 values of finite element codes (from the fields, as the hardware reads them)."""
    sign, ex, sig = elem_fields(codes, elem)
    return np.where(sign == 1, -1.0, 1.0) * sig * np.exp2((ex - elem.bias - elem.mbits).astype(np.float64))


def finite_codes(elem, signed: bool = True) -> np.ndarray:
    """Every finite code of the element format (NaN/Inf encodings left out)."""
    n = 1 << (elem.ebits + elem.mbits + (1 if signed else 0))
    codes = np.arange(n, dtype=np.int64)
    mag = codes & ((1 << (elem.ebits + elem.mbits)) - 1)
    top = ((elem.emax + elem.bias) << elem.mbits) | elem.max_mantissa
    return codes[mag <= top]


def encode(values: np.ndarray, elem) -> np.ndarray:
    """Codes of exactly representable-in-float32 ``values`` in ``elem`` (hwsim.formats, RNE, saturating)."""
    from hwsim.formats import encode_floats

    v32 = np.asarray(values, dtype=np.float32)
    return encode_floats(v32, elem, saturate=True).astype(np.int64)


def fp_mul(x: np.ndarray, y: np.ndarray, elem) -> np.ndarray:
    """Codes of x * y (element codes) rounded to ``elem``; sign = sign(x) xor sign(y), also for zero."""
    prod = elem_values(x, elem) * elem_values(y, elem)
    codes = encode(np.abs(prod), elem)
    sign = ((np.asarray(x) ^ np.asarray(y)) >> (elem.ebits + elem.mbits)) & 1
    return codes | (sign << (elem.ebits + elem.mbits))


def fp_add_values(x: np.ndarray, y: np.ndarray, elem) -> np.ndarray:
    """Values of x + y rounded to ``elem`` (compare values: the sign of an exact zero is free)."""
    from hwsim.formats import decode_elem

    total = elem_values(x, elem) + elem_values(y, elem)
    return decode_elem(encode(total, elem), elem).astype(np.float64)


# ------------------------------------------------------------------------ block dot products

def accumulate(acc: np.ndarray, total: np.ndarray, wt: int, blk_exp: np.ndarray, acc_bits: int) -> np.ndarray:
    """Next accumulator: acc + (total << low bits of blk_exp) when the sum is narrower than the
    accumulator, else acc + the sum's top acc_bits bits; wrapped to acc_bits."""
    if acc_bits > wt:
        k = max(acc_bits - wt, 0).bit_length()
        sh = np.asarray(blk_exp, dtype=np.int64) & ((1 << k) - 1)
        add = np.asarray(total, dtype=np.int64) << sh
    else:
        add = np.asarray(total, dtype=np.int64) >> (wt - acc_bits)
    return wrap(np.asarray(acc, dtype=np.int64) + add, acc_bits)


def block_fp_sum(x: np.ndarray, w: np.ndarray, ea, eb, w_win: int) -> tuple[np.ndarray, np.ndarray]:
    """(windowed sum, largest product exponent) of a BlockDotFP block; x, w: (n, B) codes.

    Each product s * P (P the significand product) sits at 2^(E - E_max) of the block's largest
    product exponent E_max, in a window of w_win bits below the exact frame's top: floor of
    s * P * 2^(delta - (E_max - E)) / 2^(pa + pb + delta - w_win)."""
    sx, exx, gx = elem_fields(x, ea)
    sw, exw, gw = elem_fields(w, eb)
    pa, pb = ea.mbits + 1, eb.mbits + 1
    delta = (ea.emax - ea.emin) + (eb.emax - eb.emin)
    drop = pa + pb + delta - w_win
    prod = np.where((sx ^ sw) == 1, -1, 1) * gx * gw
    e = exx + exw
    e_max = e.max(axis=1, keepdims=True)
    shift = delta - (e_max - e) - drop          # floor(prod * 2^shift), without overflowing int64
    aligned = np.where(shift >= 0, prod << np.maximum(shift, 0), prod >> np.maximum(-shift, 0))
    return aligned.sum(axis=1), e_max[:, 0]


def block_fp_value(x: np.ndarray, w: np.ndarray, ea, eb) -> np.ndarray:
    """Float dot product of the decoded elements of each block (exact in float64 here)."""
    return (elem_values(x, ea) * elem_values(w, eb)).sum(axis=1)


# ------------------------------------------------------------------------ exact rounding (any width)

def round_to_code(negative: bool, n: int, k: int, elem) -> int:
    """Code of (-1)^negative * n * 2^k (n >= 0 a Python int) rounded to nearest even in ``elem``,
    saturating at the largest finite value (pure integer arithmetic, any width)."""
    mb = elem.mbits
    sign = (1 << (elem.ebits + mb)) if negative else 0
    if n == 0:
        return sign
    x = k + n.bit_length() - 1                     # exponent of the leading bit
    u = max(x - mb, elem.emin - mb)                # exponent of the result's last bit
    if k >= u:
        q = n << (k - u)
    else:
        sh = u - k
        q, rem = n >> sh, n & ((1 << sh) - 1)
        half = 1 << (sh - 1)
        if rem > half or (rem == half and q & 1):
            q += 1
    if q >> (mb + 1):                              # rounding carried into a new leading bit
        q >>= 1
        u += 1
    top = ((elem.emax + elem.bias) << mb) | elem.max_mantissa
    if q < (1 << mb):                              # subnormal
        return sign | q
    code = ((u + mb + elem.bias) << mb) | (q - (1 << mb))
    return sign | min(code, top)


def fp_mul_exact(x: np.ndarray, y: np.ndarray, elem) -> np.ndarray:
    """Codes of x * y by exact integer arithmetic (any element width)."""
    sx, ex, gx = elem_fields(x, elem)
    sy, ey, gy = elem_fields(y, elem)
    k0 = -2 * (elem.bias + elem.mbits)
    return np.array([round_to_code(bool(a ^ b), int(p) * int(q), int(e) + int(f) + k0, elem)
                     for a, b, p, q, e, f in zip(sx, sy, gx, gy, ex, ey)], dtype=np.int64)


def fp_add_exact(x: np.ndarray, y: np.ndarray, elem) -> np.ndarray:
    """Values (float64) of x + y rounded by exact integer arithmetic (any element width)."""
    sx, ex, gx = elem_fields(x, elem)
    sy, ey, gy = elem_fields(y, elem)
    out = []
    for a, b, p, q, e, f in zip(sx, sy, gx, gy, ex, ey):
        lo = min(int(e), int(f))
        n = (-1 if a else 1) * (int(p) << (int(e) - lo)) + (-1 if b else 1) * (int(q) << (int(f) - lo))
        out.append(round_to_code(n < 0, abs(n), lo - elem.bias - elem.mbits, elem))
    return elem_values(np.array(out, dtype=np.int64), elem)
