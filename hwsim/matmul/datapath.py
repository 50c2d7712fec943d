"""Accumulator and datapath specs of the block-scaled dot-product core (docs/spec/matmul.md §1, §5, §12).

Every width here is read from the format specs of ``hwsim.formats``; nothing is retyped.

The accumulator is defined here once, for the exact core (``hwsim.matmul``), the cost model
(``hwsim.cost_models``: adder, register, saturation logic, rescaler widths), QLinear's exact mode,
recipes and study files. :func:`parse_accumulator` is the one parser of its strings
(``docs/matmul.md``, "The accumulator grammar"):

==========================================================  =========================================
string                                                       spec
==========================================================  =========================================
``fp32`` | ``fp16`` | ``bf16``                               ``FloatAcc(format)``
``exact``                                                    ``ExactAcc()``
``fixed:W[:F][:saturate|:wrap][:truncate|:rne]``             ``FixedAcc(W, F=W//2, overflow, rounding)``
``int<W>`` | ``window(<W>)`` | ``<W>`` (or the int W)        ``FixedAcc(W, W//2, "wrap", "truncate")``
==========================================================  =========================================

``str(spec)`` is the canonical string and ``parse_accumulator(str(spec)) == spec``.
"""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass
from typing import Any, Union

OUT_FLOATS = ("fp32", "bf16", "fp16", "fp64")


class Overflow(str, enum.Enum):
    """What a fixed-point accumulator does when a sum leaves its W-bit range (docs/spec/matmul.md §5)."""

    SATURATE = "saturate"  # clamp to [-2**(W-1), 2**(W-1) - 1]; hardware: a W-bit clamp mux
    WRAP = "wrap"          # reduce modulo 2**W; hardware: a plain two's-complement register

    @property
    def code(self) -> int:
        """The integer the kernels compare against (``OVF_*``)."""
        return _OVF_CODES[self]

    def __str__(self) -> str:
        return self.value


class AccRounding(str, enum.Enum):
    """How a product is aligned to the accumulator's 2**-F grid (docs/spec/matmul.md §5)."""

    TRUNCATE = "truncate"  # drop low bits of the two's-complement value: floor, toward -inf
    RNE = "rne"            # round half to even

    @property
    def code(self) -> int:
        """The integer the kernels compare against (``ACC_RND_*``)."""
        return _RND_CODES[self]

    def __str__(self) -> str:
        return self.value


OVF_SATURATE, OVF_WRAP = range(2)
ACC_RND_TRUNCATE, ACC_RND_RNE = range(2)
_OVF_CODES = {Overflow.SATURATE: OVF_SATURATE, Overflow.WRAP: OVF_WRAP}
_RND_CODES = {AccRounding.TRUNCATE: ACC_RND_TRUNCATE, AccRounding.RNE: ACC_RND_RNE}

_OVERFLOWS = tuple(o.value for o in Overflow)
_ROUNDINGS = tuple(r.value for r in AccRounding)
#: float accumulators (``hwsim.formats`` element names); the exact core runs ``fp32`` only
FLOAT_ACCUMULATORS = ("fp32", "fp16", "bf16")
#: widths W of a fixed-point accumulator; the exact core's int64 register holds up to CORE_MAX_WIDTH
WIDTH_RANGE = (2, 128)
CORE_MAX_WIDTH = 62
#: the valid forms, as every error message lists them
ACCUMULATOR_FORMS = ("'fp32' | 'fp16' | 'bf16' (float), 'exact', 'fixed:W[:F][:saturate|:wrap][:truncate|:rne]' "
                     "(F defaults to W//2, saturate, truncate), or the integer-register aliases 'int<W>', "
                     "'window(<W>)', '<W>' (= 'fixed:W:W//2:wrap'); W in 2..128")


@dataclass(frozen=True)
class FloatAcc:
    """Float accumulator starting at +0: acc <- RN(acc + P^_j), segments in increasing K.

    ``format`` names an ``hwsim.formats`` float element (``fp32``, ``fp16``, ``bf16``); its widths
    are read from that spec. The exact core implements ``fp32`` only; the cost model all three.
    """

    format: str = "fp32"

    def __post_init__(self):
        f = self.format.strip().lower() if isinstance(self.format, str) else self.format
        if f not in FLOAT_ACCUMULATORS:
            raise ValueError(f"FloatAcc: format={self.format!r} is invalid; expected one of {FLOAT_ACCUMULATORS}")
        object.__setattr__(self, "format", f)

    kind = property(lambda self: "float")

    @property
    def spec(self):
        """The ``hwsim.formats`` FloatElem of the accumulator."""
        return _formats().get(self.format)

    @property
    def exponent_bits(self) -> int:
        return int(self.spec.exponent_bits)

    @property
    def significand_bits(self) -> int:
        return int(self.spec.significand_bits)

    @property
    def man_bits(self) -> int:
        """Stored mantissa bits (significand_bits - 1)."""
        return self.significand_bits - 1

    @property
    def width(self) -> int:
        """Register bits (the format's element bits)."""
        return int(self.spec.element_bits)

    @property
    def name(self) -> str:
        return self.format

    def __str__(self) -> str:
        return self.name


#: the fp32 accumulator, the exact core's default (``Fp32Acc()`` is ``FloatAcc("fp32")``)
Fp32Acc = FloatAcc


@dataclass(frozen=True)
class FixedAcc:
    """W-bit two's-complement fixed-point accumulator with F fractional bits (docs/spec/matmul.md §5).

    t <- rnd(P_j * 2**F) with ``rounding`` in {"truncate" (toward -inf), "rne"};
    A <- ovf(A + t) with ``overflow`` in {"saturate", "wrap"}; output RNE32(A * 2**-F).
    ``frac_bits`` None means W // 2. W is 2..128; the exact core runs W <= 62 (int64 register).
    The cost model charges W (adder, register, rescaler input) and saturation (a W-bit clamp mux).
    """

    width: int
    frac_bits: int | None = None
    overflow: Overflow = Overflow.SATURATE
    rounding: AccRounding = AccRounding.TRUNCATE

    def __post_init__(self):
        lo, hi = WIDTH_RANGE
        if not isinstance(self.width, int) or isinstance(self.width, bool) or not lo <= self.width <= hi:
            raise ValueError(f"FixedAcc: width={self.width!r} is invalid; expected an int in {lo}..{hi}")
        if self.frac_bits is None:
            object.__setattr__(self, "frac_bits", self.width // 2)
        if not isinstance(self.frac_bits, int) or isinstance(self.frac_bits, bool):
            raise ValueError(f"FixedAcc: frac_bits={self.frac_bits!r} is invalid; expected an int")
        for fld, enum_cls in (("overflow", Overflow), ("rounding", AccRounding)):
            v = getattr(self, fld)
            try:
                object.__setattr__(self, fld, enum_cls(v.strip().lower() if isinstance(v, str) else v))
            except ValueError:
                valid = tuple(e.value for e in enum_cls)
                raise ValueError(f"FixedAcc: {fld}={v!r} is invalid; expected one of {valid}") from None

    kind = property(lambda self: "fixed")

    @property
    def saturates(self) -> bool:
        return self.overflow is Overflow.SATURATE

    @property
    def name(self) -> str:
        """Canonical string: ``int<W>`` for the plain integer register (F = W//2, wrap, truncate),
        else ``fixed:W:F`` plus ``:wrap`` / ``:rne`` where they differ from saturate / truncate."""
        if self.frac_bits == self.width // 2 and not self.saturates and self.rounding is AccRounding.TRUNCATE:
            return f"int{self.width}"
        s = f"fixed:{self.width}:{self.frac_bits}"
        if not self.saturates:
            s += ":wrap"
        if self.rounding is AccRounding.RNE:
            s += ":rne"
        return s

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class ExactAcc:
    """Exact (dyadic rational) accumulator; the value is rounded once at the end (float64 by default).
    A reference for accumulator error: it has no hardware, so the cost model refuses it."""

    kind = property(lambda self: "exact")

    @property
    def name(self) -> str:
        return "exact"

    def __str__(self) -> str:
        return self.name


Accumulator = Union[FloatAcc, FixedAcc, ExactAcc]
ACCUMULATOR_TYPES = (FloatAcc, FixedAcc, ExactAcc)

_INT_ALIAS = re.compile(r"(?:int|window\()?([+-]?\d+)\)?")


def _invalid(acc: Any, why: str = "") -> ValueError:
    return ValueError(f"accumulator={acc!r} is invalid{': ' + why if why else ''}; valid: {ACCUMULATOR_FORMS}")


def _width(acc: Any, text: str) -> int:
    try:
        w = int(text)
    except ValueError:
        raise _invalid(acc, f"width {text!r} is not an integer") from None
    lo, hi = WIDTH_RANGE
    if not lo <= w <= hi:
        raise _invalid(acc, f"width {w} is outside {lo}..{hi}")
    return w


def parse_accumulator(acc: Any) -> Accumulator:
    """The accumulator spec of ``acc``: a string of the grammar (module docstring; case and blanks
    ignored), an int W (= ``int<W>``), an ``hwsim.formats`` float element spec (fp32, fp16, bf16),
    or a spec object (returned as is). Anything else raises a ValueError naming the value and
    listing the valid forms."""
    if isinstance(acc, ACCUMULATOR_TYPES):
        return acc
    if isinstance(acc, int) and not isinstance(acc, bool):
        return FixedAcc(_width(acc, str(acc)), None, Overflow.WRAP)
    if not isinstance(acc, str):
        F = _formats()
        if isinstance(acc, F.FloatElem) and acc.name in FLOAT_ACCUMULATORS:
            return FloatAcc(acc.name)
        raise _invalid(acc, f"a {type(acc).__name__} is not an accumulator")
    s = re.sub(r"\s+", "", acc).lower()
    if s in FLOAT_ACCUMULATORS:
        return FloatAcc(s)
    if s == "exact":
        return ExactAcc()
    parts = s.split(":")
    if parts[0] == "fixed":
        if len(parts) < 2 or not parts[1]:
            raise _invalid(acc, "'fixed' needs a width W")
        w = _width(acc, parts[1])
        rest = parts[2:]
        frac = None
        if rest and re.fullmatch(r"[+-]?\d+", rest[0]):
            frac = int(rest.pop(0))
        opts: dict[str, str] = {}
        for p in rest:
            fld = "overflow" if p in _OVERFLOWS else "rounding" if p in _ROUNDINGS else None
            if fld is None:
                hint = " (F comes right after W)" if re.fullmatch(r"[+-]?\d+", p) else ""
                raise _invalid(acc, f"unknown option {p!r}{hint}" if p else "empty option")
            if fld in opts:
                raise _invalid(acc, f"{fld} given twice ({opts[fld]!r} and {p!r})")
            opts[fld] = p
        return FixedAcc(w, frac, opts.get("overflow", "saturate"), opts.get("rounding", "truncate"))
    m = _INT_ALIAS.fullmatch(s)
    if m and s.startswith("window(") == s.endswith(")"):
        return FixedAcc(_width(acc, m.group(1)), None, Overflow.WRAP)
    raise _invalid(acc)


def core_accumulator(acc: Any) -> Accumulator:
    """:func:`parse_accumulator`, refusing what the exact core cannot run: float accumulators other
    than fp32, fixed-point registers wider than CORE_MAX_WIDTH bits (the cost model takes both)."""
    spec = parse_accumulator(acc)
    if isinstance(spec, FloatAcc) and spec.format != "fp32":
        raise ValueError(f"accumulator={spec.name!r}: the exact core accumulates floats in fp32 only "
                         f"({spec.name} accumulators are costed by hwsim.cost_models); use 'fp32', "
                         f"'fixed:W[:F]...' or 'exact'")
    if isinstance(spec, FixedAcc) and spec.width > CORE_MAX_WIDTH:
        raise ValueError(f"accumulator={spec.name!r}: the exact core's fixed-point register holds "
                         f"2..{CORE_MAX_WIDTH} bits (an int64), got W={spec.width}")
    return spec


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
