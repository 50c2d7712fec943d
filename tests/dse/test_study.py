"""Study files: validation (every problem at once, with key paths), expansion, exclusion, keys."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hwsim.dse.points import AccuracyPoint, DesignPoint
from hwsim.dse.study import Study, StudyError

STUDIES = Path(__file__).resolve().parents[2] / "studies"
ROOT = STUDIES.parent


def _write(tmp_path: Path, text: str, name: str = "study.toml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def _study(**sections) -> Study:
    return Study.from_dict({"study": {"name": "t"}, **sections})


def _problems(d: dict) -> list[str]:
    with pytest.raises(StudyError) as info:
        Study.from_dict({"study": {"name": "t"}, **d})
    return info.value.problems


# ------------------------------------------------------------------------------------------------
# validation
# ------------------------------------------------------------------------------------------------

def test_five_mistakes_give_five_located_messages(tmp_path):
    path = _write(tmp_path, """
        [study]
        name = "bad"

        [accuracy]
        recipes = ["rtn", "gptq", "l2qr"]
        w = ["mxint4", "mxint44"]
        x = "mxint8"
        ranks = [32, -4]
        colour = "blue"

        [hardware]
        dataflow = ["wss", "os"]
        """)
    with pytest.raises(StudyError) as info:
        Study.from_toml(path)
    err = info.value
    assert len(err.problems) == 5, err.problems
    text = str(err)
    assert text.splitlines()[0] == f"study {path}: 5 problems"
    assert len(text.splitlines()) == 6
    by_key = {p.split(": ", 1)[0]: p.split(": ", 1)[1] for p in err.problems}
    assert set(by_key) == {"accuracy.recipes[2]", "accuracy.w[1]", "hardware.dataflow[0]", "accuracy.colour",
                           "accuracy.ranks[1]"}
    assert by_key["accuracy.recipes[2]"].startswith("unknown recipe 'l2qr' (did you mean 'l2qer'?)")
    assert "mxint44" in by_key["accuracy.w[1]"] and "mxint4" in by_key["accuracy.w[1]"]
    assert "\n" not in by_key["accuracy.w[1]"]
    assert by_key["hardware.dataflow[0]"] == "'wss' is not valid; did you mean 'ws'? valid: ws, os, is"
    assert by_key["accuracy.colour"].startswith("unknown key 'colour'; valid: recipes")
    assert "-4" in by_key["accuracy.ranks[1]"] and ">= 1" in by_key["accuracy.ranks[1]"]


def test_unknown_key_did_you_mean_at_every_level():
    probs = _problems({"protocl": {}, "accuracy": {"recipes": "rtn", "setings": []},
                       "hardware": {"point": [{"node": 7}]}})
    assert len(probs) == 3  # in file order
    assert probs[0].startswith("protocl: unknown key 'protocl'; did you mean 'protocol'? valid: study, protocol")
    assert probs[1].startswith("accuracy.setings: unknown key 'setings'; did you mean 'settings'?")
    assert probs[2].startswith("hardware.point[0].node: unknown key 'node'; did you mean 'node_nm'?")


def test_scalar_location_has_no_index_and_types_are_strict():
    probs = _problems({"protocol": {"seq_len": "128", "n_calib": True},
                       "accuracy": {"recipes": "rtnn"}, "hardware": {"rows": 0, "node_nm": 300}})
    keys = [p.split(": ", 1)[0] for p in probs]
    assert keys == ["protocol.seq_len", "protocol.n_calib", "accuracy.recipes", "hardware.rows", "hardware.node_nm"]
    assert "expected an integer, got str '128'" in probs[0]
    assert "must be > 0, got 0" in probs[3]
    assert "outside the supported range" in probs[4]


def test_missing_name_and_bad_name():
    assert _problems_raw({"accuracy": {"recipes": "rtn"}}) == ["study: required key is missing"]
    assert _problems_raw({"study": {}, "accuracy": {"recipes": "rtn"}}) == ["study.name: required key is missing"]
    probs = _problems_raw({"study": {"name": "a b"}, "accuracy": {"recipes": "rtn"}})
    assert probs[0].startswith("study.name: 'a b' is not a valid study name")


def _problems_raw(d: dict) -> list[str]:
    with pytest.raises(StudyError) as info:
        Study.from_dict(d)
    return info.value.problems


def test_semantic_checks_protocol_and_hardware(tmp_path):
    probs = _problems({
        "protocol": {"model": ["smollm2-135m", "smolm2-135m", str(tmp_path)], "eval_corpus": ["austin", "brown"],
                     "calib_corpus": f"file:{tmp_path / 'missing.txt'}"},
        "accuracy": {"recipes": "rtn", "modes": ["fake", "exakt"]},
        "hardware": {"library": "horowitz", "dram": "HBM9", "acc": ["int32", "widow(3)"], "dram_gbps": -1.0},
    })
    keys = {p.split(": ", 1)[0]: p.split(": ", 1)[1] for p in probs}
    assert "did you mean 'smollm2-135m'?" in keys["protocol.model[1]"]
    assert "did you mean 'austen'?" in keys["protocol.eval_corpus[0]"]
    assert "is not a file" in keys["protocol.calib_corpus"]
    assert "did you mean 'exact'?" in keys["accuracy.modes[1]"]
    assert "did you mean 'horowitz45'?" in keys["hardware.library"]
    assert "HBM2" in keys["hardware.dram"]
    assert "widow(3)" in keys["hardware.acc[1]"]
    assert "must be > 0" in keys["hardware.dram_gbps"]
    assert len(probs) == 8


def test_point_validation_reports_location_and_exclusion_removes_it():
    bad = {"recipes": ["rtn", "gptq"], "w": "mxint4", "x": ["mxint8", "none"], "modes": ["fake", "exact"]}
    probs = _problems({"accuracy": bad})
    assert len(probs) == 2, probs  # rtn and gptq with x='none' in exact mode
    assert probs[0].startswith("accuracy: recipe 'rtn' with w='mxint4', x='none', mode='exact': ")
    assert probs[1].startswith("accuracy: recipe 'gptq' with w='mxint4', x='none', mode='exact': ")
    assert "exact mode needs X" in probs[0]
    s = _study(accuracy={**bad, "exclude": [{"x": "none", "mode": "exact"}]})
    assert len(s.accuracy_points()) == 6
    probs = _problems({"accuracy": {"point": [{"recipe": "l2qer", "x": "none", "mode": "exact"}]}})
    assert probs[0].startswith("accuracy.point[0]: recipe 'l2qer' with x='none', mode='exact': ")


def test_settings_and_grid_are_exclusive_and_setting_names_unique():
    probs = _problems({"accuracy": {"recipes": "rtn", "w": "mxint4",
                                    "settings": [{"name": "a", "w": "bfp4"}, {"name": "a", "w": "mxint4"}]}})
    assert probs == ["accuracy: give either the format grid (w) or [[accuracy.settings]], not both",
                     "accuracy.settings[1].name: duplicate name 'a' (also accuracy.settings[0])"]


def test_toml_syntax_error_has_line_number(tmp_path):
    path = _write(tmp_path, '[study]\nname = "x"\n\n[accuracy]\nrecipes = [rtn]\n')
    with pytest.raises(StudyError) as info:
        Study.from_toml(path)
    assert len(info.value.problems) == 1
    assert "line 5" in info.value.problems[0] and "TOML syntax error" in info.value.problems[0]


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(StudyError) as info:
        Study.from_toml(tmp_path / "nope.toml")
    assert "nope.toml" in str(info.value)


def test_no_points_is_an_error():
    assert _problems({}) == ["accuracy: no accuracy points (give accuracy.recipes or [[accuracy.point]]; or every "
                             "grid point was excluded)"]


# ------------------------------------------------------------------------------------------------
# expansion
# ------------------------------------------------------------------------------------------------

def test_grid_expansion_count_and_order():
    s = _study(protocol={"seq_len": [128, 256]},
               accuracy={"recipes": ["rtn", "l2qer"], "w": ["mxint4", "bfp4"], "x": ["mxint8", "mxint6"],
                         "lowrank_fmt": "mxint8", "ranks": [16, 32], "modes": "fake"})
    pts = s.accuracy_points()
    # per protocol: rtn 2 w x 2 x (rank, lowrank dropped) + l2qer 2 x 2 x 2 ranks
    assert len(pts) == 2 * (4 + 8)
    assert pts[0] == AccuracyPoint(seq_len=128, recipe="rtn", w="mxint4", x="mxint8")
    assert pts[4] == AccuracyPoint(seq_len=128, recipe="l2qer", w="mxint4", x="mxint8", lowrank_fmt="mxint8",
                                   rank=16)
    assert pts[5].rank == 32 and pts[6].x == "mxint6"
    assert pts[12].seq_len == 256 and [p.seq_len for p in pts[:12]] == [128] * 12
    assert s.summary()["accuracy_points"] == 24 and s.summary()["design_points"] == 24


def test_settings_expansion_count_and_rank_override():
    s = _study(accuracy={"recipes": ["rtn", "lqer"], "ranks": [8, 16], "modes": "fake",
                         "settings": [{"name": "A", "w": "mxint4", "x": "mxint8", "lowrank_fmt": "mxint8"},
                                      {"name": "B", "w": "bfp4", "x": "bfp8", "lowrank_fmt": "bfp8", "rank": 4},
                                      {"w": "mxint3", "x": "none"}]})
    pts = s.accuracy_points()
    # rtn: 3 settings (ranks dropped); lqer: A x 2 ranks + B x its rank 4 + unnamed x 2 ranks
    assert len(pts) == 3 + 2 + 1 + 2
    assert [p.w for p in pts[:3]] == ["mxint4", "bfp4", "mxint3"]
    lqer_b = [p for p in pts if p.recipe == "lqer" and p.w == "bfp4"]
    assert [p.rank for p in lqer_b] == [4]
    assert [p.rank for p in pts if p.recipe == "lqer" and p.w == "mxint4"] == [8, 16]
    assert s.label(pts[0]) == "A" and s.label(lqer_b[0]) == "B" and s.label(pts[2]) == pts[2].label


def test_rank_collapses_for_recipes_without_reconstruction():
    s = _study(accuracy={"recipes": ["rtn", "gptq", "l2qer", "gptq+l2qer"], "w": "mxint4", "x": "mxint8",
                         "lowrank_fmt": ["mxint8", "bfp8"], "ranks": [8, 16, 32]})
    pts = s.accuracy_points()
    by = {r: [p for p in pts if p.recipe == r] for r in ("rtn", "gptq", "l2qer", "gptq+l2qer")}
    assert len(by["rtn"]) == 1 and len(by["gptq"]) == 1
    assert by["rtn"][0].rank is None and by["rtn"][0].lowrank_fmt is None and by["gptq"][0].rank is None
    assert len(by["l2qer"]) == 6 and len(by["gptq+l2qer"]) == 6
    assert len(pts) == 14


@pytest.mark.parametrize("exclude, expected", [
    ({"recipe": "gptq"}, 8),                                  # a value
    ({"recipe": "gptq", "x": "mxint6"}, 10),                  # all given fields must match
    ({"recipe": ["rtn", "l2qer"]}, 4),                        # a list of values
    ({"recipe": "*q*"}, 4),                                   # a glob (gptq, l2qer)
    ({"recipe": "gptq*", "w": "bfp?"}, 10),                   # two globs
    ({"rank": 32}, 8),                                        # numbers compare by value (rtn/gptq: None)
    ({"x": ["mxint6"], "w": "mxint*"}, 9),                    # list and glob together
])
def test_exclusions(exclude, expected):
    acc = {"recipes": ["rtn", "gptq", "l2qer"], "w": ["mxint4", "bfp4"], "x": ["mxint8", "mxint6"], "ranks": 32}
    assert len(_study(accuracy=acc).accuracy_points()) == 12
    s = _study(accuracy={**acc, "exclude": [exclude]})
    assert s.summary()["accuracy_grid"] == 12 and s.summary()["accuracy_excluded"] == 12 - expected
    assert len(s.accuracy_points()) == expected


def test_two_exclusions_drop_either_match():
    s = _study(accuracy={"recipes": ["rtn", "gptq", "l2qer"], "w": "mxint4", "exclude": [{"recipe": "rtn"},
                                                                                         {"recipe": "gptq"}]})
    assert [p.recipe for p in s.accuracy_points()] == ["l2qer"]
    assert _problems({"accuracy": {"recipes": "rtn", "exclude": [{}]}}) == [
        "accuracy.exclude[0]: empty exclusion (it would drop every point); give at least one of model, eval_corpus, "
        "calib_corpus, seq_len, n_tokens, n_calib, calib_len, seed, recipe, w, x, lowrank_fmt, rank, mode, accumulator, qsur"]
    probs = _problems({"accuracy": {"recipes": "rtn", "exclude": [{"recipes": "rtn", "x": {"a": 1}}]}})
    assert len(probs) == 2  # in file order
    assert probs[0].startswith("accuracy.exclude[0].recipes: unknown key 'recipes'; did you mean 'recipe'?")
    assert probs[1].startswith("accuracy.exclude[0].x: expected a value, a list of values or a glob string")


def test_hardware_expansion_exclusion_and_explicit_points():
    s = _study(accuracy={"recipes": "rtn"},
               hardware={"rows": [16, 32], "node_nm": [7, 45], "dataflow": ["ws", "os"], "acc": [None, 24],
                         "exclude": [{"dataflow": "os", "node_nm": 7}],
                         "point": [{"name": "big", "rows": 64, "cols": 64}, {"node_nm": 45.0}]})
    hw = s.hardware_points()
    assert s.summary()["hardware_grid"] == 16 and s.summary()["hardware_excluded"] == 4
    # grid 12 + "big" (other fields from the first [hardware] values); the second explicit point
    # (rows 16, ws, 45 nm, acc None) equals a grid point and is deduplicated
    assert len(hw) == 13
    big = hw[-1]
    assert (big.rows, big.cols, big.node_nm, big.dataflow, big.acc) == (64, 64, 7.0, "ws", None)
    assert s.label(big) == "big"
    assert {h.acc for h in hw} == {None, "int24"}
    acc_norm = _study(accuracy={"recipes": "rtn"}, hardware={"acc": [24, "24", "INT24", "fp32"], "node_nm": [7, 7.0]})
    assert [h.acc for h in acc_norm.hardware_points()] == ["int24", "fp32"]
    assert all(isinstance(h.node_nm, float) for h in hw)
    assert len(s.points()) == len(hw) and s.points()[0] == DesignPoint(s.accuracy_points()[0], hw[0])


def test_explicit_accuracy_points_protocol_defaults_dedup_and_exclusion():
    s = _study(protocol={"seq_len": [128, 256], "n_tokens": 512},
               accuracy={"recipes": ["rtn", "l2qer"], "w": "mxint4", "x": "mxint8", "ranks": 8,
                         "exclude": [{"recipe": "l2qer"}],
                         "point": [{"recipe": "qera-exact", "w": "mxint3", "name": "Q3"},
                                   {"recipe": "rtn", "w": "mxint4", "x": "mxint8", "seq_len": 128, "rank": 4},
                                   {"recipe": "l2qer", "w": "mxint4", "x": "mxint8", "rank": 8}]})
    pts = s.accuracy_points()
    # grid: 2 protocols x rtn (l2qer excluded); explicit: Q3 new, the rtn one equals the first grid
    # point (rank dropped), the l2qer one survives the exclusion (explicit points are kept)
    assert len(pts) == 4
    q3 = pts[2]
    assert (q3.recipe, q3.w, q3.seq_len, q3.n_tokens, q3.model, q3.mode) == ("qera-exact", "mxint3", 128, 512,
                                                                             "smollm2-135m", "fake")
    assert s.label(q3) == "Q3"
    assert pts[3].recipe == "l2qer" and pts[3].rank == 8 and pts[3].seq_len == 128
    assert s.summary()["accuracy_explicit"] == 3 and s.summary()["accuracy_excluded"] == 2


def test_dedup_is_order_stable():
    s = _study(accuracy={"recipes": ["l2qer", "rtn", "l2qer", "rtn"], "w": ["mxint4", "bfp4", "mxint4"],
                         "x": ["none", "hp"], "ranks": [8, 8]})
    pts = s.accuracy_points()
    assert [(p.recipe, p.w) for p in pts] == [("l2qer", "mxint4"), ("l2qer", "bfp4"), ("rtn", "mxint4"),
                                              ("rtn", "bfp4")]
    assert {p.x for p in pts} == {"none"}


def test_paths_source_text_and_summary(tmp_path):
    s = _study(accuracy={"recipes": "rtn"})
    assert s.db_path == Path("reports/t/study.db") and s.report_dir == Path("reports/t")
    assert json.loads(s.source_text)["accuracy"] == {"recipes": "rtn"}
    s2 = Study.from_dict({"study": {"name": "u", "db": str(tmp_path / "x.db"), "report_dir": "out/u",
                                    "description": "d"}, "accuracy": {"recipes": "rtn"}}, source="mine")
    assert s2.db_path == tmp_path / "x.db" and s2.report_dir == Path("out/u") and s2.description == "d"
    assert s2.source == "mine"
    assert s2.summary()["design_points"] == 1


# ------------------------------------------------------------------------------------------------
# keys
# ------------------------------------------------------------------------------------------------

def test_design_key_is_stable_across_processes():
    s = Study.from_toml(STUDIES / "smoke.toml")
    dp = s.points()[-1]
    code = ("from hwsim.dse.points import AccuracyPoint, HardwarePoint, DesignPoint; import json, sys; "
            "d = json.loads(sys.argv[1]); "
            "print(DesignPoint(AccuracyPoint(**d['a']), HardwarePoint(**d['h'])).key)")
    arg = json.dumps({"a": dp.accuracy.to_dict(), "h": dp.hardware.to_dict()})
    out = subprocess.run([sys.executable, "-c", code, arg], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == dp.key
    assert len(dp.key) == 16


def _changed(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    return "changed"  # None


@pytest.mark.parametrize("which", ["accuracy", "hardware"])
def test_design_key_changes_with_every_field(which):
    dp = Study.from_toml(STUDIES / "smoke.toml").points()[-1]
    point = getattr(dp, which)
    keys = {dp.key}
    for f in dataclasses.fields(point):
        other = dataclasses.replace(point, **{f.name: _changed(getattr(point, f.name))})
        new = DesignPoint(other, dp.hardware) if which == "accuracy" else DesignPoint(dp.accuracy, other)
        assert new.key not in keys, f.name
        keys.add(new.key)
    assert len(keys) == len(dataclasses.fields(point)) + 1


# ------------------------------------------------------------------------------------------------
# shipped studies
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, n_acc, n_hw", [("smoke", 2, 2), ("default", 30, 2), ("lqer_claim", 5, 2)])
def test_shipped_studies_validate(name, n_acc, n_hw):
    s = Study.from_toml(STUDIES / f"{name}.toml")
    assert s.name == name
    assert (len(s.accuracy_points()), len(s.hardware_points()), len(s.points())) == (n_acc, n_hw, n_acc * n_hw)
    assert s.db_path == Path("reports") / name / "study.db"
    assert s.source_text == (STUDIES / f"{name}.toml").read_text()


def test_smoke_study_contents():
    s = Study.from_toml(STUDIES / "smoke.toml")
    rtn, l2qer = s.accuracy_points()
    assert (rtn.recipe, rtn.rank, rtn.lowrank_fmt) == ("rtn", None, None)
    assert (l2qer.recipe, l2qer.rank, l2qer.w, l2qer.x, l2qer.lowrank_fmt) == ("l2qer", 8, "mxint4", "mxint8",
                                                                               "mxint8")
    assert (rtn.n_tokens, rtn.seq_len, rtn.n_calib, rtn.calib_len) == (256, 128, 4, 128)
    assert [h.node_nm for h in s.hardware_points()] == [7.0, 45.0]


def test_lqer_claim_contents():
    s = Study.from_toml(STUDIES / "lqer_claim.toml")
    assert [s.label(p) for p in s.accuracy_points()] == ["AQAS-like W4A8", "OmniQuant-like W6A6",
                                                         "L2QER MXINT W4A8", "L2QER MXINT W4A6", "FP16"]
    assert [h.acc for h in s.hardware_points()] == ["int32", "int24"]
    assert [s.label(h) for h in s.hardware_points()] == ["32x32 ws 45nm HBM2 acc=int32", "32x32 ws 45nm HBM2 acc=int24"]
    assert {h.node_nm for h in s.hardware_points()} == {45.0}


def test_import_does_not_load_torch():
    code = "import sys, hwsim.dse.study; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "False"


def test_benchmark_study_validates():
    s = Study.from_toml(STUDIES.parent / "benchmarks" / "study12.toml")
    assert (len(s.accuracy_points()), len(s.hardware_points())) == (12, 1)
