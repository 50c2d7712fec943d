"""Static figures of a study (matplotlib, no pyplot state): each written as PNG and SVG.

Every function takes the study's results (one row per design point, ``hwsim.dse`` columns) and
returns a :class:`matplotlib.figure.Figure`, or None when no row has what the figure needs.
Perplexity-vs-cost figures get one panel per hardware configuration (``hw_label``): designs on
different nodes or arrays never share an axis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import matplotlib
import numpy as np
import pandas as pd
from matplotlib import ticker
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from hwsim.dse.columns import AREA_COMPONENTS, ENERGY_COMPONENTS
from hwsim.report.pareto import pareto

__all__ = ["FigureFile", "FIGURES", "ok_rows", "log_scale", "ppl_vs_area", "ppl_vs_energy", "bits_vs_ppl",
           "area_breakdown", "energy_breakdown", "latency", "write_figures"]

#: an axis goes logarithmic when its data span more than this ratio (max / min)
LOG_RANGE_RATIO = 10.0
#: PNG resolution (dots per inch)
PNG_DPI = 144
#: size of one panel (inches) and the most panels in one row
PANEL_SIZE = (5.2, 3.8)
MAX_PANEL_COLS = 2
#: font size (pt) of point annotations, tick labels and titles
ANNOTATION_FONTSIZE = 7.5
TICK_FONTSIZE = 9
TITLE_FONTSIZE = 10.5
#: opacity of dominated points (front points are opaque)
DOMINATED_ALPHA = 0.3
#: most bars in a breakdown figure (beyond it only front points are drawn)
MAX_BARS = 24
#: height (inches) of a component legend: title and margins, plus one line per entry
LEGEND_BASE_IN, LEGEND_ENTRY_IN = 0.9, 0.22
#: matplotlib settings of every figure: deterministic SVG ids, text kept as text in SVG
_RC = {"svg.hashsalt": "hwsim-report", "svg.fonttype": "none", "font.size": TICK_FONTSIZE,
       "axes.titlesize": TITLE_FONTSIZE, "axes.labelsize": TICK_FONTSIZE + 0.5,
       "xtick.labelsize": TICK_FONTSIZE, "ytick.labelsize": TICK_FONTSIZE, "legend.fontsize": TICK_FONTSIZE,
       "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.25}
_RECIPE_MARKERS = ("o", "s", "D", "^", "v", "P", "X", "<", ">", "h", "*", "p")
_COMPONENT_CMAP = "tab10"
_UNITS = {"area_mm2": "mm²", "energy_per_token_uj": "µJ", "bits_per_weight": "b/w"}

_AXIS_LABELS = {"ppl": "perplexity", "area_mm2": "area (mm²)", "energy_per_token_uj": "prefill energy / token (µJ)",
                "bits_per_weight": "bits per weight", "prefill_latency_ms": "prefill latency (ms)",
                "decode_latency_ms": "decode latency, one step (ms)"}


@dataclass(frozen=True)
class FigureFile:
    """One written figure: ``name`` (file stem), a title, a caption and its PNG / SVG paths."""

    name: str
    title: str
    caption: str
    png: Path
    svg: Path


def ok_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Rows with status "ok" and a finite perplexity."""
    ppl = pd.to_numeric(df["ppl"], errors="coerce")
    return df[(df["status"] == "ok") & np.isfinite(ppl)]


def log_scale(*values: pd.Series | float) -> bool:
    """True when the positive finite values span more than LOG_RANGE_RATIO (max / min)."""
    v = np.concatenate([np.atleast_1d(np.asarray(x, dtype=float)) for x in values])
    v = v[np.isfinite(v) & (v > 0)]
    return v.size > 1 and v.max() / v.min() > LOG_RANGE_RATIO


def recipe_styles(df: pd.DataFrame) -> dict[str, tuple[tuple, str]]:
    """recipe -> (colour, marker), in order of first appearance; the same for every figure."""
    recipes = list(dict.fromkeys(df["recipe"].fillna("?").astype(str)))
    cmap = matplotlib.colormaps["tab10"]
    return {r: (cmap(i % 10), _RECIPE_MARKERS[i % len(_RECIPE_MARKERS)]) for i, r in enumerate(recipes)}


def ppl_vs_area(df: pd.DataFrame) -> Figure | None:
    """Perplexity vs area (mm²), one panel per hardware configuration, Pareto front as a step line."""
    return _ppl_vs_cost(df, "area_mm2")


def ppl_vs_energy(df: pd.DataFrame) -> Figure | None:
    """Perplexity vs prefill energy per token (µJ), one panel per hardware configuration."""
    return _ppl_vs_cost(df, "energy_per_token_uj")


def bits_vs_ppl(df: pd.DataFrame) -> Figure | None:
    """Perplexity vs bits per weight, one point per accuracy point (hardware does not change either)."""
    d = _finite(ok_rows(df).drop_duplicates("accuracy_key"), "bits_per_weight")
    if d.empty:
        return None
    styles = recipe_styles(ok_rows(df))
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(PANEL_SIZE[0] + 1.8, PANEL_SIZE[1]), layout="constrained")
        ax = fig.add_subplot()
        _front_panel(ax, d, "bits_per_weight", styles)
        ax.set_title("accuracy vs weight storage (all hardware)")
        _legend(fig, styles, d)
    return fig


def area_breakdown(df: pd.DataFrame) -> Figure | None:
    """Stacked bars of area by component (mm²), one bar per accuracy point on the first hardware point."""
    return _breakdown(df, "area_mm2", [f"area_{c}_mm2" for c in AREA_COMPONENTS], AREA_COMPONENTS)


def energy_breakdown(df: pd.DataFrame) -> Figure | None:
    """Stacked bars of prefill energy per token by component (µJ), as :func:`area_breakdown`."""
    return _breakdown(df, "energy_per_token_uj", [f"energy_{c}_uj" for c in ENERGY_COMPONENTS], ENERGY_COMPONENTS)


def latency(df: pd.DataFrame) -> Figure | None:
    """Decode-step latency vs prefill latency (ms); colour = hardware configuration, marker = recipe."""
    d = _finite(_finite(ok_rows(df), "prefill_latency_ms"), "decode_latency_ms")
    if d.empty:
        return None
    styles = recipe_styles(ok_rows(df))
    hw_labels = list(dict.fromkeys(d["hw_label"].astype(str)))
    cmap = matplotlib.colormaps["Dark2"]
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(PANEL_SIZE[0] + 1.2, PANEL_SIZE[1]), layout="constrained")
        ax = fig.add_subplot()
        for i, hw in enumerate(hw_labels):
            for recipe, g in d[d["hw_label"].astype(str) == hw].groupby("recipe", sort=False):
                ax.scatter(g["prefill_latency_ms"], g["decode_latency_ms"], color=cmap(i % 8),
                           marker=styles[str(recipe)][1], s=28, edgecolors="white", linewidths=0.5)
        _set_scales(ax, d["prefill_latency_ms"], d["decode_latency_ms"])
        ax.set_xlabel(_AXIS_LABELS["prefill_latency_ms"])
        ax.set_ylabel(_AXIS_LABELS["decode_latency_ms"])
        ax.set_title(f"latency: prefill of {_first(d, 'prefill_seq')} tokens vs one decode step")
        hw_handles = [Line2D([], [], color=cmap(i % 8), marker="o", linestyle="", label=hw)
                      for i, hw in enumerate(hw_labels)]
        recipe_handles = [Line2D([], [], color="0.35", marker=styles[r][1], linestyle="", label=r)
                          for r in dict.fromkeys(d["recipe"].astype(str))]
        fig.legend(handles=hw_handles + recipe_handles, loc="outside right upper", frameon=False,
                   title="hardware / recipe", title_fontsize=TICK_FONTSIZE)
    return fig


#: (name, title, caption, figure function): the report's figures, in page order
FIGURES: tuple[tuple[str, str, str, Callable[[pd.DataFrame], Figure | None]], ...] = (
    ("ppl_vs_area", "Perplexity vs area",
     "One panel per hardware configuration. Step line: Pareto front (lower perplexity, smaller area); "
     "faded points are dominated; dashed line: full-precision baseline. Front points are labelled.", ppl_vs_area),
    ("ppl_vs_energy", "Perplexity vs prefill energy per token",
     "As above, against prefill energy per token (µJ).", ppl_vs_energy),
    ("bits_vs_ppl", "Perplexity vs bits per weight",
     "One point per accuracy configuration; bits per weight include scales and the low-rank branch.", bits_vs_ppl),
    ("area_breakdown", "Area by component",
     "One bar per accuracy configuration on the first hardware configuration; * = on its perplexity–area front.",
     area_breakdown),
    ("energy_breakdown", "Prefill energy per token by component",
     "As above; * = on the perplexity–energy front.", energy_breakdown),
    ("latency", "Prefill vs decode latency",
     "Every successful design point; colour: hardware configuration, marker: recipe.", latency),
)


def write_figures(df: pd.DataFrame, fig_dir: str | Path) -> list[FigureFile]:
    """Render FIGURES into ``fig_dir`` (NAME.png, NAME.svg); figures without data are skipped."""
    fig_dir = Path(fig_dir)
    fig_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, title, caption, make in FIGURES:
        fig = make(df)
        if fig is None:
            continue
        png, svg = fig_dir / f"{name}.png", fig_dir / f"{name}.svg"
        with matplotlib.rc_context(_RC):
            fig.savefig(png, dpi=PNG_DPI)
            fig.savefig(svg, metadata={"Date": None})
        written.append(FigureFile(name, title, caption, png, svg))
    return written


# ---------------------------------------------------------------------------------------------- helpers
def _ppl_vs_cost(df: pd.DataFrame, x: str) -> Figure | None:
    d = _finite(ok_rows(df), x)
    if d.empty:
        return None
    styles = recipe_styles(ok_rows(df))
    hw_labels = list(dict.fromkeys(d["hw_label"].astype(str)))
    ncols = min(len(hw_labels), MAX_PANEL_COLS)
    nrows = math.ceil(len(hw_labels) / ncols)
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(PANEL_SIZE[0] * ncols + 1.6, PANEL_SIZE[1] * nrows), layout="constrained")
        axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
        for ax, hw in zip(axes, hw_labels):
            _front_panel(ax, d[d["hw_label"].astype(str) == hw], x, styles)
            ax.set_title(hw)
        for ax in axes[len(hw_labels):]:
            ax.set_visible(False)
        _legend(fig, styles, d)
    return fig


def _front_panel(ax, d: pd.DataFrame, x: str, styles: dict) -> None:
    """Scatter ppl vs ``x`` of ``d`` with its Pareto front (step line, labelled) and the fp baseline."""
    front = pareto(d, minimize=[x, "ppl"])
    for recipe, g in d.groupby(d["recipe"].fillna("?").astype(str), sort=False):
        colour, marker = styles[recipe]
        on = front[g.index]
        ax.scatter(g.loc[~on, x], g.loc[~on, "ppl"], color=colour, marker=marker, s=26, alpha=DOMINATED_ALPHA,
                   linewidths=0)
        ax.scatter(g.loc[on, x], g.loc[on, "ppl"], color=colour, marker=marker, s=34, edgecolors="black",
                   linewidths=0.6, zorder=3)
    f = d[front].sort_values([x, "ppl"])
    ax.step(f[x], f["ppl"], where="post", color="black", linewidth=1.0, alpha=0.7, zorder=2)
    baselines = pd.to_numeric(d["fp_ppl"], errors="coerce").dropna().unique()
    for fp in baselines:
        ax.axhline(fp, color="0.4", linestyle="--", linewidth=0.9, zorder=1)
    _set_scales(ax, d[x], pd.concat([d["ppl"], pd.Series(baselines, dtype=float)]))
    _annotate(ax, f, x)
    ax.set_xlabel(_AXIS_LABELS.get(x, x))
    ax.set_ylabel(_AXIS_LABELS["ppl"])


def _annotate(ax, f: pd.DataFrame, x: str) -> None:
    """Number the front points (by increasing ``x``) and list number -> acc_label, x, ppl under the panel."""
    unit = _UNITS.get(x, "")
    lines = []
    for i, (_, row) in enumerate(f.iterrows(), start=1):
        ax.annotate(str(i), (row[x], row["ppl"]), xytext=(3, 3) if i % 2 else (-8, -9), textcoords="offset points",
                    fontsize=ANNOTATION_FONTSIZE + 0.5, fontweight="bold", color="0.1", zorder=4)
        lines.append(f"{i}  {row['acc_label']}  ({row[x]:.3g} {unit}, ppl {row['ppl']:.2f})")
    if lines:
        ax.text(0.0, -0.2, "front:\n" + "\n".join(lines), transform=ax.transAxes, va="top", ha="left",
                fontsize=ANNOTATION_FONTSIZE, color="0.15", family="monospace", linespacing=1.25)


def _legend(fig: Figure, styles: dict, d: pd.DataFrame) -> None:
    present = dict.fromkeys(d["recipe"].fillna("?").astype(str))
    handles = [Line2D([], [], color=styles[r][0], marker=styles[r][1], linestyle="", label=r) for r in present]
    handles += [Line2D([], [], color="black", linewidth=1.0, label="Pareto front"),
                Line2D([], [], color="0.5", marker="o", alpha=DOMINATED_ALPHA, linestyle="", label="dominated"),
                Line2D([], [], color="0.4", linestyle="--", linewidth=0.9, label=_baseline_label(d))]
    fig.legend(handles=handles, loc="outside right upper", frameon=False, title="recipe",
               title_fontsize=TICK_FONTSIZE)


def _baseline_label(d: pd.DataFrame) -> str:
    fp = pd.to_numeric(d["fp_ppl"], errors="coerce").dropna().unique()
    return f"FP baseline (ppl {fp[0]:.2f})" if len(fp) == 1 else "FP baselines"


def _breakdown(df: pd.DataFrame, total: str, cols: list[str], names: tuple[str, ...]) -> Figure | None:
    d = _finite(ok_rows(df), total)
    if d.empty:
        return None
    hw = str(d["hw_label"].iloc[0])
    d = d[d["hw_label"].astype(str) == hw].drop_duplicates("accuracy_key")
    front = pareto(d, minimize=[total, "ppl"])
    if len(d) > MAX_BARS:
        d, front = d[front], front[front]
    d = d.sort_values(total)
    parts = d[cols].apply(pd.to_numeric, errors="coerce").fillna(0.0)
    keep = [i for i, c in enumerate(cols) if (parts[c] > 0).any()]
    labels = [f"{a} *" if front[i] else str(a) for i, a in zip(d.index, d["acc_label"])]
    cmap = matplotlib.colormaps[_COMPONENT_CMAP]
    unit = "mm²" if total == "area_mm2" else "µJ"
    with matplotlib.rc_context(_RC):
        height = max(1.2 + 0.24 * len(d), LEGEND_BASE_IN + LEGEND_ENTRY_IN * len(keep))  # the legend must fit
        fig = Figure(figsize=(PANEL_SIZE[0] + 2.6, height), layout="constrained")
        ax = fig.add_subplot()
        left = np.zeros(len(d))
        y = np.arange(len(d))
        for i in keep:
            v = parts[cols[i]].to_numpy()
            ax.barh(y, v, left=left, height=0.7, color=cmap(i % 10), label=_component_name(names[i]))
            left += v
        ax.set_yticks(y, labels, fontsize=ANNOTATION_FONTSIZE + 0.5)
        ax.grid(axis="y", visible=False)
        ax.set_xlabel(_AXIS_LABELS.get(total, total))
        ax.set_title(f"{'area' if total == 'area_mm2' else 'prefill energy / token'} by component on {hw} ({unit})")
        fig.legend(loc="outside right upper", frameon=False, title="component", title_fontsize=TICK_FONTSIZE)
    return fig


def _set_scales(ax, x: pd.Series, y: pd.Series) -> None:
    """Log axes where the data span more than LOG_RANGE_RATIO, ticked with plain numbers (1, 2, 3, 5 x 10^k)."""
    for axis, values in ((ax.xaxis, x), (ax.yaxis, y)):
        if log_scale(values):
            (ax.set_xscale if axis is ax.xaxis else ax.set_yscale)("log")
            axis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 3.0, 5.0)))
            axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            axis.set_minor_formatter(ticker.NullFormatter())


def _component_name(c: str) -> str:
    return c.replace("adders_accumulators", "adders / accumulators").replace("_", " ")


def _finite(df: pd.DataFrame, col: str) -> pd.DataFrame:
    return df[np.isfinite(pd.to_numeric(df[col], errors="coerce"))]


def _first(df: pd.DataFrame, col: str):
    v = df[col].dropna()
    return v.iloc[0] if len(v) else "?"
