"""Exhaustive sweeps (docs/spec/formats.md §7.1-7.3): decode of every element code and every E8M0 byte,
encode of all 65,536 bf16 patterns standalone, with block size 1 and in blocks of 32, on both
codecs, against ml_dtypes casts and the independent oracle in fmt_oracle.py."""

import warnings

import ml_dtypes as mld
import numpy as np
import pytest
import torch

import fmt_oracle as O
import hwsim.formats as F
from fmt_helpers import (BACKENDS, BFP_PRESETS, MINI_PRESETS, MX_PRESETS, assert_same_float_bits,
                         assert_same_ints, quantize, summary, with_block)

ALL_BF16 = (np.arange(1 << 16, dtype=np.uint32) << 16).view(np.float32)
FINITE_BF16 = ALL_BF16[np.isfinite(ALL_BF16)]

MINI_DT = {"fp8_e4m3": mld.float8_e4m3fn, "fp8_e5m2": mld.float8_e5m2, "fp6_e3m2": mld.float6_e3m2fn,
           "fp6_e2m3": mld.float6_e2m3fn, "fp4_e2m1": mld.float4_e2m1fn}
MINI_BITS = {"fp8_e4m3": 8, "fp8_e5m2": 8, "fp6_e3m2": 6, "fp6_e2m3": 6, "fp4_e2m1": 4}


# ----------------------------------------------------------------------------- decode
@pytest.mark.parametrize("name", MINI_PRESETS)
def test_decode_every_minifloat_code(name):
    codes = np.arange(2 ** MINI_BITS[name], dtype=np.uint8)
    exp = codes.view(MINI_DT[name]).astype(np.float32)
    assert_same_float_bits(F.decode_elem(codes, F.get(name)), exp, name)
    # the same element inside the MX preset
    assert_same_float_bits(F.decode_elem(codes, F.get("mx" + name).elem), exp, "mx" + name)


@pytest.mark.parametrize("name,dt", [("fp16", np.float16), ("bf16", mld.bfloat16)])
def test_decode_every_16bit_code(name, dt):
    codes = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    exp = codes.view(dt).astype(np.float32)
    assert_same_float_bits(F.decode_elem(codes, F.get(name)), exp, name)


def test_decode_fp32_codes_strided():
    """fp32 has 2^32 codes: a strided sweep plus every exponent boundary."""
    codes = np.arange(0, 1 << 32, 4099, dtype=np.uint64).astype(np.uint32)
    edges = np.array([0, 1, 0x007FFFFF, 0x00800000, 0x3F800000, 0x7F7FFFFF, 0x7F800000, 0x7FC00000,
                      0x80000000, 0x80000001, 0xFF800000, 0xFFFFFFFF], np.uint32)
    codes = np.concatenate([codes, edges])
    assert_same_float_bits(F.decode_elem(codes, F.get("fp32")), codes.view(np.float32), "fp32")


@pytest.mark.parametrize("w", range(2, 9))
def test_decode_every_int_code(w):
    codes = np.arange(2 ** w, dtype=np.uint8)
    mx = O.OInt(w, -(w - 2), signmag=False)
    assert_same_float_bits(F.decode_elem(codes, F.get(f"mxint{w}").elem), mx.decode(codes), f"mxint{w}")
    bfp = O.OInt(w, -(w - 1), signmag=True)
    exp = bfp.decode(codes).astype(np.float32)
    assert_same_float_bits(F.decode_elem(codes, F.get(f"bfp{w}").elem), exp, f"bfp{w}")


def _lib(arr, lib):
    return torch.from_numpy(arr) if lib == "torch" else arr


@pytest.mark.parametrize("lib", ["numpy", "torch"])
def test_decode_every_e8m0_byte(lib):
    """All 256 scale bytes: mxint8 element 0x40 (= 1.0) times 2^(byte-127); 0x00 = 2^-127 exactly."""
    spec = F.get("mxint8_b1")
    scales = np.arange(256, dtype=np.uint8).reshape(256, 1)
    q = F.QTensor.from_codes(spec, _lib(np.full((256, 1), 0x40, np.uint8), lib),
                             scales=_lib(scales, lib), shape=(256, 1))
    got = np.asarray(q.dequantize())[:, 0]
    exp = np.arange(256, dtype=np.uint8).view(mld.float8_e8m0fnu).astype(np.float32)
    assert_same_float_bits(got, exp, "E8M0")
    assert got[0] == np.float32(2.0 ** -127) and got[0] != 0
    # top of the range: 0x7F * 2^-6 * 2^127 is finite and exact
    q = F.QTensor.from_codes(spec, _lib(np.array([[0x7F]], np.uint8), lib),
                             scales=_lib(np.array([[254]], np.uint8), lib), shape=(1, 1))
    assert np.asarray(q.dequantize())[0, 0] == np.float32(127 * 2.0 ** 121)
    # subnormal results round once: 0x7F * 2^-6 * 2^-127 = 127 * 2^-133 is exact in fp32
    q = F.QTensor.from_codes(spec, _lib(np.array([[0x7F], [0x41]], np.uint8), lib),
                             scales=_lib(np.array([[0], [0]], np.uint8), lib), shape=(2, 1))
    assert_same_float_bits(np.asarray(q.dequantize())[:, 0],
                           np.array([127 * 2.0 ** -133, 65 * 2.0 ** -133], np.float32), "subnormal")


@pytest.mark.parametrize("lib", ["numpy", "torch"])
def test_decode_bfp_scale_255_split_multiply(lib):
    """BFP scale byte 255 is e = 128 (not NaN); 2^128 is not an fp32 value, the product is."""
    spec = F.get("bfp8_b1")
    q = F.QTensor.from_codes(spec, _lib(np.array([[0x40], [0x7F]], np.uint8), lib),
                             scales=_lib(np.array([[255], [255]], np.uint8), lib), shape=(2, 1))
    got = np.asarray(q.dequantize())[:, 0]
    assert_same_float_bits(got, np.array([2.0 ** 127, 127 * 2.0 ** 121], np.float32))


def test_decode_nvfp4_and_sint_from_codes():
    q = F.QTensor.from_codes(F.get("nvfp4"), np.array([7, 0xD] + [0] * 14, np.uint8),
                             scales=np.array([0x49], np.uint8), tensor_scale=np.float32(0.03720238),
                             shape=(16,))
    d = np.float32(np.float32(4.5) * np.float32(0.03720238))
    assert_same_float_bits(np.asarray(q.dequantize())[:2], np.array([6 * d, -3 * d], np.float32))


# ----------------------------------------------------------------------------- standalone encode
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", MINI_PRESETS)
def test_encode_all_bf16_standalone(backend, name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = summary(quantize(ALL_BF16, name, backend))
    exp_codes, exp_vals = O.element_cast(ALL_BF16, name, clip=True)
    fin = np.isfinite(ALL_BF16)
    assert s["scales"] is None
    assert_same_ints(s["codes"][fin], exp_codes[fin], f"{name} codes")
    assert_same_float_bits(s["decoded"][fin], exp_vals[fin], f"{name} values")
    # non-finite inputs (docs/spec/formats.md §3.1): NaN -> NaN code with the input's sign (or -0 for "none" formats);
    # +-Inf -> +-max when saturating
    nan = np.isnan(ALL_BF16)
    if name in ("fp6_e3m2", "fp6_e2m3", "fp4_e2m1"):
        neg0 = 1 << (MINI_BITS[name] - 1)
        assert (s["codes"][nan] == neg0).all(), f"{name}: NaN must encode -0"
    else:
        assert np.isnan(s["decoded"][nan]).all()
        sign = (ALL_BF16[nan].view(np.uint32) >> 31).astype(np.int64)
        nan_code = {"fp8_e4m3": 0x7F, "fp8_e5m2": 0x7E}[name]
        assert_same_ints(s["codes"][nan], nan_code | (sign << 7), f"{name} NaN codes")
    inf = np.isinf(ALL_BF16)
    m = O.STANDALONE_MAX[name]
    assert_same_float_bits(s["decoded"][inf], np.where(ALL_BF16[inf] > 0, m, -m).astype(np.float32))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["fp8_e4m3_nosat", "fp8_e5m2_nosat"])
def test_encode_all_bf16_nosat(backend, name):
    s = summary(quantize(ALL_BF16, name, backend))
    exp_codes, exp_vals = O.element_cast(ALL_BF16, name.replace("_nosat", ""), clip=False)
    nan = np.isnan(exp_vals)
    assert_same_ints(s["codes"][~nan], exp_codes[~nan], f"{name} codes")
    assert np.isnan(s["decoded"][nan]).all()
    assert_same_float_bits(s["decoded"], exp_vals, f"{name} values")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["bf16", "fp16", "fp32"])
def test_encode_all_bf16_ieee(backend, name):
    s = summary(quantize(ALL_BF16, name, backend))
    exp_codes, exp_vals = O.element_cast(ALL_BF16, name)
    nan = np.isnan(ALL_BF16)
    assert_same_ints(s["codes"][~nan], exp_codes[~nan], f"{name} codes")
    assert_same_float_bits(s["decoded"], exp_vals, f"{name} values")


@pytest.mark.parametrize("backend", BACKENDS)
def test_encode_fp16_rounding_sweep(backend):
    """fp16 from fp32 values between bf16 patterns (ties and near-ties) matches numpy's RNE cast."""
    rng = np.random.default_rng(0)
    n = 200_000
    sign = rng.integers(0, 2, n, dtype=np.uint64) << 31
    expo = rng.integers(127 - 28, 127 + 18, n, dtype=np.uint64) << 23  # fp16 subnormals .. overflow
    mant = rng.integers(0, 1 << 23, n, dtype=np.uint64)
    mant[::3] &= ~np.uint64(0x1FFF)  # exact fp16 values, and ties below:
    mant[1::3] = (mant[1::3] & ~np.uint64(0x1FFF)) | np.uint64(0x1000)
    x = (sign | expo | mant).astype(np.uint32).view(np.float32)
    s = summary(quantize(x, "fp16", backend))
    assert_same_ints(s["codes"], x.astype(np.float16).view(np.uint16), "fp16 codes")


# ----------------------------------------------------------------------------- block encode
BLOCK_NAMES = MX_PRESETS + BFP_PRESETS + ("mxint8_full", "mxint4_ceil", "mxint8_rceil", "mxfp8_e4m3_rceil",
                                          "mxfp4_rceil", "mxfp6_e2m3_ceil", "mxint8_se5", "mxfp8_e5m2_se6",
                                          "mxint4_ftz", "bfp4_floor", "bfp8_b32")


def _check_vs_oracle(backend, x, name, axis=-1, **kw):
    s = summary(quantize(x, name, backend, axis=axis, **kw))
    o = O.block_quantize(x, name, axis=axis, rounding=kw.get("rounding"), seed=kw.get("seed"))
    assert_same_ints(s["codes"], o["codes"], f"{name} codes")
    assert_same_ints(s["scales"], o["scales"], f"{name} scales")
    assert_same_float_bits(s["decoded"], o["decoded"], f"{name} decoded")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", BLOCK_NAMES)
def test_encode_all_bf16_block_size_1(backend, name):
    """`_b1`: every element is its own block, which sweeps the scale logic."""
    nm = with_block(name, 1)
    x = FINITE_BF16 if name.startswith("bfp") else ALL_BF16
    _check_vs_oracle(backend, x, nm)


def _block_layouts():
    rng = np.random.default_rng(1234)
    shuffled = FINITE_BF16[rng.permutation(FINITE_BF16.size)]
    # 32 consecutive patterns share an exponent; the shuffle gives blocks with a wide dynamic range
    return {"sorted": FINITE_BF16[: FINITE_BF16.size // 32 * 32].reshape(-1, 32),
            "shuffled": shuffled[: shuffled.size // 32 * 32].reshape(-1, 32)}


LAYOUTS = _block_layouts()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", BLOCK_NAMES)
def test_encode_all_bf16_blocks_of_32(backend, name):
    nm = name if "_b32" in name else with_block(name, 32)  # bfp presets have B = 16: force 32
    for layout, x in LAYOUTS.items():
        _check_vs_oracle(backend, x, nm)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["mxint8", "mxint4", "mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e3m2", "mxfp4_e2m1",
                                  "bfp4", "bfp8"])
@pytest.mark.parametrize("mode", ["rna", "rtz", "rdn", "sr"])
def test_encode_all_bf16_blocks_rounding_modes(backend, name, mode):
    x = LAYOUTS["shuffled"]
    kw = {"seed": 2 ** 40 + 12345} if mode == "sr" else {}
    _check_vs_oracle(backend, x, f"{name}_{mode}", **kw)
    _check_vs_oracle(backend, np.ascontiguousarray(x[:, :24]), f"{name}_{mode}", **kw)  # short tails


@pytest.mark.parametrize("backend", BACKENDS)
def test_encode_nonfinite_bf16_blocks(backend):
    """Blocks holding each NaN/Inf bf16 pattern become NaN blocks (MX); BFP raises."""
    nonfin = ALL_BF16[~np.isfinite(ALL_BF16)]
    x = np.ones((nonfin.size, 4), np.float32)
    x[:, 2] = nonfin
    for name in ("mxint8", "mxfp8_e4m3", "mxfp4_e2m1", "mxint8_se5"):
        _check_vs_oracle(backend, x, name)
        s = summary(quantize(x, name, backend))
        assert np.isnan(s["decoded"]).all()
    with pytest.raises(F.NonFiniteError):
        quantize(x, "bfp4", backend)
