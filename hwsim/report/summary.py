"""Sentences of the report generated from the numbers: study status and a summary of the fronts."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd

from hwsim.report.pareto import pareto

__all__ = ["status_lines", "summary_sentences", "front_flags", "COST_OBJECTIVES"]

#: cost columns that get a perplexity-vs-cost front, with their words and units
COST_OBJECTIVES = {"area_mm2": ("area", "mm²"), "energy_per_token_uj": ("prefill energy per token", "µJ")}
#: most hardware configurations described one by one (the rest are counted)
MAX_HW_SENTENCES = 6


def front_flags(df: pd.DataFrame, cost: str) -> pd.Series:
    """Bool per row: on the perplexity-vs-``cost`` front of its hardware configuration (ok rows only)."""
    if cost not in COST_OBJECTIVES:
        raise ValueError(f"front_flags: cost={cost!r}; valid: {sorted(COST_OBJECTIVES)}")
    flags = pd.Series(False, index=df.index, dtype=bool)
    ok = df[df["status"] == "ok"]
    if len(ok):
        flags.loc[ok.index] = pareto(ok, minimize=[cost, "ppl"], by="hw_label").to_numpy()
    return flags


def status_lines(df: pd.DataFrame, info: Mapping[str, Any]) -> list[str]:
    """Warnings about the study's state: still running, failed points, no successful point."""
    lines = []
    n_rows = len(df)
    expected = _int(info.get("expected_design_points"))
    if info.get("finished") is False:
        of = f"{n_rows} of {expected}" if expected is not None else f"{n_rows}"
        lines.append(f"Study still running: {of} design points so far; this report is a snapshot.")
    elif expected is not None and n_rows < expected:
        lines.append(f"Study incomplete: {n_rows} of {expected} expected design points have results.")
    n_failed = max(int((df["status"] == "failed").sum()), _int(info.get("failed_points")) or 0)
    if n_failed:
        lines.append(f"{n_failed} point{'s' if n_failed != 1 else ''} failed, listed below.")
    if not (df["status"] == "ok").any():
        lines.append("No design point has finished successfully yet: there is nothing to plot.")
    return lines


def summary_sentences(df: pd.DataFrame) -> list[str]:
    """Headline sentence, then one sentence per hardware configuration about its perplexity-area front."""
    ok = df[(df["status"] == "ok") & np.isfinite(pd.to_numeric(df["ppl"], errors="coerce"))]
    if ok.empty:
        return [f"Of {len(df)} design point{'s' if len(df) != 1 else ''}, none has a perplexity yet."]
    n_acc, n_hw = ok["accuracy_key"].nunique(), ok["hw_label"].nunique()
    on_area, on_energy = front_flags(ok, "area_mm2"), front_flags(ok, "energy_per_token_uj")
    where = "at " + ok["hw_label"].iloc[0] if n_hw == 1 else f"within each of {n_hw} hardware configurations"
    out = [f"Of {len(ok)} successful design points ({n_acc} accuracy × {n_hw} hardware configurations), "
           f"{int(on_area.sum())} are on the perplexity–area front and {int(on_energy.sum())} on the "
           f"perplexity–energy front {where}."]
    hw_labels = list(dict.fromkeys(ok["hw_label"].astype(str)))
    for hw in hw_labels[:MAX_HW_SENTENCES]:
        g = ok[ok["hw_label"].astype(str) == hw]
        s = _front_sentence(g[on_area[g.index]], "area_mm2", hw if n_hw > 1 else "")
        if s:
            out.append(s)
    if len(hw_labels) > MAX_HW_SENTENCES:
        out.append(f"({len(hw_labels) - MAX_HW_SENTENCES} more hardware configurations are in the figures and "
                   f"the table.)")
    return out


def _front_sentence(front: pd.DataFrame, cost: str, hw: str) -> str:
    """'On HW, the smallest design on the front is X at A mm² (ppl P); the most accurate is Y ...'."""
    front = front[np.isfinite(pd.to_numeric(front[cost], errors="coerce"))].sort_values([cost, "ppl"])
    if front.empty:
        return ""
    word, unit = COST_OBJECTIVES[cost]
    small, best = front.iloc[0], front.iloc[-1]
    prefix = f"On {hw}, the" if hw else "The"
    s = f"{prefix} smallest design on the front is {small['acc_label']} at {small[cost]:.3g} {unit} ({_ppl(small)})"
    if len(front) == 1:
        return s + "; it is also the most accurate."
    nxt = front.iloc[-2]
    d_ppl = nxt["ppl"] - best["ppl"]
    ratio = best[cost] / nxt[cost] if nxt[cost] > 0 else np.inf
    return (s + f"; the most accurate is {best['acc_label']} at {best[cost]:.3g} {unit} ({_ppl(best)}); "
            f"it beats the next design on the front, {nxt['acc_label']}, by {d_ppl:.2f} ppl "
            f"for {ratio:.2f}× the {word}.")


def _ppl(row: pd.Series) -> str:
    fp = row.get("fp_ppl")
    if fp is not None and np.isfinite(fp) and fp > 0:
        return f"ppl {row['ppl']:.2f}, {100 * (row['ppl'] / fp - 1):+.1f} % vs FP"
    return f"ppl {row['ppl']:.2f}"


def _int(v) -> int | None:
    try:
        return None if v is None or (isinstance(v, float) and np.isnan(v)) else int(v)
    except (TypeError, ValueError):
        return None
