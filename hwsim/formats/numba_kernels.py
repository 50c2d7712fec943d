"""numba CPU codec kernels: exact integer arithmetic on fp32 bit patterns (docs/spec/formats.md §2-§3).

Every element is decomposed into (sign, significand m < 2**24, exponent of its LSB) and rounded to
the target step with integer shifts, so no float log2/exp2/division appears in the exact paths.
Element parameters travel as an int64 vector built by :func:`elem_params` (layout ``P_*`` below).
Kernels are compiled once and cached (``cache=True``); none uses fastmath.
"""

from __future__ import annotations

import numba as nb
import numpy as np
from numba import prange

from .bits import (F32_ABS_MASK, F32_BIAS, F32_EMAX, F32_EMIN, F32_HIDDEN_BIT, F32_INF_BITS,
                   F32_LSB_BIAS, F32_LSB_EXP, F32_MANT_BITS, F32_MANT_MASK, F32_MAX_LSHIFT,
                   F32_MAX_SHIFT, F32_SIGN_MASK, F32_SIGN_SHIFT, POW2_F32, POW2_ZERO, WORD_BITS,
                   bitlen)
from .spec import (MODE_RDN, MODE_RNA, MODE_RNE, MODE_RTZ, MODE_SR, RULE_CEIL, RULE_FLOOR,
                   RULE_RCEIL, SPECIALS_CODE, SPECIALS_IEEE, SPECIALS_FN, SPECIALS_NONE, FloatElem,
                   IntElem)

__all__ = ["POW2_F32", "SPECIALS_CODE", "elem_params"]   # POW2_F32 / SPECIALS_CODE: re-exported

# ---- element parameter vector layout ---------------------------------------------------------
# Integer elements use P_BITS..P_SIGNMAG, float elements P_BITS and P_EBITS..P_MAXMANT.
P_KIND, P_BITS, P_CMIN, P_CMAX, P_IE, P_SIGNMAG = 0, 1, 2, 3, 4, 5
P_EBITS, P_MBITS, P_BIAS, P_EMIN, P_EMAX, P_SPECIALS, P_SUBN, P_SAT, P_MAXMANT = range(6, 15)
N_PARAMS = 15
KIND_INT, KIND_FLOAT = 0, 1                       # P[P_KIND]

# An RCEIL block whose amax / max_elem rounds to 0 gets this exponent: below every scale's e_min,
# so the clamp that follows turns it into e_min.
E_UNDERFLOW = -100000

# Philox4x32-10 (Salmon et al., SC'11): round multipliers and Weyl key increments.
PHILOX_M0, PHILOX_M1 = 0xD2511F53, 0xCD9E8D57
PHILOX_W0, PHILOX_W1 = 0x9E3779B9, 0xBB67AE85
PHILOX_ROUNDS = 10
_U32 = np.uint64((1 << WORD_BITS) - 1)
_M0, _M1, _W0, _W1 = (np.uint64(v) for v in (PHILOX_M0, PHILOX_M1, PHILOX_W0, PHILOX_W1))
_S32 = np.uint64(WORD_BITS)

# Shared exponents e for which the fused RNE path of _fake_block_rne is exact: 2**e and 2**-e are
# table entries, and a scaled element is either a normal fp32 number or far below half a step.
FAST_E_LO = F32_EMIN - 1              # -127
FAST_E_HI = F32_EMAX - 1              # 126 for integer elements (127 for minifloats)
FAST_E_LO_FTZ = F32_EMIN + 1          # -125: with input FTZ, fp32 subnormals must round to 0


def elem_params(elem) -> np.ndarray:
    """int64 parameter vector for an IntElem or FloatElem (see the P_* layout)."""
    p = np.zeros(N_PARAMS, dtype=np.int64)
    if isinstance(elem, IntElem):
        p[P_KIND] = KIND_INT
        p[P_BITS], p[P_CMIN], p[P_CMAX], p[P_IE] = elem.bits, elem.c_min, elem.c_max, elem.ie
        p[P_SIGNMAG] = elem.encoding == "signmag"
    elif isinstance(elem, FloatElem):
        p[P_KIND] = KIND_FLOAT
        p[P_BITS] = elem.bits
        p[P_EBITS], p[P_MBITS], p[P_BIAS] = elem.ebits, elem.mbits, elem.bias
        p[P_EMIN], p[P_EMAX] = elem.emin, elem.emax
        p[P_SPECIALS] = elem.specials_code
        p[P_SUBN], p[P_SAT], p[P_MAXMANT] = elem.subnormals, elem.saturate, elem.max_mantissa
    else:  # pragma: no cover - guarded by callers
        raise TypeError(f"not an element spec: {elem!r}")
    return p


# ---- scalar helpers (inlined) ----------------------------------------------------------------


@nb.njit(cache=True, inline="always")
def philox_u32(seed_lo, seed_hi, idx):
    """First 32-bit word of Philox4x32-10 with key (seed_lo, seed_hi), counter (idx lo, idx hi, 0, 0)."""
    k0 = np.uint64(seed_lo) & _U32
    k1 = np.uint64(seed_hi) & _U32
    c0 = np.uint64(idx) & _U32
    c1 = (np.uint64(idx) >> _S32) & _U32
    c2 = np.uint64(0)
    c3 = np.uint64(0)
    for _ in range(PHILOX_ROUNDS):
        p0 = _M0 * c0
        p1 = _M1 * c2
        n0 = ((p1 >> _S32) ^ c1 ^ k0) & _U32
        n2 = ((p0 >> _S32) ^ c3 ^ k1) & _U32
        c1 = p1 & _U32
        c3 = p0 & _U32
        c0 = n0
        c2 = n2
        k0 = (k0 + _W0) & _U32
        k1 = (k1 + _W1) & _U32
    return np.int64(c0)


@nb.njit(cache=True, inline="always")
def floor_log2_bits(ax):
    """floor(log2 a) of a positive finite fp32 given its abs bit pattern."""
    ef = ax >> F32_MANT_BITS
    if ef == 0:
        return bitlen(ax & F32_MANT_MASK) - F32_LSB_BIAS
    return ef - F32_BIAS


@nb.njit(cache=True, inline="always")
def is_pow2_bits(ax):
    fr = ax & F32_MANT_MASK
    if (ax >> F32_MANT_BITS) == 0:
        return (fr & (fr - 1)) == 0
    return fr == 0


@nb.njit(cache=True, inline="always")
def round_mag(m, shift, neg, mode, r):
    """Round m * 2**-shift to an integer magnitude under ``mode`` (MODE_*; r: the SR word)."""
    if shift <= 0:
        s = -shift
        if s > F32_MAX_LSHIFT:
            s = F32_MAX_LSHIFT
        return m << s
    if shift > F32_MAX_SHIFT:
        shift = F32_MAX_SHIFT
    q = m >> shift
    rem = m - (q << shift)
    if mode == MODE_RNE:
        half = np.int64(1) << (shift - 1)
        if rem > half or (rem == half and (q & 1) == 1):
            q += 1
    elif mode == MODE_RNA:
        half = np.int64(1) << (shift - 1)
        if rem >= half:
            q += 1
    elif mode == MODE_RDN:
        if neg and rem != 0:
            q += 1
    elif mode == MODE_SR:  # round up when the top 32 bits of the fraction exceed the random word
        if shift <= WORD_BITS:
            f = rem << (WORD_BITS - shift)
        else:
            f = rem >> (shift - WORD_BITS)
        if f > r:
            q += 1
    return q  # MODE_RTZ: truncated


@nb.njit(cache=True, inline="always")
def encode_elem(xb, e, P, mode, r):
    """Code of the finite fp32 (bits xb) scaled by 2**-e, rounded with ``mode`` (r: SR word)."""
    neg = (xb >> F32_SIGN_SHIFT) & 1
    ax = xb & F32_ABS_MASK
    if ax != 0:
        ef = ax >> F32_MANT_BITS
        if ef == 0:
            m = ax
            lx = F32_LSB_EXP
            fl = bitlen(ax) - F32_LSB_BIAS
        else:
            m = (ax & F32_MANT_MASK) | F32_HIDDEN_BIT
            lx = ef - F32_LSB_BIAS
            fl = ef - F32_BIAS
    else:
        m = np.int64(0)
        lx = 0
        fl = 0
    if P[P_KIND] == KIND_INT:
        bits = P[P_BITS]
        n = np.int64(0)
        if ax != 0:
            n = round_mag(m, P[P_IE] + e - lx, neg, mode, r)
        if neg:
            lim = -P[P_CMIN]
            if n > lim:
                n = lim
            if P[P_SIGNMAG]:
                return (np.int64(1) << (bits - 1)) | n
            return (-n) & ((np.int64(1) << bits) - 1)
        if n > P[P_CMAX]:
            n = P[P_CMAX]
        return n
    ebits = P[P_EBITS]
    mbits = P[P_MBITS]
    signbit = neg << (ebits + mbits)
    if ax == 0:
        return signbit
    emin = P[P_EMIN]
    E = fl - e
    if E < emin:
        E = emin
    n = round_mag(m, E - mbits + e - lx, neg, mode, r)
    if n == 0:
        return signbit
    if n >= (np.int64(1) << (mbits + 1)):
        n >>= 1
        E += 1
    if E == emin and n < (np.int64(1) << mbits):
        if P[P_SUBN] == 0:
            return signbit
        expf = np.int64(0)
        mant = n
    else:
        expf = E + P[P_BIAS]
        mant = n - (np.int64(1) << mbits)
    emax = P[P_EMAX]
    if E > emax or (E == emax and mant > P[P_MAXMANT]):
        maxcode = ((emax + P[P_BIAS]) << mbits) | P[P_MAXMANT]
        # saturate: the format says so, or the rounding goes toward zero from this side
        if P[P_SAT] or mode == MODE_RTZ or (mode == MODE_RDN and not neg):
            return signbit | maxcode
        if P[P_SPECIALS] == SPECIALS_IEEE:  # +-Inf
            return signbit | (((np.int64(1) << ebits) - 1) << mbits)
        return signbit | ((np.int64(1) << (ebits + mbits)) - 1)  # 'fn': the NaN code (all ones)
    return signbit | (expf << mbits) | mant


@nb.njit(cache=True, inline="always")
def ldexp_f32(n, st, pow2):
    """RNE32(n * 2**st) for an integer |n| < 2**24 (one rounding; ±0 keeps the sign of n)."""
    f = np.float32(n)
    if n == 0:
        return f
    e1 = st  # first factor: a normal power of two, so that the first product is exact
    if e1 < F32_EMIN:
        e1 = F32_EMIN
    elif e1 > F32_EMAX:
        e1 = F32_EMAX
    e2 = st - e1
    if e2 < F32_LSB_EXP:
        return f * np.float32(0.0)
    if e2 > F32_EMAX:
        e2 = F32_EMAX
    return (f * pow2[e1 + POW2_ZERO]) * pow2[e2 + POW2_ZERO]


@nb.njit(cache=True, inline="always")
def decode_elem(code, e, P, pow2):
    """fp32 value of an element code times 2**e."""
    if P[P_KIND] == KIND_INT:
        bits = P[P_BITS]
        if P[P_SIGNMAG]:
            mag = code & ((np.int64(1) << (bits - 1)) - 1)
            v = ldexp_f32(mag, P[P_IE] + e, pow2)
            if (code >> (bits - 1)) & 1:
                return -v
            return v
        c = code
        if P[P_CMIN] < 0 and c >= (np.int64(1) << (bits - 1)):
            c -= np.int64(1) << bits
        return ldexp_f32(c, P[P_IE] + e, pow2)
    ebits = P[P_EBITS]
    mbits = P[P_MBITS]
    neg = (code >> (ebits + mbits)) & 1
    expf = (code >> mbits) & ((np.int64(1) << ebits) - 1)
    mant = code & ((np.int64(1) << mbits) - 1)
    top = (np.int64(1) << ebits) - 1
    if P[P_SPECIALS] == SPECIALS_IEEE and expf == top:
        if mant == 0:
            v = np.float32(np.inf)
        else:
            v = np.float32(np.nan)
    elif P[P_SPECIALS] == SPECIALS_FN and expf == top and mant == (np.int64(1) << mbits) - 1:
        v = np.float32(np.nan)
    elif expf == 0:
        v = ldexp_f32(mant, P[P_EMIN] - mbits + e, pow2)
    else:
        v = ldexp_f32(mant + (np.int64(1) << mbits), expf - P[P_BIAS] - mbits + e, pow2)
    if neg:
        return -v
    return v


@nb.njit(cache=True, inline="always")
def shared_exponent(amax, rule, emax_elem, rq):
    """Unclamped shared exponent of a block with abs-max bits ``amax`` > 0 (``rule``: RULE_*)."""
    if rule == RULE_FLOOR:
        return floor_log2_bits(amax) - emax_elem
    if rule == RULE_CEIL:
        c = floor_log2_bits(amax)
        if not is_pow2_bits(amax):
            c += 1
        return c - emax_elem - 1
    # RCEIL: ceil(log2 rq) where rq = RNE32(amax / max_elem) (bits); rq == 0 -> very small
    if rq == 0:
        return E_UNDERFLOW
    c = floor_log2_bits(rq)
    if not is_pow2_bits(rq):
        c += 1
    return c


@nb.njit(cache=True, inline="always")
def _fake_block_rne(xr, br, start, n, e, P, ftz, orow, scratch, pow2):
    """Fused RNE fake quantization of the block [start, start + n) of a row (xr: fp32 values, br:
    their bits). Callers pass a literal ``n`` for full blocks so that the loops vectorize without
    remainders.

    Vectorizable float arithmetic that is exact here: multiplies by 2**±e are exact whenever the
    product is normal, and a product below 2**-126 is far below half a step, so it rounds to
    (signed) zero either way. Minifloat elements round the fp32 significand to ``mbits`` bits with
    an integer add on the bit pattern (RNE), or, below the element's normal range, on the fixed
    subnormal step. Returns False (caller takes the integer path) when e leaves the safe range:
    inside it an fp32-subnormal input can only land in the element's subnormal range, and with
    ``ftz`` it rounds to (signed) zero, as flushing it first would."""
    if P[P_KIND] == KIND_INT:
        st = P[P_IE] + e
        if st < FAST_E_LO or st > FAST_E_HI or (ftz and st < FAST_E_LO_FTZ):
            return False
        inv = pow2[POW2_ZERO - st]
        scl = pow2[POW2_ZERO + st]
        lo = np.float32(P[P_CMIN])
        hi = np.float32(P[P_CMAX])
        zero = np.float32(0.0)
        if P[P_SIGNMAG]:  # sign-magnitude keeps -0
            for k in range(n):
                orow[start + k] = min(max(np.rint(xr[start + k] * inv), lo), hi) * scl
        else:  # two's complement has no -0
            for k in range(n):
                orow[start + k] = (min(max(np.rint(xr[start + k] * inv), lo), hi) + zero) * scl
        return True
    mbits = P[P_MBITS]
    emin = P[P_EMIN]
    if (e > F32_EMAX or e < FAST_E_LO or e < F32_EMIN - emin
            or (ftz and e < FAST_E_LO_FTZ + mbits - emin)):
        return False
    shift = np.uint32(F32_MANT_BITS - mbits)             # fp32 mantissa bits dropped
    half = np.uint32((1 << (F32_MANT_BITS - mbits - 1)) - 1)
    mask = ~np.uint32((1 << (F32_MANT_BITS - mbits)) - 1)
    one = np.uint32(1)
    inv_e = pow2[POW2_ZERO - e]
    scl_e = pow2[POW2_ZERO + e]
    sub_in = pow2[POW2_ZERO + mbits - emin]             # to units of the subnormal step
    sub_out = pow2[POW2_ZERO + emin - mbits]
    thr = pow2[POW2_ZERO + emin]                        # the element's smallest normal
    vmax = (np.float32((np.int64(1) << mbits) + P[P_MAXMANT])
            * pow2[POW2_ZERO + P[P_EMAX] - mbits])      # the element's max_value
    for k in range(n):
        b = br[start + k]
        scratch[k] = (b + half + ((b >> shift) & one)) & mask
    rounded = scratch.view(np.float32)
    for k in range(n):
        v = xr[start + k] * inv_e
        y_sub = np.rint(v * sub_in) * sub_out
        y = rounded[k] * inv_e
        if abs(v) < thr:
            y = y_sub
        orow[start + k] = min(max(y, -vmax), vmax) * scl_e
    return True


# ---- kernels ---------------------------------------------------------------------------------


@nb.njit(cache=True, inline="always")
def block_amax(br, start, n, ftz):
    """Largest |x| bit pattern of the block br[start:start + n] (FTZ: fp32 subnormals ignored)."""
    amax = np.uint32(0)
    if ftz:
        for k in range(n):
            a = br[start + k] & np.uint32(F32_ABS_MASK)
            if a >= np.uint32(F32_HIDDEN_BIT) and a > amax:  # normal numbers only
                amax = a
    else:
        for k in range(n):  # branch-free so that it vectorizes
            amax = max(amax, br[start + k] & np.uint32(F32_ABS_MASK))
    return np.int64(amax)


@nb.njit(cache=True, inline="always")
def block_exponent(amax, rule, emax_elem, rq_bits, sc_min, sc_max, sc_nan):
    """(clamped shared exponent, non-finite flag) of a block with abs-max bits ``amax``.

    The flag is set for a NaN/Inf input, or an exponent above sc_max when the scale has a NaN
    code (``sc_nan`` >= 0); without one the exponent saturates at sc_max."""
    if amax >= F32_INF_BITS:  # NaN bit patterns sort above +Inf
        return np.int64(0), True
    if amax == 0:
        return np.int64(sc_min), False
    e = shared_exponent(amax, rule, emax_elem, rq_bits)
    if e < sc_min:
        e = sc_min
    if e > sc_max:
        if sc_nan >= 0:
            return e, True
        e = sc_max
    return e, False


@nb.njit(cache=True)
def _fake_block_exact(br, start, end, e, P, ftz, mode, seed_lo, seed_hi, idx0, idx_step, orow,
                      pow2):
    """Encode-then-decode of one block element by element with the integer path (any rounding;
    the SR index of element i is idx0 + i * idx_step)."""
    for i in range(start, end):
        x = np.int64(br[i])
        if ftz and (x & F32_ABS_MASK) < F32_HIDDEN_BIT:  # subnormal -> signed zero
            x = x & F32_SIGN_MASK
        r = np.int64(0)
        if mode == MODE_SR:
            r = philox_u32(seed_lo, seed_hi, idx0 + i * idx_step)
        orow[i] = decode_elem(encode_elem(x, e, P, mode, r), e, P, pow2)


@nb.njit(cache=True, inline="always")
def _fake_block(xr, br, start, n, orow, scratch, P, emax_elem, rule, rq_bits, sc_min, sc_max,
                sc_nan, ftz, mode, seed_lo, seed_hi, idx0, idx_step, pow2):
    """Fake-quantize the block [start, start + n) of one row; True when it is non-finite."""
    e, nonfinite = block_exponent(block_amax(br, start, n, ftz), rule, emax_elem, rq_bits, sc_min,
                                  sc_max, sc_nan)
    if nonfinite:
        for k in range(n):
            orow[start + k] = np.float32(np.nan)
    elif mode != MODE_RNE or not _fake_block_rne(xr, br, start, n, e, P, ftz, orow, scratch, pow2):
        _fake_block_exact(br, start, start + n, e, P, ftz, mode, seed_lo, seed_hi, idx0, idx_step,
                          orow, pow2)
    return nonfinite


@nb.njit(parallel=True, cache=True)
def block_codec(xb, B, P, emax_elem, rule, rq, sc_min, sc_max, sc_bias, sc_nan, ftz, mode,
                seed_lo, seed_hi, post, codes, scales):
    """Encode MX/BFP blocks of xb [rows, L] (fp32 bits as uint32) into codes [rows, nb*B] (zero
    past the tail) and scales [rows, nb]. ``rq`` holds RNE32(amax/max_elem) bits per block for
    RULE_RCEIL. ``sc_nan`` < 0 means
    the scale has no NaN code: a non-finite block then sets the returned flag."""
    rows, L = xb.shape
    nblk = (L + B - 1) // B
    bad_rows = np.zeros(rows, dtype=np.int64)
    for row in prange(rows):
        br = xb[row]
        p_i = row // post
        q_i = row - p_i * post
        for j in range(nblk):
            start = j * B
            end = min(start + B, L)
            rq_bits = np.int64(rq[row, j]) if rule == RULE_RCEIL else np.int64(0)
            e, nonfinite = block_exponent(block_amax(br, start, end - start, ftz), rule, emax_elem,
                                          rq_bits, sc_min, sc_max, sc_nan)
            if nonfinite:
                if sc_nan < 0:
                    bad_rows[row] = 1
                scales[row, j] = max(sc_nan, 0)
                for i in range(start, start + B):
                    codes[row, i] = 0
                continue
            scales[row, j] = e + sc_bias
            for i in range(start, start + B):
                c = np.int64(0)
                if i < end:
                    x = np.int64(br[i])
                    if ftz and (x & F32_ABS_MASK) < F32_HIDDEN_BIT:
                        x = x & F32_SIGN_MASK
                    r = np.int64(0)
                    if mode == MODE_SR:
                        r = philox_u32(seed_lo, seed_hi, (p_i * L + i) * post + q_i)
                    c = encode_elem(x, e, P, mode, r)
                codes[row, i] = c
    return bad_rows.sum()


@nb.njit(parallel=True, cache=True)
def block_scales(xb, B, emax_elem, rule, rq, sc_min, sc_max, sc_bias, sc_nan, ftz, scales):
    """The scale codes [rows, nb] that :func:`block_codec` writes for xb [rows, L], without
    encoding the elements (the same ``block_exponent`` per block). Returns the number of rows
    with a non-finite block when the scale has no NaN code (``sc_nan`` < 0)."""
    rows, L = xb.shape
    nblk = (L + B - 1) // B
    bad_rows = np.zeros(rows, dtype=np.int64)
    for row in prange(rows):
        br = xb[row]
        for j in range(nblk):
            start = j * B
            n = min(B, L - start)
            rq_bits = np.int64(rq[row, j]) if rule == RULE_RCEIL else np.int64(0)
            if n == 32:  # a literal trip count vectorizes better (see block_fake)
                amax = block_amax(br, start, 32, ftz)
            else:
                amax = block_amax(br, start, n, ftz)
            e, nonfinite = block_exponent(amax, rule, emax_elem, rq_bits, sc_min, sc_max, sc_nan)
            if nonfinite:
                if sc_nan < 0:
                    bad_rows[row] = 1
                scales[row, j] = max(sc_nan, 0)
            else:
                scales[row, j] = e + sc_bias
    return bad_rows.sum()


@nb.njit(parallel=True, cache=True)
def block_fake(xb, xf, B, P, emax_elem, rule, rq, sc_min, sc_max, sc_nan, ftz, mode, seed_lo,
               seed_hi, post, out, pow2):
    """Fused fake quantization (encode then decode, no codes kept) of MX/BFP blocks of xb
    [rows, L] (fp32 bits; xf: the same memory as fp32) into out [rows, L]. Arguments as
    :func:`block_codec`. RNE blocks take the vectorized :func:`_fake_block_rne` path; blocks of
    32 and 16 get loops with literal trip counts (about 1.4x faster than a runtime count)."""
    rows, L = xb.shape
    nblk = (L + B - 1) // B
    bad_rows = np.zeros(rows, dtype=np.int64)
    for row in prange(rows):
        scratch = np.empty(B, np.uint32)
        br = xb[row]
        xr = xf[row]
        orow = out[row]
        p_i = row // post
        idx0 = p_i * L * post + (row - p_i * post)
        bad = False
        for j in range(nblk):
            start = j * B
            n = min(B, L - start)
            rq_bits = np.int64(rq[row, j]) if rule == RULE_RCEIL else np.int64(0)
            if n == 32:
                bad |= _fake_block(xr, br, start, 32, orow, scratch, P, emax_elem, rule, rq_bits,
                                   sc_min, sc_max, sc_nan, ftz, mode, seed_lo, seed_hi, idx0, post,
                                   pow2)
            elif n == 16:
                bad |= _fake_block(xr, br, start, 16, orow, scratch, P, emax_elem, rule, rq_bits,
                                   sc_min, sc_max, sc_nan, ftz, mode, seed_lo, seed_hi, idx0, post,
                                   pow2)
            else:
                bad |= _fake_block(xr, br, start, n, orow, scratch, P, emax_elem, rule, rq_bits,
                                   sc_min, sc_max, sc_nan, ftz, mode, seed_lo, seed_hi, idx0, post,
                                   pow2)
        if bad and sc_nan < 0:
            bad_rows[row] = 1
    return bad_rows.sum()


@nb.njit(parallel=True, cache=True)
def block_decode(codes, scales, B, L, P, sc_bias, sc_nan, out, pow2):
    """Decode codes [rows, nb*B] with power-of-two scales [rows, nb] into out [rows, L] (fp32)."""
    rows = codes.shape[0]
    nblk = scales.shape[1]
    for row in prange(rows):
        for j in range(nblk):
            sc = np.int64(scales[row, j])
            start = j * B
            end = min(start + B, L)
            if sc_nan >= 0 and sc == sc_nan:
                for i in range(start, end):
                    out[row, i] = np.float32(np.nan)
                continue
            e = sc - sc_bias
            for i in range(start, end):
                out[row, i] = decode_elem(np.int64(codes[row, i]), e, P, pow2)


@nb.njit(parallel=True, cache=True)
def elem_codec(xb, P, mode, seed_lo, seed_hi, codes, out, write_codes, write_out, pow2, idx):
    """Standalone element formats on a flat fp32-bit array (non-finite per docs/spec/formats.md §3.1).

    ``idx`` (int64, or empty for 0..n-1) gives each element's logical flat index for SR.
    Returns the number of NaN inputs mapped to -0 (formats without a NaN code)."""
    n = xb.shape[0]
    ebits = P[P_EBITS]
    mbits = P[P_MBITS]
    emax = P[P_EMAX]
    maxcode = ((emax + P[P_BIAS]) << mbits) | P[P_MAXMANT]
    top = (np.int64(1) << ebits) - 1
    if P[P_SPECIALS] == SPECIALS_IEEE:
        nancode = (top << mbits) | (np.int64(1) << max(mbits - 1, 0))  # quiet NaN
        infcode = top << mbits
    else:
        nancode = (np.int64(1) << (ebits + mbits)) - 1
        infcode = nancode
    nan_lost = np.zeros(n, dtype=np.int8)
    for i in prange(n):
        x = np.int64(xb[i])
        neg = (x >> F32_SIGN_SHIFT) & 1
        signbit = neg << (ebits + mbits)
        ax = x & F32_ABS_MASK
        if ax > F32_INF_BITS:
            if P[P_SPECIALS] == SPECIALS_NONE:
                c = np.int64(1) << (ebits + mbits)  # -0: no NaN code
                nan_lost[i] = 1
            else:
                c = signbit | nancode
        elif ax == F32_INF_BITS:
            if P[P_SAT]:
                c = signbit | maxcode
            else:
                c = signbit | infcode
        else:
            r = np.int64(0)
            if mode == MODE_SR:
                r = philox_u32(seed_lo, seed_hi, i if idx.shape[0] == 0 else idx[i])
            c = encode_elem(x, 0, P, mode, r)
        if write_codes:
            codes[i] = c
        if write_out:
            out[i] = decode_elem(c, 0, P, pow2)
    return nan_lost.sum()


@nb.njit(parallel=True, cache=True)
def elem_decode(codes, P, out, pow2):
    for i in prange(codes.shape[0]):
        out[i] = decode_elem(np.int64(codes[i]), 0, P, pow2)


@nb.njit(parallel=True, cache=True)
def round_scaled(y, mode, seed_lo, seed_hi, idx_post, idx_L, G, z, lo, hi, codes):
    """Scaled-integer element rounding: codes[row, i] = clamp(R(y[row, i]) + z[row, i // G], lo, hi).

    y [rows, Lp] holds RNE32(x / s) as fp32 bits; the SR index is the logical flat index."""
    rows, Lp = y.shape
    for row in prange(rows):
        p_i = row // idx_post
        q_i = row - p_i * idx_post
        for i in range(Lp):
            x = np.int64(y[row, i])
            neg = (x >> F32_SIGN_SHIFT) & 1
            ax = x & F32_ABS_MASK
            n = np.int64(0)
            if ax != 0:
                ef = ax >> F32_MANT_BITS
                if ef == 0:
                    m = ax
                    lx = F32_LSB_EXP
                else:
                    m = (ax & F32_MANT_MASK) | F32_HIDDEN_BIT
                    lx = ef - F32_LSB_BIAS
                r = np.int64(0)
                if mode == MODE_SR and i < idx_L:
                    r = philox_u32(seed_lo, seed_hi, (p_i * idx_L + i) * idx_post + q_i)
                n = round_mag(m, -lx, neg, mode, r)
            c = (-n if neg else n) + z[row, i // G]
            if i >= idx_L:
                c = 0  # padded positions hold zero codes
            elif c < lo:
                c = lo
            elif c > hi:
                c = hi
            codes[row, i] = c
