"""The ``fold_norms`` transform (docs/spec/algorithms.md §1.4): norm gains folded into the linears they feed."""

from __future__ import annotations

from ..model import fold_norms
from ..stages import register_stage


@register_stage("fold_norms", kind="transform")
def fold_norms_stage(model, adapter, ctx) -> None:
    """fold norm gains (and LayerNorm biases) into the next linears, in float64 (§1.4)"""
    fold_norms(model, adapter)
