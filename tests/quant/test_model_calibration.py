"""Calibration statistics and hooks (docs/spec/algorithms.md §2, §7)."""

import pytest
import torch
from torch import nn

from hwsim.quant import calibrate
from hwsim.quant.calibrate import MeanAbsLqer, MeanSq, Rxx, StatsCollector, as_token_ids, collect_stats
from hwsim.quant.model import get_adapter
from hwsim.quant.testing import tiny_model


U64 = 2.0 ** -53  # unit roundoff of float64


def _gamma(k, u):
    """Higham's gamma_k = k u / (1 - k u): relative error bound after k roundings, any order."""
    return k * u / (1 - k * u)


def test_mean_abs_lqer_hand_computed():
    s = MeanAbsLqer(3)
    s.update(torch.tensor([[1.0, -2.0, 0.0], [3.0, 0.0, 0.0]]))      # means 2, 1, 0
    s.update(torch.tensor([[[0.5, 4.0, 0.0]], [[-0.5, 2.0, 0.0]]]))  # means .5, 3, 0
    raw = torch.tensor([2.0, 3.0, 1e-4])  # max of means, clamped at 1e-4
    expect = raw / torch.sqrt(raw.min() * raw.max())
    torch.testing.assert_close(s.finalize(), expect, rtol=1e-7, atol=0)
    # scale invariance of the normalisation: c*x gives the same normalised s (up to clamp)
    s2 = MeanAbsLqer(2)
    s2.update(torch.tensor([[1.0, 4.0]]))
    s3 = MeanAbsLqer(2)
    s3.update(torch.tensor([[10.0, 40.0]]))
    torch.testing.assert_close(s2.finalize(), s3.finalize())


@pytest.mark.parametrize("gram_rows", [14, 4096])
def test_rxx_and_mean_sq_match_float64(monkeypatch, gram_rows):
    monkeypatch.setattr(calibrate, "GRAM_ROWS", gram_rows)
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(7, 5, generator=g) for _ in range(3)]
    X = torch.cat(xs).double()
    r = Rxx(5, outer_dtype=torch.float64)
    m = MeanSq(5)
    for x in xs:
        r.update(x)
        m.update(x)
    # Rxx buffers rows and multiplies when the next call would overflow GRAM_ROWS (and at
    # finalize): 14 rows -> the products of [x0; x1] and of x2, summed in that order; 4096 -> one
    # product of all 21 rows
    parts = [X[:14], X[14:]] if gram_rows == 14 else [X]
    # rows are buffered transposed ([d, rows], one row per channel): Xᵀ·X is linear(Xᵀ, Xᵀ), mirrored
    # from its lower triangle
    full = sum(torch.nn.functional.linear(p.T.contiguous(), p.T.contiguous()) for p in parts)
    ref = (torch.tril(full) + torch.tril(full, -1).T) / X.shape[0]
    # bit for bit: Rxx(outer_dtype=float64) runs these very float64 products (same shapes and layouts)
    # and sums them in the same order; float64 sums of float32 products may round, so only the same
    # computation is equal bit for bit (the full X.T @ X below is another one: a tolerance)
    assert torch.equal(r.finalize(), ref)
    # X.T @ X / n and mean(X**2) in one go sum the same terms in other orders (one 21-term reduction
    # vs three 7-term ones, whatever order BLAS / torch pick): compare within the float64 rounding
    # bound. float32 x float32 products are exact in float64; 20 additions and the division give
    # each side |err| <= gamma_21 * (|X|^T |X|) / n, so the two differ by <= 2 gamma_21 (|X|^T |X|) / n;
    # gamma_22 leaves one u each for computing that bound in float64. For the RMS: a sum of positive
    # terms (gamma_20), the division (u) and sqrt (halves the relative error, then one more u): each
    # side within gamma_22 relative, so rtol = 2 gamma_23.
    n = X.shape[0]
    gram_bound = 2 * _gamma(n + 1, U64) * (X.abs().T @ X.abs()) / n
    assert ((r.finalize() - X.T @ X / n).abs() <= gram_bound).all()
    torch.testing.assert_close(m.finalize(), torch.sqrt((X ** 2).mean(0)), rtol=2 * _gamma(n + 2, U64), atol=0)
    r32 = Rxx(5)
    for x in xs:
        r32.update(x)
    torch.testing.assert_close(r32.finalize(), X.T @ X / X.shape[0], rtol=1e-6, atol=1e-6)


def test_groups_share_one_statistic_and_hooks_are_removed():
    model = tiny_model("llama")
    ad = get_adapter(model)
    ids = torch.randint(0, 128, (4, 8), generator=torch.Generator().manual_seed(0))
    st = collect_stats(model, ids, ["rxx", "mean_abs_lqer"], batch_size=2, progress=False)
    blk = ad.blocks()[0]
    groups = ad.linear_groups(blk)
    assert set(st) == {g.input_key for i, g in ad.all_linear_groups(include_head=False)}
    qkv = st[groups[0].input_key]
    assert qkv.n_tokens == 32 and qkv["rxx"].shape == (64, 64) and qkv["rxx"].dtype == torch.float64
    assert all(not m._forward_pre_hooks for m in model.modules())
    # q, k, v read one tensor: hook its input independently on k_proj and compare. The model runs on
    # the same mini-batches as collect_stats, so X is the very input the statistic saw; Rxx forms
    # x.T @ x per mini-batch of 16 tokens in float32 (outer_dtype): an fp32 GEMM in an unspecified
    # order, within gamma_16(2^-24) (|x|^T |x|) of the exact product, summed and divided in float64.
    # gamma_17 covers those float64 roundings and the float64 reference's own (both < 2^-24 |X||X|).
    seen = []
    h = blk.self_attn.k_proj.register_forward_pre_hook(lambda m, a: seen.append(a[0].reshape(-1, 64).double()))
    for s in range(0, ids.shape[0], 2):
        model(ids[s:s + 2], use_cache=False)
    h.remove()
    X = torch.cat(seen)
    n = X.shape[0]
    bound = _gamma(2 * 8 + 1, 2.0 ** -24) * (X.abs().T @ X.abs()) / n
    assert ((qkv["rxx"] - X.T @ X / n).abs() <= bound).all()


def test_hooks_removed_after_exception():
    model = tiny_model("opt")
    ad = get_adapter(model)
    groups = [g for _, g in ad.all_linear_groups(include_head=False)]
    with pytest.raises(RuntimeError, match="boom"):
        with StatsCollector(groups, ["mean_sq"]):
            assert any(m._forward_pre_hooks for m in model.modules())
            raise RuntimeError("boom")
    assert all(not m._forward_pre_hooks for m in model.modules())


def test_padded_or_bad_calibration_rejected():
    with pytest.raises(ValueError, match="padded"):
        as_token_ids({"input_ids": torch.ones(2, 4, dtype=torch.long),
                      "attention_mask": torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])})
    with pytest.raises(ValueError, match=r"\[N, T\]"):
        as_token_ids(torch.ones(8))
    with pytest.raises(ValueError, match="kinds"):
        StatsCollector([], ["nope"])


def test_block_subset():
    model = tiny_model("gemma3")
    ad = get_adapter(model)
    ids = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(0))
    st = collect_stats(model, ids, ["mean_sq"], blocks=[1], progress=False)
    assert all(k.startswith(ad.block_name(1)) for k in st)
    assert len(st) == 4
    assert isinstance(ad.blocks()[1].mlp.down_proj, nn.Linear)
