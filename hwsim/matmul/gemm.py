"""GEMM path of the torch backend for the fp32 accumulator (docs/spec/matmul.md §8.2; CPU and CUDA).

Every segment sum S_j is computed by one batched float GEMM over all (or a chunk of) segments,
``bmm([J, M, L], [J, L, N])``, which is exact because the integer partial sums stay below 2**24
(fp32, TF32 off) or 2**53 (fp64), whatever order the BLAS uses. Then P^_j and the in-order update
acc <- RNE32(acc + P^_j) run per output, segment by segment in increasing j.

- Case P (power-of-two scales) folds 2**E_A and 2**E_B into the operands, so the GEMM returns
  S_j * 2**(E_A + E_B) directly. In fp64 that value is exact (|S| < 2**53, E in [-286, 254]) and P^_j
  is its single rounding to fp32. In fp32 it is exact, and so equal to P^_j, when every element,
  product and partial sum stays a normal fp32 number (checked on the segment exponents of the
  segments that hold a nonzero element); otherwise fp64 is used. NaN scales are applied as masks.
- Case G (float scales) takes raw integer views and forms sigma = RNE32(d_A d_B) and
  P^ = RNE32(RNE32(S) sigma) in the epilogue.

Operand views come from the element codes through a lookup table (``operands.element_lut``) with the
numba converters on CPU, or torch indexing on CUDA. The GEMMs run in chunks of about 128 rows and as
many segments as fit a byte budget (cache-sized on CPU). On CPU, tiles of rows (and columns when
there are few rows) are handed out to ``torch.get_num_threads()`` Python threads, each running
single-threaded GEMMs and the numba epilogue (a serial kernel vectorized over N) over its tile's
segments in increasing j; both release the GIL, so there is no parallel region per GEMM call (on a
busy machine each would wait for a time slice). On CUDA the epilogue is elementwise torch ops per
segment. Covered: the fp32 accumulator, segment sums of at most 53 bits, element codes of at most
8 bits without NaN/Inf codes, symmetric ints. ``run_fp32`` returns None for anything else.

The fixed-point accumulator (``FixedAcc``, CPU only) uses the same GEMMs on the raw integer views
(no scale folding): the epilogue ``acc_fixed`` adds rnd(S_j 2**(E_j+F)) (case P) or
rnd(S_j m_sigma 2**(e_sigma-24+F)) (case G) to an int64 register per output with the reference's
rounding and overflow rules (``reference._fixed_add``), and counts the accumulator events
(``events.AccEvents``: saturations, wraps, rounded and flushed products, bits lost).

An ``operands.OperandCache`` bound to B (``Prepared.bcache``) keeps B's float views, exponent
statistics and nonzero-segment map across calls: a layer's weight is converted once.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from numba import njit

from hwsim.formats.bits import POW2_F32, bitlen

from .common import epilogue, exact_float_matmul, scale_wide, split32, tile_epi_g
from .datapath import FixedAcc, Fp32Acc
from .events import N_EV, AccEvents
from .operands import (HALF_NAN, Prepared, codes_np, element_lut, exp_stats, fill_cols, fill_rows,
                       pow2_f64, seg_nonzero)

NAME = "gemm"
CHUNK_BYTES_CPU = 1 << 22          # one [Jc, Mc, Nc] GEMM output chunk per CPU thread
CHUNK_BYTES_CUDA = 1 << 28
CHUNK_ROWS = 128                   # preferred rows per GEMM call
B_TRANSPOSED_MIN_M = 256           # from this M on, B is held as [J*L, N] (see _b_transposed)
_EPI_NC = 256                      # N columns per epilogue pass (CPU; acc slice stays in L1)


def covers(p: Prepared, acc=None) -> bool:
    """The fp32 accumulator (``acc`` None counts as fp32) or, on CPU, a fixed-point one; segment sums
    of at most 53 bits, element codes with a lookup table. Static: the codes may still hold NaN/Inf,
    found while converting (then ``run`` returns None)."""
    if isinstance(acc, FixedAcc):
        if p.is_torch and p.a.codes.device.type != "cpu":
            return False
        if p.case == "G" and p.sum_bits + 24 > 62:
            return False
    elif not (acc is None or isinstance(acc, Fp32Acc)):
        return False
    return p.sum_bits <= 53 and element_lut(p.facts_a) is not None and element_lut(p.facts_b) is not None


def run(p: Prepared, acc=None, out=None, bias=None, events: AccEvents | None = None):
    """fp32 [M, N] torch tensor with tensor scale and bias applied, or None (NaN/Inf codes).
    ``events``: an AccEvents the fixed accumulator's events are added to."""
    y = run_fixed(p, acc, events) if isinstance(acc, FixedAcc) else run_fp32(p)
    return None if y is None else epilogue(y, p, bias)


# ---------------------------------------------------------------------------------------------
# CPU epilogues (numba, serial, GIL released, no fastmath)
# ---------------------------------------------------------------------------------------------


@njit(cache=True, inline="always")
def _n_tasks(Mc, N, NC):
    """Epilogue work items: one per (row m, column chunk of NC)."""
    return Mc * ((N + NC - 1) // NC)


@njit(cache=True, inline="always")
def _task_span(task, N, NC):
    """(m, n0, n1) of work item ``task``: row m, columns [n0, n1)."""
    nnc = (N + NC - 1) // NC
    m = task // nnc
    n0 = (task - m * nnc) * NC
    return m, n0, min(N, n0 + NC)


@njit(cache=True, nogil=True)
def acc_folded(P, acc, nanA, nanBt, has_nan, NC):
    """acc[m, n] <- RNE32(acc + RNE32(P[j, m, n])) for j in increasing order (P: exact S*2**E in fp64,
    or already P^ in fp32); NaN where nanA[m, j] or nanBt[j, n]. acc [Mc, N] fp32, updated in place."""
    Jc, Mc, N = P.shape
    for task in range(_n_tasks(Mc, N, NC)):
        m, n0, n1 = _task_span(task, N, NC)
        a = acc[m, n0:n1]
        for j in range(Jc):
            pj = P[j, m, n0:n1]
            if has_nan:
                nb = nanBt[j, n0:n1]
                na = nanA[m, j]
                for i in range(n1 - n0):
                    v = np.float32(pj[i])
                    if na or nb[i]:
                        v = np.float32(np.nan)
                    a[i] = np.float32(a[i] + v)
            else:
                for i in range(n1 - n0):
                    a[i] = np.float32(a[i] + np.float32(pj[i]))


@njit(cache=True, nogil=True)
def acc_scaled(S, acc, dA, dBt, NC):
    """Case G: sigma = RNE32(dA[m, j] * dBt[j, n]); acc <- RNE32(acc + RNE32(RNE32(S) * sigma)), with
    +0 for S = 0 and NaN for a NaN sigma, j in increasing order. S [Jc, Mc, N] integer-valued floats."""
    Jc, Mc, N = S.shape
    for task in range(_n_tasks(Mc, N, NC)):
        m, n0, n1 = _task_span(task, N, NC)
        a = acc[m, n0:n1]
        for j in range(Jc):
            sj = S[j, m, n0:n1]
            db = dBt[j, n0:n1]
            tile_epi_g(a, sj, dA[m, j], db, n1 - n0)


# ---------------------------------------------------------------------------------------------
# operand views
# ---------------------------------------------------------------------------------------------


def _fold_fp32_ok(p: Prepared, eA, eB, bitsA: int, bitsB: int) -> bool:
    """Every folded element, product and partial sum is a normal fp32 number (so exact)."""
    (amin, amax), (bmin, bmax) = eA, eB
    return (p.sum_bits <= 24 and amin >= -126 and bmin >= -126 and amin + bmin >= -126
            and amax + bitsA <= 127 and bmax + bitsB <= 127 and amax + bmax + p.sum_bits <= 127)


def _fold_fp64_ok(eA, eB, bitsA: int, bitsB: int, sum_bits: int) -> bool:
    (amin, amax), (bmin, bmax) = eA, eB
    return amin + bmin >= -1022 and amin >= -1022 and bmin >= -1022 and amax + bmax + sum_bits <= 1023


def _bits(lut) -> int:
    return int(np.max(np.abs(lut[0]), initial=0)).bit_length()


def _nonzero_segments(p: Prepared, role: str, lut, portable: bool):
    c = None if portable else codes_np(p, role)
    if c is not None:
        return seg_nonzero(c, lut[0], p.L, p.K, p.J)
    codes = p.codes_rows(role)
    v = torch.as_tensor(lut[0], device=codes.device)[codes[:, :p.K].long()] != 0
    v = torch.nn.functional.pad(v, (0, p.J * p.L - p.K)).reshape(v.shape[0], p.J, p.L).any(-1)
    return v.cpu().numpy()


def _b_transposed(p: Prepared) -> bool:
    """Hold B as [J*L, N] (N contiguous, GEMM "NN") rather than [N, J*L] ("NT"). The NN GEMM is some
    10-15% faster for these short inner dimensions, but the transposing conversion of B costs more;
    measured on 2 cores, NN pays off from a few hundred rows of A on. With an operand cache the
    conversion is paid once, so the NN layout is used for every M."""
    return p.M >= B_TRANSPOSED_MIN_M or p.bcache is not None


def _fill(p: Prepared, role: str, lut, mult, dtype, portable: bool, kind: str = ""):
    """Float view k * mult (per segment): A as [M, J*L]; B as [J*L, N] or [N, J*L] (``_b_transposed``).
    None when a code is an element NaN/Inf. numba on CPU, torch indexing on CUDA (or anywhere with
    ``portable``). ``mult`` may be a function returning the multipliers (called only when needed).
    B's view is kept in ``p.bcache`` under ``kind`` ("ones" or "fold": what ``mult`` is)."""
    key = None
    if role == "b" and kind and p.bcache is not None:
        key = ("fill", kind, p.L, p.J, np.dtype(dtype).str, _b_transposed(p), bool(portable))
        hit = p.bcache.get(key)
        if hit is not None:
            return None if hit is _BAD else hit
    if callable(mult):
        mult = mult()
    y = _fill_new(p, role, lut, mult, dtype, portable)
    if key is not None:
        p.bcache[key] = _BAD if y is None else y
    return y


_BAD = object()   # cached marker: B holds element NaN/Inf codes


def _fill_new(p: Prepared, role: str, lut, mult: np.ndarray, dtype, portable: bool):
    rows = p.M if role == "a" else p.N
    Kseg = p.J * p.L
    c = None if portable else codes_np(p, role)
    if c is not None:
        if role == "a" or not _b_transposed(p):
            out = np.empty((rows, Kseg), dtype)
            bad = fill_rows(c, lut[0], lut[1], mult, p.L, p.L, p.K, p.J, out)
        else:
            out = np.empty((Kseg, rows), dtype)
            bad = fill_cols(c, lut[0], lut[1], mult, p.L, p.L, p.K, p.J, out)
        return None if bad else torch.from_numpy(out)
    codes = p.codes_rows(role)
    dev = codes.device
    idx = codes[:, :p.K].long()
    if lut[1].size and bool(torch.as_tensor(lut[1], device=dev)[idx].any()):
        return None
    v = torch.as_tensor(lut[0], device=dev)[idx]
    m = torch.as_tensor(mult, device=dev).repeat_interleave(p.L, dim=1)[:, :p.K]
    v = (v * m).to(torch.float32 if dtype == np.float32 else torch.float64)
    v = torch.nn.functional.pad(v, (0, Kseg - p.K))
    return v.t().contiguous() if role == "b" and _b_transposed(p) else v.contiguous()


def _operands(p: Prepared, portable: bool = False):
    """(A [M, J*L], B [J*L, N] or [N, J*L] float tensors, dtype, scale data) or None (not covered)."""
    la, lb = element_lut(p.facts_a), element_lut(p.facts_b)
    if la is None or lb is None or p.sum_bits > 53:
        return None
    if p.case == "G":
        ops = _int_operands(p, la, lb, portable)
        if ops is None:
            return None
        A, B, dt = ops
        return A, B, dt, ("G", p.dA, _cached_b(p, "dBt", lambda: np.ascontiguousarray(p.dB.T)))
    bitsA, bitsB = _bits(la), _bits(lb)
    eA, eB = exp_stats(p.EA, None), _cached_b(p, "estats", lambda: exp_stats(p.EB, None))
    fp32 = _fold_fp32_ok(p, eA, eB, bitsA, bitsB)
    if not fp32 and p.sum_bits <= 24:
        # zero blocks carry extreme scales (code 0): judge only the segments holding a nonzero element
        eA = exp_stats(p.EA, _nonzero_segments(p, "a", la, portable))
        eB = _cached_b(p, ("estats_nz", portable),
                       lambda: exp_stats(p.EB, _nonzero_segments(p, "b", lb, portable)))
        fp32 = _fold_fp32_ok(p, eA, eB, bitsA, bitsB)
    if not fp32 and not _fold_fp64_ok(eA, eB, bitsA, bitsB, p.sum_bits):  # pragma: no cover
        return None
    dt = np.float32 if fp32 else np.float64
    nanA, nanB = p.EA >= HALF_NAN, p.EB >= HALF_NAN
    clampE = lambda E, nan: np.where(nan, 0.0, pow2_f64(np.clip(np.where(nan, 0, E), -1022, 1023)))  # noqa: E731
    A = _fill(p, "a", la, clampE(p.EA, nanA), dt, portable)
    B = None if A is None else _fill(p, "b", lb, lambda: clampE(p.EB, nanB), dt, portable, "fold")
    if B is None:
        return None
    has_nan = bool(nanA.any() or nanB.any())
    return A, B, dt, ("P", nanA, _cached_b(p, "nanBt", lambda: np.ascontiguousarray(nanB.T)), has_nan)


def _cached_b(p: Prepared, name, make):
    """``make()``, kept in B's operand cache (when there is one) for this segmentation."""
    if p.bcache is None:
        return make()
    key = (name, p.L, p.J)
    if key not in p.bcache:
        p.bcache[key] = make()
    return p.bcache[key]


def _int_operands(p: Prepared, la, lb, portable: bool = False):
    """(A [M, J*L], B float views of the raw element integers, dtype) or None (NaN/Inf codes): the
    operands of case G and of the fixed accumulator (no scale folded in). fp32 when every segment
    sum is below 2**24, else fp64."""
    dt = np.float32 if p.sum_bits <= 24 else np.float64
    A = _fill(p, "a", la, np.ones((p.M, p.J)), dt, portable)
    B = None if A is None else _fill(p, "b", lb, lambda: np.ones((p.N, p.J)), dt, portable, "ones")
    if B is None:
        return None
    return A, B, dt


# ---------------------------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------------------------


def _chunks(M: int, J: int, seg_row_bytes: int, budget: int):
    """(rows Mc, segments Jc) per GEMM call: about CHUNK_ROWS rows (BLAS efficiency), as many
    segments as fit the byte budget, fewer rows only when one segment of them does not fit."""
    Mc = min(M, CHUNK_ROWS)
    Jc = budget // max(Mc * seg_row_bytes, 1)
    if Jc < 1:
        return max(1, min(M, budget // max(seg_row_bytes, 1))), 1
    if Jc >= J:          # everything fits: take more rows
        return max(1, min(M, budget // max(J * seg_row_bytes, 1))), J
    return Mc, Jc


def run_fp32(p: Prepared, portable: bool = False):
    """fp32 [M, N] Fp32Acc values (before tensor scale and bias) as a torch tensor on the operands'
    device, or None when the pair or its codes are outside this path. ``portable`` runs the CUDA
    code (torch conversion and epilogue) on CPU tensors too; tests use it to check that code."""
    ops = _operands(p, portable)
    if ops is None:
        return None
    A, B, dt, sc = ops
    M, N, J, L = p.M, p.N, p.J, p.L
    dev = A.device
    torch_ops = dev.type != "cpu" or portable          # the CUDA epilogue (torch ops per segment)
    isz = np.dtype(dt).itemsize
    Bv = B.view(J, L, N) if _b_transposed(p) else B.view(N, J, L).permute(1, 2, 0)   # [J, L, N]
    Av = A.view(M, J, L).permute(1, 0, 2)                     # [J, M, L], rows strided
    acc = torch.zeros((M, N), dtype=torch.float32, device=dev)
    if sc[0] == "G":
        dA_t = torch.as_tensor(sc[1], device=dev)
        dBt_t = torch.as_tensor(sc[2], device=dev)
    else:
        nanA_t = torch.as_tensor(sc[1], device=dev) if torch_ops else None
        nanBt_t = torch.as_tensor(sc[2], device=dev) if torch_ops else None
    with exact_float_matmul():
        if not torch_ops:
            _run_cpu_threads(Av, Bv, acc, sc, M, N, J, isz)
            return acc
        budget = CHUNK_BYTES_CUDA if dev.type != "cpu" else CHUNK_BYTES_CPU
        Mc, Jc = _chunks(M, J, N * isz, budget)
        buf = torch.empty(Jc * Mc * N, dtype=A.dtype, device=dev)
        for m0 in range(0, M, Mc):
            m1 = min(M, m0 + Mc)
            accm = acc[m0:m1]
            for j0 in range(0, J, Jc):
                j1 = min(J, j0 + Jc)
                P = buf[:(j1 - j0) * (m1 - m0) * N].view(j1 - j0, m1 - m0, N)
                torch.bmm(Av[j0:j1, m0:m1], Bv[j0:j1], out=P)
                for j in range(j0, j1):
                    pj = P[j - j0]
                    if sc[0] == "P":
                        v = pj.to(torch.float32)
                        if sc[3]:
                            v = torch.where(nanA_t[m0:m1, j, None] | nanBt_t[None, j, :], float("nan"), v)
                    else:
                        sig = dA_t[m0:m1, j, None] * dBt_t[None, j, :]
                        v = torch.where(pj == 0, 0.0, pj.to(torch.float32) * sig)
                        v = torch.where(torch.isnan(sig), float("nan"), v)
                    accm.add_(v)
    return acc


def _run_cpu_threads(Av, Bv, acc, sc, M, N, J, isz, epi=None, new_state=None):
    """CPU: tiles of up to CHUNK_ROWS rows (split along N too when there are few rows), each with all
    its segments in increasing j (CHUNK_BYTES_CPU of GEMM output per call), handed out to
    ``torch.get_num_threads()`` Python threads that each run single-threaded GEMMs and the numba
    epilogue (both release the GIL). No parallel region per GEMM call: on a busy machine every such
    region would wait for a time slice. ``epi(P, m0, m1, n0, n1, j0, j1, state)`` replaces the fp32
    epilogue when given (``state``: one ``new_state()`` per thread; the states are returned)."""
    import threading

    nthr = max(1, torch.get_num_threads())
    Mc = max(1, min(M, CHUNK_ROWS))
    n_m = -(-M // Mc)
    n_n = 1 if n_m >= 2 * nthr else min(-(-2 * nthr // n_m), max(1, N // 256))
    Nc = max(1, -(-N // n_n))
    Jc = max(1, min(J, CHUNK_BYTES_CPU // max(Mc * Nc * isz, 1)))
    items = [(m0, min(M, m0 + Mc), n0, min(N, n0 + Nc)) for m0 in range(0, M, Mc) for n0 in range(0, N, Nc)]
    nxt = iter(range(len(items)))
    lock = threading.Lock()
    errors = []
    states = []

    def work():
        try:
            state = new_state() if new_state is not None else None
            with lock:
                states.append(state)
            # OpenMP's thread count is a per-thread setting: a new thread starts at the default
            torch.set_num_threads(1)
            buf = torch.empty(Jc * Mc * Nc, dtype=Av.dtype)
            while True:
                with lock:
                    i = next(nxt, None)
                if i is None:
                    return
                m0, m1, n0, n1 = items[i]
                accm = acc[m0:m1, n0:n1].numpy() if epi is None else None
                for j0 in range(0, J, Jc):
                    j1 = min(J, j0 + Jc)
                    P = buf[:(j1 - j0) * (m1 - m0) * (n1 - n0)].view(j1 - j0, m1 - m0, n1 - n0)
                    torch.bmm(Av[j0:j1, m0:m1], Bv[j0:j1, :, n0:n1], out=P)
                    if epi is not None:
                        epi(P.numpy(), m0, m1, n0, n1, j0, j1, state)
                    elif sc[0] == "P":
                        acc_folded(P.numpy(), accm, sc[1][m0:m1, j0:j1], sc[2][j0:j1, n0:n1], sc[3], _EPI_NC)
                    else:
                        acc_scaled(P.numpy(), accm, sc[1][m0:m1, j0:j1], sc[2][j0:j1, n0:n1], _EPI_NC)
        except BaseException as exc:  # pragma: no cover - re-raised below
            errors.append(exc)

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        threads = [threading.Thread(target=work, daemon=True) for _ in range(min(nthr, len(items)) - 1)]
        for t in threads:
            t.start()
        work()
        for t in threads:
            t.join()
    finally:
        torch.set_num_threads(old)
    if errors:
        raise errors[0]
    return states


# ---------------------------------------------------------------------------------------------
# fixed-point accumulator (CPU)
# ---------------------------------------------------------------------------------------------


@njit(cache=True, inline="always")
def _fixed_step(A, N, X, W, F, wrap, rne, ev):
    """``reference._fixed_add`` (A <- ovf(A + rnd(N * 2**(X+F)))) that also counts the events in
    ``ev`` (``events.EV_FIELDS`` order). N != 0, |N| < 2**62."""
    sh = X + F
    lim = np.int64(1) << W
    half = lim >> 1
    ev[0] += 1
    mag = -N if N < 0 else N
    big = False                      # the product alone leaves the register range (wrap)
    if sh >= 0:
        if wrap:
            t = (N << sh) if sh < 64 else np.int64(0)
            if N > 0:
                big = sh >= W - 1 or mag > ((half - 1) >> sh)
            else:
                big = sh >= W or mag > (half >> sh)
        elif sh > W or mag > (lim >> sh):
            t = -lim if N < 0 else lim
        else:
            t = N << sh
    else:
        rs = -sh
        if rs >= 63:
            t = np.int64(-1) if (N < 0 and not rne) else np.int64(0)
            lost = mag
        else:
            q = N >> rs
            if rne:
                rem = N - (q << rs)
                hf = np.int64(1) << (rs - 1)
                if rem > hf or (rem == hf and (q & 1) == 1):
                    q += 1
            t = q
            lost = mag & ((np.int64(1) << rs) - 1)
        if lost != 0:
            ev[3] += 1
            b = bitlen(lost)
            if b > ev[5]:
                ev[5] = b
        if t == 0:
            ev[4] += 1
        big = t < -half or t >= half
    s = A + t
    if wrap:
        r = ((s + half) & (lim - 1)) - half
        if big or r != s:
            ev[2] += 1
        return r
    if s > half - 1:
        ev[1] += 1
        return half - 1
    if s < -half:
        ev[1] += 1
        return -half
    return s


@njit(cache=True, nogil=True)
def acc_fixed(S, acc, bad, caseP, EA, EBt, dA, dBt, W, F, wrap, rne, ev, NC):
    """Fixed accumulator over the segments of one tile, j in increasing order: per output,
    A <- ovf(A + rnd(S_j 2**(E_j + F))) in case P (E_j = EA[m, j] + EBt[j, n]; a NaN scale makes
    the output NaN) or, in case G, with sigma = RNE32(dA dB) = m 2**(e-24): S_j m added at 2**(e-24)
    (NaN sigma, or Inf sigma with S_j != 0, makes it NaN), exactly as ``reference.mm_kernel``.
    S [Jc, Mc, N] integer-valued floats; acc [Mc, N] int64 and bad [Mc, N] bool updated in place."""
    Jc, Mc, N = S.shape
    for task in range(_n_tasks(Mc, N, NC)):
        m, n0, n1 = _task_span(task, N, NC)
        a = acc[m, n0:n1]
        bd = bad[m, n0:n1]
        for j in range(Jc):
            sj = S[j, m, n0:n1]
            if caseP:
                ea = EA[m, j]
                eb = EBt[j, n0:n1]
                for i in range(n1 - n0):
                    E = ea + eb[i]
                    if E >= HALF_NAN:
                        bd[i] = True
                    elif sj[i] != 0:
                        a[i] = _fixed_step(a[i], np.int64(sj[i]), E, W, F, wrap, rne, ev)
            else:
                da = dA[m, j]
                db = dBt[j, n0:n1]
                for i in range(n1 - n0):
                    sig = np.float32(da * db[i])
                    if np.isnan(sig):
                        bd[i] = True
                    elif sj[i] != 0:
                        if np.isinf(sig):
                            bd[i] = True
                        elif sig != 0:
                            mant, ex = math.frexp(np.float64(sig))
                            ms = np.int64(mant * 16777216.0)
                            a[i] = _fixed_step(a[i], np.int64(sj[i]) * ms, ex - 24, W, F, wrap, rne, ev)


@njit(cache=True, inline="always")
def _fix_t(sv, sc, isc, rne, C52):
    """(t, nz, frac(|t|), lost magnitude) of one product for ``acc_fixed_p`` (np.floor: a float;
    numba's math.floor returns an int64, which overflows for the large products of wide shifts)."""
    nz = (sv != 0.0) & (sc == sc)
    tr = sv * sc if nz else 0.0
    at = abs(tr)
    fr = at - np.floor(at)
    if rne:
        c = math.copysign(C52, tr)
        t = (tr + c) - c if at < C52 else tr
    else:
        t = np.floor(tr)
    lost = fr * isc if nz else 0.0
    return t, nz, fr, lost


@njit(cache=True, nogil=True)
def acc_fixed_p(S, acc, bad, PA, PBt, IPA, IPBt, W, wrap, rne, has_nan, ev, NC):
    """Case P form of ``acc_fixed`` in float64 arithmetic, branch-free over n (vectorized): with
    PA[m, j] = 2**(E_A + F) and PBt[j, n] = 2**E_B (NaN for a NaN scale; IPA, IPBt their inverses),
    t = S_j PA PBt is S_j 2**(E_j + F) exactly (|S_j| < 2**53, |E| < 400), floor / round-half-even of
    it is the reference's truncation / RNE, the register's saturation or wrap is applied to the int64
    of the (clamped or reduced) value, and the events are the reference's (``_fixed_step``; the bits
    lost are frac(|t|) 2**-(E_j + F), exact). ``has_nan``: some scale is NaN (then ``bad`` is set for
    its outputs). Gives the bits of ``acc_fixed``."""
    Jc, Mc, N = S.shape
    lim = np.int64(1) << W
    half = lim >> 1
    flim = np.float64(lim)
    fhalf = np.float64(half)
    iflim = 1.0 / flim
    n_add = np.int64(0)
    n_sat = np.int64(0)
    n_wrap = np.int64(0)
    n_rnd = np.int64(0)
    n_fl = np.int64(0)
    maxlost = np.int64(0)
    C52 = 4503599627370496.0      # 2**52: (x + C) - C rounds |x| < 2**52 to an integer, half to even
    for task in range(_n_tasks(Mc, N, NC)):
        m, n0, n1 = _task_span(task, N, NC)
        a = acc[m, n0:n1]
        for j in range(Jc):
            sj = S[j, m, n0:n1]
            pa = PA[m, j]
            pb = PBt[j, n0:n1]
            ipa = IPA[m, j]
            ipb = IPBt[j, n0:n1]
            if has_nan:
                bd = bad[m, n0:n1]
                for i in range(n1 - n0):
                    sc = pa * pb[i]
                    bd[i] = bd[i] | (sc != sc)
            if wrap:
                for i in range(n1 - n0):
                    t, nz, fr, lost = _fix_t(np.float64(sj[i]), pa * pb[i], ipa * ipb[i], rne, C52)
                    n_add += nz
                    n_rnd += fr != 0.0
                    n_fl += nz & (t == 0.0)
                    maxlost = max(maxlost, np.int64(lost))
                    big = (t < -fhalf) | (t >= fhalf)
                    tw = t - np.floor(t * iflim) * flim          # t mod 2**W, exact
                    sm = a[i] + np.int64(tw)
                    r = ((sm + half) & (lim - 1)) - half
                    st = a[i] + np.int64(t if not big else 0.0)    # the exact sum when t fits
                    n_wrap += big | (st < -half) | (st >= half)
                    a[i] = r
            else:
                for i in range(n1 - n0):
                    t, nz, fr, lost = _fix_t(np.float64(sj[i]), pa * pb[i], ipa * ipb[i], rne, C52)
                    n_add += nz
                    n_rnd += fr != 0.0
                    n_fl += nz & (t == 0.0)
                    maxlost = max(maxlost, np.int64(lost))
                    tc = min(max(t, -flim), flim)
                    sm = a[i] + np.int64(tc)
                    r = min(max(sm, -half), half - 1)
                    n_sat += r != sm
                    a[i] = r
    ev[0] += n_add
    ev[1] += n_sat
    ev[2] += n_wrap
    ev[3] += n_rnd
    ev[4] += n_fl
    if maxlost > 0:
        b = bitlen(maxlost)
        if b > ev[5]:
            ev[5] = b


@njit(cache=True)
def fixed_out(acc, bad, F, pow2):
    """RNE32(A * 2**-F) per output (NaN where ``bad``) and the number of NaN outputs. |A| < 2**53:
    float64(A) and the power-of-two product are exact, so the cast to fp32 is the one rounding."""
    M, N = acc.shape
    out = np.empty((M, N), np.float32)
    nan = 0
    sc = math.ldexp(1.0, -F)
    fast = -900 < F < 900
    for m in range(M):
        for n in range(N):
            v = acc[m, n]
            if bad[m, n]:
                out[m, n] = np.float32(np.nan)
                nan += 1
            elif fast and -(np.int64(1) << 53) < v < (np.int64(1) << 53):
                out[m, n] = np.float32(np.float64(v) * sc)
            else:
                h, lo = split32(v)
                out[m, n] = scale_wide(h, lo, -F, pow2)
    return out, nan


def _pow2_nan(E: np.ndarray, nan: np.ndarray) -> np.ndarray:
    """2**E as float64 (E clipped to the float64 range; exact for the exponents that occur), NaN where ``nan``."""
    v = pow2_f64(np.clip(np.where(nan, 0, E), -1022, 1023).astype(np.int64))
    return np.where(nan, np.nan, v).astype(np.float64)


def run_fixed(p: Prepared, acc: FixedAcc, events: AccEvents | None = None):
    """fp32 [M, N] FixedAcc values (before tensor scale and bias) as a CPU torch tensor, or None when
    the codes hold element NaN/Inf (then the reference runs). Adds the events to ``events``."""
    la, lb = element_lut(p.facts_a), element_lut(p.facts_b)
    if la is None or lb is None or p.sum_bits > 53:
        return None
    ops = _int_operands(p, la, lb)
    if ops is None:
        return None
    A, B, dt = ops
    M, N, J, L = p.M, p.N, p.J, p.L
    Bv = B.view(J, L, N) if _b_transposed(p) else B.view(N, J, L).permute(1, 2, 0)   # [J, L, N]
    Av = A.view(M, J, L).permute(1, 0, 2)
    caseP = p.case == "P"
    z_i, z_f = np.zeros((1, 1), np.int32), np.zeros((1, 1), np.float32)
    if caseP:
        EA, EBt, dA, dBt = p.EA, _cached_b(p, "EBt", lambda: np.ascontiguousarray(p.EB.T)), z_f, z_f
        PA = _pow2_nan(p.EA + acc.frac_bits, p.EA >= HALF_NAN)
        IPA = _pow2_nan(-(p.EA + acc.frac_bits), p.EA >= HALF_NAN)
        PBt = _cached_b(p, "PBt", lambda: np.ascontiguousarray(_pow2_nan(p.EB, p.EB >= HALF_NAN).T))
        IPBt = _cached_b(p, "IPBt", lambda: np.ascontiguousarray(_pow2_nan(-p.EB, p.EB >= HALF_NAN).T))
        has_nan = bool(np.isnan(PA).any()) or _cached_b(p, "PBt_nan", lambda: bool(np.isnan(PBt).any()))
    else:
        EA, EBt, dA, dBt = z_i, z_i, p.dA, _cached_b(p, "dBt", lambda: np.ascontiguousarray(p.dB.T))
    accA = np.zeros((M, N), np.int64)
    bad = np.zeros((M, N), np.bool_)
    W, F, wrap, rne = acc.width, acc.frac_bits, acc.overflow == "wrap", acc.rounding == "rne"

    def epi(P, m0, m1, n0, n1, j0, j1, ev):
        if caseP:
            acc_fixed_p(P, accA[m0:m1, n0:n1], bad[m0:m1, n0:n1], PA[m0:m1, j0:j1], PBt[j0:j1, n0:n1],
                        IPA[m0:m1, j0:j1], IPBt[j0:j1, n0:n1], W, wrap, rne, has_nan, ev, _EPI_NC)
            return
        acc_fixed(P, accA[m0:m1, n0:n1], bad[m0:m1, n0:n1], caseP,
                  EA[m0:m1, j0:j1] if caseP else EA, EBt[j0:j1, n0:n1] if caseP else EBt,
                  dA if caseP else dA[m0:m1, j0:j1], dBt if caseP else dBt[j0:j1, n0:n1],
                  W, F, wrap, rne, ev, _EPI_NC)

    with exact_float_matmul():
        states = _run_cpu_threads(Av, Bv, None, None, M, N, J, np.dtype(dt).itemsize, epi,
                                  lambda: np.zeros(N_EV, np.int64))
    y, nan = fixed_out(accA, bad, F, POW2_F32)
    if events is not None:
        for ev in states:
            events.add_counts(ev)
        events.calls += 1
        events.outputs += M * N
        events.nan_outputs += int(nan)
        events.accumulator = events.accumulator or acc.name
    return torch.from_numpy(y)
