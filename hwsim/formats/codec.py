"""The numpy codec: encode and decode with the numba kernels (docs/spec/formats.md §2-§3).

``api.py`` validates the arguments and dispatches here for numpy inputs (``torch_ops`` for torch
tensors). The encoders return :class:`Encoded` fields, from which ``api`` builds the ``QTensor``;
the decoders read a QTensor's fields, so this module does not import ``qtensor``.
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from typing import Any, NamedTuple

import numpy as np

from . import numba_kernels as K
from .bits import POW2_F32, code_dtype, is_torch
from .spec import (E4M3, NVFP4_ELEM_MAX, NVFP4_SCALE_MAX, NVFP4_SCALE_NAN, NVFP4_TENSOR_DIV,
                   BlockSpec, FloatElem, IntElem, NonFiniteError, NonFiniteWarning, Rounding, Rule,
                   ScaledIntSpec, elem_of)


class Encoded(NamedTuple):
    """What an encoder returns: the QTensor fields besides spec, shape and axis."""

    codes: Any
    scales: Any = None
    zero_points: Any = None
    tensor_scale: float | None = None


def fake_quant_numpy(x: np.ndarray, spec, ax: int, mode: Rounding, seeds, out=None) -> np.ndarray:
    """dequantize(quantize(x)) for a validated numpy input (``out``: see api.fake_quant). MX/BFP
    and element formats run a fused numba kernel (no codes materialised)."""
    if isinstance(spec, BlockSpec) and not spec.is_nvfp4:
        xb, meta = _rows_view(x, ax)
        direct = out is not None and ax == x.ndim - 1 and out.flags.c_contiguous
        res = out.reshape(xb.shape) if direct else np.empty(xb.shape, np.float32)
        _run_block(xb, spec, mode, seeds, meta, out=res)
        res = out if direct else _from_rows(res, meta)
    elif isinstance(spec, FloatElem):
        xb = np.ascontiguousarray(x.astype(np.float32, copy=False)).reshape(-1).view(np.uint32)
        direct = out is not None and out.flags.c_contiguous
        res = out.reshape(-1) if direct else np.empty(xb.shape, np.float32)
        _run_elem(xb, spec, mode, seeds, None, res)
        res = out if direct else res.reshape(x.shape)
    else:
        res = decode_numpy(spec, quantize_numpy(x, spec, ax, mode, seeds), tuple(x.shape), ax)
    if out is not None and res is not out:
        np.copyto(out, res)
        return out
    return res


# ---- encoders ------------------------------------------------------------------


def _rows_view(x: np.ndarray, ax: int):
    """fp32 bits as [rows, L] with the block axis last, and what is needed to undo it."""
    x32 = x.astype(np.float32, copy=False)
    moved = np.moveaxis(x32, ax, -1)
    L = moved.shape[-1]
    rows = int(np.prod(moved.shape[:-1], dtype=np.int64))
    post = int(np.prod(x.shape[ax + 1:], dtype=np.int64))
    xb = np.ascontiguousarray(moved).reshape(rows, L).view(np.uint32)
    return xb, (moved.shape[:-1], ax, post, L)


def _from_rows(a: np.ndarray, meta, last=None):
    lead, ax, _, L = meta
    a = a.reshape(tuple(lead) + (a.shape[-1] if last is None else last,))
    return np.moveaxis(a, -1, ax)


def _rceil_ratios(xb, spec: BlockSpec) -> np.ndarray:
    """RNE32(amax / max_elem) bits per block [rows, nb] for ``Rule.RCEIL`` (a [1, 1] dummy for
    the other rules)."""
    if spec.rule is not Rule.RCEIL:
        return np.zeros((1, 1), np.uint32)
    B = spec.block_size
    rows, L = xb.shape
    nblk = -(-L // B)
    pad = np.zeros((rows, nblk * B), np.float32)
    pad[:, :L] = np.abs(xb.view(np.float32))
    with np.errstate(invalid="ignore", over="ignore"):
        amax = np.where(np.isfinite(pad), pad, 0).reshape(rows, nblk, B).max(axis=2)
        return (amax / np.float32(spec.elem.max_value)).astype(np.float32).view(np.uint32)


def _block_args(xb, spec: BlockSpec):
    """(B, emax_elem, rule code, rq, sc_min, sc_max), the shared-exponent arguments of the block
    kernels, and the scale's NaN code (-1: none)."""
    elem = spec.elem
    sc = spec.scale
    emax_elem = elem.emax_elem if isinstance(elem, IntElem) else elem.emax
    sc_nan = -1 if sc.nan_code is None else sc.nan_code
    return (spec.block_size, emax_elem, spec.rule.code, _rceil_ratios(xb, spec), sc.e_min, sc.e_max), sc_nan


def _raise_non_finite(xb, spec, meta):
    xf = _from_rows(xb.view(np.float32), meta)
    idx = int(np.flatnonzero(~np.isfinite(xf))[0])
    raise NonFiniteError(f"input tensor has a non-finite value at flat index {idx} "
                         f"({xf.reshape(-1)[idx]}); format {spec.name} has no NaN scale code")


def _run_block(xb, spec: BlockSpec, mode, seeds, meta, codes=None, scales=None, out=None):
    """Encode blocks into codes/scales, or (codes None) fake-quantize them into out."""
    (B, emax_elem, rule, rq, e_min, e_max), sc_nan = _block_args(xb, spec)
    common = (B, K.elem_params(spec.elem), emax_elem, rule, rq, e_min, e_max)
    if codes is None:
        bad = K.block_fake(xb, xb.view(np.float32), *common, sc_nan, spec.input_ftz, mode.code,
                           seeds[0], seeds[1], meta[2], out, POW2_F32)
    else:
        bad = K.block_codec(xb, *common, spec.scale.bias, sc_nan, spec.input_ftz, mode.code, seeds[0],
                            seeds[1], meta[2], codes, scales)
    if bad:
        _raise_non_finite(xb, spec, meta)


def block_scales_numpy(x: np.ndarray, spec: BlockSpec, ax: int) -> np.ndarray:
    """The scale codes ``quantize_numpy`` gives an MX/BFP block spec (block axis ``ax``, same
    layout as ``Encoded.scales``), without encoding the elements."""
    xb, meta = _rows_view(x, ax)
    args, sc_nan = _block_args(xb, spec)
    scales = np.empty((xb.shape[0], -(-xb.shape[1] // spec.block_size)), np.uint8)
    if K.block_scales(xb, *args, spec.scale.bias, sc_nan, spec.input_ftz, scales):
        _raise_non_finite(xb, spec, meta)
    return _from_rows(scales, meta)


def _run_elem(xb, elem: FloatElem, mode, seeds, codes, out, idx=None):
    P = K.elem_params(elem)
    lost = K.elem_codec(xb, P, mode.code, seeds[0], seeds[1],
                        codes if codes is not None else np.zeros(1, np.uint8),
                        out if out is not None else np.zeros(1, np.float32),
                        codes is not None, out is not None, POW2_F32,
                        np.zeros(0, np.int64) if idx is None else idx)
    if lost:
        warnings.warn(f"{lost} NaN input(s) encoded as -0: format {elem.name} has no NaN code",
                      NonFiniteWarning, stacklevel=3)


def encode_floats(values: np.ndarray, elem: FloatElem, mode: Rounding = Rounding.RNE,
                  saturate: bool = True) -> np.ndarray:
    """Element codes (int64) of fp32 values in a minifloat, e.g. a scale cast."""
    if saturate and not elem.saturate:
        elem = replace(elem, saturate=True)
    xb = np.ascontiguousarray(values, dtype=np.float32).reshape(-1).view(np.uint32)
    codes = np.empty(xb.shape, np.int64)
    _run_elem(xb, elem, mode, (0, 0), codes, None)
    return codes.reshape(np.shape(values))


def decode_elem(codes, elem) -> np.ndarray:
    """fp32 values of element codes (IntElem values in units of 2**ie, FloatElem exact)."""
    c = np.ascontiguousarray(codes, dtype=np.int64)
    out = np.empty(c.size, np.float32)
    K.elem_decode(c.reshape(-1), K.elem_params(elem), out, POW2_F32)
    return out.reshape(c.shape)


def quantize_numpy(x: np.ndarray, spec, ax: int, mode: Rounding, seeds) -> Encoded:
    shape = tuple(x.shape)
    if isinstance(spec, FloatElem):
        xb = np.ascontiguousarray(x.astype(np.float32)).reshape(-1).view(np.uint32)
        codes = np.empty(xb.shape, code_dtype(spec.bits))
        _run_elem(xb, spec, mode, seeds, codes, None)
        return Encoded(codes.reshape(shape))
    if isinstance(spec, BlockSpec) and not spec.is_nvfp4:
        xb, meta = _rows_view(x, ax)
        B = spec.block_size
        nblk = -(-xb.shape[1] // B)
        codes = np.empty((xb.shape[0], nblk * B), code_dtype(spec.element_bits))
        scales = np.empty((xb.shape[0], nblk), np.uint8)
        _run_block(xb, spec, mode, seeds, meta, codes, scales)
        return Encoded(_from_rows(codes, meta), _from_rows(scales, meta))
    if isinstance(spec, BlockSpec):
        return _nvfp4_numpy(x, spec, ax, mode, seeds)
    return _scaled_int_numpy(x, spec, ax, mode, seeds)


def _slices(x: np.ndarray, ax: int, G: int | None):
    """fp32 [rows, nslices, G] view (zero-padded) of the moved input, plus meta."""
    xb, meta = _rows_view(x, ax)
    xf = xb.view(np.float32)
    rows, L = xf.shape
    G = L if G is None else G
    ns = -(-L // G)
    pad = np.zeros((rows, ns * G), np.float32)
    pad[:, :L] = xf
    return pad.reshape(rows, ns, G), meta


def _scale_cast(s: np.ndarray, elem: FloatElem) -> tuple[np.ndarray, np.ndarray]:
    """RNE-saturating cast of fp32 scales; zero becomes the smallest normal. (codes, fp32)."""
    codes = encode_floats(s, elem)
    dec = decode_elem(codes, elem)
    zero = dec == 0
    if zero.any():
        tiny = encode_floats(np.array([elem.min_normal], np.float32), elem)[0]
        codes = np.where(zero, tiny, codes)
        dec = decode_elem(codes, elem)
    return codes, dec


def _scaled_int_numpy(x: np.ndarray, spec: ScaledIntSpec, ax: int, mode, seeds) -> Encoded:
    shape = tuple(x.shape)
    if not np.all(np.isfinite(x)):
        idx = int(np.flatnonzero(~np.isfinite(np.asarray(x, np.float32)))[0])
        raise NonFiniteError(f"input tensor has a non-finite value at flat index {idx}; scaled "
                             f"integer format {spec.name} cannot represent it")
    x = x.reshape(1) if x.ndim == 0 else x
    G = spec.group_size if spec.granularity == "group" else None
    blk, meta = _slices(x, ax, G)
    rows, ns, g = blk.shape
    b = spec.bits
    clip = np.float32(spec.clip_ratio)
    if spec.granularity == "tensor":
        red = lambda f, a: np.broadcast_to(f(a, axis=(0, 1, 2), keepdims=True)[:, :, 0], (rows, ns))
    else:
        red = lambda f, a: f(a, axis=2)
    if spec.symmetric:
        a = red(np.max, np.abs(blk)).astype(np.float32)
        if spec.clip_ratio != 1.0:
            a = (a * clip).astype(np.float32)
        s = (a / np.float32(spec.divisor_value)).astype(np.float32)
        s_codes, s_dec = _scale_cast(s, spec.scale.elem)
        z = np.zeros((rows, ns), np.int64)
        lo, hi = -(1 << (b - 1)), (1 << (b - 1)) - 1
    else:
        lo_v = np.minimum(red(np.min, blk), np.float32(0)).astype(np.float32)
        hi_v = np.maximum(red(np.max, blk), np.float32(0)).astype(np.float32)
        if spec.clip_ratio != 1.0:
            lo_v, hi_v = (lo_v * clip).astype(np.float32), (hi_v * clip).astype(np.float32)
        s = ((hi_v - lo_v).astype(np.float32) / np.float32(spec.divisor_value)).astype(np.float32)
        s_codes, s_dec = _scale_cast(s, spec.scale.elem)
        z = np.clip(np.rint((-lo_v / s_dec).astype(np.float32)), 0, (1 << b) - 1).astype(np.int64)
        lo, hi = 0, (1 << b) - 1
    y = (blk / s_dec[:, :, None]).astype(np.float32).reshape(rows, ns * g)
    codes = np.empty((rows, ns * g), np.int64)
    K.round_scaled(y.view(np.uint32), mode.code, seeds[0], seeds[1], meta[2], meta[3],
                   g, z, lo, hi, codes)
    codes = codes & ((1 << b) - 1)
    keep = ns * g if G is not None else meta[3]
    codes = _from_rows(codes[:, :keep].astype(np.uint8), meta)
    sdt = code_dtype(spec.scale_bits)
    if spec.granularity == "tensor":
        sc = np.full((1,) * len(shape), s_codes.reshape(-1)[0], sdt)
        zp = None if spec.symmetric else np.full((1,) * len(shape), z.reshape(-1)[0], np.uint8)
    else:
        sc = _from_rows(s_codes.astype(sdt), meta)
        zp = None if spec.symmetric else _from_rows(z.astype(np.uint8), meta)
    if len(shape) == 0:
        codes, sc = codes.reshape(()), sc.reshape(())
        zp = None if zp is None else zp.reshape(())
    return Encoded(codes, sc, zp)


def _nvfp4_numpy(x: np.ndarray, spec: BlockSpec, ax: int, mode, seeds) -> Encoded:
    blk, meta = _slices(x, ax, spec.block_size)
    rows, nblk, B = blk.shape
    finite = np.isfinite(blk)
    absb = np.where(finite, np.abs(blk), np.float32(0)).astype(np.float32)
    t = absb.max() if absb.size else np.float32(0)
    s_t = np.float32(1.0) if t == 0 else np.float32(np.float32(t) / np.float32(NVFP4_TENSOR_DIV))
    amax = absb.max(axis=2)
    r = ((amax / np.float32(NVFP4_ELEM_MAX)).astype(np.float32) / s_t).astype(np.float32)
    sb_codes = encode_floats(np.minimum(r, np.float32(NVFP4_SCALE_MAX)), E4M3)
    sb = decode_elem(sb_codes, E4M3)
    d = (s_t * sb).astype(np.float32)
    bad_blk = ~finite.all(axis=2)
    zero_blk = (d == 0) | bad_blk
    with np.errstate(divide="ignore", invalid="ignore"):
        y = np.where(zero_blk[:, :, None], np.float32(0), blk / d[:, :, None]).astype(np.float32)
    idx = _logical_index(meta, rows, nblk * B)
    y = y.reshape(-1)
    codes = np.empty(y.shape, np.int64)
    _run_elem(np.ascontiguousarray(y).view(np.uint32), spec.elem, mode, seeds, codes, None,
              idx=idx.reshape(-1))
    codes = codes.reshape(rows, nblk, B)
    codes[zero_blk] = 0
    codes = codes.reshape(rows, nblk * B)
    L = meta[3]
    codes[:, L:] = 0
    sb_codes = np.where(bad_blk, NVFP4_SCALE_NAN, sb_codes)
    return Encoded(_from_rows(codes.astype(np.uint8), meta),
                   _from_rows(sb_codes.astype(np.uint8), meta), tensor_scale=float(s_t))


def _logical_index(meta, rows: int, Lp: int) -> np.ndarray:
    """Logical (row-major, unpadded input) flat index of every position of the [rows, Lp] view."""
    _, _, post, L = meta
    r = np.arange(rows, dtype=np.int64)[:, None]
    i = np.arange(Lp, dtype=np.int64)[None, :]
    p, q = r // post, r % post
    return (p * L + i) * post + q


# ---- decoding ------------------------------------------------------------------------------


def dequantize_numpy(q) -> np.ndarray:
    """fp32 values of a QTensor with numpy codes."""
    return decode_numpy(q.spec, Encoded(q.codes, q.scales, q.zero_points, q.tensor_scale), q.shape, q.axis)


def decode_numpy(spec, q: Encoded, shape, axis: int) -> np.ndarray:
    """fp32 values of encoded fields of the logical ``shape`` blocked along ``axis``."""
    shape = tuple(shape)
    if isinstance(spec, FloatElem):
        return decode_elem(q.codes, spec).reshape(shape)
    ax = axis
    codes = np.asarray(q.codes)
    moved = np.moveaxis(codes, ax, -1)
    rows = int(np.prod(moved.shape[:-1], dtype=np.int64))
    L = shape[ax] if shape else 1
    meta = (moved.shape[:-1], ax, None, L)
    c2 = np.ascontiguousarray(moved).reshape(rows, moved.shape[-1]).astype(np.int64)
    if isinstance(spec, BlockSpec) and not spec.is_nvfp4:
        sc = spec.scale
        s2 = np.ascontiguousarray(np.moveaxis(np.asarray(q.scales), ax, -1)).reshape(rows, -1)
        out = np.empty((rows, L), np.float32)
        K.block_decode(c2, s2.astype(np.int64), spec.block_size, L, K.elem_params(spec.elem),
                       sc.bias, -1 if sc.nan_code is None else sc.nan_code, out, POW2_F32)
        return _from_rows(out, meta)
    s2 = np.ascontiguousarray(np.moveaxis(np.asarray(q.scales).reshape(
        (1,) * len(shape) if not shape else np.asarray(q.scales).shape), ax, -1))
    if isinstance(spec, BlockSpec):  # NVFP4
        s2 = s2.reshape(rows, -1).astype(np.int64)
        B = spec.block_size
        vals = decode_elem(c2, spec.elem).reshape(rows, -1, B)
        sb = decode_elem(s2, E4M3)
        d = (sb * np.float32(q.tensor_scale)).astype(np.float32)
        d = np.where(s2 == NVFP4_SCALE_NAN, np.float32(np.nan), d)
        out = (vals * d[:, :, None]).astype(np.float32).reshape(rows, -1)[:, :L]
        return _from_rows(out, meta)
    # scaled integers: x = RNE32(s * (c - z)); per-tensor/channel/token scales broadcast
    s_full = decode_elem(np.asarray(q.scales).astype(np.int64), spec.scale.elem)
    zp = None if spec.symmetric else np.asarray(q.zero_points).astype(np.int64)
    if spec.granularity == "group":
        s_full = np.repeat(s_full, spec.group_size, axis=ax)
        zp = None if zp is None else np.repeat(zp, spec.group_size, axis=ax)
    c = np.asarray(q.codes).astype(np.int64)
    c = np.where(c >= (1 << (spec.bits - 1)), c - (1 << spec.bits), c) if zp is None else c - zp
    out = (s_full * c.astype(np.float32)).astype(np.float32)
    if spec.granularity == "group":
        out = np.take(out, np.arange(L), axis=ax)
    return out.reshape(shape)


def int_values(q):
    """Signed element integers in units of the element quantum (docs/spec/formats.md §5; docs/spec/matmul.md §3)."""
    spec = q.spec
    torch_in = is_torch(q.codes)
    codes = q.codes
    if torch_in:
        import torch

        c = codes.to(torch.int64)
        lib = torch
    else:
        c = np.asarray(codes).astype(np.int64)
        lib = np
    if isinstance(spec, ScaledIntSpec):
        b = spec.bits
        if spec.symmetric:
            return lib.where(c >= (1 << (b - 1)), c - (1 << b), c)
        zp = q.zero_points.to(lib.int64) if torch_in else np.asarray(q.zero_points).astype(np.int64)
        if spec.granularity == "group":
            zp = (zp.repeat_interleave(spec.group_size, dim=q.axis) if torch_in
                  else np.repeat(zp, spec.group_size, axis=q.axis))
        return c - zp
    elem = elem_of(spec)
    if isinstance(elem, IntElem):
        b = elem.bits
        if elem.encoding == "signmag":
            mag = c & ((1 << (b - 1)) - 1)
            return lib.where((c >> (b - 1)) & 1 == 1, -mag, mag)
        return lib.where(c >= (1 << (b - 1)), c - (1 << b), c)
    mb, eb = elem.mbits, elem.ebits
    neg = (c >> (eb + mb)) & 1
    expf = (c >> mb) & ((1 << eb) - 1)
    mant = c & ((1 << mb) - 1)
    normal = ((1 << mb) + mant) << lib.clip(expf - 1, 0, None)
    k = lib.where(expf == 0, mant, normal)
    return lib.where(neg == 1, -k, k)
