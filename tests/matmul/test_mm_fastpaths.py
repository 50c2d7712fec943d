"""Fast CPU paths against the per-output reference kernels, bit for bit.

The fast paths are the tiled numba backend (``tiled_backend.run_fp32``, "numba-tiled") and the torch
backend's batched-GEMM path (``gemm.run_fp32``: numba converters + BLAS + numba epilogue on CPU, and its
"portable" torch-only form, which is the code CUDA runs). The reference is ``mm_kernel`` /
``mm_fp32_rows`` (``reference.run_fp32_fixed``, backend "numba") and the per-segment torch path
(``torch_backend.run_fp32_fixed``). Each regime also asserts which GEMM variant it
reaches (fp32 fold, fp64 fold, case G), so that every branch is exercised.
"""

import warnings

import numpy as np
import pytest
import torch

import hwsim.formats as F
from hwsim.matmul import matmul
from hwsim.matmul import gemm, reference, tiled_backend, torch_backend
from hwsim.matmul.datapath import Fp32Acc
from hwsim.matmul.operands import element_lut, prepare

from mm_helpers import make_operand, model

FAST_PAIRS = [
    ("mxint8", "mxint8"), ("mxint4", "mxint8"), ("mxfp4", "mxfp8_e4m3"), ("mxint2", "mxint8_full"),
    ("mxfp4", "mxfp4"), ("mxfp6_e2m3", "mxint8"), ("mxfp6_e3m2", "mxfp6_e3m2"),
    ("mxfp8_e4m3", "mxfp8_e4m3"), ("bfp4", "bfp8"), ("bfp4", "mxint8"), ("nvfp4", "nvfp4"),
    ("int4_g128", "int8_tok"), ("int8_ch", "int8_tok"), ("mxfp4", "int8_tok"),
]
# scale-code ranges: ordinary (fp32 fold where the sum fits), E8M0 extremes (overflow to Inf and
# underflow to 0: fp64 fold), products around the fp32 subnormal range, NaN-scale blocks (255)
REGIMES = {"normal": (110, 140), "extreme": (0, 254), "subnormal": (50, 64), "nan": (120, 255)}
SHAPES = [(1, 70, 5), (4, 33, 1), (13, 200, 9)]   # M or N = 1, K off the blocks, 8-row tiles + tail


def bits(y):
    """fp32 bit patterns, every NaN mapped to 0x7FC00000 (NaN sign and payload are not specified)."""
    y = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    u = np.ascontiguousarray(y, np.float32).view(np.uint32)
    return np.where(np.isnan(y), np.uint32(0x7FC00000), u)


def to_torch(q):
    conv = lambda x: None if x is None else torch.as_tensor(np.ascontiguousarray(x))  # noqa: E731
    return F.QTensor.from_codes(q.spec, conv(q.codes), scales=conv(q.scales), zero_points=conv(q.zero_points),
                                tensor_scale=q.tensor_scale, shape=q.shape, axis=q.axis)


def _gemm_b_layouts(p, portable=False):
    """gemm.run_fp32 with B held as [N, J*L] (GEMM "NT") and as [J*L, N] ("NN")."""
    old = gemm.B_TRANSPOSED_MIN_M
    try:
        gemm.B_TRANSPOSED_MIN_M = 1 << 40
        nt = gemm.run_fp32(p, portable=portable)
        gemm.B_TRANSPOSED_MIN_M = 0
        nn = gemm.run_fp32(p, portable=portable)
    finally:
        gemm.B_TRANSPOSED_MIN_M = old
    return nt, nn


def fast_paths(a, b):
    """{name: fp32 bits} of every Fp32Acc path (before tensor scale / bias) plus the reference."""
    p = prepare(a, b)
    pt = p.converted("torch")
    g_nt, g_nn = _gemm_b_layouts(p)
    gp_nt, gp_nn = _gemm_b_layouts(pt, portable=True)
    out = {
        "reference": reference.run_fp32_fixed(p, Fp32Acc()),
        "torch-per-segment": torch_backend.run_fp32_fixed(pt, Fp32Acc()),
        "numba-tiled": tiled_backend.run_fp32(p),
        "gemm(numpy, NT)": g_nt, "gemm(numpy, NN)": g_nn,
        "gemm(torch)": gemm.run_fp32(pt),
        "gemm(portable, NT)": gp_nt, "gemm(portable, NN)": gp_nn,
    }
    return p, {k: (None if v is None else bits(v)) for k, v in out.items()}


def assert_paths_equal(a, b, msg, expect_covered=True):
    p, res = fast_paths(a, b)
    ref = res.pop("reference")
    for name, y in res.items():
        if y is None:
            assert not expect_covered or name == "torch-per-segment", f"{name} declined {msg}"
            continue
        np.testing.assert_array_equal(y, ref, err_msg=f"{name} {msg}")
    return p


def gemm_variant(p):
    ops = gemm._operands(p)
    if ops is None:
        return None
    return f"{ops[3][0]}-{np.dtype(ops[2]).name}"


@pytest.mark.parametrize("regime", list(REGIMES))
@pytest.mark.parametrize("fa,fb", FAST_PAIRS, ids=[f"{a}x{b}" for a, b in FAST_PAIRS])
def test_fast_paths_equal_reference(fa, fb, regime):
    lo, hi = REGIMES[regime]
    if (fa.startswith("bfp") or fb.startswith("bfp")) and hi == 255:
        hi = 254     # BFP scales have no NaN code
    for si, (M, K, N) in enumerate(SHAPES):
        a = make_operand(fa, "a", M, K, np.random.default_rng(7 * si), scale_lo=lo, scale_hi=hi, zero_frac=0.2)
        b = make_operand(fb, "b", N, K, np.random.default_rng(7 * si + 1), scale_lo=lo, scale_hi=hi, zero_frac=0.2)
        p = assert_paths_equal(a, b, f"{fa}x{fb} {regime} {(M, K, N)}")
    # the regimes reach the intended GEMM variants (the last shape decides)
    v = gemm_variant(p)
    if p.case == "G":
        assert v == ("G-float32" if p.sum_bits <= 24 else "G-float64")
    elif p.sum_bits > 24:
        assert v == "P-float64"
    elif regime == "normal":
        assert v == "P-float32"
    elif regime in ("extreme", "subnormal") and fa.startswith("mx"):
        assert v == "P-float64"


def _with_zero_blocks(q, role, rng, frac=0.4):
    """Zero whole blocks and give them scale code 0 (what quantize does for an all-zero block)."""
    codes = np.array(q.codes)
    scales = np.array(q.scales)
    B = q.spec.block_size
    if role == "b":
        codes, scales = codes.T.copy(), scales.T.copy()
    kill = rng.random(scales.shape) < frac
    scales[kill] = 0
    codes[np.repeat(kill, B, axis=1)[:, :codes.shape[1]]] = 0
    if role == "b":
        codes, scales = codes.T, scales.T
    return F.QTensor.from_codes(q.spec, codes, scales=scales, shape=q.shape, axis=q.axis)


@pytest.mark.parametrize("fa,fb", [("mxint8", "mxint8"), ("mxint4", "mxint8"), ("mxfp4", "mxfp8_e4m3")])
def test_zero_blocks_keep_fp32_fold(fa, fb):
    rng = np.random.default_rng(3)
    a = _with_zero_blocks(make_operand(fa, "a", 9, 160, rng), "a", rng)
    b = _with_zero_blocks(make_operand(fb, "b", 11, 160, rng), "b", rng)
    p = assert_paths_equal(a, b, f"{fa}x{fb} zero blocks")
    assert gemm_variant(p) == ("P-float32" if p.sum_bits <= 24 else "P-float64")
    np.testing.assert_array_equal(bits(matmul(a, b)), bits(np.array(model(a, b, "fp32"), np.float64)))


def test_batched_and_c_contiguous_b_and_torch_layouts():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 100)).astype(np.float32)
    w = rng.standard_normal((7, 100)).astype(np.float32)
    for fa, fb in [("mxint8", "mxint8"), ("mxfp4", "mxfp8_e4m3"), ("nvfp4", "nvfp4")]:
        a, wq = F.quantize(x, fa), F.quantize(w, fb)
        assert_paths_equal(a, wq.T, f"{fa}x{fb} batched")
        # B held as a C-contiguous [K, N] array (not a transposed view)
        bc = F.QTensor.from_codes(wq.spec, np.ascontiguousarray(wq.codes.T), scales=np.ascontiguousarray(wq.scales.T),
                                  tensor_scale=wq.tensor_scale, shape=(100, 7), axis=0)
        assert_paths_equal(a, bc, f"{fa}x{fb} contiguous B")
        y = matmul(a, wq.T)
        ya = matmul(to_torch(a), to_torch(wq).T)            # auto on CPU torch tensors
        yn = matmul(a, wq.T, backend="numba")
        assert y.shape == (2, 3, 7) and isinstance(y, np.ndarray) and isinstance(ya, torch.Tensor)
        np.testing.assert_array_equal(bits(y), bits(yn))
        np.testing.assert_array_equal(bits(ya), bits(yn))


def test_element_specials_fall_back():
    """NaN/Inf element codes: the fast paths decline and auto falls back to the exact kernels."""
    for fa, fb in [("mxfp8_e4m3", "mxfp8_e4m3"), ("mxfp8_e4m3", "mxfp4")]:
        a = make_operand(fa, "a", 4, 64, np.random.default_rng(1), allow_specials=True)
        b = make_operand(fb, "b", 5, 64, np.random.default_rng(2), allow_specials=True)
        p = prepare(a, b)
        assert p.has_specials
        assert tiled_backend.run_fp32(p) is None and gemm.run_fp32(p) is None
        ref = bits(reference.run_fp32_fixed(p, Fp32Acc()))
        np.testing.assert_array_equal(bits(matmul(a, b)), ref)
        np.testing.assert_array_equal(bits(matmul(to_torch(a), to_torch(b))), ref)


def test_gemm_chunking(monkeypatch):
    """Default and tiny chunks (down to one row and one segment per GEMM call), tiles split along N
    for few rows (N = 600), CPU worker threads; the bits do not change."""
    rng = np.random.default_rng(8)
    cases = []
    for fa, fb in [("mxint8", "mxint4"), ("mxfp4", "mxfp8_e4m3"), ("nvfp4", "nvfp4")]:
        for M, N in [(5, 6), (2, 600)]:
            a = make_operand(fa, "a", M, 130, rng, scale_lo=100, scale_hi=150)
            b = make_operand(fb, "b", N, 130, rng, scale_lo=100, scale_hi=150)
            cases.append((prepare(a, b), bits(reference.run_fp32_fixed(prepare(a, b), Fp32Acc()))))
    for budget, rows in ((gemm.CHUNK_BYTES_CPU, gemm.CHUNK_ROWS), (1, 1), (6 * 8 * 3, 2)):
        monkeypatch.setattr(gemm, "CHUNK_BYTES_CPU", budget)
        monkeypatch.setattr(gemm, "CHUNK_ROWS", rows)
        for p, ref in cases:
            for y in _gemm_b_layouts(p) + _gemm_b_layouts(p.converted("torch"), portable=True):
                np.testing.assert_array_equal(bits(y), ref)


def test_fp32_accumulator_order_and_bound_large_k():
    """Many segments with cancellation: the fast paths keep the in-order fp32 accumulation (they
    equal the reference, which differs from the exact sum), and stay within the docs/spec/matmul.md §7 bound."""
    rng = np.random.default_rng(11)
    K = 32 * 48
    x = (rng.standard_normal((8, K)) * np.exp(4 * rng.standard_normal((8, K)))).astype(np.float32)
    w = (rng.standard_normal((12, K)) * np.exp(2 * rng.standard_normal((12, K)))).astype(np.float32)
    for fa, fb in [("mxint8", "mxint8"), ("mxfp4", "mxfp8_e4m3")]:
        a, b = F.quantize(x, fa), F.quantize(w, fb).T
        assert_paths_equal(a, b, f"{fa}x{fb} large K")
        y = matmul(a, b).astype(np.float64)
        exact = matmul(a, b, accumulator="exact")
        assert np.any(y != exact)          # fp32 accumulation rounds here
        absprod = np.abs(a.dequantize().astype(np.float64)) @ np.abs(b.dequantize().astype(np.float64))
        J = K // 32
        u = 2.0 ** -24
        assert np.all(np.abs(y - exact) <= J * u / (1 - J * u) * absprod + J * 2.0 ** -150)


def test_element_lut_matches_int_values():
    """The converters' code -> integer table is QTensor.int_values of every code."""
    for fmt in ["mxint8", "mxint4", "mxint8_full", "mxint2", "mxfp4", "mxfp6_e2m3", "mxfp6_e3m2",
                "mxfp8_e4m3", "nvfp4", "bfp4", "bfp8", "int8_tok", "int4_g128"]:
        spec = F.get(fmt)
        lut, sp = element_lut(__import__("hwsim.matmul.datapath", fromlist=["x"]).operand_facts(fmt))
        n = 1 << spec.element_bits
        codes = np.arange(n).reshape(1, n)
        blk = spec.block_size or n
        scales = np.full((1, -(-n // blk)), 127 if isinstance(getattr(spec, "scale", None), F.ExpScale) else 0x3C)
        if isinstance(spec, F.ScaledIntSpec):
            scales = np.full((1, 1 if spec.granularity != "group" else -(-n // spec.group_size)), 0x3C00)
        ts = 1.0 if getattr(spec, "tensor_scale", None) else None
        q = F.QTensor.from_codes(spec, codes, scales=scales, tensor_scale=ts, axis=-1)
        k = np.asarray(q.int_values()).reshape(-1)[:n]
        assert lut.shape == (256,) and not lut[n:].any()
        ok = np.ones(n, bool) if sp.size == 0 else sp[:n] == 0
        np.testing.assert_array_equal(lut[:n][ok], k[ok], err_msg=fmt)


def test_auto_routes_cpu_fp32_to_gemm(monkeypatch):
    """auto on CPU: the GEMM path for the fp32 accumulator (numpy and torch), numba / torch otherwise."""
    calls = []
    real = gemm.run_fp32
    monkeypatch.setattr(gemm, "run_fp32", lambda p, portable=False: calls.append(1) or real(p, portable))
    a = make_operand("mxint8", "a", 3, 64, np.random.default_rng(0))
    b = make_operand("mxint4", "b", 2, 64, np.random.default_rng(1))
    y = matmul(a, b)
    assert calls and isinstance(y, np.ndarray)
    calls.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        matmul(a, b, accumulator="fixed:24:8")
    assert not calls


@pytest.mark.parametrize("how", ["legacy-medium", "mkldnn-bf16"])
def test_reduced_precision_matmul_settings_do_not_leak_in(how):
    """The GEMM path (and fake mode) force IEEE fp32 matmuls and restore the user's setting."""
    mk, cu = torch.backends.mkldnn.matmul, torch.backends.cuda.matmul
    old = mk.fp32_precision, cu.fp32_precision
    a = make_operand("mxint8", "a", 70, 96, np.random.default_rng(0))
    b = make_operand("mxint8", "b", 33, 96, np.random.default_rng(1))
    ref = bits(matmul(a, b, backend="numba"))
    try:
        if how == "legacy-medium":
            torch.set_float32_matmul_precision("medium")
        else:
            mk.fp32_precision = "bf16"
        before = mk.fp32_precision
        assert before != "ieee"
        np.testing.assert_array_equal(bits(matmul(a, b)), ref)
        np.testing.assert_array_equal(bits(matmul(to_torch(a), to_torch(b), backend="torch")), ref)
        assert mk.fp32_precision == before
    finally:
        mk.fp32_precision, cu.fp32_precision = old
    torch.get_float32_matmul_precision()      # the legacy query still works afterwards
