"""KL-Top loss (docs/spec/algorithms.md §4.5, §7)."""

import math

import pytest
import torch

from hwsim.quant.algorithms.kl_top import (TeacherTopK, kl_top, kl_top_from_hidden, kl_top_renorm, teacher_topk,
                                           teacher_topk_from_hidden)

F64 = torch.float64


def _logits(*shape, seed=0, scale=2.0):
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _reference(zq, zt, k, renorm=False):
    """Plain-autograd KL-Top, written directly from the spec's formulas."""
    zq, zt = zq.reshape(-1, zq.shape[-1]), zt.reshape(-1, zt.shape[-1])
    idx = torch.topk(zt, k, dim=-1).indices
    if renorm:
        logp = torch.log_softmax(torch.gather(zt, -1, idx), -1)
        logq = torch.log_softmax(torch.gather(zq, -1, idx), -1)
    else:
        logp = torch.gather(torch.log_softmax(zt, -1), -1, idx)
        logq = torch.gather(torch.log_softmax(zq, -1), -1, idx)
    return (logp.exp() * (logp - logq)).sum(-1).mean()


@pytest.mark.parametrize("renorm", [False, True])
def test_zero_when_student_equals_teacher(renorm):
    z = _logits(2, 5, 40)
    assert float(kl_top(z, z, k=7, renorm=renorm)) == 0.0


@pytest.mark.parametrize("renorm", [False, True])
def test_equals_full_kl_for_k_equal_v(renorm):
    zq, zt = _logits(3, 4, 30, seed=1), _logits(3, 4, 30, seed=2)
    full = torch.nn.functional.kl_div(torch.log_softmax(zq, -1).reshape(-1, 30),
                                      torch.log_softmax(zt, -1).reshape(-1, 30), log_target=True, reduction="batchmean")
    torch.testing.assert_close(kl_top(zq, zt, k=30, renorm=renorm), full, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(kl_top(zq, zt, k=1000, renorm=renorm), full, rtol=1e-12, atol=1e-14)  # k ≥ V: all


def test_hand_computed_example():
    """V = 4, k = 2, two tokens given by their probabilities.
    Token A: p = (1/2, 1/4, 1/8, 1/8), q uniform, I = {0, 1}:
        ℒ = ½·log(½/¼) + ¼·log(¼/¼) = ½ log 2;  ℒ' = ⅔ log(⅔/½) + ⅓ log(⅓/½).
    Token B: p = (.4, .4, .1, .1), q = (.45, .45, .05, .05), I = {0, 1}:
        ℒ = .8·log(.4/.45) = .8 log(8/9) < 0 (a partial sum);  ℒ' = 0 (p' = q' = (½, ½)).
    """
    zt = torch.tensor([[0.5, 0.25, 0.125, 0.125], [0.4, 0.4, 0.1, 0.1]], dtype=F64).log() + 3.0
    zq = torch.tensor([[0.25, 0.25, 0.25, 0.25], [0.45, 0.45, 0.05, 0.05]], dtype=F64).log() - 1.0
    post = (0.5 * math.log(2) + 0.8 * math.log(8 / 9)) / 2
    ren = (2 / 3 * math.log(4 / 3) + 1 / 3 * math.log(2 / 3) + 0.0) / 2
    assert float(kl_top(zq, zt, k=2)) == pytest.approx(post, rel=1e-13)
    assert float(kl_top_renorm(zq, zt, k=2)) == pytest.approx(ren, rel=1e-13)
    assert float(kl_top(zq[1:], zt[1:], k=2)) < 0


@pytest.mark.parametrize("renorm", [False, True])
def test_gradient_matches_closed_form_and_autograd(renorm):
    """Per token: dℒ/dz_q = m_p·q − p·1_I (m_p = Σ_I p); renormalised: q' − p' on I."""
    V, k = 25, 6
    zq, zt = _logits(1, V, seed=3).requires_grad_(), _logits(1, V, seed=4)
    kl_top(zq, zt, k=k, renorm=renorm).backward()
    ours = zq.grad.clone()
    zq.grad = None
    _reference(zq, zt, k, renorm).backward()
    torch.testing.assert_close(ours, zq.grad, rtol=1e-12, atol=1e-15)
    idx = torch.topk(zt[0], k).indices
    ind = torch.zeros(V, dtype=F64)
    ind[idx] = 1.0
    if renorm:
        p = torch.softmax(zt[0, idx], -1)
        q = torch.softmax(zq.detach()[0, idx], -1)
        closed = torch.zeros(V, dtype=F64)
        closed[idx] = q - p
    else:
        p, q = torch.softmax(zt[0], -1) * ind, torch.softmax(zq.detach()[0], -1)
        closed = p.sum() * q - p
    torch.testing.assert_close(ours[0], closed, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("renorm", [False, True])
def test_chunking_cache_and_gradcheck(renorm):
    zt = _logits(3, 5, 20, seed=5)
    zq = _logits(3, 5, 20, seed=6).requires_grad_()
    ref = _reference(zq, zt, 4, renorm)
    gref, = torch.autograd.grad(ref, zq)
    cache = teacher_topk(zt, 4, chunk_tokens=2)
    assert isinstance(cache, TeacherTopK) and cache.k == 4 and cache.n_tokens == 15
    for teacher in (zt, cache):
        for chunk in (1, 4, None):
            val = kl_top(zq, teacher, 4, renorm=renorm, chunk_tokens=chunk)
            g, = torch.autograd.grad(val, zq)
            torch.testing.assert_close(val, ref, rtol=1e-12, atol=1e-15)
            torch.testing.assert_close(g, gref, rtol=1e-12, atol=1e-15)
    small = _logits(2, 9, seed=7).requires_grad_()
    assert torch.autograd.gradcheck(lambda z: kl_top(z, zt[0, :2, :9], 3, renorm=renorm, chunk_tokens=1), (small,))


@pytest.mark.parametrize("renorm", [False, True])
def test_from_hidden_equals_logits_path(renorm):
    h = _logits(2, 7, 12, seed=8).requires_grad_()
    W = _logits(30, 12, seed=9, scale=0.5).requires_grad_()
    b = _logits(30, seed=10, scale=0.1).requires_grad_()
    ht = _logits(2, 7, 12, seed=11)
    teacher = teacher_topk_from_hidden(ht, W.detach(), b.detach(), k=5, chunk_tokens=3)
    zt = ht @ W.detach().T + b.detach()
    assert torch.equal(teacher.idx, teacher_topk(zt, 5).idx)
    ref = _reference(h @ W.T + b, zt, 5, renorm)
    gref = torch.autograd.grad(ref, (h, W, b))
    val = kl_top_from_hidden(h, W, b, teacher, 5, renorm=renorm, chunk_tokens=4)
    g = torch.autograd.grad(val, (h, W, b))
    torch.testing.assert_close(val, ref, rtol=1e-12, atol=1e-15)
    for a, r in zip(g, gref):
        torch.testing.assert_close(a, r, rtol=1e-11, atol=1e-14)
    # without a bias
    val0 = kl_top_from_hidden(h, W, None, zt - b.detach(), 5, renorm=renorm)
    torch.testing.assert_close(val0, _reference(h @ W.T, zt - b.detach(), 5, renorm), rtol=1e-12, atol=1e-15)


def test_float32_logits_give_float32_loss():
    zq = _logits(2, 10, 50, seed=12).float().requires_grad_()
    zt = _logits(2, 10, 50, seed=13).float()
    val = kl_top(zq, zt, 8)
    assert val.dtype == torch.float32
    val.backward()
    assert zq.grad.dtype == torch.float32
    torch.testing.assert_close(val.double(), _reference(zq.double(), zt.double(), 8), rtol=1e-5, atol=1e-6)


def test_errors_name_the_argument():
    z = _logits(4, 10)
    with pytest.raises(ValueError, match="k=0"):
        kl_top(z, z, 0)
    with pytest.raises(ValueError, match="V=11"):
        kl_top(z, _logits(4, 11), 3)
    with pytest.raises(ValueError, match="chunk_tokens=0"):
        kl_top(z, z, 3, chunk_tokens=0)
    with pytest.raises(ValueError, match="3 tokens"):
        kl_top(z, teacher_topk(_logits(3, 10), 3), 3)
    with pytest.raises(ValueError, match="TeacherTopK"):
        kl_top(z, [1, 2], 3)
