"""LQER and L²QER (docs/spec/algorithms.md §4.3): low-rank reconstruction of the weight error from an
SVD of the (activation-scaled) error, as in the LQER code (ChengZhang-98/lqer).

    E = (W − W̃)ᵀ;   U Σ Vᵀ = SVD(S E);   A = S⁻¹ U_{:, :k};   B = Σ_{:k} V_{:, :k}ᵀ

LQER is S = I; L²QER takes ``s`` from the ``mean_abs_lqer`` statistic (§2.2, already
finalised: clamped at 1e-4 and normalised by sqrt(min·max)). Both run through one code path.
"""

from __future__ import annotations

from ..stages import Option, register_stage
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


#: the SVD precision option of the reconstruction stages (docs/spec/algorithms.md §4.3–4.4)
SVD_DTYPES = ("float32", "float64")


def svd_option(default: str) -> Option:
    return Option("svd_dtype", default, "precision of the SVD (a failed float32 SVD retries in float64)",
                  choices=SVD_DTYPES)


@register_stage("lqer", kind="reconstruction", options=(svd_option("float32"),))
def lqer_stage(W, Wq, stats, rank: int, *, fmt_a, fmt_b, axes, layer: str, svd_dtype: str) -> Reconstruction:
    """plain SVD of the weight error, S = I (§4.3)"""
    return lqer(W, Wq, rank, fmt_a=fmt_a, fmt_b=fmt_b, axes=axes, svd_dtype=svd_dtype, layer=layer)


@register_stage("l2qer", kind="reconstruction", stats=("mean_abs_lqer",), options=(svd_option("float32"),))
def l2qer_stage(W, Wq, stats, rank: int, *, fmt_a, fmt_b, axes, layer: str, svd_dtype: str) -> Reconstruction:
    """SVD of the error scaled by the mean |x| of each input channel (§4.3)"""
    return l2qer(W, Wq, stats["mean_abs_lqer"], rank, fmt_a=fmt_a, fmt_b=fmt_b, axes=axes, svd_dtype=svd_dtype,
                 layer=layer)
