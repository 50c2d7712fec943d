"""LQER and L²QER (docs/spec/algorithms.md §4.3): low-rank reconstruction of the weight error from an
SVD of the (activation-scaled) error, as in the LQER code (ChengZhang-98/lqer).

    E = (W − W̃)ᵀ;   U Σ Vᵀ = SVD(S E);   A = S⁻¹ U_{:, :k};   B = Σ_{:k} V_{:, :k}ᵀ

LQER is S = I; L²QER takes ``s`` from the ``mean_abs_lqer`` statistic (§2.2, already
finalised: clamped at 1e-4 and normalised by sqrt(min·max)). Both run through one code path.
"""

from __future__ import annotations

from .common import check_channel_vector, check_problem
from .lowrank import Reconstruction, Timer, diag_residual, finish, lowrank_from_scaled


def l2qer(W, Wq, s, rank: int = 32, *, fmt_a=None, fmt_b=None, axes="reduction",
          svd_dtype="float32", layer: str | None = None, _method: str = "l2qer") -> Reconstruction:
    """L²QER on one weight. ``s`` [in] > 0 (None: S = I, i.e. LQER).

    Args:
        W, Wq: full-precision and dequantized weight, [out, in].
        s: per-input-channel scale from ``mean_abs_lqer`` [in], or None for LQER.
        rank: k, 0 <= k <= min(in, out); paper default 32.
        fmt_a, fmt_b: hwsim format names/specs for A and B (None: high precision). Paper: bfp8.
        axes: "reduction" (A along in, B along k: exact-mode capable, the ``-hw`` presets) or
            "code" (A along k, B along out: the released LQER scripts), or (axis_a, axis_b).
        svd_dtype: "float32" (reference) or "float64"; a failed float32 SVD retries in float64.
    Returns:
        ``Reconstruction`` (unpacks to (A [in, k], B [k, out])) with ``.info``.
    """
    timer = Timer()
    W, Wq, k, dtype = check_problem(W, Wq, rank, svd_dtype, layer)
    n_out, n_in = W.shape
    if s is not None:
        s = check_channel_vector(s, "mean_abs_lqer", n_in, layer)
        if bool((s <= 0).any()):
            raise ValueError(f"mean_abs_lqer must be > 0 everywhere (it is clamped at 1e-4 when "
                             f"finalised, docs/spec/algorithms.md §2.2); min is {float(s.min())}")
    events: list[dict] = []
    E = (W.to(dtype) - Wq.to(dtype)).T
    A, B, S_all, used = lowrank_from_scaled(E, s, k, dtype, events, _method, layer)
    s_col = None if s is None else s.to(E.dtype).unsqueeze(1)
    return finish(_method, layer, W, Wq, E, A, B, S_all, k, used, diag_residual(s_col, E),
                  fmt_a, fmt_b, axes, events, timer)


def lqer(W, Wq, rank: int = 32, *, fmt_a=None, fmt_b=None, axes="reduction",
         svd_dtype="float32", layer: str | None = None) -> Reconstruction:
    """LQER: plain SVD of the weight error (L²QER with S = I, the same code path)."""
    return l2qer(W, Wq, None, rank, fmt_a=fmt_a, fmt_b=fmt_b, axes=axes, svd_dtype=svd_dtype,
                 layer=layer, _method="lqer")
