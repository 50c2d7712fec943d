"""quantize / dequantize / fake_quant: argument validation, then dispatch to a codec.

numpy inputs go to the numba codec (``codec.py``), torch tensors to the torch codec
(``torch_ops.py``, imported on first use), which compute the same bits. Both return
:class:`~.codec.Encoded` fields; the ``QTensor`` is built here.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from . import codec
from .bits import is_torch
from .qtensor import QTensor
from .registry import get
from .spec import BlockSpec, Rounding, ScaledIntSpec

# ---- validation ----------------------------------------------------------------------------


def resolve(fmt, rounding, seed):
    """(spec, Rounding, (seed_lo, seed_hi)) after validating the arguments."""
    spec = get(fmt)
    if rounding is not None:
        try:
            rounding = Rounding(rounding.lower() if isinstance(rounding, str) else rounding)
        except ValueError:
            raise ValueError(f"invalid rounding={rounding!r}: expected one of "
                             f"{[r.value for r in Rounding]} or None") from None
        spec = replace(spec, rounding=rounding)
    mode = spec.rounding
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer, float)):
            raise ValueError(f"invalid seed={seed!r}: expected a non-negative integer < 2**64")
        if isinstance(seed, float):
            if not math.isfinite(seed) or seed != int(seed):
                raise ValueError(f"invalid seed={seed!r}: expected a finite non-negative integer")
            seed = int(seed)
        if not 0 <= int(seed) < 2 ** 64:
            raise ValueError(f"invalid seed={seed!r}: expected an integer in [0, 2**64)")
    if mode is Rounding.SR and seed is None:
        raise ValueError("rounding='sr' (stochastic rounding) needs seed=<unsigned 64-bit int>")
    s = int(seed or 0)
    return spec, mode, (s & 0xFFFFFFFF, (s >> 32) & 0xFFFFFFFF)


def normalize_axis(axis, ndim: int, spec) -> int:
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise ValueError(f"invalid axis={axis!r}: expected an integer")
    if ndim == 0:
        if _needs_axis(spec):
            raise ValueError(f"format {spec.name} needs at least a 1-D input (got a scalar)")
        return 0
    if not -ndim <= axis < ndim:
        raise ValueError(f"invalid axis={axis} for an input with {ndim} dimensions: expected "
                         f"an integer in [{-ndim}, {ndim - 1}]")
    return int(axis) % ndim


def _needs_axis(spec) -> bool:
    return isinstance(spec, BlockSpec) or (isinstance(spec, ScaledIntSpec)
                                           and spec.granularity != "tensor")


def _check_numpy_input(x) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind != "f" and x.dtype.name != "bfloat16":
        raise ValueError(f"invalid input dtype {x.dtype}: expected float16, bfloat16, float32 or "
                         "float64")
    return x


def _check_torch_input(x, spec, axis) -> int:
    """Validate a torch input; its normalised block axis."""
    if not x.dtype.is_floating_point:
        raise ValueError(f"invalid input dtype {x.dtype}: expected float16, bfloat16, float32 or "
                         "float64")
    _check_size(x, spec)
    return normalize_axis(axis, x.dim(), spec)


def _check_size(x, spec):
    if _numel(x) == 0 and (isinstance(spec, (BlockSpec, ScaledIntSpec))):
        raise ValueError(f"empty input of shape {tuple(x.shape)}: format {spec.name} needs at "
                         "least one element to form a block/slice")


# ---- public entry points -------------------------------------------------------------------


def quantize(x, fmt, axis: int = -1, *, rounding=None, seed=None) -> QTensor:
    """Encode floats into a QTensor (numpy -> numba codec, torch -> torch codec, same device).

    axis: the block axis (the GEMM reduction axis K). rounding: overrides the format's own
    (None = the name's suffix, RNE by default). seed: unsigned 64-bit seed, required for 'sr'."""
    spec, mode, seeds = resolve(fmt, rounding, seed)
    if is_torch(x):
        from . import torch_ops

        ax = _check_torch_input(x, spec, axis)
        return QTensor(spec, *torch_ops.quantize(x, spec, ax, mode, seeds), shape=tuple(x.shape), axis=ax)
    x = _check_numpy_input(x)
    _check_size(x, spec)
    ax = normalize_axis(axis, x.ndim, spec)
    return QTensor(spec, *codec.quantize_numpy(x, spec, ax, mode, seeds), shape=tuple(x.shape), axis=ax)


def block_scales(x, fmt, axis: int = -1) -> np.ndarray:
    """The shared-exponent scale codes ``quantize(x, fmt, axis).scales`` holds for an MX/BFP
    format, without encoding the elements (a fraction of the cost; the scales of these formats
    do not depend on the rounding). numpy input, uint8 codes of shape x.shape with the block axis
    replaced by its number of blocks (padded tail included)."""
    spec = get(fmt)
    if not isinstance(spec, BlockSpec) or spec.is_nvfp4:
        raise ValueError(f"block_scales needs an MX/BFP block format (shared power-of-two scales), "
                         f"got {spec.name}; use quantize(x, fmt).scales")
    if is_torch(x):
        raise ValueError("block_scales takes a numpy array (torch tensors: quantize(x, fmt).scales)")
    x = _check_numpy_input(x)
    _check_size(x, spec)
    return codec.block_scales_numpy(x, spec, normalize_axis(axis, x.ndim, spec))


def dequantize(q: QTensor):
    """fp32 values of a QTensor (same array library and device as its codes)."""
    return q.dequantize()


def fake_quant(x, fmt, axis: int = -1, *, rounding=None, seed=None, out=None):
    """dequantize(quantize(x)) in the input's array type; torch inputs get a straight-through
    gradient. numpy MX/BFP/element formats run a fused numba kernel (no codes materialised).

    out: optional float32 numpy array of x's shape (numpy inputs only) that receives the result,
    as in numpy's ufuncs; it is returned. A C-contiguous ``out`` with the block axis last is
    written in place by the kernel, with no temporary."""
    spec, mode, seeds = resolve(fmt, rounding, seed)
    if is_torch(x):
        if out is not None:
            raise ValueError("out= is supported for numpy inputs only (torch inputs keep autograd: "
                             "use out.copy_(fake_quant(x, ...)))")
        from . import torch_ops

        return torch_ops.fake_quant(x, spec, _check_torch_input(x, spec, axis), mode, seeds)
    x = _check_numpy_input(x)
    _check_size(x, spec)
    ax = normalize_axis(axis, x.ndim, spec)
    _check_out(out, x.shape)
    return codec.fake_quant_numpy(x, spec, ax, mode, seeds, out)


def _check_out(out, shape):
    if out is None:
        return
    if not isinstance(out, np.ndarray) or out.dtype != np.float32 or out.shape != tuple(shape):
        got = f"{type(out).__name__} {getattr(out, 'dtype', '')} {getattr(out, 'shape', '')}"
        raise ValueError(f"invalid out= ({got.strip()}): expected a float32 numpy array of shape "
                         f"{tuple(shape)}")
    if not out.flags.writeable:
        raise ValueError("invalid out=: the array is read-only")


def _numel(x) -> int:
    return x.numel() if is_torch(x) else x.size
