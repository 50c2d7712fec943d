"""Triton fast path (docs/spec/matmul.md §8.3): int8 tl.dot per K segment, exact ldexp, fp32 accumulation.

Covers operands whose integer view fits int8 (MX/BFP ints up to 8 bits, symmetric scaled ints,
E2M1 and E2M3 minifloats) with the fp32 accumulator. triton is an optional dependency and is
imported lazily; on a CPU-only machine the kernel runs under ``TRITON_INTERPRET=1``.
"""

from __future__ import annotations

from .common import epilogue
from .datapath import Fp32Acc
from .operands import HALF_NAN, Prepared

NAME = "triton"


def available() -> tuple[bool, str]:
    """(True, "") when triton imports, else (False, reason)."""
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception as exc:  # pragma: no cover - depends on the environment
        return False, f"triton is not importable: {exc}"
    return True, ""


def covers(p: Prepared, acc=None) -> bool:
    """Whether the int8 tensor-core path is exact for this operand pair and accumulator (fp32;
    ``acc`` None counts as fp32)."""
    return ((acc is None or isinstance(acc, Fp32Acc)) and p.facts_a.int8_exact and p.facts_b.int8_exact and not p.has_specials
            and p.sum_bound < (1 << 31) and available()[0])


def run(p: Prepared, acc=None, out=None, bias=None):
    """fp32 [M, N] on the operands' device (p holds torch tensors), tensor scale and bias applied."""
    return epilogue(run_fp32(p), p, bias)


def _kernel():
    from ._triton_kernels import mm

    return mm


def _block_k(L: int) -> int:
    bk = 16
    while bk < L and bk < 64:
        bk *= 2
    return bk


def run_fp32(p: Prepared, BM: int = 64, BN: int = 64, num_warps: int = 4):
    """fp32 [M, N] accumulator values (before tensor scale and bias); p holds torch tensors."""
    import torch
    import triton

    dev = p.kA.device
    M, N = p.M, p.N
    a = p.kA.to(torch.int8).contiguous()
    b = p.kB.to(torch.int8).contiguous()
    if p.case == "P":
        ea = torch.as_tensor(p.EA, device=dev).to(torch.int32).contiguous()
        eb = torch.as_tensor(p.EB, device=dev).to(torch.int32).contiguous()
        da = db = torch.zeros(1, dtype=torch.float32, device=dev)
    else:
        da = torch.as_tensor(p.dA, device=dev).to(torch.float32).contiguous()
        db = torch.as_tensor(p.dB, device=dev).to(torch.float32).contiguous()
        ea = eb = torch.zeros(1, dtype=torch.int32, device=dev)
    out = torch.empty((M, N), dtype=torch.float32, device=dev)
    BM = max(16, min(BM, triton.next_power_of_2(M)))
    BN = max(16, min(BN, triton.next_power_of_2(N)))
    grid = (triton.cdiv(M, BM), triton.cdiv(N, BN))
    _kernel()[grid](a, b, ea, eb, da, db, out, M, N, p.J * p.L, p.J, p.L,
                    CASE_P=p.case == "P", HALF_NAN=HALF_NAN, BM=BM, BN=BN, BK=_block_k(p.L),
                    num_warps=num_warps, enable_fp_fusion=False)
    return out
