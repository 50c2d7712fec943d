"""``reconstruct``: the error-reconstruction methods as one pure function on one weight matrix.

    A, B = reconstruct("qera-exact", W, Wq, {"rxx": R}, rank=32)
    y ≈ x @ Wq.T + x @ A @ B          # W, Wq: [out, in]; A: [in, rank]; B: [rank, out]

The result is a :class:`~hwsim.quant.algorithms.Reconstruction`, a pair that also carries
``.info`` (:class:`~hwsim.quant.algorithms.ReconstructInfo`: damping used, clamped eigenvalues,
floored channels, SVD retries, J, codes of the quantized factors, recorded events).
Semantics: docs/spec/algorithms.md §4.3–4.4.
"""

from __future__ import annotations

from typing import Mapping

from .algorithms.lowrank import Reconstruction
from .algorithms.lqer import l2qer, lqer
from .algorithms.qera import qera_approx, qera_exact

#: method -> statistic it reads (names of docs/spec/algorithms.md §2.2), None for none.
METHODS: dict[str, str | None] = {
    "lqer": None,
    "l2qer": "mean_abs_lqer",
    "qera-approx": "mean_sq",
    "qera-exact": "rxx",
}


def _stat(stats: Mapping | None, key: str, method: str):
    if stats is None or key not in stats or stats[key] is None:
        have = sorted(stats) if stats else []
        raise ValueError(f"method {method!r} needs the calibration statistic {key!r} in stats "
                         f"(docs/spec/algorithms.md §2.2); got keys {have}")
    return stats[key]


def reconstruct(method: str, W, Wq, stats: Mapping | None, rank: int = 32, *, fmt_a=None,
                fmt_b=None, axes="reduction", svd_dtype=None, factor: str = "cholesky",
                layer: str | None = None) -> Reconstruction:
    """Low-rank correction (A, B) of the rounding error of one linear layer.

    Args:
        method: "lqer" (plain SVD, S = I), "l2qer" (S from ``mean_abs_lqer``), "qera-approx"
            (S from the per-channel RMS ``mean_sq``), "qera-exact" (factor of ``rxx``).
        W, Wq: full-precision and dequantized weight, [out, in] torch tensors (numpy accepted).
        stats: the layer's finalised calibration statistics (docs/spec/algorithms.md §2.2):
            ``mean_abs_lqer`` [in] (running max of per-batch mean |x|, clamped at 1e-4 and
            normalised), ``mean_sq`` [in] (r = sqrt(Σx²/n), the per-channel RMS),
            ``rxx`` [in, in] (R = XᵀX/n, float64). Only the one the method needs is read;
            "lqer" accepts None.
        rank: k, 0 <= k <= min(in, out) (paper default 32).
        fmt_a, fmt_b: ``hwsim.formats`` names/specs for A and B (None: high precision).
            Paper settings: LQER/L²QER ``bfp8`` for both (with ``axes="code"``); QERA keeps A in
            high precision and B bypassed (both None).
        axes: block axes of the factor formats: "reduction" (default: A along in, B along k,
            the GEMM reduction axes, usable by the exact matmul core), "code" (A along k, B
            along out, the released LQER scripts, fake mode only), or (axis_a, axis_b).
        svd_dtype: "float32" or "float64"; default float32 for LQER/L²QER (as the reference),
            float64 for the QERA methods.
        factor: QERA-exact factorisation: "cholesky" (default), "eigh" or "sqrtm" (reference).
        layer: layer name used in warnings, errors and recorded events.

    Returns:
        ``Reconstruction``: unpacks to ``(A, B)`` (A [in, k], B [k, out], the dequantized
        factors when formats are given; float64 if W is float64, else float32) and carries
        ``.info``.

    Raises:
        ValueError: unknown method (the message lists the valid ones), missing statistic,
            bad shapes, rank out of range, non-finite inputs.
    """
    if not isinstance(method, str) or method.lower() not in METHODS:
        raise ValueError(f"unknown reconstruction method {method!r}: valid methods are "
                         f"{list(METHODS)}")
    method = method.lower()
    common = dict(fmt_a=fmt_a, fmt_b=fmt_b, axes=axes, layer=layer)
    if method == "lqer":
        return lqer(W, Wq, rank, svd_dtype=svd_dtype or "float32", **common)
    if method == "l2qer":
        return l2qer(W, Wq, _stat(stats, "mean_abs_lqer", method), rank,
                     svd_dtype=svd_dtype or "float32", **common)
    if method == "qera-approx":
        return qera_approx(W, Wq, _stat(stats, "mean_sq", method), rank,
                           svd_dtype=svd_dtype or "float64", **common)
    return qera_exact(W, Wq, _stat(stats, "rxx", method), rank, factor=factor,
                      svd_dtype=svd_dtype or "float64", **common)
