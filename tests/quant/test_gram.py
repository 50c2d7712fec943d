"""The lower-triangle Gram accumulation behind R_xx (hwsim.quant.calibrate.gram_lower, issue 17)."""

from __future__ import annotations

import pytest
import torch

from hwsim.quant.calibrate import GRAM_BLOCK, Rxx, gram_lower, symmetrize_lower


@pytest.mark.parametrize("d", [7, 2 * GRAM_BLOCK, 2 * GRAM_BLOCK + 1, 3 * GRAM_BLOCK + 50])
def test_integer_inputs_give_xtx_exactly(d):
    """Small integers: every float32 product and partial sum is exact, so the blocks must land
    in the right places to the bit (a misplaced or missing block cannot pass)."""
    g = torch.Generator().manual_seed(d)
    x = torch.randint(-8, 9, (300, d), generator=g).to(torch.float32)
    out = torch.zeros(d, d, dtype=torch.float64)
    gram_lower(x.T.contiguous(), out)
    assert torch.equal(out.triu(GRAM_BLOCK if d > 2 * GRAM_BLOCK else d), torch.zeros_like(out))  # above: untouched
    full = symmetrize_lower(out)
    assert torch.equal(full, x.double().T @ x.double())
    assert torch.equal(full, full.T)


def test_float_inputs_within_the_float32_bound_and_symmetric():
    g = torch.Generator().manual_seed(0)
    n, d = 1000, 3 * GRAM_BLOCK + 17
    x = torch.randn(n, d, generator=g) * torch.exp(torch.randn(d, generator=g))
    r = Rxx(d)
    for part in x.split(256):
        r.update(part)
    got = r.finalize()
    ref = x.double().T @ x.double() / n
    bound = n * 2.0 ** -24 * (x.double().abs().T @ x.double().abs()) / n  # γ_n of fp32 dot products
    assert bool(((got - ref).abs() <= bound).all())
    assert torch.equal(got, got.T)


def test_sink_weight_scales_the_first_position_in_every_block():
    g = torch.Generator().manual_seed(1)
    d = 2 * GRAM_BLOCK + 40
    x = torch.randint(-4, 5, (3, 10, d), generator=g).to(torch.float32)
    r = Rxx(d, sink_weight=16.0)
    r.update(x)
    first, rest = x[:, 0, :].double(), x[:, 1:, :].reshape(-1, d).double()
    want = (rest.T @ rest + 16.0 * first.T @ first) / (27 + 16.0 * 3)
    assert torch.equal(r.finalize(), want)


@pytest.mark.parametrize("gram_rows", [1, 16, 25, 4096])
def test_buffered_updates_and_sink_rows_give_the_weighted_gram_exactly(monkeypatch, gram_rows):
    """Calls of 10 rows through a buffer of ``gram_rows`` (flushed before overflowing, bypassed by
    calls at least as large, emptied at finalize), with the first positions weighted 16x: small
    integers make every sum exact, so a lost, doubled or misplaced row cannot pass."""
    from hwsim.quant import calibrate

    monkeypatch.setattr(calibrate, "GRAM_ROWS", gram_rows)
    g = torch.Generator().manual_seed(2)
    d = 2 * GRAM_BLOCK + 9
    xs = [torch.randint(-4, 5, (2, 5, d), generator=g).to(torch.float32) for _ in range(5)]
    r = Rxx(d, sink_weight=16.0)
    for x in xs:
        r.update(x)
    X = torch.cat(xs)
    first, rest = X[:, 0, :].double(), X[:, 1:, :].reshape(-1, d).double()
    want = (rest.T @ rest + 16.0 * first.T @ first) / (40 + 16.0 * 10)
    assert r.n == 50
    assert torch.equal(r.finalize(), want)
    assert torch.equal(r.finalize(), want)  # finalize twice: the same matrix


@pytest.mark.parametrize("d", [1, 5, GRAM_BLOCK, GRAM_BLOCK + 1, 3 * GRAM_BLOCK + 7])
def test_symmetrize_lower_mirrors_the_lower_triangle(d):
    a = torch.randn(d, d, dtype=torch.float64, generator=torch.Generator().manual_seed(d))
    want = torch.tril(a) + torch.tril(a, -1).T
    assert torch.equal(symmetrize_lower(a), want)
    assert torch.equal(symmetrize_lower(a, block=3), want)
