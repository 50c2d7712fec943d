"""Riemannian Adam on the Stiefel manifold (docs/spec/algorithms.md §4.5, §7)."""

import pytest
import torch

from hwsim.quant.algorithms.stiefel import (OFFICIAL_ROTATE_LR, StiefelAdam, canonical_inner, project_orthogonal,
                                            stiefel_error)


def _random_orthogonal(*shape, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(*shape, generator=g, dtype=torch.float64))[0].to(dtype)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-6), (torch.float64, 1e-12)])
def test_stays_orthogonal_over_1000_random_steps(dtype, tol):
    X = _random_orthogonal(3, 16, 16, seed=1, dtype=dtype).requires_grad_()
    opt = StiefelAdam([X], lr=0.05)
    g = torch.Generator().manual_seed(2)
    worst = 0.0
    for _ in range(1000):
        X.grad = torch.randn(X.shape, generator=g, dtype=torch.float64).to(dtype)
        opt.step()
        worst = max(worst, stiefel_error(X))
    assert worst < tol
    assert X.dtype == dtype and opt.state[X]["exp_avg_sq"].shape == (3, 1, 1)


def test_float32_solve_as_geoopt_stays_within_spec_bound():
    """compute_dtype=None does the Cayley solve in float32 like geoopt; the spec's bound (1e-5
    over 200 steps) holds."""
    X = _random_orthogonal(32, 32, seed=3, dtype=torch.float32).requires_grad_()
    opt = StiefelAdam([X], lr=0.05, compute_dtype=None)
    g = torch.Generator().manual_seed(4)
    worst = 0.0
    for _ in range(200):
        X.grad = torch.randn(X.shape, generator=g)
        opt.step()
        worst = max(worst, stiefel_error(X))
    assert worst < 1e-5


def _procrustes(d=12, n=100, seed=5):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(d, n, generator=g, dtype=torch.float64)
    M = 0.5 * torch.randn(d, d, generator=g, dtype=torch.float64)
    R_true = torch.linalg.matrix_exp(M - M.T)  # in SO(d), reachable from I by Cayley steps
    B = R_true @ A + 0.1 * torch.randn(d, n, generator=g, dtype=torch.float64)
    U, _, Vh = torch.linalg.svd(B @ A.T)
    R_opt = U @ Vh  # min over orthogonal R of ||RA − B||_F (orthogonal Procrustes)
    return A, B, R_opt, float(((R_opt @ A - B) ** 2).sum())


@pytest.mark.parametrize("proj,rel", [("tangent", 1e-7), ("geoopt", 1e-2)])
def test_procrustes_reaches_closed_form(proj, rel):
    A, B, R_opt, f_opt = _procrustes()
    X = torch.eye(A.shape[0], dtype=torch.float64).requires_grad_()
    steps = 250
    opt = StiefelAdam([X], lr=0.1, momentum_projection=proj)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 - s / steps)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        f = ((X @ A - B) ** 2).sum()
        f.backward()
        losses.append(float(f.detach()))
        opt.step()
        sched.step()
    f_end = float(((X.detach() @ A - B) ** 2).sum())
    assert losses[0] > 10 * f_opt and f_end < losses[0]
    assert f_end <= f_opt * (1 + rel)
    assert stiefel_error(X) < 1e-12
    if proj == "tangent":
        torch.testing.assert_close(X.detach(), R_opt, rtol=0, atol=1e-4)


def test_first_step_by_hand():
    """Step 1: m = (1−β₁)g, v = (1−β₂)<g,g>, u = −lr·g/(√<g,g> + ε) (bias corrections cancel),
    X⁺ = (I − A/2)⁻¹(I + A/2)X with A = uXᵀ − Xuᵀ."""
    X0 = _random_orthogonal(8, 5, seed=6)  # non-square Stiefel
    G = torch.randn(8, 5, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    X = X0.clone().requires_grad_()
    X.grad = G.clone()
    lr, eps = 0.03, 1e-8
    StiefelAdam([X], lr=lr, eps=eps).step()
    g = G - X0 @ G.T @ X0
    gg = (g * g).sum() - 0.5 * ((X0.T @ g) ** 2).sum()
    torch.testing.assert_close(canonical_inner(X0, g).reshape(()), gg)
    u = -lr * g / (gg.sqrt() + eps)
    Amat = u @ X0.T - X0 @ u.T
    eye = torch.eye(8, dtype=torch.float64)
    expect = torch.linalg.solve(eye - Amat / 2, (eye + Amat / 2) @ X0)
    torch.testing.assert_close(X.detach(), expect, rtol=0, atol=1e-14)


def test_one_second_moment_per_matrix():
    """Scaling the gradient of one batch element scales nothing in the other's step, and leaves
    the element's own first step unchanged (Adam is scale-invariant per matrix)."""
    X0 = _random_orthogonal(2, 6, 6, seed=8)
    G = torch.randn(2, 6, 6, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    outs = []
    for scale in (1.0, 1000.0):
        X = X0.clone().requires_grad_()
        X.grad = G * torch.tensor([scale, 1.0], dtype=torch.float64)[:, None, None]
        StiefelAdam([X], lr=0.02, eps=1e-15).step()
        outs.append(X.detach())
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=1e-12)


def test_stabilize_projections():
    """'tangent' leaves a tangent momentum unchanged; 'geoopt' (m − X mᵀ X, as geoopt) doubles it."""
    X = _random_orthogonal(6, 6, seed=10)
    W = torch.randn(6, 6, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    m = X @ (W - W.T)
    Xt, mt = StiefelAdam._stabilize(X, m, "tangent")
    Xg, mg = StiefelAdam._stabilize(X, m, "geoopt")
    torch.testing.assert_close(Xt, X, rtol=0, atol=1e-13)
    torch.testing.assert_close(mt, m, rtol=0, atol=1e-12)
    torch.testing.assert_close(mg, 2 * m, rtol=0, atol=1e-12)
    torch.testing.assert_close(project_orthogonal(X + 1e-3 * W).T @ project_orthogonal(X + 1e-3 * W),
                               torch.eye(6, dtype=torch.float64), rtol=0, atol=1e-13)


def test_defaults_and_errors():
    X = torch.eye(4, dtype=torch.float64, requires_grad=True)
    opt = StiefelAdam([X])
    assert opt.defaults["lr"] == OFFICIAL_ROTATE_LR and opt.defaults["stabilize"] == 10
    with pytest.raises(ValueError, match="momentum_projection='x'"):
        StiefelAdam([X], momentum_projection="x")
    with pytest.raises(ValueError, match="stabilize=0"):
        StiefelAdam([X], stabilize=0)
    with pytest.raises(ValueError, match=r"params\[0\]: shape \(3, 5\)"):
        StiefelAdam([torch.zeros(3, 5, requires_grad=True)])
    Y = (2 * torch.eye(4, dtype=torch.float64)).requires_grad_()
    Y.grad = torch.ones(4, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="not on the Stiefel manifold"):
        StiefelAdam([Y]).step()
