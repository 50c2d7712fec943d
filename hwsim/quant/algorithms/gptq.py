"""GPTQ (algorithms.md §4.2): column-wise rounding with second-order error feedback.

Reference: IST-DASLab/gptq (``GPTQ.fasterquant``). hwsim choices (§8): block exponents of
MXINT/BFP fixed from the unquantized W before the sweep; static groups with act_order; a
damping ladder on Cholesky failure; lazy integer groups read the exactly-current weights
(pending updates of the running lazy batch included), so the result does not depend on the
lazy-batch size.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from .common import as_tensor, check_finite, record
from .fixed_grid import FixedGrid, saturation_event
from .lowrank import Timer

#: percdamp multipliers tried after the first Cholesky failure (0.1, 1.0, 10 × mean diag H
#: with the default 0.01), algorithms.md §4.2 "Failure handling".
DAMP_RETRIES = 3


@dataclass(frozen=True)
class GPTQInfo:
    """What one GPTQ run did.

    qtensor: the codes emitted by the sweep (``hwsim.formats.QTensor``, blocks along in).
    loss: Σ (w_i − q_i)² / U_ii² / 2 summed over the layer (the reference's per-layer loss).
    percdamp: the relative damping finally used (0.01 unless Cholesky needed more).
    saturated: elements pushed past their fixed block/group range by error feedback (clamped).
    dead_columns: inputs with H_ii = 0 (their weights were zeroed).
    perm: act_order column permutation (original indices in sweep order) or None.
    events: recorded fall-backs ``{"stage", "layer", "kind", "value"}``.
    runtime_s: wall time in seconds.
    w_err_fro: ‖W − W̃‖_F (W after dead-input zeroing).
    objective: tr((W − W̃) H (W − W̃)ᵀ) under the H given (undamped), GPTQ's calibration
        objective (= J(0) of algorithms.md §4.0 when H = R).
    """

    qtensor: Any = field(repr=False)
    loss: float
    percdamp: float
    saturated: int
    dead_columns: int
    perm: tuple | None = field(default=None, repr=False)
    events: tuple = ()
    runtime_s: float = 0.0
    w_err_fro: float = 0.0
    objective: float = 0.0


def _inverse_factor(H: torch.Tensor, percdamp: float, events: list, layer: str | None):
    """U = chol_upper(H⁻¹) of H + λI, λ = percdamp·mean(diag H); ladder ×10 on failure."""
    mean_diag = float(torch.diagonal(H).mean())
    eye = torch.eye(H.shape[0], dtype=H.dtype)
    p = percdamp
    for attempt in range(DAMP_RETRIES + 1):
        Hd = H + (p * mean_diag) * eye
        L, info = torch.linalg.cholesky_ex(Hd)
        if int(info) == 0:
            Hinv = torch.cholesky_inverse(L)
            U, info2 = torch.linalg.cholesky_ex(Hinv, upper=True)
            if int(info2) == 0 and bool(torch.isfinite(U).all()):
                return U, p
        if attempt < DAMP_RETRIES:
            record(events, "gptq", layer, "damping_retry", p * 10,
                   f"Cholesky failed with percdamp={p:g}; retrying with {p * 10:g}")
            p *= 10
    raise ValueError(f"GPTQ: Cholesky of the damped Hessian failed for layer {layer!r} even "
                     f"with percdamp={p:g}; the calibration statistic is unusable")


def gptq_quantize(W, H, fmt, *, block_size: int = 128, damp: float = 0.01,
                  act_order: bool = False, static_groups: bool | None = None,
                  layer: str | None = None, return_info: bool = False):
    """GPTQ-quantize one weight [out, in] given its input second moment H [in, in].

    Args:
        W: weight [out, in] (float32 by default; float64 runs the sweep in float64).
        H: ``rxx`` (R = XᵀX/n) or GPTQ's Hessian 2T·R: any positive multiple gives the same
            result because the damping is relative to mean(diag H).
        fmt: ``hwsim.formats`` block format (MXINT/MXFP/BFP/NVFP4; scales fixed from the
            unquantized W) or scaled-integer format (tensor/channel scales fixed from W; groups
            lazily from the current weights, or static with act_order).
        block_size: lazy-batch width B (128); any value gives the same result up to rounding.
        damp: percdamp (0.01); multiplied by 10 up to three times if Cholesky fails.
        act_order: process columns by descending diag(H) (undone at the end).
        static_groups: integer groups from the unquantized W; default: equal to act_order.
        return_info: also return a :class:`GPTQInfo` (codes, loss, damping, saturation).
    Returns:
        Wq [out, in], the dequantized GPTQ weight (float32, or float64 when W is float64),
        or ``(Wq, info)``.
    """
    timer = Timer()
    import hwsim.formats as F

    spec = F.get(fmt)
    W = as_tensor(W, "W")
    if W.dim() != 2:
        raise ValueError(f"W must be a 2-D [out, in] weight, got shape {tuple(W.shape)}")
    n_out, n_in = W.shape
    H = as_tensor(H, "H").to(torch.float64)
    if tuple(H.shape) != (n_in, n_in):
        raise ValueError(f"H must be [in, in] = [{n_in}, {n_in}], got {tuple(H.shape)}")
    check_finite(W, "W", layer)
    check_finite(H, "H", layer)
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be a positive int, got {block_size!r}")
    if not (isinstance(damp, (int, float)) and damp > 0):
        raise ValueError(f"damp must be a positive number (percdamp, default 0.01), got {damp!r}")
    static = bool(act_order) if static_groups is None else bool(static_groups)
    if act_order and not static and getattr(spec, "granularity", None) == "group":
        raise ValueError("GPTQ: act_order with lazy (non-static) groups is not supported: groups "
                         "of permuted columns cannot be stored along in; use static_groups=True")
    dtype = torch.float64 if W.dtype == torch.float64 else torch.float32
    events: list[dict] = []

    W = W.detach().to(device="cpu", dtype=dtype).clone()
    H = H.cpu().clone()
    H_given = H.clone()
    dead = torch.diagonal(H) == 0
    n_dead = int(dead.sum())
    if n_dead:
        H[dead, dead] = 1.0
        W[:, dead] = 0
        record(events, "gptq", layer, "dead_columns", n_dead)
    if not float(torch.diagonal(H).mean()) > 0:
        raise ValueError(f"GPTQ: H of layer {layer!r} has a non-positive mean diagonal")

    W0 = W.clone()
    fg = FixedGrid(spec, W.to(torch.float32).numpy(), lazy_groups=not static)
    perm = None
    if act_order:
        perm = torch.argsort(torch.diagonal(H), descending=True, stable=True)
        W = W[:, perm]
        H = H[perm][:, perm]
    Uinv, p_used = _inverse_factor(H, float(damp), events, layer)
    Hinv = Uinv.to(dtype)
    order = perm.tolist() if perm is not None else list(range(n_in))

    with _single_numba_thread():
        Q, loss, n_sat = _sweep(W, Hinv, fg, order, block_size, dtype)

    if perm is not None:
        invperm = torch.argsort(perm)
        Q = Q[:, invperm]
    saturation_event(events, layer, n_sat)
    qt = fg.qtensor()
    from .rtn import to_torch_qtensor

    qt = to_torch_qtensor(qt)
    if not return_info:
        return Q
    D = W0.to(torch.float64) - Q.to(torch.float64)
    info = GPTQInfo(qtensor=qt, loss=loss, percdamp=p_used, saturated=n_sat, dead_columns=n_dead,
                    perm=None if perm is None else tuple(perm.tolist()), events=tuple(events),
                    runtime_s=timer.elapsed(), w_err_fro=float(torch.linalg.vector_norm(D)),
                    objective=float(torch.sum(D * (D @ H_given))))
    return Q, info


@contextmanager
def _single_numba_thread():
    """The sweep encodes one column (a few hundred values) per call: numba's parallel launch
    would cost far more than the work (tens of ms on a loaded machine), so use one thread."""
    try:
        import numba
    except ImportError:  # pragma: no cover
        yield
        return
    old = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(old)


def _sweep(W: torch.Tensor, Hinv: torch.Tensor, fg: FixedGrid, order: list[int], block_size: int,
           dtype: torch.dtype):
    """Lazy-batch GPTQ sweep (§4.2 step 6). W is modified in place. Returns (Q, loss, n_sat)."""
    n_in = W.shape[1]
    Q = torch.zeros_like(W)
    loss = 0.0
    n_sat = 0
    G = fg.G if fg.kind == "int" else None
    for i1 in range(0, n_in, block_size):
        i2 = min(i1 + block_size, n_in)
        count = i2 - i1
        W1 = W[:, i1:i2].clone()
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        for i in range(count):
            col = i1 + i
            if fg.lazy and col % G == 0:  # group starts: scales from the current weights
                g_end = min(col + G, n_in)
                cur = W1[:, i:min(g_end, i2) - i1]
                if g_end > i2:  # the group runs past this lazy batch: add its pending updates
                    pending = W[:, i2:g_end] - Err1[:, :i] @ Hinv[i1:col, i2:g_end]
                    cur = torch.cat([cur, pending], dim=1)
                fg.set_group(col // G, cur.to(torch.float32).numpy())
            w = W1[:, i]
            d = Hinv1[i, i]
            vals, _, sat = fg.round(order[col], w.numpy())
            n_sat += sat
            q = torch.from_numpy(vals).to(dtype)
            Q[:, col] = q
            err = (w - q) / d
            loss += float(torch.sum((w - q) ** 2)) / float(d) ** 2 / 2
            W1[:, i:] -= err.unsqueeze(1) @ Hinv1[i, i:].unsqueeze(0)
            Err1[:, i] = err
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    return Q, loss, n_sat
