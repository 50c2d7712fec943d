"""Figures, HTML page, data files and CLI of hwsim.report on a synthetic study."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hwsim.cost_models.workload import LIMITATIONS
from hwsim.report import pareto, write_report
from hwsim.report import html as report_html
from hwsim.report.plots import FIGURES, write_figures
from hwsim.report.summary import status_lines, summary_sentences
from synthetic import study_info

FIGURE_NAMES = [name for name, *_ in FIGURES]


class _Tables(HTMLParser):
    """Rows of each table body by table id, and every src / href of the page."""

    def __init__(self):
        super().__init__()
        self.rows: dict[str, int] = {}
        self.links: list[str] = []
        self._table: list[str] = []
        self._in_body = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self._table.append(a.get("id", ""))
        elif tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._in_body:
            self.rows[self._table[-1]] = self.rows.get(self._table[-1], 0) + 1
        for k in ("src", "href"):
            if a.get(k):
                self.links.append(a[k])

    def handle_endtag(self, tag):
        if tag == "table":
            self._table.pop()
        elif tag == "tbody":
            self._in_body = False


def _parse(page: Path) -> tuple[str, _Tables]:
    text = page.read_text(encoding="utf-8")
    p = _Tables()
    p.feed(text)
    return text, p


def test_write_figures_png_and_svg(results, tmp_path):
    files = write_figures(results, tmp_path)
    assert [f.name for f in files] == FIGURE_NAMES
    for f in files:
        assert f.png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "<svg" in f.svg.read_text()[:2000]


def test_figures_skip_without_ok_rows(results, tmp_path):
    failed = results.assign(status="failed")
    assert write_figures(failed, tmp_path) == []


def test_report_files_and_tables(results, report_dir):
    text, tables = _parse(report_dir / "report.html")
    assert tables.rows[report_html.POINTS_TABLE_ID] == len(results)
    assert tables.rows["failed-table"] == 1
    assert "no matching accumulator" in text
    assert report_html.CAVEAT.replace("'", "&#x27;") in text
    for lim in LIMITATIONS:
        assert lim.replace("'", "&#x27;") in text
    # self-contained: images are data URIs, nothing is fetched from the network, plotly.js inlined once
    assert all(not re.match(r"https?:", link) for link in tables.links)
    assert all(link.startswith("data:image/png;base64,") for link in re.findall(r'<img src="([^"]*)"', text))
    assert text.count("<img ") == len(FIGURE_NAMES)
    assert len(re.findall(r"plotly\.js v\d", text)) == 1
    for name in FIGURE_NAMES:
        assert (report_dir / "figures" / f"{name}.png").is_file()
        assert (report_dir / "figures" / f"{name}.svg").is_file()
    assert len(pd.read_csv(report_dir / "points.csv")) == len(results)
    back = pd.read_parquet(report_dir / "points.parquet")
    assert len(back) == len(results) and list(back.columns) == list(results.columns)
    assert "Study still running" not in text and "failed, listed below" in text


def test_hover_text_has_the_whole_configuration(results):
    fig = report_html.interactive_figure(results)
    texts = [t for tr in fig.data if tr.hovertext is not None for t in tr.hovertext]
    assert len(texts) == (results["status"] == "ok").sum()
    (text,) = [t for t in texts if t.startswith("<b>l2qer W=mxint4 X=mxint8 r=32</b>") and "7 nm" in t]
    for needle in ("recipe l2qer (stages rtn+l2qer), setting W4A8 MXINT",
                   "W mxint4, X mxint8, rank 32 (mxint8), mode fake", "smollm2-135m · austen · 512×2048 tok",
                   "32x32 ws, 7 nm horowitz45", "SRAM 256 KiB, HBM2, clock 1000 MHz, acc int32",
                   "ppl 20.40 (FP 18.62, +9.6 %)", "bits/weight 4.99", "area 0.336 mm²", "decode step"):
        assert needle in text, needle
    assert report_html.interactive_figure(results.assign(status="failed")) is None


def test_summary_is_from_the_numbers(results):
    ok = results[results["status"] == "ok"]
    n_front = int(pareto(ok, minimize=["area_mm2", "ppl"], by="hw_label").sum())
    lines = summary_sentences(results)
    assert lines[0].startswith(f"Of {len(ok)} successful design points (12 accuracy × 2 hardware configurations), "
                               f"{n_front} are on the perplexity–area front")
    hw7 = ok[ok["hw_label"] == "32x32 ws 7nm HBM2"]
    smallest = hw7.loc[hw7["area_mm2"].idxmin()]
    assert f"On 32x32 ws 7nm HBM2, the smallest design on the front is {smallest['acc_label']} at " \
           f"{smallest['area_mm2']:.3g} mm²" in lines[1]
    assert "the most accurate is fp W=none X=none" in lines[1]


def test_running_study_with_a_failed_point(results, tmp_path):
    info = study_info(results, finished=False, expected=30)
    assert info["failed_points"] == 1
    assert status_lines(results, info) == [
        "Study still running: 24 of 30 design points so far; this report is a snapshot.",
        "1 point failed, listed below."]
    text, tables = _parse(write_report(results, tmp_path, info=info))
    assert "Study still running: 24 of 30 design points" in text
    assert "1 point failed, listed below." in text
    assert tables.rows[report_html.POINTS_TABLE_ID] == len(results)


@pytest.mark.parametrize("frame", ["all_failed", "no_rows", "no_columns"])
def test_renders_without_ok_rows(results, tmp_path, frame):
    df = {"all_failed": results.assign(status="failed", error="RuntimeError: boom", ppl=np.nan),
          "no_rows": results.iloc[:0], "no_columns": pd.DataFrame()}[frame]
    text, tables = _parse(write_report(df, tmp_path, title="Empty study"))
    assert "<h1>Empty study</h1>" in text
    assert "No design point has finished successfully yet" in text
    assert "No successful design point" in text
    assert tables.rows.get(report_html.POINTS_TABLE_ID, 0) == len(df)
    assert list((tmp_path / "figures").glob("*.png")) == []
    assert (tmp_path / "points.parquet").is_file()


def test_rejects_bad_sources(results, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.db"):
        write_report(tmp_path / "nope.db", tmp_path / "out")
    with pytest.raises(ValueError, match="source=dict must be a pandas DataFrame"):
        write_report({"a": 1}, tmp_path / "out")
    with pytest.raises(ValueError, match=r"lack the identity columns \['hw_label'\]"):
        write_report(results.drop(columns=["hw_label"]), tmp_path / "out")


def test_missing_metric_columns_are_shown_empty(results, tmp_path):
    """A study whose accuracy points all failed may have no metric columns at all."""
    df = results.assign(status="failed", error="RuntimeError: boom").drop(columns=["ppl", "area_mm2"])
    text, tables = _parse(write_report(df, tmp_path))
    assert "The results lack columns ppl, area_mm2: shown empty." in text
    assert tables.rows[report_html.POINTS_TABLE_ID] == len(df)


def _cli(argv: list[str]) -> argparse.Namespace:
    from hwsim.cli import report_cmd

    parser = argparse.ArgumentParser(prog="hwsim")
    report_cmd.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_cli_missing_db_names_the_path(tmp_path):
    args = _cli(["report", str(tmp_path / "missing.db"), "--out", str(tmp_path / "out")])
    with pytest.raises(FileNotFoundError, match="missing.db"):
        args.func(args)


def test_cli_reads_the_db_through_hwsim_dse(results, tmp_path, monkeypatch, capsys):
    import hwsim.dse as dse

    db = tmp_path / "study.db"
    db.write_bytes(b"")
    monkeypatch.setattr(dse, "load", lambda p: results if Path(p) == db else None, raising=False)
    monkeypatch.setattr(dse, "study_info", lambda p: study_info(results, finished=False, expected=40),
                        raising=False)
    args = _cli(["report", str(db), "--out", str(tmp_path / "out"), "--title", "From the DB"])
    assert args.func(args) == 0
    page = Path(capsys.readouterr().out.strip())
    assert page == tmp_path / "out" / "report.html"
    assert "Study still running: 24 of 40" in page.read_text()


def test_report_does_not_import_torch(tmp_path):
    code = ("import sys; sys.path.insert(0, %r)\n"
            "from synthetic import synthetic_results\n"
            "import hwsim.report, hwsim.cli.report_cmd\n"
            "hwsim.report.write_report(synthetic_results(), %r)\n"
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))\n"
            % (str(Path(__file__).parent), str(tmp_path)))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().replace("'", '"')) == []
