"""Shared plumbing of the quantization algorithms: warnings, recorded events, input checks.

Every numerical fall-back of an algorithm (damping, eigenvalue clamping, SVD retried in float64,
floored channels, saturation) emits a :class:`QuantWarning` **and** is recorded as an event
``{"stage", "layer", "kind", "value"}`` (docs/spec/algorithms.md §0), which the caller copies into its
stage report.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch


class QuantWarning(UserWarning):
    """A numerical fall-back taken by a quantization algorithm (also recorded as an event)."""


class DampingWarning(QuantWarning):
    """A factorisation needed a diagonal perturbation (damping) or an eigenvalue clamp."""


def record(events: list[dict], stage: str, layer: str | None, kind: str, value: Any,
           message: str | None = None, category: type[Warning] = QuantWarning) -> None:
    """Append ``{stage, layer, kind, value}`` to ``events`` and, when ``message`` is given, warn."""
    events.append({"stage": stage, "layer": layer, "kind": kind, "value": value})
    if message is not None:
        where = f" (layer {layer})" if layer else ""
        warnings.warn(f"{stage}{where}: {message}", category, stacklevel=3)


def as_tensor(x, name: str, dtype: torch.dtype | None = None) -> torch.Tensor:
    """torch tensor from a tensor / numpy array / nested list (copied to CPU only if needed)."""
    if isinstance(x, torch.Tensor):
        t = x.detach()
    elif isinstance(x, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(x))
    else:
        try:
            t = torch.as_tensor(x)
        except Exception as exc:  # pragma: no cover - message only
            raise ValueError(f"{name}: expected a torch tensor or numpy array, got "
                             f"{type(x).__name__}") from exc
    if not (t.is_floating_point() or dtype is not None):
        raise ValueError(f"{name}: expected a floating-point tensor, got dtype {t.dtype}")
    return t.to(dtype) if dtype is not None else t


def check_finite(t: torch.Tensor, name: str, layer: str | None) -> None:
    """Raise ValueError naming the tensor, the layer and the first non-finite position."""
    # Fast path: a NaN or ±Inf anywhere makes the sum non-finite, so a finite sum proves all
    # elements finite (one pass instead of isfinite's several); an overflowing sum falls
    # through to the element-wise check.
    if t.numel() == 0 or np.isfinite(float(t.sum())):
        return
    bad = ~torch.isfinite(t)
    if bool(bad.any()):
        idx = int(torch.nonzero(bad.reshape(-1))[0])
        where = f" of layer {layer!r}" if layer else ""
        raise ValueError(f"{name}{where} has a non-finite value at flat index {idx} "
                         f"({t.reshape(-1)[idx].item()}); refusing to quantize")


def check_weight_pair(W, Wq, layer: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate W, W̃ ([out, in], same shape, finite) and return them as tensors."""
    W = as_tensor(W, "W")
    Wq = as_tensor(Wq, "Wq")
    if W.dim() != 2:
        raise ValueError(f"W must be a 2-D [out, in] weight, got shape {tuple(W.shape)}")
    if tuple(Wq.shape) != tuple(W.shape):
        raise ValueError(f"Wq must have the shape of W {tuple(W.shape)}, got {tuple(Wq.shape)}")
    check_finite(W, "W", layer)
    check_finite(Wq, "Wq", layer)
    return W, Wq


def check_rank(rank, n_in: int, n_out: int) -> int:
    """0 <= rank <= min(in, out), an int."""
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)):
        raise ValueError(f"rank must be an int in [0, min(in, out)] = [0, {min(n_in, n_out)}], "
                         f"got {rank!r}")
    rank = int(rank)
    if not 0 <= rank <= min(n_in, n_out):
        raise ValueError(f"rank={rank} is out of range: valid is 0..min(in, out) = "
                         f"0..{min(n_in, n_out)} for a weight of in={n_in}, out={n_out}")
    return rank


def check_problem(W, Wq, rank, svd_dtype, layer: str | None):
    """The validation every reconstruction starts with: (W, Wq, k, svd dtype)."""
    W, Wq = check_weight_pair(W, Wq, layer)
    n_out, n_in = W.shape
    return W, Wq, check_rank(rank, n_in, n_out), parse_dtype(svd_dtype, "svd_dtype")


def check_channel_vector(v, name: str, n_in: int, layer: str | None) -> torch.Tensor:
    """A finite per-input-channel statistic [in] (any shape with in entries) as a flat tensor."""
    v = as_tensor(v, name).reshape(-1)
    if v.numel() != n_in:
        raise ValueError(f"{name} must have in={n_in} entries, got {v.numel()}")
    check_finite(v, name, layer)
    return v


_DTYPES = {"float32": torch.float32, "float64": torch.float64,
           torch.float32: torch.float32, torch.float64: torch.float64}


def parse_dtype(value, name: str) -> torch.dtype:
    """'float32' / 'float64' / torch dtype -> torch dtype (ValueError otherwise)."""
    try:
        return _DTYPES[value]
    except (KeyError, TypeError):
        raise ValueError(f"{name}={value!r} is not valid: expected 'float32' or 'float64'") from None


def output_error(W, Wq, R, A=None, B=None) -> float:
    """Expected output error J = E_x ||x (W̃ᵀ + A B) − x Wᵀ||² = tr((C − E)ᵀ R (C − E)), float64.

    W, Wq: [out, in]; R: [in, in] (uncentred second moment E[xᵀx]); A: [in, k], B: [k, out]
    (both None: J(0), the rounding-only error, which is also GPTQ's calibration objective
    ``tr((W − W̃) R (W − W̃)ᵀ)``).
    """
    W64 = as_tensor(W, "W").to(torch.float64)
    Wq64 = as_tensor(Wq, "Wq").to(torch.float64)
    R64 = as_tensor(R, "R").to(torch.float64)
    D = (Wq64 - W64).T  # C − E with C = 0: (W̃ − W)ᵀ, [in, out]
    if A is not None or B is not None:
        if A is None or B is None:
            raise ValueError("output_error: give both A and B, or neither")
        D = D + as_tensor(A, "A").to(torch.float64) @ as_tensor(B, "B").to(torch.float64)
    return float(torch.sum(D * (R64 @ D)))
