"""Bounds (docs/spec/matmul.md §7), fake mode, consistency, adversarial fixed-point cases, errors, error report."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import hwsim.formats as F
from hwsim.matmul import DatapathSpec, FixedAcc, Fp32Acc, error_report, matmul
from hwsim.matmul.operands import prepare

from mm_helpers import assert_fp32_gemm_result, fp32_gemm_bound, make_operand, within_fp32_gemm_bound

U = 2.0 ** -24
ETA = 2.0 ** -150
g = lambda n: n * U / (1 - n * U)  # noqa: E731

BOUND_PAIRS = ["mxint8", "mxint4", "mxfp4", "mxfp8_e4m3", "bfp8", "nvfp4", "int8_tok"]


@settings(max_examples=25, deadline=None)
@given(fa=st.sampled_from(BOUND_PAIRS), fb=st.sampled_from(["mxint8", "mxfp6_e2m3", "bfp4", "int4_g128"]),
       M=st.integers(1, 4), K=st.integers(1, 200), N=st.integers(1, 4), seed=st.integers(0, 2**31),
       heavy=st.booleans())
def test_bounds_fp32_and_fake_vs_exact(fa, fb, M, K, N, seed, heavy):
    if (fa == "nvfp4") != (fb == "nvfp4") and False:
        return
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((M, K)).astype(np.float32)
    w = rng.standard_normal((N, K)).astype(np.float32)
    if heavy:
        x = (x * np.exp(3 * rng.standard_normal((M, K)))).astype(np.float32)
    a, b = F.quantize(x, fa), F.quantize(w, fb).T
    exact = matmul(a, b, accumulator="exact")
    fp32 = matmul(a, b).astype(np.float64)
    np.testing.assert_array_equal(fp32, matmul(a, b, backend="numba").astype(np.float64))
    fake = matmul(a, b, mode="fake").astype(np.float64)
    da, db = a.dequantize().astype(np.float64), b.dequantize().astype(np.float64)
    absprod = np.abs(da) @ np.abs(db)
    caseP = DatapathSpec(fa, fb).case == "P"
    L = DatapathSpec(fa, fb).segment_length(K)
    J = -(-K // L)
    c = 0 if caseP else 2
    delta = 0 if caseP else 4 * U
    # sum_j |P_j| <= sum_k |a_k b_k| (with decode rounding for case G: inflate by (1 + 4u))
    assert np.all(np.abs(fp32 - exact) <= g(J + c) * absprod * (1 + 4 * U) + J * ETA)
    assert np.all(np.abs(fake - exact) <= (g(K) + delta) * absprod * (1 + 4 * U) + K * ETA)


def test_fake_is_an_fp32_gemm_of_the_dequantized_operands():
    """mode="fake" = hwsim's dequantization of both operands (bit-exact), then one fp32 GEMM whose
    summation order BLAS / torch leave unspecified (docs/matmul.md, "Fake mode"). So the result is
    checked against the float64 product of the dequantized operands within the fp32 dot-product
    bound of any summation order (mm_helpers.fp32_gemm_bound), not bit for bit against another fp32
    GEMM: ``a.dequantize() @ wq.dequantize().T`` (a transposed operand) and fake mode sum in different
    orders on AMD EPYC Zen 4 (2-4e-6 apart)."""
    rng = np.random.default_rng(0)
    xn = rng.standard_normal((5, 96)).astype(np.float32)
    wn = rng.standard_normal((7, 96)).astype(np.float32)
    cases = [(fa, fb, torch.tensor(xn), torch.tensor(wn))
             for fa, fb in [("mxint8", "mxint4"), ("nvfp4", "nvfp4"), ("int8_tok", "int4_g128"), ("bf16", "int4_g128")]]
    cases.append(("mxint8", "mxint4", xn, wn))          # numpy operands: the np.matmul branch
    for fa, fb, x, w in cases:
        what = f"{fa} x {fb} ({type(x).__module__})"
        a, wq = F.quantize(x, fa), F.quantize(w, fb)
        da, db = a.dequantize(), wq.dequantize().T
        # the operands fake mode multiplies are hwsim's dequantization, bit for bit
        dbt = wq.T.dequantize()
        assert (torch.equal(dbt, db) if isinstance(x, torch.Tensor) else np.array_equal(dbt, db)), what
        y = matmul(a, wq.T, mode="fake")
        assert type(y) is type(x) and tuple(y.shape) == (5, 7), what
        assert_fp32_gemm_result(y, da, db, what)
        # the check is not vacuous: the bound is < 1e-4 of the result's scale, a result built from
        # another dequantization (the unquantized weight) is rejected, and so is one moved by half
        # the bound beyond it (ulps of |A||B| above the bound) on every output
        ref, bound = fp32_gemm_bound(da, db)
        assert bound.max() < 1e-4 * np.abs(ref).max(), what
        wrong = da @ (w.T if isinstance(w, torch.Tensor) else w.T)
        assert not within_fp32_gemm_bound(wrong, da, db).all(), what
        off = (ref + 1.5 * bound * np.where(ref < 0, -1.0, 1.0)).astype(np.float32)
        assert not within_fp32_gemm_bound(off, da, db).any(), what


def test_consistency_small_integers():
    """Every P_j and partial sum representable: fp32 = wide fixed = exact, on every backend."""
    rng = np.random.default_rng(1)
    a = make_operand("mxint8", "a", 3, 96, rng, scale_lo=125, scale_hi=129)
    b = make_operand("mxint8", "b", 4, 96, rng, scale_lo=125, scale_hi=129)
    e = matmul(a, b, accumulator="exact")
    np.testing.assert_array_equal(matmul(a, b).astype(np.float64), e)
    np.testing.assert_array_equal(matmul(a, b, accumulator="fixed:48:20").astype(np.float64), e)


def _mx8(codes_a, bytes_a, codes_b, bytes_b):
    A = F.QTensor.from_codes("mxint8", np.asarray(codes_a)[None, :] & 0xFF, scales=[bytes_a], axis=-1)
    B = F.QTensor.from_codes("mxint8", np.asarray(codes_b)[:, None] & 0xFF, scales=np.asarray(bytes_b)[:, None], axis=0)
    return A, B


def _both(A, B, acc):
    y = matmul(A, B, accumulator=acc)[0, 0]
    yn = matmul(A, B, accumulator=acc, backend="numba")[0, 0]
    assert np.float32(y).view(np.uint32) == np.float32(yn).view(np.uint32)
    At = F.QTensor.from_codes(A.spec, torch.as_tensor(np.asarray(A.codes)), scales=torch.as_tensor(np.asarray(A.scales)), axis=-1)
    Bt = F.QTensor.from_codes(B.spec, torch.as_tensor(np.asarray(B.codes)), scales=torch.as_tensor(np.asarray(B.scales)), axis=0)
    yt = matmul(At, Bt, accumulator=acc, backend="torch")[0, 0].item()
    assert np.float32(y).view(np.uint32) == np.float32(yt).view(np.uint32)
    return float(y)


def test_fixed_overflow_middle_and_last_segment_and_half_lsb():
    # segments: +126, +126, -126 (overflow in the middle with fixed:16:8 saturate, back down after)
    a = np.full(96, 0x7F)
    b = np.concatenate([np.full(64, 0x7F), np.full(32, -0x7F)])
    A, B = _mx8(a, [127, 127, 127], b, [127, 127, 127])
    assert _both(A, B, "fixed:16:8") == (32767 - 32258) / 256
    assert _both(A, B, "fixed:16:8:wrap") == ((-1020 - 32258 + 32768) % 65536 - 32768) / 256
    # overflow on the last segment only
    A, B = _mx8(a, [127, 100, 127], np.full(96, 0x7F), [127, 127, 127])
    assert _both(A, B, "fixed:16:8") == 32767 / 256
    # product exactly half an LSB of the grid: P = 2**-9 at F = 8
    a1 = np.zeros(32, np.int64)
    a1[0] = 64
    A, B = _mx8(a1, [127 - 9], a1, [127])
    assert _both(A, B, "fixed:16:8") == 0.0 and _both(A, B, "fixed:16:8:rne") == 0.0
    A, B = _mx8(-a1, [127 - 9], a1, [127])
    assert _both(A, B, "fixed:16:8") == -1 / 256 and _both(A, B, "fixed:16:8:rne") == 0.0


def test_ties_at_underflow_and_cancelling_segments():
    a1 = np.zeros(32, np.int64)
    a1[0] = 64
    # P = 2**-150 (tie between 0 and 2**-149 -> 0) and 3 * 2**-150 (tie -> 2**-148)
    A, B = _mx8(a1, [0], a1, [127 - 150 + 127])
    assert _both(A, B, "fp32") == 0.0
    a3 = a1.copy()
    a3[0] = 3 * 64 // 4 * 4 // 4  # 48 -> 48*64*2**-12 ... keep integer: use two elements
    a3 = np.zeros(32, np.int64)
    a3[:3] = 64
    A, B = _mx8(a3, [0], np.where(np.arange(32) < 3, 64, 0), [127 - 150 + 127])
    assert _both(A, B, "fp32") == 2.0 ** -148
    # +big, -big, small: cancellation exact in fp32
    big = np.zeros(96, np.int64)
    big[0], big[32], big[64] = 127, -127, 1
    ones = np.zeros(96, np.int64)
    ones[0] = ones[32] = ones[64] = 64
    A, B = _mx8(big, [200, 200, 100], ones, [127, 127, 127])
    assert _both(A, B, "fp32") == np.float32(2.0 ** (100 - 127 - 6))


def test_errors_name_operand_and_expected():
    rng = np.random.default_rng(0)
    a = F.quantize(rng.standard_normal((2, 64)).astype(np.float32), "mxint8")
    b = F.quantize(rng.standard_normal((48, 3)).astype(np.float32), "mxint8", axis=0)
    with pytest.raises(ValueError, match=r"K mismatch.*\(2, 64\).*\(48, 3\)"):
        matmul(a, b)
    b2 = F.quantize(rng.standard_normal((64, 3)).astype(np.float32), "mxint8", axis=1)
    with pytest.raises(ValueError, match=r"operand b.*axis 1.*K axis 0"):
        matmul(a, b2)
    with pytest.raises(ValueError, match=r"operand a.*axis 0"):
        matmul(F.quantize(rng.standard_normal((64, 2)).astype(np.float32), "mxint8", axis=0).T.T, b2)
    b3 = F.quantize(rng.standard_normal((64, 3)).astype(np.float32), "mxint8_b24", axis=0)
    with pytest.raises(ValueError, match=r"operand a has B=32, operand b has B=24"):
        matmul(a, b3)
    b4 = F.quantize(rng.standard_normal((64, 3)).astype(np.float32), "mxint8", axis=0)
    ta = F.quantize(torch.tensor(rng.standard_normal((2, 64)).astype(np.float32)), "mxint8")
    tb = F.quantize(torch.tensor(rng.standard_normal((64, 3)).astype(np.float32)), "mxint8", axis=0)
    with pytest.raises(ValueError, match=r"backend='triton' supports accumulator='fp32' only"):
        matmul(ta, tb, accumulator="fixed:32:8", backend="triton")
    with pytest.raises(ValueError, match=r"mode='fake' supports accumulator='fp32' only"):
        matmul(a, b4, accumulator="exact", mode="fake")
    with pytest.raises(ValueError, match=r"operand a: format 'bf16' is element-only"):
        matmul(F.quantize(rng.standard_normal((2, 64)).astype(np.float32), "bf16"), b4)
    with pytest.raises(ValueError, match="width"):
        FixedAcc(200, 3)
    with pytest.raises(ValueError, match=r"'fixed:70:3'.*2\.\.62"):   # a valid spec the core cannot run
        matmul(a, b4, accumulator="fixed:70:3")
    with pytest.raises(ValueError, match=r"'fp16'.*fp32 only"):
        matmul(a, b4, accumulator="fp16")
    with pytest.raises(ValueError, match="accumulator"):
        matmul(a, b4, accumulator="fixed:x")


def test_datapath_spec_widths_from_formats():
    assert DatapathSpec("mxint8", "mxint8").sum_bits() == 20
    assert DatapathSpec("mxint8_full", "mxint8_full").sum_bits() == 21
    assert DatapathSpec("mxint4", "mxint8").sum_bits() == 16
    assert DatapathSpec("mxfp8_e5m2", "mxfp8_e5m2").sum_bits() == 70
    assert DatapathSpec("bfp4", "mxint8").segment_length() == 16
    assert DatapathSpec("int4_g128", "int8_tok").segment_length() == 128
    assert DatapathSpec("nvfp4", "nvfp4").case == "G"


def test_error_report():
    rng = np.random.default_rng(2)
    a = F.quantize(rng.standard_normal((8, 256)).astype(np.float32), "mxint8")
    b = F.quantize(rng.standard_normal((6, 256)).astype(np.float32), "mxint4").T
    r = error_report(a, b)
    assert r.shape == (8, 6) and r.fp32_within_bound and r.fake_within_bound
    assert 0 <= r.fp32_vs_exact_max <= 1e-5 and r.fake_vs_exact_max <= 1e-5


def test_torch_chunking_matches_numba(monkeypatch):
    from hwsim.matmul import gemm, torch_backend

    monkeypatch.setattr(torch_backend, "_CHUNK_ELEMS", 1)
    monkeypatch.setattr(gemm, "CHUNK_BYTES_CPU", 1)
    rng = np.random.default_rng(4)
    for lo, hi in [(120, 130), (0, 254)]:       # GEMM path with fp32 fold, then with fp64 fold
        a = make_operand("mxint8", "a", 3, 100, rng, scale_lo=lo, scale_hi=hi)
        b = make_operand("mxint4", "b", 4, 100, rng, scale_lo=lo, scale_hi=hi)
        ta = F.QTensor.from_codes(a.spec, torch.as_tensor(a.codes), scales=torch.as_tensor(a.scales), shape=a.shape, axis=-1)
        tb = F.QTensor.from_codes(b.spec, torch.as_tensor(np.ascontiguousarray(b.codes)),
                                  scales=torch.as_tensor(np.ascontiguousarray(b.scales)), shape=b.shape, axis=0)
        y = matmul(a, b, backend="numba")
        yt = matmul(ta, tb, backend="torch").numpy()
        np.testing.assert_array_equal(y.view(np.uint32), yt.view(np.uint32))
        pt = prepare(ta, tb)
        ys = torch_backend.run_fp32_fixed(pt, Fp32Acc()).numpy()   # per-segment path
        np.testing.assert_array_equal(y.view(np.uint32), ys.view(np.uint32))
