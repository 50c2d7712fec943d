"""`hwsim study` end to end on the shipped smoke study, and reports of unfinished / failing studies."""

import re
import sqlite3
from pathlib import Path

import pytest

from hwsim.cli import main
from hwsim.dse import Study, load, study_info

pytestmark = pytest.mark.model
REPO = Path(__file__).resolve().parents[2]
FIGURES = ("ppl_vs_area", "ppl_vs_energy", "bits_vs_ppl", "area_breakdown", "energy_breakdown", "latency")


def test_smoke_study_end_to_end_through_the_cli(tmp_path, capsys):
    db, out = tmp_path / "smoke.db", tmp_path / "report"
    assert main(["study", str(REPO / "studies/smoke.toml"), "--db", str(db), "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "evaluated 2 accuracy points (0 failed)" in text and f"report: {out / 'report.html'}" in text
    for name in ("report.html", "points.csv", "points.parquet"):
        assert (out / name).stat().st_size > 0, name
    for fig in FIGURES:
        for ext in ("png", "svg"):
            assert (out / "figures" / f"{fig}.{ext}").stat().st_size > 0, (fig, ext)
    page = (out / "report.html").read_text()
    assert len(re.findall(r"<tr[ >]", page.split('id="points-table"')[1].split("</table>")[0])) == 1 + 4
    assert "distributed already quantized" in page  # the evaluation caveat (offline: tests/report/test_browser.py)
    import pandas as pd

    assert len(pd.read_parquet(out / "points.parquet")) == len(pd.read_csv(out / "points.csv")) == 4
    # dry run after the fact: everything stored, no work left
    assert main(["study", str(REPO / "studies/smoke.toml"), "--db", str(db), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "stored design points: 4 of 4" in text and "quantizations 0" in text
    # export
    assert main(["study", "export", str(db), "--csv", str(tmp_path / "x.csv")]) == 0
    assert len(pd.read_csv(tmp_path / "x.csv")) == 4


def test_report_of_a_running_study_with_a_failed_point(tmp_path, capsys):
    d = {"study": {"name": "partial", "db": str(tmp_path / "p.db"), "report_dir": str(tmp_path / "rep")},
         "protocol": {"model": "smollm2-135m", "eval_corpus": "austen", "seq_len": 64, "n_tokens": 128,
                      "n_calib": 2, "calib_len": 64},
         "accuracy": {"recipes": ["rtn"], "settings": [{"name": "A", "w": "mxint4", "x": "mxint8"},
                                                      {"name": "B", "w": "bfp4", "x": "bfp8"}],
                      "point": [{"name": "too big", "recipe": "lqer", "w": "mxint4", "x": "mxint8",
                                 "lowrank_fmt": "mxint8", "rank": 10000}]},
        "hardware": {"rows": 8, "cols": 8, "node_nm": 7, "prefill_seq": 64, "decode_context": 64}}
    study = Study.from_dict(d)
    study.run(progress=False, only="*mxint4*")  # the bfp point stays unfinished
    info = study_info(study.db_path)
    assert not info["finished"] and info["expected_design_points"] == 3 and info["failed_points"] == 1
    assert main(["report", str(study.db_path), "--out", str(tmp_path / "rep")]) == 0
    page = (tmp_path / "rep" / "report.html").read_text()
    assert "still running" in page and "2 of 3" in page
    assert "exceeds min" in page  # the failed point's error is listed
    assert len(load(study.db_path)) == 2


def test_invalid_study_file_reports_every_problem_before_any_work(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('[study]\nname = "bad"\n[protocol]\nmodel = "smollm2-135m"\n'
                   '[accuracy]\nrecipes = ["rtn", "l2qr"]\nw = ["mxint44"]\n[hardware]\ndataflow = "wss"\n')
    assert main(["study", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "3 problems" in err and "did you mean 'l2qer'" in err and "'wss'" in err and "mxint44" in err
    assert not (tmp_path / "reports").exists()


def test_demo_is_the_default_study_and_the_formats_demo_moved(tmp_path, capsys):
    assert main(["demo", "--dry-run", "--db", str(tmp_path / "d.db")]) == 0
    out = capsys.readouterr().out
    assert "study default: 30 accuracy points x 2 hardware points = 60 design points" in out
    assert main(["formats", "demo", "--rows", "8", "--cols", "64", "--formats", "mxint4", "bfp4",
                 "--out", str(tmp_path)]) == 0
    assert (tmp_path / "formats_demo.md").exists() and (tmp_path / "formats_demo.png").exists()
