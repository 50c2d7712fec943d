"""From two QTensors to the integer view every backend consumes (docs/spec/matmul.md §1-§4).

``Prepared`` holds, for A [M, K] and B [K, N] (B stored transposed as [N, Kseg]):
element integers k (int64, zero-padded to J*L along K), optional element-special flags
(0 finite, 1 +Inf, 2 -Inf, 3 NaN), and per-segment scales: exponents E (int32, quantum
included; NAN_E marks a NaN scale) in case P, or decoded fp32 scales d = scale*2**q in case G.
The int64 views (``kA``/``kB``/``spA``/``spB``) are built lazily, on first use: the fast paths
never need them and read the element codes directly through a code -> integer lookup table
(``element_lut``) with the numba converters ``fill_rows`` / ``fill_cols`` below.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from numba import njit, prange

from hwsim.formats.bits import is_torch, pow2_f64

from .datapath import OperandFacts, operand_facts, segment_length

__all__ = ["NAN_E", "HALF_NAN", "Prepared", "prepare", "OperandCache", "is_torch", "pow2_f64", "exp_to_d", "element_lut",
           "exp_stats", "fill_rows", "fill_cols", "seg_nonzero", "codes_np"]

NAN_E = 1 << 20          # exponent sentinel of a NaN scale (any E >= HALF_NAN means NaN)
HALF_NAN = NAN_E // 2    # the test: a segment exponent E >= HALF_NAN is a NaN scale


@dataclass
class Prepared:
    """Operand pair with its segment scales; integer views of A (rows m) and B (rows n), both
    [rows, J*L], are built on first access of ``kA``/``kB``/``spA``/``spB``. See module docstring."""

    a: Any              # the A QTensor ([..., M, K], blocked along K)
    b: Any              # the B QTensor ([K, N], blocked along axis 0)
    case: str           # "P" or "G"
    L: int
    J: int
    K: int
    EA: np.ndarray | None   # int32 [M, J]
    EB: np.ndarray | None   # int32 [N, J]
    dA: np.ndarray | None   # float32 [M, J]
    dB: np.ndarray | None   # float32 [N, J]
    tA: float | None
    tB: float | None
    facts_a: OperandFacts
    facts_b: OperandFacts
    batch_shape: tuple
    M: int
    N: int
    _views: dict = field(default_factory=dict, repr=False)
    #: conversions of B kept across calls (an :class:`OperandCache` bound to ``b``), or None
    bcache: Any = field(default=None, repr=False)

    # ---- element codes as [rows, Kp] (A: rows m; B: rows n, a transposed view) -----------------
    def codes_rows(self, role: str):
        q = self.a if role == "a" else self.b
        c = q.codes
        if role == "a":
            return c.reshape(self.M, c.shape[-1])
        return c.T if not is_torch(c) else c.t()

    def _view(self, role: str):
        if role not in self._views:
            self._views[role] = _kview(self, role)
        return self._views[role]

    kA = property(lambda self: self._view("a")[0])
    kB = property(lambda self: self._view("b")[0])
    spA = property(lambda self: self._view("a")[1])
    spB = property(lambda self: self._view("b")[1])

    @property
    def sum_bound(self) -> int:
        """L * k_max,A * k_max,B with the k_min magnitudes included (container choice)."""
        ka = max(self.facts_a.k_max, -self.facts_a.k_min)
        kb = max(self.facts_b.k_max, -self.facts_b.k_min)
        return self.L * ka * kb

    @property
    def sum_bits(self) -> int:
        """Bits (sign excluded) needed by |S_j|."""
        return int(self.sum_bound).bit_length()

    @property
    def has_specials(self) -> bool:
        return self.spA is not None or self.spB is not None

    @property
    def is_torch(self) -> bool:
        return is_torch(self.a.codes)

    def converted(self, lib: str) -> "Prepared":
        """The same pair with codes/scales/zero points moved to numpy or (CPU) torch."""
        if lib == ("torch" if self.is_torch else "numpy"):
            return self
        if lib == "torch":
            import torch

            conv = lambda x: None if x is None else torch.as_tensor(np.ascontiguousarray(x))  # noqa: E731
        else:
            conv = lambda x: None if x is None else _to_np(x)  # noqa: E731
        qa, qb = (replace(q, codes=conv(q.codes), scales=conv(q.scales), zero_points=conv(q.zero_points))
                  for q in (self.a, self.b))
        views = {k: tuple(conv(x) for x in v) for k, v in self._views.items()}
        return replace(self, a=qa, b=qb, _views=views)


def _elem_specials(codes, elem):
    """0 finite, 1 +Inf, 2 -Inf, 3 NaN for minifloat element codes (None when impossible)."""
    if getattr(elem, "specials", "none") == "none":
        return None
    eb, mb = elem.ebits, elem.mbits
    c = codes.to(__import__("torch").int64) if is_torch(codes) else codes.astype(np.int64)
    sign = (c >> (eb + mb)) & 1
    ef = (c >> mb) & ((1 << eb) - 1)
    man = c & ((1 << mb) - 1)
    top = ef == (1 << eb) - 1
    if elem.specials == "ieee":
        nan = top & (man != 0)
        inf = top & (man == 0)
    else:  # "fn": only S.1..1.1..1 is NaN
        nan = top & (man == (1 << mb) - 1)
        inf = top & False
    out = nan * 3 + inf * (1 + sign)
    if not bool(out.any()):
        return None
    return out


def _to_np(x) -> np.ndarray:
    if is_torch(x):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _scale_arrays(q, facts: OperandFacts, rows: int, role: str):
    """Per-block scales as ([rows, nb] exponent int32 or None, [rows, nb] float32 d)."""
    import hwsim.formats as F

    spec = facts.spec
    sc = _to_np(q.scales).astype(np.int64)
    if role == "a":
        sc = sc.reshape(-1, sc.shape[-1])
    else:
        sc = sc.reshape(sc.shape[0], -1).T
    if sc.shape[0] == 1 and rows != 1:
        sc = np.broadcast_to(sc, (rows, sc.shape[1]))
    if facts.kind == "P":
        s = spec.scale
        e = (sc - s.bias + facts.q).astype(np.int64)
        if s.nan:
            e = np.where(sc == s.nan_code, NAN_E, e)
        return np.ascontiguousarray(e.astype(np.int32)), None
    dec = F.decode_elem(sc.astype(np.uint32) if sc.max(initial=0) > 255 else sc.astype(np.uint8),
                        spec.scale.elem).astype(np.float32)
    d = np.ldexp(dec, facts.q).astype(np.float32)
    return None, np.ascontiguousarray(d.reshape(rows, -1))


def exp_to_d(E: np.ndarray) -> np.ndarray:
    """2**E as fp32 (exact for E in [-149, 127]); NaN for the NaN sentinel."""
    d = np.ldexp(np.float32(1.0), np.minimum(E, 200).astype(np.int32)).astype(np.float32)
    return np.where(E >= HALF_NAN, np.float32(np.nan), d).astype(np.float32)


def prepare(a, b, cache: "OperandCache | None" = None) -> Prepared:
    """Validate the operand pair and build its integer view (docs/spec/matmul.md §1-§2).

    ``cache``: an :class:`OperandCache` for ``b``; B's segment scales (and, in the GEMM path, its
    float views) are taken from it when ``b`` is the operand it holds conversions of."""
    import hwsim.formats as F

    for name, q in (("a", a), ("b", b)):
        if not isinstance(q, F.QTensor):
            raise ValueError(f"operand {name}: expected a hwsim.formats.QTensor, got {type(q).__name__}")
    fa, fb = operand_facts(a.spec, "a"), operand_facts(b.spec, "b")
    ash, bsh = tuple(a.shape), tuple(b.shape)
    if len(ash) < 2:
        raise ValueError(f"operand a: shape {ash} must be [..., M, K] (at least 2-D), blocked along its last axis")
    if len(bsh) != 2:
        raise ValueError(f"operand b: shape {bsh} must be [K, N] (2-D), blocked along axis 0; "
                         f"pass a [N, K] weight as w_q.T")
    K = ash[-1]
    if bsh[0] != K:
        raise ValueError(f"K mismatch: operand a has shape {ash} (K = {K} on its last axis) but operand b "
                         f"has shape {bsh} (K = {bsh[0]} on axis 0); expected b.shape[0] == a.shape[-1]")
    tensor_gran = lambda f: getattr(f.spec, "granularity", None) == "tensor"  # noqa: E731
    if a.axis != len(ash) - 1 and not tensor_gran(fa):
        raise ValueError(f"operand a: shape {ash} is blocked along axis {a.axis}; expected the K axis "
                         f"{len(ash) - 1} (quantize activations with axis=-1)")
    if b.axis != 0 and not tensor_gran(fb):
        raise ValueError(f"operand b: shape {bsh} is blocked along axis {b.axis}; expected the K axis 0 "
                         f"(pass an [N, K] weight quantized along -1 as w_q.T)")
    L = segment_length(fa.block, fb.block, K)
    J = max(-(-K // L), 1)
    M = int(np.prod(ash[:-1]))
    N = bsh[1]

    case = "P" if fa.kind == "P" and fb.kind == "P" else "G"
    seg = np.arange(J)
    out = {}
    if cache is not None:
        cache.bind(b)
    for name, q, f, rows in (("A", a, fa, M), ("B", b, fb, N)):
        ckey = ("seg_scales", L, J, case)
        if name == "B" and cache is not None and ckey in cache:
            out["EB"], out["dB"] = cache[ckey]
            continue
        e, d = _scale_arrays(q, f, rows, name.lower())
        idx = np.zeros(J, np.int64) if f.block is None else (seg * L) // f.block
        nb = (e if e is not None else d).shape[1]
        idx = np.minimum(idx, nb - 1)
        if case == "P":
            out["E" + name] = np.ascontiguousarray(e[:, idx])
            out["d" + name] = None
        else:
            dd = exp_to_d(e) if e is not None else d
            out["E" + name] = None
            out["d" + name] = np.ascontiguousarray(dd[:, idx])
        if name == "B" and cache is not None:
            cache[ckey] = (out["EB"], out["dB"])
    return Prepared(a, b, case, L, J, K, out["EA"], out["EB"], out["dA"], out["dB"],
                    a.tensor_scale, b.tensor_scale, fa, fb, tuple(ash[:-1]), M, N, bcache=cache)


class OperandCache(dict):
    """Conversions of one B operand (a layer's weight) kept across ``matmul`` calls.

    Pass the same B QTensor and the same cache to every call (``matmul(x_q, w_t, operand_cache=c)``):
    B's segment scales, exponent statistics and float views are then computed on the first call only,
    so a product with a new A (every forward; one token at a time in decoding) converts only A.
    The cache binds to B's code, scale and zero-point arrays by identity (and, for torch tensors,
    their version counters, so in-place changes are seen); a call with another B clears it. numpy
    arrays changed in place are not detected: call :meth:`clear` after such a change.
    """

    def __init__(self):
        super().__init__()
        self._refs: tuple = ()
        self._token: tuple = ()

    @staticmethod
    def _token_of(b) -> tuple:
        arrs = (b.codes, b.scales, b.zero_points)
        return tuple((id(x), getattr(x, "_version", None)) for x in arrs) + (
            tuple(b.shape), b.axis, b.tensor_scale, id(b.spec))

    def bind(self, b) -> None:
        """Hold conversions of ``b`` from now on (cleared when ``b`` is not the operand held)."""
        tok = self._token_of(b)
        if tok != self._token:
            self.clear()
            self._refs = (b.codes, b.scales, b.zero_points, b.spec)  # keep the ids in the token valid
            self._token = tok


def _kview(p: Prepared, role: str):
    """int64 integer view [rows, J*L] (zero-padded) and int8 special flags (or None) of one operand."""
    import hwsim.formats as F

    q, f = (p.a, p.facts_a) if role == "a" else (p.b, p.facts_b)
    Kseg = p.J * p.L
    k = q.int_values()
    codes = q.codes
    if role == "a":
        k = k.reshape(p.M, k.shape[-1])
        codes = codes.reshape(p.M, codes.shape[-1])
    else:
        k, codes = k.T, codes.T
    sp = _elem_specials(codes, F.elem_of(f.spec) if hasattr(F, "elem_of") else f.spec.elem) \
        if f.has_specials else None
    if sp is not None:
        k = k * (sp == 0)
    k, sp = _fit(k, Kseg, p.K), (None if sp is None else _fit(sp, Kseg, p.K))
    if sp is not None:
        sp = sp.to(__import__("torch").int8) if is_torch(sp) else sp.astype(np.int8)
    return k, sp


def _fit(x, Kseg: int, K: int):
    """Crop [rows, Kpad] to the logical K (dropping padding) and zero-pad to Kseg, contiguous int64."""
    if is_torch(x):
        import torch

        x = x[:, :K].to(torch.int64)
        if Kseg > K:
            x = torch.nn.functional.pad(x, (0, Kseg - K))
        return x.contiguous()
    x = np.asarray(x)[:, :K].astype(np.int64)
    if Kseg > K:
        x = np.pad(x, ((0, 0), (0, Kseg - K)))
    return np.ascontiguousarray(x)


# ---------------------------------------------------------------------------------------------
# Fast operand views: code -> integer lookup tables and numba converters (used by the tiled numba
# kernel and the GEMM path; the int64 views above stay the general/reference route)
# ---------------------------------------------------------------------------------------------

_LUT_CACHE: dict = {}


def element_lut(facts: OperandFacts):
    """(k [2**bits] float64, special class [2**bits] int8) for element codes of at most 8 bits, or None.

    k is the integer view of every code (``QTensor.int_values`` of the codes 0 .. 2**bits - 1, so the
    table is whatever hwsim.formats defines); the class is 0 finite, 1 +Inf, 2 -Inf, 3 NaN (k = 0
    there), and the class table is empty when the format has no such code. None for wider codes and
    for asymmetric scaled ints (k = c - z depends on the zero point).
    """
    import hwsim.formats as F

    spec = facts.spec
    bits = int(spec.element_bits)
    if bits > 8 or (isinstance(spec, F.ScaledIntSpec) and not spec.symmetric):
        return None
    try:
        key = (spec, bits)
        hash(key)
    except TypeError:  # pragma: no cover - unhashable custom spec
        key = (repr(spec), bits)
    hit = _LUT_CACHE.get(key)
    if hit is not None:
        return hit
    n = 1 << bits
    codes = np.arange(n, dtype=np.uint8).reshape(1, n)
    k = np.asarray(F.QTensor(spec=spec, codes=codes, shape=(1, n), axis=-1).int_values()).reshape(n)
    sp = None
    if facts.has_specials:
        sp = _elem_specials(codes, F.elem_of(spec) if hasattr(F, "elem_of") else spec.elem)
    sp = np.zeros(n, np.int8) if sp is None else np.asarray(sp).reshape(n).astype(np.int8)
    lut = np.where(sp == 0, k, 0).astype(np.float64)
    if np.any(np.abs(lut) >= 2.0 ** 53):  # pragma: no cover - no <= 8-bit element is that wide
        return None
    # 256 entries (codes are uint8), so the converters index without masking
    lut = np.concatenate([lut, np.zeros(256 - n)])
    sp = np.concatenate([sp, np.zeros(256 - n, np.int8)])
    if not sp.any():
        sp = np.zeros(0, np.int8)      # no NaN/Inf codes: the converters skip the check
    _LUT_CACHE[key] = (lut, sp)
    return lut, sp


def exp_stats(E: np.ndarray, nz: np.ndarray | None):
    """(min, max) of the finite (non-NaN-sentinel) segment exponents E [rows, J], over the segments
    flagged in ``nz`` (any nonzero element) when given; (0, 0) when there is none."""
    ok = E < HALF_NAN
    if nz is not None:
        ok = ok & nz
    if not ok.any():
        return 0, 0
    v = E[ok]
    return int(v.min()), int(v.max())


@njit(cache=True, inline="always")
def _fill_seg(crow, oseg, lut, mu, j, L, Lp, K):
    """Segment j of one row: oseg[u] = lut[crow[j*L + u]] * mu for u < L within K, 0 up to Lp."""
    base = j * L
    hi = max(min(L, K - base), 0)
    cseg = crow[base:base + hi]
    for u in range(hi):
        oseg[u] = lut[cseg[u]] * mu
    for u in range(hi, Lp):
        oseg[u] = 0


@njit(cache=True, inline="always")
def _fill_row(crow, orow, lut, mrow, L, Lp, K, J):
    """One row of ``fill_rows``."""
    for j in range(J):
        _fill_seg(crow, orow[j * Lp:j * Lp + Lp], lut, mrow[j], j, L, Lp, K)


@njit(cache=True, inline="always")
def _special_any(crow, splut, K):
    spc = 0
    if splut.shape[0] > 0:
        c = crow[:K]
        for u in range(c.shape[0]):
            spc |= splut[c[u]]
    return spc


@njit(parallel=True, cache=True)
def fill_rows(codes, lut, splut, mult, L, Lp, K, J, out):
    """out[r, j*Lp + u] = lut[codes[r, j*L + u]] * mult[r, j] for u < L, j*L + u < K; 0 elsewhere.

    codes [R, >= K] uint8 element codes (any layout), lut/splut 256-entry tables, mult [R, J] float64,
    out [>= R, J*Lp]. Rows of ``out`` past R are left as they are. Returns True when some code
    (within K) is an element NaN/Inf (splut[code] != 0); ``splut`` is empty when the format has none."""
    R = codes.shape[0]
    bad = np.zeros(R, np.int64)
    for r in prange(R):
        _fill_row(codes[r], out[r], lut, mult[r], L, Lp, K, J)
        bad[r] = _special_any(codes[r], splut, K)
    return bad.any()


@njit(parallel=True, cache=True)
def fill_cols(codes, lut, splut, mult, L, Lp, K, J, out):
    """Transposed ``fill_rows``: out[j*Lp + u, r] (out [J*Lp, R]). A tile of 64 rows is converted one
    segment at a time into a small local buffer, then stored transposed with contiguous writes."""
    R = codes.shape[0]
    RT = 256
    ntile = (R + RT - 1) // RT
    bad = np.zeros(ntile, np.int64)
    for tile in prange(ntile):
        r0 = tile * RT
        r1 = min(R, r0 + RT)
        nr = r1 - r0
        buf = np.empty((RT, Lp), out.dtype)
        spc = 0
        for r in range(r0, r1):
            spc |= _special_any(codes[r], splut, K)
        for j in range(J):
            for i in range(nr):
                _fill_seg(codes[r0 + i], buf[i], lut, mult[r0 + i, j], j, L, Lp, K)
            for u in range(Lp):
                ocol = out[j * Lp + u, r0:r1]
                for i in range(nr):
                    ocol[i] = buf[i, u]
        bad[tile] = spc
    return bad.any()


@njit(parallel=True, cache=True)
def seg_nonzero(codes, lut, L, K, J):
    """[R, J] bool: segment j of row r holds a nonzero element (codes [R, >= K])."""
    R = codes.shape[0]
    out = np.zeros((R, J), np.bool_)
    for r in prange(R):
        for j in range(J):
            base = j * L
            hi = min(L, K - base)
            nz = False
            for u in range(hi):
                if lut[codes[r, base + u]] != 0:
                    nz = True
                    break
            out[r, j] = nz
    return out


def codes_np(p: Prepared, role: str):
    """The operand's codes as a numpy uint8 [rows, Kp] array (zero-copy for CPU torch tensors and
    uint8 codes), or None on GPU."""
    c = p.codes_rows(role)
    if is_torch(c):
        if c.device.type != "cpu":
            return None
        c = c.detach().numpy()
    if c.dtype != np.uint8:
        c = c.astype(np.uint8)      # only for <= 8-bit codes (element_lut covers no wider ones)
    return c
