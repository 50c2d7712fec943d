"""numba CPU codec kernels: exact integer arithmetic on fp32 bit patterns (formats.md §2-§3).

Every element is decomposed into (sign, significand m < 2**24, exponent of its LSB) and rounded to
the target step with integer shifts, so no float log2/exp2/division appears in the exact paths.
Element parameters travel as an int64 vector built by :func:`elem_params` (layout ``P_*`` below).
Kernels are compiled once and cached (``cache=True``); none uses fastmath.
"""

from __future__ import annotations

import numba as nb
import numpy as np
from numba import prange

# ---- element parameter vector layout ---------------------------------------------------------
P_KIND, P_BITS, P_CMIN, P_CMAX, P_IE, P_SIGNMAG = 0, 1, 2, 3, 4, 5
P_EBITS, P_MBITS, P_BIAS, P_EMIN, P_EMAX, P_SPECIALS, P_SUBN, P_SAT, P_MAXMANT = range(6, 15)
N_PARAMS = 15
SPECIALS_CODE = {"ieee": 0, "fn": 1, "none": 2}

# 2**k as fp32 for k in [-149, 127], built from bits (index k + 149).
POW2_F32 = np.concatenate([
    (np.uint32(1) << np.arange(23, dtype=np.uint32)).view(np.float32),
    ((np.arange(1, 255, dtype=np.uint32)) << np.uint32(23)).view(np.float32),
]).astype(np.float32)
assert POW2_F32.shape == (277,)

_U32 = np.uint64(0xFFFFFFFF)
_M0 = np.uint64(0xD2511F53)
_M1 = np.uint64(0xCD9E8D57)
_W0 = np.uint64(0x9E3779B9)
_W1 = np.uint64(0xBB67AE85)
_S32 = np.uint64(32)


def elem_params(elem) -> np.ndarray:
    """int64 parameter vector for an IntElem or FloatElem (see the P_* layout)."""
    from .spec import FloatElem, IntElem

    p = np.zeros(N_PARAMS, dtype=np.int64)
    if isinstance(elem, IntElem):
        p[P_KIND] = 0
        p[P_BITS], p[P_CMIN], p[P_CMAX], p[P_IE] = elem.bits, elem.c_min, elem.c_max, elem.ie
        p[P_SIGNMAG] = elem.encoding == "signmag"
    elif isinstance(elem, FloatElem):
        p[P_KIND] = 1
        p[P_BITS] = elem.bits
        p[P_EBITS], p[P_MBITS], p[P_BIAS] = elem.ebits, elem.mbits, elem.bias
        p[P_EMIN], p[P_EMAX] = elem.emin, elem.emax
        p[P_SPECIALS] = SPECIALS_CODE[elem.specials]
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
    for _ in range(10):
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
def _bitlen(v):
    n = 0
    while v > 0:
        v >>= 1
        n += 1
    return n


@nb.njit(cache=True, inline="always")
def floor_log2_bits(ax):
    """floor(log2 a) of a positive finite fp32 given its abs bit pattern."""
    ef = ax >> 23
    if ef == 0:
        return _bitlen(ax & 0x7FFFFF) - 150
    return ef - 127


@nb.njit(cache=True, inline="always")
def is_pow2_bits(ax):
    fr = ax & 0x7FFFFF
    if (ax >> 23) == 0:
        return (fr & (fr - 1)) == 0
    return fr == 0


@nb.njit(cache=True, inline="always")
def round_mag(m, shift, neg, mode, r):
    """Round m * 2**-shift to an integer magnitude under ``mode`` (0 RNE 1 RNA 2 RTZ 3 RDN 4 SR)."""
    if shift <= 0:
        s = -shift
        if s > 38:
            s = 38
        return m << s
    if shift > 62:
        shift = 62
    q = m >> shift
    rem = m - (q << shift)
    if mode == 0:
        half = np.int64(1) << (shift - 1)
        if rem > half or (rem == half and (q & 1) == 1):
            q += 1
    elif mode == 1:
        half = np.int64(1) << (shift - 1)
        if rem >= half:
            q += 1
    elif mode == 3:
        if neg and rem != 0:
            q += 1
    elif mode == 4:
        if shift <= 32:
            f = rem << (32 - shift)
        else:
            f = rem >> (shift - 32)
        if f > r:
            q += 1
    return q


@nb.njit(cache=True, inline="always")
def encode_elem(xb, e, P, mode, r):
    """Code of the finite fp32 (bits xb) scaled by 2**-e, rounded with ``mode`` (r: SR word)."""
    neg = (xb >> 31) & 1
    ax = xb & 0x7FFFFFFF
    if ax != 0:
        ef = ax >> 23
        if ef == 0:
            m = ax
            lx = -149
            fl = _bitlen(ax) - 150
        else:
            m = (ax & 0x7FFFFF) | 0x800000
            lx = ef - 150
            fl = ef - 127
    else:
        m = np.int64(0)
        lx = 0
        fl = 0
    if P[0] == 0:  # integer element
        bits = P[1]
        n = np.int64(0)
        if ax != 0:
            n = round_mag(m, P[4] + e - lx, neg, mode, r)
        if neg:
            lim = -P[2]
            if n > lim:
                n = lim
            if P[5]:
                return (np.int64(1) << (bits - 1)) | n
            return (-n) & ((np.int64(1) << bits) - 1)
        if n > P[3]:
            n = P[3]
        return n
    ebits = P[6]
    mbits = P[7]
    signbit = neg << (ebits + mbits)
    if ax == 0:
        return signbit
    emin = P[9]
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
        if P[12] == 0:
            return signbit
        expf = np.int64(0)
        mant = n
    else:
        expf = E + P[8]
        mant = n - (np.int64(1) << mbits)
    emax = P[10]
    if E > emax or (E == emax and mant > P[14]):
        maxcode = ((emax + P[8]) << mbits) | P[14]
        if P[13] or mode == 2 or (mode == 3 and not neg):
            return signbit | maxcode
        if P[11] == 0:
            return signbit | (((np.int64(1) << ebits) - 1) << mbits)
        return signbit | ((np.int64(1) << (ebits + mbits)) - 1)
    return signbit | (expf << mbits) | mant


@nb.njit(cache=True, inline="always")
def ldexp_f32(n, st, pow2):
    """RNE32(n * 2**st) for an integer |n| < 2**24 (one rounding; ±0 keeps the sign of n)."""
    f = np.float32(n)
    if n == 0:
        return f
    e1 = st
    if e1 < -126:
        e1 = -126
    elif e1 > 127:
        e1 = 127
    e2 = st - e1
    if e2 < -149:
        return f * np.float32(0.0)
    if e2 > 127:
        e2 = 127
    return (f * pow2[e1 + 149]) * pow2[e2 + 149]


@nb.njit(cache=True, inline="always")
def decode_elem(code, e, P, pow2):
    """fp32 value of an element code times 2**e."""
    if P[0] == 0:
        bits = P[1]
        if P[5]:
            mag = code & ((np.int64(1) << (bits - 1)) - 1)
            v = ldexp_f32(mag, P[4] + e, pow2)
            if (code >> (bits - 1)) & 1:
                return -v
            return v
        c = code
        if P[2] < 0 and c >= (np.int64(1) << (bits - 1)):
            c -= np.int64(1) << bits
        return ldexp_f32(c, P[4] + e, pow2)
    ebits = P[6]
    mbits = P[7]
    neg = (code >> (ebits + mbits)) & 1
    expf = (code >> mbits) & ((np.int64(1) << ebits) - 1)
    mant = code & ((np.int64(1) << mbits) - 1)
    top = (np.int64(1) << ebits) - 1
    if P[11] == 0 and expf == top:
        if mant == 0:
            v = np.float32(np.inf)
        else:
            v = np.float32(np.nan)
    elif P[11] == 1 and expf == top and mant == (np.int64(1) << mbits) - 1:
        v = np.float32(np.nan)
    elif expf == 0:
        v = ldexp_f32(mant, P[9] - mbits + e, pow2)
    else:
        v = ldexp_f32(mant + (np.int64(1) << mbits), expf - P[8] - mbits + e, pow2)
    if neg:
        return -v
    return v


@nb.njit(cache=True, inline="always")
def shared_exponent(amax, rule, emax_elem, rq):
    """Unclamped shared exponent of a block with abs-max bits ``amax`` > 0 (rule 0 FLOOR 1 CEIL 2 RCEIL)."""
    if rule == 0:
        return floor_log2_bits(amax) - emax_elem
    if rule == 1:
        c = floor_log2_bits(amax)
        if not is_pow2_bits(amax):
            c += 1
        return c - emax_elem - 1
    # RCEIL: ceil(log2 rq) where rq = RNE32(amax / max_elem) (bits); rq == 0 -> very small
    if rq == 0:
        return -100000
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
    if P[0] == 0:
        st = P[4] + e
        if st < -127 or st > 126 or (ftz and st < -125):
            return False
        inv = pow2[149 - st]
        scl = pow2[149 + st]
        lo = np.float32(P[2])
        hi = np.float32(P[3])
        zero = np.float32(0.0)
        if P[5]:  # sign-magnitude keeps -0
            for k in range(n):
                orow[start + k] = min(max(np.rint(xr[start + k] * inv), lo), hi) * scl
        else:  # two's complement has no -0
            for k in range(n):
                orow[start + k] = (min(max(np.rint(xr[start + k] * inv), lo), hi) + zero) * scl
        return True
    mbits = P[7]
    emin = P[9]
    if e > 127 or e < -127 or e < -126 - emin or (ftz and e < -125 + mbits - emin):
        return False
    shift = np.uint32(23 - mbits)
    half = np.uint32((1 << (23 - mbits - 1)) - 1)
    mask = ~np.uint32((1 << (23 - mbits)) - 1)
    one = np.uint32(1)
    inv_e = pow2[149 - e]
    scl_e = pow2[149 + e]
    sub_in = pow2[149 + mbits - emin]
    sub_out = pow2[149 + emin - mbits]
    thr = pow2[149 + emin]
    vmax = np.float32((np.int64(1) << mbits) + P[14]) * pow2[149 + P[10] - mbits]
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
            a = br[start + k] & np.uint32(0x7FFFFFFF)
            if a >= np.uint32(0x800000) and a > amax:
                amax = a
    else:
        for k in range(n):  # branch-free so that it vectorizes
            amax = max(amax, br[start + k] & np.uint32(0x7FFFFFFF))
    return np.int64(amax)


@nb.njit(cache=True, inline="always")
def block_exponent(amax, rule, emax_elem, rq_bits, sc_min, sc_max, sc_nan):
    """(clamped shared exponent, non-finite flag) of a block with abs-max bits ``amax``.

    The flag is set for a NaN/Inf input, or an exponent above sc_max when the scale has a NaN
    code (``sc_nan`` >= 0); without one the exponent saturates at sc_max."""
    if amax >= 0x7F800000:  # NaN bit patterns sort above +Inf
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
        if ftz and (x & 0x7FFFFFFF) < 0x800000:
            x = x & 0x80000000
        r = np.int64(0)
        if mode == 4:
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
    elif mode != 0 or not _fake_block_rne(xr, br, start, n, e, P, ftz, orow, scratch, pow2):
        _fake_block_exact(br, start, start + n, e, P, ftz, mode, seed_lo, seed_hi, idx0, idx_step,
                          orow, pow2)
    return nonfinite


@nb.njit(parallel=True, cache=True)
def block_codec(xb, B, P, emax_elem, rule, rq, sc_min, sc_max, sc_bias, sc_nan, ftz, mode,
                seed_lo, seed_hi, post, codes, scales):
    """Encode MX/BFP blocks of xb [rows, L] (fp32 bits as uint32) into codes [rows, nb*B] (zero
    past the tail) and scales [rows, nb]. ``rq`` holds RNE32(amax/max_elem) bits per block for RCEIL (rule 2). ``sc_nan`` < 0 means
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
            rq_bits = np.int64(rq[row, j]) if rule == 2 else np.int64(0)
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
                    if ftz and (x & 0x7FFFFFFF) < 0x800000:
                        x = x & 0x80000000
                    r = np.int64(0)
                    if mode == 4:
                        r = philox_u32(seed_lo, seed_hi, (p_i * L + i) * post + q_i)
                    c = encode_elem(x, e, P, mode, r)
                codes[row, i] = c
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
            rq_bits = np.int64(rq[row, j]) if rule == 2 else np.int64(0)
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
    """Standalone element formats on a flat fp32-bit array (non-finite per formats.md §3.1).

    ``idx`` (int64, or empty for 0..n-1) gives each element's logical flat index for SR.
    Returns the number of NaN inputs mapped to -0 (formats without a NaN code)."""
    n = xb.shape[0]
    ebits = P[6]
    mbits = P[7]
    emax = P[10]
    maxcode = ((emax + P[8]) << mbits) | P[14]
    top = (np.int64(1) << ebits) - 1
    if P[11] == 0:
        nancode = (top << mbits) | (np.int64(1) << max(mbits - 1, 0))
        infcode = top << mbits
    else:
        nancode = (np.int64(1) << (ebits + mbits)) - 1
        infcode = nancode
    nan_lost = np.zeros(n, dtype=np.int8)
    for i in prange(n):
        x = np.int64(xb[i])
        neg = (x >> 31) & 1
        signbit = neg << (ebits + mbits)
        ax = x & 0x7FFFFFFF
        if ax > 0x7F800000:
            if P[11] == 2:
                c = np.int64(1) << (ebits + mbits)  # -0: no NaN code
                nan_lost[i] = 1
            else:
                c = signbit | nancode
        elif ax == 0x7F800000:
            if P[13]:
                c = signbit | maxcode
            else:
                c = signbit | infcode
        else:
            r = np.int64(0)
            if mode == 4:
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
            neg = (x >> 31) & 1
            ax = x & 0x7FFFFFFF
            n = np.int64(0)
            if ax != 0:
                ef = ax >> 23
                if ef == 0:
                    m = ax
                    lx = -149
                else:
                    m = (ax & 0x7FFFFF) | 0x800000
                    lx = ef - 150
                r = np.int64(0)
                if mode == 4 and i < idx_L:
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
