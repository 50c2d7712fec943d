"""Accumulator and datapath specs of the block-scaled dot-product core (docs/spec/matmul.md §1, §5, §12).

Every width here is read from the format specs of ``hwsim.formats``; nothing is retyped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Union

_OVERFLOWS = ("saturate", "wrap")
_ROUNDINGS = ("truncate", "rne")
OUT_FLOATS = ("fp32", "bf16", "fp16", "fp64")


@dataclass(frozen=True)
class Fp32Acc:
    """fp32 accumulator starting at +0: acc <- RNE32(acc + P^_j), segments in increasing K."""

    @property
    def name(self) -> str:
        return "fp32"


@dataclass(frozen=True)
class FixedAcc:
    """W-bit two's-complement fixed-point accumulator with F fractional bits (docs/spec/matmul.md §5).

    t <- rnd(P_j * 2**F) with ``rounding`` in {"truncate" (toward -inf), "rne"};
    A <- ovf(A + t) with ``overflow`` in {"saturate", "wrap"}; output RNE32(A * 2**-F).
    """

    width: int
    frac_bits: int
    overflow: str = "saturate"
    rounding: str = "truncate"

    def __post_init__(self):
        if not isinstance(self.width, int) or isinstance(self.width, bool) or not 2 <= self.width <= 62:
            raise ValueError(f"FixedAcc: width={self.width!r} is invalid; expected an int in 2..62")
        if not isinstance(self.frac_bits, int) or isinstance(self.frac_bits, bool):
            raise ValueError(f"FixedAcc: frac_bits={self.frac_bits!r} is invalid; expected an int")
        if self.overflow not in _OVERFLOWS:
            raise ValueError(f"FixedAcc: overflow={self.overflow!r} is invalid; expected one of {_OVERFLOWS}")
        if self.rounding not in _ROUNDINGS:
            raise ValueError(f"FixedAcc: rounding={self.rounding!r} is invalid; expected one of {_ROUNDINGS}")

    @property
    def name(self) -> str:
        s = f"fixed:{self.width}:{self.frac_bits}"
        if self.overflow == "wrap":
            s += ":wrap"
        if self.rounding == "rne":
            s += ":rne"
        return s


@dataclass(frozen=True)
class ExactAcc:
    """Exact (dyadic rational) accumulator; the value is rounded once at the end (float64 by default)."""

    @property
    def name(self) -> str:
        return "exact"


Accumulator = Union[Fp32Acc, FixedAcc, ExactAcc]


def parse_accumulator(acc: Any) -> Accumulator:
    """``"fp32"``, ``"exact"``, ``"fixed:W:F[:wrap][:rne]"`` or an accumulator spec (returned as is)."""
    if isinstance(acc, (Fp32Acc, FixedAcc, ExactAcc)):
        return acc
    valid = "'fp32', 'exact', 'fixed:W:F[:wrap|:saturate][:rne|:truncate]' or an Fp32Acc/FixedAcc/ExactAcc"
    if not isinstance(acc, str):
        raise ValueError(f"accumulator={acc!r} is invalid; expected {valid}")
    s = acc.strip().lower()
    if s == "fp32":
        return Fp32Acc()
    if s == "exact":
        return ExactAcc()
    parts = s.split(":")
    if parts[0] == "fixed" and len(parts) >= 3:
        try:
            w, f = int(parts[1]), int(parts[2])
        except ValueError:
            raise ValueError(f"accumulator={acc!r} is invalid; expected {valid}") from None
        ovf, rnd = "saturate", "truncate"
        for p in parts[3:]:
            if p in _OVERFLOWS:
                ovf = p
            elif p in _ROUNDINGS:
                rnd = p
            else:
                raise ValueError(f"accumulator={acc!r}: unknown option {p!r}; expected {valid}")
        return FixedAcc(w, f, ovf, rnd)
    raise ValueError(f"accumulator={acc!r} is invalid; expected {valid}")


# ---------------------------------------------------------------------------------------------
# Per-operand static facts, all read from the format spec
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OperandFacts:
    """What the datapath needs to know about one operand's format.

    kind: "P" (power-of-two scale: ExpScale) or "G" (float scale: FloatScale).
    block: block/group length along K, or None when one scale covers the whole K slice.
    q: element quantum exponent; k_max: max |integer view|; k_min: most negative integer view.
    """

    spec: Any
    kind: str
    block: int | None
    q: int
    k_max: int
    k_min: int
    has_specials: bool
    tensor_scale: bool
    is_twos: bool = False

    @property
    def int8_exact(self) -> bool:
        """The integer view fits int8 (Triton tensor-core path, docs/spec/matmul.md §8.3)."""
        # k_max may be 128 only through the negative end (two's complement -2**(b-1))
        pos_ok = self.k_max <= 127 or (self.k_max == 128 and self.k_min == -128 and self.is_twos)
        return pos_ok and self.k_min >= -128 and not self.has_specials


def _formats():
    import hwsim.formats as F

    return F


def operand_facts(fmt: Any, which: str = "a") -> OperandFacts:
    """Static facts of a block or scaled-integer format; ValueError for element-only formats."""
    F = _formats()
    spec = F.get(fmt)
    if isinstance(spec, F.BlockSpec):
        elem = spec.elem
        kind = "P" if isinstance(spec.scale, F.ExpScale) else "G"
        k_max = int(elem.k_max)
        if isinstance(elem, F.IntElem):
            k_min = -k_max if elem.encoding == "signmag" else -(1 << (elem.bits - 1))
            specials = False
        else:
            k_min = -k_max
            specials = elem.specials != "none"
        twos = isinstance(elem, F.IntElem) and elem.encoding == "twos"
        return OperandFacts(spec, kind, int(spec.block_size), int(spec.quantum_exp), k_max, k_min,
                            specials, spec.tensor_scale is not None, twos)
    if isinstance(spec, F.ScaledIntSpec):
        block = spec.group_size if spec.granularity == "group" else None
        k_max = int(spec.k_max)
        k_min = -k_max if not spec.symmetric else -(1 << (spec.bits - 1))
        return OperandFacts(spec, "G", block, 0, k_max, k_min, False, False, spec.symmetric)
    raise ValueError(
        f"operand {which}: format {spec.name!r} is element-only (no block or slice scale); the exact "
        f"core needs a BlockSpec (MX, BFP, NVFP4) or a ScaledIntSpec. Use mode='fake' for it.")


def segment_length(block_a: int | None, block_b: int | None, K: int) -> int:
    """L = min(B_a, B_b) (docs/spec/matmul.md §2); a whole-K scale counts as an unbounded block."""
    blocks = [b for b in (block_a, block_b) if b is not None]
    if not blocks:
        return max(int(K), 1)
    lo, hi = min(blocks), max(blocks)
    if hi % lo:
        raise ValueError(f"block sizes along K do not line up: operand a has B={block_a}, operand b has "
                         f"B={block_b}; the larger must be a multiple of the smaller")
    return lo


@dataclass(frozen=True)
class DatapathSpec:
    """A (a_fmt x b_fmt) block dot-product datapath with its accumulator and output format.

    This is what ``cost_models`` reads (docs/spec/matmul.md §12): element widths, the segment length L,
    the exact segment-sum width, the scale kinds and the accumulator.
    """

    a_fmt: Any
    b_fmt: Any
    accumulator: Any = "fp32"
    out_format: Any = None

    def __post_init__(self):
        F = _formats()
        object.__setattr__(self, "a_fmt", F.get(self.a_fmt))
        object.__setattr__(self, "b_fmt", F.get(self.b_fmt))
        object.__setattr__(self, "accumulator", parse_accumulator(self.accumulator))
        out = self.out_format
        if out is None:
            out = "fp64" if isinstance(self.accumulator, ExactAcc) else "fp32"
        if isinstance(out, str) and out.lower() in OUT_FLOATS:
            out = out.lower()
            if out == "fp64" and not isinstance(self.accumulator, ExactAcc):
                raise ValueError(f"out_format='fp64' needs accumulator='exact', got {self.accumulator.name!r}")
        else:
            try:
                out_spec = F.get(out)
            except ValueError as exc:
                raise ValueError(f"out_format={out!r} is invalid; expected one of {OUT_FLOATS} or a "
                                 f"block/scaled-int format: {exc}") from None
            if not isinstance(out_spec, (F.BlockSpec, F.ScaledIntSpec)):
                raise ValueError(f"out_format={out!r} is invalid; expected one of {OUT_FLOATS} or a "
                                 f"block/scaled-int format")
            out = out_spec
        object.__setattr__(self, "out_format", out)
        # validates both operands (element-only formats raise)
        self.facts_a, self.facts_b  # noqa: B018

    @property
    def facts_a(self) -> OperandFacts:
        return operand_facts(self.a_fmt, "a")

    @property
    def facts_b(self) -> OperandFacts:
        return operand_facts(self.b_fmt, "b")

    @property
    def case(self) -> str:
        """"P" when both scales are powers of two, else "G" (docs/spec/matmul.md §4)."""
        return "P" if self.facts_a.kind == "P" and self.facts_b.kind == "P" else "G"

    def segment_length(self, K: int | None = None) -> int | None:
        """L for a reduction length K (None when both scales are whole-K and K is not given)."""
        fa, fb = self.facts_a, self.facts_b
        if fa.block is None and fb.block is None and K is None:
            return None
        return segment_length(fa.block, fb.block, K or 0)

    def max_segment_sum(self, K: int | None = None) -> int:
        """Bound L * k_max,A * k_max,B on |S_j| (docs/spec/matmul.md §3)."""
        L = self.segment_length(K)
        if L is None:
            raise ValueError("segment length depends on K for whole-K scales; pass K")
        return L * self.facts_a.k_max * self.facts_b.k_max

    def sum_bits(self, K: int | None = None) -> int:
        """Exact segment-sum width incl. sign: ceil(log2(L*k_max,A*k_max,B + 1)) + 1 (docs/spec/matmul.md §12)."""
        return math.ceil(math.log2(self.max_segment_sum(K) + 1)) + 1

    @property
    def scale_kinds(self) -> tuple[str, str]:
        """("exp"|"float", "exp"|"float") for the A and B scales (E8M0 adder vs float multiplier)."""
        return tuple("exp" if f.kind == "P" else "float" for f in (self.facts_a, self.facts_b))

    @property
    def name(self) -> str:
        out = self.out_format if isinstance(self.out_format, str) else self.out_format.name
        return f"{self.a_fmt.name}x{self.b_fmt.name}/{self.accumulator.name}->{out}"
