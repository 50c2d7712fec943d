"""quantize_model, recipes, save/reload (docs/spec/algorithms.md §5, §7 "Pipeline")."""

import dataclasses
import warnings

import pytest
import torch
from torch import nn

import hwsim.formats as F
from hwsim.quant import (QLinear, get_recipe, list_recipes, load_quantized, model_records, quantize_model, reconstruct,
                         save_quantized, validate_recipe, with_formats)
from hwsim.quant.calibrate import collect_stats
from hwsim.quant.model import get_adapter
from hwsim.quant.testing import tiny_model

@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


IDS = torch.randint(0, 128, (4, 16), generator=torch.Generator().manual_seed(0))


def _quiet(fn, *a, **k):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*a, **k)


def test_rtn_then_lqer_equals_standalone_call():
    model = tiny_model("llama")
    W = model.model.layers[0].mlp.down_proj.weight.detach().clone()
    rep = quantize_model(model, "lqer", progress=False)
    ql = model.model.layers[0].mlp.down_proj
    assert isinstance(ql, QLinear)
    q = F.quantize(W, "bfp4", axis=-1)
    assert torch.equal(ql.weight, q.dequantize())
    A, B = reconstruct("lqer", W, q.dequantize(), None, 32, fmt_a="bfp8", fmt_b="bfp8", axes="code")
    assert torch.equal(ql.lr_A, A) and torch.equal(ql.lr_B, B)
    assert ql.qA.axis == 1 and ql.qB.axis == 1  # paper axes: A along k, B along out
    assert rep.n_quantized == 14  # lm_head skipped by default
    assert isinstance(model.lm_head, nn.Linear) and not isinstance(model.lm_head, QLinear)


def test_l2qer_uses_shared_fp_statistics():
    model = tiny_model("qwen2")
    ref_model = tiny_model("qwen2")
    st = collect_stats(ref_model, IDS, ["mean_abs_lqer"], batch_size=2, progress=False)
    rep = quantize_model(model, "l2qer", IDS, progress=False)
    for name in ("model.layers.1.self_attn.k_proj", "model.layers.1.mlp.up_proj"):
        ql = model.get_submodule(name)
        W = ref_model.get_submodule(name).weight.detach()
        s = st[ql.input_key]["mean_abs_lqer"]
        Wq = F.quantize(W, "bfp4", axis=-1).dequantize()
        A, B = reconstruct("l2qer", W, Wq, {"mean_abs_lqer": s}, 32, fmt_a="bfp8", fmt_b="bfp8", axes="code")
        assert torch.equal(ql.lr_A, A) and torch.equal(ql.lr_B, B)
        assert ql.bias is not None or "k_proj" not in name
    assert rep.calib["n_seq"] == 4 and rep.calib["seq_len"] == 16
    assert {"calibrate", "round", "reconstruct", "total"} <= set(rep.timings)


def test_rank_zero_equals_rounding_only():
    m1, m2 = tiny_model("llama"), tiny_model("llama")
    r = get_recipe("l2qer")
    # a layer whose override sets rank 0 gets the rounding only (issue 15: a recipe whose every
    # layer has rank 0 is refused, below)
    r0 = dataclasses.replace(r, overrides=(("*", {"rank": 0}),))
    quantize_model(m1, r0, IDS, progress=False)
    quantize_model(m2, dataclasses.replace(get_recipe("rtn"), layer=dataclasses.replace(r.layer, rank=0)),
                   progress=False)
    assert m1.model.layers[1].mlp.down_proj.rank == 0
    assert torch.equal(m1(IDS).logits, m2(IDS).logits)
    with pytest.raises(ValueError, match="rank=0 but the recipe has the reconstruction stage 'l2qer'.*valid ranks"):
        validate_recipe(dataclasses.replace(r, layer=dataclasses.replace(r.layer, rank=0)))


def test_error_reconstruction_beats_rtn_on_output_error():
    ref = tiny_model("llama")
    y = ref(IDS).logits
    errs = {}
    for name in ("rtn", "lqer", "qera-exact"):
        m = tiny_model("llama")
        rec = with_formats(get_recipe(name), w="mxint3", a="none", rank=None if name == "rtn" else 16)
        _quiet(quantize_model, m, rec, IDS, progress=False)
        errs[name] = float((m(IDS).logits - y).norm() / y.norm())
    assert errs["qera-exact"] < errs["rtn"] and errs["lqer"] < errs["rtn"], errs


def test_overrides_and_skip():
    r = get_recipe("rtn", overrides=(("down_proj", {"w": "mxint8"}), ("*.layers.0.*", {"skip": True}),
                                     ("lm_head", {"skip": False, "w": "mxint8"})))
    model = tiny_model("llama")
    quantize_model(model, r, progress=False)
    assert isinstance(model.model.layers[0].mlp.down_proj, nn.Linear)
    assert not isinstance(model.model.layers[0].self_attn.q_proj, QLinear)
    assert model.model.layers[1].mlp.down_proj.w_fmt.name == "mxint8"
    assert model.model.layers[1].mlp.up_proj.w_fmt.name == "mxint4"
    assert isinstance(model.lm_head, QLinear) and model.lm_head.w_fmt.name == "mxint8"
    recs = model_records(model)
    assert len(recs) == 8 and all(rec.w_fmt in ("mxint4", "mxint8") for rec in recs)
    assert {rec.input_key for rec in recs if "q_proj" in rec.name or "k_proj" in rec.name} == {
        "model.layers.1:qkv"}


def test_gptq_sequential_runs_and_beats_rtn_objective():
    m_g, m_r, ref = tiny_model("opt"), tiny_model("opt"), tiny_model("opt")
    ids = torch.randint(0, 128, (8, 32), generator=torch.Generator().manual_seed(3))
    rep = _quiet(quantize_model, m_g, get_recipe("gptq", layer=dict(w="int4_g32_asym")), ids, progress=False)
    _quiet(quantize_model, m_r, get_recipe("rtn", layer=dict(w="int4_g32_asym")), progress=False)
    assert rep.n_quantized == 12 and "propagate" in rep.timings
    y = ref(ids).logits
    e_g = float((m_g(ids).logits - y).norm())
    e_r = float((m_r(ids).logits - y).norm())
    assert e_g < e_r


def test_bad_recipe_names_and_orders():
    with pytest.raises(ValueError, match="unknown recipe 'l2qr'.*did you mean 'l2qer'"):
        get_recipe("l2qr")
    for name in list_recipes():
        assert validate_recipe(get_recipe(name)).name == name
    with pytest.raises(ValueError, match="exactly one rounding"):
        validate_recipe(get_recipe("rtn", stages=("rtn", "gptq")))
    with pytest.raises(ValueError, match="after the rounding"):
        validate_recipe(get_recipe("lqer", stages=("lqer", "rtn")))
    with pytest.raises(ValueError, match="no transform may follow"):
        validate_recipe(get_recipe("rtn", stages=("rtn", "fold_norms")))
    with pytest.raises(ValueError, match="stage .foo. is unknown.*rounding: gptq, rtn"):
        get_recipe("gptq+foo")
    with pytest.raises(ValueError, match="'qera-exact' appears twice"):
        validate_recipe(get_recipe("rtn+qera-exact+qera-exact"))
    with pytest.raises(ValueError, match="at most one reconstruction"):
        validate_recipe(get_recipe("rtn+qera-exact+lqer"))
    assert get_recipe("gptq+l2qer").stages == ("gptq", "l2qer")


def test_incompatible_formats_give_clear_errors():
    with pytest.raises(ValueError, match="recipe 'rtn' layer: w.*mxint99"):
        validate_recipe(with_formats(get_recipe("rtn"), w="mxint99"))
    with pytest.raises(ValueError, match="lowrank_axes='reduction'"):
        validate_recipe(get_recipe("l2qer", mode="exact"))
    with pytest.raises(ValueError, match="exact mode needs X"):
        validate_recipe(get_recipe("qera-exact", mode="exact"))
    with pytest.raises(ValueError, match="element-only|block or scaled-integer"):
        validate_recipe(with_formats(get_recipe("rtn"), w="mxint4", a="fp8_e4m3", mode="exact"))
    with pytest.raises(ValueError, match="no reconstruction"):
        validate_recipe(with_formats(get_recipe("rtn"), rank=8))
    with pytest.raises(ValueError, match="needs a weight format"):
        validate_recipe(with_formats(get_recipe("rtn"), w="none"))
    with pytest.raises(ValueError, match="unknown field"):
        validate_recipe(get_recipe("rtn", overrides=(("q_proj", {"wfmt": "mxint8"}),)))
    with pytest.raises(ValueError, match="calib"):
        quantize_model(tiny_model("llama"), "l2qer", None, progress=False)
    with pytest.raises(ValueError, match="rank=65 exceeds"):
        quantize_model(tiny_model("llama"), with_formats(get_recipe("lqer"), rank=65), progress=False)
    with pytest.raises(ValueError, match="max_resident_bytes"):
        quantize_model(tiny_model("llama"), "qera-exact", IDS, progress=False, max_resident_bytes=1000)


def test_exact_mode_pipeline_runs():
    import hwsim.matmul as M

    if not hasattr(M, "matmul"):
        pytest.skip("hwsim.matmul.matmul not available yet")
    model = tiny_model("llama", layers=1)
    ref = tiny_model("llama", layers=1)
    ids = IDS[:1, :6]
    rec = get_recipe("l2qer-hw", mode="exact", layer=dict(w="mxint4", rank=8))
    quantize_model(model, rec, ids, progress=False)
    assert model.model.layers[0].self_attn.q_proj.mode == "exact"
    y = model(ids).logits
    y_ref = ref(ids).logits
    assert torch.isfinite(y).all() and float((y - y_ref).norm() / y_ref.norm()) < 0.5


def _tensors(model):
    return {f"{n}.{k}": v for n, m in model.named_modules()
            for k, v in list(m._parameters.items()) + list(m._buffers.items()) if v is not None}


def _assert_same_tensors(a, b):
    """Every parameter and buffer of ``b`` has the name, shape, dtype and bits of ``a``'s."""
    ta, tb = _tensors(a), _tensors(b)
    assert ta.keys() == tb.keys()
    for k in ta:
        assert ta[k].dtype == tb[k].dtype and torch.equal(ta[k], tb[k]), k


def _contiguous(model):
    """Give every parameter and buffer a C-contiguous layout, values unchanged.

    Save/reload restores values, not strides: a low-rank factor that is a transposed view in memory
    (the SVD's layout) comes back contiguous, and ``x @ lr_A`` with a transposed operand may be
    summed in another order by BLAS (the CPU decides). Logits of two models are compared bit for bit
    only once their layouts agree, so that both run the same computation."""
    for m in model.modules():
        for k, v in list(m._parameters.items()):
            if v is not None and not v.is_contiguous():
                m._parameters[k] = nn.Parameter(v.detach().contiguous(), requires_grad=v.requires_grad)
        for k, v in list(m._buffers.items()):
            if v is not None and not v.is_contiguous():
                m._buffers[k] = v.contiguous()
    return model


@pytest.mark.parametrize("kind,recipe", [("llama", "l2qer"), ("opt", "qera-approx"), ("gemma3", "l2qer-hw")])
def test_save_reload_round_trip(tmp_path, kind, recipe):
    model = tiny_model(kind)
    _quiet(quantize_model, model, recipe, IDS, progress=False)
    y = _contiguous(model)(IDS).logits
    path = save_quantized(model, tmp_path / "q")
    fresh = tiny_model(kind)
    load_quantized(fresh, path)
    _assert_same_tensors(model, fresh)
    assert torch.equal(_contiguous(fresh)(IDS).logits, y)
    a = model.get_submodule(get_adapter(model).linear_groups(get_adapter(model).blocks()[0])[0].names[0])
    b = fresh.get_submodule(a.name)
    assert repr(a) == repr(b)
    assert fresh.hwsim_quant_meta["recipe"]["name"] == recipe
    with pytest.raises(ValueError, match="model_type"):
        load_quantized(tiny_model("opt" if kind != "opt" else "llama"), path)


def test_save_reload_with_fold_norms(tmp_path):
    model = tiny_model("opt")
    rec = get_recipe("rtn", stages=("fold_norms", "rtn"))
    quantize_model(model, rec, progress=False)
    y = _contiguous(model)(IDS).logits
    path = save_quantized(model, tmp_path / "q")
    fresh = tiny_model("opt")
    load_quantized(fresh, path)
    _assert_same_tensors(model, fresh)
    assert torch.equal(_contiguous(fresh)(IDS).logits, y)
