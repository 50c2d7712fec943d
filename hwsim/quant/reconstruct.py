"""``reconstruct``: the error-reconstruction stages as one pure function on one weight matrix.

    A, B = reconstruct("qera-exact", W, Wq, {"rxx": R}, rank=32)
    y ≈ x @ Wq.T + x @ A @ B          # W, Wq: [out, in]; A: [in, rank]; B: [rank, out]

The result is a :class:`~hwsim.quant.algorithms.Reconstruction`, a pair that also carries
``.info`` (:class:`~hwsim.quant.algorithms.ReconstructInfo`: damping used, clamped eigenvalues,
floored channels, SVD retries, J, codes of the quantized factors, recorded events).
Every registered reconstruction stage (``hwsim.quant.stages``) is a valid method.
Semantics: docs/spec/algorithms.md §4.3–4.4.
"""

from __future__ import annotations

from typing import Any, Mapping

from .algorithms.lowrank import Reconstruction
from .stages import get_stage, stage_names


def _stat(stats: Mapping | None, key: str, method: str):
    if stats is None or key not in stats or stats[key] is None:
        have = sorted(stats) if stats else []
        raise ValueError(f"method {method!r} needs the calibration statistic {key!r} in stats "
                         f"(docs/spec/algorithms.md §2.2); got keys {have}")
    return stats[key]


def reconstruct(method: str, W, Wq, stats: Mapping | None, rank: int = 32, *, fmt_a=None,
                fmt_b=None, axes="reduction", layer: str | None = None, **options: Any) -> Reconstruction:
    """Low-rank correction (A, B) of the rounding error of one linear layer.

    Args:
        method: a reconstruction stage: "lqer" (plain SVD, S = I), "l2qer" (S from
            ``mean_abs_lqer``), "qera-approx" (S from the per-channel RMS ``mean_sq``),
            "qera-exact" (factor of ``rxx``), or any registered one.
        W, Wq: full-precision and dequantized weight, [out, in] torch tensors (numpy accepted).
        stats: the layer's finalised calibration statistics (docs/spec/algorithms.md §2.2):
            ``mean_abs_lqer`` [in] (running max of per-batch mean |x|, clamped at 1e-4 and
            normalised), ``mean_sq`` [in] (r = sqrt(Σx²/n), the per-channel RMS),
            ``rxx`` [in, in] (R = XᵀX/n, float64). Only those the method needs are read;
            "lqer" accepts None.
        rank: k, 0 <= k <= min(in, out) (paper default 32).
        fmt_a, fmt_b: ``hwsim.formats`` names/specs for A and B (None: high precision).
            Paper settings: LQER/L²QER ``bfp8`` for both (with ``axes="code"``); QERA keeps A in
            high precision and B bypassed (both None).
        axes: block axes of the factor formats: "reduction" (default: A along in, B along k,
            the GEMM reduction axes, usable by the exact matmul core), "code" (A along k, B
            along out, the released LQER scripts, fake mode only), or (axis_a, axis_b).
        layer: layer name used in warnings, errors and recorded events.
        options: the stage's options, e.g. ``svd_dtype`` ("float32" default for LQER/L²QER as
            the reference, "float64" for QERA), ``factor`` for QERA-exact ("cholesky" default,
            "eigh", "sqrtm"); ``None`` values mean the default.

    Returns:
        ``Reconstruction``: unpacks to ``(A, B)`` (A [in, k], B [k, out], the dequantized
        factors when formats are given; float64 if W is float64, else float32) and carries
        ``.info``.

    Raises:
        ValueError: unknown method (the message lists the valid ones), unknown option, missing
            statistic, bad shapes, rank out of range, non-finite inputs.
    """
    name = method.lower() if isinstance(method, str) else method
    valid = stage_names("reconstruction")
    if not isinstance(name, str) or name not in valid:
        raise ValueError(f"unknown reconstruction method {method!r}: valid methods are {list(valid)}")
    stage = get_stage(name)
    stats = dict(stats or {})
    for key in stage.stats:
        _stat(stats, key, name)
    opts = stage.resolve_options({k: v for k, v in options.items() if v is not None})
    return stage.fn(W, Wq, stats, rank, fmt_a=fmt_a, fmt_b=fmt_b, axes=axes, layer=layer, **opts)
