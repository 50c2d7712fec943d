"""Attention-side quantizers (issue 11; docs/spec/algorithms.md §3.3): Q/K after RoPE, V (the KV
cache) and P, through transformers' attention interface, for every tiny model family; recipe
validation; records and the cost model's KV traffic."""

import dataclasses
import warnings

import pytest
import torch

from hwsim.quant import get_recipe, model_records, quantize_model, validate_recipe
from hwsim.quant.attention import (IMPL_NAME, attention_records, install_attention_quant, kv_bits_per_element,
                                   remove_attention_quant, set_attention_quant_enabled)
from hwsim.quant.config import AttentionConfig, load_recipe
from hwsim.quant.qlinear import fake_quant
from hwsim.quant.testing import TINY_KINDS, tiny_model

IDS = torch.randint(0, 128, (2, 24), generator=torch.Generator().manual_seed(0))


def _logits(m):
    with torch.no_grad():
        return m(IDS, use_cache=False).logits


def _err(a, b):
    return float((a - b).abs().max())


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
@pytest.mark.parametrize("kind", TINY_KINDS)
def test_quantizers_wrap_every_family_and_come_off_again(kind, impl):
    m = tiny_model(kind)
    m.config._attn_implementation = impl
    ref = _logits(m)
    install_attention_quant(m, AttentionConfig())
    assert torch.equal(_logits(m), ref)  # nothing quantized: the original kernel, bit for bit
    install_attention_quant(m, AttentionConfig(p="fp32"))  # own softmax path, P in fp32 (identity)
    assert _err(_logits(m), ref) < 1e-5
    errs = {}
    for bits in (8, 4):
        install_attention_quant(m, AttentionConfig(k=f"int{bits}_tok_asym", v=f"int{bits}_tok_asym"))
        errs[bits] = _err(_logits(m), ref)
    assert 0 < errs[8] < errs[4]
    set_attention_quant_enabled(m, False)
    assert torch.equal(_logits(m), ref)
    set_attention_quant_enabled(m, True)
    assert m.config._attn_implementation == impl  # the model-level config (masks) is untouched
    assert m.get_submodule(attention_records(m)[0].name).config._attn_implementation == IMPL_NAME
    remove_attention_quant(m)
    assert torch.equal(_logits(m), ref) and attention_records(m) == []


def test_k_and_v_are_quantized_after_rope_along_the_configured_axis(monkeypatch):
    """The kernel sees K after RoPE: quantizing K in the wrapper equals quantizing the
    eager kernel's key argument by hand; 'token' groups all KV heads of a token."""
    from transformers.models.llama import modeling_llama as ml

    seen = {}
    real = ml.eager_attention_forward

    def spy(module, q, k, v, *a, **kw):
        seen.setdefault("k", []).append(k)
        return real(module, q, k, v, *a, **kw)

    monkeypatch.setattr(ml, "eager_attention_forward", spy)
    m = tiny_model("llama")
    m.config._attn_implementation = "eager"
    _logits(m)
    k_fp = seen.pop("k")[0]
    for axis in ("head", "token"):
        install_attention_quant(m, AttentionConfig(k="int4_tok_asym", axis=axis))
        _logits(m)
        k_q = seen.pop("k")[0]
        if axis == "head":
            want = fake_quant(k_fp, "int4_tok_asym")
        else:
            b, h, t, d = k_fp.shape
            want = fake_quant(k_fp.transpose(1, 2).reshape(b, t, h * d), "int4_tok_asym")
            want = want.reshape(b, t, h, d).transpose(1, 2)
        assert torch.equal(k_q, want), axis
    remove_attention_quant(m)


def test_p_quantization_changes_the_output_and_keeps_the_causal_mask():
    m = tiny_model("llama")
    ref = _logits(m)
    install_attention_quant(m, AttentionConfig(p="int8_tok"))
    p8 = _logits(m)
    install_attention_quant(m, AttentionConfig(p="int4_tok"))
    p4 = _logits(m)
    assert 0 < _err(p8, ref) < _err(p4, ref)
    # causality: the first positions do not depend on later tokens
    ids2 = IDS.clone()
    ids2[:, 12:] = (ids2[:, 12:] + 1) % 128
    with torch.no_grad():
        a, b = m(IDS).logits, m(ids2).logits
    assert torch.equal(a[:, :12], b[:, :12]) and not torch.equal(a[:, 12:], b[:, 12:])


def test_an_attention_that_cannot_be_wrapped_is_refused_naming_the_model_type():
    class Plain(torch.nn.Module):  # an attention implementation that computes everything itself
        def forward(self, x):
            return x

    m = tiny_model("llama")
    m.model.layers[1].self_attn = Plain()
    with pytest.raises(ValueError, match="model_type 'llama': Plain does not call its attention kernel"):
        install_attention_quant(m, AttentionConfig(k="int8"))
    assert not hasattr(m.model.layers[0].self_attn, "_hwsim_attn_quant")  # refused before changing anything


def test_recipe_validation_names_the_field():
    with pytest.raises(ValueError, match="attention: k: unknown format name 'int99'"):
        validate_recipe(get_recipe("rtn", attention={"k": "int99"}))
    with pytest.raises(ValueError, match="attention: axis 'heads' is not valid; valid: head, token"):
        validate_recipe(get_recipe("rtn", attention={"axis": "heads"}))
    with pytest.raises(ValueError, match="attention must be an AttentionConfig"):
        validate_recipe(dataclasses.replace(get_recipe("rtn"), attention={"k": "int8"}))
    r = get_recipe("rtn", attention={"k": "int8_tok_asym", "v": "int8_tok_asym"})
    assert type(r).from_dict(r.to_dict()) == r


def test_toml_attention_table(tmp_path):
    p = tmp_path / "kv.toml"
    p.write_text('pipeline = "rtn"\n[layer]\nw = "int4_ch"\n[attention]\nk = "int4_g128_asym"\nv = "int4_g128_asym"'
                 '\nq = "none"\n')
    r = load_recipe(p)
    assert r.attention == AttentionConfig(k="int4_g128_asym", v="int4_g128_asym")
    p.write_text('pipeline = "rtn"\n[attention]\nkv = "int4"\n')
    with pytest.raises(ValueError, match=r"\[attention\] has unknown field 'kv'; valid: q, k, v, p, axis"):
        load_recipe(p)


def test_kv_bits_and_the_cost_models_kv_traffic():
    from hwsim.cost_models import SystolicArray, cost_model, from_quantized

    assert kv_bits_per_element("int4_g128_asym", 64) == pytest.approx(4 + 20 / 64)  # one group per head
    assert kv_bits_per_element("int4_g32_asym", 64) == pytest.approx(4 + 20 / 32)
    assert kv_bits_per_element("mxint8", 64) == pytest.approx(8.25)
    assert kv_bits_per_element(None, 64) == 16.0
    totals = {}
    for bits in (None, 8, 4):
        m = tiny_model("llama")
        att = {} if bits is None else {"k": f"int{bits}_tok_asym", "v": f"int{bits}_tok_asym"}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_model(m, get_recipe("rtn", layer={"w": "mxint4"}, attention=att), progress=False)
        recs = model_records(m)
        kv = [r for r in recs if getattr(r, "kind", None) == "attention"]
        assert len(kv) == (0 if bits is None else 2)
        if bits:
            assert kv[0].kv_bits == pytest.approx(bits + (16 + bits) / 16)  # fp16 scale + b-bit zero point per 16
        spec = from_quantized(recs, config=m.config, phase="decode", context=64, include_attention=True)
        assert len([lin for layer in spec.layer_linears for lin in layer]) == 14
        totals[bits] = cost_model(spec, SystolicArray(8, 8)).totals
    kvb = {b: t["kv_cache_bytes_per_seq"] for b, t in totals.items()}
    assert kvb[4] < kvb[8] < kvb[None]
    assert kvb[4] == pytest.approx(kvb[None] * 5.25 / 16, abs=1)
    assert totals[4]["dram_bytes"] < totals[8]["dram_bytes"] < totals[None]["dram_bytes"]
