"""The LQER-claim section of a report (hwsim.report.claims) on hand-made rows."""

import pandas as pd
import pytest

from hwsim.cost_models import fpga
from hwsim.report.claims import BASELINE, CANDIDATE, lqer_claim_html, lqer_claim_table


def rows(acc):
    hw = f"32x32 ws 45nm HBM2 acc={acc}"
    return [{"status": "ok", "setting": BASELINE, "hw_label": hw, "acc": acc, "ppl": 40.0, "bits_per_weight": 4.0,
             "area_mm2": 2.0, "tops_per_mm2": 0.5, "energy_per_token_uj": 10.0},
            {"status": "ok", "setting": CANDIDATE, "hw_label": hw, "acc": acc, "ppl": 30.0, "bits_per_weight": 5.0,
             "area_mm2": 4.0, "tops_per_mm2": 0.8, "energy_per_token_uj": 12.0},
            {"status": "ok", "setting": "FP16", "hw_label": hw, "acc": acc, "ppl": 25.0, "bits_per_weight": 16.0,
             "area_mm2": 9.0, "tops_per_mm2": 0.1, "energy_per_token_uj": 30.0}]


def test_ratios_per_hardware_point():
    t = lqer_claim_table(pd.DataFrame(rows("int32") + rows("int24")))
    assert list(t["accumulator bits (integer baselines)"]) == [32, 24]
    assert list(t["FPGA LUT model"]) == [fpga.headline(32), fpga.headline(24)]
    assert t["ASIC array, iso-throughput"].tolist() == pytest.approx([1.6, 1.6])
    assert t["ASIC array, same array size"].tolist() == pytest.approx([0.5, 0.5])
    page = lqer_claim_html(pd.DataFrame(rows("int32")))
    assert "published: 1.36x" in page and "1.60x the area per delivered TOPS" in page and "FP16" in page


def test_no_section_without_both_designs():
    df = pd.DataFrame(rows("int32"))
    assert lqer_claim_html(df[df["setting"] != CANDIDATE]) == ""
    failed = df.assign(status=["ok", "failed", "ok"])
    assert lqer_claim_table(failed) is None
