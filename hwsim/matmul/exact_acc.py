"""ExactAcc: the exact sum of every product of an output in a 32-bit-limb superaccumulator (numba).

One accumulator is an int64 array of ``NLIMB`` limbs; limb i holds the bits of weight
2**(BASE + 32 i) .. 2**(BASE + 32 i + 31), so the array spans 2**-736 .. 2**672, which covers every
segment product of E8M0-scaled operands (about 650 bits, docs/spec/matmul.md §4) with room for carries. Limbs
are allowed to leave [0, 2**32) between normalisations (int64 headroom), and the top limb carries
the sign. ``limb_round`` returns the value rounded once (RNE) to a given precision and quantum.
The ExactAcc kernel (``reference.mm_exact_kernel``) adds S_j * 2**E_j with ``limb_add``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from hwsim.formats.bits import bitlen

LIMB_BITS = 32
LIMB_MASK = (1 << LIMB_BITS) - 1
NLIMB = 44
BASE = -736          # exponent of bit 0 of limb 0


@njit(cache=True)
def limb_add(limbs, N, X):
    """limbs += N * 2**X (N int64, any sign), X >= BASE."""
    if N == 0:
        return
    neg = N < 0
    mag = -N if neg else N
    pos = X - BASE
    i = pos // LIMB_BITS
    off = pos % LIMB_BITS
    while mag != 0:
        chunk = mag & LIMB_MASK
        mag >>= LIMB_BITS
        v = chunk << off
        lo = v & LIMB_MASK
        hi = v >> LIMB_BITS
        if neg:
            limbs[i] -= lo
            limbs[i + 1] -= hi
        else:
            limbs[i] += lo
            limbs[i + 1] += hi
        i += 1


@njit(cache=True)
def limb_norm(limbs):
    """Carry-propagate so limbs[i] in [0, 2**32) except the top one (which holds the sign)."""
    for i in range(NLIMB - 1):
        c = limbs[i] >> LIMB_BITS
        limbs[i] -= c << LIMB_BITS
        limbs[i + 1] += c


@njit(cache=True)
def limb_mul(limbs, mult):
    """limbs *= mult (0 <= mult < 2**24), normalised first."""
    limb_norm(limbs)
    for i in range(NLIMB):
        limbs[i] *= mult
    limb_norm(limbs)


@njit(cache=True)
def limb_bit(limbs, p):
    """Bit p of the (normalised, non-negative) limb value; 0 below bit 0."""
    if p < 0:
        return 0
    return (limbs[p // LIMB_BITS] >> (p % LIMB_BITS)) & 1


@njit(cache=True)
def limb_round(limbs, base_exp, prec, emin_q):
    """RNE of the limb value to ``prec`` significant bits with quantum >= 2**emin_q, as float64."""
    limb_norm(limbs)
    neg = limbs[NLIMB - 1] < 0
    if neg:
        for i in range(NLIMB):
            limbs[i] = -limbs[i]
        limb_norm(limbs)
    h = -1
    for i in range(NLIMB - 1, -1, -1):
        if limbs[i] != 0:
            h = i
            break
    if h < 0:
        return 0.0
    n = h * LIMB_BITS + bitlen(limbs[h])
    r = max(n - prec, emin_q - base_exp, 0)
    m = np.int64(0)
    for i in range(prec + 1):
        p = r + i
        if p < n:
            m |= limb_bit(limbs, p) << i
    if r > 0 and limb_bit(limbs, r - 1) == 1:
        sticky = False
        for p in range(r - 1):
            if limb_bit(limbs, p) == 1:
                sticky = True
                break
        if sticky or (m & 1) == 1:
            m += 1
    v = math.ldexp(np.float64(m), base_exp + r)
    return -v if neg else v
