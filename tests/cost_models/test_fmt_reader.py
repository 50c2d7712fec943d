"""``cost_models.fmt`` is a thin reader of ``hwsim.formats`` specs (issue 14): every width a
FormatInfo gives is the spec's own accessor under the spec's name; no second notion of emax,
significand bits or bits per element remains. The cost numbers did not move
(tests/cost_models/test_acc_reference.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import hwsim.formats as F
from hwsim.cost_models.fmt import BF16, FP16, FP32, FormatInfo, describe

PRESETS = sorted(F.PRESETS)


def test_a_formatinfo_holds_the_spec_and_nothing_else():
    assert [f.name for f in dataclasses.fields(FormatInfo)] == ["spec", "block"]
    with pytest.raises(ValueError, match="not a recognised format spec"):
        FormatInfo("mxint4")


@pytest.mark.parametrize("name", PRESETS)
def test_every_width_is_the_specs(name):
    spec = F.get(name)
    f = describe(name)
    assert f.spec == spec and f.name == spec.name
    assert f.element_bits == spec.element_bits
    assert f.significand_bits == spec.significand_bits
    assert f.exponent_bits == spec.exponent_bits
    elem = spec if isinstance(spec, F.FloatElem) else getattr(spec, "elem", None)
    if isinstance(elem, F.FloatElem):
        assert (f.emin, f.emax) == (elem.emin, elem.emax)
        assert f.operand_bits == spec.significand_bits and f.man_bits == elem.mbits
    else:
        assert (f.emin, f.emax) == (0, 0) and f.operand_bits == spec.element_bits
    assert f.scale_bits == getattr(spec, "scale_bits", 0)
    if isinstance(spec, F.BlockSpec) or getattr(spec, "granularity", None) == "group":
        assert f.block_size == spec.block_size
        assert f.bits_per_element() == spec.bits_per_element()
    elif isinstance(spec, F.ScaledIntSpec) and spec.granularity in ("channel", "token"):
        assert f.bits_per_element(4096) == spec.bits_per_element(shape=(7, 4096))
    else:
        assert f.bits_per_element() == spec.bits_per_element()


@pytest.mark.parametrize("name", ["mxint4", "mxint8", "mxfp4", "nvfp4", "bfp6", "int4_g128", "int4_g128_asym",
                                  "int8_tok", "int4_ch", "fp8_e4m3", "bf16"])
@pytest.mark.parametrize("rows,k", [(3, 256), (5, 200)])
def test_footprint_is_what_a_qtensor_stores(name, rows, k):
    spec = F.get(name)
    if isinstance(spec, F.ScaledIntSpec) and spec.granularity == "group" and k % spec.group_size:
        k = spec.group_size * 2
    rng = np.random.default_rng(0)
    q = F.quantize(rng.standard_normal((rows, k)).astype(np.float32), name)
    assert describe(name).nbytes(rows, k) == q.nbytes


def test_internal_float_datapaths_are_the_format_specs():
    for info, name in ((FP16, "fp16"), (FP32, "fp32"), (BF16, "bf16")):
        s = F.get(name)
        assert info.spec == s and (info.exponent_bits, info.man_bits) == (s.ebits, s.mbits)
        assert (info.emin, info.emax) == (s.emin, s.emax)


def test_a_smaller_dot_block_overrides_the_block_size_only():
    f = describe("mxint8")
    g = dataclasses.replace(f, block=16)
    assert g.block_size == 16 and f.block_size == 32 and g.spec == f.spec and g.element_bits == 8
