"""studies/accumulator.toml and benchmarks/acc_table.py parse and validate without evaluating (issue 14)."""

import importlib.util
from pathlib import Path

from hwsim.dse import Study
from hwsim.matmul.datapath import FixedAcc, parse_accumulator

ROOT = Path(__file__).resolve().parents[2]


def _script():
    spec = importlib.util.spec_from_file_location("acc_table", ROOT / "benchmarks" / "acc_table.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_study_file_expands_to_the_experiment():
    s = Study.from_toml(ROOT / "studies" / "accumulator.toml")
    acc = s.accuracy_points()
    assert len(acc) == 16 and len(s.hardware_points()) == 1
    assert {(p.w, p.x) for p in acc} == {("mxint4", "mxint8"), ("int4_ch", "int8_tok")}
    assert all(p.model == "smollm2-135m" and p.mode == "exact" and p.recipe == "rtn" for p in acc)
    assert all(p.eval_corpus == "brown" and p.n_tokens == 4096 for p in acc)
    widths = sorted({parse_accumulator(p.accumulator).width for p in acc if p.accumulator != "fp32"})
    assert widths == [16, 20, 24, 32]
    for p in acc:
        spec = parse_accumulator(p.accumulator)
        if isinstance(spec, FixedAcc):
            assert spec.saturates and spec.frac_bits in (spec.width // 2, spec.width - 16)
    assert sum(p.accumulator == "fp32" for p in acc) == 2
    assert {p.accumulator for p in acc if p.w == "mxint4"} == {p.accumulator for p in acc if p.w == "int4_ch"}


def test_the_script_dry_run_evaluates_nothing(capsys, tmp_path):
    mod = _script()
    assert mod.main(["--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "16 accuracy x 1 hardware points, 4096 tokens" in out
    assert "acc=fixed:16:8:rne" in out
    # --n-tokens overrides the protocol and keeps its own database
    assert mod.main(["--dry-run", "--n-tokens", "512"]) == 0
    out = capsys.readouterr().out
    assert "512 tokens" in out and "accumulator_n512" in out
    s = mod.build_study(mod.DEFAULT_STUDY, 512, db=str(tmp_path / "x.db"))
    assert all(p.n_tokens == 512 for p in s.accuracy_points()) and s.db_path == tmp_path / "x.db"
    assert not (tmp_path / "x.db").exists()


def test_costed_as_follows_the_record_rule():
    mod = _script()
    assert mod._costed_as("fp32", "int32") == "int32"
    assert mod._costed_as("fixed:20:10:saturate:rne", "int32") == "fixed:20:10:rne"
