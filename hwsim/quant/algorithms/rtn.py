"""RTN (docs/spec/algorithms.md §4.1): round-to-nearest of a weight with the format's own scale rule.

Encoding is entirely ``hwsim.formats.quantize``: the weight [out, in] is blocked along ``in``
(axis -1, the GEMM reduction axis of ``nn.Linear``), scales follow the format's rule, elements
use the format's rounding (RNE unless the name says otherwise). No clipping by default (the
"w-only" baselines of LQER and QERA are plain RTN); a fixed clip ratio is a format modifier
(``int4_g128_c90``). Clip search is not provided (see docs/quant_algorithms.md).
"""

from __future__ import annotations

import numpy as np
import torch

from ..stages import register_stage
from .common import as_tensor, check_finite


def encode(W, fmt, axis: int = -1):
    """``hwsim.formats.quantize`` of a weight, returning a QTensor whose codes live in the
    input's array library (torch in -> torch codes when the torch codec is installed)."""
    import hwsim.formats as F

    if isinstance(W, torch.Tensor):
        try:
            from hwsim.formats import torch_ops  # noqa: F401
        except ImportError:  # torch codec not available: numba codec, codes moved to torch
            q = F.quantize(W.detach().to(torch.float32).cpu().numpy(), fmt, axis=axis)
            return to_torch_qtensor(q)
        return F.quantize(W.detach().to(torch.float32), fmt, axis=axis)
    return F.quantize(np.asarray(W, dtype=np.float32), fmt, axis=axis)


def to_torch_qtensor(q):
    """QTensor with numpy codes -> the same QTensor with torch codes (if the torch codec
    exists; otherwise returned unchanged so that ``dequantize`` keeps working)."""
    import hwsim.formats as F

    try:
        from hwsim.formats import torch_ops  # noqa: F401
    except ImportError:
        return q
    t = lambda a: None if a is None else torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    return F.QTensor.from_codes(q.spec, t(q.codes), t(q.scales), t(q.zero_points),
                                q.tensor_scale, q.shape, q.axis)


def dequant_torch(q, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Dequantized values of a QTensor as a torch tensor."""
    v = q.dequantize()
    if not isinstance(v, torch.Tensor):
        v = torch.from_numpy(np.ascontiguousarray(v))
    return v.to(dtype)


def rtn_quantize(W, fmt, *, axis: int = -1, return_qtensor: bool = False,
                 layer: str | None = None):
    """Round-to-nearest quantization of a weight [out, in] (blocks/groups along ``axis``).

    Args:
        W: weight, torch tensor (numpy accepted), [out, in].
        fmt: ``hwsim.formats`` name or spec ("mxint4", "bfp4", "int4_g128_asym", ...).
        axis: block axis; -1 (``in``, the reduction axis) for ``nn.Linear`` weights.
        return_qtensor: also return the QTensor (codes + scales).
    Returns:
        Wq, the dequantized weight (float32, or float64 when W is float64; values are fp32
        exact), or ``(Wq, qtensor)`` with ``return_qtensor``.
    """
    W = as_tensor(W, "W")
    check_finite(W, "W", layer)
    q = encode(W, fmt, axis=axis)
    Wq = dequant_torch(q, torch.float64 if W.dtype == torch.float64 else torch.float32)
    return (Wq, q) if return_qtensor else Wq


@register_stage("rtn", kind="rounding")
def rtn_stage(W: torch.Tensor, fmt, stats, *, layer: str, cache=None):
    """round to nearest with the format's own scale rule (§4.1)"""
    # the numba codec on CPU: bit-identical to ``encode``'s torch codec and faster
    from ..qlinear import quantize_np

    check_finite(W, "W", layer)
    return quantize_np(W, fmt, axis=-1), {}
