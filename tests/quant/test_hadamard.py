"""Hadamard constructions and the fast transform (docs/spec/algorithms.md §4.5, §7; issue 11)."""

import numpy as np
import pytest
import torch

from hwsim.cost_models.workload import hadamard_factor
from hwsim.eval.models import ZOO
from hwsim.quant import hadamard as hd
from hwsim.quant.algorithms.common import QuantWarning

LLAMA2_7B = dict(hidden_size=4096, intermediate_size=11008, head_dim=128)
TINY = dict(hidden_size=64, intermediate_size=192, head_dim=16)


def _sizes(cfg: dict) -> set[int]:
    head = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    return {cfg["hidden_size"], cfg["intermediate_size"], head}


MODEL_SIZES = sorted(_sizes(ZOO["smollm2-135m"].config) | _sizes(ZOO["gemma3-270m"].config)
                     | _sizes(LLAMA2_7B) | _sizes(TINY))


def test_model_sizes_are_the_expected_ones():
    assert _sizes(ZOO["smollm2-135m"].config) == {576, 1536, 64}
    assert _sizes(ZOO["gemma3-270m"].config) == {640, 2048, 256}
    assert 11008 in MODEL_SIZES and 192 in MODEL_SIZES


@pytest.mark.parametrize("n", [n for n in MODEL_SIZES if n <= 4096])
def test_every_model_size_is_exactly_hadamard(n):
    """H Hᵀ = nI exactly on the ±1 matrix (float32 products of ±1 entries with |sums| ≤ n < 2^24
    are exact), and the normalised matrix is orthogonal to float64 rounding."""
    H = hd.hadamard_pm1(n)
    assert H.dtype == torch.int8 and tuple(H.shape) == (n, n)
    assert torch.all(H.abs() == 1)
    Hf = H.to(torch.float32)
    assert torch.equal(Hf @ Hf.T, n * torch.eye(n))
    if n <= 1024:  # (the exact check above implies it; the float64 product is slow beyond)
        Hn = hd.hadamard_matrix(n)
        torch.testing.assert_close(Hn @ Hn.T, torch.eye(n, dtype=torch.float64), rtol=0, atol=1e-13)
    info = hd.hadamard_info(n)
    if n > 1 and (n & (n - 1)):  # not a power of two: the K factor is the cost model's
        assert info.K == hadamard_factor(n)[0]


def test_11008_is_hadamard_via_its_factor():
    """11008 = 172·64: the 172 factor (Williamson type, t = 43) is exactly Hadamard, the full
    matrix is its Kronecker product with Sylvester's 64, so (A⊗B)(A⊗B)ᵀ = AAᵀ⊗BBᵀ = 11008 I; a
    Freivalds check on the fast transform confirms it with integer arithmetic (float64 exact)."""
    info = hd.hadamard_info(11008)
    assert (info.K, info.a, info.kind, info.t) == (172, 6, "williamson", 43)
    H172 = hd.hadamard_pm1(172).to(torch.int64)
    assert torch.equal(H172 @ H172.T, 172 * torch.eye(172, dtype=torch.int64))
    H = hd.hadamard_pm1(11008)
    S64 = hd.hadamard_pm1(64).to(torch.int64)
    for i, j in [(0, 0), (3, 5), (63, 17)]:
        block = H[i * 172:(i + 1) * 172, j * 172:(j + 1) * 172].to(torch.int64)
        assert torch.equal(block, S64[i, j] * H172)
    g = torch.Generator().manual_seed(0)
    for _ in range(8):
        x = torch.randint(-3, 4, (11008,), generator=g).to(torch.float64)
        y = hd.apply_hadamard(hd.apply_hadamard(x, normalized=False), normalized=False, transpose=True)
        assert torch.equal(y, 11008 * x)


@pytest.mark.parametrize("n,kind", [(12, "paley1"), (28, "paley1"), (20, "paley1"), (36, "paley2"),
                                    (52, "paley2"), (100, "paley2"), (156, "williamson"),
                                    (172, "williamson"), (244, "paley1")])
def test_constructions(n, kind):
    """Paley I/II with primes and prime powers (27 = 3³, 25 = 5², 49 = 7², 243 = 3⁵) and the
    Williamson-type orders 156, 172."""
    info = hd.hadamard_info(n)
    assert info.kind == kind and info.K == n
    H = hd.hadamard_pm1(n).to(torch.int64)
    assert torch.equal(H @ H.T, n * torch.eye(n, dtype=torch.int64))


@pytest.mark.parametrize("n", [3, 6, 10, 14, 188, 376])
def test_impossible_size_raises_unless_dense_allowed(n):
    with pytest.raises(ValueError, match=f"n={n}"):
        hd.hadamard_matrix(n)
    with pytest.raises(ValueError, match="allow_dense_orthogonal"):
        hd.apply_hadamard(torch.zeros(2, n, dtype=torch.float64))
    events = []
    with pytest.warns(QuantWarning, match="random orthogonal"):
        Q = hd.hadamard_matrix(n, allow_dense_orthogonal=True, seed=3, events=events)
    assert events and events[0]["kind"] == "dense_orthogonal" and events[0]["value"] == {"n": n, "seed": 3}
    torch.testing.assert_close(Q @ Q.T, torch.eye(n, dtype=torch.float64), rtol=0, atol=1e-13)
    with pytest.warns(QuantWarning):
        assert torch.equal(Q, hd.hadamard_matrix(n, allow_dense_orthogonal=True, seed=3))
    info = hd.hadamard_info(n, allow_dense_orthogonal=True, seed=3)
    assert info.kind == "dense_orthogonal" and info.seed == 3 and info.pre_transform == f"dense({n})"


@pytest.mark.parametrize("bad", [0, -4, 2.0, True, "64"])
def test_bad_n_is_named(bad):
    with pytest.raises(ValueError, match="n="):
        hd.hadamard_info(bad)


@pytest.mark.parametrize("n", [1, 2, 16, 64, 192, 576, 640, 1536])
def test_apply_hadamard_equals_dense(n):
    g = torch.Generator().manual_seed(n)
    x = torch.randn(3, 2, n, generator=g, dtype=torch.float64)
    H = hd.hadamard_matrix(n)
    torch.testing.assert_close(hd.apply_hadamard(x), x @ H.T, rtol=0, atol=1e-12)
    torch.testing.assert_close(hd.apply_hadamard(x, transpose=True), x @ H, rtol=0, atol=1e-12)
    x32 = x.to(torch.float32)
    y32 = hd.apply_hadamard(x32)
    assert y32.dtype == torch.float32
    torch.testing.assert_close(y32, (x @ H.T).to(torch.float32), rtol=0, atol=1e-5)
    # the transform is orthogonal: applying H then Hᵀ returns x
    torch.testing.assert_close(hd.apply_hadamard(hd.apply_hadamard(x), transpose=True), x, rtol=0, atol=1e-12)


def test_apply_hadamard_rejects_bad_input():
    with pytest.raises(ValueError, match="last axis"):
        hd.apply_hadamard(torch.zeros(4, 8), 16)
    with pytest.raises(ValueError, match="floating-point"):
        hd.apply_hadamard(torch.zeros(4, 8, dtype=torch.int64))


def test_random_hadamard():
    R = hd.random_hadamard(192, seed=7)
    H = hd.hadamard_matrix(192)
    s = hd.random_signs(192, 7)
    assert set(s.tolist()) == {-1.0, 1.0}
    assert torch.equal(R, s[:, None] * H)
    torch.testing.assert_close(R @ R.T, torch.eye(192, dtype=torch.float64), rtol=0, atol=1e-13)
    assert torch.equal(R, hd.random_hadamard(192, seed=7))
    assert not torch.equal(R, hd.random_hadamard(192, seed=8))


def test_sylvester_order_and_paley_shape():
    """Sylvester entries (−1)^popcount(i&j); a Paley I factor is skew-type: H + Hᵀ = 2I."""
    H = hd.hadamard_pm1(16).to(torch.int64)
    i = np.arange(16)
    pop = np.vectorize(lambda v: bin(v).count("1"))(i[:, None] & i[None, :])
    assert np.array_equal(H.numpy(), (-1) ** pop)
    P = hd.hadamard_pm1(12).to(torch.int64)
    assert torch.equal(P + P.T, 2 * torch.eye(12, dtype=torch.int64))
