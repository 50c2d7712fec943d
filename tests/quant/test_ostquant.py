"""The ``ostquant`` stage (issue 11; docs/spec/algorithms.md §4.5): its two students against the
fold formulas, the stage end to end on tiny models, NaN handling, save/load of the online
Hadamard and the attention quantizers, the presets."""

import warnings

import pytest
import torch
from test_ostquant_fold import norms_in_model_dtype, random_params  # noqa: F401 (norms_in_model_dtype: fixture)

from hwsim.quant import get_recipe, load_quantized, model_records, quantize_model, save_quantized
from hwsim.quant.algorithms import ostquant as ost
from hwsim.quant.attention import install_attention_quant, remove_attention_quant
from hwsim.quant.model import fold_norms, get_adapter
from hwsim.quant.ostquant_fold import center_opt_residual
from hwsim.quant.testing import tiny_model

F64 = torch.float64
IDS = torch.randint(0, 128, (6, 24), generator=torch.Generator().manual_seed(0))
SMALL = {"steps": 4, "n_samples": 4, "seq_len": 16}


def _quiet(fn, *a, **k):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*a, **k)


def _stand_in(x, fmt):
    """A smooth non-linear stand-in for a quantizer (elementwise, not the identity)."""
    return x + 0.05 * torch.tanh(3.0 * x)


def _logits(ad, h):
    head = ad.lm_head()
    z = h @ head.weight.T
    return z + head.bias if head.bias is not None else z


ALL = {"llama": set(ost.ALL_TRANSFORMS), "qwen2": set(ost.ALL_TRANSFORMS), "opt": set(ost.ALL_TRANSFORMS),
       "gemma3": set(ost.ALL_TRANSFORMS) - {"R_res"}}


@pytest.mark.parametrize("kind", sorted(ALL))
def test_both_students_compute_the_folded_model(kind):
    """With every quantizer position active, a non-linear stand-in quantizer and random
    transforms, the activation-side student (transforms moved to the quantizers) equals the
    weight-side student (fold formulas, float64) to 1e-10; with the identity both equal the
    model. This is what makes the cheap student exact."""
    model = tiny_model(kind, dtype=F64)
    fold_norms(model)
    if kind == "opt":
        center_opt_residual(model)
    ad = get_adapter(model)
    with torch.no_grad():
        ref = model(IDS, use_cache=False).logits
    params = random_params(model, ALL[kind] | {"hadamard_down"}, seed=3)
    recipe = get_recipe("ostquant-w4a4kv4", attention={"q": "int8_tok", "k": "int8_tok", "v": "int8_tok"})
    out = {}
    for quant, tag in ((lambda x, f: x, "id"), (_stand_in, "f")):
        for mode in ("activations", "weights"):
            st = ost.Student(model, ad, params, recipe, mode=mode, quant_weights=False, quant=quant,
                             tied_qk=False)
            install_attention_quant(model, recipe.attention, ad, quant=quant)
            try:
                with torch.no_grad():
                    out[tag, mode] = _logits(ad, st.hidden(IDS))
            finally:
                st.remove()
                remove_attention_quant(model, ad)
    scale = float(ref.abs().max())
    for mode in ("activations", "weights"):
        assert float((out["id", mode] - ref).abs().max()) / scale < 1e-10
    gap = float((out["f", "activations"] - out["f", "weights"]).abs().max()) / scale
    assert gap < 1e-10, gap
    assert float((out["f", "weights"] - ref).abs().max()) / scale > 1e-4  # the stand-in does something
    with torch.no_grad():
        assert torch.equal(model(IDS, use_cache=False).logits, ref)  # every hook removed


def test_ste_fake_quant_is_the_codec_forward_with_a_scale_gradient():
    from hwsim.quant.qlinear import fake_quant

    x = torch.randn(3, 5, 40, generator=torch.Generator().manual_seed(0), requires_grad=True)
    for fmt in ("int4_tok_asym", "int4_g16_asym", "int4_ch", "int8", "mxint4"):
        y = ost.ste_fake_quant(x, fmt)
        assert torch.equal(y.detach(), fake_quant(x.detach(), fmt, axis=-1)), fmt
        (g,) = torch.autograd.grad((y * torch.arange(40.0)).sum(), x)
        if fmt == "mxint4":
            assert torch.equal(g, torch.arange(40.0).expand_as(x))  # plain straight-through
        else:  # the min-max scale passes gradient to the extreme elements
            assert not torch.equal(g, torch.arange(40.0).expand_as(x)), fmt
    with torch.no_grad():
        assert torch.equal(ost.ste_fake_quant(x, "int4_tok_asym"), fake_quant(x, "int4_tok_asym"))


@pytest.mark.parametrize("quant_weights", [False, True], ids=["activation-student", "weight-student"])
def test_stage_end_to_end_keeps_the_function_before_quantization(quant_weights):
    """OSTQuant then near-lossless rounding (fp32 weights, no activation quantizer): the trained,
    folded model with the online Hadamard as down_proj's pre_transform computes the fp logits."""
    fp, model = tiny_model("llama"), tiny_model("llama")
    # fp32 weights, and fp32 "activation quantizers" (the identity on float32) so that the activation
    # student has quantizer positions to train on
    recipe = get_recipe("ostquant+rtn", layer={"w": "fp32", "x": None if quant_weights else "fp32"},
                        attention={} if quant_weights else {"k": "fp32", "v": "fp32"},
                        options={"ostquant": dict(SMALL, quant_weights=quant_weights)})
    rep = _quiet(quantize_model, model, recipe, IDS, progress=False)
    trained = [e["value"] for e in rep.events if e["kind"] == "trained"]
    assert len(trained) == 1 and trained[0]["steps"] == 4
    assert trained[0]["student"] == ("weights" if quant_weights else "activations")
    downs = [model.model.layers[i].mlp.down_proj for i in range(2)]
    assert downs[0].pre_transform.data_ptr() == downs[1].pre_transform.data_ptr()  # one shared H_m
    rec = downs[0].record()
    assert (rec.pre_transform, rec.pre_transform_size) == ("hadamard", 192)
    assert model.model.layers[0].mlp.up_proj.pre_transform is None
    # the transforms are not the identity: the weights changed
    assert not torch.allclose(downs[0].weight, fp.model.layers[0].mlp.down_proj.weight, atol=1e-3)
    with torch.no_grad():
        out, ref = model(IDS).logits, fp(IDS).logits
    assert float((out - ref).abs().max() / ref.abs().max()) < 1e-5


def test_w4a4kv4_training_lowers_the_quantized_loss():
    """On a tiny LLaMA at W4A4KV4 the KL-Top loss of the trained transforms on the training
    sequences is below that of the initial (WOMI) transforms."""
    model = tiny_model("llama")
    recipe = get_recipe("ostquant-w4a4kv4")
    ids = IDS[:4, :16]
    opts = dict(SMALL, steps=40, lr_rot=0.05, lr_scale=0.02, batch_size=4)
    res = _quiet(ost.ostquant, model, ids, recipe, **opts)
    assert len(res.losses) == 40
    first, last = sum(res.losses[:4]) / 4, sum(res.losses[-4:]) / 4
    assert last < first, (first, last)


def test_nonfinite_loss_stops_restores_and_is_recorded(monkeypatch):
    real = ost.kl_top_from_hidden
    calls = {"n": 0}

    def flaky(*a, **k):
        calls["n"] += 1
        loss = real(*a, **k)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(ost, "kl_top_from_hidden", flaky)
    model = tiny_model("llama")
    recipe = get_recipe("ostquant+rtn", layer={"w": "fp32", "x": "int4_tok_asym"},
                        options={"ostquant": dict(SMALL, steps=6)})
    events = []
    res = _quiet(ost.ostquant, model, IDS, recipe, events=events, **recipe.options["ostquant"])
    assert res.stopped_at == 2 and len(res.losses) == 2
    assert {"stage": "ostquant", "layer": None, "kind": "nonfinite_loss", "value": 2} in events
    # the restored parameters are those of the last finite loss (after one step), and they fold
    for h in res.hooks:
        h.remove()
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_save_and_load_round_trip_the_hadamard_and_the_kv_quantizers(tmp_path):
    model = tiny_model("llama")
    recipe = get_recipe("ostquant-w4a4kv4", options={"ostquant": SMALL, "gptq": {"act_order": "auto"}})
    _quiet(quantize_model, model, recipe, IDS, progress=False)
    with torch.no_grad():
        ref = model(IDS).logits
    save_quantized(model, tmp_path / "q")
    from safetensors.torch import load_file

    keys = set(load_file(str(tmp_path / "q" / "quant.safetensors")))
    assert [k for k in keys if "pre_transform" in k] == ["pre_transform.0"]  # stored once
    assert (tmp_path / "q" / "base.safetensors").is_file()  # embeddings, norms, lm_head changed
    fresh = load_quantized(tiny_model("llama"), tmp_path / "q")
    with torch.no_grad():
        assert torch.equal(fresh(IDS).logits, ref)
    assert (fresh.model.layers[0].mlp.down_proj.pre_transform.data_ptr()
            == fresh.model.layers[1].mlp.down_proj.pre_transform.data_ptr())
    assert model_records(fresh) == model_records(model)


def test_presets_and_their_records():
    from hwsim.cost_models import from_quantized

    for name, kv, x in (("ostquant-w4a4kv4", "int4_g128_asym", "int4_tok_asym"),
                        ("ostquant-w4a16", None, None), ("ostquant-mx-w4a4kv8", "mxint8", "mxint4")):
        r = get_recipe(name)
        assert r.stages == ("ostquant", "gptq") and r.stats_source == "sequential"
        assert (r.attention.k, r.attention.v, r.layer.x) == (kv, kv, x)
    r = get_recipe("ostquant-w4a4kv4")
    assert r.layer_config("model.layers.0.self_attn.o_proj").x == "int4_g128_asym"
    assert r.layer_config("model.layers.0.mlp.down_proj").w == "int4_ch"
    model = tiny_model("llama")
    _quiet(quantize_model, model, get_recipe(r, options={"ostquant": SMALL, "gptq": {}}), IDS, progress=False)
    recs = model_records(model)
    att = [rec for rec in recs if getattr(rec, "kind", None) == "attention"]
    assert len(att) == 2 and att[0].kv_bits == pytest.approx(4 + 20 / 16)  # d_h = 16: one group per head
    spec = from_quantized(recs, config=model.config)
    assert spec.kv_bits == pytest.approx(5.25) and spec.kv_fmt == "int4_g128_asym"
    assert sum(1 for layer in spec.layer_linears for lin in layer if lin.pre_transform == "hadamard(192)") == 2


def test_bad_options_name_the_option():
    with pytest.raises(ValueError, match="stage 'ostquant' option 'budget'"):
        get_recipe("ostquant+rtn", options={"ostquant": {"budget": "gpu"}}).stage_options("ostquant")
    with pytest.raises(ValueError, match="option 'transforms'"):
        get_recipe("ostquant+rtn", options={"ostquant": {"transforms": ["R_x"]}}).stage_options("ostquant")
    with pytest.raises(ValueError, match="not legal for model_type 'gemma3_text'"):
        _quiet(ost.ostquant, tiny_model("gemma3"), IDS, get_recipe("ostquant-w4a4kv4"),
               transforms=["R_res"], **SMALL)


@pytest.mark.parametrize("kind", ["gemma3", "opt"])
def test_stage_runs_on_gemma3_and_opt(kind):
    fp, model = tiny_model(kind), tiny_model(kind)
    recipe = get_recipe("ostquant+rtn", layer={"w": "fp32", "x": None},
                        options={"ostquant": dict(SMALL, quant_weights=False)})
    _quiet(quantize_model, model, recipe, IDS, progress=False)
    with torch.no_grad():
        out, ref = model(IDS).logits, fp(IDS).logits
    assert float((out - ref).abs().max() / ref.abs().max()) < 1e-5


def test_qsur_table_before_and_after_the_transforms():
    """One row per block and linear group; after OSTQuant the down_proj row is the QSUR of z·H
    (the hook sees the input after the online Hadamard), which differs from before; a QLinear's
    pre_transform is applied in the same way."""
    from hwsim.quant.qsur import format_qsur_table, qsur, qsur_table

    ids = torch.randint(0, 128, (16, 32), generator=torch.Generator().manual_seed(1))  # 512 tokens >= d = 192
    model = tiny_model("llama")
    before = qsur_table(model, ids)
    assert [(r["block"], r["group"], r["d"]) for r in before] == [
        (b, g, d) for b in range(2) for g, d in (("qkv", 64), ("o", 64), ("gate_up", 64), ("down", 192))]
    assert all(0 < r["qsur"] <= 1 and r["n"] == 512 for r in before)
    res = _quiet(ost.ostquant, model, ids, get_recipe("ostquant-w4a4kv4"), **SMALL)
    after = qsur_table(model, ids)
    grabbed = {}
    h = model.model.layers[0].mlp.down_proj.register_forward_pre_hook(lambda m, a: grabbed.setdefault("z", a[0]))
    with torch.no_grad():
        model(ids)
    h.remove()
    for hk in res.hooks:
        hk.remove()
    down0 = next(r for r in after if r["block"] == 0 and r["group"] == "down")
    assert down0["qsur"] == pytest.approx(qsur(grabbed["z"]).root, rel=1e-9)  # after H (hooks run in order)
    assert down0["qsur"] != next(r for r in before if r["block"] == 0 and r["group"] == "down")["qsur"]
    text = format_qsur_table(before, after)
    assert "| block | qkv (d=64) | o (d=64) | gate_up (d=64) | down (d=192) |" in text and "→" in text
    assert text.splitlines()[-1].startswith("| mean |")
