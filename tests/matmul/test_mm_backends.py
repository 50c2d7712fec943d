"""Cross-backend bit equality (numba = torch = Triton) and the independent Fraction model."""

import warnings

import numpy as np
import pytest
import torch

import hwsim.formats as F
from hwsim.matmul import matmul
from hwsim.matmul import triton_backend

from mm_helpers import make_operand, model

PAIRS = [
    ("mxint8", "mxint8"), ("mxint4", "mxint8"), ("mxint2", "mxint8_full"), ("mxfp4", "mxfp4"),
    ("mxfp6_e2m3", "mxint8"), ("mxfp6_e3m2", "mxfp6_e3m2"), ("mxfp8_e4m3", "mxfp8_e4m3"),
    ("mxfp8_e5m2", "mxfp8_e5m2"), ("bfp4", "bfp8"), ("bfp4", "mxint8"), ("nvfp4", "nvfp4"),
    ("int4_g128", "int8_tok"), ("int4_g128_asym", "int8_tok"), ("int8_ch", "int8_tok"),
    ("mxfp4", "int8_tok"),
]
ACCS = ["fp32", "fixed:24:10", "fixed:12:4:wrap", "fixed:20:6:rne", "fixed:16:2:wrap:rne"]
SHAPES = [(3, 70, 5), (1, 40, 4), (4, 33, 1)]

TRITON_OK, TRITON_WHY = triton_backend.available()


def bits(x):
    """fp32 bit patterns, every NaN mapped to 0x7FC00000 (NaN sign and payload are not specified)."""
    x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    u = np.ascontiguousarray(x, np.float32).view(np.uint32)
    return np.where(np.isnan(x), np.uint32(0x7FC00000), u)


def _pair_ops(fa, fb, shape, seed, **kw):
    M, K, N = shape
    a = make_operand(fa, "a", M, K, np.random.default_rng(seed), **kw)
    b = make_operand(fb, "b", N, K, np.random.default_rng(seed + 1), **kw)
    return a, b


def _to_torch(q):
    conv = lambda x: None if x is None else torch.as_tensor(np.ascontiguousarray(x))  # noqa: E731
    return F.QTensor.from_codes(q.spec, conv(q.codes), scales=conv(q.scales), zero_points=conv(q.zero_points),
                                tensor_scale=q.tensor_scale, shape=q.shape, axis=q.axis)


def _fixed_ok(fa, fb):
    return True


@pytest.mark.parametrize("fa,fb", PAIRS, ids=[f"{a}x{b}" for a, b in PAIRS])
def test_numba_equals_torch(fa, fb):
    for si, shape in enumerate(SHAPES):
        a, b = _pair_ops(fa, fb, shape, 10 * si)
        ta, tb = _to_torch(a), _to_torch(b)
        for acc in ACCS:
            if acc != "fp32" and not _fixed_ok(fa, fb):
                with pytest.raises(ValueError, match="not supported"):
                    matmul(a, b, accumulator=acc)
                continue
            y_n = matmul(a, b, accumulator=acc, backend="numba")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")   # e5m2 x e5m2 fixed is delegated to numba
                y_t = matmul(ta, tb, accumulator=acc, backend="torch")
                y_a = matmul(a, b, accumulator=acc)           # auto (CPU fp32: the GEMM path)
                y_at = matmul(ta, tb, accumulator=acc)
            for y in (y_t, y_a, y_at):
                np.testing.assert_array_equal(bits(y_n), bits(y), err_msg=f"{fa}x{fb} {acc} {shape}")


@pytest.mark.parametrize("fa,fb", [p for p in PAIRS if p[0] not in ("nvfp4",)],
                         ids=[f"{a}x{b}" for a, b in PAIRS if a not in ("nvfp4",)])
def test_numba_equals_fraction_model(fa, fb):
    a, b = _pair_ops(fa, fb, (2, 70, 3), 5)
    for acc in ["exact", "fp32", "fixed:24:10", "fixed:12:4:wrap:rne"]:
        if acc.startswith("fixed") and not _fixed_ok(fa, fb):
            continue
        ref = np.array(model(a, b, acc), dtype=np.float64)
        for be in ("numba", "auto"):
            y = np.asarray(matmul(a, b, accumulator=acc, backend=be), np.float64)
            np.testing.assert_array_equal(y, ref, err_msg=f"{fa}x{fb} {acc} {be}")


ADVERSARIAL_SCALES = [(0, 3), (251, 254), (0, 254), (120, 255)]


@pytest.mark.parametrize("lo,hi", ADVERSARIAL_SCALES)
@pytest.mark.parametrize("fa,fb", [("mxint8", "mxint8"), ("mxfp8_e5m2", "mxfp8_e5m2"), ("mxfp8_e4m3", "mxfp4"),
                                   ("bfp4", "bfp8")])
def test_extreme_scales_and_nan_blocks(fa, fb, lo, hi):
    """E8M0 extremes (overflow to Inf, subnormal/zero partials), NaN-scale blocks, zero blocks."""
    if fa == "bfp4" and hi == 255:
        hi = 254
    a, b = _pair_ops(fa, fb, (3, 96, 4), 7, scale_lo=lo, scale_hi=hi, zero_frac=0.3)
    ta, tb = _to_torch(a), _to_torch(b)
    for acc in ["fp32", "fixed:40:150", "fixed:30:-100:wrap", "exact"]:
        if acc.startswith("fixed") and not _fixed_ok(fa, fb):
            continue
        y_n = matmul(a, b, accumulator=acc, out_format="fp32", backend="numba")
        if acc == "exact":
            ref = np.array(model(a, b, "exact32"), dtype=np.float64)   # exact sum rounded once to fp32
            np.testing.assert_array_equal(np.asarray(y_n, np.float64), ref)
            continue
        ref = np.array(model(a, b, acc), dtype=np.float64)
        np.testing.assert_array_equal(np.asarray(y_n, np.float64), ref, err_msg=f"{fa}x{fb} {acc}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            y_t = matmul(ta, tb, accumulator=acc, backend="torch")
        np.testing.assert_array_equal(bits(y_n), bits(y_t))
        np.testing.assert_array_equal(bits(y_n), bits(matmul(a, b, accumulator=acc, out_format="fp32")))


def test_batched_and_bias_and_out_formats():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 64)).astype(np.float32)
    w = rng.standard_normal((5, 64)).astype(np.float32)
    a, wq = F.quantize(x, "mxint8"), F.quantize(w, "mxint4")
    bias = rng.standard_normal(5).astype(np.float32)
    y = matmul(a, wq.T, bias=bias)
    assert y.shape == (2, 3, 5) and isinstance(y, np.ndarray)
    flat = matmul(F.quantize(x.reshape(6, 64), "mxint8"), wq.T)
    np.testing.assert_array_equal(y.reshape(6, 5), (flat + bias).astype(np.float32))
    np.testing.assert_array_equal(bits(y), bits(matmul(a, wq.T, bias=bias, backend="numba")))
    ta, tw = F.quantize(torch.tensor(x), "mxint8"), F.quantize(torch.tensor(w), "mxint4")
    yt = matmul(ta, tw.T, bias=torch.tensor(bias), backend="torch")
    np.testing.assert_array_equal(bits(y), bits(yt))
    y16 = matmul(a, wq.T, out_format="fp16")
    assert y16.dtype == np.float16
    np.testing.assert_array_equal(y16, matmul(a, wq.T).astype(np.float16))
    ybf = matmul(ta, tw.T, out_format="bf16", backend="torch")
    assert ybf.dtype == torch.bfloat16
    q = matmul(a, wq.T, out_format="mxint8")
    assert isinstance(q, F.QTensor) and q.shape == (2, 3, 5)


def test_triton_interpreter_status_is_reported():
    if not TRITON_OK:
        pytest.skip(f"Triton part skipped: {TRITON_WHY}")


TRITON_PAIRS = [("mxint8", "mxint8"), ("mxint4", "mxint8"), ("mxint2", "mxint8_full"), ("mxfp4", "mxfp4"),
                ("mxfp6_e2m3", "mxint8"), ("bfp4", "bfp8"), ("bfp4", "mxint8"), ("nvfp4", "nvfp4"),
                ("int4_g128", "int8_tok"), ("int8_ch", "int8_tok")]


@pytest.mark.skipif(not TRITON_OK, reason=f"triton unavailable: {TRITON_WHY}")
@pytest.mark.parametrize("fa,fb", TRITON_PAIRS, ids=[f"{a}x{b}" for a, b in TRITON_PAIRS])
def test_triton_equals_numba(fa, fb):
    for si, (shape, lo, hi) in enumerate([((20, 70, 17), 110, 140), ((1, 33, 5), 0, 254), ((6, 48, 1), 120, 255)]):
        if fa.startswith("bfp") or fb.startswith("bfp"):
            hi = min(hi, 254)
        a, b = _pair_ops(fa, fb, shape, 100 + si, scale_lo=lo, scale_hi=hi, zero_frac=0.2)
        y_n = matmul(a, b, backend="numba")
        ta, tb = _to_torch(a), _to_torch(b)
        assert triton_backend.covers(__import__("hwsim.matmul.operands", fromlist=["prepare"]).prepare(ta, tb))
        y_tr = matmul(ta, tb, backend="triton")
        np.testing.assert_array_equal(bits(y_n), bits(y_tr), err_msg=f"{fa}x{fb} {shape}")


@pytest.mark.skipif(not TRITON_OK, reason=f"triton unavailable: {TRITON_WHY}")
def test_triton_uncovered_falls_back_to_torch():
    a, b = _pair_ops("mxfp8_e4m3", "mxfp8_e4m3", (3, 40, 4), 1)
    np.testing.assert_array_equal(bits(matmul(a, b, backend="numba")),
                                  bits(matmul(_to_torch(a), _to_torch(b), backend="triton")))
