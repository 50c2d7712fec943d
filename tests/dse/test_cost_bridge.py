"""The bridge from a quantized model to its cost: QLinearRecord and from_quantized are one contract."""

import pytest
import torch

from hwsim.cost_models import SystolicArray, cost_model, from_config, from_quantized
from hwsim.dse import HardwarePoint, cost_metrics
from hwsim.quant import get_recipe, list_recipes, model_records, quantize_model, with_formats
from hwsim.quant.testing import tiny_model

CALIB = torch.randint(0, 128, (8, 32), generator=torch.Generator().manual_seed(0))


def _quantized(recipe):
    m = tiny_model("llama")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_model(m, recipe, CALIB, progress=False)
    return m


@pytest.mark.parametrize("name", list_recipes() + ["weight-only", "gptq+l2qer"])
def test_every_preset_is_costed(name):
    recipe = with_formats(get_recipe("rtn"), a="none") if name == "weight-only" else get_recipe(name)
    if recipe.layer.rank > 16:  # the tiny model's k_proj is 64 -> 32
        recipe = with_formats(recipe, rank=16)
    m = _quantized(recipe)
    recs = model_records(m)
    spec = from_quantized(recs, config=m.config)
    lay = recipe.layer
    rank = lay.rank if recipe.reconstruction else 0
    lins = [lin for layer in spec.layer_linears for lin in layer]
    assert len(lins) == 14 and spec.not_costed == ()
    assert all((lin.lowrank.rank if lin.lowrank else 0) == rank for lin in lins)
    assert all(lin.x_fmt == (recipe.layer_config(f"model.layers.0.{lin.name}").x or "fp16") for lin in lins)
    res = cost_model(spec, SystolicArray(8, 8))
    assert res.totals["energy_pj"] > 0
    assert (res.energy_components["lowrank"] > 0) == bool(rank)
    # sharing: q/k/v read one quantized input, gate/up another
    assert [lin.shares_input_with for lin in spec.layer_linears[0]] == [
        None, "q_proj", "q_proj", None, None, "gate_proj", None]


def test_records_cost_the_same_as_the_config_with_the_same_formats():
    """An independent path: a plain config with one (w, a) pair gives the same totals as the records."""
    m = _quantized(with_formats(get_recipe("rtn"), w="mxint4", a="mxint8"))
    arr = SystolicArray(8, 8, "ws")
    for phase in ("prefill", "decode"):
        a = cost_model(from_quantized(model_records(m), config=m.config, phase=phase, seq=32), arr)
        b = cost_model(from_config(m.config, "mxint4", "mxint8", phase=phase, seq=32), arr)
        assert a.totals == b.totals


def test_hadamard_record_is_charged():
    m = _quantized(get_recipe("rtn"))
    recs = model_records(m)
    import dataclasses

    had = [dataclasses.replace(r, pre_transform="hadamard", pre_transform_size=r.in_features)
           if r.name.endswith("down_proj") else r for r in recs]
    arr = SystolicArray(8, 8)
    plain = cost_model(from_quantized(recs, config=m.config), arr)
    rot = cost_model(from_quantized(had, config=m.config), arr)
    assert plain.energy_components["transforms"] == 0 < rot.energy_components["transforms"]


def test_cost_metrics_units_and_phases():
    m = _quantized(get_recipe("l2qer-hw"))
    hw = HardwarePoint(rows=8, cols=8, node_nm=7, prefill_seq=64, decode_context=64)
    c = cost_metrics(model_records(m), m.config, hw)
    assert c["area_mm2"] == pytest.approx(sum(v for k, v in c.items() if k.startswith("area_") and k != "area_mm2"))
    assert c["energy_per_token_uj"] == pytest.approx(
        sum(v for k, v in c.items() if k.startswith("energy_") and k.endswith("_uj") and k != "energy_per_token_uj"))
    assert c["area_lowrank_mm2"] > 0 and c["decode_latency_ms"] > 0 and c["prefill_latency_ms"] > 0
    # a decode step streams every weight once: it costs more energy per token than prefill
    assert c["decode_energy_per_token_uj"] > c["energy_per_token_uj"]
