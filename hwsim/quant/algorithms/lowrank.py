"""Low-rank error reconstruction, shared parts: result types, truncated SVD, factor quantizers.

Conventions (docs/spec/algorithms.md §0): W, W̃ are [out, in]; the error is ``E = (W − W̃)ᵀ`` [in, out];
the branch adds ``(x A) B`` with ``A`` [in, k] and ``B`` [k, out].
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from .common import record

#: Block axes of the quantized factors. "reduction": each factor blocked along its GEMM
#: reduction axis (A along in = axis 0, B along k = axis 0), which the exact matmul core needs.
#: "code": the axes of the released LQER W4A8 scripts (A along k, B along out: blocks run along
#: each stored row, axis 1), fake mode only (docs/spec/algorithms.md §4.3 step 4).
AXES = {"reduction": (0, 0), "code": (1, 1)}


@dataclass(frozen=True)
class ReconstructInfo:
    """What one reconstruction did (all fall-backs included). Read it from ``result.info``.

    Attributes:
        method: "lqer", "l2qer", "qera-approx" or "qera-exact".
        layer: the layer name given by the caller (or None).
        rank: k.
        shape: (out, in) of the weight.
        svd_dtype: dtype the SVD actually ran in ("float64" after a float32 retry).
        factor: QERA-exact factorisation ("cholesky", "eigh", "sqrtm"); None otherwise.
        solver: QERA-exact: how the top-k singular triplets of L E were computed: "gram"
            (eigendecomposition of the smaller Gram matrix, certified) or "svd" (full SVD);
            None for the other methods.
        gram_bound: QERA-exact with the Gram route: the a-posteriori bound on the angles
            between the computed and the exact top-k singular subspaces of L E (the route falls
            back to the full SVD above ``qera.GRAM_TOL``, then ``solver`` is "svd"); None when
            the Gram route was not tried.
        damping: QERA-exact: the relative damping δ that made R factorisable
            (R + δ·mean(diag R)·I), None when R was used as given.
        eig_clamped: QERA-exact with factor="eigh": number of eigenvalues raised to 1e-10·λ_max.
        floored_channels: QERA-approx: channels with r_i = 0 floored to 1e-8·max(r).
        w_err_fro: ‖W − W̃‖_F.
        err_l1: ‖S (A_q B_q − E)‖₁ / numel in the method's scaled space (S = I for LQER,
            diag(s) for L²QER, diag(r) for QERA-approx, the factor L for QERA-exact).
        j0, j: QERA-exact only: expected output error J(0) and J(A_q B_q) under R
            (the R given, also when damping was needed); None for the other methods.
        sigma_tail: Σ_{i>k} σ_i² of the scaled error S E (the rank-k residual before factor
            quantization; for QERA-exact this is the analytic minimum J*).
        runtime_s: wall time of the reconstruction in seconds.
        events: recorded fall-backs, each ``{"stage", "layer", "kind", "value"}``.
        qa, qb: the quantized factors as ``hwsim.formats.QTensor`` (codes + scales) when
            ``fmt_a`` / ``fmt_b`` were given, else None.
        axes: (axis_a, axis_b) block axes used for the factor formats.
    """

    method: str
    layer: str | None
    rank: int
    shape: tuple[int, int]
    svd_dtype: str
    factor: str | None = None
    solver: str | None = None
    gram_bound: float | None = None
    damping: float | None = None
    eig_clamped: int = 0
    floored_channels: int = 0
    w_err_fro: float = 0.0
    err_l1: float = 0.0
    j0: float | None = None
    j: float | None = None
    sigma_tail: float = 0.0
    runtime_s: float = 0.0
    events: tuple = ()
    qa: Any = field(default=None, compare=False, repr=False)
    qb: Any = field(default=None, compare=False, repr=False)
    axes: tuple[int, int] = (0, 0)


class Reconstruction(tuple):
    """``(A, B)`` that also carries ``.info`` (a :class:`ReconstructInfo`).

    Unpacks like a plain pair: ``A, B = reconstruct(...)``; ``.A``, ``.B`` and ``.info`` name
    the parts.
    """

    def __new__(cls, A: torch.Tensor, B: torch.Tensor, info: ReconstructInfo):
        self = super().__new__(cls, (A, B))
        self.info = info
        return self

    @property
    def A(self) -> torch.Tensor:
        return self[0]

    @property
    def B(self) -> torch.Tensor:
        return self[1]

    def __repr__(self) -> str:
        A, B = self
        return (f"Reconstruction(A={tuple(A.shape)}, B={tuple(B.shape)}, method="
                f"{self.info.method!r}, rank={self.info.rank})")


def truncated_svd(M: torch.Tensor, k: int, dtype: torch.dtype, events: list[dict], stage: str,
                  layer: str | None):
    """Economy SVD of M in ``dtype``; returns (U_k, σ_k, Vh_k, σ_all, dtype_used).

    A float32 SVD that fails (LinAlgError or non-finite factors) is retried in float64 and the
    retry is recorded (docs/spec/algorithms.md §4.3 numerics).
    """
    def _svd(dt):
        U, S, Vh = torch.linalg.svd(M.to(dt), full_matrices=False)
        if not (torch.isfinite(U).all() and torch.isfinite(S).all() and torch.isfinite(Vh).all()):
            raise torch.linalg.LinAlgError("non-finite SVD factors")
        return U, S, Vh

    try:
        U, S, Vh = _svd(dtype)
        used = dtype
    except (torch.linalg.LinAlgError, RuntimeError) as exc:
        if dtype == torch.float64:
            raise ValueError(f"{stage}: SVD failed in float64 for layer {layer!r}: {exc}") from exc
        record(events, stage, layer, "svd_float64_retry", str(exc),
               f"float32 SVD failed ({exc}); retried in float64")
        U, S, Vh = _svd(torch.float64)
        used = torch.float64
    return U[:, :k], S[:k], Vh[:k, :], S, used


def quantize_factor(X: torch.Tensor, fmt, axis: int, name: str):
    """Quantize a factor with ``hwsim.formats`` along ``axis``; returns (dequantized, QTensor)."""
    if fmt is None:
        return X, None
    import hwsim.formats as F

    if X.numel() == 0:
        return X, None
    q = F.quantize(X.to(torch.float32).contiguous(), fmt, axis=axis)
    return q.dequantize().to(X.dtype), q


def resolve_axes(axes) -> tuple[int, int]:
    """'reduction' | 'code' | (axis_a, axis_b) -> (axis_a, axis_b) with axes in {0, 1}."""
    if isinstance(axes, str):
        if axes not in AXES:
            raise ValueError(f"axes={axes!r} is not valid: expected one of {sorted(AXES)} "
                             f"or a pair (axis_a, axis_b) with axes in {{0, 1}}")
        return AXES[axes]
    try:
        a, b = (int(v) for v in axes)
    except Exception:
        raise ValueError(f"axes={axes!r} is not valid: expected one of {sorted(AXES)} or a pair "
                         f"(axis_a, axis_b)") from None
    if a not in (0, 1, -1, -2) or b not in (0, 1, -1, -2):
        raise ValueError(f"axes={axes!r}: each axis must be 0 or 1 (A is [in, k], B is [k, out])")
    return a % 2, b % 2


def lowrank_from_scaled(E: torch.Tensor, s: torch.Tensor | None, k: int, dtype: torch.dtype,
                        events: list[dict], stage: str, layer: str | None):
    """``A = S⁻¹ U_k``, ``B = Σ_k V_kᵀ`` from ``SVD(S E)`` with ``S = diag(s)`` (s None: S = I).

    One code path for LQER (S = I), L²QER and QERA-approx: with S = I the scaling multiplies
    by 1.0 and divides by 1.0, which is exact, so LQER is L²QER with S = I bit for bit.
    Returns (A, B, σ_all, dtype_used); A, B in ``dtype_used``.
    """
    E = E.to(dtype)
    s_col = (torch.ones(E.shape[0], dtype=dtype) if s is None else s.to(dtype)).unsqueeze(1)
    U, Sk, Vh, S_all, used = truncated_svd(s_col * E, k, dtype, events, stage, layer)
    A = U / s_col.to(used)
    B = Sk.unsqueeze(1) * Vh
    return A, B, S_all, used


class Timer:
    """Tiny wall-clock helper."""

    def __init__(self):
        self.t0 = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0


def finish(method: str, layer: str | None, W: torch.Tensor, Wq: torch.Tensor, E: torch.Tensor,
           A: torch.Tensor, B: torch.Tensor, S_all: torch.Tensor, k: int, svd_used: torch.dtype,
           residual_fn, fmt_a, fmt_b, axes, events: list[dict], timer: Timer,
           j_from_residual: bool = False, sigma_tail: float | None = None,
           **info_fields) -> Reconstruction:
    """Quantize the factors, compute the diagnostics and wrap everything in a Reconstruction.

    ``residual_fn(A_q, B_q)`` returns the [in, out] residual ``S (A_q B_q − E)`` in the method's
    scaled space (S·D, or L·D for QERA-exact, formed as (L A_q) B_q − L E). With
    ``j_from_residual`` the squared Frobenius norm of that residual is stored as ``info.j``.
    ``sigma_tail`` (Σ_{i>k} σ_i², when the caller computed it without all singular values)
    overrides the sum over ``S_all[k:]``; ``S_all`` is then unused.
    Outputs are float64 when W is float64, float32 otherwise.
    """
    out_dtype = torch.float64 if W.dtype == torch.float64 else torch.float32
    axis_a, axis_b = resolve_axes(axes)
    A_q, qa = quantize_factor(A, fmt_a, axis_a, "A")
    B_q, qb = quantize_factor(B, fmt_b, axis_b, "B")
    n = E.numel()
    D = residual_fn(A_q.to(E.dtype), B_q.to(E.dtype))
    err_l1 = float(D.abs().sum()) / n if n else 0.0
    if j_from_residual:
        info_fields["j"] = float(torch.sum(D.to(torch.float64) ** 2))
    info = ReconstructInfo(
        method=method, layer=layer, rank=k, shape=(int(W.shape[0]), int(W.shape[1])),
        svd_dtype=str(svd_used).replace("torch.", ""),
        w_err_fro=float(torch.linalg.vector_norm((W.to(torch.float64) - Wq.to(torch.float64)))),
        err_l1=err_l1,
        sigma_tail=(float(torch.sum(S_all.to(torch.float64)[k:] ** 2)) if sigma_tail is None
                    else float(sigma_tail)),
        events=tuple(events), qa=qa, qb=qb, axes=(axis_a, axis_b),
        runtime_s=timer.elapsed(), **info_fields)
    return Reconstruction(A_q.to(out_dtype), B_q.to(out_dtype), info)


def diag_residual(s_col: torch.Tensor | None, E: torch.Tensor):
    """residual_fn for a diagonal scaling S = diag(s) (None: S = I)."""
    SE = E if s_col is None else s_col * E

    def fn(A_q, B_q):
        AB = A_q @ B_q
        return (AB if s_col is None else s_col * AB) - SE

    return fn
