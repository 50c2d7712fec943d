"""``hwsim cost synth``: the validation table from the shipped data, one unit synthesized, bad input."""

import pytest

from hwsim.cli import main
from hwsim.cost_models.synth import yosys


def _run(capsys, argv):
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse usage errors
        rc = exc.code
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_table_needs_no_synthesis(capsys, monkeypatch):
    monkeypatch.setattr(yosys.shutil, "which", lambda name: None)   # yosys absent: the table still prints
    rc, out, err = _run(capsys, ["cost", "synth", "--table"])
    assert rc == 0, err
    for s in ("global scale", "block_dot_mxint8_acc32", "block_dot_mxfp8_e4m3_acc32", "mult_2x2",
              "MXINT4 / MXINT8 block dot", "IEEE width"):
        assert s in out


@pytest.mark.parametrize("argv,expect", [
    (["cost", "synth", "mul", "a=4"], ["family='mul' is unknown", "block_dot"]),
    (["cost", "synth", "mult", "a4"], ["'a4' is not key=value"]),
    (["cost", "synth", "mult", "a=4", "b=4", "arch=wallace"], ["arch='wallace' is not valid", "booth4"]),
    (["cost", "synth", "mult", "a=4", "arch=booth4"], ["needs a=, b=, arch=", "missing: b"]),
    (["cost", "synth", "block_dot", "fa=mxint4_b16", "fw=mxint8", "acc=32"], ["equal block sizes"]),
    (["cost", "synth"], ["give a unit family"]),
])
def test_bad_input(capsys, argv, expect):
    rc, out, err = _run(capsys, argv)
    assert rc == 2 and "Traceback" not in err
    for e in expect:
        assert e in err, err


@pytest.mark.skipif(not yosys.available(), reason="yosys is not installed (Debian package `yosys`)")
def test_one_unit(capsys, tmp_path):
    v = tmp_path / "m.v"
    rc, out, err = _run(capsys, ["cost", "synth", "mult", "a=4", "b=4", "arch=booth4", "--verilog", str(v)])
    assert rc == 0, err
    assert "transistors (stat -tech cmos) 468" in out and "all) vectors" in out and "residual" in out
    assert "module mult_booth4_4x4" in v.read_text()


def test_missing_yosys_is_one_clear_line(capsys, monkeypatch):
    monkeypatch.setattr(yosys.shutil, "which", lambda name: None)
    rc, out, err = _run(capsys, ["cost", "synth", "adder", "w=4"])
    assert rc == 1 and "Debian package `yosys`" in err and "Traceback" not in err
