"""Shared helpers for the hwsim.formats tests: run both codecs, convert results to numpy, compare bits."""

from __future__ import annotations

import re

import numpy as np
import torch

import hwsim.formats as F

BACKENDS = ("numpy", "torch")
ROUNDINGS = ("rne", "rna", "rtz", "rdn", "sr")

MX_PRESETS = ("mxint8", "mxint6", "mxint4", "mxint3", "mxint2", "mxfp8_e4m3", "mxfp8_e5m2",
              "mxfp6_e3m2", "mxfp6_e2m3", "mxfp4_e2m1")
BFP_PRESETS = tuple(f"bfp{w}" for w in range(2, 9))
MINI_PRESETS = ("fp8_e4m3", "fp8_e5m2", "fp6_e3m2", "fp6_e2m3", "fp4_e2m1")
IEEE_PRESETS = ("bf16", "fp16", "fp32")
SINT_PRESETS = ("int4_g128", "int4_g128_asym", "int8_ch", "int8_tok", "int8")
REQUIRED_PRESETS = MX_PRESETS + ("nvfp4",) + BFP_PRESETS + MINI_PRESETS + IEEE_PRESETS + SINT_PRESETS

# Presets plus modifier variants exercised by the cross-backend and property tests.
EXTRA_NAMES = ("mxint8_full", "mxint4_ceil", "mxint8_rceil", "mxfp8_e4m3_rceil", "mxfp4_rceil",
               "mxfp4_ceil", "mxint8_se5", "mxfp8_e5m2_se6", "mxint4_ftz", "mxint4_b16", "mxint8_b1",
               "bfp4_floor", "bfp8_b32", "fp8_e4m3_nosat", "fp8_e5m2_nosat", "int4_g8_asym",
               "int8_ch_hr", "int4_ch_c90", "int4_g64_c90_sbf16", "int8_tok_sf32", "int4_t_asym")


def all_names() -> list[str]:
    names = list(F.list_formats())
    for n in EXTRA_NAMES:
        if n not in names:
            names.append(n)
    return names


def with_block(name: str, B: int) -> str:
    """Insert a block-size modifier right after the element part of an MX/BFP name."""
    m = re.match(r"^(mx(?:int\d|fp\d_e\dm\d|fp4)|bfp\d)(.*)$", name)
    assert m, name
    rest = re.sub(r"_b\d+", "", m.group(2))
    return f"{m.group(1)}_b{B}{rest}"


def with_rounding(name: str, mode: str) -> str:
    return name if mode == "rne" else f"{name}_{mode}"


def to_np(a):
    """numpy view of a codec output (numpy array, torch tensor, scalar or None)."""
    if a is None:
        return None
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu()
        try:
            return a.numpy()
        except TypeError:  # pragma: no cover - old torch without uint16/32 numpy support
            raise
    if isinstance(a, np.ndarray):
        return a
    return np.asarray(a)


def as_input(x, backend: str, dtype=None):
    x = np.asarray(x, dtype=np.float32) if dtype is None else x
    if backend == "numpy":
        return x
    return torch.from_numpy(np.ascontiguousarray(x))


def quantize(x, fmt, backend: str = "numpy", **kw):
    return F.quantize(as_input(x, backend), fmt, **kw)


def summary(q) -> dict:
    """codes, scales, zero points, tensor scale and decoded values of a QTensor, as numpy."""
    ts = q.tensor_scale
    if isinstance(ts, torch.Tensor):
        ts = ts.detach().cpu().numpy()
    return {
        "codes": to_np(q.codes),
        "scales": to_np(q.scales),
        "zero_points": to_np(q.zero_points),
        "tensor_scale": None if ts is None else np.asarray(ts, np.float32).reshape(()),
        "decoded": to_np(q.dequantize()).astype(np.float32),
    }


def f32_bits(a) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(a, dtype=np.float32)).view(np.uint32)


def assert_same_float_bits(got, exp, what: str = "decoded"):
    """Bit equality of fp32 arrays; any NaN matches any NaN (payload and sign not compared)."""
    got = np.asarray(got, np.float32)
    exp = np.asarray(exp, np.float32)
    assert got.shape == exp.shape, f"{what}: shape {got.shape} != {exp.shape}"
    gn, en = np.isnan(got), np.isnan(exp)
    bad = (gn != en) | (~gn & ~en & (f32_bits(got) != f32_bits(exp)))
    if bad.any():
        i = np.argwhere(bad)[:5]
        rows = [f"{tuple(j)}: got {got[tuple(j)]!r} exp {exp[tuple(j)]!r}" for j in i]
        raise AssertionError(f"{what}: {int(bad.sum())} mismatches, first: " + "; ".join(rows))


def assert_same_ints(got, exp, what: str):
    got = None if got is None else np.asarray(got)
    exp = None if exp is None else np.asarray(exp)
    if exp is None or got is None:
        assert got is None and exp is None, f"{what}: got {got!r}, expected {exp!r}"
        return
    assert got.shape == exp.shape, f"{what}: shape {got.shape} != {exp.shape}"
    bad = got.astype(np.int64) != exp.astype(np.int64)
    if bad.any():
        i = np.argwhere(bad)[:8]
        rows = [f"{tuple(j)}: got {int(got[tuple(j)]):#x} exp {int(exp[tuple(j)]):#x}" for j in i]
        raise AssertionError(f"{what}: {int(bad.sum())} mismatches, first: " + "; ".join(rows))


def assert_same_summary(a: dict, b: dict, ctx: str = ""):
    assert_same_ints(a["codes"], b["codes"], f"{ctx} codes")
    if a["scales"] is None or b["scales"] is None:
        assert a["scales"] is None and b["scales"] is None, f"{ctx} scales presence differs"
    else:
        assert_same_ints(a["scales"], b["scales"], f"{ctx} scales")
    assert_same_ints(a["zero_points"], b["zero_points"], f"{ctx} zero_points")
    if a["tensor_scale"] is None or b["tensor_scale"] is None:
        assert a["tensor_scale"] is None and b["tensor_scale"] is None, f"{ctx} tensor_scale presence"
    else:
        assert_same_float_bits(a["tensor_scale"], b["tensor_scale"], f"{ctx} tensor_scale")
    assert_same_float_bits(a["decoded"], b["decoded"], f"{ctx} decoded")
