"""Format specs: frozen, hashable dataclasses that say bit for bit how numbers are stored.

A ``FormatSpec`` is one of :class:`FloatElem` (element-only minifloat / IEEE formats),
:class:`BlockSpec` (MX, BFP, NVFP4) or :class:`ScaledIntSpec` (classic PTQ integers).
:class:`IntElem`, :class:`ExpScale` and :class:`FloatScale` are building blocks.
Semantics: ``docs/spec/formats.md`` §1.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Union


class FormatSpecError(ValueError):
    """An invalid field of a format spec (the message names the field)."""


class FormatNameError(ValueError):
    """An unknown or ill-formed format name."""


class NonFiniteError(ValueError):
    """A non-finite input where the format cannot represent it (BFP blocks, scaled integers)."""


class NonFiniteWarning(UserWarning):
    """NaN encoded by a format without a NaN code (it becomes -0)."""


class Rounding(str, enum.Enum):
    """Element rounding modes (docs/spec/formats.md §2)."""

    RNE = "rne"  # nearest, ties to even
    RNA = "rna"  # nearest, ties away from zero
    RTZ = "rtz"  # toward zero
    RDN = "rdn"  # toward -inf
    SR = "sr"  # reproducible stochastic rounding (Philox4x32-10)

    @property
    def code(self) -> int:
        """The integer the kernels compare against (``MODE_*``)."""
        return _ROUNDING_CODES[self]


# Integer codes of the enums, as the numba / torch / Triton kernels see them. numba freezes module
# constants at compile time, so a kernel that reads ``mode == MODE_SR`` costs what ``mode == 4`` did.
MODE_RNE, MODE_RNA, MODE_RTZ, MODE_RDN, MODE_SR = range(5)
_ROUNDING_CODES = {Rounding.RNE: MODE_RNE, Rounding.RNA: MODE_RNA, Rounding.RTZ: MODE_RTZ,
                   Rounding.RDN: MODE_RDN, Rounding.SR: MODE_SR}


class Rule(str, enum.Enum):
    """Shared-exponent rules (docs/spec/formats.md §1.4)."""

    FLOOR = "floor"
    CEIL = "ceil"
    RCEIL = "rceil"
    RATIO = "ratio"  # NVFP4 only

    @property
    def code(self) -> int:
        """The integer the kernels compare against (``RULE_*``)."""
        return _RULE_CODES[self]


RULE_FLOOR, RULE_CEIL, RULE_RCEIL, RULE_RATIO = range(4)
_RULE_CODES = {Rule.FLOOR: RULE_FLOOR, Rule.CEIL: RULE_CEIL, Rule.RCEIL: RULE_RCEIL,
               Rule.RATIO: RULE_RATIO}

# FloatElem.specials as an integer: which codes at the top exponent are Inf / NaN (docs/spec/formats.md §1.2)
SPECIALS_IEEE, SPECIALS_FN, SPECIALS_NONE = range(3)
SPECIALS_CODE = {"ieee": SPECIALS_IEEE, "fn": SPECIALS_FN, "none": SPECIALS_NONE}


def _check(cond: bool, field_name: str, value, valid: str) -> None:
    if not cond:
        raise FormatSpecError(f"invalid {field_name}={value!r}: {valid}")


def _check_int(value, field_name: str, lo: int, hi: int) -> None:
    _check(isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi,
           field_name, value, f"expected an integer in [{lo}, {hi}]")


def _coerce_rounding(spec, name: str = "rounding") -> None:
    value = getattr(spec, name)
    try:
        object.__setattr__(spec, name, Rounding(value))
    except ValueError:
        raise FormatSpecError(
            f"invalid {name}={value!r}: expected one of {[r.value for r in Rounding]}") from None


class _Derived:
    """Derived quantities shared by every spec (docs/spec/formats.md §1.6)."""

    @property
    def name(self) -> str:
        return format_name(self)

    def __str__(self) -> str:
        return self.name


# ---------------------------------------------------------------------------------------------
# Elements
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IntElem(_Derived):
    """Integer element: value = c * 2**ie (docs/spec/formats.md §1.1)."""

    bits: int
    signed: bool = True
    symmetric: bool = True
    encoding: str = "twos"
    implicit_exp: int | None = None

    def __post_init__(self):
        _check_int(self.bits, "bits", 2, 16)
        _check(self.encoding in ("twos", "signmag"), "encoding", self.encoding,
               "expected 'twos' or 'signmag'")
        _check(not (self.encoding == "signmag" and not self.symmetric), "symmetric", self.symmetric,
               "sign-magnitude encoding implies symmetric=True")
        _check(self.signed or self.encoding == "twos", "signed", self.signed,
               "unsigned elements use plain binary ('twos') encoding")
        if self.implicit_exp is not None:
            _check_int(self.implicit_exp, "implicit_exp", -64, 64)

    @property
    def ie(self) -> int:
        return self.implicit_exp if self.implicit_exp is not None else -(self.bits - 2)

    @property
    def c_max(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    @property
    def c_min(self) -> int:
        if not self.signed:
            return 0
        return -self.c_max if self.symmetric else -(1 << (self.bits - 1))

    @property
    def max_value(self) -> float:
        return float(self.c_max * 2.0 ** self.ie)

    @property
    def emax_elem(self) -> int:
        """floor(log2(max_value))."""
        return self.c_max.bit_length() - 1 + self.ie

    element_bits = property(lambda self: self.bits)
    significand_bits = property(lambda self: self.bits - 1 if self.signed else self.bits)
    exponent_bits = property(lambda self: 0)
    quantum_exp = property(lambda self: self.ie)
    is_integer = property(lambda self: True)
    is_block = property(lambda self: False)

    @property
    def k_max(self) -> int:
        """Largest |integer view| (units of the quantum)."""
        return max(self.c_max, -self.c_min)


@dataclass(frozen=True)
class FloatElem(_Derived):
    """Minifloat / IEEE element (docs/spec/formats.md §1.2). ``mbits`` counts stored mantissa bits only."""

    ebits: int
    mbits: int
    bias: int | None = None
    specials: str = "none"
    subnormals: bool = True
    saturate: bool = True
    rounding: Rounding = Rounding.RNE

    def __post_init__(self):
        _check_int(self.ebits, "ebits", 1, 8)
        _check_int(self.mbits, "mbits", 0, 23)
        if self.bias is None:
            object.__setattr__(self, "bias", (1 << (self.ebits - 1)) - 1)
        _check_int(self.bias, "bias", -64, 255)
        _check(self.specials in ("ieee", "fn", "none"), "specials", self.specials,
               "expected 'ieee', 'fn' or 'none'")
        _check(not (self.specials == "fn" and self.mbits == 0), "specials", self.specials,
               "'fn' needs at least one mantissa bit")
        if self.specials == "none" and not self.saturate:
            object.__setattr__(self, "saturate", True)  # formats without Inf/NaN always saturate
        _coerce_rounding(self)

    @property
    def emin(self) -> int:
        return 1 - self.bias

    @property
    def emax(self) -> int:
        top = (1 << self.ebits) - 1
        return top - 1 - self.bias if self.specials == "ieee" else top - self.bias

    @property
    def max_mantissa(self) -> int:
        """Largest mantissa field at the top exponent."""
        return (1 << self.mbits) - (2 if self.specials == "fn" else 1)

    @property
    def max_value(self) -> float:
        return float(((1 << self.mbits) + self.max_mantissa) * 2.0 ** (self.emax - self.mbits))

    @property
    def min_normal(self) -> float:
        return float(2.0 ** self.emin)

    @property
    def specials_code(self) -> int:
        """``specials`` as the kernels' integer (``SPECIALS_*``)."""
        return SPECIALS_CODE[self.specials]

    @property
    def nan_code(self) -> int | None:
        """Code of +NaN: the quiet NaN of IEEE formats, all ones for 'fn', None without NaN."""
        if self.specials == "ieee":
            return (((1 << self.ebits) - 1) << self.mbits) | (1 << max(self.mbits - 1, 0))
        if self.specials == "fn":
            return (1 << (self.ebits + self.mbits)) - 1
        return None

    @property
    def inf_code(self) -> int | None:
        """Code of +Inf (IEEE formats only)."""
        return ((1 << self.ebits) - 1) << self.mbits if self.specials == "ieee" else None

    @property
    def bits(self) -> int:
        return 1 + self.ebits + self.mbits

    element_bits = property(lambda self: self.bits)
    significand_bits = property(lambda self: self.mbits + 1)
    exponent_bits = property(lambda self: self.ebits)
    quantum_exp = property(lambda self: self.emin - self.mbits)
    is_integer = property(lambda self: False)
    is_block = property(lambda self: False)
    scale_bits = property(lambda self: 0)
    block_size = property(lambda self: None)

    @property
    def k_max(self) -> int:
        """Largest |integer view| in units of the quantum 2**quantum_exp."""
        return ((1 << self.mbits) + self.max_mantissa) << (self.emax - self.emin)

    def bits_per_element(self, shape=None) -> float:
        return float(self.bits)


# ---------------------------------------------------------------------------------------------
# Scales
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExpScale(_Derived):
    """Power-of-two scale 2**(code - bias) (docs/spec/formats.md §1.3)."""

    bits: int = 8
    bias: int = 127
    nan: bool = True

    def __post_init__(self):
        _check_int(self.bits, "scale bits", 2, 8)
        _check_int(self.bias, "scale bias", 0, 255)

    @property
    def e_min(self) -> int:
        return -self.bias

    @property
    def e_max(self) -> int:
        return (1 << self.bits) - (2 if self.nan else 1) - self.bias

    @property
    def nan_code(self) -> int | None:
        return (1 << self.bits) - 1 if self.nan else None


@dataclass(frozen=True)
class FloatScale(_Derived):
    """A scale stored as a minifloat (UE4M3 for NVFP4, fp16/bf16/fp32 for scaled ints)."""

    elem: FloatElem
    unsigned: bool = False

    def __post_init__(self):
        _check(isinstance(self.elem, FloatElem), "scale elem", self.elem, "expected a FloatElem")

    @property
    def bits(self) -> int:
        return self.elem.bits

    @property
    def nan_code(self) -> int | None:
        return self.elem.nan_code


E8M0 = ExpScale(8, 127, True)
BFP_SCALE = ExpScale(8, 127, False)

FP32_ELEM = FloatElem(8, 23, 127, "ieee", saturate=False)
BF16_ELEM = FloatElem(8, 7, 127, "ieee", saturate=False)
FP16_ELEM = FloatElem(5, 10, 15, "ieee", saturate=False)
E4M3 = FloatElem(4, 3, 7, "fn")
E5M2 = FloatElem(5, 2, 15, "ieee")
E3M2 = FloatElem(3, 2, 3, "none")
E2M3 = FloatElem(2, 3, 1, "none")
E2M1 = FloatElem(2, 1, 1, "none")
UE4M3 = FloatScale(E4M3, unsigned=True)

# NVFP4 (docs/spec/formats.md §3.4): block scale s_b = RNE_E4M3(amax_b / 6 / s_t) with the tensor scale
# s_t = amax / (6 * 448), so that the largest element times the largest block scale meets amax.
NVFP4_ELEM_MAX = E2M1.max_value                         # 6.0
NVFP4_SCALE_MAX = E4M3.max_value                        # 448.0
NVFP4_TENSOR_DIV = NVFP4_ELEM_MAX * NVFP4_SCALE_MAX     # 2688.0
NVFP4_SCALE_NAN = E4M3.nan_code                         # 0x7F: the block scale of a block with NaN/Inf


# ---------------------------------------------------------------------------------------------
# Block and scaled-integer formats
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BlockSpec(_Derived):
    """MX / BFP / NVFP4 block format: B elements along the reduction axis share one scale."""

    elem: Union[IntElem, FloatElem]
    block_size: int = 32
    scale: Union[ExpScale, FloatScale] = E8M0
    rule: Rule = Rule.FLOOR
    rounding: Rounding = Rounding.RNE
    input_ftz: bool = False
    tensor_scale: str | None = None

    def __post_init__(self):
        _check(isinstance(self.elem, (IntElem, FloatElem)), "elem", self.elem,
               "expected an IntElem or FloatElem")
        _check(isinstance(self.block_size, int) and not isinstance(self.block_size, bool)
               and self.block_size >= 1, "block_size", self.block_size, "expected a positive integer")
        _check(isinstance(self.scale, (ExpScale, FloatScale)), "scale", self.scale,
               "expected an ExpScale or FloatScale")
        try:
            object.__setattr__(self, "rule", Rule(self.rule))
        except ValueError:
            raise FormatSpecError(f"invalid rule={self.rule!r}: expected one of "
                                  f"{[r.value for r in Rule]}") from None
        _coerce_rounding(self)
        is_ratio = self.rule is Rule.RATIO
        _check(is_ratio == isinstance(self.scale, FloatScale), "rule", self.rule.value,
               "RATIO goes with a FloatScale (NVFP4); FLOOR/CEIL/RCEIL with an ExpScale")
        if is_ratio:
            _check(self.elem == E2M1 and self.scale == UE4M3, "elem", self.elem,
                   "the RATIO rule is defined for NVFP4 only (E2M1 elements, UE4M3 scales)")
        _check(self.tensor_scale in (None, "fp32"), "tensor_scale", self.tensor_scale,
               "expected None or 'fp32'")
        if isinstance(self.elem, IntElem):
            _check(self.elem.signed, "elem", self.elem, "block elements must be signed")

    element_bits = property(lambda self: self.elem.element_bits)
    significand_bits = property(lambda self: self.elem.significand_bits)
    exponent_bits = property(lambda self: self.elem.exponent_bits)
    scale_bits = property(lambda self: self.scale.bits)
    max_value = property(lambda self: self.elem.max_value)
    quantum_exp = property(lambda self: self.elem.quantum_exp)
    is_integer = property(lambda self: isinstance(self.elem, IntElem))
    is_block = property(lambda self: True)
    group_size = property(lambda self: self.block_size)

    @property
    def is_nvfp4(self) -> bool:
        return self.rule is Rule.RATIO

    def bits_per_element(self, shape=None) -> float:
        """Element bits + scale bits / B (+ 32 / numel with a tensor scale, when shape is given)."""
        bpe = self.element_bits + self.scale_bits / self.block_size
        if self.tensor_scale is not None and shape is not None:
            numel = _numel(shape)
            bpe += 32.0 / numel
        return float(bpe)


GRANULARITIES = ("tensor", "channel", "token", "group")


@dataclass(frozen=True)
class ScaledIntSpec(_Derived):
    """Classic PTQ integer with a float scale per tensor/channel/token/group (docs/spec/formats.md §1.5)."""

    bits: int
    granularity: str = "tensor"
    group_size: int | None = None
    symmetric: bool = True
    divisor: str = "max"
    scale: FloatScale = field(default_factory=lambda: FloatScale(FP16_ELEM))
    clip_ratio: float = 1.0
    rounding: Rounding = Rounding.RNE

    def __post_init__(self):
        _check_int(self.bits, "bits", 2, 8)
        _check(self.granularity in GRANULARITIES, "granularity", self.granularity,
               f"expected one of {list(GRANULARITIES)}")
        if self.granularity == "group":
            _check(isinstance(self.group_size, int) and not isinstance(self.group_size, bool)
                   and self.group_size >= 1, "group_size", self.group_size,
                   "expected a positive integer for granularity='group'")
        else:
            _check(self.group_size is None, "group_size", self.group_size,
                   "only granularity='group' takes a group_size")
        _check(self.divisor in ("max", "half"), "divisor", self.divisor, "expected 'max' or 'half'")
        _check(isinstance(self.scale, FloatScale), "scale", self.scale, "expected a FloatScale")
        _check(isinstance(self.clip_ratio, (int, float)) and 0.0 < self.clip_ratio <= 1.0,
               "clip_ratio", self.clip_ratio, "expected a number in (0, 1]")
        _coerce_rounding(self)

    @property
    def elem(self) -> IntElem:
        """The integer codes: full-range two's complement (symmetric) or unsigned (asymmetric)."""
        if self.symmetric:
            return IntElem(self.bits, signed=True, symmetric=False, implicit_exp=0)
        return IntElem(self.bits, signed=False, symmetric=False, implicit_exp=0)

    @property
    def divisor_value(self) -> float:
        """What the scale divides the range by: amax / divisor (symmetric: 2^(b-1)-1 for ``"max"``,
        (2^b-1)/2 for ``"half"``); (max - min) / (2^b - 1) when asymmetric (``divisor`` is unused)."""
        if not self.symmetric:
            return float((1 << self.bits) - 1)
        return float((1 << (self.bits - 1)) - 1) if self.divisor == "max" else ((1 << self.bits) - 1) / 2.0

    element_bits = property(lambda self: self.bits)
    significand_bits = property(lambda self: self.bits - 1 if self.symmetric else self.bits)
    exponent_bits = property(lambda self: 0)
    scale_bits = property(lambda self: self.scale.bits)
    quantum_exp = property(lambda self: 0)
    is_integer = property(lambda self: True)
    is_block = property(lambda self: False)

    @property
    def max_value(self) -> float:
        """Largest code magnitude (values are code * scale)."""
        return float((1 << (self.bits - 1)) - 1 if self.symmetric else (1 << self.bits) - 1)

    @property
    def block_size(self) -> int | None:
        return self.group_size

    @property
    def k_max(self) -> int:
        return (1 << (self.bits - 1)) if self.symmetric else (1 << self.bits) - 1

    def bits_per_element(self, shape=None, axis: int = -1) -> float:
        """b + scale_bits/B (+ b/B for the zero point). For tensor/channel/token B is the slice
        length, which needs ``shape``; without it this returns the large-slice limit b."""
        zp_bits = 0 if self.symmetric else self.bits
        if self.granularity == "group":
            slice_len = self.group_size
        elif shape is None:
            return float(self.bits)
        elif self.granularity == "tensor":
            slice_len = _numel(shape)
        else:
            slice_len = int(tuple(shape)[axis])
        return float(self.bits + (self.scale_bits + zp_bits) / slice_len)


def _numel(shape) -> int:
    n = 1
    for d in tuple(shape):
        n *= int(d)
    return n


FormatSpec = Union[FloatElem, BlockSpec, ScaledIntSpec]


def elem_of(spec):
    """The element spec that codes of ``spec`` are stored in."""
    if isinstance(spec, (FloatElem, IntElem)):
        return spec
    return spec.elem


# ---------------------------------------------------------------------------------------------
# Canonical names (docs/spec/formats.md §4): the inverse of registry.parse, kept here so that a spec knows
# its own name without importing the registry.
# ---------------------------------------------------------------------------------------------

_MINI = {"fp8_e4m3": E4M3, "fp8_e5m2": E5M2, "fp6_e3m2": E3M2, "fp6_e2m3": E2M3, "fp4_e2m1": E2M1}
_IEEE = {"bf16": BF16_ELEM, "fp16": FP16_ELEM, "fp32": FP32_ELEM}
_SCALE_TYPES = {"sf16": FP16_ELEM, "sbf16": BF16_ELEM, "sf32": FP32_ELEM}
_GRAN_SUFFIX = {"tensor": None, "channel": "ch", "token": "tok"}


def _round_suffix(spec) -> str:
    return "" if spec.rounding is Rounding.RNE else f"_{spec.rounding.value}"


def _elem_key(elem: FloatElem) -> str | None:
    for key, base in _MINI.items():
        if (base.ebits, base.mbits, base.bias, base.specials, base.subnormals) == (
                elem.ebits, elem.mbits, elem.bias, elem.specials, elem.subnormals):
            return key
    return None


def format_name(spec) -> str:
    """Canonical name of a spec; specs that no name expresses get a descriptive repr."""
    name = _canonical(spec)
    if name is None:
        return f"<{type(spec).__name__} {spec!r}>"
    return name


def _canonical(spec) -> str | None:
    if isinstance(spec, FloatElem):
        for key, base in _IEEE.items():
            if spec == base:
                return key
        key = _elem_key(spec)
        if key is None:
            return None
        return key + ("" if spec.saturate or spec.specials == "none" else "_nosat") + _round_suffix(spec)
    if isinstance(spec, BlockSpec):
        if spec.is_nvfp4:
            return "nvfp4" + _round_suffix(spec) if spec.block_size == 16 and spec.tensor_scale else None
        if spec.tensor_scale is not None:
            return None
        elem = spec.elem
        if isinstance(elem, IntElem) and elem.encoding == "signmag":
            if spec.scale != BFP_SCALE or elem.ie != -(elem.bits - 1) or spec.input_ftz:
                return None
            if spec.rule not in (Rule.CEIL, Rule.FLOOR):
                return None
            return (f"bfp{elem.bits}" + ("" if spec.block_size == 16 else f"_b{spec.block_size}")
                    + ("_floor" if spec.rule is Rule.FLOOR else "") + _round_suffix(spec))
        if isinstance(elem, IntElem):
            if elem.ie != -(elem.bits - 2) or elem.encoding != "twos":
                return None
            base, full = f"mxint{elem.bits}", not elem.symmetric
        else:
            key = _elem_key(elem)
            if key is None or not elem.saturate or elem.rounding is not Rounding.RNE:
                return None
            base, full = "mx" + key, False
        if not isinstance(spec.scale, ExpScale) or not spec.scale.nan:
            return None
        if spec.scale != E8M0:
            if spec.scale.bias != (1 << (spec.scale.bits - 1)) - 1:
                return None
            se = f"_se{spec.scale.bits}"
        else:
            se = ""
        return (base + ("" if spec.block_size == 32 else f"_b{spec.block_size}")
                + ("" if spec.rule is Rule.FLOOR else f"_{spec.rule.value}") + se
                + ("_full" if full else "") + ("_ftz" if spec.input_ftz else "") + _round_suffix(spec))
    if isinstance(spec, ScaledIntSpec):
        stype = {v: k for k, v in _SCALE_TYPES.items()}.get(spec.scale.elem)
        if stype is None or spec.scale.unsigned:
            return None
        gran = f"_g{spec.group_size}" if spec.granularity == "group" else (
            "" if spec.granularity == "tensor" else f"_{_GRAN_SUFFIX[spec.granularity]}")
        clip = ""
        if spec.clip_ratio != 1.0:
            pct = round(spec.clip_ratio * 100)
            if abs(pct / 100.0 - spec.clip_ratio) > 1e-12:
                return None
            clip = f"_c{pct}"
        return (f"int{spec.bits}{gran}" + ("" if spec.symmetric else "_asym")
                + ("_hr" if spec.divisor == "half" else "") + clip
                + ("" if stype == "sf16" else f"_{stype}") + _round_suffix(spec))
    return None
