"""OSTQuant's exact folds on tiny float64 models (docs/spec/algorithms.md §4.5, §1.5, §7)."""

import pytest
import torch

from hwsim.quant.hadamard import apply_hadamard, hadamard_matrix
from hwsim.quant.model import fold_norms, get_adapter
from hwsim.quant.ostquant_fold import (LayerParams, OSTParams, RMSNormGain, add_online_hadamard_hooks,
                                       center_opt_residual, fold_ost, transform_block_weights)
from hwsim.quant.testing import tiny_model

F64 = torch.float64
REL_TOL = 1e-10
IDS = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(0))
SINGLE = ["R_res", "S_attn", "S_ffn", "R_ov", "S_ov", "S_qk", "S_up_down", "hadamard_down"]


@pytest.fixture(autouse=True)
def norms_in_model_dtype(monkeypatch):
    """HF's RMSNorms compute in float32 even in a float64 model (LLaMA/Qwen2/Mistral cast the
    input, Gemma-3 also the gain): a rotated or rescaled input then differs by float32 rounding
    (~1e-7). For a 1e-10 comparison the test computes them in the input dtype (same formulas);
    attention (sdpa) already runs in float64."""
    from transformers.models.gemma3 import modeling_gemma3 as mg
    from transformers.models.llama import modeling_llama as ml
    from transformers.models.mistral import modeling_mistral as mm
    from transformers.models.qwen2 import modeling_qwen2 as mq

    def gemma_forward(self, x):
        out = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return out * (1.0 + self.weight.to(x.dtype))

    def llama_forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon))

    monkeypatch.setattr(mg.Gemma3RMSNorm, "forward", gemma_forward)
    for cls in (ml.LlamaRMSNorm, mq.Qwen2RMSNorm, mm.MistralRMSNorm):
        monkeypatch.setattr(cls, "forward", llama_forward)


def _orth(*shape, g):
    return torch.linalg.qr(torch.randn(*shape, generator=g, dtype=F64))[0]


def _scales(*shape, g):
    return 0.5 * 4.0 ** torch.rand(*shape, generator=g, dtype=F64)  # in [0.5, 2], log-uniform


def random_params(model, transforms, seed=0, untied_qk=False) -> OSTParams:
    """Random non-trivial parameters of the given transforms."""
    ad = get_adapter(model)
    g = torch.Generator().manual_seed(seed)
    blk = ad.blocks()[0]
    lay, mlp = ad.attn_layout(blk), ad.mlp_layout(blk)
    d, hkv, dh = model.config.hidden_size, lay.n_kv_heads, lay.head_dim
    qk = dh if (lay.rope == "none" or untied_qk) else dh // 2
    layers = []
    for _ in ad.blocks():
        s_qk = _scales(hkv, qk, g=g)
        if lay.qk_norm:
            s_qk = s_qk[:1].expand(hkv, qk).clone()  # Gemma: shared q_norm/k_norm gains
        layers.append(LayerParams(
            s_attn=_scales(d, g=g) if "S_attn" in transforms else None,
            s_ffn=_scales(d, g=g) if "S_ffn" in transforms else None,
            R_ov=_orth(hkv, dh, dh, g=g) if "R_ov" in transforms else None,
            s_ov=_scales(hkv, dh, g=g) if "S_ov" in transforms else None,
            s_qk=s_qk if "S_qk" in transforms else None,
            s_m=_scales(mlp.intermediate, g=g) if "S_up_down" in transforms else None,
        ))
    R = _orth(d, d, g=g) if "R_res" in transforms else None
    return OSTParams(R, layers, "hadamard_down" in transforms)


def _folded_model(kind):
    model = tiny_model(kind, dtype=F64)
    fold_norms(model)
    return model


def _logits(model):
    with torch.no_grad():
        return model(IDS, use_cache=False).logits


def _rel_err(out, ref):
    return float((out - ref).abs().max() / ref.abs().max())


def _fold_and_compare(kind, transforms, official_compat=False, untied_qk=False, seed=0):
    model = _folded_model(kind)
    ref = _logits(model)
    params = random_params(model, transforms, seed=seed, untied_qk=untied_qk)
    info = fold_ost(model, params, official_compat=official_compat)
    handles = add_online_hadamard_hooks(model, info)
    out = _logits(model)
    for h in handles:
        h.remove()
    return _rel_err(out, ref), info, model


LEGAL = {
    "llama": SINGLE, "qwen2": SINGLE, "opt": SINGLE,
    "gemma3": [t for t in SINGLE if t != "R_res"],
}
CASES = [(k, (t,)) for k, ts in LEGAL.items() for t in ts] + [(k, tuple(ts)) for k, ts in LEGAL.items()]
CASES.append(("mistral", tuple(SINGLE)))


@pytest.mark.parametrize("kind,transforms", CASES, ids=[f"{k}-{'all' if len(t) > 1 else t[0]}" for k, t in CASES])
def test_each_transform_alone_and_all_together_preserve_logits(kind, transforms):
    err, info, model = _fold_and_compare(kind, set(transforms))
    assert err < REL_TOL, err
    assert set(info.transforms) == set(transforms)
    if "hadamard_down" in transforms:
        assert len(info.pre_transforms) == 2
        assert set(info.pre_transforms.values()) == {"hadamard(192)"}
        assert (info.hadamard.K, info.hadamard.kind, info.hadamard.q) == (12, "paley1", 11)
    if kind == "opt" and "R_res" in transforms:
        assert info.centered and len(info.replaced_norms) == 5
        assert isinstance(model.model.decoder.final_layer_norm, RMSNormGain)


def test_the_folds_are_not_trivially_exact():
    """Sanity check of the test itself: the same parameters without the online Hadamard, or with
    the norm gains left alone, change the logits."""
    model = _folded_model("llama")
    ref = _logits(model)
    fold_ost(model, random_params(model, {"hadamard_down"}))
    assert _rel_err(_logits(model), ref) > 1e-3  # hooks not installed
    model = _folded_model("llama")
    params = random_params(model, {"S_attn"})
    fold_ost(model, params)
    for blk in get_adapter(model).blocks():
        blk.input_layernorm.weight.data.fill_(1.0)
    assert _rel_err(_logits(model), ref) > 1e-3


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_official_compat_down_fold_deviates(kind):
    """(a) W_down·H·diag(s) with the online z·diag(1/s)·H: not exact for non-constant s."""
    err, _, _ = _fold_and_compare(kind, {"S_up_down", "hadamard_down"}, official_compat=True)
    assert err > 1e-4
    exact, _, _ = _fold_and_compare(kind, {"S_up_down", "hadamard_down"})
    assert exact < REL_TOL


@pytest.mark.parametrize("kind", ["llama", "qwen2", "gemma3"])
def test_official_compat_untied_qk_deviates(kind):
    """(b) S_qk untied over RoPE pairs changes q·k after RoPE; refused without official_compat."""
    err, _, _ = _fold_and_compare(kind, {"S_qk"}, official_compat=True, untied_qk=True)
    assert err > 1e-4
    model = _folded_model(kind)
    with pytest.raises(ValueError, match="official_compat=True"):
        fold_ost(model, random_params(model, {"S_qk"}, untied_qk=True))


def test_official_compat_changes_nothing_else():
    """With tied S_qk and no S_up_down, official_compat=True is as exact as the default."""
    transforms = {"R_res", "S_attn", "S_ffn", "R_ov", "S_ov", "S_qk", "hadamard_down"}
    err, info, _ = _fold_and_compare("llama", transforms, official_compat=True)
    assert err < REL_TOL and info.official_compat


def test_down_matrix_is_the_fast_transform():
    model = _folded_model("llama")
    info = fold_ost(model, random_params(model, {"hadamard_down"}))
    z = torch.randn(3, 192, dtype=F64)
    torch.testing.assert_close(z @ info.down_matrix, apply_hadamard(z), rtol=0, atol=1e-13)
    torch.testing.assert_close(info.down_matrix, hadamard_matrix(192).T, rtol=0, atol=0)
    assert list(info.pre_transforms) == ["model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj"]


def test_opt_centring_alone_preserves_logits():
    model = _folded_model("opt")
    ref = _logits(model)
    replaced = center_opt_residual(model)
    assert len(replaced) == 5
    assert _rel_err(_logits(model), ref) < REL_TOL
    emb = model.model.decoder.embed_tokens.weight
    assert float(emb.detach().mean(1).abs().max()) < 1e-15


def test_identity_params_change_nothing():
    """Identity parameters leave every weight as it was (OPT's R_res would also mean-centre, a
    different but equivalent model, so it is left out there)."""
    for kind in ("llama", "gemma3", "opt"):
        model = _folded_model(kind)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        legal = set(get_adapter(model).transforms) - {"hadamard_down"}
        params = OSTParams.identity(model, transforms=legal - ({"R_res"} if kind == "opt" else set()), dtype=F64)
        assert ("R_res" in params.transforms()) == (kind not in ("gemma3", "opt"))
        assert not params.hadamard_down
        fold_ost(model, params)
        after = model.state_dict()
        assert set(after) == set(before)
        for k, v in before.items():
            torch.testing.assert_close(after[k], v, rtol=0, atol=1e-14, msg=k)


def test_transform_block_weights_is_differentiable():
    """The training student's path: float32 tensors with requires_grad give gradients for R, R_ov
    and the scales."""
    model = tiny_model("llama")
    ad = get_adapter(model)
    blk = ad.blocks()[0]
    from hwsim.quant.ostquant_fold import block_weights

    w = {k: (v.detach() if v is not None else None) for k, v in block_weights(ad, blk).items()}
    w = {k: (v.float() if v is not None else None) for k, v in w.items()}
    R = torch.eye(64, requires_grad=True)
    lp = LayerParams(*(torch.ones(s, requires_grad=True) for s in [(64,), (64,)]),
                     R_ov=torch.eye(16).repeat(2, 1, 1).requires_grad_(),
                     s_ov=torch.ones(2, 16, requires_grad=True), s_qk=torch.ones(2, 8, requires_grad=True),
                     s_m=torch.ones(192, requires_grad=True))
    out = transform_block_weights(w, lp, R, n_heads=4, n_kv_heads=2, head_dim=16, rope="half",
                                  down_matrix=hadamard_matrix(192, torch.float32).T)
    loss = sum((v ** 2).sum() for k, v in out.items() if v is not None and k.endswith("weight"))
    loss.backward()
    for t in (R, lp.s_attn, lp.s_ffn, lp.R_ov, lp.s_ov, lp.s_qk, lp.s_m):
        assert t.grad is not None and torch.isfinite(t.grad).all()


def test_errors():
    model = _folded_model("gemma3")
    with pytest.raises(ValueError, match=r"\['R_res'\] are not legal for model_type 'gemma3_text'"):
        fold_ost(model, random_params(model, {"R_res"}))
    p = random_params(model, {"S_qk"})
    p.layers[0].s_qk = torch.rand(2, 8, dtype=F64) + 0.5
    with pytest.raises(ValueError, match="equal for every KV head"):
        fold_ost(model, p)

    model = tiny_model("llama", dtype=F64)  # norms not folded
    with pytest.raises(ValueError, match="call hwsim.quant.model.fold_norms"):
        fold_ost(model, random_params(model, {"S_attn"}))

    model = _folded_model("llama")
    p = random_params(model, {"S_attn", "R_res"})
    p.layers[1].s_attn[3] = 1e-7
    with pytest.raises(ValueError, match=r"params.layers\[1\].s_attn: a scale of magnitude 1e-07"):
        fold_ost(model, p)
    p = random_params(model, {"R_res"})
    p.R_res = p.R_res * 1.1
    with pytest.raises(ValueError, match="params.R_res: not orthogonal"):
        fold_ost(model, p)
    p = random_params(model, {"S_ov"})
    p.layers[0].s_ov = torch.ones(4, 16, dtype=F64)
    with pytest.raises(ValueError, match=r"s_ov: expected shape \(2, 16\)"):
        fold_ost(model, p)

    model = _folded_model("opt")
    p = random_params(model, {"S_up_down"})
    p.layers[0].s_m[0] = -1.0
    with pytest.raises(ValueError, match="must be > 0"):
        fold_ost(model, p)
