"""Tiled numba kernel of the fp32 accumulator: backend "numba-tiled" (docs/matmul.md, Backends).

``mm_fp32_tiled`` is the fast CPU form of the fp32 accumulator for pairs whose segment sums are exact
in fp32 (bound <= 2**24) or fp64 (<= 2**53) and whose codes hold no NaN/Inf: the element codes are
turned into integer-valued float arrays through the code -> integer table (``operands.element_lut``),
then register tiles of 8 rows run an 8-step unrolled K loop vectorized over N (integer-valued float
sums are exact in any order, so that part alone may use FMA contraction), then P^_j and
acc <- RNE32(acc + P^_j) per segment in increasing j, compiled without fastmath. It computes the
same bits as the per-output kernels of the numba reference (``reference.py``, backend "numba").

Backend interface (``common.py``): ``covers(p, acc)`` is True for numpy operands, the fp32
accumulator, segment sums of at most 53 bits and element codes with a lookup table (at most 8 bits,
no asymmetric ints). It is static: the codes may still hold element NaN/Inf, found while converting,
and then ``run`` returns None.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .common import epilogue, tile_epi_g
from .datapath import Fp32Acc
from .operands import HALF_NAN, Prepared, codes_np, element_lut, fill_cols, fill_rows, pow2_f64

NAME = "numba-tiled"

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


def run_fp32(p: Prepared, NT: int = 1024):
    """fp32 [M, N] Fp32Acc values (before the tensor scale and bias) through ``mm_fp32_tiled``, or
    None when the pair or the codes are outside it: segment sums wider than 53 bits, codes wider
    than 8 bits, asymmetric ints (``covers`` is False for those), element NaN/Inf codes (found
    while converting), codes on a GPU."""
    if p.sum_bits > 53:
        return None
    la, lb = element_lut(p.facts_a), element_lut(p.facts_b)
    if la is None or lb is None:
        return None
    ca, cb = codes_np(p, "a"), codes_np(p, "b")
    if ca is None or cb is None:
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


def covers(p: Prepared, acc=None) -> bool:
    """numpy operands, the fp32 accumulator (``acc`` None counts as fp32), segment sums of at most
    53 bits, element codes with a lookup table (at most 8 bits, symmetric ints). Static: element
    NaN/Inf codes are found while converting (then ``run`` returns None)."""
    if not (acc is None or (isinstance(acc, Fp32Acc) and acc.format == "fp32")):
        return False
    return (not p.is_torch and p.sum_bits <= 53
            and element_lut(p.facts_a) is not None and element_lut(p.facts_b) is not None)


def run(p: Prepared, acc=None, out=None, bias=None):
    """fp32 [M, N] numpy array with the tensor scale and bias applied, or None (NaN/Inf codes)."""
    y = run_fp32(p)
    return None if y is None else epilogue(y, p, bias)
