"""WOMI and Hadamard initialisation of OSTQuant (docs/spec/algorithms.md §4.5, §7)."""

import pytest
import torch

from hwsim.quant.hadamard import hadamard_matrix
from hwsim.quant.model import fold_norms, get_adapter
from hwsim.quant.ostquant_fold import add_online_hadamard_hooks, fold_ost
from hwsim.quant.ostquant_init import init_ost_params, o_proj_head_rows, w_stack, womi_rotation
from hwsim.quant.testing import tiny_model

F64 = torch.float64


def _cov(W):
    Wc = W - W.mean(0, keepdim=True)
    return Wc.T @ Wc / W.shape[0]


def _folded(kind):
    model = tiny_model(kind, dtype=F64)
    fold_norms(model)
    return model


@pytest.mark.parametrize("kind", ["llama", "qwen2", "opt"])
def test_womi_r_res_orthogonal_and_equalises_channel_variance(kind):
    model = _folded(kind)
    params = init_ost_params(model, "womi", seed=3, dtype=F64)
    R = params.R_res
    torch.testing.assert_close(R.T @ R, torch.eye(64, dtype=F64), rtol=0, atol=1e-13)
    W = w_stack(model)
    kv, n_mlp = (64, 1) if kind == "opt" else (32, 2)  # OPT: H_kv = H, fc1 only; else gate and up
    assert W.shape == (2 * (64 + 2 * kv + 192 * n_mlp), 64)
    C = _cov(W)
    var = torch.diagonal(_cov(W @ R))
    torch.testing.assert_close(var, torch.full((64,), float(torch.trace(C)) / 64, dtype=F64), rtol=1e-12, atol=0)
    # before the rotation the channels are not equalised (the test can fail)
    assert float(torch.diagonal(C).std() / torch.diagonal(C).mean()) > 1e-2
    # R = U·H_rand with U the ascending eigenvectors: R H_randᵀ diagonalises C, ascending
    # (distinct eigenvalues: eigh's U is unique up to column signs)
    Hr = R.T @ torch.linalg.eigh(C).eigenvectors  # = H_randᵀ up to column signs
    torch.testing.assert_close(Hr.abs(), hadamard_matrix(64).T.abs(), rtol=0, atol=1e-10)


def test_womi_r_ov_per_kv_head():
    model = _folded("llama")
    ad = get_adapter(model)
    params = init_ost_params(model, "womi", seed=5, dtype=F64)
    for blk, lp in zip(ad.blocks(), params.layers):
        assert lp.R_ov.shape == (2, 16, 16)
        for h in range(2):
            Rh = lp.R_ov[h]
            torch.testing.assert_close(Rh.T @ Rh, torch.eye(16, dtype=F64), rtol=0, atol=1e-13)
            rows = o_proj_head_rows(ad, blk, h)
            assert rows.shape == (2 * 64, 16)  # G = 2 query heads × d rows
            C = _cov(rows)
            torch.testing.assert_close(torch.diagonal(_cov(rows @ Rh)),
                                       torch.full((16,), float(torch.trace(C)) / 16, dtype=F64), rtol=1e-12, atol=0)
        assert lp.s_attn is not None and torch.all(lp.s_attn == 1)


def test_inits_are_seeded_and_foldable():
    model = _folded("llama")
    a = init_ost_params(model, "womi", seed=1, dtype=F64)
    b = init_ost_params(model, "womi", seed=1, dtype=F64)
    c = init_ost_params(model, "womi", seed=2, dtype=F64)
    assert torch.equal(a.R_res, b.R_res) and not torch.equal(a.R_res, c.R_res)
    h = init_ost_params(model, "hadamard", seed=1, dtype=F64)
    torch.testing.assert_close(h.R_res.abs(), hadamard_matrix(64).abs(), rtol=0, atol=0)
    assert init_ost_params(model, "identity").R_res.equal(torch.eye(64))
    assert a.R_res.dtype == F64 and init_ost_params(model).R_res.dtype == torch.float32
    # folding the WOMI initialisation keeps the model's function
    ids = torch.randint(0, 128, (1, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(ids, use_cache=False).logits
        info = fold_ost(model, a)
        hooks = add_online_hadamard_hooks(model, info)
        out = model(ids, use_cache=False).logits
    for hk in hooks:
        hk.remove()
    assert float((out - ref).abs().max() / ref.abs().max()) < 1e-6  # HF RMSNorm runs in float32


def test_gemma_has_no_r_res_and_bad_init_is_named():
    model = _folded("gemma3")
    params = init_ost_params(model, "womi", dtype=F64)
    assert params.R_res is None and params.layers[0].R_ov.shape == (2, 16, 16)
    with pytest.raises(ValueError, match="init='spin'"):
        init_ost_params(model, "spin")


def test_womi_rotation_on_a_known_covariance():
    """Rows with independent channels of variances 8, 7, ..., 1: U is (nearly) the permutation
    sorting them ascending, and the rotated variances are all equal."""
    g = torch.Generator().manual_seed(0)
    W = torch.randn(20000, 8, generator=g, dtype=F64) * torch.arange(8, 0, -1, dtype=F64).sqrt()
    H = hadamard_matrix(8)
    R = womi_rotation(W, H)
    var = torch.diagonal(_cov(W @ R))
    assert float(var.std() / var.mean()) < 1e-12
    U = R @ H.T
    assert torch.equal(U.abs().argmax(0), torch.arange(7, -1, -1))  # ascending eigenvalues
