"""GPTQ (docs/spec/algorithms.md §4.2): column-wise rounding with second-order error feedback.

Reference: IST-DASLab/gptq (``GPTQ.fasterquant``). hwsim choices (§8): block exponents of
MXINT/BFP fixed from the unquantized W before the sweep; static groups with act_order; a
damping ladder on Cholesky failure; lazy integer groups read the exactly-current weights
(pending updates of the running lazy batch included), so the result does not depend on the
lazy-batch size.

act_order (issue 17): ``"auto"`` (the default) turns act_order on wherever the scales are fixed
before the sweep (MX/BFP/NVFP4 block scales, tensor and channel scales, integer groups with
``static_groups=True``) and off only for lazy integer groups, whose scales the reference takes
from the current weights in original column order. On SmolLM2 W4A8 (mxint4) act_order lowers the
per-layer objective by 10-60 % and is what makes GPTQ beat RTN.

Speed: the per-column rounding runs in torch (``_TorchRounder``), bit-identical to
``FixedGrid.round`` for integer elements (MXINT/BFP blocks, scaled integers) with RNE; other
formats (MXFP/NVFP4 elements, RNA/RTZ/RDN) use ``FixedGrid.round``. The damped inverse factor of
a Hessian shared by several linears (q/k/v, gate/up) is computed once (``prepare_hessian``).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..dense import dense_linear
from ..stages import Option, register_stage
from .common import as_tensor, check_finite, output_error, record
from .fixed_grid import FixedGrid, saturation_event
from .lowrank import Timer

#: percdamp multipliers tried after the first Cholesky failure (0.1, 1.0, 10 × mean diag H
#: with the default 0.01), docs/spec/algorithms.md §4.2 "Failure handling".
DAMP_RETRIES = 3
ACT_ORDER_CHOICES = (True, False, "auto")
SATURATION_CHOICES = ("clamp", "raise_exponent")


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
        objective (= J(0) of docs/spec/algorithms.md §4.0 when H = R); for float32 weights the
        product D·H runs in float32 (relative error of order 1e-6, ``PreparedHessian.objective``).
    act_order: whether act_order was used (the resolved value of ``act_order="auto"``).
    static_groups: whether integer groups were static (False for lazy groups and non-group formats).
    t_factor_s, t_sweep_s: time in the Hessian factorisation (0 when reused) and in the sweep.
    saturation: the sweep kept (``"clamp"`` or ``"raise_exponent"``), raised_blocks: blocks whose
        shared exponent was raised in the kept sweep.
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
    act_order: bool = False
    static_groups: bool = False
    t_factor_s: float = 0.0
    t_sweep_s: float = 0.0
    saturation: str = "clamp"
    raised_blocks: int = 0


@dataclass
class PreparedHessian:
    """The damped, (act_order-)permuted inverse factor of one H, reusable by every linear that
    reads the same input (q/k/v, gate/up): ``prepare_hessian`` once, pass as ``prepared=``."""

    H_given: torch.Tensor
    dead: torch.Tensor
    n_dead: int
    perm: torch.Tensor | None
    U: torch.Tensor
    percdamp: float
    events: list
    damp: float
    act_order: bool
    t_factor_s: float = 0.0
    claimed: bool = False  # the factorisation time was reported by a first user
    #: H_given in float32, made by the first float32 objective
    _H_float32: torch.Tensor | None = field(default=None, repr=False, compare=False)

    def objective(self, W0: torch.Tensor, Q: torch.Tensor) -> tuple[float, float]:
        """(tr(D H Dᵀ), ‖D‖_F) of D = W0 − Q [out, in] under the undamped H_given.

        The product runs in the weights' dtype: float32 in the pipeline (half the time of float64;
        D and H rounded to float32 give a relative error of order 1e-6; as ``dense_linear(D, H)``,
        D·Hᵀ = D·H for the symmetric H), float64 for float64 weights; the sums run in float64 and
        ‖D‖_F is exact (float64 difference)."""
        D64 = W0.to(torch.float64) - Q.to(torch.float64)
        fro = float(torch.linalg.vector_norm(D64))
        if W0.dtype == torch.float32:
            if self._H_float32 is None:
                self._H_float32 = self.H_given.to(torch.float32)
            D = W0 - Q.to(torch.float32)
            return float(torch.sum(D * dense_linear(D, self._H_float32), dtype=torch.float64)), fro
        return output_error(W0, Q, self.H_given), fro


def upper_factor_of_inverse(H: torch.Tensor) -> torch.Tensor | None:
    """U upper triangular with UᵀU = H⁻¹ (H symmetric positive definite [n, n], float64 on CPU),
    or None when the Cholesky factorisation fails.

    The reference GPTQ computes chol_upper(cholesky_inverse(chol(H))): three O(n³) LAPACK calls,
    of which torch's ``cholesky_inverse`` is slow (0.9 s at n = 1536 on 2 cores). Here one
    Cholesky of the reversed matrix and one triangular inverse: with J the reversal permutation,
    J H J = L Lᵀ gives H⁻¹ = (J L⁻ᵀ J)(J L⁻¹ J), and J L⁻¹ J is upper triangular with a positive
    diagonal, so it is chol_upper(H⁻¹) (unique). L⁻¹ is LAPACK's ``dtrtri`` (n³/3 flops, a third
    of a triangular solve against the identity: 122-139 → 43-50 ms at n = 1536 on one thread). The result
    agrees with the textbook factor to a few float64 ulps × cond(H) (tests/quant/test_gptq.py).
    """
    return _upper_factor_of_reversed(H.flip((0, 1)))


def _upper_factor_of_reversed(Hr: torch.Tensor) -> torch.Tensor | None:
    """``upper_factor_of_inverse(H)`` given Hr = J H J (H with rows and columns reversed)."""
    from scipy.linalg.lapack import dtrtri

    from ..threads import cholesky_threads_for, single_thread_blas, torch_threads

    with torch_threads(cholesky_threads_for(Hr.shape[0])):
        L, info = torch.linalg.cholesky_ex(Hr)
    if int(info) != 0:
        return None
    # L [n, n] is C-ordered: L.numpy().T is the Fortran-ordered upper Lᵀ, no copy; its inverse
    # (L⁻¹)ᵀ, read back through .T, is L⁻¹ in C order
    with single_thread_blas():
        inv_t, info = dtrtri(L.numpy().T, lower=0, overwrite_c=1)
    if info != 0:
        return None
    return torch.from_numpy(inv_t.T).flip((0, 1))


def _inverse_factor(Hr: torch.Tensor, mean_diag: float, percdamp: float, events: list, layer: str | None):
    """U = chol_upper((H + λI)⁻¹), λ = percdamp·mean_diag, from Hr = J H J (reversed; its diagonal
    is overwritten); ladder ×10 on failure."""
    base = torch.diagonal(Hr).clone()
    p = percdamp
    for attempt in range(DAMP_RETRIES + 1):
        torch.diagonal(Hr).copy_(base + p * mean_diag)
        U = _upper_factor_of_reversed(Hr)
        if U is not None and bool(torch.isfinite(U.sum())):  # any inf/NaN makes the sum non-finite
            return U, p
        if attempt < DAMP_RETRIES:
            record(events, "gptq", layer, "damping_retry", p * 10,
                   f"Cholesky failed with percdamp={p:g}; retrying with {p * 10:g}")
            p *= 10
    raise ValueError(f"GPTQ: Cholesky of the damped Hessian failed for layer {layer!r} even "
                     f"with percdamp={p:g}; the calibration statistic is unusable")


def scales_are_static(fmt, static_groups: bool | None = None) -> bool:
    """True when every scale of ``fmt`` is fixed before the sweep: block formats, tensor and
    channel scales, integer groups only with ``static_groups=True``."""
    import hwsim.formats as F

    spec = F.get(fmt)
    if getattr(spec, "granularity", None) == "group":
        return bool(static_groups)
    return True


def resolve_act_order(fmt, act_order=None, static_groups: bool | None = None) -> tuple[bool, bool]:
    """(act_order, static_groups) actually used for ``fmt``.

    ``act_order="auto"`` (or None): on where the scales are static (see ``scales_are_static``),
    off for lazy integer groups. ``static_groups`` None means "equal to act_order".
    """
    import hwsim.formats as F

    if act_order is None:
        act_order = "auto"
    if act_order not in ACT_ORDER_CHOICES or (isinstance(act_order, str) and act_order != "auto"):
        raise ValueError(f"act_order must be True, False or 'auto', got {act_order!r}")
    spec = F.get(fmt)
    is_group = getattr(spec, "granularity", None) == "group"
    if act_order == "auto":
        act_order = scales_are_static(spec, static_groups)
    act_order = bool(act_order)
    static = act_order if static_groups is None else bool(static_groups)
    if act_order and not static and is_group:
        raise ValueError("GPTQ: act_order with lazy (non-static) groups is not supported: groups "
                         "of permuted columns cannot be stored along in; use static_groups=True")
    return act_order, (static and is_group)


def prepare_hessian(H, *, damp: float = 0.01, act_order: bool = False, layer: str | None = None
                    ) -> PreparedHessian:
    """Dead inputs, damping ladder, act_order permutation and U = chol_upper((H+λI)⁻¹) of one H."""
    timer = Timer()
    H = as_tensor(H, "H").to(torch.float64)
    if H.dim() != 2 or H.shape[0] != H.shape[1]:
        raise ValueError(f"H must be a square [in, in] matrix, got {tuple(H.shape)}")
    check_finite(H, "H", layer)
    if not (isinstance(damp, (int, float)) and not isinstance(damp, bool) and damp > 0):
        raise ValueError(f"damp must be a positive number (percdamp, default 0.01), got {damp!r}")
    events: list[dict] = []
    H_given = H.cpu()
    diag = torch.diagonal(H_given).clone()
    dead = diag == 0
    n_dead = int(dead.sum())
    if n_dead:
        diag[dead] = 1.0
        record(events, "gptq", layer, "dead_columns", n_dead)
    perm = None
    if act_order:
        perm = torch.argsort(diag, descending=True, stable=True)
        diag = diag[perm]
    mean_diag = float(diag.mean())
    if not mean_diag > 0:
        raise ValueError(f"GPTQ: H of layer {layer!r} has a non-positive mean diagonal")
    # the (permuted) H with rows and columns reversed, in one gather: the form the factorisation
    # reads (upper_factor_of_inverse); its diagonal is set by _inverse_factor
    rev = (perm if perm is not None else torch.arange(H_given.shape[0])).flip(0)
    Hr = H_given[rev[:, None], rev]
    torch.diagonal(Hr).copy_(diag.flip(0))
    U, p_used = _inverse_factor(Hr, mean_diag, float(damp), events, layer)
    return PreparedHessian(H_given, dead, n_dead, perm, U, p_used, events, float(damp), bool(act_order),
                           timer.elapsed())


def gptq_quantize(W, H, fmt, *, block_size: int = 128, damp: float = 0.01,
                  act_order: bool | str | None = "auto", static_groups: bool | None = None,
                  layer: str | None = None, return_info: bool = False,
                  prepared: PreparedHessian | None = None, rounder: str = "auto",
                  saturation: str = "clamp"):
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
        act_order: process columns by descending diag(H) (undone at the end); ``"auto"`` (default):
            on where the scales are static (``scales_are_static``), off for lazy integer groups.
        static_groups: integer groups from the unquantized W; default: equal to act_order.
        return_info: also return a :class:`GPTQInfo` (codes, loss, damping, saturation).
        prepared: a ``prepare_hessian(H, damp=, act_order=)`` result to reuse (H is then only
            checked for its shape); its damp and act_order must match the resolved ones.
        rounder: ``"auto"`` (torch per-column rounding where bit-identical, else numpy),
            ``"torch"`` or ``"numpy"`` (the ``FixedGrid.round`` path).
        saturation: ``"clamp"`` (default, §4.2 step 5: values that error feedback pushes past a
            fixed block's range saturate, and the clipped error is fed back) or
            ``"raise_exponent"`` (MX/BFP with the torch rounder: sweep again with the shared
            exponent of every saturated (row, block) raised by one, keep whichever of the two
            sweeps has the lower layer objective tr(D H Dᵀ); ``info.saturation`` says which).
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
    if tuple(H.shape) != (n_in, n_in):
        raise ValueError(f"H must be [in, in] = [{n_in}, {n_in}], got {tuple(H.shape)}")
    check_finite(W, "W", layer)
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be a positive int, got {block_size!r}")
    if rounder not in ("auto", "torch", "numpy"):
        raise ValueError(f"rounder must be 'auto', 'torch' or 'numpy', got {rounder!r}")
    if saturation not in SATURATION_CHOICES:
        raise ValueError(f"saturation must be one of {SATURATION_CHOICES}, got {saturation!r}")
    act_order, static = resolve_act_order(spec, act_order, static_groups)
    dtype = torch.float64 if W.dtype == torch.float64 else torch.float32
    if prepared is None:
        prepared = prepare_hessian(H, damp=damp, act_order=act_order, layer=layer)
        t_factor = prepared.t_factor_s
    else:
        if prepared.act_order != act_order or prepared.damp != float(damp):
            raise ValueError(f"GPTQ: prepared Hessian has act_order={prepared.act_order}, damp={prepared.damp}; "
                             f"this call needs act_order={act_order}, damp={damp}")
        t_factor = 0.0 if prepared.claimed else prepared.t_factor_s
    prepared.claimed = True
    events: list[dict] = [dict(e) for e in prepared.events]

    W = W.detach().to(device="cpu", dtype=dtype).clone()
    if prepared.n_dead:
        W[:, prepared.dead] = 0
    W0 = W.clone()
    fg = FixedGrid(spec, W.to(torch.float32).numpy(), lazy_groups=not static)
    perm = prepared.perm
    if perm is not None:
        W = W[:, perm]
    Hinv = prepared.U.to(dtype)
    order = perm.tolist() if perm is not None else list(range(n_in))

    tr = _TorchRounder.make([fg], dtype) if rounder != "numpy" else None
    if rounder == "torch" and tr is None:
        raise ValueError(f"GPTQ: no torch rounder for format {spec.name} (rounding {spec.rounding.value})")
    t_sweep = Timer()
    from ..threads import sweep_workers, torch_threads, torch_threads_for

    workers = sweep_workers(W.shape[0])
    with _single_numba_thread(), torch_threads(torch_threads_for(n_in)):
        if tr is not None:
            Q, losses, sats = _sweep_torch(W, Hinv, [fg], tr, order, block_size, dtype, workers)
            loss, n_sat = losses[0], sats[0]
        else:
            Q, loss, n_sat = _sweep(W, Hinv, fg, order, block_size, dtype)
    t_sweep = t_sweep.elapsed()

    if perm is not None:
        invperm = torch.argsort(perm)
        Q = Q[:, invperm]
    saturation_event(events, layer, n_sat)
    objective, w_err_fro = prepared.objective(W0, Q)
    sat_choice = "clamp"
    n_raised = 0
    if saturation == "raise_exponent" and n_sat and tr is not None and fg.kind == "block":
        fg2 = FixedGrid(spec, W0.to(torch.float32).numpy(), lazy_groups=not static)
        n_raised = fg2.raise_exponents(tr.sat_blocks)
        if n_raised:
            tr2 = _TorchRounder.make([fg2], dtype)
            W2 = W0[:, perm] if perm is not None else W0.clone()
            with _single_numba_thread(), torch_threads(torch_threads_for(n_in)):
                Q2, losses2, sats2 = _sweep_torch(W2, Hinv, [fg2], tr2, order, block_size, dtype, workers)
            if perm is not None:
                Q2 = Q2[:, invperm]
            obj2, fro2 = prepared.objective(W0, Q2)
            events.append({"stage": "gptq", "layer": layer, "kind": "raise_exponent", "value": n_raised,
                           "objective_clamp": objective, "objective_raised": obj2})
            if obj2 < objective:
                Q, loss, n_sat, fg, w_err_fro, objective = Q2, losses2[0], sats2[0], fg2, fro2, obj2
                sat_choice = "raise_exponent"
    qt = fg.qtensor()
    from .rtn import to_torch_qtensor

    qt = to_torch_qtensor(qt)
    if not return_info:
        return Q
    info = GPTQInfo(qtensor=qt, loss=loss, percdamp=prepared.percdamp, saturated=n_sat,
                    dead_columns=prepared.n_dead, perm=None if perm is None else tuple(perm.tolist()),
                    events=tuple(events), runtime_s=timer.elapsed(),
                    w_err_fro=w_err_fro, objective=objective,
                    act_order=act_order, static_groups=static, t_factor_s=t_factor, t_sweep_s=t_sweep,
                    saturation=sat_choice, raised_blocks=n_raised if sat_choice == "raise_exponent" else 0)
    return Q, info


def gptq_quantize_many(Ws, H, fmt, *, block_size: int = 128, damp: float = 0.01,
                       act_order: bool | str | None = "auto", static_groups: bool | None = None,
                       layers=None, prepared: PreparedHessian | None = None, rounder: str = "auto",
                       saturation: str = "clamp"):
    """GPTQ of several weights that read the same input (q/k/v, gate/up) in one sweep.

    Rows are independent in GPTQ, so the weights' rows are concatenated and swept together
    (one Python loop over the columns instead of one per weight); each weight keeps its own
    FixedGrid (scales, codes). Returns ``[(Wq, GPTQInfo)]`` in the order of ``Ws``, equal to
    ``gptq_quantize(W, H, fmt, ..., return_info=True)`` of each weight (the lazy-batch GEMM sees
    more rows; values are compared bit for bit in the tests). Falls back to one call per weight
    where the torch rounder does not apply.
    """
    import hwsim.formats as F

    spec = F.get(fmt)
    Ws = [as_tensor(W, "W") for W in Ws]
    layers = list(layers) if layers is not None else [None] * len(Ws)
    n_in = Ws[0].shape[1]
    if any(W.dim() != 2 or W.shape[1] != n_in for W in Ws):
        raise ValueError("gptq_quantize_many: every W must be [out, in] with the same in")
    kw = dict(block_size=block_size, damp=damp, act_order=act_order, static_groups=static_groups, rounder=rounder)
    act_order, static = resolve_act_order(spec, act_order, static_groups)
    if prepared is None:
        prepared = prepare_hessian(H, damp=damp, act_order=act_order, layer=layers[0])
    elif prepared.act_order != act_order or prepared.damp != float(damp):
        raise ValueError(f"GPTQ: prepared Hessian has act_order={prepared.act_order}, damp={prepared.damp}; "
                         f"this call needs act_order={act_order}, damp={damp}")
    if saturation != "clamp":
        kw["saturation"] = saturation
    if (getattr(spec, "granularity", None) == "tensor" or len(Ws) == 1 or rounder == "numpy"
            or saturation != "clamp"):
        return [gptq_quantize(W, H, fmt, layer=l, return_info=True, prepared=prepared, **kw)
                for W, l in zip(Ws, layers)]
    timer = Timer()
    for W, l in zip(Ws, layers):
        check_finite(W, "W", l)
    dtype = torch.float64 if all(W.dtype == torch.float64 for W in Ws) else torch.float32
    Wc = torch.cat([W.detach().to(device="cpu", dtype=dtype) for W in Ws], dim=0)
    if prepared.n_dead:
        Wc[:, prepared.dead] = 0
    W0 = Wc.clone()
    fgs = []
    r0 = 0
    for W in Ws:
        fgs.append(FixedGrid(spec, Wc[r0:r0 + W.shape[0]].to(torch.float32).numpy(), lazy_groups=not static))
        r0 += W.shape[0]
    tr = _TorchRounder.make(fgs, dtype)
    if tr is None:
        return [gptq_quantize(W, H, fmt, layer=l, return_info=True, prepared=prepared, **kw)
                for W, l in zip(Ws, layers)]
    t_factor = 0.0 if prepared.claimed else prepared.t_factor_s
    prepared.claimed = True
    perm = prepared.perm
    Wp = Wc[:, perm] if perm is not None else Wc
    order = perm.tolist() if perm is not None else list(range(n_in))
    t_sweep = Timer()
    from ..threads import sweep_workers, torch_threads, torch_threads_for

    workers = sweep_workers(Wp.shape[0])
    with _single_numba_thread(), torch_threads(torch_threads_for(n_in)):
        Q, losses, sats = _sweep_torch(Wp, prepared.U.to(dtype), fgs, tr, order, block_size, dtype, workers)
    t_sweep = t_sweep.elapsed() / len(Ws)
    if perm is not None:
        Q = Q[:, torch.argsort(perm)]
    from .rtn import to_torch_qtensor

    out = []
    share = timer.elapsed() / len(Ws)
    for k, ((ra, rb), fg, l) in enumerate(zip(tr.rows, fgs, layers)):
        events = [dict(e) for e in prepared.events]
        saturation_event(events, l, sats[k])
        Qk = Q[ra:rb]
        objective, w_err_fro = prepared.objective(W0[ra:rb], Qk)
        info = GPTQInfo(qtensor=to_torch_qtensor(fg.qtensor()), loss=losses[k], percdamp=prepared.percdamp,
                        saturated=sats[k], dead_columns=prepared.n_dead,
                        perm=None if perm is None else tuple(perm.tolist()), events=tuple(events),
                        runtime_s=share, w_err_fro=w_err_fro, objective=objective, act_order=act_order,
                        static_groups=static, t_factor_s=t_factor if k == 0 else 0.0,
                        t_sweep_s=t_sweep)
        out.append((Qk.to(torch.float64 if Ws[k].dtype == torch.float64 else torch.float32), info))
    return out


@contextmanager
def _single_numba_thread():
    """The sweep encodes one column or one lazy group (a few hundred values) per call: numba's
    parallel launch would cost far more than the work (tens of ms on a loaded machine), so use one
    thread."""
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


#: rows per product of a lazy batch's trailing update (``_trailing_update``): every sweep path
#: multiplies row ranges that start at multiples of it, so the products, and a row's bits, are the
#: same whether the rows are swept on one thread or split over several (at such multiples)
SWEEP_GEMM_ROWS = 64


def _trailing_update(W: torch.Tensor, Err1: torch.Tensor, Hinv: torch.Tensor, i1: int, i2: int,
                     sq: torch.Tensor | None = None) -> None:
    """W[:, i2:] −= Err1·Hinv[i1:i2, i2:] (and sq += Σ Err1² per row, in float64) for a lazy batch
    i1:i2, in products of ``SWEEP_GEMM_ROWS`` rows (W [rows, in], Err1 [rows, i2 − i1])."""
    H = Hinv[i1:i2, i2:]
    for r in range(0, W.shape[0], SWEEP_GEMM_ROWS):
        rows = slice(r, r + SWEEP_GEMM_ROWS)
        E = Err1[rows]
        if sq is not None:
            sq[rows] += (E.to(torch.float64) ** 2).sum(dim=1)
        W[rows, i2:] -= E @ H


def _sweep(W: torch.Tensor, Hinv: torch.Tensor, fg: FixedGrid, order: list[int], block_size: int,
           dtype: torch.dtype):
    """Lazy-batch GPTQ sweep (§4.2 step 6), numpy rounding per column (``FixedGrid.round``).
    W is modified in place. Returns (Q, loss, n_sat)."""
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
                fg.set_group(col // G, _lazy_group(W, W1, Err1, Hinv, i1, i2, i, col, G, n_in))
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
        _trailing_update(W, Err1, Hinv, i1, i2)
    return Q, loss, n_sat


def _lazy_group(W, W1, Err1, Hinv, i1, i2, i, col, G, n_in) -> np.ndarray:
    """The exactly-current weights of the lazy group starting at ``col`` (pending updates of the
    running lazy batch applied to the columns past it)."""
    g_end = min(col + G, n_in)
    cur = W1[:, i:min(g_end, i2) - i1]
    if g_end > i2:  # the group runs past this lazy batch: add its pending updates
        pending = W[:, i2:g_end] - Err1[:, :i] @ Hinv[i1:col, i2:g_end]
        cur = torch.cat([cur, pending], dim=1)
    return cur.to(torch.float32).numpy()


class _TorchRounder:
    """Per-column rounding in torch, bit-identical to ``FixedGrid.round`` (values, codes and
    saturation count) for integer elements with RNE: MXINT/BFP blocks (``c = clamp(RNE(x·2^-(e+ie)))``)
    and scaled integers (``c = clamp(RNE(fp32(x/s)) + z)``).

    Several weights that share a Hessian can be swept together: their rows are concatenated
    (one FixedGrid per weight, ``rows`` gives each one's row range). Per column only the rounded,
    unclamped integers are stored (``Rr``); codes and saturation counts are assembled once at the
    end (``finish``). Block scales run in float32 when every 2^±(e+ie) is a normal float32 (the
    product by a power of two is then exact or rounded once, as in float64 followed by the cast).
    """

    @staticmethod
    def make(fgs, dtype: torch.dtype):
        from hwsim.formats import IntElem, Rounding

        fgs = list(fgs) if isinstance(fgs, (list, tuple)) else [fgs]
        kinds = {fg.kind for fg in fgs}
        if len(kinds) != 1 or any(fg.mode is not Rounding.RNE for fg in fgs):
            return None
        if any(fg.spec != fgs[0].spec or fg.n_in != fgs[0].n_in for fg in fgs):
            return None
        fg = fgs[0]
        if fg.kind == "block" and isinstance(fg.elem, IntElem):
            return _TorchRounder(fgs, dtype)
        if fg.kind == "int":
            tr = _TorchRounder(fgs, dtype)
            return tr if tr.scales_ok() else None
        return None

    def __init__(self, fgs, dtype: torch.dtype):
        self.fgs = fgs
        fg = fgs[0]
        self.fg = fg
        self.kind = fg.kind
        self.dtype = dtype
        self.rows = []
        r0 = 0
        for f in fgs:
            self.rows.append((r0, r0 + f.out))
            r0 += f.out
        n_in = fg.n_in
        self.Rr = torch.zeros(r0, n_in, dtype=torch.float32)  # RNE(y) (blocks) or RNE(y) + z (ints)
        if fg.kind == "block":
            el = fg.elem
            sh = torch.from_numpy(np.concatenate([np.asarray(f.e, dtype=np.float64) for f in fgs]) + el.ie)
            self.fast32 = dtype == torch.float32 and bool(((sh >= -126) & (sh <= 126)).all())
            sdt = torch.float32 if self.fast32 else torch.float64
            self.s_in = torch.exp2(-sh).to(sdt).t().contiguous()  # [nblk, out]: one row per block
            self.s_out = torch.exp2(sh).to(sdt).t().contiguous()
            self.lo, self.hi = float(el.c_min), float(el.c_max)
            self.G = fg.B
            self.ftz = bool(fg.ftz)
        else:
            self.lo, self.hi = float(fg.lo), float(fg.hi)
            self.G = fg.G if fg.G is not None else n_in
            self.ftz = False
            self.refresh()

    def refresh(self) -> None:
        """Scaled integers: re-read the (lazy group) scales and zero points of the FixedGrids."""
        self.s = torch.from_numpy(np.concatenate([np.asarray(f.s, dtype=np.float32) for f in self.fgs])).t().contiguous()
        self.z = torch.from_numpy(np.concatenate([np.asarray(f.zz).astype(np.float32) for f in self.fgs])).t().contiguous()

    def scales_ok(self) -> bool:
        return bool((self.s != 0).all()) and bool(torch.isfinite(self.s).all())

    def round(self, j: int, w: torch.Tensor) -> torch.Tensor:
        """q [out] (sweep dtype) of column j, the current weights w [out]."""
        g = j // self.G
        x = w if w.dtype == torch.float32 else w.to(torch.float32)
        if self.ftz:
            x = torch.where(x.abs() < 2.0 ** -126, torch.copysign(torch.zeros_like(x), x), x)
        if self.kind == "block":
            if self.fast32:
                r = torch.round(x * self.s_in[g])
                self.Rr[:, j] = r
                return r.clamp_(self.lo, self.hi).mul_(self.s_out[g])
            r = torch.round((x.to(torch.float64) * self.s_in[g]).to(torch.float32))
            self.Rr[:, j] = r
            return (r.clamp(self.lo, self.hi).to(torch.float64) * self.s_out[g]).to(self.dtype)
        s = self.s[g]
        z = self.z[g]
        raw = torch.round(x / s).add_(z)
        self.Rr[:, j] = raw
        q = raw.clamp(self.lo, self.hi).sub_(z).mul_(s)
        return q if self.dtype == torch.float32 else q.to(self.dtype)

    def finish(self) -> list[int]:
        """Write the element codes of every column into each FixedGrid (as ``FixedGrid.round``
        does); returns the saturation count of each."""
        fg = self.fg
        Rr = self.Rr
        C = Rr.clamp(self.lo, self.hi)
        satm = C != Rr
        sat_rows = satm.sum(dim=1)
        if fg.kind == "block":  # saturated (row, block) pairs, for saturation="raise_exponent"
            nblk = -(-fg.n_in // fg.B)
            pad = torch.zeros(satm.shape[0], nblk * fg.B, dtype=torch.bool)
            pad[:, :fg.n_in] = satm
            self.sat_blocks = pad.view(satm.shape[0], nblk, fg.B).any(dim=2).numpy()
        c = C.to(torch.int64).numpy()
        if fg.kind == "block":
            el = fg.elem
            if el.encoding == "signmag":  # the sign of RNE(y) is the sign of y (-0.0 included)
                codes = (torch.signbit(Rr).numpy().astype(np.int64) << (el.bits - 1)) | np.abs(c)
            else:
                codes = c & ((1 << el.bits) - 1)
        else:
            codes = c & fg.mask if fg.spec.symmetric else c
        sats = []
        for f, (r0, r1) in zip(self.fgs, self.rows):
            f.codes[:, :f.n_in] = codes[r0:r1].astype(f.codes.dtype)
            f.done[:f.n_in] = True
            sats.append(int(sat_rows[r0:r1].sum()))
        return sats


#: run each lazy batch in the numba kernel (gptq_kernels) where it applies; False: torch per column
USE_KERNEL = True


def _kernel_for(tr: "_TorchRounder", lazy: bool, dtype: torch.dtype, W: torch.Tensor, r0: int = 0,
                r1: int | None = None):
    """A callable running one lazy batch of the rows r0:r1 in numba (float32 sweeps of MXINT/BFP
    blocks with float32 scales, and of static integer scales), or None for the torch per-column
    loop."""
    if not USE_KERNEL or dtype != torch.float32 or lazy or not W.is_contiguous():
        return None
    try:
        from . import gptq_kernels as K
    except ImportError:  # pragma: no cover - numba is a dependency
        return None
    r1 = W.shape[0] if r1 is None else r1
    lo, hi = np.float32(tr.lo), np.float32(tr.hi)
    Rr = tr.Rr[r0:r1].numpy()
    if tr.kind == "block" and tr.fast32:
        s_in, s_out = (np.ascontiguousarray(t[:, r0:r1].numpy()) for t in (tr.s_in, tr.s_out))

        def run(W1, Err1, H1, diag, Q, cols, col0):
            K.batch_block(W1.numpy(), Err1.numpy(), H1.numpy(), diag.numpy(), Q.numpy(), Rr, s_in, s_out,
                          cols, tr.G, col0, lo, hi, tr.ftz)
        return run
    if tr.kind == "int":
        s, z = (np.ascontiguousarray(t[:, r0:r1].numpy()) for t in (tr.s, tr.z))

        def run(W1, Err1, H1, diag, Q, cols, col0):
            K.batch_int(W1.numpy(), Err1.numpy(), H1.numpy(), diag.numpy(), Q.numpy(), Rr, s, z,
                        cols, tr.G, col0, lo, hi)
        return run
    return None


def _sweep_kernel_rows(W: torch.Tensor, Hinv: torch.Tensor, Q: torch.Tensor, sq: torch.Tensor, kern,
                       order_np: np.ndarray, block_size: int) -> None:
    """The lazy batches of ``_sweep_torch`` through the numba kernel for the rows of W (a row
    range of the sweep: W, Q [rows, in] and sq [rows] are views, updated in place)."""
    n_in = W.shape[1]
    for i1 in range(0, n_in, block_size):
        i2 = min(i1 + block_size, n_in)
        W1 = W[:, i1:i2].clone()
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2].contiguous()
        kern(W1, Err1, Hinv1, torch.diagonal(Hinv1).clone(), Q, order_np[i1:i2], i1)
        _trailing_update(W, Err1, Hinv, i1, i2, sq)


def _sweep_torch(W: torch.Tensor, Hinv: torch.Tensor, fgs, tr: _TorchRounder, order: list[int],
                 block_size: int, dtype: torch.dtype, workers: int = 1):
    """The lazy-batch sweep of ``_sweep`` with torch per-column rounding (no numpy round trip).
    Same arithmetic in the same order on every row of W, so the result equals ``_sweep`` bit for
    bit. W may hold the rows of several weights sharing H (``fgs``: one FixedGrid each).
    ``workers`` > 1: the numba-kernel path sweeps that many row ranges on as many threads (rows
    are independent, and the ranges start at multiples of ``SWEEP_GEMM_ROWS``: the same products,
    the same bits; tests/quant/test_gptq.py). Returns (Q, loss per weight, saturation per weight)."""
    n_in = W.shape[1]
    Q = torch.empty_like(W)
    sq = torch.zeros(W.shape[0], dtype=torch.float64)
    fg0 = fgs[0]
    G = fg0.G if fg0.kind == "int" else None
    lazy = fg0.lazy
    order_np = np.asarray(order, dtype=np.int64)
    # row ranges on whole multiples of SWEEP_GEMM_ROWS (the products of _trailing_update do not move)
    n_parts = -(-W.shape[0] // SWEEP_GEMM_ROWS)
    parts = [p for p in np.array_split(np.arange(n_parts), max(1, min(workers, n_parts))) if len(p)]
    kerns = [(a, b, _kernel_for(tr, lazy, dtype, W, a, b)) for a, b in
             ((int(p[0]) * SWEEP_GEMM_ROWS, min(int(p[-1] + 1) * SWEEP_GEMM_ROWS, W.shape[0])) for p in parts)]
    if kerns and kerns[0][2] is not None:
        jobs = [(W[a:b], Hinv, Q[a:b], sq[a:b], kern, order_np, block_size) for a, b, kern in kerns]
        if len(jobs) == 1:
            _sweep_kernel_rows(*jobs[0])
        else:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(len(jobs), initializer=torch.set_num_threads, initargs=(1,)) as pool:
                for f in [pool.submit(_sweep_kernel_rows, *job) for job in jobs]:
                    f.result()
        return _sweep_result(Q, sq, tr)
    for i1 in range(0, n_in, block_size):
        i2 = min(i1 + block_size, n_in)
        count = i2 - i1
        W1 = W[:, i1:i2].clone()
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        diag = torch.diagonal(Hinv1).clone()
        for i in range(count):
            col = i1 + i
            if lazy and col % G == 0:
                cur = _lazy_group(W, W1, Err1, Hinv, i1, i2, i, col, G, n_in)
                for f, (r0, r1) in zip(fgs, tr.rows):
                    f.set_group(col // G, cur[r0:r1])
                tr.refresh()
                if not tr.scales_ok():  # pragma: no cover - a zero group scale is not representable
                    raise RuntimeError("GPTQ: zero group scale in the torch rounder")
            w = W1[:, i]
            q = tr.round(order[col], w)
            Q[:, col] = q
            err = (w - q).div_(diag[i])
            W1[:, i:] -= torch.outer(err, Hinv1[i, i:])
            Err1[:, i] = err
        _trailing_update(W, Err1, Hinv, i1, i2, sq)
    return _sweep_result(Q, sq, tr)


def _sweep_result(Q: torch.Tensor, sq: torch.Tensor, tr: _TorchRounder):
    """(Q, loss per weight, saturation per weight) of a finished sweep."""
    sats = tr.finish()
    losses = [float(sq[r0:r1].sum()) / 2 for r0, r1 in tr.rows]
    return Q, losses, sats


# ------------------------------------------------------------------------------------------------
# The pipeline stage (hwsim.quant.stages)
# ------------------------------------------------------------------------------------------------

ROUNDERS = ("auto", "torch", "numpy")
SATURATIONS = ("clamp", "raise_exponent")
GPTQ_OPTIONS = (
    Option("block_size", 128, "lazy-batch width B (any value gives the same result up to rounding)",
           check=lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, valid="an int >= 1"),
    Option("damp", 0.01, "relative damping (percdamp) of mean(diag R)",
           check=lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1,
           valid="a number in [0, 1)"),
    Option("act_order", "auto", "columns by descending diag(R); 'auto': on where the scales are static",
           choices=("auto", True, False)),
    Option("static_groups", None, "integer groups from the unquantized W (None: equal to act_order)",
           choices=(None, True, False)),
    Option("rounder", "auto", "per-column rounding implementation (all bit-identical)", choices=ROUNDERS),
    Option("saturation", "clamp", "values pushed past a fixed block's range: clamp, or raise that block's "
           "exponent and keep the sweep with the lower objective", choices=SATURATIONS),
)


def _prepared_for(R, fmt, cache: dict | None, layer: str, damp, act_order, static_groups):
    """One damped inverse factor per shared input (q/k/v, gate/up) and option set."""
    if cache is None:
        return None
    ao, _static = resolve_act_order(fmt, act_order, static_groups)
    key = ("gptq_factor", ao, float(damp))
    if key not in cache:
        cache[key] = prepare_hessian(R, damp=damp, act_order=ao, layer=layer)
    return cache[key]


def gptq_group(items, fmt, stats, cache: dict | None, **opts) -> dict:
    """GPTQ of the linears of one input in one sweep (``gptq_quantize_many``): {name: (QTensor, info)}."""
    names = [n for n, _W in items]
    prepared = _prepared_for(stats["rxx"], fmt, cache, names[0], opts["damp"], opts["act_order"],
                             opts["static_groups"])
    res = gptq_quantize_many([W for _n, W in items], stats["rxx"], fmt, layers=names, prepared=prepared, **opts)
    return {n: (info.qtensor, _as_dict(info)) for n, (_q, info) in zip(names, res)}


@register_stage("gptq", kind="rounding", stats=("rxx",), stats_source="sequential", options=GPTQ_OPTIONS,
                group_fn=gptq_group)
def gptq_stage(W: torch.Tensor, fmt, stats, *, layer: str, cache: dict | None = None, **opts):
    """error-feedback rounding under the input second moment R_xx (§4.2)"""
    prepared = _prepared_for(stats["rxx"], fmt, cache, layer, opts["damp"], opts["act_order"], opts["static_groups"])
    _wq, info = gptq_quantize(W, stats["rxx"], fmt, return_info=True, layer=layer, prepared=prepared, **opts)
    return info.qtensor, _as_dict(info)


def _as_dict(info: GPTQInfo) -> dict[str, Any]:
    return {k: getattr(info, k) for k in info.__dataclass_fields__}
