"""numba kernel of one GPTQ lazy batch (issue 17): the columns of a batch of B columns in one
call instead of ~15 torch calls per column.

Same IEEE operations in the same order as ``gptq._sweep_torch`` (float32, no fast-math, no
contraction into FMA): per element ``y = x·s_in`` (blocks) or ``x / s`` (integers), ``r = rint(y)``
(round half to even), ``q = clamp(r, lo, hi)·s_out`` (blocks) or ``(clamp(r + z) − z)·s``,
``e = (w − q) / d``, then ``W1[:, k] −= e·h_k`` for the rest of the batch (product rounded, then
the difference). Serial: one thread, no OpenMP pool (hwsim.quant.threads).

Layout: the batch is swept on a transposed copy ([B, out], one column per row), so the update of
column k by column i is one contiguous, SIMD-vectorised loop over the rows; every element still
sees the same operations in the same order (column i before column i+1), so the bits are those of
the column loop (tests/quant/test_gptq.py).
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _update_rest(WT, ET, H1, i):
    """W[:, k] −= e_i·H1[i, k] for k = i .. B−1 (WT, ET: [B, out] transposed batch and errors)."""
    e = ET[i]
    for k in range(i, WT.shape[0]):
        h = H1[i, k]
        w = WT[k]
        for r in range(w.shape[0]):
            w[r] = np.float32(w[r] - np.float32(e[r] * h))


@njit(cache=True, nogil=True)
def batch_block(W1, Err1, H1, diag, Q, Rr, s_in, s_out, cols, G, col0, lo, hi, ftz):
    out, count = W1.shape
    tiny = np.float32(2.0 ** -126)
    zero = np.float32(0.0)
    WT = np.ascontiguousarray(W1.T)
    ET = np.empty((count, out), np.float32)
    for i in range(count):
        j = cols[i]
        g = j // G
        d = diag[i]
        wi = WT[i]
        ei = ET[i]
        for r in range(out):
            w = wi[r]
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
            ei[r] = np.float32(np.float32(w - q) / d)
        _update_rest(WT, ET, H1, i)
    W1[:, :] = WT.T
    Err1[:, :] = ET.T


@njit(cache=True, nogil=True)
def batch_int(W1, Err1, H1, diag, Q, Rr, s, z, cols, G, col0, lo, hi):
    out, count = W1.shape
    WT = np.ascontiguousarray(W1.T)
    ET = np.empty((count, out), np.float32)
    for i in range(count):
        j = cols[i]
        g = j // G
        d = diag[i]
        wi = WT[i]
        ei = ET[i]
        for r in range(out):
            w = wi[r]
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
            ei[r] = np.float32(np.float32(w - q) / d)
        _update_rest(WT, ET, H1, i)
    W1[:, :] = WT.T
    Err1[:, :] = ET.T
