"""The one place where the cost model reads ``hwsim.formats`` specs.

:func:`describe` turns a format name or spec into a :class:`FormatInfo` of plain integers
(element bits, significand, exponent range, block size, scale and zero-point bits, ...), using
only the documented spec accessors (docs/spec/formats.md §1.6: ``element_bits``,
``significand_bits``, ``exponent_bits``, ``scale_bits``, ``block_size``, ``is_block``,
``is_integer``, ``bits_per_element``, and the ``elem`` / ``scale`` / ``granularity`` fields).
Names are never parsed here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

KINDS = ("fp", "int", "block_int", "block_fp")


@dataclass(frozen=True)
class FormatInfo:
    """Integer view of a format spec (everything the hardware model needs).

    kind: ``fp`` (element minifloat / IEEE), ``int`` (scaled integer: tensor/channel/token/group
    scales), ``block_int`` (MXINT, BFP), ``block_fp`` (MXFP, NVFP4).
    sig_bits: multiplier operand width (int: b incl. sign; float: m+1 without sign).
    granularity: ``block``/``group``/``channel``/``token``/``tensor`` or None (element formats).
    group: elements per scale along K (block or group size), None for channel/token/tensor.
    """

    name: str
    kind: str
    element_bits: int
    sig_bits: int
    exp_bits: int = 0
    e_min: int = 0
    e_max: int = 0
    block_size: int | None = None
    scale_bits: int = 0
    scale_pow2: bool = True
    scale_float: tuple[int, int] | None = None  # (e, m) of a minifloat scale
    zp_bits: int = 0
    granularity: str | None = None
    tensor_scale_bits: int = 0
    spec: Any = field(default=None, compare=False, hash=False, repr=False)
    #: integer elements stored as sign and magnitude (BFP), not two's complement
    signmag: bool = False

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind={self.kind!r}; valid: {KINDS}")
        if self.element_bits < 1 or self.sig_bits < 1:
            raise ValueError(f"format {self.name!r}: element_bits and sig_bits must be >= 1")

    @property
    def is_float(self) -> bool:
        return self.kind in ("fp", "block_fp")

    @property
    def is_block(self) -> bool:
        return self.kind in ("block_int", "block_fp")

    @property
    def man_bits(self) -> int:
        return self.sig_bits - 1

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

    def bpe(self, k: int | None = None) -> float:
        """Bits per element incl. amortised scales and zero points (no padding, no byte rounding).

        For channel/token scales the slice length ``k`` is needed (without it: the b + 0 limit);
        per-tensor scales are counted as 0 (their 16/32 bits amortise over the tensor).
        """
        if self.granularity in ("block", "group"):
            return self.element_bits + (self.scale_bits + self.zp_bits) / self.block_size
        if self.granularity in ("channel", "token") and k:
            return self.element_bits + (self.scale_bits + self.zp_bits) / k
        return float(self.element_bits)

    def nbytes(self, rows: int, k: int) -> int:
        """Packed bytes of a rows x k tensor quantized along k (docs/spec/formats.md §5 footprint)."""
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


def _float_range(elem) -> tuple[int, int, int, int]:
    """(e, m, e_min, e_max) of a FloatElem-like object."""
    e, m = int(elem.ebits), int(elem.mbits)
    bias = int(getattr(elem, "bias", None) if getattr(elem, "bias", None) is not None else 2 ** (e - 1) - 1)
    specials = getattr(elem, "specials", "ieee")
    emax = 2 ** e - 2 - bias if specials == "ieee" else 2 ** e - 1 - bias
    emin = 1 - bias
    if e == 0:
        emin = emax = 0
    return e, m, emin, emax


def _scale_info(scale) -> tuple[bool, tuple[int, int] | None]:
    if scale is None:
        return True, None
    inner = getattr(scale, "elem", None)
    if inner is not None and hasattr(inner, "ebits"):
        return False, (int(inner.ebits), int(inner.mbits))
    return True, None


def _resolve(fmt: Any):
    if isinstance(fmt, str):
        try:
            import hwsim.formats as F
        except ImportError as exc:  # pragma: no cover - only before hwsim.formats exists
            raise ValueError(f"format {fmt!r}: hwsim.formats is not available to resolve names ({exc})") from exc
        return F.get(fmt)
    return fmt


@lru_cache(maxsize=4096)
def _describe_cached(fmt: Any) -> FormatInfo:
    return _describe(fmt)


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
    except TypeError:  # unhashable duck-typed object
        return _describe(fmt)


def _describe(fmt: Any) -> FormatInfo:
    spec = _resolve(fmt)
    name = getattr(spec, "name", None) or str(fmt)
    if getattr(spec, "is_block", False):
        elem = spec.elem
        scale_bits = int(spec.scale_bits)
        pow2, sfloat = _scale_info(getattr(spec, "scale", None))
        ts = 32 if getattr(spec, "tensor_scale", None) is not None else 0
        B = int(spec.block_size)
        if hasattr(elem, "ebits"):
            e, m, emin, emax = _float_range(elem)
            return FormatInfo(name, "block_fp", int(spec.element_bits), m + 1, e, emin, emax, B, scale_bits,
                              pow2, sfloat, 0, "block", ts, spec)
        b = int(spec.element_bits)
        signmag = getattr(elem, "encoding", "twos") == "signmag"
        return FormatInfo(name, "block_int", b, b, 0, 0, 0, B, scale_bits, pow2, sfloat, 0, "block", ts, spec,
                          signmag)
    if hasattr(spec, "granularity"):  # ScaledIntSpec
        b = int(spec.bits)
        gran = spec.granularity
        zp = 0 if getattr(spec, "symmetric", True) else b
        pow2, sfloat = _scale_info(getattr(spec, "scale", None))
        B = int(spec.group_size) if gran == "group" else None
        return FormatInfo(name, "int", b, b, 0, 0, 0, B, int(spec.scale_bits), pow2, sfloat, zp, gran, 0, spec)
    if hasattr(spec, "ebits"):  # FloatElem
        e, m, emin, emax = _float_range(spec)
        return FormatInfo(name, "fp", 1 + e + m, m + 1, e, emin, emax, spec=spec)
    if hasattr(spec, "bits") and hasattr(spec, "signed"):  # bare IntElem
        b = int(spec.bits)
        return FormatInfo(name, "int", b, b, granularity="tensor", spec=spec)
    raise ValueError(f"format={fmt!r} is not a recognised format spec (block, scaled int, float or int element)")


def fp_info(name: str, e: int, m: int) -> FormatInfo:
    """A FormatInfo for an IEEE-style float (used for internal fp16/fp32 datapaths)."""
    bias = 2 ** (e - 1) - 1
    return FormatInfo(name, "fp", 1 + e + m, m + 1, e, 1 - bias, 2 ** e - 2 - bias)


FP16 = fp_info("fp16", 5, 10)
FP32 = fp_info("fp32", 8, 23)
BF16 = fp_info("bf16", 8, 7)
