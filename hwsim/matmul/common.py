"""What every matmul backend shares (a leaf: it imports no backend, and torch only when called).

- :func:`exact_float_matmul`: the precision context under which float GEMMs are IEEE fp32 / fp64
  (no TF32, no bf16 in oneDNN), so that the integer-valued GEMMs of the exact paths stay exact.
- :func:`tile_epi_g`: the case-G step sigma = RNE32(dA dB), acc <- RNE32(acc + RNE32(RNE32(S) sigma))
  over one tile row (numba), used by the tiled numba backend and the CPU GEMM path.
- :func:`ldexp_small`, :func:`scale_wide`, :func:`split32`: the exact two-step ldexp and the one-rounding
  scaling of a two-limb integer (docs/spec/matmul.md §8.1), numba scalar functions used by the numba
  reference and the GEMM path's fixed-point output.
- :func:`epilogue`: the NVFP4 tensor scales and the bias on an fp32 result (numpy or torch).

A backend is a module with ``NAME``, ``covers(p, acc) -> bool`` and
``run(p, acc, out, bias) -> array | None`` (docs/spec/matmul.md §8); ``api.matmul`` picks one.
"""

from __future__ import annotations

import contextlib

import numpy as np
from numba import njit

from hwsim.formats.bits import POW2_ZERO, bitlen, is_torch

M32 = (1 << 32) - 1


@contextlib.contextmanager
def exact_float_matmul():
    """IEEE fp32 matmuls for the duration (no TF32 on CUDA, no bf16/TF32 in oneDNN on CPU), restored
    afterwards. Uses the per-backend ``fp32_precision`` flags where torch has them (a legacy
    ``set_float32_matmul_precision("medium")`` maps to bf16 in oneDNN, which would break the exact
    GEMMs), else the legacy switches."""
    import torch

    mods = [m for m in (getattr(torch.backends.mkldnn, "matmul", None), getattr(torch.backends.cuda, "matmul", None))
            if m is not None and hasattr(m, "fp32_precision")]
    if mods:
        old = [m.fp32_precision for m in mods]
        for m in mods:
            m.fp32_precision = "ieee"
        try:
            yield
        finally:
            for m, o in zip(mods, old):
                m.fp32_precision = o
        return
    old_prec = torch.get_float32_matmul_precision()   # pragma: no cover - torch without fp32_precision
    old_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.set_float32_matmul_precision("highest")
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(old_prec)
        torch.backends.cuda.matmul.allow_tf32 = old_tf32


@njit(cache=True)
def tile_epi_g(acc, s, da, db, nn):
    """Case G: sigma = RNE32(dA * dB); P^ = RNE32(RNE32(S) * sigma) (+0 for S = 0, NaN for NaN sigma);
    acc <- RNE32(acc + P^) for the nn outputs of one tile row."""
    for i in range(nn):
        sig = np.float32(da * db[i])
        v = s[i]
        if sig != sig:
            p = np.float32(np.nan)
        elif v == 0:
            p = np.float32(0.0)
        else:
            p = np.float32(np.float32(v) * sig)
        acc[i] = np.float32(acc[i] + p)


# ---------------------------------------------------------------------------------------------
# exact scalar scaling (numba): the two-step ldexp and the rounding of two-limb integers
# ---------------------------------------------------------------------------------------------


@njit(cache=True, inline="always")
def pow2_at(pow2, e):
    """2**e from a bit-built table (``hwsim.formats.bits.POW2_F32``)."""
    return pow2[e + POW2_ZERO]


@njit(cache=True)
def round_shift(hi, lo, r):
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
def ldexp_small(sf, E, pow2):
    """RNE32(sf * 2**E) for an exact fp32 integer |sf| < 2**24 (two-step exact ldexp)."""
    E1 = min(max(E, -126), 127)
    E2 = E - E1
    if E2 < -149:
        return np.float32(0.0) * sf
    if E2 > 127:
        E2 = 127
    return np.float32(np.float32(sf * pow2_at(pow2, E1)) * pow2_at(pow2, E2))


@njit(cache=True, inline="always")
def wide_magnitude(hi, lo):
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
def scale_wide(hi, lo, E, pow2):
    """RNE32((hi*2**32 + lo) * 2**E) for a signed two-limb integer (0 <= lo < 2**32), one rounding."""
    neg, hi, lo, n = wide_magnitude(hi, lo)
    if hi == 0 and lo == 0:
        return np.float32(0.0)
    r = max(n - 24, -149 - E, 0)
    m = round_shift(hi, lo, r)
    v = ldexp_small(np.float32(m), E + r, pow2)
    return -v if neg else v


@njit(cache=True, inline="always")
def split32(S):
    """(S >> 32, S & (2**32 - 1)): an int64 as the two limbs ``scale_wide`` takes."""
    return S >> 32, S & M32


def tensor_scale(p) -> np.float32 | None:
    """RNE32(tA * tB) of the NVFP4 tensor scales (a missing one counts as 1), or None."""
    if p.tA is None and p.tB is None:
        return None
    return np.float32(np.float32(1.0 if p.tA is None else p.tA) * np.float32(1.0 if p.tB is None else p.tB))


def epilogue(y, p, bias):
    """RNE32(y * RNE32(tA tB)) for NVFP4 operands, then RNE32(y + bias) (docs/spec/matmul.md §6), on an fp32
    [M, N] result ``y`` of either library; ``bias`` (fp32 [N]) may be of either library too."""
    t = tensor_scale(p)
    if is_torch(y):
        import torch

        if t is not None:
            y = y * torch.tensor(float(t), dtype=torch.float32, device=y.device)
        if bias is not None:
            y = y + torch.as_tensor(bias, dtype=torch.float32, device=y.device).reshape(1, -1)
        return y
    if t is not None:
        y = (y * t).astype(np.float32)
    if bias is not None:
        b = bias.detach().cpu().numpy() if is_torch(bias) else bias
        y = (y + np.asarray(b, np.float32).reshape(1, -1)).astype(np.float32)
    return y
