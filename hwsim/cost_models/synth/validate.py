"""The gate-level validation table (one job: synthesized counts beside the model's areas).

For every unit of ``data/synth_counts.toml`` the model prices the same hardware
(``catalog.FAMILIES[...].model``); one global scale (um^2 per transistor, the geometric mean of
model area / transistors over the validated units) turns transistors into an area, and the residual
of a unit is model area / (scale x transistors). A residual of 1.10 means the model prices that unit
10 % above the gate-level count relative to the other units.

IEEE-width FP units (FP16 and wider) are listed for information only: the model charges them the
published Horowitz calibration (kappa), which is 1.5-4x a minimal gate-level design.
"""

from __future__ import annotations

import math
from typing import Any

from .catalog import FAMILIES, UnitSpec, unit

#: every validated unit's residual lies within [1 / RESIDUAL_BOUND, RESIDUAL_BOUND]
RESIDUAL_BOUND = 1.3


def is_validated(spec: UnitSpec) -> bool:
    """False for the FP units the model calibrates to published IEEE points (kappa weight > 0)."""
    if spec.family != "fp":
        return True
    from ..fmt import describe
    from ..laws import kappa_weight

    f = describe(spec.p["fmt"])
    return kappa_weight(f.exponent_bits, f.man_bits) == 0.0


def specs_of(counts: dict) -> list[tuple[UnitSpec, dict]]:
    return [(unit(u["family"], **u["params"]), u) for u in counts["unit"]]


def _cheapest_multipliers(pairs: list[tuple[UnitSpec, dict]]) -> list[dict]:
    """One row per unordered signed a x b: the cheapest synthesized architecture and orientation
    (the multiplier the law describes); the per-architecture units are the laws' fit data."""
    best: dict[tuple[int, int], tuple[UnitSpec, dict]] = {}
    for spec, u in pairs:
        p = spec.p
        if spec.family != "mult" or p["arch"] == "unsigned":
            continue
        key = (min(p["a"], p["b"]), max(p["a"], p["b"]))
        if key not in best or u["transistors"] < best[key][1]["transistors"]:
            best[key] = (spec, u)
    return [{"unit": f"mult_{a}x{b}", "family": "mult", "transistors": int(u["transistors"]),
             "cells": int(u["cells"]), "spec": unit("mult", a=a, b=b, arch="baugh_wooley"),
             "note": f"cheapest synthesized: {spec.name}", "validated": True}
            for (a, b), (spec, u) in sorted(best.items())]


def validation_rows(counts: dict | None = None, tech: Any = None) -> tuple[list[dict], float]:
    """(rows, global scale um^2 per transistor). Each row: unit, family, transistors, cells,
    model_area_um2, validated, residual, note.

    Signed multipliers appear once per operand pair, as the cheapest synthesized architecture
    (``laws.mult_shape`` takes the cheaper of Baugh-Wooley and Booth); each synthesized
    architecture is listed too, unvalidated, as the fit data of its law."""
    from .data import read_counts

    counts = counts if counts is not None else read_counts()
    pairs = specs_of(counts)
    rows = []
    for spec, u in pairs:
        fit_data = spec.family == "mult" and spec.p["arch"] != "unsigned"
        note = "fit data of the multiplier laws" if fit_data else (
            "" if is_validated(spec) else "IEEE width: priced with the published (kappa) calibration")
        rows.append({"unit": spec.name, "family": spec.family, "transistors": int(u["transistors"]),
                     "cells": int(u["cells"]), "spec": spec, "note": note,
                     "validated": is_validated(spec) and not fit_data})
    rows += _cheapest_multipliers(pairs)
    for r in rows:
        spec = r.pop("spec")
        r["model_area_um2"] = float(FAMILIES[spec.family].model(spec.p, tech).area_um2)
    logs = [math.log(r["model_area_um2"] / r["transistors"]) for r in rows if r["validated"]]
    scale = math.exp(sum(logs) / len(logs))
    for r in rows:
        r["residual"] = r["model_area_um2"] / (scale * r["transistors"])
    return rows, scale


def validation_table(counts: dict | None = None, tech: Any = None):
    """DataFrame of ``validation_rows`` (``hwsim cost synth --table``)."""
    import pandas as pd

    rows, scale = validation_rows(counts, tech)
    df = pd.DataFrame(rows)
    df.attrs["scale_um2_per_transistor"] = scale
    return df
