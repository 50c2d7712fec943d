"""The study runner on the real SmolLM2 model: caching, failures, kill-and-resume, executors."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hwsim.dse import Study, load, study_info
from hwsim.dse import runner as R
from hwsim.dse.store import ResultStore

pytestmark = pytest.mark.model

SETTINGS = [{"name": "W4A8 MXINT", "w": "mxint4", "x": "mxint8"}, {"name": "W4A8 BFP", "w": "bfp4", "x": "bfp8"},
            {"name": "W3 weight-only", "w": "mxint3", "x": "none"}]


def tiny_study(tmp: Path, name="tiny", recipes=("rtn",), settings=SETTINGS, points=()) -> dict:
    return {
        "study": {"name": name, "db": str(tmp / f"{name}.db"), "report_dir": str(tmp / f"{name}-report")},
        "protocol": {"model": "smollm2-135m", "eval_corpus": "austen", "calib_corpus": "austen", "seq_len": 64,
                     "n_tokens": 128, "n_calib": 2, "calib_len": 64},
        "accuracy": {"recipes": list(recipes), "settings": list(settings), **({"point": list(points)} if points else {})},
        "hardware": {"rows": 16, "cols": 16, "node_nm": [7, 45], "prefill_seq": 64, "decode_context": 64},
    }


def toml_text(d: dict) -> str:
    """A minimal TOML writer for the study dicts above (tables, arrays of tables, scalars, lists)."""
    def val(v):
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(val(x) for x in v) + "]"
        return str(v).lower() if isinstance(v, bool) else str(v)

    lines = []
    for section, body in d.items():
        lines.append(f"[{section}]")
        tables = {k: v for k, v in body.items() if isinstance(v, list) and v and isinstance(v[0], dict)}
        lines += [f"{k} = {val(v)}" for k, v in body.items() if k not in tables]
        for k, items in tables.items():
            for item in items:
                lines.append(f"[[{section}.{k}]]")
                lines += [f"{ik} = {val(iv)}" for ik, iv in item.items()]
    return "\n".join(lines) + "\n"


def design_rows(db: Path) -> list[tuple]:
    """(design_key, cost metrics, accuracy metrics) of every row, in key order; no timings."""
    con = sqlite3.connect(db)
    rows = con.execute("SELECT d.design_key, d.metrics_json, a.metrics_json, a.records_json FROM design d "
                       "JOIN accuracy a USING (accuracy_key) ORDER BY d.design_key").fetchall()
    con.close()
    return rows


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One uninterrupted run of the tiny study (3 accuracy x 2 hardware points)."""
    tmp = tmp_path_factory.mktemp("finished")
    study = Study.from_dict(tiny_study(tmp))
    R.WORK.clear()
    summary = study.run(progress=False)
    return study, summary, dict(R.WORK)


def test_run_stores_one_row_per_design_point(finished):
    study, summary, work = finished
    assert summary["evaluated"] == 3 and summary["failed"] == 0 and summary["design"] == 6
    df = load(study.db_path)
    assert len(df) == 6 and df["design_key"].is_unique and (df["status"] == "ok").all()
    assert set(df["hw_label"]) == {"16x16 ws 7nm HBM2", "16x16 ws 45nm HBM2"}
    assert (df["ppl"] > df["fp_ppl"]).all() and df["fp_ppl"].nunique() == 1
    assert (df.loc[df["x_fmt"] == "none", "area_quantizers_mm2"] > 0).all()  # weight dequantizers
    wo = df[df["w_fmt"] == "mxint3"].iloc[0]
    assert wo["x_fmt"] == "none" and wo["bits_per_weight"] == pytest.approx(3.25)
    versions = json.loads(df["versions"].iloc[0])
    assert {"hwsim", "torch", "transformers", "numpy", "numba", "git_commit"} <= set(versions)
    assert work["model_loads"] <= 1 and work["quantizations"] == 3 and work["evaluations"] == 3
    info = study_info(study.db_path)
    assert info["finished"] and info["expected_design_points"] == 6 and info["failed_points"] == 0
    with ResultStore(study.db_path) as s:
        assert s.integrity_check() == "ok"


def test_second_run_does_no_model_work(finished):
    study, _, _ = finished
    before = design_rows(study.db_path)
    R.WORK.clear()
    summary = study.run(progress=False)
    assert summary["evaluated"] == 0 and sum(R.WORK.values()) == 0
    assert design_rows(study.db_path) == before


def test_new_hardware_points_are_costed_from_stored_records(finished, tmp_path):
    study, _, _ = finished
    import shutil

    d = tiny_study(tmp_path)
    shutil.copy(study.db_path, tmp_path / "tiny.db")
    d["hardware"]["rows"] = [16, 8]
    bigger = Study.from_dict(d)
    R.WORK.clear()
    t = time.perf_counter()
    summary = bigger.run(progress=False)
    assert summary["evaluated"] == 0 and summary["recosted"] == 3 and sum(R.WORK.values()) == 0
    assert len(load(bigger.db_path)) == 12
    assert time.perf_counter() - t < 60


def test_failing_point_is_recorded_and_the_others_finish(tmp_path):
    # rank 10000 passes the study's checks but exceeds the model's dimensions at quantization time
    d = tiny_study(tmp_path, name="fails", settings=SETTINGS[:1],
                   points=[{"recipe": "lqer", "w": "mxint4", "x": "mxint8", "lowrank_fmt": "mxint8", "rank": 10000}])
    study = Study.from_dict(d)
    summary = study.run(progress=False)
    assert summary["evaluated"] == 2 and summary["failed"] == 1
    df = load(study.db_path)
    failed = df[df["status"] == "failed"]
    assert len(failed) == 2 and failed["error"].str.contains("exceeds min").all()
    assert (df.loc[df["status"] == "ok", "ppl"] > 0).all()
    info = study_info(study.db_path)
    assert info["failed_points"] == 2
    R.WORK.clear()
    assert study.run(progress=False)["evaluated"] == 0  # failed points are not retried by default
    assert study.run(progress=False, retry_failed=True)["evaluated"] == 1


def test_kill_and_resume(finished, tmp_path):
    """SIGKILL mid-study; --resume completes it; rows byte-identical to the uninterrupted run."""
    study, _, _ = finished
    d = tiny_study(tmp_path, name="killed")
    path = tmp_path / "killed.toml"
    path.write_text(toml_text(d))
    db = tmp_path / "killed.db"
    cmd = [sys.executable, "-m", "hwsim.cli", "study", str(path), "--quiet", "--no-report"]
    import torch

    # the same thread count as the uninterrupted in-process run: the same float reduction order
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    n = 0
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
        if db.exists():
            try:
                with sqlite3.connect(db, timeout=1) as con:
                    n = con.execute("SELECT count(*) FROM accuracy").fetchone()[0]
            except sqlite3.OperationalError:
                continue
            if n >= 1:
                break
    assert proc.poll() is None, "the study finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with sqlite3.connect(db) as con:
        stored = con.execute("SELECT count(*) FROM accuracy").fetchone()[0]
    assert 1 <= stored < 3
    out = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"evaluated {3 - stored} accuracy points" in out.stdout
    with ResultStore(db) as s:
        assert s.integrity_check() == "ok" and s.counts()["design"] == 6
    assert design_rows(db) == design_rows(study.db_path)


def assert_same_rows(db_a: Path, db_b: Path) -> None:
    """Same keys, records and cost metrics bit for bit; accuracy metrics equal up to the float
    reduction order of a forward pass (workers run with fewer threads than the driver)."""
    rows_a, rows_b = design_rows(db_a), design_rows(db_b)
    assert [r[0] for r in rows_a] == [r[0] for r in rows_b]
    for (_, cost_a, acc_a, rec_a), (_, cost_b, acc_b, rec_b) in zip(rows_a, rows_b):
        assert cost_a == cost_b and rec_a == rec_b
        acc_a, acc_b = json.loads(acc_a), json.loads(acc_b)
        assert acc_a.keys() == acc_b.keys()
        for k in ("ppl", "bits_per_byte", "fp_ppl", "layer_err_mean", "layer_err_max"):
            assert acc_a[k] == pytest.approx(acc_b[k], rel=1e-4), k
        assert acc_a["bits_per_weight"] == acc_b["bits_per_weight"] and acc_a["stages"] == acc_b["stages"]


def test_parallel_jobs_give_the_same_rows(finished, tmp_path):
    study, _, _ = finished
    par = Study.from_dict(tiny_study(tmp_path, name="par"))
    par.run(progress=False, jobs=2)
    assert_same_rows(par.db_path, study.db_path)


def test_ray_executor_gives_the_same_rows(finished, tmp_path):
    pytest.importorskip("ray", reason="the ray extra is installed by scripts/setup.sh")
    import ray

    study, _, _ = finished
    rs = Study.from_dict(tiny_study(tmp_path, name="ray"))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        rs.run(progress=False, executor="ray", jobs=2)
    finally:
        ray.shutdown()
    assert_same_rows(rs.db_path, study.db_path)


def test_bad_runner_arguments(finished):
    study, _, _ = finished
    with pytest.raises(ValueError, match="executor='slurm'.*local, ray"):
        study.run(executor="slurm")
    with pytest.raises(ValueError, match="jobs=0"):
        study.run(jobs=0)


def test_fp_statistics_are_computed_once_per_calibration(tmp_path, monkeypatch):
    """Two L2QER points in different formats share one calibration pass (memory, then disk).

    Only the first 4 of SmolLM2's 30 blocks are quantized (the others are skipped in every point
    alike): the per-layer SVDs of L2QER were 3 x 30 s of this test, and the sharing does not depend
    on how many layers use the statistics."""
    import dataclasses

    import hwsim.eval.cache as cache

    real = cache.cache_dir
    monkeypatch.setattr(cache, "cache_dir", lambda *p: tmp_path.joinpath(*p) if p[0] == "dse" else real(*p))
    real_recipe = R.point_recipe
    skip = ("lm_head",) + tuple(f"model.layers.{i}.*" for i in range(4, 30))
    monkeypatch.setattr(R, "point_recipe", lambda point: dataclasses.replace(real_recipe(point), skip=skip))
    monkeypatch.setattr(R, "_FP_STATS", {})
    lowrank = [{"name": f, "w": w, "x": "mxint8", "lowrank_fmt": "mxint8"} for f, w in (("A", "mxint4"), ("B", "bfp4"))]
    d = tiny_study(tmp_path, name="stats", recipes=("l2qer",), settings=lowrank)
    d["accuracy"]["ranks"] = [4]
    R.WORK.clear()
    Study.from_dict(d).run(progress=False)
    assert R.WORK["quantizations"] == 2 and R.WORK["fp_stat_calibrations"] == 1
    assert list((tmp_path / "dse" / "stats").glob("*.pt"))
    # a new process (empty memory cache) reads the statistics from disk
    monkeypatch.setattr(R, "_FP_STATS", {})
    R.WORK.clear()
    d2 = tiny_study(tmp_path, name="stats2", recipes=("l2qer",), settings=lowrank[:1])
    d2["accuracy"]["ranks"] = [4]
    Study.from_dict(d2).run(progress=False)
    assert R.WORK["quantizations"] == 1 and R.WORK["fp_stat_calibrations"] == 0
    assert load(tmp_path / "stats2.db")["ppl"].tolist() == load(tmp_path / "stats.db")["ppl"].tolist()[:2]
