"""QSUR in studies (issue 11): ``[accuracy] qsur = true`` measures the QSUR of every quantizer
input before and after the recipe's transforms and stores its summary with the point's metrics."""

from __future__ import annotations

import math

import pytest
import torch

from hwsim.dse import Study
from hwsim.dse.points import AccuracyPoint, config_key
from hwsim.dse.runner import _qsur_hooks, qsur_summary


def _rows(values: dict[tuple[int, str], float | None]) -> list[dict]:
    return [{"block": b, "group": g, "d": 8, "qsur": v, "n": 16} for (b, g), v in values.items()]


def test_summary_means_per_group_and_overall_skipping_missing_values():
    before = _rows({(0, "qkv"): 0.1, (1, "qkv"): 0.3, (0, "down"): None, (1, "down"): 0.2})
    after = _rows({(0, "qkv"): 0.5, (1, "qkv"): 0.7, (0, "down"): 0.4, (1, "down"): 0.6})
    s = qsur_summary({"before": before, "after": after})
    assert s["qsur_before"] == pytest.approx(0.2) and s["qsur_after"] == pytest.approx(0.55)
    assert s["qsur_groups"] == {"qkv": [pytest.approx(0.2), pytest.approx(0.6)],
                                "down": [pytest.approx(0.2), pytest.approx(0.5)]}
    assert qsur_summary({}) == {}


def test_qsur_is_left_out_of_the_key_when_off_and_parsed_from_the_study_file(tmp_path):
    off = AccuracyPoint()
    fields = {k: v for k, v in off.to_dict().items() if k not in ("accumulator", "qsur")}
    assert off.key == config_key("accuracy", fields)  # points stored before the field keep their key
    on = AccuracyPoint(qsur=True)
    assert on.key != off.key and "qsur" in on.label
    study = Study.from_dict({
        "study": {"name": "q", "db": str(tmp_path / "q.db")},
        "accuracy": {"recipes": ["rtn"], "w": "mxint4", "x": "mxint8", "qsur": True,
                     "point": [{"recipe": "rtn", "w": "mxint4", "x": "none"}]},
        "hardware": {"rows": 8, "cols": 8}})
    flags = sorted(p.qsur for p in study.accuracy_points())
    assert flags == [False, True]  # the grid point measures it, the explicit point (default) does not
    with pytest.raises(Exception, match="qsur"):
        Study.from_dict({"study": {"name": "q2", "db": str(tmp_path / "q2.db")},
                         "accuracy": {"recipes": ["rtn"], "qsur": "maybe"}, "hardware": {"rows": 8}})


def test_hooks_measure_before_and_after_the_transforms_on_a_real_pipeline():
    """A tiny LLaMA with skewed norm gains: folding them (the fold_norms transform) raises the QSUR
    of the q/k/v and gate/up inputs; without a transform stage "after" is "before"."""
    from hwsim.quant import get_recipe, quantize_model
    from hwsim.quant.testing import tiny_model

    def model_with_skewed_gains():
        m = tiny_model("llama", seed=0)
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for name, p in m.named_parameters():
                if name.endswith("layernorm.weight"):
                    p.copy_(torch.exp(2 * torch.randn(p.shape, generator=g)))
        return m

    ids = torch.randint(0, 128, (4, 128), generator=torch.Generator().manual_seed(2))
    point = AccuracyPoint(qsur=True)
    for stages, changes in (("fold_norms+rtn", True), ("rtn", False)):
        recipe = get_recipe(stages)
        model = model_with_skewed_gains()
        tables, hook = _qsur_hooks(point, recipe, model, None, ids)
        quantize_model(model, recipe, ids, progress=False, on_transformed=hook)
        s = qsur_summary(tables)
        assert all(math.isfinite(v) for pair in s["qsur_groups"].values() for v in pair)
        assert set(s["qsur_groups"]) == {"qkv", "o", "gate_up", "down"}
        if changes:
            for grp in ("qkv", "gate_up"):
                before, after = s["qsur_groups"][grp]
                assert after > before
        else:
            assert tables["after"] is tables["before"]
    assert _qsur_hooks(AccuracyPoint(), get_recipe("rtn"), None, None, ids) == ({}, None)
