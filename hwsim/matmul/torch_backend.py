"""torch backend (CPU or CUDA), vectorized over M and N, segments in increasing K (matmul.md §8.2).

The fp32 accumulator runs on the batched-GEMM path of ``gemm.py`` whenever it covers the pair (sums
of at most 53 bits, element codes of at most 8 bits without NaN/Inf). Everything else runs here:
segment sums S_j come from batched matmuls of the integer views (fp32 when the bound is <= 24
bits, fp64 <= 53 bits, else int64 on CPU / split fp64 on CUDA, and a two-limb split beyond 62
bits); P^_j and the accumulator update follow the numba reference elementwise.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from .datapath import FixedAcc
from .operands import NAN_E, Prepared

M32 = (1 << 32) - 1
_CHUNK_ELEMS = 1 << 24     # max J_chunk * M * N elements of S held at once


@contextlib.contextmanager
def exact_float_matmul():
    """IEEE fp32 matmuls for the duration (no TF32 on CUDA, no bf16/TF32 in oneDNN on CPU), restored
    afterwards. Uses the per-backend ``fp32_precision`` flags where torch has them (a legacy
    ``set_float32_matmul_precision("medium")`` maps to bf16 in oneDNN, which would break the exact
    GEMMs), else the legacy switches."""
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


def pow2_f32(E: torch.Tensor) -> torch.Tensor:
    """2**E as fp32 for integer E clamped to [-149, 127], built from the bit pattern."""
    E = E.to(torch.int32).clamp(-149, 127)
    normal = (E + 127) << 23
    sub = torch.ones_like(E) << (E + 149).clamp(0, 22)
    return torch.where(E >= -126, normal, sub).view(torch.float32)


def ldexp_small(sf: torch.Tensor, E: torch.Tensor) -> torch.Tensor:
    """RNE32(sf * 2**E), sf an exact fp32 integer below 2**24 in magnitude (two-step ldexp)."""
    E = E.to(torch.int64)
    E1 = E.clamp(-126, 127)
    E2 = E - E1
    p = (sf * pow2_f32(E1)) * pow2_f32(E2.clamp(max=127))
    return torch.where(E2 < -149, sf * 0.0, p)


def _bitlen(x: torch.Tensor) -> torch.Tensor:
    """Bit length of non-negative int64 values below 2**53."""
    _, e = torch.frexp(x.to(torch.float64))
    return torch.where(x > 0, e.to(torch.int64), torch.zeros_like(x))


def round_shift(hi: torch.Tensor, lo: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """RNE((hi*2**32 + lo) / 2**r) for hi >= 0, 0 <= lo < 2**32, r >= 0 (elementwise)."""
    one = torch.ones_like(hi)
    # r < 32 branch
    ra = r.clamp(0, 31)
    qa = (hi << (32 - ra)) | (lo >> ra)
    rema = lo & ((one << ra) - 1)
    halfa = (one << (ra - 1).clamp(min=0))
    gta, tiea = rema > halfa, rema == halfa
    qa = torch.where(ra == 0, (hi << 32) + lo, qa)
    gta = gta & (ra > 0)
    tiea = tiea & (ra > 0)
    # 32 <= r < 94 branch
    s = (r - 32).clamp(0, 62)
    qb = hi >> s
    remhi = hi & ((one << s) - 1)
    halfhi = one << (s - 1).clamp(min=0)
    gtb = torch.where(s == 0, lo > (1 << 31), (remhi > halfhi) | ((remhi == halfhi) & (lo > 0)))
    tieb = torch.where(s == 0, lo == (1 << 31), (remhi == halfhi) & (lo == 0))
    big = r >= 32
    q = torch.where(big, qb, qa)
    gt = torch.where(big, gtb, gta)
    tie = torch.where(big, tieb, tiea)
    q = q + (gt | (tie & ((q & 1) == 1))).to(torch.int64)
    return torch.where(r >= 94, torch.zeros_like(q), q)


def scale_wide(hi: torch.Tensor, lo: torch.Tensor, E) -> torch.Tensor:
    """RNE32((hi*2**32 + lo) * 2**E), one rounding, for signed two-limb integers."""
    neg = hi < 0
    lo_n = torch.where(lo != 0, (1 << 32) - lo, lo)
    hi_n = torch.where(lo != 0, -hi - 1, -hi)
    hi_m = torch.where(neg, hi_n, hi)
    lo_m = torch.where(neg, lo_n, lo)
    n = torch.where(hi_m > 0, _bitlen(hi_m) + 32, _bitlen(lo_m))
    E = torch.as_tensor(E, dtype=torch.int64, device=hi.device).expand_as(hi)
    r = torch.maximum(torch.maximum(n - 24, -149 - E), torch.zeros_like(n))
    m = round_shift(hi_m, lo_m, r)
    v = ldexp_small(m.to(torch.float32), E + r)
    v = torch.where(neg, -v, v)
    return torch.where((hi_m == 0) & (lo_m == 0), torch.zeros_like(v), v)


def _mixed_scale(S: torch.Tensor, E: torch.Tensor) -> torch.Tensor:
    """RNE32(S * 2**E) for int64 S: fast two-step ldexp where |S| < 2**24, integer rounding elsewhere."""
    pj = ldexp_small(S.clamp(-(1 << 24) + 1, (1 << 24) - 1).to(torch.float32), E)
    wide = S.abs() >= (1 << 24)
    if bool(wide.any()):
        h, l_ = split64(S[wide])
        pj[wide] = scale_wide(h, l_, E.expand_as(S)[wide])
    return pj


def split64(S: torch.Tensor):
    return S >> 32, S & M32


def _specials(p: Prepared, j: int) -> torch.Tensor | None:
    """IEEE class (0 finite, 1 +Inf, 2 -Inf, 3 NaN) of segment j's exact products, [M, N]."""
    if not p.has_specials:
        return None
    sl = slice(j * p.L, (j + 1) * p.L)

    def val(k, sp):
        k = k[:, sl]
        v = torch.sign(k).to(torch.float64)
        if sp is None:
            return v
        sp = sp[:, sl]
        v = torch.where(sp == 3, float("nan"), v)
        v = torch.where(sp == 1, float("inf"), v)
        return torch.where(sp == 2, float("-inf"), v)

    va, vb = val(p.kA, p.spA), val(p.kB, p.spB)
    anyA = torch.zeros(va.shape, dtype=torch.bool, device=va.device) if p.spA is None else p.spA[:, sl] != 0
    anyB = torch.zeros(vb.shape, dtype=torch.bool, device=vb.device) if p.spB is None else p.spB[:, sl] != 0
    prod = va[:, None, :] * vb[None, :, :]                     # [M, N, L] (only used with specials)
    involved = (anyA[:, None, :] | anyB[None, :, :]).any(-1)
    s = prod.sum(-1)
    code = torch.where(torch.isnan(s), 3, torch.where(s == float("inf"), 1, torch.where(s == float("-inf"), 2, 0)))
    return torch.where(involved, code, torch.zeros_like(code)).to(torch.int8)


def segment_sums(p: Prepared, j0: int, j1: int):
    """Exact S for segments j0..j1-1: int64 [Jc, M, N] (or (hi, lo) two-limb tensors)."""
    M, N, L = p.M, p.N, p.L
    A = p.kA[:, j0 * L:j1 * L].reshape(M, j1 - j0, L).permute(1, 0, 2)   # [Jc, M, L]
    B = p.kB[:, j0 * L:j1 * L].reshape(N, j1 - j0, L).permute(1, 2, 0)   # [Jc, L, N]
    bits = p.sum_bits
    cuda = A.is_cuda
    if bits <= 24:
        return torch.bmm(A.to(torch.float32), B.to(torch.float32)).to(torch.int64)
    if bits <= 53:
        return torch.bmm(A.to(torch.float64), B.to(torch.float64)).to(torch.int64)
    # split A = ah*2**16 + al: each partial product sum is exact in int64 (CPU) / fp64 (CUDA)
    ah, al = A >> 16, A & 0xFFFF
    if cuda:
        x1 = torch.bmm(ah.to(torch.float64), B.to(torch.float64)).to(torch.int64)
        x0 = torch.bmm(al.to(torch.float64), B.to(torch.float64)).to(torch.int64)
    else:
        x1 = torch.bmm(ah, B)
        x0 = torch.bmm(al, B)
    if bits <= 62:
        return (x1 << 16) + x0
    lo_sum = (x0 & M32) + ((x1 & 0xFFFF) << 16)
    hi = (x0 >> 32) + (x1 >> 16) + (lo_sum >> 32)
    return hi, lo_sum & M32


def _fixed_add(A, N, X, acc: FixedAcc):
    """Elementwise A <- ovf(A + rnd(N * 2**(X+F))) on int64 tensors (shifts clamped to [0, 63])."""
    W, F = acc.width, acc.frac_bits
    lim = 1 << W
    sh = X + F
    one = torch.ones_like(N)
    shl = sh.clamp(0, 63)
    if acc.overflow == "wrap":
        t_up = torch.where(sh < 64, N << shl, torch.zeros_like(N))
    else:
        mag = N.abs()
        ovf = (sh > W) | (mag > (lim >> shl.clamp(max=W)))
        sat = torch.where(N < 0, -lim, lim)
        t_up = torch.where(ovf & (N != 0), sat, N << shl.clamp(max=W))
    rs = (-sh).clamp(1, 62)
    q = N >> rs
    if acc.rounding == "rne":
        rem = N - (q << rs)
        half = one << (rs - 1)
        q = q + ((rem > half) | ((rem == half) & ((q & 1) == 1))).to(torch.int64)
        far = torch.zeros_like(N)
    else:
        far = torch.where(N < 0, -one, torch.zeros_like(N))
    t_dn = torch.where(-sh >= 63, far, q)
    t = torch.where(sh >= 0, t_up, t_dn)
    t = torch.where(N == 0, torch.zeros_like(t), t)
    s = A + t
    h = lim >> 1
    if acc.overflow == "wrap":
        return ((s + h) & (lim - 1)) - h
    return s.clamp(-h, h - 1)


def run_fp32_fixed(p: Prepared, acc, gemm: bool = True) -> torch.Tensor:
    """fp32 [M, N] accumulator values (before tensor scale and bias) on p's device.

    The fp32 accumulator goes through the batched-GEMM path (``gemm.py``) when it covers the pair;
    ``gemm=False`` forces the per-segment path below (same bits; tests compare both)."""
    if gemm and not isinstance(acc, FixedAcc):
        from . import gemm as _gemm

        y = _gemm.run_fp32(p)
        if y is not None:
            return y
    dev = p.kA.device
    M, N, J = p.M, p.N, p.J
    fixed = isinstance(acc, FixedAcc)
    if fixed and p.sum_bits > 62:
        raise ValueError(f"accumulator {acc.name!r} is not supported for {p.facts_a.spec.name} x "
                         f"{p.facts_b.spec.name}: the segment sum needs {p.sum_bits} bits (> 62); use 'fp32' or 'exact'")
    if p.case == "P":
        EA = torch.as_tensor(p.EA, device=dev).to(torch.int64)
        EB = torch.as_tensor(p.EB, device=dev).to(torch.int64)
    else:
        dA = torch.as_tensor(p.dA, device=dev)
        dB = torch.as_tensor(p.dB, device=dev)
    acc_f = torch.zeros((M, N), dtype=torch.float32, device=dev)
    acc_i = torch.zeros((M, N), dtype=torch.int64, device=dev)
    bad = torch.zeros((M, N), dtype=torch.bool, device=dev)
    zero = torch.zeros((M, N), dtype=torch.float32, device=dev)
    nan = torch.full((M, N), float("nan"), dtype=torch.float32, device=dev)
    jc = max(1, min(J, _CHUNK_ELEMS // max(M * N, 1)))
    wide = p.sum_bits > 62
    with exact_float_matmul():
        for j0 in range(0, J, jc):
            j1 = min(J, j0 + jc)
            Sc = segment_sums(p, j0, j1)
            for j in range(j0, j1):
                if wide:
                    hi, lo = Sc[0][j - j0], Sc[1][j - j0]
                    nz = (hi != 0) | (lo != 0)
                else:
                    S = Sc[j - j0]
                    nz = S != 0
                sp = _specials(p, j)
                if p.case == "P":
                    E = EA[:, j, None] + EB[None, :, j]
                    nan_scale = E >= NAN_E // 2
                    sig = None
                else:
                    sig = dA[:, j, None] * dB[None, :, j]
                    nan_scale = torch.isnan(sig)
                if not fixed:
                    if p.case == "P":
                        if wide:
                            pj = scale_wide(hi, lo, E)
                        elif p.sum_bits <= 24:
                            pj = ldexp_small(S.to(torch.float32), E)
                        else:
                            pj = _mixed_scale(S, E)
                    else:
                        if wide:
                            sf = scale_wide(hi, lo, 0)
                        elif p.sum_bits <= 24:
                            sf = S.to(torch.float32)
                        else:
                            sf = _mixed_scale(S, torch.zeros_like(S))
                        pj = sf * sig
                    pj = torch.where(nz, pj, zero)
                    if sp is not None:
                        spv = torch.where(sp == 1, float("inf"), torch.where(sp == 2, float("-inf"), float("nan")))
                        spv = spv.to(torch.float32)
                        if sig is not None:
                            spv = spv * sig
                        pj = torch.where(sp != 0, spv, pj)
                    pj = torch.where(nan_scale, nan, pj)
                    acc_f = acc_f + pj
                else:
                    bad = bad | nan_scale
                    if sp is not None:
                        bad = bad | (sp != 0)
                    if p.case == "P":
                        acc_i = torch.where(nan_scale, acc_i, _fixed_add(acc_i, S, E.clamp(-4096, 4096), acc))
                    else:
                        bad = bad | (torch.isinf(sig) & nz)
                        mant, ex = torch.frexp(sig.to(torch.float64))
                        ms = (mant * 16777216.0).to(torch.int64)
                        ok = nz & torch.isfinite(sig)
                        Nv = torch.where(ok, S * ms, torch.zeros_like(S))
                        acc_i = _fixed_add(acc_i, Nv, (ex.to(torch.int64) - 24), acc)
    if not fixed:
        return acc_f
    h, l_ = split64(acc_i)
    y = scale_wide(h, l_, -acc.frac_bits)
    return torch.where(bad, nan, y)


def finish(y: torch.Tensor, p: Prepared, bias) -> torch.Tensor:
    """Apply the NVFP4 tensor scales (RNE32(y * RNE32(tA*tB))) and the bias (RNE32(y + b))."""
    if p.tA is not None or p.tB is not None:
        t = np.float32(np.float32(1.0 if p.tA is None else p.tA) * np.float32(1.0 if p.tB is None else p.tB))
        y = y * torch.tensor(float(t), dtype=torch.float32, device=y.device)
    if bias is not None:
        b = torch.as_tensor(bias, dtype=torch.float32, device=y.device).reshape(1, -1)
        y = y + b
    return y
