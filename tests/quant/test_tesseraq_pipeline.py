"""TesseraQ as a pipeline stage (issue 10): block by block through ``quantize_model``, composed with
a reconstruction, with activation quantizers on, and outside the blocks."""

import warnings

import pytest
import torch

from hwsim.quant import QLinear, get_recipe, quantize_model
from hwsim.quant.testing import tiny_model

IDS = torch.randint(0, 128, (8, 16), generator=torch.Generator().manual_seed(1))
FAST = {"tesseraq": {"iters_per_stage": 20, "batch_size": 4}}


def _run(recipe, **changes):
    model = tiny_model("llama")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rep = quantize_model(model, get_recipe(recipe, **changes), IDS, progress=False)
    return model, rep


def _logit_mse(model) -> float:
    ref = tiny_model("llama")
    with torch.no_grad():
        return float(((model(IDS).logits - ref(IDS).logits) ** 2).mean())


@pytest.mark.parametrize("layer", [{"w": "int3_g32_asym"}, {"w": "mxint4", "x": "mxint8"}],
                         ids=["w3-int-g32", "w4a8-mx"])
def test_tesseraq_beats_rtn_on_the_model_output(layer):
    tq, rep = _run("tesseraq", layer=layer, options=FAST)
    rtn, _ = _run("rtn", layer=layer)
    assert all(isinstance(m, QLinear) for n, m in tq.named_modules() if n.endswith("proj"))
    assert rep.n_quantized == 14 and rep.timings["round"] > 0
    e_tq, e_rtn = _logit_mse(tq), _logit_mse(rtn)
    print(f"logit MSE {layer}: tesseraq {e_tq:.3e}, rtn {e_rtn:.3e}")
    assert e_tq < 0.8 * e_rtn
    if layer["w"] == "mxint4":  # a power-of-two scale cannot carry the DST multiplier: recorded
        assert any(e["kind"] == "dst_disabled" for e in rep.events)


def test_tesseraq_then_qera_exact_and_the_lm_head_outside_the_blocks():
    model, rep = _run("tesseraq+qera-exact", layer={"w": "int3_g32_asym", "rank": 8}, options=FAST,
                      overrides=(("lm_head", {"skip": False}),))
    down = model.model.layers[1].mlp.down_proj
    assert down.rank == 8 and rep.recipe["stages"] == ["tesseraq", "qera-exact"]
    assert isinstance(model.lm_head, QLinear)
    assert {"stage": "tesseraq", "layer": "lm_head", "kind": "outside_blocks_rtn", "value": True} in rep.events
    alone, _ = _run("tesseraq", layer={"w": "int3_g32_asym"}, options=FAST, overrides=(("lm_head", {"skip": False}),))
    assert _logit_mse(model) < _logit_mse(alone)


def test_zero_iterations_give_rtn():
    tq, _ = _run("tesseraq", layer={"w": "int4_g32_asym"}, options={"tesseraq": {"iters_per_stage": 0}})
    rtn, _ = _run("rtn", layer={"w": "int4_g32_asym"})
    w_tq = tq.model.layers[0].self_attn.q_proj.weight
    w_rtn = rtn.model.layers[0].self_attn.q_proj.weight
    # RTN except exact ties (frac = 0.5 rounds up in RNE-free PAR only when nu > 0)
    assert (w_tq != w_rtn).float().mean() < 1e-3


def test_bad_tesseraq_options_are_refused_before_work():
    from hwsim.quant import validate_recipe

    with pytest.raises(ValueError, match="option 'budget': 'gpu' is not valid; valid: 'cpu', 'paper'"):
        validate_recipe(get_recipe("tesseraq", options={"tesseraq": {"budget": "gpu"}}))
    with pytest.raises(ValueError, match="option 'schedule'"):
        validate_recipe(get_recipe("tesseraq", options={"tesseraq": {"schedule": [0.5, 0.7]}}))
    with pytest.raises(ValueError, match="option 'iters_per_stage': -1 is not valid"):
        validate_recipe(get_recipe("tesseraq", options={"tesseraq": {"iters_per_stage": -1}}))
