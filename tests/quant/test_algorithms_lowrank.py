"""Known-answer tests of the low-rank reconstructions (docs/spec/algorithms.md §7, "Low-rank
reconstruction"): LQER, L²QER, QERA-approx, QERA-exact through ``hwsim.quant.reconstruct``."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

import hwsim.formats as F
from hwsim.quant.algorithms import (DampingWarning, QuantWarning, Reconstruction, l2qer, lqer,
                                    output_error, qera_approx, qera_exact, rtn_quantize)
from hwsim.quant.algorithms import qera as qera_mod
from hwsim.quant.reconstruct import reconstruct
from hwsim.quant.stages import stage_names

D64 = torch.float64


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _distinct_error(n_in=40, n_out=30, seed=0):
    """W, Wq with E = (W − Wq)ᵀ having known, well separated singular values."""
    g = _gen(seed)
    U, _ = torch.linalg.qr(torch.randn(n_in, n_in, generator=g, dtype=D64))
    V, _ = torch.linalg.qr(torch.randn(n_out, n_out, generator=g, dtype=D64))
    m = min(n_in, n_out)
    sig = torch.linspace(3.0, 0.1, m, dtype=D64)
    E = U[:, :m] @ torch.diag(sig) @ V[:, :m].T
    W = torch.randn(n_out, n_in, generator=g, dtype=D64)
    return W, W - E.T, sig


def _sym_sqrt(R: np.ndarray) -> np.ndarray:
    """Independent reference: symmetric PSD square root by numpy eigh (negatives -> 0)."""
    lam, Q = np.linalg.eigh(R)
    return (Q * np.sqrt(np.clip(lam, 0, None))) @ Q.T


def _jstar(W, Wq, R, k):
    """Analytic minimum Σ_{i>k} σ_i(R^{1/2} E)² (numpy, float64)."""
    E = (W - Wq).T.numpy()
    s = np.linalg.svd(_sym_sqrt(np.asarray(R, np.float64)) @ E, compute_uv=False)
    return float(np.sum(s[k:] ** 2))


@pytest.fixture(scope="module")
def gaussian_problem():
    """x ~ N(0, Σ), dense Σ with condition ≈ 1e3; in = 64, out = 48, k = 8, W̃ = RTN(W)."""
    g = _gen(1234)
    n_in, n_out = 64, 48
    Qm, _ = torch.linalg.qr(torch.randn(n_in, n_in, generator=g, dtype=D64))
    lam = torch.logspace(0, -3, n_in, dtype=D64)  # condition number 1e3
    Sigma = (Qm * lam) @ Qm.T
    Sigma = 0.5 * (Sigma + Sigma.T)
    W = torch.randn(n_out, n_in, generator=g, dtype=D64) * 0.05
    Wq = rtn_quantize(W, "mxint4").to(D64)
    return W, Wq, Sigma


# ---- rank-k identity, LQER = L²QER(S = I), scale invariance ----------------------------------

@pytest.mark.parametrize("k", [1, 5, 17])
def test_rank_k_error_equals_discarded_singular_values(k):
    W, Wq, sig = _distinct_error()
    A, B = lqer(W, Wq, k, svd_dtype="float64")
    E = (W - Wq).T
    err = float(torch.sum((E - A @ B) ** 2))
    expect = float(torch.sum(sig[k:] ** 2))
    assert err == pytest.approx(expect, rel=1e-10)
    assert A.shape == (40, k) and B.shape == (k, 30)


def test_lqer_equals_l2qer_with_identity_scale_bit_for_bit():
    g = _gen(3)
    W = torch.randn(32, 48, generator=g)
    Wq = rtn_quantize(W, "bfp4")
    A1, B1 = reconstruct("lqer", W, Wq, None, 8)
    A2, B2 = reconstruct("l2qer", W, Wq, {"mean_abs_lqer": torch.ones(48)}, 8)
    assert torch.equal(A1, A2) and torch.equal(B1, B2)
    A3, B3 = l2qer(W, Wq, torch.ones(48), 8)
    assert torch.equal(A1, A3) and torch.equal(B1, B3)


def test_l2qer_scale_invariance_and_independent_reference():
    W, Wq, _ = _distinct_error(seed=5)
    s = torch.rand(40, generator=_gen(6), dtype=D64) + 0.1
    A, B = l2qer(W, Wq, s, 6, svd_dtype="float64")
    A2, B2 = l2qer(W, Wq, 7.5 * s, 6, svd_dtype="float64")
    assert torch.allclose(A @ B, A2 @ B2, rtol=0, atol=1e-10 * float((A @ B).abs().max()))
    # independent numpy reference: S⁻¹ [S E]_k
    E = (W - Wq).T.numpy()
    sn = s.numpy()[:, None]
    U, S, Vt = np.linalg.svd(sn * E)
    ref = (U[:, :6] * S[:6]) @ Vt[:6] / sn
    np.testing.assert_allclose((A @ B).numpy(), ref, rtol=0, atol=1e-10 * np.abs(ref).max())


# ---- QERA-exact reaches the analytic minimum ------------------------------------------------

def test_qera_exact_reaches_analytic_minimum_and_beats_the_others(gaussian_problem):
    W, Wq, Sigma = gaussian_problem
    k = 8
    jstar = _jstar(W, Wq, Sigma, k)
    res = reconstruct("qera-exact", W, Wq, {"rxx": Sigma}, k)
    assert isinstance(res, Reconstruction)
    A, B = res
    j_exact = output_error(W, Wq, Sigma, A, B)
    assert j_exact == pytest.approx(jstar, rel=1e-10)
    assert res.info.j == pytest.approx(jstar, rel=1e-10)
    assert res.info.sigma_tail == pytest.approx(jstar, rel=1e-10)
    assert res.info.j0 == pytest.approx(output_error(W, Wq, Sigma), rel=1e-10)
    assert res.info.damping is None and res.info.events == ()

    # population statistics of x ~ N(0, Σ): RMS = sqrt(Σ_ii), E|x_i| = sqrt(2/π)·sqrt(Σ_ii)
    std = torch.sqrt(torch.diagonal(Sigma))
    others = {
        "qera-approx": reconstruct("qera-approx", W, Wq, {"mean_sq": std}, k),
        "l2qer": reconstruct("l2qer", W, Wq, {"mean_abs_lqer": std * math.sqrt(2 / math.pi)}, k,
                             svd_dtype="float64"),
        "lqer (plain SVD)": reconstruct("lqer", W, Wq, {}, k, svd_dtype="float64"),
    }
    for name, (A2, B2) in others.items():
        j = output_error(W, Wq, Sigma, A2, B2)
        assert j_exact < j * (1 - 1e-6), f"QERA-exact ({j_exact}) not strictly below {name} ({j})"
    assert j_exact < output_error(W, Wq, Sigma)


def test_qera_exact_with_sampled_covariance_is_within_one_percent(gaussian_problem):
    W, Wq, Sigma = gaussian_problem
    k = 8
    n, chunk = 200_000, 50_000
    Lc = torch.linalg.cholesky(Sigma)
    g = _gen(99)
    acc = torch.zeros_like(Sigma)
    for _ in range(n // chunk):
        X = torch.randn(chunk, Sigma.shape[0], generator=g, dtype=D64) @ Lc.T
        acc += X.T @ X
    R_hat = acc / n
    A, B = reconstruct("qera-exact", W, Wq, {"rxx": R_hat}, k)
    j = output_error(W, Wq, Sigma, A, B)  # evaluated under the true Σ
    jstar = _jstar(W, Wq, Sigma, k)
    assert jstar <= j <= 1.01 * jstar


def test_qera_exact_factorisations_agree(gaussian_problem):
    W, Wq, Sigma = gaussian_problem
    ABs = {}
    for factor in ("cholesky", "eigh", "sqrtm"):
        if factor == "sqrtm":
            pytest.importorskip("scipy")
        A, B = qera_exact(W, Wq, Sigma, 8, factor=factor)
        ABs[factor] = A @ B
    ref = ABs["cholesky"]
    for factor, C in ABs.items():
        rel = float(torch.linalg.norm(C - ref) / torch.linalg.norm(ref))
        assert rel < 1e-8, f"{factor}: relative difference {rel}"


def test_diagonal_covariance_exact_equals_approx_and_l2qer():
    g = _gen(7)
    n_in, n_out, k = 32, 24, 6
    sigma = torch.rand(n_in, generator=g, dtype=D64) * 2 + 0.05
    W = torch.randn(n_out, n_in, generator=g, dtype=D64)
    Wq = rtn_quantize(W, "mxint3").to(D64)
    AB_exact = torch.matmul(*qera_exact(W, Wq, torch.diag(sigma ** 2), k))
    AB_approx = torch.matmul(*qera_approx(W, Wq, sigma, k))
    AB_l2 = torch.matmul(*l2qer(W, Wq, sigma * math.sqrt(2 / math.pi), k, svd_dtype="float64"))
    scale = float(AB_exact.abs().max())
    assert torch.allclose(AB_exact, AB_approx, rtol=0, atol=1e-10 * scale)
    assert torch.allclose(AB_exact, AB_l2, rtol=0, atol=1e-10 * scale)


# ---- QERA-exact: the Gram route (default) against an independent full-SVD reference --------

def _loud_problem(n_in, n_out, loud, seed, n_samples=None):
    """Correlated inputs with 4 loud channels (×``loud``); N = 2·in samples unless given."""
    g = _gen(seed)
    N = n_samples or 2 * n_in
    X = torch.randn(N, n_in, generator=g, dtype=D64)
    X = X + X @ torch.randn(n_in, n_in, generator=g, dtype=D64) * (0.5 / n_in ** 0.5)
    X[:, :4] *= loud
    R = X.T @ X / N
    W = torch.randn(n_out, n_in, generator=g, dtype=D64) * 0.02
    return W, rtn_quantize(W, "mxint4").to(D64), R


def _reference_ab(W, Wq, R, k, damping=None):
    """Independent reference in numpy: C* = L⁻¹ [L E]_k with L = Fᵀ (numpy Cholesky of R, damped
    like hwsim when it was) and the full float64 SVD of the explicitly formed M = L E;
    L⁻¹ U_k Σ_k V_kᵀ = L⁻¹ M V_k V_kᵀ = E V_k V_kᵀ. Returns (C*, all σ of M)."""
    R = np.asarray(R, np.float64)
    R = 0.5 * (R + R.T)
    if damping is not None:
        R = R + damping * np.mean(np.diag(R)) * np.eye(R.shape[0])
    E = (W - Wq).T.numpy()
    M = np.linalg.cholesky(R).T @ E
    _, s, Vt = np.linalg.svd(M, full_matrices=False)
    return torch.from_numpy(E @ Vt[:k].T @ Vt[:k]), s


def _rel(C, ref):
    return float(torch.linalg.norm(C - ref) / torch.linalg.norm(ref))


@pytest.mark.parametrize("n_in,n_out,k", [(96, 64, 8), (64, 96, 8), (80, 80, 16), (33, 50, 32)])
def test_gram_route_matches_full_svd_reference_on_random_data(n_in, n_out, k):
    W, Wq, R = _loud_problem(n_in, n_out, 1.0, seed=n_in + n_out)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = qera_exact(W, Wq, R, k)
    assert res.info.solver == "gram" and res.info.events == ()
    assert 0 <= res.info.gram_bound <= qera_mod.GRAM_TOL
    ref, s = _reference_ab(W, Wq, R, k)
    assert _rel(res.A @ res.B, ref) < 1e-11
    assert res.info.sigma_tail == pytest.approx(float(np.sum(s[k:] ** 2)), rel=1e-10, abs=1e-300)
    assert res.info.j == pytest.approx(float(np.sum(s[k:] ** 2)), rel=1e-10, abs=1e-300)
    svd = qera_exact(W, Wq, R, k, solver="svd")
    assert svd.info.solver == "svd" and svd.info.gram_bound is None
    assert _rel(res.A @ res.B, svd.A @ svd.B) < 1e-11


@pytest.mark.parametrize("loud,n_samples,solver", [
    (100.0, None, "gram"),       # σ_1/σ_k ≈ 50
    (1000.0, None, "gram"),      # σ_1/σ_k ≈ 500: still certified below GRAM_TOL
    (100.0, 40, "gram"),         # N < in: singular R, damped Cholesky
    (1e4, None, "svd"),          # σ_1/σ_k ≈ 5e3: certificate too weak, full SVD used
    (1e4, 40, "svd"),
])
def test_gram_route_on_ill_conditioned_rxx(loud, n_samples, solver):
    W, Wq, R = _loud_problem(96, 64, loud, seed=3, n_samples=n_samples)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = qera_exact(W, Wq, R, 8)
    assert [type(w.message) for w in caught] == ([DampingWarning] if n_samples else [])
    assert (res.info.damping is not None) == bool(n_samples)
    assert res.info.solver == solver
    kinds = [e["kind"] for e in res.info.events]
    assert ("gram_fallback" in kinds) == (solver == "svd")
    if solver == "svd":
        assert res.info.gram_bound > qera_mod.GRAM_TOL
    ref, s = _reference_ab(W, Wq, R, 8, res.info.damping)
    assert _rel(res.A @ res.B, ref) < 1e-9
    assert res.info.sigma_tail == pytest.approx(float(np.sum(s[8:] ** 2)), rel=1e-9)
    if not n_samples:  # J reaches the analytic minimum (damping moves it, see the tests below)
        assert output_error(W, Wq, R, *res) == pytest.approx(_jstar(W, Wq, R, 8), rel=1e-8)


def test_gram_route_agrees_with_sqrtm_reference_on_loud_channels():
    pytest.importorskip("scipy")
    W, Wq, R = _loud_problem(128, 128, 20.0, seed=5)
    fast = qera_exact(W, Wq, R, 16)
    ref = qera_exact(W, Wq, R, 16, factor="sqrtm")
    assert fast.info.solver == "gram" and ref.info.solver == "svd"
    assert _rel(fast.A @ fast.B, ref.A @ ref.B) < 1e-9
    assert fast.info.j == pytest.approx(ref.info.j, rel=1e-10)


@pytest.mark.parametrize("shape", [(120, 60), (60, 120), (90, 90)])
def test_gram_topk_certificate_bounds_the_true_angle(shape):
    """M = U diag(σ) Vᵀ with σ_1/σ_k from 1 to 1e5 and a 1% gap at k: the bound is never
    below the true angle to the exact subspaces, and tight enough to pass at moderate range."""
    g = _gen(17)
    n_in, n_out = shape
    m, k = min(shape), 8
    U, _ = torch.linalg.qr(torch.randn(n_in, m, generator=g, dtype=D64))
    V, _ = torch.linalg.qr(torch.randn(n_out, m, generator=g, dtype=D64))
    for head in (1.0, 1e2, 1e3, 1e5):
        sig = torch.cat([torch.logspace(math.log10(head), 0, k, dtype=D64),
                         0.99 * torch.linspace(1, 0.1, m - k, dtype=D64)])
        M = (U * sig) @ V.T
        Uk, Sk, Vhk, tail, bound = qera_mod.gram_topk(M, k)
        ang_v = float(torch.linalg.matrix_norm(Vhk.T - V[:, :k] @ (V[:, :k].T @ Vhk.T), ord=2))
        ang_u = float(torch.linalg.matrix_norm(Uk - U[:, :k] @ (U[:, :k].T @ Uk), ord=2))
        assert max(ang_u, ang_v) <= bound, (head, ang_u, ang_v, bound)
        assert torch.allclose(Sk, sig[:k], rtol=1e-9, atol=0)
        assert tail == pytest.approx(float(torch.sum(sig[k:] ** 2)), rel=1e-9)
        if head <= 1e2:
            assert bound < 1e-10
        C = (Uk * Sk) @ Vhk
        assert _rel(C, (U[:, :k] * sig[:k]) @ V[:, :k].T) <= 4 * bound + 1e-14


def test_blocked_triangular_product_and_gram_match_dense_products():
    g = _gen(29)
    n = 600  # > the 256 leaf: two levels of recursion, uneven halves
    T = torch.triu(torch.randn(n, n, generator=g, dtype=D64))
    X = torch.randn(n, 70, generator=g, dtype=D64)
    assert torch.allclose(qera_mod._upper_matmul(T, X), T @ X, rtol=0, atol=1e-12)
    assert torch.allclose(qera_mod._upper_matmul(T.T.contiguous().T, X.T.contiguous().T), T @ X,
                          rtol=0, atol=1e-12)  # strided (transposed) operands
    Y = torch.randn(90, n, generator=g, dtype=D64)
    G = qera_mod._gram_upper(Y)
    assert torch.allclose(torch.triu(G), torch.triu(Y.T @ Y), rtol=0, atol=1e-12)


@pytest.mark.parametrize("n_in,n_out", [(530, 270), (270, 530)])
def test_gram_route_on_blocked_sizes_matches_reference(n_in, n_out):
    W, Wq, R = _loud_problem(n_in, n_out, 20.0, seed=31)
    res = qera_exact(W, Wq, R, 16)
    assert res.info.solver == "gram" and res.info.events == ()
    ref, s = _reference_ab(W, Wq, R, 16)
    assert _rel(res.A @ res.B, ref) < 1e-10
    assert res.info.sigma_tail == pytest.approx(float(np.sum(s[16:] ** 2)), rel=1e-10)


def test_gram_fallback_gives_the_full_svd_result(gaussian_problem, monkeypatch):
    W, Wq, Sigma = gaussian_problem
    svd = qera_exact(W, Wq, Sigma, 8, solver="svd")
    monkeypatch.setattr(qera_mod, "GRAM_TOL", 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # recorded, not warned: nothing is degraded
        res = qera_exact(W, Wq, Sigma, 8, layer="blk1.k")
    assert res.info.solver == "svd" and res.info.gram_bound > 0
    assert res.info.events == ({"stage": "qera-exact", "layer": "blk1.k", "kind": "gram_fallback",
                                "value": res.info.gram_bound},)
    assert torch.equal(res.A, svd.A) and torch.equal(res.B, svd.B)


def test_gram_route_rank_deficient_error_and_full_rank():
    g = _gen(23)
    n_in, n_out = 48, 40
    R = _loud_problem(n_in, n_out, 10.0, seed=2)[2]
    W = torch.randn(n_out, n_in, generator=g, dtype=D64)
    # rank(E) = 3 < k = 8: the rank-k optimum is E itself, certified without a gap
    E = torch.randn(n_in, 3, generator=g, dtype=D64) @ torch.randn(3, n_out, generator=g,
                                                                   dtype=D64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = qera_exact(W, W - E.T, R, 8)
        zero = qera_exact(W, W.clone(), R, 8)  # W̃ = W: E = 0
        full = qera_exact(W, rtn_quantize(W, "mxint3").to(D64), R, n_out)  # k = min(in, out)
    assert res.info.solver == "gram" and res.info.gram_bound == 0.0
    assert _rel(res.A @ res.B, E) < 1e-10
    assert zero.info.solver == "gram" and torch.isfinite(zero.A).all()
    assert torch.equal(zero.B, torch.zeros_like(zero.B)) and zero.info.sigma_tail == 0.0
    E_full = (W - rtn_quantize(W, "mxint3").to(D64)).T
    assert full.info.solver == "gram" and _rel(full.A @ full.B, E_full) < 1e-10


def test_gram_route_with_eigh_factor_and_solver_errors(gaussian_problem):
    W, Wq, Sigma = gaussian_problem
    res = qera_exact(W, Wq, Sigma, 8, factor="eigh")
    assert res.info.solver == "gram"
    assert _rel(res.A @ res.B, _reference_ab(W, Wq, Sigma, 8)[0]) < 1e-10
    assert qera_exact(W, Wq, Sigma, 8, svd_dtype="float32").info.solver == "svd"
    with pytest.raises(ValueError, match="solver"):
        qera_exact(W, Wq, Sigma, 8, solver="lanczos")
    with pytest.raises(ValueError, match="float64"):
        qera_exact(W, Wq, Sigma, 8, solver="gram", svd_dtype="float32")


# ---- singular R: damped fall-back -----------------------------------------------------------

def test_singular_rxx_zero_channel_damps_with_warning(gaussian_problem):
    W, Wq, Sigma = gaussian_problem
    R = Sigma.clone()
    R[5, :] = 0
    R[:, 5] = 0
    with pytest.warns(DampingWarning, match="Cholesky"):
        res = reconstruct("qera-exact", W, Wq, {"rxx": R}, 8, layer="blk0.q")
    A, B = res
    assert torch.isfinite(A).all() and torch.isfinite(B).all()
    assert res.info.damping in (1e-8, 1e-6, 1e-4, 1e-2)
    assert [e["kind"] for e in res.info.events] == ["damping"]
    assert res.info.events[0] == {"stage": "qera-exact", "layer": "blk0.q", "kind": "damping",
                                  "value": res.info.damping}
    jstar = _jstar(W, Wq, R, 8)
    assert output_error(W, Wq, R, A, B) == pytest.approx(jstar, rel=1e-6)
    assert res.info.j == pytest.approx(jstar, rel=1e-6)


def test_singular_rxx_fewer_samples_than_channels(gaussian_problem):
    W, Wq, Sigma = gaussian_problem
    g = _gen(11)
    X = torch.randn(40, 64, generator=g, dtype=D64) @ torch.linalg.cholesky(Sigma).T
    R = X.T @ X / 40  # rank 40 < 64
    with pytest.warns(QuantWarning):
        res = reconstruct("qera-exact", W, Wq, {"rxx": R}, 8)
    A, B = res
    assert torch.isfinite(A).all() and torch.isfinite(B).all()
    assert res.info.damping is not None
    jstar = _jstar(W, Wq, R, 8)
    assert output_error(W, Wq, R, A, B) == pytest.approx(jstar, rel=1e-6)


def test_eigh_factor_clamps_and_records(gaussian_problem):
    W, Wq, Sigma = gaussian_problem
    R = Sigma.clone()
    R[3, :] = 0
    R[:, 3] = 0
    with pytest.warns(DampingWarning):
        res = qera_exact(W, Wq, R, 8, factor="eigh")
    assert res.info.eig_clamped >= 1
    assert res.info.events[0]["kind"] == "eig_clamped"
    assert output_error(W, Wq, R, *res) == pytest.approx(_jstar(W, Wq, R, 8), rel=1e-6)


def test_qera_approx_floors_dead_channels():
    W, Wq, _ = _distinct_error(seed=8)
    r = torch.rand(40, generator=_gen(9), dtype=D64) + 0.5
    r[[2, 7]] = 0
    with pytest.warns(QuantWarning, match="floored"):
        res = qera_approx(W, Wq, r, 4)
    assert res.info.floored_channels == 2
    assert torch.isfinite(res.A).all()


# ---- factor formats, shapes, dtypes, errors ------------------------------------------------

@pytest.mark.parametrize("axes,expect", [("reduction", (0, 0)), ("code", (1, 1))])
def test_factor_formats_use_hwsim_formats_along_the_requested_axes(axes, expect):
    g = _gen(21)
    W = torch.randn(40, 64, generator=g)
    Wq = rtn_quantize(W, "bfp4")
    s = torch.rand(64, generator=g) + 0.5
    res = reconstruct("l2qer", W, Wq, {"mean_abs_lqer": s}, 32, fmt_a="bfp8", fmt_b="bfp8",
                      axes=axes)
    raw_A, raw_B = reconstruct("l2qer", W, Wq, {"mean_abs_lqer": s}, 32)
    assert res.info.axes == expect
    assert torch.equal(res.A, F.fake_quant(raw_A, "bfp8", axis=expect[0]))
    assert torch.equal(res.B, F.fake_quant(raw_B, "bfp8", axis=expect[1]))
    assert res.info.qa.axis == expect[0] and res.info.qb.axis == expect[1]
    assert res.info.qa.spec == F.get("bfp8")
    assert res.A.dtype == torch.float32 and res.B.dtype == torch.float32


def test_quantized_factors_j_is_reported_under_R(gaussian_problem):
    W, Wq, Sigma = gaussian_problem
    res = reconstruct("qera-exact", W, Wq, {"rxx": Sigma}, 8, fmt_b="mxint8")
    assert res.info.j == pytest.approx(output_error(W, Wq, Sigma, *res), rel=1e-9)
    assert res.info.j >= res.info.sigma_tail * (1 - 1e-12)


def test_rank_zero_gives_empty_factors():
    W, Wq, _ = _distinct_error()
    for method, stats in [("lqer", None), ("l2qer", {"mean_abs_lqer": torch.ones(40)}),
                          ("qera-approx", {"mean_sq": torch.ones(40)}),
                          ("qera-exact", {"rxx": torch.eye(40, dtype=D64)})]:
        A, B = reconstruct(method, W, Wq, stats, 0)
        assert A.shape == (40, 0) and B.shape == (0, 30)


def test_bad_method_name_lists_valid_methods():
    W, Wq, _ = _distinct_error()
    with pytest.raises(ValueError) as exc:
        reconstruct("qera", W, Wq, {}, 4)
    for m in stage_names("reconstruction"):
        assert m in str(exc.value)


@pytest.mark.parametrize("kwargs,match", [
    (dict(method="l2qer", stats={}), "mean_abs_lqer"),
    (dict(method="qera-approx", stats={"rxx": None}), "mean_sq"),
    (dict(method="qera-exact", stats=None), "rxx"),
    (dict(method="lqer", stats=None, rank=31), "rank=31"),
    (dict(method="lqer", stats=None, rank=-1), "rank"),
    (dict(method="lqer", stats=None, axes="diagonal"), "axes"),
    (dict(method="lqer", stats=None, svd_dtype="float16"), "svd_dtype"),
    (dict(method="qera-exact", stats={"rxx": torch.eye(39)}), r"\[40, 40\]"),
    (dict(method="l2qer", stats={"mean_abs_lqer": torch.zeros(40)}), "> 0"),
])
def test_bad_arguments_raise_clear_errors(kwargs, match):
    W, Wq, _ = _distinct_error()
    kwargs = dict(kwargs)
    method, stats, rank = kwargs.pop("method"), kwargs.pop("stats"), kwargs.pop("rank", 4)
    with pytest.raises(ValueError, match=match):
        reconstruct(method, W, Wq, stats, rank, **kwargs)


def test_non_finite_weight_is_refused_naming_the_layer():
    W, Wq, _ = _distinct_error()
    W[3, 4] = float("nan")
    with pytest.raises(ValueError, match="layer 'blk3.up'"):
        reconstruct("lqer", W, Wq, None, 4, layer="blk3.up")


def test_output_dtype_and_unpacking():
    g = _gen(4)
    W = torch.randn(16, 24, generator=g)
    Wq = rtn_quantize(W, "mxint4")
    res = reconstruct("lqer", W, Wq, None, 4)
    A, B = res
    assert A.dtype == torch.float32 and res.A is A and res.B is B
    assert res.info.method == "lqer" and res.info.rank == 4 and res.info.svd_dtype == "float32"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean run emits no warning
        reconstruct("qera-exact", W, Wq, {"rxx": torch.eye(24, dtype=D64)}, 4)


def test_public_entry_point_is_the_function():
    import hwsim.quant

    assert hwsim.quant.reconstruct is reconstruct
    W, Wq, _ = _distinct_error()
    A, B = hwsim.quant.reconstruct("lqer", W, Wq, None, 3)
    assert A.shape == (40, 3)
