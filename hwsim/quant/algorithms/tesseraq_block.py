"""TesseraQ block reconstruction (docs/spec/algorithms.md §4.6, "PAR schedule", "Block reconstruction").

:func:`tesseraq_block` trains the rounding logits ν and DST parameters v of every linear of one
block so that the block's output on its (quantized-trajectory) inputs matches the full-precision
targets, with progressive hardening:

    for τ in schedule:   harden every linear at τ (``SoftQuantizer.harden``)
                         fresh Adam: ν (lr, no weight decay), v (scale_lr, scale_weight_decay)
                         iters_per_stage steps, each on batch_size sequences drawn at random
    harden_all

Loss: mean over samples and tokens of ``‖Y_fp − f̂(X)‖²₂`` summed over the hidden dimension d.
The block is run by the caller's ``block_fn(x)``; during training each given ``nn.Linear``
computes with its soft weight (its ``forward`` is replaced on the instance and restored in a
``finally``), optionally behind a straight-through activation quantizer. Block weights stay
float32 and are never modified; only ν and v train. The result per linear is its QTensor (codes
of the hardened weight, scales ``s·2σ(v)``) and an info dict; writing the dequantized weights
back into the block is the caller's choice.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as Fnn
from torch import nn

from ..stages import BlockData, Option, register_stage
from .common import record
from .tesseraq import STAGE, SoftQuantizer, TesseraQOptions, from_options

__all__ = ["tesseraq_block", "SequenceBank"]


class SequenceBank:
    """Sequences [N, T, d] held as one tensor or a list of mini-batches [b_i, T, d], indexed
    without concatenating (``take`` copies only the requested rows)."""

    def __init__(self, data: torch.Tensor | Sequence[torch.Tensor], name: str):
        parts = [data] if isinstance(data, torch.Tensor) else list(data)
        if not parts or any(not isinstance(p, torch.Tensor) or p.dim() != 3 for p in parts):
            raise ValueError(f"{name}: expected a tensor [N, T, d] or a non-empty list of [b, T, d] "
                             f"tensors, got {_describe(data)}")
        tail = tuple(parts[0].shape[1:])
        if any(tuple(p.shape[1:]) != tail for p in parts):
            raise ValueError(f"{name}: every batch must be [b, T, d] with the same T, d; got shapes "
                             f"{[tuple(p.shape) for p in parts]}")
        self.parts = parts
        self.name = name
        self.tail = tail
        sizes = torch.tensor([p.shape[0] for p in parts], dtype=torch.int64)
        self.offsets = torch.cat([torch.zeros(1, dtype=torch.int64), sizes.cumsum(0)])
        self.n = int(self.offsets[-1])

    def take(self, idx: torch.Tensor) -> torch.Tensor:
        """Rows ``idx`` (1-D int64, global sequence indices) as one [len(idx), T, d] tensor."""
        if len(self.parts) == 1:
            p = self.parts[0]
            return p.index_select(0, idx.to(p.device))
        part = torch.searchsorted(self.offsets, idx, right=True) - 1
        rows = [self.parts[int(j)][int(i - self.offsets[j])] for i, j in zip(idx, part)]
        return torch.stack(rows)

    def batches(self, size: int):
        """Consecutive index batches of at most ``size`` sequences."""
        for start in range(0, self.n, size):
            yield torch.arange(start, min(start + size, self.n), dtype=torch.int64)


def _describe(x) -> str:
    if isinstance(x, torch.Tensor):
        return f"a tensor of shape {tuple(x.shape)}"
    return type(x).__name__


class _Patch:
    """Routes each linear's forward through its soft quantizer; ``rounded`` selects the hard
    decision ``ν > 0`` for soft elements (evaluation), ``cache`` reuses weights under no_grad."""

    def __init__(self, linears: Mapping[str, nn.Linear], quantizers: Mapping[str, SoftQuantizer],
                 act_quant: Mapping[str, Callable | None]):
        self.linears, self.quantizers, self.act_quant = linears, quantizers, act_quant
        self.rounded = False
        self.cache: dict[str, torch.Tensor] | None = None
        self.saved: dict[str, tuple[bool, Any]] = {}
        self.amp_device: str | None = None

    def _make(self, name: str, lin: nn.Linear, sq: SoftQuantizer, aq: Callable | None):
        def forward(x: torch.Tensor) -> torch.Tensor:
            if self.cache is not None:
                w = self.cache.get(name)
                if w is None:
                    w = self.cache[name] = sq.weight(rounded=self.rounded)
            else:
                w = sq.weight(rounded=self.rounded)
            xin = x if aq is None else x + (aq(x) - x).detach()
            bias = lin.bias
            if self.amp_device is None:  # float32 compute, result in the caller's dtype
                y = Fnn.linear(xin.to(torch.float32), w,
                               None if bias is None else bias.to(torch.float32))
                return y.to(x.dtype)
            return Fnn.linear(xin, w, bias)  # under autocast: cast by autocast
        return forward

    def __enter__(self):
        for name, lin in self.linears.items():
            self.saved[name] = ("forward" in lin.__dict__, lin.__dict__.get("forward"))
            lin.forward = self._make(name, lin, self.quantizers[name], self.act_quant.get(name))
        return self

    def __exit__(self, *exc):
        for name, (had, old) in self.saved.items():
            lin = self.linears[name]
            if had:
                lin.forward = old
            else:
                lin.__dict__.pop("forward", None)
        self.saved.clear()
        return False


def _block_loss(y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Mean over samples and tokens of the squared L2 error summed over d (float32)."""
    return ((y.to(torch.float32) - t.to(torch.float32)) ** 2).sum(dim=-1).mean()


@torch.no_grad()
def _eval_mse(block_fn, patch: _Patch, xs: SequenceBank, ts: SequenceBank, batch: int,
              device) -> float:
    """Block loss over all sequences with the hardened (``ν > 0``) weights."""
    patch.rounded, patch.cache = True, {}
    total, n = 0.0, 0
    try:
        for idx in xs.batches(batch):
            x = xs.take(idx).to(device=device, dtype=torch.float32)
            t = ts.take(idx).to(device=device, dtype=torch.float32)
            total += float(_block_loss(block_fn(x), t)) * len(idx)
            n += len(idx)
    finally:
        patch.rounded, patch.cache = False, None
    return total / n


def tesseraq_block(block_fn: Callable[[torch.Tensor], torch.Tensor],
                   linears: Mapping[str, nn.Linear],
                   weight_formats: Mapping[str, Any],
                   inputs: torch.Tensor | Sequence[torch.Tensor],
                   targets: torch.Tensor | Sequence[torch.Tensor],
                   opts: TesseraQOptions | Mapping[str, Any] | None = None, *,
                   act_quant: Mapping[str, Callable | None] | None = None,
                   block: nn.Module | None = None,
                   events: list[dict] | None = None,
                   progress: bool = False) -> dict[str, tuple[Any, dict[str, Any]]]:
    """TesseraQ reconstruction of one block.

    Args:
        block_fn: runs the block on x [b, T, d] (float32) and returns [b, T, d]; called with
            1 <= b <= batch_size sequences (the caller closes over masks / position embeddings).
        linears: name -> the block's ``nn.Linear`` modules to quantize (weights [out, in]).
        weight_formats: name -> ``hwsim.formats`` name or spec, one per linear.
        inputs: block inputs, a tensor [N, T, d] or a list of [b_i, T, d] mini-batches (never
            concatenated or copied as a whole; each step gathers its batch_size rows).
        targets: full-precision block outputs, same structure and shapes as ``inputs``.
        opts: :class:`TesseraQOptions` or an options dict (:func:`from_options`).
        act_quant: name -> function x -> fake-quantized x (or None), applied with a straight-
            through gradient to that linear's input.
        block: the block module; its parameters get ``requires_grad=False`` during training and
            are restored after (default: those of the given linears only).
        events: list receiving ``{stage, layer, kind, value}`` records (DST disabled, autocast
            unavailable).
        progress: show a progress bar over the stages (tqdm).
    Returns:
        name -> (QTensor of the hardened weight, info), info = {"layer", "format", "dst",
        "hard_fraction" (after each stage), "saturated" (clamped elements), "multiplier_min",
        "multiplier_max", "block": shared dict {"mse_rtn" (block loss of the zero-iteration, i.e.
        RTN, rounding), "mse_final", "stage_loss" (mean training loss per stage), "stage_loss_last",
        "taus", "iters_per_stage", "batch_size", "n_sequences", "time_s", "options"}}.
    """
    opts = from_options(opts) if not isinstance(opts, TesseraQOptions) else opts
    if opts.init == "awq":
        raise NotImplementedError(
            "TesseraQ init='awq': the AWQ scaling and clip search (docs/spec/algorithms.md §4.6, "
            "'Initialisation') is the 'awq' transform stage before TesseraQ (pipeline 'awq+tesseraq', "
            "preset 'tesseraq-w2g128'); here use init='rtn' (min-max of the given weights)")
    events = [] if events is None else events
    act_quant = dict(act_quant or {})
    names = list(linears)
    if not names:
        raise ValueError("tesseraq_block: linears is empty (expected at least one nn.Linear)")
    missing = [n for n in names if n not in weight_formats]
    extra = [n for n in weight_formats if n not in linears]
    if missing or extra:
        raise ValueError(f"tesseraq_block: weight_formats must name exactly the linears {names}; "
                         f"missing {missing}, unknown {extra}")
    bad_aq = [n for n in act_quant if n not in linears]
    if bad_aq:
        raise ValueError(f"tesseraq_block: act_quant names unknown linears {bad_aq}; valid: {names}")
    for n in names:
        if not isinstance(linears[n], nn.Linear):
            raise ValueError(f"tesseraq_block: linears[{n!r}] must be an nn.Linear, got "
                             f"{type(linears[n]).__name__}")
    xs, ts = SequenceBank(inputs, "inputs"), SequenceBank(targets, "targets")
    if xs.n != ts.n or xs.tail != ts.tail:
        raise ValueError(f"tesseraq_block: targets ({ts.n} x {ts.tail}) must match inputs "
                         f"({xs.n} x {xs.tail})")
    t0 = time.perf_counter()
    device = linears[names[0]].weight.device
    sqs = {n: SoftQuantizer(linears[n].weight.detach(), weight_formats[n], dst=opts.dst,
                            layer=n, events=events) for n in names}
    amp = opts.amp and device.type == "cuda"
    if opts.amp and not amp:
        record(events, STAGE, None, "amp_unavailable", device.type,
               message=f"amp=True needs a CUDA device; the block runs in float32 on {device.type}")
    batch = min(opts.batch_size, xs.n)
    gen = torch.Generator().manual_seed(int(opts.seed))
    params = list(block.parameters()) if block is not None else [
        p for lin in linears.values() for p in lin.parameters()]
    saved_grad = [p.requires_grad for p in params]
    nus = [sqs[n].nu for n in names]
    vs = [sqs[n].v for n in names if sqs[n].v is not None]
    taus = opts.taus
    hard = {n: [] for n in names}
    stage_loss: list[float] = []
    stage_last: list[float] = []
    patch = _Patch(linears, sqs, act_quant)
    patch.amp_device = "cuda" if amp else None
    scaler = torch.amp.GradScaler("cuda") if amp else None
    try:
        for p in params:
            p.requires_grad_(False)
        with patch:
            mse_rtn = _eval_mse(block_fn, patch, xs, ts, batch, device)
            stages = range(len(taus))
            if progress:
                from tqdm.auto import tqdm

                stages = tqdm(stages, desc="tesseraq", leave=False, file=sys.stderr)
            for i in stages:
                for n in names:
                    sqs[n].harden(taus[i])
                    hard[n].append(sqs[n].hard_fraction())
                groups = [{"params": nus, "lr": opts.lr, "weight_decay": 0.0}]
                if vs:
                    groups.append({"params": vs, "lr": opts.scale_lr,
                                   "weight_decay": opts.scale_weight_decay})
                optim = torch.optim.Adam(groups)
                train = nus + vs
                total, last = 0.0, math.nan
                for it in range(opts.iters_per_stage):
                    idx = torch.randperm(xs.n, generator=gen)[:batch]
                    x = xs.take(idx).to(device=device, dtype=torch.float32)
                    t = ts.take(idx).to(device=device, dtype=torch.float32)
                    with torch.enable_grad(), torch.autocast("cuda", dtype=torch.float16,
                                                             enabled=amp):
                        loss = _block_loss(block_fn(x), t)
                    last = float(loss.detach())
                    if not math.isfinite(last):
                        raise FloatingPointError(f"tesseraq_block: non-finite loss {last} at stage "
                                                 f"{i + 1}/{len(taus)} (tau={taus[i]}), iteration {it}")
                    total += last
                    scaled = scaler.scale(loss) if scaler is not None else loss
                    grads = torch.autograd.grad(scaled, train, allow_unused=True)
                    for p, g in zip(train, grads):
                        p.grad = torch.zeros_like(p) if g is None else g
                    if scaler is not None:
                        scaler.step(optim)
                        scaler.update()
                    else:
                        optim.step()
                    optim.zero_grad(set_to_none=True)
                stage_loss.append(total / opts.iters_per_stage if opts.iters_per_stage else math.nan)
                stage_last.append(last)
                if progress:
                    stages.set_postfix(tau=taus[i], loss=f"{stage_loss[-1]:.4g}")
            for n in names:
                sqs[n].harden_all()
            mse_final = _eval_mse(block_fn, patch, xs, ts, batch, device)
    finally:
        for p, rg in zip(params, saved_grad):
            p.requires_grad_(rg)
    block_info = {
        "mse_rtn": mse_rtn, "mse_final": mse_final, "stage_loss": stage_loss,
        "stage_loss_last": stage_last, "taus": list(taus), "iters_per_stage": opts.iters_per_stage,
        "batch_size": batch, "n_sequences": xs.n, "amp": amp,
        "time_s": time.perf_counter() - t0, "options": opts.to_dict(),
    }
    out: dict[str, tuple[Any, dict[str, Any]]] = {}
    for n in names:
        sq = sqs[n]
        m = sq.multiplier()
        info = {
            "layer": n, "format": sq.spec.name, "dst": sq.dst, "hard_fraction": hard[n],
            "saturated": sq.n_saturated(),
            "multiplier_min": 1.0 if m is None else float(m.detach().min()),
            "multiplier_max": 1.0 if m is None else float(m.detach().max()),
            "block": block_info,
        }
        out[n] = (sq.qtensor(), info)
    return out


# ------------------------------------------------------------------------------------------------
# The pipeline stage (hwsim.quant.stages)
# ------------------------------------------------------------------------------------------------

#: training budgets of the stage's ``budget`` option (docs/spec/algorithms.md §4.6, "Budgets"):
#: "cpu" (10-stage schedule x 5 steps, batch 2, lr 2e-2; SmolLM2-135M in about 5 minutes on 2
#: cores) and "paper" (20 stages x 250 steps, batch 4, lr 1e-3, fp16 autocast on CUDA); the AWQ
#: initialisation of the paper is the ``awq`` transform before this stage (``awq+tesseraq``)
BUDGETS = ("cpu", "paper")


def _number(lo: float, *, integer: bool = False, open_lo: bool = False):
    def check(v):
        if v is None:
            return True
        if isinstance(v, bool) or not isinstance(v, int if integer else (int, float)):
            return False
        return v > lo if open_lo else v >= lo
    return check


def _schedule_ok(v) -> bool:
    if v is None:
        return True
    from .tesseraq import resolve_schedule

    resolve_schedule(v)  # raises ValueError with the valid choices
    return True


TESSERAQ_OPTIONS = (
    Option("budget", "cpu", "training budget: the defaults of the options below", choices=BUDGETS),
    Option("schedule", None, "PAR schedule: 'default' (20 stages), 'short' (10) or a strictly decreasing list of "
           "soft fractions (None: the budget's)", check=_schedule_ok,
           valid="None, 'default', 'short' or a strictly decreasing list of fractions in (0, 1)"),
    Option("iters_per_stage", None, "Adam steps after each hardening (None: the budget's)",
           check=_number(0, integer=True), valid="None or an int >= 0"),
    Option("batch_size", None, "sequences per step (None: the budget's)", check=_number(1, integer=True),
           valid="None or an int >= 1"),
    Option("lr", None, "learning rate of the rounding logits (None: cpu 2e-2, paper 1e-3)", check=_number(0, open_lo=True),
           valid="None or a number > 0"),
    Option("scale_lr", None, "learning rate of the DST parameters (None: 1e-3)", check=_number(0, open_lo=True),
           valid="None or a number > 0"),
    Option("scale_weight_decay", None, "weight decay of the DST parameters (None: 1e-4)", check=_number(0),
           valid="None or a number >= 0"),
    Option("dst", True, "train the dequantization-scale multipliers 2σ(v) (integer formats only)",
           choices=(True, False)),
    Option("seed", 0, "seed of the training batch draw", check=_number(0, integer=True), valid="an int >= 0"),
)


def stage_options(budget: str, **given: Any) -> TesseraQOptions:
    """The TesseraQOptions of the stage's options: the budget's values, then every option not None."""
    from .tesseraq import PRESETS

    base = dataclasses.replace(PRESETS[budget], init="rtn")
    return dataclasses.replace(base, **{k: v for k, v in given.items() if v is not None})


def tesseraq_stage_block(data: BlockData, *, budget: str, **given: Any) -> dict[str, tuple[Any, dict]]:
    """TesseraQ of one decoder block (the pipeline's ``block_fn``): PAR + DST on the block's
    quantized-trajectory inputs against its full-precision targets."""
    return tesseraq_block(data.block_fn, data.linears, data.weight_formats, data.inputs, data.targets,
                          stage_options(budget, **given), act_quant=data.act_quant, block=data.block,
                          events=data.events, progress=data.progress)


@register_stage("tesseraq", kind="rounding", block_data=True, block_fn=tesseraq_stage_block,
                options=TESSERAQ_OPTIONS)
def tesseraq_stage(W: torch.Tensor, fmt, stats, *, layer: str, cache=None, **opts):
    """progressive adaptive rounding + dequantization-scale tuning, block by block (TesseraQ, §4.6)"""
    # only linears outside the decoder blocks (an unskipped lm_head) come here: no block to
    # reconstruct, so they keep the zero-iteration result, which is RTN (recorded)
    import hwsim.formats as F

    q = F.quantize(W.detach().to(torch.float32).contiguous().numpy(), fmt, axis=-1)
    info: dict[str, Any] = {"events": []}
    record(info["events"], STAGE, layer, "outside_blocks_rtn", True)
    return q, info
