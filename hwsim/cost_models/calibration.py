"""Calibration table: model components vs published reference points (docs/spec/cost_model.md §3)."""

from __future__ import annotations

from typing import Any

from .components import FPAdder, FPMultiplier, IntAdder, IntMultiplier, SRAM
from .tech import Technology, get_technology, load_data


def calibration_table(node: Any = "45nm", library: str = "horowitz45"):
    """DataFrame with columns component, model_energy_pj, published_energy_pj, model_area_um2,
    published_area_um2 (+ energy_error, area_error = model/published - 1).

    Published values are Horowitz's 45 nm numbers; at another node they are scaled by the same
    node factors as the model (so the errors are node-independent). The last row is the MAESTRO
    int8-MAC cross-check.
    """
    import pandas as pd

    t = get_technology(Technology(library=library), node)
    ref = load_data("horowitz45")["reference"]
    # published numbers are at 45 nm: bring them to the requested node
    ref_t = Technology(library="horowitz45", node_nm=t.node_nm, vdd=t.vdd) if t.area_factor is None else t
    ka, ke = ref_t.area_scale, ref_t.energy_scale
    rows = []

    def add(name, comp_a, comp_e, key, area=True):
        r = ref[key]
        rows.append({"component": name, "model_energy_pj": comp_e, "published_energy_pj": r["energy_pj"] * ke,
                     "model_area_um2": comp_a if area else float("nan"),
                     "published_area_um2": r["area_um2"] * ka if area and "area_um2" in r else float("nan")})

    for w in (8, 16, 32):
        c = IntAdder(w, tech=t)
        add(f"int{w} add", c.area_um2, c.energy_pj, f"int{w}_add")
    for w in (8, 32):
        c = IntMultiplier(w, w, tech=t)
        add(f"int{w} mult", c.area_um2, c.energy_pj, f"int{w}_mult")
    for nm, (e, m) in (("fp16", (5, 10)), ("fp32", (8, 23))):
        c = FPAdder(e, m, tech=t)
        add(f"{nm} add", c.area_um2, c.energy_pj, f"{nm}_add")
    for nm, (e, m) in (("fp16", (5, 10)), ("fp32", (8, 23))):
        c = FPMultiplier(e, m, tech=t)
        add(f"{nm} mult", c.area_um2, c.energy_pj, f"{nm}_mult")
    for key, label in (("sram_8kb_read64", "SRAM 8KB 64b read"), ("sram_32kb_read64", "SRAM 32KB 64b read"),
                       ("sram_1mb_read64", "SRAM 1MB 64b read"), ("sram_8kb_read32", "SRAM 8KB 32b read")):
        r = ref[key]
        c = SRAM(r["capacity_bytes"], r["word_bits"], tech=t)
        add(label, c.area_um2, c.energy_pj, key, area=False)
    mac_m, mac_a = IntMultiplier(8, 8, tech=t), IntAdder(8, tech=t)
    add("int8 MAC (MAESTRO cross-check)", mac_m.area_um2 + mac_a.area_um2, mac_m.energy_pj + mac_a.energy_pj,
        "maestro_int8_mac")
    df = pd.DataFrame(rows)
    df["energy_error"] = df.model_energy_pj / df.published_energy_pj - 1
    df["area_error"] = df.model_area_um2 / df.published_area_um2 - 1
    return df
