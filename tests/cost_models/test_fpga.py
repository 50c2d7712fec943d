"""LQER-paper comparison mode (docs/spec/cost_model.md §7.5)."""

import pytest

from hwsim.cost_models import fpga


def test_ordering_and_headline():
    t = fpga.lqer_table().set_index("method")
    assert list(fpga.lqer_table().columns[:4]) == ["method", "model_area", "published_area", "residual"]
    m = t.model_area
    assert m["LLM.int4()"] > m["GPTQ/AWQ W4"] > m["FP16"]
    assert m["FP16"] > max(m["AQAS-like W4A8"], m["OmniQuant-like W6A6"])
    assert min(m["AQAS-like W4A8"], m["OmniQuant-like W6A6"]) > m["L2QER MXINT W4A8"] > m["L2QER MXINT W4A6"]
    assert abs(m["AQAS-like W4A8"] / m["OmniQuant-like W6A6"] - 1) <= 0.10
    h = fpga.headline()
    assert 1.2 <= h <= 1.6
    assert t.published_area["L2QER MXINT W4A8"] == pytest.approx(1993.375)
    assert (t.residual - (m / t.published_area - 1)).abs().max() < 1e-12


def test_accumulator_sensitivity():
    s = fpga.sensitivity((32, 24)).set_index("acc_bits").headline
    assert s[24] <= 1.1 < s[32]


def test_fit_is_deterministic_and_matches_stored_constants():
    f1, f2 = fpga.fit_constants(), fpga.fit_constants()
    assert f1 == f2
    stored = fpga.load_constants()
    for k, v in f1["constants"].items():
        assert v >= 0 and stored["constants"][k] == pytest.approx(v, rel=1e-6, abs=1e-9)
        assert stored["at_bound"][k] == f1["at_bound"][k]
    c = f1["constants"]
    assert c["lut_per_bitprod"] == pytest.approx(0.5) and c["lut_per_mux_bit"] == pytest.approx(1 / 3)
    assert c["lut_per_adder_bit"] >= 1 and c["lut_per_fp16_op"] > 0


def test_inventory_counts():
    assert fpga.shifter_mux_bits(7, 7) == 21
    e = fpga.mxint_engine(8, 4)
    assert (e.bitprods, e.adder_bits, e.mux_bits) == (512, 15 * 14 + 27 + 8, 3 * 14 + 21 + 14)
    assert fpga.fixed_point_engine(8, 4, 24).adder_bits == 16 * 24
    parts = fpga.mxint_parts()
    assert set(parts) == {"L2QER MXINT W4A8", "L2QER MXINT W4A6"}


def test_report_text():
    txt = fpga.format_report()
    assert "FPGA LUT (HLS design)" in txt and "acc_bits = 24" in txt and "headline" in txt
