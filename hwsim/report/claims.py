"""The LQER paper's "1.36x fewer hardware resources" claim, checked two ways side by side.

The study ``studies/lqer_claim.toml`` names its designs (``setting``); when a study holds both
:data:`BASELINE` and :data:`CANDIDATE`, the report gets a section with

- the **FPGA LUT model** (``hwsim.cost_models.fpga``): the published HLS designs re-derived from
  five fitted constants, AQAS-like / L2QER for each accumulator width of the study;
- **hwsim's ASIC systolic array at iso-throughput**: the ratio of area per unit of delivered
  prefill throughput, i.e. ``TOPS/mm^2(candidate) / TOPS/mm^2(baseline)`` on the same hardware
  point (the same array size delivers different MACs per cycle: 1 per integer PE, B per block
  dot-product PE; dividing by the delivered throughput makes the two designs comparable);

and every named design's perplexity next to its area.
"""

from __future__ import annotations

import html
import re

import pandas as pd

__all__ = ["BASELINE", "CANDIDATE", "PUBLISHED_RATIO", "lqer_claim_table", "lqer_claim_html"]

BASELINE = "AQAS-like W4A8"
CANDIDATE = "L2QER MXINT W4A8"
#: the paper's headline: L2QER W4A8 uses 1.36x fewer resources than the AQAS-like W4A8 baseline
PUBLISHED_RATIO = 1.36
#: accumulator width of the FPGA model when a hardware point sets none (the HLS ``int`` of the baselines)
DEFAULT_ACC_BITS = 32


def _acc_bits(acc) -> int:
    m = re.search(r"(\d+)", str(acc)) if acc is not None and acc == acc else None
    return int(m.group(1)) if m else DEFAULT_ACC_BITS


def lqer_claim_table(df: pd.DataFrame) -> pd.DataFrame | None:
    """One row per hardware point: FPGA LUT ratio, ASIC iso-throughput ratio, published ratio.

    None when the study does not hold both named designs with successful results.
    """
    if "setting" not in df or "tops_per_mm2" not in df:
        return None
    ok = df[df["status"] == "ok"]
    if not {BASELINE, CANDIDATE} <= set(ok["setting"]):
        return None
    from hwsim.cost_models import fpga

    rows = []
    for hw, grp in ok.groupby("hw_label", sort=False):
        by = grp.set_index("setting")
        if not {BASELINE, CANDIDATE} <= set(by.index):
            continue
        base, cand = by.loc[BASELINE], by.loc[CANDIDATE]
        acc_bits = _acc_bits(base.get("acc"))
        rows.append({"hardware": hw, "accumulator bits (integer baselines)": acc_bits,
                     "FPGA LUT model": fpga.headline(acc_bits),
                     "ASIC array, iso-throughput": cand["tops_per_mm2"] / base["tops_per_mm2"],
                     "ASIC array, same array size": base["area_mm2"] / cand["area_mm2"],
                     "published": PUBLISHED_RATIO,
                     f"ppl {BASELINE}": base["ppl"], f"ppl {CANDIDATE}": cand["ppl"]})
    return pd.DataFrame(rows) if rows else None


def lqer_claim_html(df: pd.DataFrame) -> str:
    """The report section (HTML), or "" when the study does not test the claim."""
    table = lqer_claim_table(df)
    if table is None:
        return ""
    esc = html.escape
    sentences = []
    for _, r in table.iterrows():
        sentences.append(
            f"On {r['hardware']} with {r['accumulator bits (integer baselines)']}-bit sums in the integer "
            f"baseline, {BASELINE} needs {r['FPGA LUT model']:.2f}x the resources of {CANDIDATE} in the FPGA LUT "
            f"model and {r['ASIC array, iso-throughput']:.2f}x the area per delivered TOPS on the ASIC array "
            f"(published: {PUBLISHED_RATIO:.2f}x).")
    ok = df[(df["status"] == "ok") & df["setting"].astype(bool)]
    designs = (ok.groupby(["setting", "hw_label"], sort=False)
               [["ppl", "bits_per_weight", "area_mm2", "tops_per_mm2", "energy_per_token_uj"]].first().reset_index())
    fmt = {"ppl": "{:.2f}", "bits_per_weight": "{:.3f}", "area_mm2": "{:.3f}", "tops_per_mm2": "{:.3f}",
           "energy_per_token_uj": "{:.2f}"}
    return ("<section id=\"lqer-claim\"><h2>The LQER claim: 1.36x fewer hardware resources</h2>"
            + "".join(f"<p>{esc(s)}</p>" for s in sentences)
            + "<p class=\"note\">Ratio = resources of the baseline / resources of L2QER (above 1: L2QER is "
              "cheaper). FPGA: the published HLS designs re-derived from fitted LUT constants. ASIC: "
              "TOPS/mm<sup>2</sup> at the prefill pass, so designs with different MACs per PE compare at equal "
              "throughput; the same-array-size ratio is shown for reference.</p>"
            + table.to_html(index=False, float_format=lambda v: f"{v:.3f}", classes="claim", border=0)
            + "<h3>Every named design</h3>"
            + designs.to_html(index=False, formatters={k: v.format for k, v in fmt.items()}, classes="claim",
                              border=0)
            + "</section>")
