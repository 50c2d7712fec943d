"""QERA-approx and QERA-exact (docs/spec/algorithms.md §4.4): rank-k C = A B minimising the expected
output error J(C) = tr((C − E)ᵀ R (C − E)), E = (W − W̃)ᵀ, R = E[xᵀx].

QERA-exact uses any factor L with LᵀL = R: J(C) = ‖L(C − E)‖_F², so by Eckart–Young
C* = L⁻¹ [L E]_k and J* = Σ_{i>k} σ_i(L E)². The paper's symmetric square root (scipy ``sqrtm``)
is one such L; a Cholesky factor gives the same C* (whenever σ_k > σ_{k+1}) far more cheaply.

Only the top-k singular triplets of M = L E are needed. The default route ("gram") takes them
from the eigendecomposition (LAPACK ``dsyevr``, top q = 2k eigenpairs only) of the smaller Gram
matrix (MᵀM, or M Mᵀ when out > in), refines them by a Rayleigh–Ritz SVD of M on that
subspace, and certifies the result with an a-posteriori (Wedin) bound on the subspace angles;
when the bound exceeds ``GRAM_TOL`` (a Gram matrix squares σ_1/σ_k, so extreme outlier channels
can cost accuracy) the full SVD of M is used instead and the fall-back is recorded as an event.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from ..stages import Option, register_stage
from ..threads import single_thread_blas
from .common import (DampingWarning, as_tensor, check_channel_vector, check_finite, check_problem,
                     output_error, record)
from .lowrank import (Reconstruction, Timer, diag_residual, finish, lowrank_from_scaled,
                      truncated_svd)
from .lqer import svd_option

#: Relative damping ladder for a Cholesky failure: R + δ·mean(diag R)·I (docs/spec/algorithms.md §4.4).
DAMPING_LADDER = (1e-8, 1e-6, 1e-4, 1e-2)
#: A Cholesky pivot F_ii² below this fraction of mean(diag R) counts as a failure (a singular R
#: can factor "successfully" with rounding-noise pivots, which would blow up L⁻¹).
PIVOT_RTOL = 1e-12
#: factor="eigh": eigenvalues below this fraction of λ_max are raised to it.
EIG_RTOL = 1e-10
#: QERA-approx: channels with r_i = 0 are floored to this fraction of max(r).
RMS_FLOOR = 1e-8
FACTORS = ("cholesky", "eigh", "sqrtm")
#: How the top-k singular triplets of M = L E are computed (``solver=``).
SOLVERS = ("gram", "svd")
#: Gram route: largest certified angle (radians, spectral norm) between the computed and the
#: exact top-k left/right singular subspaces of L E; above it the full SVD is used (recorded).
GRAM_TOL = 1e-8
#: Gram route: Ritz vectors computed beyond k, q = min(m, k + max(k, GRAM_EXTRA_MIN)).
GRAM_EXTRA_MIN = 8
_UNIT_ROUNDOFF = 2.0 ** -53


def qera_approx(W, Wq, r, rank: int = 32, *, fmt_a=None, fmt_b=None, axes="reduction",
                svd_dtype="float64", layer: str | None = None) -> Reconstruction:
    """QERA-approx (Theorem 2): S = diag(r), r the per-channel RMS from ``mean_sq`` [in].

    ``r`` is the finalised ``mean_sq`` statistic, r_i = sqrt(Σ x_i² / n) (docs/spec/algorithms.md §2.2);
    no clamp, no normalisation; r_i = 0 is floored to 1e-8·max(r) and recorded.
    Returns a ``Reconstruction`` (A [in, k], B [k, out], ``.info``).
    """
    timer = Timer()
    W, Wq, k, dtype = check_problem(W, Wq, rank, svd_dtype, layer)
    n_out, n_in = W.shape
    r = check_channel_vector(r, "mean_sq", n_in, layer).to(torch.float64)
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

    def attempt(M):
        F, info = torch.linalg.cholesky_ex(M)
        if int(info) != 0:
            return None
        piv = torch.diagonal(F)
        finite = math.isfinite(float(F.sum())) or bool(torch.isfinite(F).all())  # sum: 1 pass
        if not finite or float((piv * piv).min()) < PIVOT_RTOL * mean_diag:
            return None
        return F

    F = attempt(R)
    if F is not None:
        return F, None
    eye = torch.eye(R.shape[0], dtype=R.dtype, device=R.device)
    for delta in DAMPING_LADDER:
        F = attempt(R + (delta * mean_diag) * eye)
        if F is not None:
            record(events, "qera-exact", layer, "damping", delta,
                   f"R is singular or indefinite; Cholesky succeeded with "
                   f"R + {delta:g}·mean(diag R)·I", DampingWarning)
            return F, delta
    raise ValueError(f"qera-exact: Cholesky of R failed for layer {layer!r} even with damping "
                     f"{DAMPING_LADDER[-1]:g}·mean(diag R); R is not a valid second moment")


#: Block size below which the triangular product / Gram matrix are plain matmuls.
_BLOCK_LEAF = 256


def _upper_matmul(T: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """T @ X for an upper-triangular T [n, n], skipping its zero blocks (a recursive trmm:
    9/16 of the flops of the dense product at n = 2048; torch has no trmm)."""
    n = T.shape[0]
    if n <= _BLOCK_LEAF:
        return T @ X
    out = torch.empty(n, X.shape[1], dtype=torch.promote_types(T.dtype, X.dtype),
                      device=X.device)

    def rec(i0: int, i1: int) -> None:
        o = out[i0:i1]
        if i1 - i0 <= _BLOCK_LEAF:
            torch.matmul(T[i0:i1, i0:i1], X[i0:i1], out=o)
            return
        h = (i0 + i1) // 2
        rec(i0, h)
        rec(h, i1)
        o[: h - i0].addmm_(T[i0:h, h:i1], X[h:i1])

    rec(0, n)
    return out


def _gram_upper(X: torch.Tensor) -> torch.Tensor:
    """XᵀX [n, n] with only the upper triangle (and the diagonal blocks) computed: the blocks
    strictly below the diagonal are left unset (a recursive syrk, 9/16 of the dense flops at
    n = 2048)."""
    n = X.shape[1]
    if n <= _BLOCK_LEAF:
        return X.T @ X
    G = torch.empty(n, n, dtype=X.dtype, device=X.device)

    def rec(j0: int, j1: int) -> None:
        if j1 - j0 <= _BLOCK_LEAF:
            torch.matmul(X[:, j0:j1].T, X[:, j0:j1], out=G[j0:j1, j0:j1])
            return
        h = (j0 + j1) // 2
        rec(j0, h)
        rec(h, j1)
        torch.matmul(X[:, j0:h].T, X[:, h:j1], out=G[j0:h, h:j1])

    rec(0, n)
    return G


def _spectral_norm(X: torch.Tensor) -> float:
    """‖X‖₂ of a tall [n, k] matrix from its k×k Gram matrix (k is small)."""
    return math.sqrt(max(float(torch.linalg.eigvalsh(X.T @ X)[-1]), 0.0))


def gram_topk(M: torch.Tensor, k: int):
    """Top-k singular triplets of M [in, out] (float64) from its smaller Gram matrix, certified.

    1. ``G = MᵀM`` [out, out] if out <= in, else ``G = M Mᵀ`` [in, in] (float64; one
       triangle, by blocks).
    2. The q = min(m, k + max(k, 8)) largest eigenpairs of G (LAPACK ``dsyevr`` with an index
       range: one tridiagonal reduction, then only q eigenvectors; m = min(in, out)).
    3. Rayleigh–Ritz on that subspace, without squaring: SVD of ``M Z`` [in, q] (right side)
       or ``Zᵀ M`` [q, out] (left side) gives U_k, σ_k and V_k.
    4. Certificate (Wedin's sin Θ theorem, residual form): with R = M V_k − U_k Σ_k,
       S = Mᵀ U_k − V_k Σ_k and σ_{k+1} ≤ (λ̂_{k+1} + η)^½ (η = 4·m·u·λ_1, u = 2⁻⁵³: the usual
       normwise estimate of the error of forming G and of the eigensolver), the angles
       between the computed and the exact top-k left and right singular subspaces are both
       ≤ ``max(‖R‖₂, ‖S‖₂) / (σ_k − σ_{k+1})``; ∞ when that gap is not positive (σ_k =
       σ_{k+1}: the rank-k optimum is not unique). The bound is 0 when k = m or when
       ‖M − M V_k V_kᵀ‖_F <= 4·m·u·‖M‖_F (rank(M) <= k to working precision: [M]_k = M,
       whatever basis was found).

    Returns ``(U_k [in, k], σ_k [k], Vh_k [k, out], tail, bound)`` with ``tail`` =
    ‖M − M V_k V_kᵀ‖_F² (= Σ_{i>k} σ_i² for the exact V_k) and ``bound`` the certified angle.
    """
    import scipy.linalg

    n_in, n_out = M.shape
    m = min(n_in, n_out)
    dt = torch.float64
    if k == 0:
        return (M.new_zeros(n_in, 0), M.new_zeros(0), M.new_zeros(0, n_out),
                float(torch.linalg.vector_norm(M)) ** 2, 0.0)
    right = n_out <= n_in
    q = min(m, k + max(k, GRAM_EXTRA_MIN))
    G = _gram_upper(M if right else M.T)  # upper triangle of MᵀM (or M Mᵀ) only
    # G.numpy().T is the Fortran-ordered view scipy wants; its lower triangle, the one read
    # (lower=True), is G's upper triangle. No copy is made; G is overwritten.
    with single_thread_blas():
        lam, Z = scipy.linalg.eigh(G.cpu().numpy().T, lower=True, overwrite_a=True,
                                   check_finite=False, subset_by_index=[m - q, m - 1],
                                   driver="evr")
    del G
    lam = torch.from_numpy(np.ascontiguousarray(lam[::-1])).to(dt)  # descending
    Z = torch.from_numpy(np.ascontiguousarray(Z[:, ::-1])).to(device=M.device, dtype=dt)
    if right:
        Uh, S, Wh = torch.linalg.svd(M @ Z, full_matrices=False)
        U, V = Uh[:, :k], Z @ Wh[:k].T
    else:
        Wl, S, Vh = torch.linalg.svd(Z.T @ M, full_matrices=False)
        U, V = Z @ Wl[:, :k], Vh[:k].T.contiguous()
    Sk = S[:k]
    Y = M @ V  # = U_k Σ_k up to rounding
    res_u = _spectral_norm(Y - U * Sk)  # R = M V_k − U_k Σ_k
    res_v = _spectral_norm(M.T @ U - V * Sk)  # S = Mᵀ U_k − V_k Σ_k
    tail = float(torch.linalg.vector_norm(M - Y @ V.T)) ** 2
    eps_m = 4.0 * m * _UNIT_ROUNDOFF
    if m <= k or tail <= (eps_m * float(torch.linalg.vector_norm(M))) ** 2:
        # k = m, or rank(M) <= k to working precision: [M]_k = M, whatever basis was found
        bound = 0.0
    else:
        lam1 = max(float(lam[0]), float(S[0]) ** 2)
        gap = float(Sk[-1]) - math.sqrt(max(float(lam[k]), 0.0) + eps_m * lam1)
        bound = max(res_u, res_v) / gap if gap > 0 else math.inf
    return U, Sk, V.T, tail, bound


def qera_exact(W, Wq, R, rank: int = 32, *, factor: str = "cholesky", fmt_a=None, fmt_b=None,
               axes="reduction", svd_dtype="float64", solver: str | None = None,
               layer: str | None = None, compute_j: bool = True) -> Reconstruction:
    """QERA-exact (Theorem 1) with a factor L of R (LᵀL = R), all in float64.

    Args:
        W, Wq: [out, in]. R: the finalised ``rxx`` statistic E[xᵀx], [in, in].
        factor: "cholesky" (default: R = F Fᵀ, L = Fᵀ, A by a triangular solve), "eigh"
            (L = Λ^½ Qᵀ, eigenvalues below 1e-10·λ_max clamped and counted) or "sqrtm"
            (scipy's symmetric square root, the reference route; slow, for checks/benchmarks).
        svd_dtype: SVD of L E, "float64" (default) or "float32".
        solver: top-k singular triplets of L E: "gram" (eigendecomposition of the smaller
            Gram matrix plus a Rayleigh–Ritz SVD, certified by an a-posteriori bound, see
            :func:`gram_topk`; falls back to "svd" above ``GRAM_TOL``, recorded as a
            "gram_fallback" event without a warning) or "svd" (full economy SVD). Default:
            "gram" for cholesky/eigh in float64, "svd" for the sqrtm reference route and for
            ``svd_dtype="float32"``. "gram" needs float64.
        compute_j: fill ``info.j0`` / ``info.j`` (J under the R given).
    A Cholesky failure (singular/indefinite R) retries with R + δ·mean(diag R)·I,
    δ in 1e-8, 1e-6, 1e-4, 1e-2, emitting a ``DampingWarning`` and recording δ in
    ``info.damping`` and ``info.events``; "sqrtm" uses the same ladder to decide the damping.
    """
    timer = Timer()
    W, Wq, k, dtype = check_problem(W, Wq, rank, svd_dtype, layer)
    n_out, n_in = W.shape
    if factor not in FACTORS:
        raise ValueError(f"factor={factor!r} is not valid: expected one of {list(FACTORS)}")
    if solver is None:
        solver = "gram" if factor != "sqrtm" and dtype == torch.float64 else "svd"
    if solver not in SOLVERS:
        raise ValueError(f"solver={solver!r} is not valid: expected one of {list(SOLVERS)}")
    if solver == "gram" and dtype != torch.float64:
        raise ValueError("solver='gram' needs svd_dtype='float64' (a Gram matrix squares the "
                         "condition number); use solver='svd' for a float32 SVD")
    R = as_tensor(R, "rxx").to(torch.float64)
    if tuple(R.shape) != (n_in, n_in):
        raise ValueError(f"rxx must be [in, in] = [{n_in}, {n_in}], got {tuple(R.shape)}")
    check_finite(R, "rxx", layer)
    R_given = R
    R = (R + R.T.contiguous()).mul_(0.5)  # exactly symmetric; the blocked transpose is faster
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
            LE = _upper_matmul(F.T, E)
            apply_L = lambda D: F.T @ D  # noqa: E731
            solve_L = lambda U: torch.linalg.solve_triangular(F.T, U, upper=True)  # noqa: E731
        else:  # sqrtm, the reference route
            import scipy.linalg

            Rd = R if damping is None else R + (damping * float(torch.diagonal(R).mean())) * \
                torch.eye(n_in, dtype=torch.float64)
            Ls = scipy.linalg.sqrtm(Rd.numpy())
            Ls = torch.from_numpy(np.ascontiguousarray(np.real(Ls)).astype(np.float64))
            LE = Ls @ E
            apply_L = lambda D: Ls @ D  # noqa: E731
            solve_L = lambda U: torch.linalg.solve(Ls, U)  # noqa: E731

    gram_bound = tail = None
    if solver == "gram":
        try:
            U, Sk, Vh, tail, gram_bound = gram_topk(LE, k)
        except (np.linalg.LinAlgError, torch.linalg.LinAlgError, ValueError):
            gram_bound = math.inf
        if not gram_bound <= GRAM_TOL:
            # Recorded without a warning: the result is the full-SVD one, only time is lost.
            record(events, "qera-exact", layer, "gram_fallback", gram_bound)
            solver, tail = "svd", None
        else:
            S_all, used = Sk, torch.float64
    if solver == "svd":
        U, Sk, Vh, S_all, used = truncated_svd(LE, k, dtype, events, "qera-exact", layer)
    A = solve_L(U.to(torch.float64))
    B = Sk.to(torch.float64).unsqueeze(1) * Vh.to(torch.float64)

    def residual(A_q, B_q):  # L (A_q B_q − E) = (L A_q) B_q − L E, cheap for small k
        return apply_L(A_q) @ B_q - LE

    exact_L = damping is None and eig_clamped == 0
    res = finish("qera-exact", layer, W, Wq, E, A, B, S_all, k, used, residual, fmt_a, fmt_b,
                 axes, events, timer, j_from_residual=compute_j and exact_L, sigma_tail=tail,
                 factor=factor, solver=solver, gram_bound=gram_bound, damping=damping,
                 eig_clamped=eig_clamped,
                 j0=float(torch.linalg.vector_norm(LE)) ** 2 if compute_j and exact_L else None)
    if compute_j and not exact_L:  # L factors a perturbed R: evaluate J under the R given
        A_q, B_q = res
        j0 = output_error(W, Wq, R_given)
        j = output_error(W, Wq, R_given, A_q, B_q)
        res = Reconstruction(A_q, B_q, dataclasses.replace(res.info, j0=j0, j=j,
                                                           runtime_s=timer.elapsed()))
    return res


@register_stage("qera-approx", kind="reconstruction", stats=("mean_sq",), options=(svd_option("float64"),))
def qera_approx_stage(W, Wq, stats, rank: int, *, fmt_a, fmt_b, axes, layer: str, svd_dtype: str) -> Reconstruction:
    """SVD of the error scaled by each input channel's RMS (QERA Theorem 2, §4.4)"""
    return qera_approx(W, Wq, stats["mean_sq"], rank, fmt_a=fmt_a, fmt_b=fmt_b, axes=axes, svd_dtype=svd_dtype,
                       layer=layer)


@register_stage("qera-exact", kind="reconstruction", stats=("rxx",), options=(
    Option("factor", "cholesky", "factor L of R with LᵀL = R", choices=FACTORS),
    svd_option("float64"),
    Option("solver", None, "top-k triplets of L E (None: 'gram' in float64, else 'svd')",
           choices=(None,) + SOLVERS)))
def qera_exact_stage(W, Wq, stats, rank: int, *, fmt_a, fmt_b, axes, layer: str, factor: str, svd_dtype: str,
                     solver: str | None) -> Reconstruction:
    """the rank-k optimum of the expected output error under R_xx (QERA Theorem 1, §4.4)"""
    return qera_exact(W, Wq, stats["rxx"], rank, factor=factor, fmt_a=fmt_a, fmt_b=fmt_b, axes=axes,
                      svd_dtype=svd_dtype, solver=solver, layer=layer)
