"""Operand builders and an independent Fraction model of the matmul core (no backend code used)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np

import hwsim.formats as F


# ---------------------------------------------------------------- operand construction
def _elem_codes(spec, shape, rng, allow_specials=False):
    bits = spec.element_bits
    codes = rng.integers(0, 1 << bits, size=shape)
    elem = spec.elem
    if isinstance(elem, F.FloatElem) and elem.specials != "none" and not allow_specials:
        eb, mb = elem.ebits, elem.mbits
        ef = (codes >> mb) & ((1 << eb) - 1)
        man = codes & ((1 << mb) - 1)
        bad = ef == (1 << eb) - 1
        if elem.specials == "fn":
            bad &= man == (1 << mb) - 1
        codes = np.where(bad, 0, codes)
    return codes


def _scale_codes(spec, shape, rng, lo=110, hi=140):
    s = spec.scale
    if isinstance(s, F.ExpScale):
        return rng.integers(lo, hi + 1, size=shape)
    if s.elem.ebits == 4:      # UE4M3 (NVFP4): positive finite codes
        return rng.integers(0x20, 0x50, size=shape)
    vals = (rng.uniform(0.5, 2.0, size=shape) * 2.0 ** rng.integers(-6, 3, size=shape)).astype(np.float16)
    return vals.view(np.uint16).astype(np.int64)


def make_operand(fmt, role, rows, K, rng, *, lib="numpy", scale_lo=110, scale_hi=140,
                 allow_specials=False, zero_frac=0.0):
    """Random QTensor: role 'a' -> [rows, K] blocked along -1; role 'b' -> [K, rows] along 0."""
    spec = F.get(fmt)
    B = spec.block_size
    gran = getattr(spec, "granularity", None)
    Kp = K if B is None else -(-K // B) * B
    nb = 1 if B is None else Kp // B
    codes = _elem_codes(spec, (rows, Kp), rng, allow_specials)
    if zero_frac:
        codes = np.where(rng.random(codes.shape) < zero_frac, 0, codes)
    codes[:, K:] = 0
    if isinstance(spec.elem, F.IntElem) and spec.elem.encoding == "signmag":
        codes[:, K:] = 0
    srows = 1 if gran == "tensor" else rows
    scales = _scale_codes(spec, (srows, 1 if gran == "tensor" else nb), rng, scale_lo, scale_hi)
    zps = None
    if isinstance(spec, F.ScaledIntSpec) and not spec.symmetric:
        zps = rng.integers(0, 1 << spec.bits, size=scales.shape)
    ts = None
    if getattr(spec, "tensor_scale", None):
        ts = float(np.float32(rng.uniform(0.001, 0.01)))
    if role == "b":
        codes, scales = codes.T, scales.T
        zps = None if zps is None else zps.T
        shape, axis = (K, rows), 0
    else:
        shape, axis = (rows, K), -1
    if lib == "torch":
        import torch

        conv = lambda x: None if x is None else torch.as_tensor(np.ascontiguousarray(x))  # noqa: E731
        codes, scales, zps = conv(codes), conv(scales), conv(zps)
    return F.QTensor.from_codes(spec, codes, scales=scales, zero_points=zps, tensor_scale=ts,
                                shape=shape, axis=axis)


# ---------------------------------------------------------------- Fraction model
def rne_to(v: Fraction, prec: int, emin_q: int, emax: int | None) -> Fraction | float:
    """Round an exact rational to prec significant bits, quantum >= 2**emin_q, ties to even."""
    if v == 0:
        return Fraction(0)
    sgn = -1 if v < 0 else 1
    a = abs(v)
    e = a.numerator.bit_length() - a.denominator.bit_length()
    if Fraction(2) ** e > a:
        e -= 1
    q = max(e - prec + 1, emin_q)
    x = a / Fraction(2) ** q
    n = x.numerator // x.denominator
    rem = x - n
    if rem > Fraction(1, 2) or (rem == Fraction(1, 2) and n % 2 == 1):
        n += 1
    r = n * Fraction(2) ** q
    if emax is not None and r >= Fraction(2) ** (emax + 1):
        return sgn * float("inf")
    return sgn * r


def rne32(v):
    if isinstance(v, float):
        return v
    return rne_to(v, 24, -149, 127)


def _scale_fracs(q, spec, role):
    sc = np.asarray(q.scales).astype(np.int64)
    sc = sc if role == "a" else sc.T
    s = spec.scale
    out = np.empty(sc.shape, dtype=object)
    for idx, c in np.ndenumerate(sc):
        if isinstance(s, F.ExpScale):
            out[idx] = None if (s.nan and c == (1 << s.bits) - 1) else Fraction(2) ** (int(c) - s.bias)
        else:
            d = float(F.decode_elem(np.array([c]), s.elem)[0])
            out[idx] = None if d != d else Fraction(d)
    return out


def model(a, b, acc: str):
    """Pure-Python result of docs/spec/matmul.md §2-§5 for finite-element numpy operands (M x N list of floats)."""
    sa, sb = F.get(a.spec), F.get(b.spec)
    K = a.shape[-1]
    ka = np.asarray(a.int_values()).astype(object)[:, :K]
    kb = np.asarray(b.int_values()).astype(object).T[:, :K]
    Ba = sa.block_size if getattr(sa, "granularity", "group") == "group" else None
    Bb = sb.block_size if getattr(sb, "granularity", "group") == "group" else None
    L = min([x for x in (Ba, Bb) if x] or [K])
    J = -(-K // L)
    scA, scB = _scale_fracs(a, sa, "a"), _scale_fracs(b, sb, "b")
    qa, qb = Fraction(2) ** sa.quantum_exp, Fraction(2) ** sb.quantum_exp
    caseP = isinstance(sa.scale, F.ExpScale) and isinstance(sb.scale, F.ExpScale)
    M, N = ka.shape[0], kb.shape[0]
    out = np.empty((M, N), dtype=object)
    for m in range(M):
        for n in range(N):
            parts = []
            for j in range(J):
                lo, hi = j * L, min(K, j * L + L)
                S = sum(int(ka[m, t]) * int(kb[n, t]) for t in range(lo, hi))
                da = scA[m if scA.shape[0] > 1 else 0, 0 if Ba is None else (j * L) // Ba]
                db = scB[n if scB.shape[0] > 1 else 0, 0 if Bb is None else (j * L) // Bb]
                if da is None or db is None:
                    parts.append(None)
                    continue
                if caseP:
                    parts.append(S * da * db * qa * qb)
                else:
                    sig = rne32(da * qa * db * qb)
                    parts.append(Fraction(0) if S == 0 else (S * sig if not isinstance(sig, float) else sig * S))
            out[m, n] = _accumulate(parts, acc, caseP)
    return out


def _accumulate(parts, acc, caseP):
    if any(p is None for p in parts):
        return float("nan")
    if acc == "exact":
        return float(sum(parts, Fraction(0)))
    if acc == "exact32":
        return float(rne32(sum(parts, Fraction(0))))
    if acc == "fp32":
        s = Fraction(0)
        for p in parts:
            pr = rne32(p)
            if isinstance(pr, float) or isinstance(s, float):
                s = float(s) + float(pr)
                continue
            s = rne32(s + pr)
        return float(s)
    # fixed:W:F[:wrap][:rne]
    bits = acc.split(":")
    W, Fb = int(bits[1]), int(bits[2])
    wrap, rne = "wrap" in bits, "rne" in bits
    A = 0
    for p in parts:
        if isinstance(p, float):
            return float("nan")
        x = p * Fraction(2) ** Fb
        t = x.numerator // x.denominator
        if rne:
            rem = x - t
            if rem > Fraction(1, 2) or (rem == Fraction(1, 2) and t % 2 == 1):
                t += 1
        A = A + t
        if wrap:
            A = ((A + (1 << (W - 1))) % (1 << W)) - (1 << (W - 1))
        else:
            A = max(-(1 << (W - 1)), min((1 << (W - 1)) - 1, A))
    return float(rne32(Fraction(A) / Fraction(2) ** Fb))


# ---------------------------------------------------------------- fp32 GEMM rounding bound
U32 = 2.0 ** -24      # unit roundoff of fp32, round to nearest even
U64 = 2.0 ** -53      # unit roundoff of fp64


def gamma(n: int, u: float = U32) -> float:
    """Higham's gamma_n = n*u / (1 - n*u), the relative bound after n roundings (needs n*u < 1)."""
    assert n * u < 1, (n, u)
    return n * u / (1 - n * u)


def fp32_gemm_bound(a, b):
    """float64 reference and order-independent error bound of an fp32 GEMM ``a @ b``.

    a: float32 [..., M, K], b: float32 [K, N] (numpy arrays or torch tensors; finite values).
    Returns ``(ref, bound)``, float64 numpy arrays of shape [..., M, N]: ``ref`` is ``a @ b`` in
    float64 and every fp32 GEMM ``y`` of the same operands satisfies ``|y - ref| <= bound``,
    whatever summation order, blocking, split-K, vector partial sums or FMAs the BLAS uses.

    Derivation (Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., §3.1, Lemma 3.1
    and (3.5)). One output is ``y = sum_k a_k b_k``. In any order, the computed value is built
    from K rounded products (or FMAs) and at most K - 1 rounded additions; along its path to the
    result each term ``a_k b_k`` meets at most K roundings, each a factor (1 + d) with |d| <= u =
    2^-24 (fp32, round to nearest), so

        |y_fp32 - y| <= gamma_K * sum_k |a_k b_k| = gamma_K * (|A| @ |B|),
        gamma_K = K u / (1 - K u).

    Underflow is not relative: a product below the fp32 normal range is rounded to the subnormal
    grid (spacing 2^-149, error <= 2^-150), sums of subnormals are exact, and later roundings
    scale an early error by at most (1 + gamma_K) <= 2: at most K * 2^-149 in all.

    The reference is computed in float64 (not exactly): its own error is <= gamma_K(2^-53) |A||B|,
    |A| @ |B| is itself a float64 sum of non-negative terms (relative error <= gamma_K(2^-53)),
    and |y - ref| is rounded once more in float64. Together these are below 2 K 2^-53 |A||B|,
    i.e. below one more fp32 unit u |A||B| for K <= 2^28 (checked). Since gamma_{K+1} - gamma_K
    >= u, the bound used is

        bound = gamma_{K+1} * fl64(|A| @ |B|) + K * 2^-149

    (the "+1" is that final rounding). For K = 96, gamma_97 = 5.8e-6: a meaningful check (an error
    of a few ulps of |A||B| beyond it is rejected), yet no BLAS summation order can exceed it.
    """
    def f64(x):
        if hasattr(x, "detach"):
            x = x.detach().cpu().numpy()
        x = np.asarray(x)
        assert x.dtype == np.float32, f"fp32_gemm_bound needs float32 operands, got {x.dtype}"
        return x.astype(np.float64)

    A, B = f64(a), f64(b)
    K = A.shape[-1]
    assert B.shape[0] == K and K <= 2 ** 28
    assert np.isfinite(A).all() and np.isfinite(B).all()
    ref = A @ B
    absprod = np.abs(A) @ np.abs(B)
    return ref, gamma(K + 1) * absprod + K * 2.0 ** -149


def within_fp32_gemm_bound(y, a, b):
    """Boolean array: where the fp32 result ``y`` of ``a @ b`` lies within ``fp32_gemm_bound``."""
    if hasattr(y, "detach"):
        y = y.detach().cpu().numpy()
    ref, bound = fp32_gemm_bound(a, b)
    return np.abs(np.asarray(y, np.float64) - ref) <= bound


def assert_fp32_gemm_result(y, a, b, what=""):
    """``y`` is an fp32 GEMM of ``a @ b`` in some summation order (see ``fp32_gemm_bound``)."""
    if hasattr(y, "detach"):
        y = y.detach().cpu().numpy()
    y = np.asarray(y)
    assert y.dtype == np.float32, f"{what}: expected an fp32 result, got {y.dtype}"
    ref, bound = fp32_gemm_bound(a, b)
    err = np.abs(y.astype(np.float64) - ref)
    bad = ~(err <= bound)
    if bad.any():
        i = np.unravel_index(np.argmax(np.where(bad, err / np.maximum(bound, 1e-300), 0)), err.shape)
        raise AssertionError(f"{what}: {int(bad.sum())} of {bad.size} outputs outside the fp32 GEMM bound; "
                             f"worst at {i}: |y - ref| = {err[i]:.3e} > bound {bound[i]:.3e}")
