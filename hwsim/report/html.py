"""The self-contained HTML report of a study: summary, figures, interactive view, tables, caveats.

:func:`write_report` writes ``report.html`` (no network needed: PNGs as data URIs, plotly.js
inlined once), ``points.csv``, ``points.parquet`` and ``figures/NAME.{png,svg}`` into a folder.
It only reads results (a DataFrame or a study database); it never loads models.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import math
import struct
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd

from hwsim.cost_models.workload import LIMITATIONS
from hwsim.dse.columns import AREA_COMPONENTS, ENERGY_COMPONENTS
from hwsim.report import plots
from hwsim.report.claims import lqer_claim_html
from hwsim.report.summary import COST_OBJECTIVES, front_flags, status_lines, summary_sentences

__all__ = ["write_report", "render_html", "interactive_html", "interactive_figure", "REQUIRED_COLUMNS", "CAVEAT",
           "REPORT_NAME"]

REPORT_NAME = "report.html"
CSV_NAME = "points.csv"
PARQUET_NAME = "points.parquet"
FIGURE_DIR = "figures"
#: the id of the points table and of the interactive plot's container
POINTS_TABLE_ID = "points-table"
INTERACTIVE_ID = "interactive"
CAVEAT = ("The shipped models were distributed already quantized (GGUF Q4_1 / Q4_K_M) and are dequantized on "
          "load; compare methods with each other, not with papers' FP16 numbers.")
#: format spec of the table's cells: 3 significant digits without exponents (1080, 24.3, 0.437)
SIG = "sig"
#: columns the report reads (a results frame without them is rejected, unless it has no rows)
REQUIRED_COLUMNS = (
    "design_key", "accuracy_key", "hardware_key", "status", "error", "label", "acc_label", "hw_label", "setting",
    "model", "eval_corpus", "seq_len", "n_tokens", "recipe", "stages", "w_fmt", "x_fmt", "rank", "lowrank_fmt",
    "mode", "rows", "cols", "dataflow", "node_nm", "library", "sram_kib", "dram", "clock_mhz", "acc",
    "prefill_seq", "decode_context", "batch", "ppl", "bits_per_byte", "fp_ppl", "bits_per_weight",
    "area_mm2", "energy_per_token_uj", "decode_energy_per_token_uj", "prefill_latency_ms", "decode_latency_ms",
    "warnings", "finished_at",
    *(f"area_{c}_mm2" for c in AREA_COMPONENTS), *(f"energy_{c}_uj" for c in ENERGY_COMPONENTS),
)
#: columns without which rows cannot be told apart (other missing columns are shown empty)
IDENTITY_COLUMNS = ("design_key", "accuracy_key", "status", "label", "acc_label", "hw_label")
#: the study_info keys, with what a bare DataFrame is assumed to have
_DEFAULT_INFO = {"name": "", "description": "", "expected_design_points": None, "finished": None,
                 "failed_points": 0, "updated_at": "", "study_toml": ""}
_INTERACTIVE_NOTE = ("Hover a point for its whole configuration; the buttons switch the cost axis. Faded points "
                     "are dominated on their panel; dashed line: FP baseline. Drag to zoom, double-click to reset; "
                     "click a recipe in the legend to hide it.")
#: plotly marker symbols in the order of matplotlib's recipe markers (plots._RECIPE_MARKERS)
_PLOTLY_SYMBOLS = ("circle", "square", "diamond", "triangle-up", "triangle-down", "cross", "x", "triangle-left",
                   "triangle-right", "hexagon", "star", "pentagon")
#: CSS pixels per PNG pixel: figures are shown at their physical size (96 CSS px per inch)
_CSS_PX_PER_PNG_PX = 96 / plots.PNG_DPI


def write_report(source: pd.DataFrame | str | Path, out_dir: str | Path, *, title: str | None = None,
                 info: Mapping[str, Any] | None = None) -> Path:
    """Write the report of ``source`` into ``out_dir``; return the path of ``report.html``.

    source: the results DataFrame (one row per design point; ``info`` is then the optional
    ``study_info`` dict), or the path of a study database (read with ``hwsim.dse.load`` and
    ``hwsim.dse.study_info``). title: page title (default: the study's name).
    """
    df, info = _load(source, info)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures = plots.write_figures(df, out / FIGURE_DIR)
    df.to_csv(out / CSV_NAME, index=False)
    df.to_parquet(out / PARQUET_NAME, index=False, engine="pyarrow")
    page = out / REPORT_NAME
    page.write_text(render_html(df, info, figures, title=title), encoding="utf-8")
    return page


def render_html(df: pd.DataFrame, info: Mapping[str, Any], figures: list[plots.FigureFile], *,
                title: str | None = None) -> str:
    """The page (str) for results ``df``, study ``info`` and figures already written by plots.write_figures."""
    info = {**_DEFAULT_INFO, **dict(info)}
    title = title or (f"Study {info['name']}: accuracy vs hardware" if info["name"] else "Accuracy vs hardware")
    esc = html.escape
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
             f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
             f"<title>{esc(title)}</title><style>{_CSS}</style></head><body><main>",
             f"<h1>{esc(title)}</h1>"]
    meta = [info["description"], f"updated {info['updated_at']}" if info["updated_at"] else "",
            f"report generated {_dt.datetime.now().isoformat(timespec='seconds')}"]
    parts.append(f"<p class=\"meta\">{esc(' · '.join(m for m in meta if m))}</p>")
    lines = status_lines(df, info)
    if info.get("missing_columns"):
        lines.append(f"The results lack columns {', '.join(info['missing_columns'])}: shown empty.")
    for line in lines:
        parts.append(f"<p class=\"status\" role=\"status\">{esc(line)}</p>")
    parts.append("<section id=\"summary\"><h2>Summary</h2>"
                 + "".join(f"<p>{esc(s)}</p>" for s in summary_sentences(df)) + "</section>")
    parts.append(f"<p class=\"caveat\"><strong>Caveat.</strong> {esc(CAVEAT)}</p>")
    parts.append("<section id=\"figures\"><h2>Figures</h2>")
    if not figures:
        parts.append("<p class=\"empty\">No successful design point: no figure to draw.</p>")
    for f in figures:
        parts.append(_figure_html(f))
    parts.append("</section>")
    parts.append(lqer_claim_html(df))
    parts.append(f"<section><h2>Interactive view</h2><p class=\"note\">{_INTERACTIVE_NOTE}</p>"
                 f"{interactive_html(df)}</section>")
    parts.append(f"<section><h2>Design points</h2>{_points_table(df)}</section>")
    parts.append(f"<section><h2>Failed points</h2>{_failed_table(df)}</section>")
    parts.append("<section id=\"limitations\"><h2>Limitations of the cost model</h2><ul>"
                 + "".join(f"<li>{esc(s)}</li>" for s in LIMITATIONS) + "</ul></section>")
    parts.append(_files_html(info, figures))
    parts.append(f"</main><script>{_SORT_JS}</script></body></html>\n")
    return "\n".join(parts)


def interactive_html(df: pd.DataFrame) -> str:
    """The div of :func:`interactive_figure`, plotly.js inlined in it (so once per page)."""
    fig = interactive_figure(df)
    if fig is None:
        return f"<div id=\"{INTERACTIVE_ID}\"><p class=\"empty\">No successful design point to show.</p></div>"
    return fig.to_html(full_html=False, include_plotlyjs=True, div_id=INTERACTIVE_ID,
                       config={"displaylogo": False, "responsive": True})


def interactive_figure(df: pd.DataFrame):
    """A plotly figure of perplexity vs area / energy (a menu switches), one panel per hardware
    configuration; hovering a point shows its whole configuration. None without ok rows."""
    ok = plots.ok_rows(df)
    if ok.empty:
        return None
    from plotly.subplots import make_subplots

    hw_labels = list(dict.fromkeys(ok["hw_label"].astype(str)))
    ncols = min(len(hw_labels), plots.MAX_PANEL_COLS)
    nrows = math.ceil(len(hw_labels) / ncols)
    fig = make_subplots(rows=nrows, cols=ncols, subplot_titles=hw_labels, horizontal_spacing=0.08,
                        vertical_spacing=0.12 if nrows > 1 else 0.0)
    styles = plots.recipe_styles(ok)
    recipes = list(styles)
    hover = ok.apply(_hover_text, axis=1)
    views = {c: front_flags(ok, c) for c in COST_OBJECTIVES}
    per_trace: dict[str, list] = {f"{c}:{k}": [] for c in COST_OBJECTIVES for k in ("x", "y", "opacity")}
    for h, hw in enumerate(hw_labels):
        r, c = divmod(h, ncols)
        g = ok[ok["hw_label"].astype(str) == hw]
        for recipe in recipes:
            gr = g[g["recipe"].fillna("?").astype(str) == recipe]
            if gr.empty:
                continue
            colour, _ = styles[recipe]
            fig.add_scatter(x=gr["area_mm2"], y=gr["ppl"], mode="markers", name=recipe, legendgroup=recipe,
                            showlegend=h == 0, hovertext=hover[gr.index], hovertemplate="%{hovertext}<extra></extra>",
                            marker={"color": _hex(colour), "symbol": _PLOTLY_SYMBOLS[recipes.index(recipe) % 12],
                                    "size": 9, "opacity": _opacity(views["area_mm2"][gr.index]),
                                    "line": {"color": "black", "width": 0.6}}, row=r + 1, col=c + 1)
            for cost, flags in views.items():
                per_trace[f"{cost}:x"].append(gr[cost].tolist())
                per_trace[f"{cost}:y"].append(gr["ppl"].tolist())
                per_trace[f"{cost}:opacity"].append(_opacity(flags[gr.index]))
        fx, fy = {}, {}
        for cost, flags in views.items():
            f = g[flags[g.index]].sort_values([cost, "ppl"])
            fx[cost], fy[cost] = f[cost].tolist(), f["ppl"].tolist()
            per_trace[f"{cost}:x"].append(fx[cost])
            per_trace[f"{cost}:y"].append(fy[cost])
            per_trace[f"{cost}:opacity"].append(1.0)
        fig.add_scatter(x=fx["area_mm2"], y=fy["area_mm2"], mode="lines", line={"shape": "hv", "color": "black",
                        "width": 1}, name="Pareto front", legendgroup="front", showlegend=h == 0,
                        hoverinfo="skip", row=r + 1, col=c + 1)
        for fp in pd.to_numeric(g["fp_ppl"], errors="coerce").dropna().unique():
            fig.add_hline(y=float(fp), line={"dash": "dash", "color": "grey", "width": 1}, row=r + 1, col=c + 1)
    if plots.log_scale(ok["ppl"], ok["fp_ppl"]):
        fig.update_yaxes(type="log", tickmode="array", tickvals=_log_ticks(pd.concat([ok["ppl"], ok["fp_ppl"]])))
    fig.update_yaxes(title_text="perplexity", col=1)
    buttons = []
    for cost, (word, unit) in COST_OBJECTIVES.items():
        log = plots.log_scale(ok[cost])
        axes = {f"xaxis{'' if i == 0 else i + 1}.{k}": v for i in range(len(hw_labels))
                for k, v in (("title.text", f"{word} ({unit})"), ("type", "log" if log else "linear"),
                             ("tickmode", "array" if log else "auto"),
                             ("tickvals", _log_ticks(ok[cost]) if log else None))}
        buttons.append({"label": f"ppl vs {word}", "method": "update",
                        "args": [{"x": per_trace[f"{cost}:x"], "y": per_trace[f"{cost}:y"],
                                  "marker.opacity": per_trace[f"{cost}:opacity"]}, axes]})
    fig.update_layout(updatemenus=[{"buttons": buttons, "direction": "right", "type": "buttons", "x": 0.0,
                                    "xanchor": "left", "y": 1.0 + 0.1 / nrows, "yanchor": "bottom",
                                    "showactive": True, "pad": {"b": 4}}],
                      height=140 + 400 * nrows, margin={"t": 80, "l": 60, "r": 20, "b": 50},
                      template="plotly_white", legend={"title": {"text": "recipe"}},
                      hoverlabel={"align": "left", "font": {"size": 11, "family": "monospace"}})
    fig.update_layout(buttons[0]["args"][1])
    return fig


# ---------------------------------------------------------------------------------------------- input
def _load(source: pd.DataFrame | str | Path, info: Mapping[str, Any] | None) -> tuple[pd.DataFrame, dict]:
    """(results, study info) from a DataFrame (+ info) or a study database path."""
    if isinstance(source, pd.DataFrame):
        df = source
        base = {"failed_points": int((df["status"] == "failed").sum()) if "status" in df else 0}
        info = {**_DEFAULT_INFO, **base, **dict(info or {})}
    elif isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"write_report: study database {str(path)!r} does not exist")
        from hwsim import dse  # lazily: the study layer is not needed to render a DataFrame

        df = dse.load(path)
        info = {**_DEFAULT_INFO, **dse.study_info(path), **dict(info or {})}
    else:
        raise ValueError(f"write_report: source={type(source).__name__} must be a pandas DataFrame or the path "
                         f"of a study database (str or Path)")
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    strict = [c for c in IDENTITY_COLUMNS if c in missing]
    if strict and len(df):
        raise ValueError(f"write_report: the results lack the identity columns {strict} (valid results have "
                         f"{list(IDENTITY_COLUMNS)}); see hwsim.dse for the contract")
    if missing:
        df = df.reindex(columns=[*df.columns, *missing])
        if len(df):
            info = {**info, "missing_columns": missing}
    return df.reset_index(drop=True), info


# ---------------------------------------------------------------------------------------------- pieces
def _figure_html(f: plots.FigureFile) -> str:
    data = f.png.read_bytes()
    w_px, _ = _png_size(data)
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return (f"<figure id=\"fig-{f.name}\"><h3>{html.escape(f.title)}</h3>"
            f"<img src=\"{uri}\" alt=\"{html.escape(f.title)}\" style=\"width:{round(w_px * _CSS_PX_PER_PNG_PX)}px\">"
            f"<figcaption>{html.escape(f.caption)} <a href=\"{FIGURE_DIR}/{f.svg.name}\">SVG</a> · "
            f"<a href=\"{FIGURE_DIR}/{f.png.name}\">PNG</a></figcaption></figure>")


def _png_size(data: bytes) -> tuple[int, int]:
    """(width, height) in pixels from a PNG's IHDR chunk."""
    return struct.unpack(">II", data[16:24])


def _fmt(col: str, spec: str) -> Callable[[pd.Series], str]:
    def cell(row: pd.Series) -> str:
        v = row.get(col)
        if v is None or (isinstance(v, float) and not np.isfinite(v)):
            return ""
        try:
            return _plain(float(v)) if spec == SIG else format(v, spec)
        except (TypeError, ValueError):
            return str(v)
    return cell


def _plain(v: float) -> str:
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.3g}"


def _protocol(row: pd.Series) -> str:
    return f"{row['model']} · {row['eval_corpus']} · {_fmt('seq_len', '.0f')(row)}×{_fmt('n_tokens', '.0f')(row)} tok"


def _delta_fp(row: pd.Series) -> str:
    p, fp = row.get("ppl"), row.get("fp_ppl")
    if p is None or fp is None or not (np.isfinite(p) and np.isfinite(fp) and fp > 0):
        return ""
    return f"{100 * (p / fp - 1):+.1f}"


def _warnings(row: pd.Series) -> str:
    raw = row.get("warnings")
    if not isinstance(raw, str) or not raw.strip():
        return ""
    try:
        items = json.loads(raw)
    except ValueError:
        return raw
    return "; ".join(map(str, items)) if isinstance(items, list) else str(items)


def _front_cell(row: pd.Series) -> str:
    return " ".join(k for k, col in (("A", "_front_area"), ("E", "_front_energy")) if row.get(col))


#: (header, cell function, CSS class) of the points table's columns
_TABLE_COLUMNS: tuple[tuple[str, Callable[[pd.Series], str], str], ...] = (
    ("accuracy point", _fmt("acc_label", "s"), "name first"),
    ("hardware", _fmt("hw_label", "s"), "name"),
    ("status", _fmt("status", "s"), ""),
    ("ppl", _fmt("ppl", ".2f"), "num"),
    ("Δ vs FP (%)", _delta_fp, "num"),
    ("area (mm²)", _fmt("area_mm2", SIG), "num"),
    ("prefill µJ/token", _fmt("energy_per_token_uj", SIG), "num"),
    ("decode µJ/token", _fmt("decode_energy_per_token_uj", SIG), "num"),
    ("prefill (ms)", _fmt("prefill_latency_ms", SIG), "num"),
    ("decode step (ms)", _fmt("decode_latency_ms", SIG), "num"),
    ("front", _front_cell, ""),
    ("bits/weight", _fmt("bits_per_weight", ".2f"), "num"),
    ("bits/byte", _fmt("bits_per_byte", ".3f"), "num"),
    ("setting", _fmt("setting", "s"), ""),
    ("stages", _fmt("stages", "s"), ""),
    ("W", _fmt("w_fmt", "s"), ""),
    ("X", _fmt("x_fmt", "s"), ""),
    ("rank", _fmt("rank", ".0f"), "num"),
    ("low-rank fmt", _fmt("lowrank_fmt", "s"), ""),
    ("mode", _fmt("mode", "s"), ""),
    ("protocol", _protocol, ""),
    ("warnings", _warnings, "warn"),
)


def _points_table(df: pd.DataFrame) -> str:
    d = df.assign(_front_area=front_flags(df, "area_mm2"), _front_energy=front_flags(df, "energy_per_token_uj"))
    head = "".join(f"<th class=\"{cls}\" title=\"click to sort\">{html.escape(h)}</th>"
                   for h, _, cls in _TABLE_COLUMNS)
    body = []
    for _, row in d.iterrows():
        cls = "failed" if row["status"] != "ok" else ("front" if row["_front_area"] else "")
        cells = "".join(f"<td class=\"{c}\">{html.escape(fn(row))}</td>" for _, fn, c in _TABLE_COLUMNS)
        body.append(f"<tr class=\"{cls}\" title=\"{html.escape(str(row['label']))}\">{cells}</tr>")
    note = ("<p class=\"note\">One row per design point. front: A = on the perplexity–area front, E = on the "
            "perplexity–energy front of its hardware configuration. Click a header to sort.</p>")
    return (note + f"<div class=\"scroll\"><table id=\"{POINTS_TABLE_ID}\" class=\"sortable\"><thead><tr>{head}"
            f"</tr></thead><tbody>{''.join(body)}</tbody></table></div>")


def _failed_table(df: pd.DataFrame) -> str:
    failed = df[df["status"] != "ok"]
    if failed.empty:
        return "<p class=\"empty\">None.</p>"
    rows = "".join(f"<tr><td class=\"name\">{html.escape(str(r['label']))}</td>"
                   f"<td class=\"error\">{html.escape(str(r['error']))}</td>"
                   f"<td>{html.escape(_fmt('finished_at', 's')(r))}</td></tr>" for _, r in failed.iterrows())
    return (f"<div class=\"scroll\"><table id=\"failed-table\"><thead><tr><th>design point</th><th>error</th>"
            f"<th>finished at</th></tr></thead><tbody>{rows}</tbody></table></div>")


def _files_html(info: Mapping[str, Any], figures: list[plots.FigureFile]) -> str:
    links = [f"<a href=\"{CSV_NAME}\">{CSV_NAME}</a>", f"<a href=\"{PARQUET_NAME}\">{PARQUET_NAME}</a>"]
    links += [f"<a href=\"{FIGURE_DIR}/{f.svg.name}\">{f.svg.name}</a>" for f in figures]
    toml = (f"<details><summary>study.toml</summary><pre>{html.escape(str(info['study_toml']))}</pre></details>"
            if info.get("study_toml") else "")
    return f"<section id=\"files\"><h2>Files</h2><p>{' · '.join(links)}</p>{toml}</section>"


def _hover_text(row: pd.Series) -> str:
    """Whole configuration and metrics of one design point, as plotly hover HTML."""
    e = lambda col, spec="s": html.escape(_fmt(col, spec)(row))  # noqa: E731
    lines = [f"<b>{e('acc_label')}</b>",
             f"recipe {e('recipe')} (stages {e('stages')}), setting {e('setting')}",
             f"W {e('w_fmt')}, X {e('x_fmt')}, rank {e('rank', '.0f')} ({e('lowrank_fmt')}), mode {e('mode')}",
             f"protocol {html.escape(_protocol(row))}",
             f"<b>{e('hw_label')}</b>: {e('rows', '.0f')}x{e('cols', '.0f')} {e('dataflow')}, "
             f"{e('node_nm', 'g')} nm {e('library')}",
             f"SRAM {e('sram_kib', '.0f')} KiB, {e('dram')}, clock {e('clock_mhz', 'g')} MHz, acc {e('acc')}",
             f"prefill {e('prefill_seq', '.0f')} tok, decode ctx {e('decode_context', '.0f')}, "
             f"batch {e('batch', '.0f')}",
             f"ppl {e('ppl', '.2f')} (FP {e('fp_ppl', '.2f')}, {_delta_fp(row)} %), "
             f"bits/byte {e('bits_per_byte', '.3f')}, bits/weight {e('bits_per_weight', '.2f')}",
             f"area {e('area_mm2', SIG)} mm², prefill {e('energy_per_token_uj', SIG)} µJ/tok, "
             f"decode {e('decode_energy_per_token_uj', SIG)} µJ/tok",
             f"latency: prefill {e('prefill_latency_ms', SIG)} ms, decode step {e('decode_latency_ms', SIG)} ms"]
    return "<br>".join(lines)


def _log_ticks(values: pd.Series) -> list[float]:
    """1, 2, 5 x 10^k tick values covering the positive finite ``values`` (for a log axis)."""
    v = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    if v.size == 0:
        return []
    lo, hi = math.floor(math.log10(v.min())), math.ceil(math.log10(v.max()))
    ticks = [m * 10.0 ** k for k in range(lo, hi + 1) for m in (1, 2, 5)]
    return [float(f"{t:.3g}") for t in ticks if v.min() / 1.5 <= t <= v.max() * 1.5]


def _opacity(flags: pd.Series) -> list[float]:
    return [1.0 if f else plots.DOMINATED_ALPHA + 0.1 for f in flags]


def _hex(rgba: tuple) -> str:
    return "#" + "".join(f"{round(255 * c):02x}" for c in rgba[:3])


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#222;margin:0;background:#fafafa}
main{max-width:1280px;margin:0 auto;padding:16px 28px 48px;background:#fff}
h1{font-size:1.6em;margin:.4em 0 .1em} h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:3px;
margin-top:1.6em} h3{font-size:1em;margin:.2em 0}
.meta{color:#666;font-size:.9em;margin-top:0}
.status{background:#fff4e0;border-left:4px solid #e69500;padding:6px 10px;margin:6px 0}
.caveat{background:#eef4fb;border-left:4px solid #4a7bb7;padding:6px 10px;font-size:.92em}
#summary p{margin:.35em 0;line-height:1.45}
figure{margin:18px 0 26px} figure img{max-width:100%;height:auto;display:block}
figcaption{color:#555;font-size:.85em;margin-top:4px}
.scroll{overflow-x:auto;max-height:640px;overflow-y:auto;border:1px solid #e3e3e3}
table{border-collapse:collapse;font-size:12px;white-space:nowrap}
th,td{padding:3px 7px;border-bottom:1px solid #eee;text-align:left}
thead th{position:sticky;top:0;background:#f3f3f3;cursor:pointer;user-select:none;z-index:1}
td.first,th.first{position:sticky;left:0;background:#fff;z-index:2;border-right:1px solid #e3e3e3}
thead th.first{background:#f3f3f3;z-index:3}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
td.warn,td.error{white-space:normal;min-width:220px;color:#8a5a00}
tr.front td{background:#f2f8ee} tr.failed td{background:#fdeeee;color:#8b1a1a}
.note,.empty{color:#666;font-size:.88em}
pre{background:#f6f6f6;padding:8px;overflow-x:auto}
"""

_SORT_JS = """
document.querySelectorAll('table.sortable').forEach(function (table) {
  table.querySelectorAll('thead th').forEach(function (th, col) {
    th.addEventListener('click', function () {
      var body = table.tBodies[0], rows = Array.from(body.rows);
      var dir = th.dataset.dir === 'asc' ? -1 : 1; th.dataset.dir = dir === 1 ? 'asc' : 'desc';
      rows.sort(function (a, b) {
        var x = a.cells[col].textContent, y = b.cells[col].textContent;
        var nx = parseFloat(x), ny = parseFloat(y);
        if (!isNaN(nx) && !isNaN(ny)) return dir * (nx - ny);
        if (x === '') return 1; if (y === '') return -1;
        return dir * x.localeCompare(y);
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""
