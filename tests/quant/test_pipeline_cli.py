"""`hwsim quantize` argument handling (no model needed)."""

from hwsim.cli import main


def test_list_recipes(capsys):
    assert main(["quantize", "--list-recipes"]) == 0
    out = capsys.readouterr().out
    for name in ("rtn", "gptq", "lqer", "l2qer", "qera-approx", "qera-exact"):
        assert f"\n  {name} " in out


def test_bad_recipe_and_format_are_clear_errors(capsys):
    assert main(["quantize", "--recipe", "l2qr"]) == 1
    assert "did you mean 'l2qer'" in capsys.readouterr().err
    assert main(["quantize", "--recipe", "l2qer", "--w", "mxint44"]) == 1
    assert "w: unknown format name 'mxint44'" in capsys.readouterr().err
    assert main(["quantize", "--recipe", "l2qer", "--mode", "exact"]) == 1
    assert "lowrank_axes='reduction'" in capsys.readouterr().err
