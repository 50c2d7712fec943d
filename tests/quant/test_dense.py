"""hwsim.quant.dense: the float32 products of the fake-mode forward (oneDNN where it applies)."""

import pytest
import torch
from torch import nn

from hwsim.quant import dense as D


def test_dense_linear_agrees_with_torch_linear_within_the_float32_bound(monkeypatch):
    """oneDNN and torch's linear sum the same products in orders neither defines: each is within
    γ_K·|x|·|w|ᵀ of the exact result (K = in_features), so they differ by at most twice that."""
    if D._ONEDNN_LINEAR is None:
        pytest.skip("this torch build has no oneDNN linear")
    calls = []
    real = D._ONEDNN_LINEAR
    monkeypatch.setattr(D, "_ONEDNN_LINEAR", lambda *a: calls.append(1) or real(*a))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, D.ONEDNN_MIN_ROWS, 576, generator=g)
    w = torch.randn(192, 576, generator=g)
    b = torch.randn(192, generator=g)
    got = D.dense_linear(x, w, b)
    exact = torch.nn.functional.linear(x.double(), w.double(), b.double())
    k = x.shape[-1] + 1
    bound = k * 2.0 ** -24 * (torch.nn.functional.linear(x.double().abs(), w.double().abs(), b.double().abs()))
    assert calls and got.shape == (2, D.ONEDNN_MIN_ROWS, 192) and got.dtype == torch.float32
    assert bool(((got.double() - exact).abs() <= bound).all())


@pytest.mark.parametrize("case", ["grad", "small", "float64", "padded"])
def test_dense_linear_keeps_torch_linear_where_onednn_does_not_apply(case):
    """Calls that need a gradient, small calls, other dtypes and strided weights are torch's
    linear, bit for bit, and gradients flow (oneDNN's linear has no backward)."""
    g = torch.Generator().manual_seed(1)
    rows = 8 if case == "small" else D.ONEDNN_MIN_ROWS
    dt = torch.float64 if case == "float64" else torch.float32
    x = torch.randn(rows, 64, generator=g, dtype=dt)
    w = torch.randn(32, 64, generator=g, dtype=dt, requires_grad=case == "grad")
    if case == "padded":  # rows padded to 80 columns: oneDNN would take its naive kernel
        w = torch.randn(32, 80, generator=g)[:, :64]
    got = D.dense_linear(x, w)
    assert torch.equal(got.detach(), torch.nn.functional.linear(x, w).detach())
    if case == "grad":
        got.sum().backward()
        torch.testing.assert_close(w.grad, x.sum(0).expand(32, 64))


def test_dense_linears_routes_plain_linears_and_restores_them(monkeypatch):
    """Inside ``dense_linears(block)`` every plain nn.Linear of the block calls dense_linear (its
    hooks still run); on exit, also after an error, no instance keeps a forward of its own."""
    from hwsim.quant.testing import tiny_model

    model = tiny_model("llama")
    block = model.model.layers[0]
    linears = [m for m in block.modules() if type(m) is nn.Linear]
    seen, hooked = [], []
    real = D.dense_linear
    monkeypatch.setattr(D, "dense_linear", lambda x, w, b=None: seen.append(w) or real(x, w, b))
    linears[0].register_forward_pre_hook(lambda m, a: hooked.append(1))
    x = torch.randn(3, 5, 64)
    with torch.no_grad(), D.dense_linears(block):
        outs = [lin(x if lin.in_features == 64 else torch.randn(3, 5, lin.in_features)) for lin in linears]
    assert len(seen) == len(linears) and all(any(w is lin.weight for w in seen) for lin in linears)
    assert hooked == [1] and all(o.shape[-1] == lin.out_features for o, lin in zip(outs, linears))
    with pytest.raises(RuntimeError, match="boom"), D.dense_linears(block):
        raise RuntimeError("boom")
    assert not any("forward" in lin.__dict__ for lin in linears)
