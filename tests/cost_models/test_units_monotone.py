"""Datapath units and 'more bits never cost less' properties (docs/spec/cost_model.md sections 4 and 8)."""

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hwsim.formats as F
from hwsim.cost_models import SystolicArray, build_pe, unit_table
from hwsim.cost_models.fmt import FormatInfo, describe
from hwsim.cost_models.units import block_dot_int, int_mac, mxfp_window

bits = st.integers(2, 16)


def _costs(u):
    return (u.area_um2, *u.actions.values())


def _le(a, b):
    return all(x <= y + 1e-12 for x, y in zip(a, b))


@settings(max_examples=80, deadline=None)
@given(a=bits, b=bits, acc=st.integers(16, 48), da=st.integers(0, 4), db=st.integers(0, 4), dacc=st.integers(0, 8))
def test_int_mac_monotone(a, b, acc, da, db, dacc):
    assert _le(_costs(int_mac(a, b, acc)), _costs(int_mac(a + da, b + db, acc + dacc)))


def _blk(name, b, B, s=8):
    """A block-int format of b-bit elements, blocks of B and an s-bit power-of-two scale (a real spec:
    the cost model reads every width from hwsim.formats)."""
    return FormatInfo(F.BlockSpec(F.IntElem(b), B, F.ExpScale(s, 2 ** (s - 1) - 1)))


@settings(max_examples=80, deadline=None)
@given(a=st.integers(2, 8), b=st.integers(2, 8), s=st.integers(2, 5), acc=st.integers(24, 40),
       da=st.integers(0, 3), db=st.integers(0, 3), ds=st.integers(0, 3), dacc=st.integers(0, 8),
       B=st.sampled_from([8, 16, 32]))
def test_block_dot_monotone(a, b, s, acc, da, db, ds, dacc, B):
    lo = block_dot_int(_blk("a", a, B, s), _blk("w", b, B, s), acc)
    hi = block_dot_int(_blk("a", a + da, B, s + ds), _blk("w", b + db, B, s + ds), acc + dacc)
    assert _le(_costs(lo), _costs(hi))


@settings(max_examples=40, deadline=None)
@given(B=st.sampled_from([8, 16, 32, 64, 128]), s=st.integers(2, 8), b=st.integers(2, 8))
def test_smaller_blocks_never_lower_bpe(B, s, b):
    assert _blk("x", b, B // 2 if B > 8 else B, s).bits_per_element() >= _blk("x", b, B, s).bits_per_element()


FAMILIES = [[f"mxint{b}" for b in (2, 3, 4, 6, 8)], [f"bfp{b}" for b in range(2, 9)],
            ["mxfp4", "mxfp6_e2m3", "mxfp8_e4m3"], ["fp4", "fp6_e2m3", "fp8_e4m3", "fp16", "fp32"]]


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f[0])
@pytest.mark.parametrize("df", ["ws", "os", "is"])
def test_array_costs_monotone_in_bits(family, df):
    arr = SystolicArray(16, 16, df)
    M, K, N = 64, 512, 256
    prev = None
    for f in family:
        r = arr.gemm(M, K, N, f, f)
        cur = (arr.area(f, f).total_um2, r.energy_pj, r.dram_total_bytes, describe(f).nbytes(N, K))
        if prev:
            assert _le(prev, cur), (f, prev, cur)
        prev = cur


@settings(max_examples=30, deadline=None)
@given(a=st.sampled_from(["mxint2", "mxint4", "mxint6", "mxint8"]), w=st.sampled_from(["mxint2", "mxint4", "mxint8"]),
       acc=st.integers(24, 40), dacc=st.integers(0, 8))
def test_accumulator_width_monotone(a, w, acc, dacc):
    arr = SystolicArray(8, 8, "ws")
    lo, hi = arr.gemm(32, 256, 64, a, w, acc=acc), arr.gemm(32, 256, 64, a, w, acc=acc + dacc)
    assert lo.energy_pj <= hi.energy_pj + 1e-9
    assert arr.area(a, w, acc=acc).total_um2 <= arr.area(a, w, acc=acc + dacc).total_um2 + 1e-9


def test_unit_selection():
    assert build_pe("mxint8", "mxint4").pe.name.startswith("BlockDotInt")
    assert build_pe("mxfp8_e4m3", "mxfp4").pe.name.startswith("BlockDotFP")
    assert build_pe("nvfp4", "nvfp4").pe.lanes == 16
    cfg = build_pe("int8_tok", "int8_ch")
    assert cfg.pe.name.startswith("IntMAC") and cfg.rescale.name.startswith("OutputRescale")
    assert build_pe("int8_tok", "int4_g128").rescale_per_group
    cfg = build_pe("fp16", "int4_g128_asym")
    assert cfg.dequant is not None and "zero_point" in [p for p, _, _ in cfg.dequant.compounds[0][1].parts()]
    assert build_pe("bf16", "bf16").pe.name.startswith("FPMAC")
    assert mxfp_window(describe("mxfp8_e4m3"), describe("mxfp8_e4m3"))[0] == 32
    assert mxfp_window(describe("mxfp4"), describe("mxfp4")) == (8, 4)
    t = unit_table("mxint8", "mxint4")
    assert set(t.role) == {"pe", "act_quant"} and (t.energy_pj > 0).all()


def test_anchor_ratios():
    """Section 9 sanity ranges (ratios only)."""
    e = {f: build_pe(f, f).pe for f in ("mxfp4", "mxfp8_e4m3")}
    ratio = (e["mxfp8_e4m3"].energy() / 32) / (e["mxfp4"].energy() / 32)
    assert 1.5 <= ratio <= 4
    assert 4.5 <= 32 / describe("bfp6").bits_per_element() <= 5.5
    mx8 = build_pe("mxint8", "mxint8").pe
    assert build_pe("fp8_e4m3", "fp8_e4m3").pe.energy() >= mx8.energy() / mx8.lanes


@pytest.mark.xfail(strict=True, reason=(
    "issue 16: FP32/BFP6 MAC area is 44 (was 36; spec section 9 range [8, 40], Zhang et al. publish 19). "
    "The BFP6 lane is now priced at gate level (narrow multipliers 2-5x cheaper than the old pp_cpa law) "
    "while FP32 keeps the published Horowitz calibration, which is 1.8-3.8x a gate-level FP32 unit; "
    "at gate level the ratio is about 26 (docs/cost_models.md, gate-level validation)"))
def test_anchor_fp32_over_bfp6_area():
    arr = SystolicArray(4, 4)  # PE = unit + operand registers, per MAC lane
    per_lane_fp32 = arr.pe_area("fp32", "fp32")
    per_lane_bfp6 = arr.pe_area("bfp6", "bfp6") / build_pe("bfp6", "bfp6").lanes
    assert 8 <= per_lane_fp32 / per_lane_bfp6 <= 40
