"""numba CPU reference of the block-scaled matmul core (docs/spec/matmul.md §8.1; backend "numba").

Kernels take the integer view built by ``operands.prepare``: prange over output rows m, segments
in increasing j, exact int64 (or two-limb) segment sums, the exact two-step ldexp (``common``), and
the fp32 / fixed / exact accumulators. No fastmath; powers of two come from a bit-built table.
Every output is computed by these per-output kernels (``mm_kernel``, ``mm_exact_kernel``, and
``mm_fp32_rows``, the row form vectorized over N for int32 sums); the tiled fp32 kernel is a
backend of its own (``tiled_backend``, "numba-tiled") that computes the same bits.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from hwsim.formats.bits import POW2_F32

from .common import M32, epilogue, ldexp_small, scale_wide, split32, wide_magnitude
from .datapath import ExactAcc, FixedAcc
from .exact_acc import BASE, NLIMB, limb_add, limb_mul, limb_round
from .operands import HALF_NAN, Prepared

NAME = "numba"

ACC_FP32, ACC_FIXED = 0, 1


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
    neg, hm, lm, n = wide_magnitude(hi, lo)
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
                            p = scale_wide(hi, lo, E, pow2)
                        elif -(1 << 24) < S < (1 << 24):
                            p = ldexp_small(np.float32(S), E, pow2)
                        else:
                            h, l = split32(S)
                            p = scale_wide(h, l, E, pow2)
                    else:
                        if wide:
                            sf = scale_wide(hi, lo, 0, pow2)
                        elif -(1 << 24) < S < (1 << 24):
                            sf = np.float32(S)
                        else:
                            h, l = split32(S)
                            sf = scale_wide(h, l, 0, pow2)
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
                h, l = split32(A)
                out[m, n] = scale_wide(h, l, -F, pow2)
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
                        p = ldexp_small(np.float32(s), E, pow2)
                    else:
                        h, l = split32(s)
                        p = scale_wide(h, l, E, pow2)
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
                            h, l = split32(s)
                            sf = scale_wide(h, l, 0, pow2)
                        p = np.float32(sf * sig)
                    acc[n] = np.float32(acc[n] + p)
        out[m, :] = acc
    return out


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


def run_fp32_fixed(p: Prepared, acc) -> np.ndarray:
    """fp32 [M, N] accumulator values (before the tensor scale and bias), numba, per output (the
    tiled backend ``tiled_backend.run_fp32`` computes the same bits; tests compare both)."""
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
