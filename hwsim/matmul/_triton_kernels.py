"""Triton kernels of the fast path (imported lazily by triton_backend; needs triton)."""

import triton
import triton.language as tl


@triton.jit
def pow2(e):
    """2**e as fp32 from bits, e int32 in [-149, 127]."""
    normal = (e + 127) << 23
    sub = tl.full(e.shape, 1, tl.int32) << tl.minimum(tl.maximum(e + 149, 0), 22)
    bits = tl.where(e >= -126, normal, sub)
    return bits.to(tl.float32, bitcast=True)

@triton.jit
def mm(a_ptr, b_ptr, ea_ptr, eb_ptr, da_ptr, db_ptr, out_ptr, M, N, KSEG, J, L,
       CASE_P: tl.constexpr, HALF_NAN: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
       BK: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rm = pid_m * BM + tl.arange(0, BM)
    rn = pid_n * BN + tl.arange(0, BN)
    rk = tl.arange(0, BK)
    mm_ = rm < M
    nm_ = rn < N
    acc = tl.zeros((BM, BN), tl.float32)
    for j in range(0, J):
        s = tl.zeros((BM, BN), tl.int32)
        for k0 in range(0, L, BK):
            kk = k0 + rk
            km = kk < L
            col = j * L + kk
            a = tl.load(a_ptr + rm[:, None].to(tl.int64) * KSEG + col[None, :],
                        mask=mm_[:, None] & km[None, :], other=0)
            b = tl.load(b_ptr + rn[None, :].to(tl.int64) * KSEG + col[:, None],
                        mask=nm_[None, :] & km[:, None], other=0)
            s += tl.dot(a, b, out_dtype=tl.int32)
        sf = s.to(tl.float32)
        if CASE_P:
            ea = tl.load(ea_ptr + rm * J + j, mask=mm_, other=0)
            eb = tl.load(eb_ptr + rn * J + j, mask=nm_, other=0)
            E = ea[:, None] + eb[None, :]
            E1 = tl.minimum(tl.maximum(E, -126), 127)
            E2 = E - E1
            p = sf * pow2(E1)
            p = p * pow2(tl.minimum(tl.maximum(E2, -149), 127))
            p = tl.where(E2 < -149, 0.0, p)
            p = tl.where(s == 0, 0.0, p)
            p = tl.where(E >= HALF_NAN, float("nan"), p)
        else:
            da = tl.load(da_ptr + rm * J + j, mask=mm_, other=0.0)
            db = tl.load(db_ptr + rn * J + j, mask=nm_, other=0.0)
            sig = da[:, None] * db[None, :]
            p = sf * sig
            p = tl.where(s == 0, 0.0, p)
            p = tl.where(sig != sig, float("nan"), p)
        acc = acc + p
    tl.store(out_ptr + rm[:, None].to(tl.int64) * N + rn[None, :], acc,
             mask=mm_[:, None] & nm_[None, :])
