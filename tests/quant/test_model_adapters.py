"""Model adapters on tiny random transformers models (docs/spec/algorithms.md §1, §7)."""

import pytest
import torch
from torch import nn

from hwsim.quant.calibrate import capture_block_inputs
from hwsim.quant.model import fold_norms, get_adapter, supported_model_types
from hwsim.quant.testing import TINY_KINDS, tiny_model

EXPECTED_GROUPS = {
    "llama": [("qkv", 3), ("o", 1), ("gate_up", 2), ("down", 1)],
    "qwen2": [("qkv", 3), ("o", 1), ("gate_up", 2), ("down", 1)],
    "mistral": [("qkv", 3), ("o", 1), ("gate_up", 2), ("down", 1)],
    "gemma3": [("qkv", 3), ("o", 1), ("gate_up", 2), ("down", 1)],
    "opt": [("qkv", 3), ("out_proj", 1), ("fc1", 1), ("fc2", 1)],
}


@pytest.mark.parametrize("kind", TINY_KINDS)
def test_groups_norms_layout(kind):
    model = tiny_model(kind)
    ad = get_adapter(model)
    blocks = ad.blocks()
    assert len(blocks) == 2
    groups = ad.linear_groups(blocks[1])
    assert [(g.name, len(g.linears)) for g in groups] == EXPECTED_GROUPS[kind]
    mods = dict(model.named_modules())
    for g in groups:
        for n, lin in zip(g.names, g.linears):
            assert mods[n] is lin and isinstance(lin, nn.Linear)
            assert ".layers.1." in n
        # every linear of a group reads the same input width
        assert len({lin.in_features for lin in g.linears}) == 1
        if g.input_norm is not None:
            assert g.input_norm in mods
    lay = ad.attn_layout(blocks[0])
    assert lay.head_dim == 16 and lay.n_heads == 4
    assert lay.n_kv_heads == (4 if kind == "opt" else 2)
    assert lay.kv_head_of(3) == (3 if kind == "opt" else 1)
    assert lay.rope == ("none" if kind == "opt" else "half")
    assert lay.qk_norm == (kind == "gemma3")
    mlp = ad.mlp_layout(blocks[0])
    assert mlp.intermediate == 192 and mlp.gated == (kind != "opt")
    kinds = {n.kind for n in ad.norms(blocks[0])}
    assert kinds == {"opt": {"layernorm"}, "gemma3": {"rms_1p"}}.get(kind, {"rms"})
    assert ad.tied == (kind != "mistral")
    assert ad.name_of(ad.lm_head()) in ad.skip
    assert ad.embeddings().multiplier == pytest.approx(8.0 if kind == "gemma3" else 1.0)


def test_unknown_model_type_lists_supported():
    class Fake(nn.Module):
        class config:
            model_type = "bloom"

    with pytest.raises(ValueError, match="bloom") as ei:
        get_adapter(Fake())
    for t in supported_model_types():
        assert t in str(ei.value)


@pytest.mark.parametrize("kind", ["llama", "opt"])
def test_head_slices_rebuild_attention_output(kind):
    """o_proj(concat of per-head inputs) == sum over heads of the column slices."""
    model = tiny_model(kind, dtype=torch.float64)
    ad = get_adapter(model)
    blk = ad.blocks()[0]
    lay = ad.attn_layout(blk)
    o = ad.linear_groups(blk)[1].linears[0]
    z = torch.randn(5, lay.n_heads * lay.head_dim, dtype=torch.float64)
    full = z @ o.weight.T
    parts = sum(z[:, lay.o_cols(j)] @ o.weight[:, lay.o_cols(j)].T for j in range(lay.n_heads))
    torch.testing.assert_close(parts, full, rtol=1e-12, atol=1e-12)
    q = ad.linear_groups(blk)[0].linears[0]
    assert sum(q.weight[lay.q_rows(j)].shape[0] for j in range(lay.n_heads)) == q.out_features


@pytest.mark.parametrize("layers", [2, 5])
@pytest.mark.parametrize("kind", TINY_KINDS)
def test_block_forward_reproduces_model(kind, layers):
    """Block by block on the captured mini-batches (2 + 1 sequences) = the model on the same
    mini-batches, bit for bit. The reference runs the model on those mini-batches, not on all 3
    sequences at once: that would be a GEMM with other row counts (M = 36 vs 24 and 12), whose
    fp32 summation order BLAS may choose differently (CPU, threads), so only equal shapes make the
    two computations the same. With 5 layers, blocks 1-3 pass their input through while their
    context is captured: a wrong or missing context (Gemma-3's sliding layers) cannot pass."""
    model = tiny_model(kind, layers=layers)
    ad = get_adapter(model)
    ids = torch.randint(0, 128, (3, 12), generator=torch.Generator().manual_seed(0))
    bs = 2
    ref = torch.cat([model(ids[s:s + bs], use_cache=False).logits for s in range(0, ids.shape[0], bs)])
    bi = capture_block_inputs(model, ids, batch_size=bs)
    assert [tuple(h.shape[:2]) for h in bi.hidden] == [(2, 12), (1, 12)]
    outs = []
    for h in bi.hidden:
        for i, blk in enumerate(ad.blocks()):
            h = ad.block_forward(blk, h, bi.context(i, h))
        outs.append(ad.lm_head()(ad.final_norm()(h)))    # per mini-batch, as the model did
    logits = torch.cat(outs)
    assert torch.equal(logits, ref)
    assert not any(blk._forward_pre_hooks or blk._forward_hooks for blk in ad.blocks())
    assert not any("forward" in blk.__dict__ for blk in ad.blocks())  # the pass-through is gone


@pytest.mark.parametrize("kind", TINY_KINDS)
def test_fold_norms_preserves_logits(kind):
    model = tiny_model(kind, dtype=torch.float64)
    ids = torch.randint(0, 128, (2, 10), generator=torch.Generator().manual_seed(1))
    ref = model(ids, use_cache=False).logits
    ad = fold_norms(model)
    out = model(ids, use_cache=False).logits
    # HF's Gemma3RMSNorm computes in float32 even in a float64 model (x.float()), so the folded
    # and unfolded Gemma models differ by float32 rounding of the norm output.
    tol = 1e-5 if kind == "gemma3" else 1e-10
    torch.testing.assert_close(out, ref, rtol=tol, atol=tol)
    for blk in ad.blocks():
        for info in ad.norms(blk):
            if info.feeds == "residual":
                continue
            expect = 0.0 if info.kind == "rms_1p" else 1.0
            assert torch.all(info.module.weight == expect)
    assert not ad.tied
