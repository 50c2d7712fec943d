"""QTensor: element codes + scale codes + spec + logical shape (docs/spec/formats.md §5), and bit packing."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .bits import code_dtype_bits, is_torch
from .spec import BlockSpec, ScaledIntSpec, elem_of

__all__ = ["QTensor", "PackedQTensor", "pack_bits", "unpack_bits", "code_dtype_bits", "is_torch", "elem_of"]


@dataclass(frozen=True, eq=False)
class QTensor:
    """Quantized tensor: unsigned codes (padded along ``axis``), scale codes and the spec.

    codes: element codes, the input shape with the block axis padded to a multiple of B.
    scales: scale codes, the input shape with the axis length replaced by the number of blocks
    (all ones per tensor); None for element formats. zero_points: uint8 like scales (asymmetric
    only). tensor_scale: fp32 scalar (NVFP4). shape / axis: logical shape and block axis.
    """

    spec: Any
    codes: Any
    scales: Any = None
    zero_points: Any = None
    tensor_scale: float | None = None
    shape: tuple = ()
    axis: int = -1

    # ---- decoding ----------------------------------------------------------------------------
    def dequantize(self):
        """fp32 values of the logical shape, in the codes' array library and device."""
        if is_torch(self.codes):
            from . import torch_ops

            return torch_ops.dequantize(self)
        from . import codec

        return codec.dequantize_numpy(self)

    def int_values(self):
        """Signed element integers k (int64, padded shape): element value = k * 2**quantum_exp
        (times the block / slice scale). Scaled ints: c - z."""
        from . import codec

        return codec.int_values(self)

    @property
    def T(self) -> "QTensor":
        """2-D transpose; the block axis is remapped (a [N, K] weight becomes a K x N operand)."""
        if len(self.shape) != 2:
            raise ValueError(f"QTensor.T needs a 2-D tensor, got shape {self.shape}")
        t = (lambda a: None if a is None else (a.T if not is_torch(a) else a.t()))
        return replace(self, codes=t(self.codes), scales=t(self.scales),
                       zero_points=t(self.zero_points), shape=(self.shape[1], self.shape[0]),
                       axis=1 - self.axis)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    # ---- footprint and packing ---------------------------------------------------------------
    @property
    def nbytes(self) -> int:
        """Bytes to store it: packed codes + packed scales + zero points + 4 for a tensor scale."""
        spec = self.spec
        n = math.ceil(_numel(self.codes) * spec.element_bits / 8)
        if self.scales is not None:
            n += math.ceil(_numel(self.scales) * spec.scale_bits / 8)
        if self.zero_points is not None:
            n += math.ceil(_numel(self.zero_points) * spec.element_bits / 8)
        if self.tensor_scale is not None:
            n += 4
        return n

    def pack(self) -> "PackedQTensor":
        """Pack codes, scales and zero points LSB-first into byte streams (docs/spec/formats.md §5)."""
        spec = self.spec
        codes = _to_numpy(self.codes)
        scales = None if self.scales is None else pack_bits(_to_numpy(self.scales), spec.scale_bits)
        zps = None if self.zero_points is None else pack_bits(_to_numpy(self.zero_points),
                                                              spec.element_bits)
        return PackedQTensor(spec, pack_bits(codes, spec.element_bits), codes.shape, scales,
                             None if self.scales is None else tuple(self.scales.shape), zps,
                             self.tensor_scale, self.shape, self.axis)

    @staticmethod
    def from_codes(spec, codes, scales=None, zero_points=None, tensor_scale=None, shape=None,
                   axis=-1) -> "QTensor":
        """Build a QTensor from raw codes (tests, hand-built operands). Ranges are validated;
        NaN/Inf codes are allowed. ``shape`` defaults to the codes' shape (no padding)."""
        from .registry import get

        spec = get(spec)
        lib_np = not is_torch(codes)
        codes = np.asarray(codes) if lib_np else codes
        if not lib_np and codes.dtype.is_floating_point:
            raise ValueError("from_codes: codes must be integers")
        cshape = tuple(codes.shape)
        shape = tuple(cshape if shape is None else shape)
        ndim = len(cshape)
        if not -ndim <= axis < max(ndim, 1):
            raise ValueError(f"from_codes: axis={axis} out of range for codes of shape {cshape}")
        axis = axis % ndim if ndim else 0
        _check_range("codes", codes, spec.element_bits)
        if isinstance(spec, (BlockSpec, ScaledIntSpec)):
            if scales is None:
                raise ValueError(f"from_codes: format {spec.name} needs scales")
            scales = np.asarray(scales) if lib_np and not is_torch(scales) else scales
            _check_range("scales", scales, spec.scale_bits)
        if zero_points is not None:
            zero_points = np.asarray(zero_points) if lib_np else zero_points
            _check_range("zero_points", zero_points, spec.element_bits)
        cdt = code_dtype_bits(spec.element_bits)
        codes = _as_uint(codes, cdt)
        if scales is not None:
            scales = _as_uint(scales, code_dtype_bits(spec.scale_bits))
        if zero_points is not None:
            zero_points = _as_uint(zero_points, 8)
        if isinstance(spec, BlockSpec) and spec.tensor_scale and tensor_scale is None:
            raise ValueError(f"from_codes: format {spec.name} needs tensor_scale")
        return QTensor(spec, codes, scales, zero_points,
                       None if tensor_scale is None else float(np.float32(tensor_scale)), shape, axis)


@dataclass(frozen=True)
class PackedQTensor:
    """Byte streams of a packed QTensor; ``unpack()`` restores it bit for bit (numpy codes)."""

    spec: Any
    code_bytes: np.ndarray
    codes_shape: tuple
    scale_bytes: np.ndarray | None
    scales_shape: tuple | None
    zp_bytes: np.ndarray | None
    tensor_scale: float | None
    shape: tuple
    axis: int

    @property
    def nbytes(self) -> int:
        n = self.code_bytes.size
        n += 0 if self.scale_bytes is None else self.scale_bytes.size
        n += 0 if self.zp_bytes is None else self.zp_bytes.size
        return n + (4 if self.tensor_scale is not None else 0)

    def unpack(self) -> QTensor:
        spec = self.spec
        ncodes = _prod(self.codes_shape)
        codes = unpack_bits(self.code_bytes, spec.element_bits, ncodes).reshape(self.codes_shape)
        codes = _as_uint(codes, code_dtype_bits(spec.element_bits))
        scales = zps = None
        if self.scale_bytes is not None:
            ns = _prod(self.scales_shape)
            scales = _as_uint(unpack_bits(self.scale_bytes, spec.scale_bits, ns).reshape(
                self.scales_shape), code_dtype_bits(spec.scale_bits))
        if self.zp_bytes is not None:
            zps = _as_uint(unpack_bits(self.zp_bytes, spec.element_bits, _prod(self.scales_shape))
                           .reshape(self.scales_shape), 8)
        return QTensor(spec, codes, scales, zps, self.tensor_scale, self.shape, self.axis)


def pack_bits(codes: np.ndarray, bits: int) -> np.ndarray:
    """Flatten in C order; bit k of code n goes to stream bit n*bits + k (LSB-first bytes)."""
    flat = np.ascontiguousarray(codes).reshape(-1).astype(np.uint64)
    n = flat.size
    bit_idx = np.arange(bits, dtype=np.uint64)
    stream = ((flat[:, None] >> bit_idx[None, :]) & np.uint64(1)).astype(np.uint8).reshape(-1)
    return np.packbits(stream, bitorder="little") if n else np.zeros(0, np.uint8)


def unpack_bits(data: np.ndarray, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: ``count`` codes as uint64."""
    stream = np.unpackbits(np.asarray(data, dtype=np.uint8), bitorder="little")[: count * bits]
    weights = np.uint64(1) << np.arange(bits, dtype=np.uint64)
    return (stream.reshape(count, bits).astype(np.uint64) * weights).sum(axis=1).astype(np.uint64)


def _prod(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _numel(a) -> int:
    return _prod(tuple(a.shape))


def _to_numpy(a) -> np.ndarray:
    if is_torch(a):
        import torch

        return a.detach().cpu().to(torch.int64).numpy()
    return np.asarray(a)


def _as_uint(a, bits: int):
    if is_torch(a):
        import torch

        return a.to({8: torch.uint8, 16: torch.uint16, 32: torch.uint32}[bits])
    return np.asarray(a).astype({8: np.uint8, 16: np.uint16, 32: np.uint32}[bits])


def _check_range(what: str, a, bits: int) -> None:
    arr = _to_numpy(a).astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= (1 << bits)):
        raise ValueError(f"from_codes: {what} must be in [0, {(1 << bits) - 1}] for {bits}-bit "
                         f"codes, got range [{arr.min()}, {arr.max()}]")
