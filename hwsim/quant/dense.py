"""Dense float32 products of hwsim's fake-mode forward: ``dense_linear`` (``QLinear``) and
``dense_linears`` (the full-precision block passes of calibration), through oneDNN where it is
faster than torch's MKL path and applies (docs/quant.md, "Fake-mode product")."""

from __future__ import annotations

from contextlib import contextmanager
from functools import partial

import torch
import torch.nn.functional as Fn
from torch import nn

__all__ = ["ONEDNN_MIN_ROWS", "dense_linear", "dense_linears"]

#: float32 CPU products from this many rows up run through oneDNN (``dense_linear``)
ONEDNN_MIN_ROWS = 256


def _onednn_linear():
    op = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)
    return op if op is not None and torch.backends.mkldnn.is_available() else None


_ONEDNN_LINEAR = _onednn_linear()


def dense_linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """x·wᵀ + b (x [..., in], w [out, in]) as ``torch.nn.functional.linear`` computes it, through
    oneDNN's linear (torch's own ``mkldnn._linear_pointwise``, torch's threads) for float32 CPU
    calls of at least ``ONEDNN_MIN_ROWS`` rows that need no gradient.

    Why: torch's float32 ``linear`` calls MKL's sgemm, which on the AMD EPYC machines hwsim is
    measured on reaches 118-154 GFLOP/s at SmolLM2's shapes ([1024, 576] x [576, 1536] and
    back, 2 threads) against 164-199 for oneDNN's. Both are float32 products with float32
    accumulation in an order neither defines (they differ by float32 rounding, about 1e-7 of
    the output's scale). Calls that need a gradient (TesseraQ, OSTQuant training), other dtypes
    and devices, small calls and strided operands keep ``Fn.linear``: oneDNN runs its naive
    reference kernel on a weight whose rows are padded (a [576, 640] buffer sliced to 576
    columns); the CI-sized TesseraQ test, about a minute, ran for over 8 minutes that way.
    """
    if (_ONEDNN_LINEAR is None or x.dtype != torch.float32 or w.dtype != torch.float32
            or x.device.type != "cpu" or w.device.type != "cpu" or x.numel() < ONEDNN_MIN_ROWS * max(x.shape[-1], 1)
            or not (x.is_contiguous() and w.is_contiguous())
            or (torch.is_grad_enabled() and (x.requires_grad or w.requires_grad
                                             or (b is not None and b.requires_grad)))
            or (b is not None and (b.dtype != torch.float32 or b.device.type != "cpu" or not b.is_contiguous()))):
        return Fn.linear(x, w, b)
    return _ONEDNN_LINEAR(x, w, b, "none", [], "")


def _dense_forward(linear: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return dense_linear(x, linear.weight, linear.bias)


@contextmanager
def dense_linears(module: nn.Module):
    """Inside the block, every plain ``nn.Linear`` under ``module`` computes through
    ``dense_linear`` (the full-precision block passes of calibration: QERA-exact's statistics,
    TesseraQ's targets). Hooks still run; the instances' own ``forward`` is restored on exit,
    also after an error."""
    swapped = [m for m in module.modules() if type(m) is nn.Linear and "forward" not in m.__dict__]
    for m in swapped:
        m.forward = partial(_dense_forward, m)
    try:
        yield module
    finally:
        for m in swapped:
            del m.forward
