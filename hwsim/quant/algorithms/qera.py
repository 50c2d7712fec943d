"""QERA-approx and QERA-exact (algorithms.md §4.4): rank-k C = A B minimising the expected
output error J(C) = tr((C − E)ᵀ R (C − E)), E = (W − W̃)ᵀ, R = E[xᵀx].

QERA-exact uses any factor L with LᵀL = R: J(C) = ‖L(C − E)‖_F², so by Eckart–Young
C* = L⁻¹ [L E]_k and J* = Σ_{i>k} σ_i(L E)². The paper's symmetric square root (scipy ``sqrtm``)
is one such L; a Cholesky factor gives the same C* (whenever σ_k > σ_{k+1}) far more cheaply.
"""

from __future__ import annotations

import dataclasses

import torch

from .common import (DampingWarning, as_tensor, check_finite, check_rank, check_weight_pair,
                     parse_dtype, record)
from .common import output_error
from .lowrank import (Reconstruction, Timer, diag_residual, finish, lowrank_from_scaled,
                      truncated_svd)

#: Relative damping ladder for a Cholesky failure: R + δ·mean(diag R)·I (algorithms.md §4.4).
DAMPING_LADDER = (1e-8, 1e-6, 1e-4, 1e-2)
#: A Cholesky pivot F_ii² below this fraction of mean(diag R) counts as a failure (a singular R
#: can factor "successfully" with rounding-noise pivots, which would blow up L⁻¹).
PIVOT_RTOL = 1e-12
#: factor="eigh": eigenvalues below this fraction of λ_max are raised to it.
EIG_RTOL = 1e-10
#: QERA-approx: channels with r_i = 0 are floored to this fraction of max(r).
RMS_FLOOR = 1e-8
FACTORS = ("cholesky", "eigh", "sqrtm")


def qera_approx(W, Wq, r, rank: int = 32, *, fmt_a=None, fmt_b=None, axes="reduction",
                svd_dtype="float64", layer: str | None = None) -> Reconstruction:
    """QERA-approx (Theorem 2): S = diag(r), r the per-channel RMS from ``mean_sq`` [in].

    ``r`` is the finalised ``mean_sq`` statistic, r_i = sqrt(Σ x_i² / n) (algorithms.md §2.2);
    no clamp, no normalisation; r_i = 0 is floored to 1e-8·max(r) and recorded.
    Returns a ``Reconstruction`` (A [in, k], B [k, out], ``.info``).
    """
    timer = Timer()
    W, Wq = check_weight_pair(W, Wq, layer)
    n_out, n_in = W.shape
    k = check_rank(rank, n_in, n_out)
    dtype = parse_dtype(svd_dtype, "svd_dtype")
    r = as_tensor(r, "mean_sq").reshape(-1).to(torch.float64)
    if r.numel() != n_in:
        raise ValueError(f"mean_sq must have in={n_in} entries, got {r.numel()}")
    check_finite(r, "mean_sq", layer)
    if bool((r < 0).any()):
        raise ValueError(f"mean_sq holds per-channel RMS values and must be >= 0; "
                         f"min is {float(r.min())}")
    rmax = float(r.max()) if r.numel() else 0.0
    if rmax <= 0:
        raise ValueError(f"qera-approx: mean_sq is zero for every input channel of layer "
                         f"{layer!r} (no calibration signal)")
    events: list[dict] = []
    dead = r == 0
    n_dead = int(dead.sum())
    if n_dead:
        r = torch.where(dead, torch.full_like(r, RMS_FLOOR * rmax), r)
        record(events, "qera-approx", layer, "floored_channels", n_dead,
               f"{n_dead} input channel(s) with zero RMS floored to {RMS_FLOOR:g}·max(r)")
    E = (W.to(torch.float64) - Wq.to(torch.float64)).T
    A, B, S_all, used = lowrank_from_scaled(E, r, k, dtype, events, "qera-approx", layer)
    return finish("qera-approx", layer, W, Wq, E, A, B, S_all, k, used,
                  diag_residual(r.unsqueeze(1), E), fmt_a, fmt_b, axes, events, timer,
                  floored_channels=n_dead)


def _cholesky_ladder(R: torch.Tensor, events: list[dict], layer: str | None):
    """Lower Cholesky factor of R, damping R + δ·mean(diag R)·I along the ladder if needed."""
    mean_diag = float(torch.diagonal(R).mean())
    if not mean_diag > 0:
        raise ValueError(f"qera-exact: R of layer {layer!r} has mean diagonal {mean_diag}; "
                         f"it is not a second-moment matrix of any signal")
    eye = torch.eye(R.shape[0], dtype=R.dtype)

    def attempt(M):
        F, info = torch.linalg.cholesky_ex(M)
        if int(info) != 0:
            return None
        piv = torch.diagonal(F)
        if not bool(torch.isfinite(F).all()) or float((piv * piv).min()) < PIVOT_RTOL * mean_diag:
            return None
        return F

    F = attempt(R)
    if F is not None:
        return F, None
    for delta in DAMPING_LADDER:
        F = attempt(R + (delta * mean_diag) * eye)
        if F is not None:
            record(events, "qera-exact", layer, "damping", delta,
                   f"R is singular or indefinite; Cholesky succeeded with "
                   f"R + {delta:g}·mean(diag R)·I", DampingWarning)
            return F, delta
    raise ValueError(f"qera-exact: Cholesky of R failed for layer {layer!r} even with damping "
                     f"{DAMPING_LADDER[-1]:g}·mean(diag R); R is not a valid second moment")


def qera_exact(W, Wq, R, rank: int = 32, *, factor: str = "cholesky", fmt_a=None, fmt_b=None,
               axes="reduction", svd_dtype="float64", layer: str | None = None,
               compute_j: bool = True) -> Reconstruction:
    """QERA-exact (Theorem 1) with a factor L of R (LᵀL = R), all in float64.

    Args:
        W, Wq: [out, in]. R: the finalised ``rxx`` statistic E[xᵀx], [in, in].
        factor: "cholesky" (default: R = F Fᵀ, L = Fᵀ, A by a triangular solve), "eigh"
            (L = Λ^½ Qᵀ, eigenvalues below 1e-10·λ_max clamped and counted) or "sqrtm"
            (scipy's symmetric square root, the reference route; slow, for checks/benchmarks).
        svd_dtype: SVD of L E, "float64" (default) or "float32".
        compute_j: fill ``info.j0`` / ``info.j`` (J under the R given).
    A Cholesky failure (singular/indefinite R) retries with R + δ·mean(diag R)·I,
    δ in 1e-8, 1e-6, 1e-4, 1e-2, emitting a ``DampingWarning`` and recording δ in
    ``info.damping`` and ``info.events``; "sqrtm" uses the same ladder to decide the damping.
    """
    timer = Timer()
    W, Wq = check_weight_pair(W, Wq, layer)
    n_out, n_in = W.shape
    k = check_rank(rank, n_in, n_out)
    dtype = parse_dtype(svd_dtype, "svd_dtype")
    if factor not in FACTORS:
        raise ValueError(f"factor={factor!r} is not valid: expected one of {list(FACTORS)}")
    R = as_tensor(R, "rxx").to(torch.float64)
    if tuple(R.shape) != (n_in, n_in):
        raise ValueError(f"rxx must be [in, in] = [{n_in}, {n_in}], got {tuple(R.shape)}")
    check_finite(R, "rxx", layer)
    R_given = R
    R = 0.5 * (R + R.T)
    events: list[dict] = []
    E = (W.to(torch.float64) - Wq.to(torch.float64)).T
    damping = None
    eig_clamped = 0

    if factor == "eigh":
        lam, Q = torch.linalg.eigh(R)
        lam_max = float(lam[-1])
        if not lam_max > 0:
            raise ValueError(f"qera-exact: R of layer {layer!r} has no positive eigenvalue")
        floor = EIG_RTOL * lam_max
        low = lam < floor
        eig_clamped = int(low.sum())
        if eig_clamped:
            record(events, "qera-exact", layer, "eig_clamped", eig_clamped,
                   f"{eig_clamped} eigenvalue(s) of R below {EIG_RTOL:g}·λ_max clamped",
                   DampingWarning)
        sq = torch.sqrt(torch.clamp(lam, min=floor)).unsqueeze(1)
        LE = sq * (Q.T @ E)
        apply_L = lambda D: sq * (Q.T @ D)  # noqa: E731
        solve_L = lambda U: Q @ (U / sq)  # noqa: E731
    else:
        F, damping = _cholesky_ladder(R, events, layer)
        if factor == "cholesky":
            LE = F.T @ E
            apply_L = lambda D: F.T @ D  # noqa: E731
            solve_L = lambda U: torch.linalg.solve_triangular(F.T, U, upper=True)  # noqa: E731
        else:  # sqrtm, the reference route
            import numpy as np
            import scipy.linalg

            Rd = R if damping is None else R + (damping * float(torch.diagonal(R).mean())) * \
                torch.eye(n_in, dtype=torch.float64)
            Ls = scipy.linalg.sqrtm(Rd.numpy())
            Ls = torch.from_numpy(np.ascontiguousarray(np.real(Ls)).astype(np.float64))
            LE = Ls @ E
            apply_L = lambda D: Ls @ D  # noqa: E731
            solve_L = lambda U: torch.linalg.solve(Ls, U)  # noqa: E731

    U, Sk, Vh, S_all, used = truncated_svd(LE, k, dtype, events, "qera-exact", layer)
    A = solve_L(U.to(torch.float64))
    B = Sk.to(torch.float64).unsqueeze(1) * Vh.to(torch.float64)

    def residual(A_q, B_q):  # L (A_q B_q − E) = (L A_q) B_q − L E, cheap for small k
        return apply_L(A_q) @ B_q - LE

    exact_L = damping is None and eig_clamped == 0
    res = finish("qera-exact", layer, W, Wq, E, A, B, S_all, k, used, residual, fmt_a, fmt_b,
                 axes, events, timer, j_from_residual=compute_j and exact_L, factor=factor,
                 damping=damping, eig_clamped=eig_clamped,
                 j0=float(torch.sum(LE * LE)) if compute_j and exact_L else None)
    if compute_j and not exact_L:  # L factors a perturbed R: evaluate J under the R given
        A_q, B_q = res
        j0 = output_error(W, Wq, R_given)
        j = output_error(W, Wq, R_given, A_q, B_q)
        res = Reconstruction(A_q, B_q, dataclasses.replace(res.info, j0=j0, j=j,
                                                           runtime_s=timer.elapsed()))
    return res
