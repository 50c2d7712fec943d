"""Golden vectors M1-M7 of docs/spec/matmul.md §9, on every backend that covers them."""

import numpy as np
import pytest
import torch

import hwsim.formats as F
from hwsim.matmul import matmul, triton_backend

from mm_helpers import assert_fp32_gemm_result

TRITON_OK, _ = triton_backend.available()


def q(fmt, codes, scales, axis, ts=None, lib="numpy"):
    spec = F.get(fmt)
    codes = np.asarray(codes, np.int64) & ((1 << spec.element_bits) - 1)
    scales = np.asarray(scales, np.int64)
    if lib == "torch":
        codes, scales = torch.as_tensor(codes), torch.as_tensor(scales)
    return F.QTensor.from_codes(spec, codes, scales=scales, tensor_scale=ts, axis=axis)


def col(K, entries):
    v = np.zeros(K, np.int64)
    for i, c in entries.items():
        v[i] = c
    return v


def run_all(fa, a_codes, a_sc, fb, b_codes, b_sc, acc, ta=None, tb=None, triton=True):
    """Result on numba, torch (and Triton for fp32); asserts they agree bit for bit; returns fp32 bits."""
    A = q(fa, a_codes[None, :], [a_sc], -1, ta)
    B = q(fb, b_codes[:, None], np.asarray(b_sc)[:, None], 0, tb)
    y = np.float32(matmul(A, B, accumulator=acc, out_format="fp32")[0, 0])
    yn = np.float32(matmul(A, B, accumulator=acc, out_format="fp32", backend="numba")[0, 0])
    assert np.array_equal(np.array(y).view(np.uint32), np.array(yn).view(np.uint32)) or (np.isnan(y) and np.isnan(yn))
    if acc != "exact":
        At = q(fa, a_codes[None, :], [a_sc], -1, ta, "torch")
        Bt = q(fb, b_codes[:, None], np.asarray(b_sc)[:, None], 0, tb, "torch")
        with __import__("warnings").catch_warnings():
            __import__("warnings").simplefilter("ignore")
            yt = np.float32(matmul(At, Bt, accumulator=acc, backend="torch")[0, 0].item())
        assert np.array_equal(np.array(y).view(np.uint32), np.array(yt).view(np.uint32)) or (np.isnan(y) and np.isnan(yt))
        if acc == "fp32" and TRITON_OK and triton:
            yr = np.float32(matmul(At, Bt, backend="triton")[0, 0].item())
            assert np.array(y).view(np.uint32) == np.array(yr).view(np.uint32) or (np.isnan(y) and np.isnan(yr))
    return y


def u32(x):
    return int(np.array(np.float32(x)).view(np.uint32))


def test_m1_order_and_rounding():
    K = 96
    a = col(K, {0: 0x40, 32: 0x40, 64: 0x40})
    b = col(K, {0: 0x40, 32: 0x40, 64: 0x40})
    args = ("mxint8", a, [127, 103, 103], "mxint8", b, [127, 127, 127])
    assert u32(run_all(*args, "fp32")) == 0x3F800000
    A = q("mxint8", a[None, :], [[127, 103, 103]], -1)
    B = q("mxint8", b[:, None], [[127], [127], [127]], 0)
    assert matmul(A, B, accumulator="exact")[0, 0] == 1 + 2.0 ** -23


@pytest.mark.parametrize("acc,y", [("fp32", 252.015625), ("exact", 252.015625), ("fixed:16:8", 127.99609375),
                                   ("fixed:16:8:wrap", -3.984375), ("fixed:32:8", 252.015625)])
def test_m2_fixed_overflow(acc, y):
    a = np.full(64, 0x7F)
    assert run_all("mxint8", a, [127, 127], "mxint8", a.copy(), [127, 127], acc) == np.float32(y)


@pytest.mark.parametrize("ac,bc,trunc,rne", [({0: 96}, {0: 96}, 2, 2), ({0: -96}, {0: 96}, -3, -2),
                                             ({0: 64, 1: 64}, {0: -64, 1: -96}, -3, -2),
                                             ({0: 64, 1: 64}, {0: 112, 1: 112}, 3, 4)])
def test_m3_rounding_into_grid(ac, bc, trunc, rne):
    a, b = col(32, ac), col(32, bc)
    assert run_all("mxint8", a, [127], "mxint8", b, [127], "fixed:16:0") == trunc
    assert run_all("mxint8", a, [127], "mxint8", b, [127], "fixed:16:0:rne") == rne


def test_m4_subnormal_products():
    a = col(32, {0: 1, 1: 1, 2: 1})
    y = run_all("mxfp8_e4m3", a, [61], "mxfp8_e4m3", a.copy(), [61], "fp32")
    assert u32(y) == 0x00000002
    A = q("mxfp8_e4m3", a[None, :], [[61]], -1)
    B = q("mxfp8_e4m3", a[:, None], [[61]], 0)
    assert matmul(A, B, accumulator="exact")[0, 0] == 3 * 2.0 ** -150
    # fake mode: every product 2^-150 rounds to 0 (tie to even), with or without FMA, so every
    # partial sum is 0 too: 0 in any summation order
    assert matmul(A, B, mode="fake")[0, 0] == 0.0
    y = run_all("mxfp8_e4m3", a, [67], "mxfp8_e4m3", a.copy(), [67], "fp32")
    assert u32(y) == 0x00001800


M5A = col(64, {0: 4, 1: -2, 2: 1, 3: 7, 4: -7, 32: 3, 33: 3, 34: -1})
M5B = col(64, {0: 64, 1: 32, 2: -127, 3: 16, 4: 8, 5: 100, 32: -64, 33: 127, 34: 5})


@pytest.mark.parametrize("acc,y", [("fp32", 0.9677734375), ("exact", 0.9677734375), ("fixed:32:16", 0.9677734375),
                                   ("fixed:16:8", 0.96484375), ("fixed:16:8:rne", 0.96875)])
def test_m5_mixed_w4a8(acc, y):
    assert run_all("mxint4", M5A, [127, 124], "mxint8", M5B, [128, 125], acc) == np.float32(y)


@pytest.mark.parametrize("acc", ["fp32", "exact", "fixed:32:16", "fixed:16:8:wrap"])
def test_m6_nonfinite(acc):
    assert np.isnan(run_all("mxint4", M5A, [127, 0xFF], "mxint8", M5B, [128, 125], acc))
    inf, zero, one = col(32, {0: 0x7C}), col(32, {}), col(32, {0: 0x3C})
    assert np.isnan(run_all("mxfp8_e5m2", inf, [127], "mxfp8_e5m2", zero, [127], acc))
    y = run_all("mxfp8_e5m2", inf, [127], "mxfp8_e5m2", one, [127], acc)
    if acc.startswith("fixed"):
        assert np.isnan(y)
    else:
        assert y == np.inf


def test_m7_nvfp4_case_g():
    ta = float(np.float32(6 / 2688))
    tb = float(np.float32(100 / 2688))
    assert u32(ta) == 0x3B124925 and u32(tb) == 0x3D186186
    a = col(16, {0: 0x5, 1: 0xA, 2: 0x1})
    b = col(16, {0: 0x4, 1: 0x4, 2: 0x7})
    y = run_all("nvfp4", a, [0x3C], "nvfp4", b, [0x7E], "fp32", ta, tb)
    assert u32(y) == 0x3EC80001
    A = q("nvfp4", a[None, :], [[0x3C]], -1, ta)
    B = q("nvfp4", b[:, None], [[0x7E]], 0, tb)
    # fake mode: an fp32 GEMM of the dequantized operands in an unspecified order (docs/matmul.md);
    # the orders give 0x3EC80000 (rounded products summed left to right), 0x3EC80001 or 0x3EC80002
    # (FMAs, other orders): checked against the fp32 dot-product bound, not one bit pattern
    assert_fp32_gemm_result(matmul(A, B, mode="fake"), A.dequantize(), B.dequantize(), "M7 fake")
    assert abs(matmul(A, B, accumulator="exact")[0, 0] - 0.3906250137) < 1e-10
