"""The one place where the cost model reads ``hwsim.formats`` specs: a thin reader.

:func:`describe` wraps a format name or spec in a :class:`FormatInfo`, whose every width is the
spec's own accessor under the spec's own name (docs/spec/formats.md §1.6): ``element_bits``,
``significand_bits``, ``exponent_bits``, ``emin`` / ``emax`` of the float element, ``scale_bits``,
``block_size``, ``bits_per_element``, and the ``elem`` / ``scale`` / ``granularity`` /
``tensor_scale`` fields. The cost model keeps no second notion of these: what it adds is only
what hardware needs on top (the unit family ``kind``, the multiplier operand width
``operand_bits``, the packed footprint ``nbytes`` as ``QTensor.nbytes`` counts it). Names are
never parsed here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any

KINDS = ("fp", "int", "block_int", "block_fp")


def _formats():
    import hwsim.formats as F

    return F


@dataclass(frozen=True)
class FormatInfo:
    """A format spec as the hardware model reads it.

    ``spec``: the ``hwsim.formats`` spec (BlockSpec, ScaledIntSpec, FloatElem or IntElem).
    ``block``: a block size overriding the spec's, for a dot-product unit that reduces over a
    smaller block than the format's (``units._common_block``; None: the spec's).

    kind: ``fp`` (element minifloat / IEEE), ``int`` (scaled integer: tensor/channel/token/group
    scales), ``block_int`` (MXINT, BFP), ``block_fp`` (MXFP, NVFP4).
    """

    spec: Any
    block: int | None = None

    def __post_init__(self):
        F = _formats()
        if not isinstance(self.spec, (F.BlockSpec, F.ScaledIntSpec, F.FloatElem, F.IntElem)):
            raise ValueError(f"format={self.spec!r} is not a recognised format spec (block, scaled int, float or "
                             f"int element)")

    # ---- what the spec says, under its names ----------------------------------------------------
    @cached_property
    def name(self) -> str:
        return self.spec.name

    @cached_property
    def kind(self) -> str:
        F = _formats()
        if isinstance(self.spec, F.BlockSpec):
            return "block_int" if self.spec.is_integer else "block_fp"
        return "fp" if isinstance(self.spec, F.FloatElem) else "int"

    @cached_property
    def element_bits(self) -> int:
        return int(self.spec.element_bits)

    @cached_property
    def significand_bits(self) -> int:
        """The spec's significand bits (floats: m + 1; integers: the magnitude bits)."""
        return int(self.spec.significand_bits)

    @cached_property
    def exponent_bits(self) -> int:
        return int(self.spec.exponent_bits)

    @cached_property
    def _float_elem(self):
        F = _formats()
        e = self.spec.elem if isinstance(self.spec, F.BlockSpec) else self.spec
        return e if isinstance(e, F.FloatElem) else None

    @cached_property
    def emin(self) -> int:
        """Smallest normal exponent of a float element (the spec's ``emin``); 0 for integers."""
        return int(self._float_elem.emin) if self._float_elem is not None else 0

    @cached_property
    def emax(self) -> int:
        """Largest exponent of a float element (the spec's ``emax``); 0 for integers."""
        return int(self._float_elem.emax) if self._float_elem is not None else 0

    @cached_property
    def block_size(self) -> int | None:
        """Elements per scale along K: the block (BlockSpec), the group (group-scaled ints), else None."""
        if self.block is not None:
            return self.block
        F = _formats()
        if isinstance(self.spec, F.BlockSpec):
            return int(self.spec.block_size)
        if isinstance(self.spec, F.ScaledIntSpec) and self.spec.granularity == "group":
            return int(self.spec.group_size)
        return None

    @cached_property
    def scale_bits(self) -> int:
        return int(getattr(self.spec, "scale_bits", 0))   # a bare IntElem has no scale

    @cached_property
    def granularity(self) -> str | None:
        """``block``/``group``/``channel``/``token``/``tensor``, or None for float elements."""
        F = _formats()
        if isinstance(self.spec, F.BlockSpec):
            return "block"
        if isinstance(self.spec, F.ScaledIntSpec):
            return self.spec.granularity
        return "tensor" if isinstance(self.spec, F.IntElem) else None

    @cached_property
    def scale_pow2(self) -> bool:
        """True for a power-of-two scale (ExpScale: an exponent adder), or no scale."""
        return not isinstance(getattr(self.spec, "scale", None), _formats().FloatScale)

    @cached_property
    def scale_float(self) -> tuple[int, int] | None:
        """(exponent bits, stored mantissa bits) of a minifloat scale (FloatScale), else None."""
        sc = getattr(self.spec, "scale", None)
        return (int(sc.elem.ebits), int(sc.elem.mbits)) if isinstance(sc, _formats().FloatScale) else None

    @cached_property
    def zp_bits(self) -> int:
        """Zero-point bits per scale: an asymmetric scaled int stores one at element width."""
        sym = getattr(self.spec, "symmetric", True) or not isinstance(self.spec, _formats().ScaledIntSpec)
        return 0 if sym else self.element_bits

    @cached_property
    def tensor_scale_bits(self) -> int:
        """Bits of a per-tensor scale (NVFP4's ``tensor_scale`` format), 0 without one."""
        ts = getattr(self.spec, "tensor_scale", None)
        return 0 if ts is None else int(_formats().get(ts).element_bits)

    @cached_property
    def signmag(self) -> bool:
        """Integer elements stored as sign and magnitude (BFP), not two's complement."""
        return getattr(getattr(self.spec, "elem", None), "encoding", "twos") == "signmag"

    def bits_per_element(self, k: int | None = None) -> float:
        """The spec's ``bits_per_element`` for a row of k elements along the scaled axis: element bits +
        amortised scale and zero-point bits. Per-tensor scales count 0 (their bits amortise over the
        tensor; ``nbytes`` counts them); channel/token scales need ``k`` (without it: the b + 0 limit)."""
        F = _formats()
        if isinstance(self.spec, F.ScaledIntSpec) and self.spec.granularity in ("channel", "token") and k:
            return self.spec.bits_per_element(shape=(int(k),), axis=-1)
        if isinstance(self.spec, F.ScaledIntSpec) and self.spec.granularity != "group":
            return self.spec.bits_per_element()   # tensor, or channel/token without k: b
        if isinstance(self.spec, F.IntElem):
            return float(self.element_bits)
        return self.spec.bits_per_element()

    # ---- what hardware adds ----------------------------------------------------------------------
    @cached_property
    def operand_bits(self) -> int:
        """Width of this format's multiplier operand: an integer's element bits (two's complement,
        sign included), a float's significand (the sign handled apart)."""
        return self.element_bits if self.kind in ("int", "block_int") else self.significand_bits

    @property
    def man_bits(self) -> int:
        """Stored mantissa bits of a float (significand_bits - 1)."""
        return self.operand_bits - 1

    @property
    def is_float(self) -> bool:
        return self.kind in ("fp", "block_fp")

    @property
    def is_block(self) -> bool:
        return self.kind in ("block_int", "block_fp")

    @property
    def group(self) -> int | None:
        return self.block_size if self.granularity in ("block", "group") else None

    @property
    def dynamic_scale(self) -> bool:
        """True when an activation in this format needs run-time amax hardware."""
        return self.granularity in ("block", "group", "token")

    def scales_per_row(self, k: int) -> int:
        """Scale (and zero-point) entries per row of length k along the quantize axis."""
        if self.granularity in ("block", "group"):
            return math.ceil(k / self.block_size)
        if self.granularity in ("channel", "token"):
            return 1
        return 0

    def padded(self, k: int) -> int:
        if self.granularity in ("block", "group"):
            return math.ceil(k / self.block_size) * self.block_size
        return k

    def nbytes(self, rows: int, k: int) -> int:
        """Packed bytes of a rows x k tensor quantized along k, counted as ``QTensor.nbytes`` counts
        them (docs/spec/formats.md §5): padded codes, scales, zero points, the tensor scale."""
        n_codes = rows * self.padded(k)
        if self.granularity == "tensor":
            n_scales = 1
        else:
            n_scales = rows * self.scales_per_row(k)
        nb = math.ceil(n_codes * self.element_bits / 8) + math.ceil(n_scales * self.scale_bits / 8)
        if self.zp_bits:
            nb += math.ceil(n_scales * self.zp_bits / 8)
        nb += self.tensor_scale_bits // 8
        return nb


def _resolve(fmt: Any):
    try:
        return _formats().get(fmt)
    except ValueError:
        raise
    except Exception as exc:  # e.g. an unhashable or foreign object
        raise ValueError(f"format={fmt!r} is not a recognised format spec (block, scaled int, float or int "
                         f"element): {exc}") from None


@lru_cache(maxsize=4096)
def _describe_cached(fmt: Any) -> FormatInfo:
    return FormatInfo(_resolve(fmt))


#: what a high-precision (not quantized) operand is costed as
HIGH_PRECISION_FORMAT = "fp16"
#: format names that mean "not quantized" (as in ``hwsim.quant``); costed as HIGH_PRECISION_FORMAT
UNQUANTIZED_NAMES = ("none", "hp", "bypass")


def is_unquantized(fmt: Any) -> bool:
    """True for the names that mean "not quantized" ('none', 'hp', 'bypass'; any case)."""
    return isinstance(fmt, str) and fmt.strip().lower() in UNQUANTIZED_NAMES


def describe(fmt: Any) -> FormatInfo:
    """FormatInfo of a format name, a hwsim.formats spec, or a FormatInfo (returned unchanged).

    'none' (not quantized, see ``UNQUANTIZED_NAMES``) is costed as ``HIGH_PRECISION_FORMAT``."""
    if isinstance(fmt, FormatInfo):
        return fmt
    if fmt is None:
        raise ValueError("format=None: give a format name (e.g. 'mxint4'), 'none' (not quantized) or a "
                         "hwsim.formats spec")
    if is_unquantized(fmt):
        fmt = HIGH_PRECISION_FORMAT
    try:
        return _describe_cached(fmt)
    except TypeError:  # unhashable object: resolved without the cache
        return FormatInfo(_resolve(fmt))


#: the internal float datapaths (rescalers, dequantizers, the fp16 vector unit), read from hwsim.formats
FP16 = describe("fp16")
FP32 = describe("fp32")
BF16 = describe("bf16")
