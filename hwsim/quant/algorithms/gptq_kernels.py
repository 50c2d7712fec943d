"""numba kernel of one GPTQ lazy batch (issue 17): the columns of a batch of B columns in one
call instead of ~15 torch calls per column.

Same IEEE operations in the same order as ``gptq._sweep_torch`` (float32, no fast-math, no
contraction into FMA): per element ``y = x·s_in`` (blocks) or ``x / s`` (integers), ``r = rint(y)``
(round half to even), ``q = clamp(r, lo, hi)·s_out`` (blocks) or ``(clamp(r + z) − z)·s``,
``e = (w − q) / d``, then ``W1[:, k] −= e·h_k`` for the rest of the batch (product rounded, then
the difference). Serial: one thread, no OpenMP pool (hwsim.quant.threads).
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def batch_block(W1, Err1, H1, diag, Q, Rr, s_in, s_out, cols, G, col0, lo, hi, ftz):
    out, count = W1.shape
    tiny = np.float32(2.0 ** -126)
    zero = np.float32(0.0)
    for i in range(count):
        j = cols[i]
        g = j // G
        d = diag[i]
        for r in range(out):
            w = W1[r, i]
            x = w
            if ftz and abs(x) < tiny:
                x = np.float32(np.copysign(zero, x))
            rr = np.rint(np.float32(x * s_in[g, r]))
            Rr[r, j] = rr
            c = rr
            if c < lo:
                c = lo
            if c > hi:
                c = hi
            q = np.float32(c * s_out[g, r])
            Q[r, col0 + i] = q
            e = np.float32(np.float32(w - q) / d)
            Err1[r, i] = e
            for k in range(i, count):
                W1[r, k] = np.float32(W1[r, k] - np.float32(e * H1[i, k]))


@njit(cache=True, nogil=True)
def batch_int(W1, Err1, H1, diag, Q, Rr, s, z, cols, G, col0, lo, hi):
    out, count = W1.shape
    for i in range(count):
        j = cols[i]
        g = j // G
        d = diag[i]
        for r in range(out):
            w = W1[r, i]
            sg = s[g, r]
            zg = z[g, r]
            raw = np.float32(np.rint(np.float32(w / sg)) + zg)
            Rr[r, j] = raw
            c = raw
            if c < lo:
                c = lo
            if c > hi:
                c = hi
            q = np.float32(np.float32(c - zg) * sg)
            Q[r, col0 + i] = q
            e = np.float32(np.float32(w - q) / d)
            Err1[r, i] = e
            for k in range(i, count):
                W1[r, k] = np.float32(W1[r, k] - np.float32(e * H1[i, k]))
