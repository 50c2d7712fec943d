"""torch backend (CPU or CUDA), vectorized over M and N, segments in increasing K (docs/spec/matmul.md §8.2).

``backend="torch"`` tries the batched-GEMM path (``gemm.py``) first for the fp32 accumulator (sums
of at most 53 bits, element codes of at most 8 bits without NaN/Inf; ``api`` orders the two).
Everything else runs here:
segment sums S_j come from batched matmuls of the integer views (fp32 when the bound is <= 24
bits, fp64 <= 53 bits, else int64 on CPU / split fp64 on CUDA, and a two-limb split beyond 62
bits); P^_j and the accumulator update follow the numba reference elementwise.
"""

from __future__ import annotations

import torch

from hwsim.formats.bits import F32_EMAX, F32_EMIN, F32_LSB_EXP, POW2_ZERO, bitlen_t
from hwsim.formats.torch_ops import pow2_table

from .common import epilogue, exact_float_matmul
from .datapath import ExactAcc, FixedAcc
from .operands import HALF_NAN, Prepared

NAME = "torch"

M32 = (1 << 32) - 1
_CHUNK_ELEMS = 1 << 24     # max J_chunk * M * N elements of S held at once


def pow2_f32(E: torch.Tensor) -> torch.Tensor:
    """2**E as fp32 for integer E clamped to [-149, 127] (the formats' table on E's device)."""
    return pow2_table(E.device)[E.to(torch.int64).clamp(F32_LSB_EXP, F32_EMAX) + POW2_ZERO]


def ldexp_small(sf: torch.Tensor, E: torch.Tensor) -> torch.Tensor:
    """RNE32(sf * 2**E), sf an exact fp32 integer below 2**24 in magnitude (two-step ldexp)."""
    E = E.to(torch.int64)
    E1 = E.clamp(F32_EMIN, F32_EMAX)
    E2 = E - E1
    p = (sf * pow2_f32(E1)) * pow2_f32(E2.clamp(max=F32_EMAX))
    return torch.where(E2 < F32_LSB_EXP, sf * 0.0, p)


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
    n = torch.where(hi_m > 0, bitlen_t(hi_m) + 32, bitlen_t(lo_m))
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


def covers(p: Prepared, acc=None) -> bool:
    """The fp32 and fixed-point accumulators (fixed: segment sums of at most 62 bits)."""
    return not isinstance(acc, ExactAcc) and not (isinstance(acc, FixedAcc) and p.sum_bits > 62)


def run(p: Prepared, acc, out=None, bias=None) -> torch.Tensor:
    """fp32 [M, N] on p's device (p holds torch tensors), tensor scale and bias applied."""
    return epilogue(run_fp32_fixed(p, acc), p, bias)


def run_fp32_fixed(p: Prepared, acc) -> torch.Tensor:
    """fp32 [M, N] accumulator values (before tensor scale and bias) on p's device, segment by
    segment (the batched-GEMM path of ``gemm.py`` computes the same bits; tests compare both)."""
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
                    nan_scale = E >= HALF_NAN
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
