"""Registry, names, spec fields and derived quantities, bad-input errors, nbytes and
bits_per_element (docs/spec/formats.md §1, §4, §5, §7.6)."""

import dataclasses
import itertools

import numpy as np
import pytest
import torch

import hwsim.formats as F
from fmt_helpers import MX_PRESETS, REQUIRED_PRESETS

ROUND_SFX = ("", "_rna", "_rtz", "_rdn", "_sr")


def test_required_presets_listed():
    names = F.list_formats()
    missing = [n for n in REQUIRED_PRESETS if n not in names]
    assert not missing, missing
    for n in names:
        assert F.get(n).name == n, f"preset {n} has canonical name {F.get(n).name}"


def _modifier_names():
    out = []
    for base in ("mxint8", "mxint4", "mxint2", "mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e3m2", "mxfp6_e2m3", "mxfp4_e2m1"):
        mods = ["_b16", "_b1", "_b64", "_ceil", "_rceil", "_se5", "_ftz"] + (["_full"] if "int" in base else [])
        for m in mods:
            out.append(base + m)
        out += [base + r for r in ROUND_SFX[1:]]
        out.append(base + "_b16_rceil_se6" + ("_full" if "int" in base else "") + "_ftz_rna")
    for w in range(2, 9):
        out += [f"bfp{w}_b32", f"bfp{w}_floor", f"bfp{w}_b8_floor_rtz", f"bfp{w}_sr"]
    for mini in ("fp8_e4m3", "fp8_e5m2", "fp6_e3m2", "fp6_e2m3", "fp4_e2m1"):
        out += [mini + "_nosat", mini + "_rdn", mini + "_nosat_sr"]
    out += ["nvfp4" + r for r in ROUND_SFX[1:]]
    for b in (2, 3, 4, 8):
        out += [f"int{b}_ch", f"int{b}_tok", f"int{b}_g64", f"int{b}_g128_asym", f"int{b}_ch_hr", f"int{b}_g32_c90",
                f"int{b}_tok_sbf16", f"int{b}_ch_sf32", f"int{b}_g64_asym_hr_c85_sbf16_rna", f"int{b}", f"int{b}_asym"]
    return out


@pytest.mark.parametrize("name", _modifier_names())
def test_name_round_trip(name):
    spec = F.get(name)
    if name.startswith(("fp6", "fp4")) and "_nosat" in name and spec.name != name:
        # "none" formats always saturate (docs/spec/formats.md §1.2): _nosat is a no-op there and may be dropped
        name = name.replace("_nosat", "")
        assert spec == F.get(name)
    assert spec.name == name, f"{name} -> canonical {spec.name}"
    assert F.format_name(spec) == name
    assert F.get(spec.name) == spec
    assert F.get(spec) is spec
    assert hash(spec) == hash(F.get(name))
    assert F.get(name.upper()) == spec


def test_aliases_defaults_and_order():
    assert F.get("mxfp4") == F.get("mxfp4_e2m1") and F.get("mxfp4").name == "mxfp4_e2m1"
    assert F.get("fp4") == F.get("fp4_e2m1") and F.get("fp4").name == "fp4_e2m1"
    for n in ("mxint4_b32", "mxint4_floor", "mxint4_rne", "mxint4_se8", "mxint4_b32_floor_se8_rne"):
        assert F.get(n).name == "mxint4", n
    assert F.get("bfp4_b16").name == "bfp4"
    assert F.get("mxint4_rna_b16").name == "mxint4_b16_rna"
    assert F.get("mxint8_ftz_full_rceil_b16").name == "mxint8_b16_rceil_full_ftz"
    assert F.get("int4_sbf16_c90_g64").name == "int4_g64_c90_sbf16"
    assert F.get("MXFP8_E4M3_RCEIL").name == "mxfp8_e4m3_rceil"


@pytest.mark.parametrize("bad", ["mxint9", "mxint1", "mxint4_b0", "mxint4_b16_b16", "mxint4_floor_ceil",
                                 "mxint4_rna_rtz", "bfp4_ceil", "bfp9", "fp8_e4m3_b16", "mxfp7_e3m3", "int4_g0",
                                 "int4_c0", "int4_c101", "int9_ch", "nvfp4_b32", "bf16_rna", "mxnit4", "", "mx",
                                 "mxint4_", "int4_ch_tok", "mxint4_full_full", "fp16_nosat"])
def test_bad_names(bad):
    with pytest.raises(F.FormatNameError) as ei:
        F.get(bad)
    assert isinstance(ei.value, ValueError)
    msg = str(ei.value)
    assert repr(bad) in msg or f'"{bad}"' in msg, msg[:200]
    for p in F.list_formats():
        assert p in msg, f"preset {p} not listed in the error for {bad!r}"
    assert ":=" in msg and "round" in msg and "_rceil" in msg, "grammar missing from the error"


def test_bad_name_suggestion():
    """A close-match suggestion (difflib) comes before the preset list and the grammar."""
    msg = str(pytest.raises(F.FormatNameError, F.get, "mxnit4").value)
    first = msg.split("\n")[0]
    assert "mxint4" in first, first
    assert "'mxnit4'" in first or '"mxnit4"' in first


@pytest.mark.parametrize("bare", ["fp6", "mxfp6", "FP6"])
def test_bare_fp6_is_ambiguous(bare):
    msg = str(pytest.raises(F.FormatNameError, F.get, bare).value)
    assert "ambiguous" in msg.lower()
    first = msg.split("\n")[0]
    assert "e3m2" in first and "e2m3" in first, first


def test_get_rejects_non_names():
    with pytest.raises((F.FormatNameError, TypeError, ValueError)):
        F.get(42)


# ----------------------------------------------------------------------------- derived quantities
DERIVED = {
    # name: element_bits, significand_bits, exponent_bits, scale_bits, block_size, max_value, quantum_exp,
    #       is_block, is_integer, bits_per_element()
    "mxint8": (8, 7, 0, 8, 32, 127 / 64, -6, True, True, 8.25),
    "mxint6": (6, 5, 0, 8, 32, 1.9375, -4, True, True, 6.25),
    "mxint4": (4, 3, 0, 8, 32, 1.75, -2, True, True, 4.25),
    "mxint3": (3, 2, 0, 8, 32, 1.5, -1, True, True, 3.25),
    "mxint2": (2, 1, 0, 8, 32, 1.0, 0, True, True, 2.25),
    "mxfp8_e4m3": (8, 4, 4, 8, 32, 448.0, -9, True, False, 8.25),
    "mxfp8_e5m2": (8, 3, 5, 8, 32, 57344.0, -16, True, False, 8.25),
    "mxfp6_e3m2": (6, 3, 3, 8, 32, 28.0, -4, True, False, 6.25),
    "mxfp6_e2m3": (6, 4, 2, 8, 32, 7.5, -3, True, False, 6.25),
    "mxfp4_e2m1": (4, 2, 2, 8, 32, 6.0, -1, True, False, 4.25),
    "mxint4_b16": (4, 3, 0, 8, 16, 1.75, -2, True, True, 4.5),
    "mxint8_se5": (8, 7, 0, 5, 32, 127 / 64, -6, True, True, 8 + 5 / 32),
    "bfp4": (4, 3, 0, 8, 16, 0.875, -3, True, True, 4.5),
    "bfp8": (8, 7, 0, 8, 16, 127 / 128, -7, True, True, 8.5),
    "bfp2": (2, 1, 0, 8, 16, 0.5, -1, True, True, 2.5),
    "bfp4_b32": (4, 3, 0, 8, 32, 0.875, -3, True, True, 4.25),
    "fp8_e4m3": (8, 4, 4, 0, None, 448.0, -9, False, False, 8.0),
    "fp8_e5m2": (8, 3, 5, 0, None, 57344.0, -16, False, False, 8.0),
    "fp6_e3m2": (6, 3, 3, 0, None, 28.0, -4, False, False, 6.0),
    "fp6_e2m3": (6, 4, 2, 0, None, 7.5, -3, False, False, 6.0),
    "fp4_e2m1": (4, 2, 2, 0, None, 6.0, -1, False, False, 4.0),
    "fp16": (16, 11, 5, 0, None, 65504.0, -24, False, False, 16.0),
    "bf16": (16, 8, 8, 0, None, float(np.float32(3.3895314e38)), -133, False, False, 16.0),
    "fp32": (32, 24, 8, 0, None, float(np.finfo(np.float32).max), -149, False, False, 32.0),
}


@pytest.mark.parametrize("name", list(DERIVED))
def test_derived_quantities(name):
    s = F.get(name)
    eb, sb, xb, scb, bs, mx, qe, isb, isi, bpe = DERIVED[name]
    got = (s.element_bits, s.significand_bits, s.exponent_bits, s.scale_bits, s.block_size,
           float(s.max_value), s.quantum_exp, s.is_block, s.is_integer, float(s.bits_per_element()))
    exp = (eb, sb, xb, scb, bs, float(mx), qe, isb, isi, float(bpe))
    fields = ("element_bits", "significand_bits", "exponent_bits", "scale_bits", "block_size", "max_value",
              "quantum_exp", "is_block", "is_integer", "bits_per_element")
    bad = [(f, g, e) for f, g, e in zip(fields, got, exp) if g != e]
    assert not bad, bad


def test_bits_per_element_scaled_and_nvfp4():
    assert F.get("nvfp4").bits_per_element(shape=(4, 256)) == pytest.approx(4.5 + 32 / 1024, abs=0)
    assert F.get("nvfp4").block_size == 16 and F.get("nvfp4").scale_bits == 8
    assert F.get("int4_g128").bits_per_element() == 4.125
    assert F.get("int4_g128").block_size == 128
    assert F.get("int4_g128_asym").bits_per_element() == 4.15625
    assert F.get("int8_ch").bits_per_element(shape=(64, 512)) == 8 + 16 / 512
    assert F.get("int8_tok").bits_per_element(shape=(7, 256)) == 8 + 16 / 256
    assert F.get("int8_ch").bits_per_element() == 8.0  # the b + 0 limit without a shape
    assert F.get("int8").bits_per_element(shape=(16, 64)) == 8 + 16 / 1024
    assert F.get("int8_ch_sf32").bits_per_element(shape=(4, 64)) == 8 + 32 / 64
    assert F.get("int4_ch_sbf16").scale_bits == 16 and F.get("int8_ch_sf32").scale_bits == 32
    assert F.get("int4_g128").element_bits == 4 and F.get("int4_g128").is_integer


def test_scale_specs():
    e8 = F.get("mxint8").scale
    assert (e8.bits, e8.bias, e8.nan, e8.e_min, e8.e_max, e8.nan_code) == (8, 127, True, -127, 127, 255)
    assert e8 == F.E8M0
    b = F.get("bfp4").scale
    assert (b.bits, b.bias, b.nan, b.e_min, b.e_max, b.nan_code) == (8, 127, False, -127, 128, None)
    s5 = F.get("mxint8_se5").scale
    assert (s5.bits, s5.bias, s5.e_min, s5.e_max, s5.nan_code) == (5, 15, -15, 15, 31)
    nv = F.get("nvfp4").scale
    assert isinstance(nv, F.FloatScale) and nv.unsigned and nv.elem == F.get("fp8_e4m3")
    assert F.get("int8_ch").scale.elem == F.get("fp16")


def test_spec_objects_frozen_and_validated():
    s = F.get("mxint4")
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.block_size = 16
    for bad in (0, -3, 1.5, True, "32"):
        with pytest.raises(F.FormatSpecError, match="block_size"):
            dataclasses.replace(s, block_size=bad)
    with pytest.raises(F.FormatSpecError, match="bits"):
        F.IntElem(bits=1)
    with pytest.raises(F.FormatSpecError, match="clip_ratio"):
        dataclasses.replace(F.get("int8_ch"), clip_ratio=1.5)
    with pytest.raises(F.FormatSpecError, match="granularity"):
        dataclasses.replace(F.get("int8_ch"), granularity="row")
    assert issubclass(F.FormatSpecError, ValueError)
    # a custom spec built from the dataclasses quantizes like the equivalent name
    custom = dataclasses.replace(F.get("mxint4"), block_size=16)
    assert custom == F.get("mxint4_b16") and custom.name == "mxint4_b16"


# ----------------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize("lib", ["numpy", "torch"])
def test_bad_inputs(lib):
    def arr(a):
        return a if lib == "numpy" else torch.from_numpy(np.asarray(a))

    x = np.ones((2, 64), np.float32)
    with pytest.raises(F.FormatNameError):
        F.quantize(arr(x), "mxint9")
    with pytest.raises(ValueError, match="dtype"):
        F.quantize(arr(np.arange(64, dtype=np.int32)), "mxint8")
    for ax in (2, -3):
        with pytest.raises(ValueError, match="axis"):
            F.quantize(arr(x), "mxint8", axis=ax)
    with pytest.raises(ValueError, match="axis"):
        F.quantize(arr(x), "mxint8", axis=1.0)
    for seed in (float("nan"), float("inf"), -1, 2 ** 64):
        with pytest.raises(ValueError, match="seed"):
            F.quantize(arr(x), "mxint8_sr", seed=seed)
    with pytest.raises(ValueError, match="seed"):
        F.quantize(arr(x), "mxint8_sr")
    with pytest.raises(ValueError, match="rounding"):
        F.quantize(arr(x), "mxint8", rounding="up")
    for shape in ((4, 0), (0,)):
        with pytest.raises(ValueError) as ei:
            F.quantize(arr(np.zeros(shape, np.float32)), "mxint8")
        assert "x" in str(ei.value) or "empty" in str(ei.value).lower()
    bad = np.ones((2, 32), np.float32)
    bad.reshape(-1)[37] = np.nan
    with pytest.raises(F.NonFiniteError, match="37"):
        F.quantize(arr(bad), "bfp8")
    with pytest.raises(F.NonFiniteError):
        F.quantize(arr(bad), "int8_ch")
    with pytest.raises(F.NonFiniteError):
        F.quantize(arr(bad), "int4_g128_asym")


def test_nan_warning_for_formats_without_nan():
    with pytest.warns(F.NonFiniteWarning):
        q = F.quantize(np.array([1.0, np.nan, np.nan], np.float32), "fp4_e2m1")
    assert np.asarray(q.codes).tolist() == [2, 8, 8]
    with pytest.warns(F.NonFiniteWarning):
        F.quantize(torch.tensor([np.nan]), "fp6_e2m3")


# ----------------------------------------------------------------------------- QTensor fields
@pytest.mark.parametrize("lib", ["numpy", "torch"])
def test_qtensor_fields_shapes_dtypes(lib):
    x = np.random.default_rng(0).standard_normal((3, 40, 5)).astype(np.float32)
    xin = x if lib == "numpy" else torch.from_numpy(x)
    q = F.quantize(xin, "mxint4", axis=-2)
    assert q.axis == 1 and tuple(q.shape) == (3, 40, 5)
    assert tuple(q.codes.shape) == (3, 64, 5) and tuple(q.scales.shape) == (3, 2, 5)
    assert str(q.codes.dtype).endswith("uint8") and str(q.scales.dtype).endswith("uint8")
    assert q.zero_points is None and q.tensor_scale is None
    d = q.dequantize()
    assert tuple(d.shape) == (3, 40, 5) and str(d.dtype).endswith("float32")
    assert isinstance(d, np.ndarray) if lib == "numpy" else isinstance(d, torch.Tensor)
    # code dtypes
    for name, cd, sd in (("bf16", "uint16", None), ("fp16", "uint16", None), ("fp32", "uint32", None),
                         ("fp8_e4m3", "uint8", None), ("int8_ch", "uint8", "uint16"), ("int8_ch_sf32", "uint8", "uint32"),
                         ("nvfp4", "uint8", "uint8")):
        q = F.quantize(xin, name)
        assert str(q.codes.dtype).endswith(cd), (name, q.codes.dtype)
        if sd:
            assert str(q.scales.dtype).endswith(sd), (name, q.scales.dtype)
        else:
            assert q.scales is None
    q = F.quantize(xin, "int4_g8_asym")
    assert tuple(q.scales.shape) == (3, 40, 1) and tuple(q.zero_points.shape) == (3, 40, 1)
    assert str(q.zero_points.dtype).endswith("uint8")
    q = F.quantize(xin, "int8")
    assert tuple(q.scales.shape) == (1, 1, 1)
    q = F.quantize(xin, "int8_ch", axis=1)
    assert tuple(q.scales.shape) == (3, 1, 5)


def test_int_values_and_transpose():
    x = np.array([[1.0, -1.0, 0.3, 0.5] + [0] * 28, [2.0, 0.25, -0.75, 0] + [0] * 28], np.float32)
    q = F.quantize(x, "mxint8")
    iv = np.asarray(q.int_values())
    assert iv.dtype == np.int64 and iv.shape == (2, 32)
    assert iv[0, :4].tolist() == [64, -64, 19, 32]
    q = F.quantize(x, "mxfp8_e4m3")
    # amax 1.0 -> e = 0 - 8: element value 1.0 * 2^8 = 256 = 131072 * 2^-9
    assert np.asarray(q.int_values())[0, :2].tolist() == [131072, -131072]
    assert np.asarray(q.int_values())[1, :2].tolist() == [131072, 16384]  # e = -7: 2.0 -> 256, 0.25 -> 32
    qt = q.T
    assert qt.axis == 0 and tuple(qt.shape) == (32, 2)
    np.testing.assert_array_equal(np.asarray(qt.dequantize()), np.asarray(q.dequantize()).T)


def test_fake_quant_numpy_and_straight_through():
    x = np.random.default_rng(1).standard_normal((4, 64)).astype(np.float32)
    y = F.fake_quant(x, "mxfp4")
    assert isinstance(y, np.ndarray)
    np.testing.assert_array_equal(y, F.quantize(x, "mxfp4").dequantize())
    xt = torch.from_numpy(x).requires_grad_(True)
    yt = F.fake_quant(xt, "mxfp4")
    assert isinstance(yt, torch.Tensor) and yt.requires_grad
    np.testing.assert_array_equal(yt.detach().numpy(), y)
    g = torch.randn_like(xt)
    (yt * g).sum().backward()
    np.testing.assert_array_equal(xt.grad.numpy(), g.numpy())


@pytest.mark.parametrize("name", ["mxint8", "mxfp4", "fp8_e4m3", "int4_g32_asym", "nvfp4"])
@pytest.mark.parametrize("axis", [-1, 0])
def test_fake_quant_out_argument(name, axis):
    """out= receives exactly the allocating result (written in place when C-contiguous with the
    block axis last, else through a temporary), is returned, and may be the input itself."""
    x = np.random.default_rng(2).standard_normal((64, 96)).astype(np.float32)
    exp = F.fake_quant(x, name, axis=axis)
    out = np.full_like(x, np.nan)
    assert F.fake_quant(x, name, axis=axis, out=out) is out
    np.testing.assert_array_equal(out.view(np.uint32), exp.view(np.uint32))
    strided = np.full((96, 64), np.nan, np.float32).T  # not C-contiguous
    F.fake_quant(x, name, axis=axis, out=strided)
    np.testing.assert_array_equal(strided.view(np.uint32), exp.view(np.uint32))
    inplace = x.copy()
    F.fake_quant(inplace, name, axis=axis, out=inplace)
    np.testing.assert_array_equal(inplace.view(np.uint32), exp.view(np.uint32))


def test_fake_quant_out_errors():
    x = np.ones((4, 32), np.float32)
    for bad in (np.empty((4, 31), np.float32), np.empty((4, 32), np.float64), [[0.0] * 32] * 4):
        with pytest.raises(ValueError, match="out="):
            F.fake_quant(x, "mxint8", out=bad)
    ro = np.empty((4, 32), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        F.fake_quant(x, "mxint8", out=ro)
    with pytest.raises(ValueError, match="numpy inputs only"):
        F.fake_quant(torch.ones(4, 32), "mxint8", out=np.empty((4, 32), np.float32))


def test_from_codes_validation():
    spec = F.get("mxint4")
    with pytest.raises(ValueError):
        F.QTensor.from_codes(spec, np.full((1, 32), 16, np.uint8), scales=np.array([[127]], np.uint8), shape=(1, 32))
    q = F.QTensor.from_codes(spec, np.zeros((1, 32), np.uint8), scales=np.array([[255]], np.uint8), shape=(1, 32))
    assert np.isnan(np.asarray(q.dequantize())).all()  # NaN scale codes are allowed


# ----------------------------------------------------------------------------- nbytes (docs/spec/formats.md §5)
NBYTES = [("mxint4", (3, 40), 3 * 64 // 2 + 6), ("mxfp6_e3m2", (2, 32), 48 + 2), ("nvfp4", (2, 32), 32 + 4 + 4),
          ("int4_g128_asym", (2, 256), 256 + 8 + 2), ("fp8_e4m3", (10,), 10), ("bf16", (10,), 20),
          ("fp32", (10,), 40), ("int8_ch", (3, 5), 15 + 6), ("int8", (3, 5), 15 + 2), ("mxint8_se5", (1, 64), 64 + 2),
          ("fp4_e2m1", (3,), 2), ("mxint3", (1, 40), 24 + 2), ("bfp4", (1, 40), 24 + 3), ("fp6_e2m3", (5,), 4)]


@pytest.mark.parametrize("name,shape,nbytes", NBYTES)
def test_nbytes(name, shape, nbytes):
    x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    for xin in (x, torch.from_numpy(x)):
        q = F.quantize(xin, name)
        assert q.nbytes == nbytes
        assert q.pack().nbytes == nbytes
