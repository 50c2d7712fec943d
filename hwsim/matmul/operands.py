"""From two QTensors to the integer view every backend consumes (matmul.md §1-§4).

``Prepared`` holds, for A [M, K] and B [K, N] (B stored transposed as [N, Kseg]):
element integers k (int64, zero-padded to J*L along K), optional element-special flags
(0 finite, 1 +Inf, 2 -Inf, 3 NaN), and per-segment scales: exponents E (int32, quantum
included; NAN_E marks a NaN scale) in case P, or decoded fp32 scales d = scale*2**q in case G.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .datapath import OperandFacts, operand_facts, segment_length

NAN_E = 1 << 20          # exponent sentinel of a NaN scale (any E >= NAN_E // 2 means NaN)


def is_torch(x) -> bool:
    return type(x).__module__.startswith("torch")


@dataclass
class Prepared:
    """Integer view of A (rows m) and B (rows n), both [rows, J*L]; see module docstring."""

    kA: Any
    kB: Any
    spA: Any            # int8 [M, J*L] or None
    spB: Any            # int8 [N, J*L] or None
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

    @property
    def M(self) -> int:
        return int(self.kA.shape[0])

    @property
    def N(self) -> int:
        return int(self.kB.shape[0])

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
    return np.where(E >= NAN_E // 2, np.float32(np.nan), d).astype(np.float32)


def prepare(a, b) -> Prepared:
    """Validate the operand pair and build its integer view (matmul.md §1-§2)."""
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
    Kseg = J * L
    M = int(np.prod(ash[:-1]))
    N = bsh[1]

    def kview(q, f, role):
        k = q.int_values()
        codes = q.codes
        if role == "a":
            k = k.reshape(M, k.shape[-1])
            codes = codes.reshape(M, codes.shape[-1])
        else:
            k, codes = k.T, codes.T
        sp = _elem_specials(codes, F.elem_of(f.spec) if hasattr(F, "elem_of") else f.spec.elem) \
            if f.has_specials else None
        if sp is not None:
            k = k * (sp == 0)
        k, sp = _fit(k, Kseg, K), (None if sp is None else _fit(sp, Kseg, K))
        if sp is not None:
            sp = sp.to(__import__("torch").int8) if is_torch(sp) else sp.astype(np.int8)
        return k, sp

    kA, spA = kview(a, fa, "a")
    kB, spB = kview(b, fb, "b")
    case = "P" if fa.kind == "P" and fb.kind == "P" else "G"
    seg = np.arange(J)
    out = {}
    for name, q, f, rows in (("A", a, fa, M), ("B", b, fb, N)):
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
    return Prepared(kA, kB, spA, spB, case, L, J, K, out["EA"], out["EB"], out["dA"], out["dB"],
                    a.tensor_scale, b.tensor_scale, fa, fb, tuple(ash[:-1]))


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
