"""numba CPU reference of the block-scaled matmul core (docs/spec/matmul.md §8.1).

Kernels take the integer view built by ``operands.prepare``: prange over output rows m, segments
in increasing j, exact int64 (or two-limb) segment sums, the exact two-step ldexp, and the fp32 /
fixed / exact accumulators. No fastmath; powers of two come from a bit-built table.

``mm_fp32_tiled`` is the fast form of the fp32 accumulator for pairs whose segment sums are exact in
fp32 (bound <= 2**24) or fp64 (<= 2**53) and whose codes hold no NaN/Inf: register tiles of 8 rows,
an 8-step unrolled K loop vectorized over N, integer-valued float sums (exact in any order, so that
part alone may use FMA contraction), then P^_j and acc <- RNE32(acc + P^_j) per segment in
increasing j, compiled without fastmath.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from hwsim.formats.bits import POW2_F32, POW2_ZERO, bitlen, pow2_f64

from .common import epilogue, tile_epi_g
from .datapath import ExactAcc, FixedAcc
from .exact_acc import BASE, NLIMB, limb_add, limb_mul, limb_round
from .operands import HALF_NAN, Prepared, codes_np, element_lut, fill_cols, fill_rows

NAME = "numba"
M32 = (1 << 32) - 1

ACC_FP32, ACC_FIXED = 0, 1


@njit(cache=True, inline="always")
def _pow2(pow2, e):
    return pow2[e + POW2_ZERO]


@njit(cache=True, inline="always")
def _acc_add(A, t, lim, wrap):
    """A + t in a two's-complement accumulator of lim = 2**W states: wrap or saturate."""
    s = A + t
    half_lim = lim >> 1
    if wrap:
        return ((s + half_lim) & (lim - 1)) - half_lim
    if s > half_lim - 1:
        return half_lim - 1
    if s < -half_lim:
        return -half_lim
    return s


@njit(cache=True)
def _round_shift(hi, lo, r):
    """RNE((hi*2**32 + lo) / 2**r) for hi >= 0, 0 <= lo < 2**32, r >= 0 (result < 2**62)."""
    if r == 0:
        return (hi << 32) + lo
    if r < 32:
        q = (hi << (32 - r)) | (lo >> r)
        rem = lo & ((1 << r) - 1)
        half = 1 << (r - 1)
        gt = rem > half
        tie = rem == half
    elif r < 94:
        s = r - 32
        q = hi >> s if s < 63 else 0
        if s == 0:
            gt = lo > (1 << 31)
            tie = lo == (1 << 31)
        elif s < 63:
            remhi = hi & ((1 << s) - 1)
            halfhi = 1 << (s - 1)
            gt = remhi > halfhi or (remhi == halfhi and lo > 0)
            tie = remhi == halfhi and lo == 0
        else:
            gt = False
            tie = False
    else:
        return 0
    if gt or (tie and (q & 1) == 1):
        q += 1
    return q


@njit(cache=True)
def _ldexp_small(sf, E, pow2):
    """RNE32(sf * 2**E) for an exact fp32 integer |sf| < 2**24 (two-step exact ldexp)."""
    E1 = min(max(E, -126), 127)
    E2 = E - E1
    if E2 < -149:
        return np.float32(0.0) * sf
    if E2 > 127:
        E2 = 127
    return np.float32(np.float32(sf * _pow2(pow2, E1)) * _pow2(pow2, E2))


@njit(cache=True, inline="always")
def _wide_magnitude(hi, lo):
    """(negative, |S| high limb, |S| low limb, bit length of |S|) of S = hi*2**32 + lo."""
    neg = hi < 0
    if neg:
        if lo != 0:
            lo = (1 << 32) - lo
            hi = -hi - 1
        else:
            hi = -hi
    return neg, hi, lo, (bitlen(hi) + 32 if hi > 0 else bitlen(lo))


@njit(cache=True)
def _scale_wide(hi, lo, E, pow2):
    """RNE32((hi*2**32 + lo) * 2**E) for a signed two-limb integer (0 <= lo < 2**32), one rounding."""
    neg, hi, lo, n = _wide_magnitude(hi, lo)
    if hi == 0 and lo == 0:
        return np.float32(0.0)
    r = max(n - 24, -149 - E, 0)
    m = _round_shift(hi, lo, r)
    v = _ldexp_small(np.float32(m), E + r, pow2)
    return -v if neg else v


@njit(cache=True, inline="always")
def _split(S):
    return S >> 32, S & M32


@njit(cache=True)
def _seg_sum(kA, kB, m, n, off, L):
    s = 0
    for t in range(off, off + L):
        s += kA[m, t] * kB[n, t]
    return s


@njit(cache=True)
def _seg_sum_wide(kA, kB, m, n, off, L):
    """Exact sum as (hi, lo) for |k| < 2**32 operands: a = ah*2**16 + al splitting."""
    x1 = 0
    x0 = 0
    for t in range(off, off + L):
        a = kA[m, t]
        b = kB[n, t]
        ah = a >> 16
        al = a & 0xFFFF
        x1 += ah * b
        x0 += al * b
    lo_sum = (x0 & M32) + ((x1 & 0xFFFF) << 16)
    hi = (x0 >> 32) + (x1 >> 16) + (lo_sum >> 32)
    return hi, lo_sum & M32


@njit(cache=True)
def _special_value(code):
    if code == 1:
        return np.float32(np.inf)
    if code == 2:
        return np.float32(-np.inf)
    return np.float32(np.nan)


@njit(parallel=True, cache=True)
def segment_specials(kA, kB, spA, spB, L, J):
    """Per (m, n, j): IEEE class of the exact products' sum: 0 finite, 1 +Inf, 2 -Inf, 3 NaN."""
    M = kA.shape[0]
    N = kB.shape[0]
    out = np.zeros((M, N, J), np.int8)
    for m in prange(M):
        for n in range(N):
            for j in range(J):
                acc = 0.0
                special = False
                for t in range(j * L, j * L + L):
                    ca = spA[m, t]
                    cb = spB[n, t]
                    if ca == 0 and cb == 0:
                        continue
                    special = True
                    va = np.nan if ca == 3 else (np.inf if ca == 1 else (-np.inf if ca == 2 else float(np.sign(kA[m, t]))))
                    vb = np.nan if cb == 3 else (np.inf if cb == 1 else (-np.inf if cb == 2 else float(np.sign(kB[n, t]))))
                    acc += va * vb
                if special:
                    if np.isnan(acc):
                        out[m, n, j] = 3
                    elif acc == np.inf:
                        out[m, n, j] = 1
                    elif acc == -np.inf:
                        out[m, n, j] = 2
    return out


@njit(cache=True)
def _fixed_add(A, N, X, W, F, wrap, rne):
    """A <- ovf(A + rnd(N * 2**(X+F))) for int64 N (|N| < 2**62)."""
    sh = X + F
    lim = np.int64(1) << W
    if N == 0:
        t = np.int64(0)
    elif sh >= 0:
        if wrap:
            t = (N << sh) if sh < 64 else np.int64(0)
        else:
            mag = -N if N < 0 else N
            if sh > W or mag > (lim >> sh):
                t = -lim if N < 0 else lim
            else:
                t = N << sh
    else:
        rs = -sh
        if rs >= 63:
            t = np.int64(-1) if (N < 0 and not rne) else np.int64(0)
        else:
            q = N >> rs
            if rne:
                rem = N - (q << rs)
                half = np.int64(1) << (rs - 1)
                if rem > half or (rem == half and (q & 1) == 1):
                    q += 1
            t = q
    return _acc_add(A, t, lim, wrap)


@njit(cache=True)
def _shift_mag(hm, lm, r):
    """floor(V / 2**r) (wrapping mod 2**64 when huge) and the (gt half, tie, nonzero) remainder flags
    for V = hm*2**32 + lm >= 0, r >= 1."""
    if r < 32:
        q = (hm << (32 - r)) | (lm >> r)
        rem = lm & ((1 << r) - 1)
        half = 1 << (r - 1)
        return q, rem > half, rem == half, rem != 0
    s = r - 32
    if s == 0:
        return hm, lm > (1 << 31), lm == (1 << 31), lm != 0
    if s >= 63:
        return np.int64(0), False, False, (hm != 0 or lm != 0)
    q = hm >> s
    remhi = hm & ((1 << s) - 1)
    halfhi = 1 << (s - 1)
    return q, remhi > halfhi or (remhi == halfhi and lm > 0), remhi == halfhi and lm == 0, remhi != 0 or lm != 0


@njit(cache=True)
def _fixed_add_wide(A, hi, lo, X, W, F, wrap, rne):
    """_fixed_add for a two-limb segment sum S = hi*2**32 + lo (|S| < 2**72)."""
    neg, hm, lm, n = _wide_magnitude(hi, lo)
    if n <= 61:
        return _fixed_add(A, (hi << 32) + lo, X, W, F, wrap, rne)
    sh = X + F
    lim = np.int64(1) << W
    if sh >= 0:
        if wrap:
            N64 = (hi << 32) + lo
            t = (N64 << sh) if sh < 64 else np.int64(0)
        else:
            t = -lim if neg else lim
    else:
        rs = -sh
        if not wrap and n - rs - 1 >= W:
            t = -lim if neg else lim
        elif rs > n:
            t = np.int64(-1) if (neg and not rne) else np.int64(0)
        else:
            q, gt, tie, nz = _shift_mag(hm, lm, rs)
            if rne:
                if gt or (tie and (q & 1) == 1):
                    q += 1
                t = -q if neg else q
            else:
                t = -(q + (1 if nz else 0)) if neg else q
    return _acc_add(A, t, lim, wrap)


@njit(parallel=True, cache=True)
def mm_kernel(kA, kB, L, J, caseP, EA, EB, dA, dB, segsp, has_sp, wide, acc_kind, W, F, wrap, rne, pow2):
    """fp32 [M, N] result of the Fp32Acc / FixedAcc datapath (before tensor scale and bias)."""
    M = kA.shape[0]
    N = kB.shape[0]
    out = np.empty((M, N), np.float32)
    for m in prange(M):
        for n in range(N):
            acc = np.float32(0.0)
            A = np.int64(0)
            bad = False
            for j in range(J):
                off = j * L
                hi = np.int64(0)
                lo = np.int64(0)
                if wide:
                    hi, lo = _seg_sum_wide(kA, kB, m, n, off, L)
                    S = np.int64(0) if (hi == 0 and lo == 0) else np.int64(1)
                else:
                    S = np.int64(_seg_sum(kA, kB, m, n, off, L))
                sp = segsp[m, n, j] if has_sp else 0
                if caseP:
                    E = EA[m, j] + EB[n, j]
                    isnan_scale = E >= HALF_NAN
                    sig = np.float32(1.0)
                else:
                    E = 0
                    sig = np.float32(dA[m, j] * dB[n, j])
                    isnan_scale = np.isnan(sig)
                if acc_kind == ACC_FP32:
                    if isnan_scale:
                        p = np.float32(np.nan)
                    elif sp != 0:
                        p = _special_value(sp) * sig
                    elif S == 0:
                        p = np.float32(0.0)
                    elif caseP:
                        if wide:
                            p = _scale_wide(hi, lo, E, pow2)
                        elif -(1 << 24) < S < (1 << 24):
                            p = _ldexp_small(np.float32(S), E, pow2)
                        else:
                            h, l = _split(S)
                            p = _scale_wide(h, l, E, pow2)
                    else:
                        if wide:
                            sf = _scale_wide(hi, lo, 0, pow2)
                        elif -(1 << 24) < S < (1 << 24):
                            sf = np.float32(S)
                        else:
                            h, l = _split(S)
                            sf = _scale_wide(h, l, 0, pow2)
                        p = np.float32(sf * sig)
                    acc = np.float32(acc + p)
                else:
                    if isnan_scale or sp != 0:
                        bad = True
                    elif S != 0:
                        if caseP and wide:
                            A = _fixed_add_wide(A, hi, lo, E, W, F, wrap, rne)
                        elif caseP:
                            A = _fixed_add(A, S, E, W, F, wrap, rne)
                        elif np.isinf(sig):
                            bad = True
                        elif sig != 0:
                            mant, ex = math.frexp(np.float64(sig))
                            ms = np.int64(mant * 16777216.0)
                            A = _fixed_add(A, S * ms, ex - 24, W, F, wrap, rne)
            if acc_kind == ACC_FP32:
                out[m, n] = acc
            elif bad:
                out[m, n] = np.float32(np.nan)
            else:
                h, l = _split(A)
                out[m, n] = _scale_wide(h, l, -F, pow2)
    return out


@njit(parallel=True, cache=True)
def mm_fp32_rows(kA, kBt, L, J, caseP, EA, EBt, dA, dBt, pow2):
    """Fp32Acc fast form for int32-exact sums without element specials: per row m and segment j,
    S[n] is accumulated over the segment with the inner loop over n (SIMD-friendly), then
    P^_j and acc[n] <- RNE32(acc[n] + P^_j) in increasing j. kBt: [J*L, N]; EBt/dBt: [J, N]."""
    M = kA.shape[0]
    N = kBt.shape[1]
    out = np.empty((M, N), np.float32)
    for m in prange(M):
        S = np.zeros(N, kBt.dtype)
        acc = np.zeros(N, np.float32)
        for j in range(J):
            S[:] = 0
            off = j * L
            for t in range(off, off + L):
                a = kA[m, t]
                if a != 0:
                    for n in range(N):
                        S[n] += a * kBt[t, n]
            if caseP:
                ea = EA[m, j]
                for n in range(N):
                    s = np.int64(S[n])
                    E = ea + EBt[j, n]
                    if E >= HALF_NAN:
                        p = np.float32(np.nan)
                    elif s == 0:
                        p = np.float32(0.0)
                    elif -(1 << 24) < s < (1 << 24):
                        p = _ldexp_small(np.float32(s), E, pow2)
                    else:
                        h, l = _split(s)
                        p = _scale_wide(h, l, E, pow2)
                    acc[n] = np.float32(acc[n] + p)
            else:
                da = dA[m, j]
                for n in range(N):
                    s = np.int64(S[n])
                    sig = np.float32(da * dBt[j, n])
                    if np.isnan(sig):
                        p = np.float32(np.nan)
                    elif s == 0:
                        p = np.float32(0.0)
                    else:
                        if -(1 << 24) < s < (1 << 24):
                            sf = np.float32(s)
                        else:
                            h, l = _split(s)
                            sf = _scale_wide(h, l, 0, pow2)
                        p = np.float32(sf * sig)
                    acc[n] = np.float32(acc[n] + p)
        out[m, :] = acc
    return out


# ---------------------------------------------------------------------------------------------
# Tiled Fp32Acc kernel: exact float segment sums on register tiles, in-order fp32 accumulation
# ---------------------------------------------------------------------------------------------

TILE_T = 8          # K steps per unrolled pass (segments are zero-padded to a multiple of it)
TILE_R = 8          # rows of A per register tile (leftover rows run one at a time)


@njit(cache=True, inline="always")
def _row8(a, o):
    return (a[o], a[o + 1], a[o + 2], a[o + 3], a[o + 4], a[o + 5], a[o + 6], a[o + 7])


@njit(cache=True, inline="always")
def _cols8(Bt, tc, n0, n1):
    return (Bt[tc, n0:n1], Bt[tc + 1, n0:n1], Bt[tc + 2, n0:n1], Bt[tc + 3, n0:n1],
            Bt[tc + 4, n0:n1], Bt[tc + 5, n0:n1], Bt[tc + 6, n0:n1], Bt[tc + 7, n0:n1])


@njit(cache=True, inline="always")
def _dot8(s, q, b, i):
    s = s + q[0] * b[0][i]
    s = s + q[1] * b[1][i]
    s = s + q[2] * b[2][i]
    s = s + q[3] * b[3][i]
    s = s + q[4] * b[4][i]
    s = s + q[5] * b[5][i]
    s = s + q[6] * b[6][i]
    s = s + q[7] * b[7][i]
    return s


# Integer-valued float arithmetic below a 2**24 (fp32) / 2**53 (fp64) bound is exact whatever the
# order or contraction, so only these two functions allow FMA contraction ("contract"); the scale
# multiply and the accumulator (_tile_epi_*) are compiled without any fastmath flag.
@njit(cache=True, fastmath={"contract"})
def _tile_sums8(A, Bt, S, m0, n0, nn, tc):
    """S[r, i] += sum_{t < 8} A[m0 + r, tc + t] * Bt[tc + t, n0 + i] for r < 8, i < nn."""
    b = _cols8(Bt, tc, n0, n0 + nn)
    q0 = _row8(A[m0], tc)
    q1 = _row8(A[m0 + 1], tc)
    q2 = _row8(A[m0 + 2], tc)
    q3 = _row8(A[m0 + 3], tc)
    q4 = _row8(A[m0 + 4], tc)
    q5 = _row8(A[m0 + 5], tc)
    q6 = _row8(A[m0 + 6], tc)
    q7 = _row8(A[m0 + 7], tc)
    s0, s1, s2, s3, s4, s5, s6, s7 = S[0], S[1], S[2], S[3], S[4], S[5], S[6], S[7]
    for i in range(nn):
        s0[i] = _dot8(s0[i], q0, b, i)
        s1[i] = _dot8(s1[i], q1, b, i)
        s2[i] = _dot8(s2[i], q2, b, i)
        s3[i] = _dot8(s3[i], q3, b, i)
        s4[i] = _dot8(s4[i], q4, b, i)
        s5[i] = _dot8(s5[i], q5, b, i)
        s6[i] = _dot8(s6[i], q6, b, i)
        s7[i] = _dot8(s7[i], q7, b, i)


@njit(cache=True, fastmath={"contract"})
def _tile_sums1(A, Bt, S, m0, n0, nn, tc):
    """One-row form of _tile_sums8."""
    b = _cols8(Bt, tc, n0, n0 + nn)
    q0 = _row8(A[m0], tc)
    s0 = S[0]
    for i in range(nn):
        s0[i] = _dot8(s0[i], q0, b, i)


@njit(cache=True)
def _tile_epi_p(acc, s, pa, pb, nn):
    """Case P: acc <- RNE32(acc + RNE32(S * 2**EA * 2**EB)). pa, pb are exact float64 powers of two
    (NaN for a NaN scale), so S * pa * pb is exact in float64 and the cast rounds once."""
    for i in range(nn):
        acc[i] = np.float32(acc[i] + np.float32((np.float64(s[i]) * pa) * pb[i]))


@njit(parallel=True, cache=True)
def mm_fp32_tiled(A, Bt, Lp, J, M, caseP, PA, PBt, dA, dBt, NT):
    """fp32 [M, N] Fp32Acc result from integer-valued float views.

    A [M, J*Lp] and Bt [J*Lp, N] (same float dtype; segment j occupies columns/rows j*Lp ..
    j*Lp + Lp - 1, zero-padded). Case P: PA [M, J], PBt [J, N] float64 powers of two (NaN for NaN
    scales); case G: dA [M, J], dBt [J, N] fp32 decoded scales. Tasks are (N tile, row group)."""
    N = Bt.shape[1]
    out = np.empty((M, N), np.float32)
    ntn = (N + NT - 1) // NT
    g8 = M // TILE_R
    ng = g8 + (M - TILE_R * g8)
    for task in prange(ntn * ng):
        nt = task // ng
        g = task - nt * ng
        if g < g8:
            m0 = g * TILE_R
            R = TILE_R
        else:
            m0 = g8 * TILE_R + (g - g8)
            R = 1
        n0 = nt * NT
        nn = min(N, n0 + NT) - n0
        acc = np.zeros((R, nn), np.float32)
        S = np.empty((R, nn), A.dtype)
        for j in range(J):
            S[:, :] = 0
            for tc in range(j * Lp, j * Lp + Lp, TILE_T):
                if R == TILE_R:
                    _tile_sums8(A, Bt, S, m0, n0, nn, tc)
                else:
                    _tile_sums1(A, Bt, S, m0, n0, nn, tc)
            for r in range(R):
                if caseP:
                    _tile_epi_p(acc[r], S[r], PA[m0 + r, j], PBt[j, n0:n0 + nn], nn)
                else:
                    tile_epi_g(acc[r], S[r], dA[m0 + r, j], dBt[j, n0:n0 + nn], nn)
        out[m0:m0 + R, n0:n0 + nn] = acc
    return out


def pow2_or_nan(E: np.ndarray) -> np.ndarray:
    """2**E (float64, exact) for segment exponents; NaN for the NaN-scale sentinel."""
    nan = E >= HALF_NAN
    return np.where(nan, np.nan, pow2_f64(np.where(nan, 0, E)))


def run_fp32_tiled(p: Prepared, NT: int = 1024):
    """Fp32Acc result through ``mm_fp32_tiled``, or None when the pair or the codes are outside it
    (segment sums wider than 53 bits, codes wider than 8 bits, asymmetric ints, NaN/Inf codes)."""
    if p.sum_bits > 53:
        return None
    la, lb = element_lut(p.facts_a), element_lut(p.facts_b)
    ca, cb = codes_np(p, "a"), codes_np(p, "b")
    if la is None or lb is None or ca is None or cb is None:
        return None
    dt = np.float32 if p.sum_bits <= 24 else np.float64
    M, N, J, L = p.M, p.N, p.J, p.L
    Lp = -(-L // TILE_T) * TILE_T
    A = np.empty((M, J * Lp), dt)
    if fill_rows(ca, la[0], la[1], np.ones((M, J)), L, Lp, p.K, J, A):
        return None
    Bt = np.empty((J * Lp, N), dt)
    if fill_cols(cb, lb[0], lb[1], np.ones((N, J)), L, Lp, p.K, J, Bt):
        return None
    z64 = np.zeros((1, 1), np.float64)
    z32 = np.zeros((1, 1), np.float32)
    NT = max(16, min(NT, N))
    if p.case == "P":
        PA = pow2_or_nan(p.EA)
        PBt = np.ascontiguousarray(pow2_or_nan(p.EB).T)
        return mm_fp32_tiled(A, Bt, Lp, J, M, True, PA, PBt, z32, z32, NT)
    return mm_fp32_tiled(A, Bt, Lp, J, M, False, z64, z64, p.dA, np.ascontiguousarray(p.dB.T), NT)


@njit(parallel=True, cache=True)
def mm_exact_kernel(kA, kB, L, J, caseP, EA, EB, dA, dB, segsp, has_sp, wide,
                    tmul, texp, has_t, bias, has_bias, prec, emin_q):
    """ExactAcc: exact sum of P_j (x exact tensor scale mant*2**exp, + exact bias), rounded once."""
    M = kA.shape[0]
    N = kB.shape[0]
    out = np.empty((M, N), np.float64)
    for m in prange(M):
        limbs = np.zeros(NLIMB, np.int64)
        for n in range(N):
            limbs[:] = 0
            nan = False
            pinf = False
            ninf = False
            for j in range(J):
                off = j * L
                if wide:
                    hi, lo = _seg_sum_wide(kA, kB, m, n, off, L)
                    S = np.int64(0) if (hi == 0 and lo == 0) else np.int64(1)
                else:
                    hi = np.int64(0)
                    lo = np.int64(0)
                    S = np.int64(_seg_sum(kA, kB, m, n, off, L))
                sp = segsp[m, n, j] if has_sp else 0
                if caseP:
                    E = EA[m, j] + EB[n, j]
                    if E >= HALF_NAN:
                        nan = True
                        continue
                    sig = np.float32(1.0)
                else:
                    sig = np.float32(dA[m, j] * dB[n, j])
                    if np.isnan(sig):
                        nan = True
                        continue
                if sp != 0:
                    v = _special_value(sp) * sig
                    if np.isnan(v):
                        nan = True
                    elif v > 0:
                        pinf = True
                    else:
                        ninf = True
                    continue
                if S == 0:
                    continue
                if caseP:
                    if wide:
                        limb_add(limbs, hi, E + 32)
                        limb_add(limbs, lo, E)
                    else:
                        limb_add(limbs, S, E)
                else:
                    if np.isinf(sig):
                        if (S > 0) == (sig > 0):
                            pinf = True
                        else:
                            ninf = True
                        continue
                    mant, ex = math.frexp(np.float64(sig))
                    ms = np.int64(mant * 16777216.0)
                    if wide:
                        limb_add(limbs, hi * ms, ex - 24 + 32)
                        limb_add(limbs, lo * ms, ex - 24)
                    else:
                        # S * ms may exceed int64: split S in 31-bit halves
                        sh_ = S >> 31
                        sl_ = S - (sh_ << 31)
                        limb_add(limbs, sh_ * ms, ex - 24 + 31)
                        limb_add(limbs, sl_ * ms, ex - 24)
            base = BASE
            if has_t:
                limb_mul(limbs, tmul[0])
                limb_mul(limbs, tmul[1])
                base = BASE + texp
            if nan or (pinf and ninf):
                val = np.nan
            elif pinf or ninf:
                val = np.inf if pinf else -np.inf
                if has_t:
                    val = val * np.float64(tmul[0]) * np.float64(tmul[1])
                if has_bias:
                    val = val + np.float64(bias[n])
            else:
                if has_bias and bias[n] != 0:
                    if np.isfinite(bias[n]):
                        mant, ex = math.frexp(np.float64(bias[n]))
                        limb_add(limbs, np.int64(mant * 16777216.0), ex - 24 + (BASE - base))
                        val = limb_round(limbs, base, prec, emin_q)
                    else:
                        val = np.float64(bias[n])
                else:
                    val = limb_round(limbs, base, prec, emin_q)
            out[m, n] = val
    return out


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------

_PREC = {"fp64": (53, -1074), "fp32": (24, -149), "bf16": (8, -133), "fp16": (11, -24)}


def _dummy_specials(p: Prepared):
    if not p.has_specials:
        return np.zeros((1, 1, 1), np.int8), False
    spA = p.spA if p.spA is not None else np.zeros(p.kA.shape, np.int8)
    spB = p.spB if p.spB is not None else np.zeros(p.kB.shape, np.int8)
    return segment_specials(p.kA, p.kB, spA, spB, p.L, p.J), True


def _scale_args(p: Prepared):
    z_i = np.zeros((1, 1), np.int32)
    z_f = np.zeros((1, 1), np.float32)
    if p.case == "P":
        return True, p.EA, p.EB, z_f, z_f
    return False, z_i, z_i, p.dA, p.dB


def _narrow(p: Prepared):
    """int32 copies of the integer views when every segment sum fits int32 (faster SIMD dots)."""
    if p.sum_bound < (1 << 31) - 1:
        return p.kA.astype(np.int32), p.kB.astype(np.int32)
    return p.kA, p.kB


def run_fp32_fixed(p: Prepared, acc, tiled: bool = True) -> np.ndarray:
    """fp32 [M, N] accumulator values (before the tensor scale and bias), numba. ``tiled=False``
    skips ``mm_fp32_tiled`` (the per-output kernels then compute the same bits; tests compare both)."""
    if tiled and not isinstance(acc, FixedAcc):
        y = run_fp32_tiled(p)
        if y is not None:
            return y
    segsp, has_sp = _dummy_specials(p)
    caseP, EA, EB, dA, dB = _scale_args(p)
    wide = p.sum_bits > 62
    kA, kB = (p.kA, p.kB) if wide else _narrow(p)
    if isinstance(acc, FixedAcc):
        return mm_kernel(kA, kB, p.L, p.J, caseP, EA, EB, dA, dB, segsp, has_sp, wide, ACC_FIXED,
                         acc.width, acc.frac_bits, acc.overflow == "wrap", acc.rounding == "rne", POW2_F32)
    if not has_sp and not wide and p.sum_bound < (1 << 31) - 1:
        return mm_fp32_rows(kA, np.ascontiguousarray(kB.T), p.L, p.J, caseP, EA, np.ascontiguousarray(EB.T),
                            dA, np.ascontiguousarray(dB.T), POW2_F32)
    return mm_kernel(kA, kB, p.L, p.J, caseP, EA, EB, dA, dB, segsp, has_sp, wide, ACC_FP32,
                     2, 0, False, False, POW2_F32)


def run_exact(p: Prepared, out: str, bias=None) -> np.ndarray:
    """ExactAcc result, rounded once to ``out`` (fp64, fp32, bf16, fp16) precision, as float64."""
    segsp, has_sp = _dummy_specials(p)
    caseP, EA, EB, dA, dB = _scale_args(p)
    wide = p.sum_bits > 62
    prec, emin_q = _PREC[out]
    has_t = p.tA is not None or p.tB is not None
    tmul = np.ones(2, np.int64)
    texp = 0
    if has_t:
        for i, t in enumerate((p.tA, p.tB)):
            t = 1.0 if t is None else float(np.float32(t))
            if t == 0 or not np.isfinite(t):
                raise ValueError(f"tensor scale {t} of operand {'ab'[i]} must be finite and nonzero")
            mant, ex = math.frexp(abs(t))
            tmul[i] = int(mant * (1 << 24))
            texp += int(ex) - 24
            if t < 0:
                tmul[i] = -tmul[i]
    has_bias = bias is not None
    b = np.zeros(1, np.float32) if bias is None else np.asarray(bias, np.float32).reshape(-1)
    return mm_exact_kernel(p.kA, p.kB, p.L, p.J, caseP, EA, EB, dA, dB, segsp, has_sp, wide,
                           tmul, texp, has_t, b, has_bias, prec, emin_q)


# ---------------------------------------------------------------------------------------------
# Backend interface (common.py)
# ---------------------------------------------------------------------------------------------


def covers(p: Prepared, acc=None) -> bool:
    """Every accumulator and operand pair, for numpy operands."""
    return not p.is_torch


def run(p: Prepared, acc, out, bias=None) -> np.ndarray:
    """[M, N] result: fp32 (fp32/fixed accumulators, tensor scale and bias applied), or for
    ExactAcc the exact sum rounded once to ``out`` (a float name; fp32 for a block format), fp64."""
    if isinstance(acc, ExactAcc):
        target = out if isinstance(out, str) else "fp32"
        if bias is not None and not isinstance(bias, np.ndarray):
            bias = bias.detach().cpu().numpy() if hasattr(bias, "detach") else np.asarray(bias)
        return run_exact(p, target, bias)
    return epilogue(run_fp32_fixed(p, acc), p, bias)
