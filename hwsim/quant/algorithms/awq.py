"""The ``awq`` transform stage (docs/spec/algorithms.md §4.6, "Initialisation"): AWQ-style
activation-aware scaling, then a symmetric clip search, the initialisation of TesseraQ's paper
(``"awq+tesseraq"``, preset ``tesseraq-w2g128``); it precedes any rounding (``"awq+rtn"``).

Block by block on the **full-precision trajectory** of the calibration ids (the inputs of block
ℓ+1 are the outputs of the unmodified block ℓ, as in llm-awq), in place:

1. **Capture** (one block pass): the inputs of the four groups ``{q,k,v}``, ``{o}``,
   ``{gate,up}``, ``{down}`` (OPT: ``{q,k,v}``, ``{out_proj}``, ``{fc1}``, ``{fc2}``) and the
   keyword context of the attention call.
2. **Scale search**, group by group in that order, each on the model as modified so far: with
   ``a`` the per-input-channel mean ``|x|`` of the group's input over every calibration token
   (float64), ``s(α) = clamp(a^α, 1e-4)``, ``s ← s / sqrt(max(s)·min(s))`` (llm-awq's order:
   pow, clamp, normalise); for ``α = i/n_grid``, ``i = 0..n_grid−1`` the group's linears get the
   weights ``Q(W·diag(s))·diag(1/s)`` (``Q`` = fake quantization with each linear's own weight
   format ``recipe.layer_config(name).w``, blocks along in; a linear the recipe skips keeps W)
   and the consuming sub-module runs on the captured input: the attention module for q/k/v
   (its output after o_proj, o_proj unquantized), the MLP for gate/up (down unquantized), the
   linear itself for o and down. The loss is the mean squared difference from the sub-module's
   output with the current weights; the first α with the smallest loss wins (α = 0 is s = 1,
   i.e. plain RTN of the group, so the chosen loss never exceeds RTN's).
3. **Fold**, in float64, cast back to the model dtype: ``W ← W·diag(s)`` for the group's linears
   and ``1/s`` into the previous operator: the norm's gain for q/k/v and gate/up (RMSNorm
   ``γ/s``; Gemma's ``1+w`` gain: ``w ← (1+w)/s − 1``; LayerNorm ``γ/s, β/s``; so the stage
   works with or without ``fold_norms`` before it), v_proj's rows (and bias) for o only when
   ``H = H_kv`` (otherwise o is skipped: event ``awq_skip``), up_proj's (OPT: fc1's) rows and
   bias for down (OPT: ReLU is positively homogeneous and s > 0). Exactly function-preserving.
4. **Clip search** (``clip=True``), after the block's scaling, on ``clip_tokens`` tokens sampled
   (seeded) from the block's calibration tokens, for every quantized linear of the block except
   q and k (their output error says little about attention's): per output row and weight group
   (the format's group/block along in; a whole row for per-channel formats)
   ``W ← clamp(W, −p·max|W_g|, p·max|W_g|)`` with ``p = 1 − i/n_grid``, ``i < n_grid/2``
   (1, 0.95, …, 0.55 by default), choosing for each (row, group) the p that minimises the mean
   over the sampled tokens of the squared partial output ``Σ_{k∈g} x_k (Q(W_clip) − W)_{o,k}``
   (llm-awq's ``auto_clip`` criterion). Partial errors of different groups add up in a row's
   output, so that choice can lose to a single ratio for the whole row: each row finally takes
   whichever of the per-group choice, the best single ratio for the row and no clip (p = 1) gives
   the smallest full output error ``mean_t ‖x(Q(W_clip) − W)ᵀ‖²`` (float64; the rows that did not
   keep the per-group choice are counted in ``rows_uniform``). The clip therefore never
   increases any row's output error on the sampled tokens. The clipped weights are written into
   the model; the rounding stage quantizes them (its min-max then spans the clipped range).
   Formats whose quantization of a group depends on other groups (per-tensor scales, a tensor
   scale over blocks) and element formats without scales are not clipped (event).

Tokens: every calibration token counts once in ``a``, the α loss and the clip errors, except
each sequence's first position (BOS, the attention sink), which weighs the recipe's
``sink_weight`` (when unset: ``SINK_WEIGHT_DEFAULTS["awq"]``, 1; the same knob as for R_xx,
docs/quant.md). SmolLM2's sink dominates the α loss: ``sink_weight=0`` is what makes its scaling
pay off (docs/quant_algorithms.md, measured).

Events (``ctx.events``): ``awq_alpha`` per group (layer = the group's input key, value
``{alpha, loss, loss_rtn, losses}``), ``awq_clip`` per clipped linear (value ``{mean_ratio,
min_ratio, clipped, err, err_noclip, rows_uniform, tokens}``, errors as MSE of the linear's
output on the sampled tokens), ``awq_skip`` for a group or linear left alone (value: the reason).

Supported: every model the adapters support with pre-norm blocks (LLaMA family incl. SmolLM2,
Qwen2, Mistral; Gemma-3 text; pre-LN OPT); anything else raises an error naming the model type.
Weight formats: integer groups/channels (``int2/3/4_g128_asym`` is the paper's setting) and
MX/BFP blocks; activation and attention quantizers of the recipe are not simulated (AWQ is a
weight-only method).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from ..calibrate import _progress, as_token_ids, capture_block_inputs, model_vocab_size
from ..model import LlamaAdapter, ModelAdapter, OPTAdapter, get_adapter
from ..stages import Option, register_stage
from .common import check_finite, record

__all__ = ["AWQResult", "awq", "awq_scales", "clip_search", "clip_group_size", "OPTIONS", "MIN_SCALE",
           "CLIP_MAX_SHRINK"]

STAGE = "awq"
#: the clamp of s = a^α (llm-awq)
MIN_SCALE = 1e-4
#: the clip ratios p = 1 − i/n_grid run over i < CLIP_MAX_SHRINK·n_grid (llm-awq's max_shrink)
CLIP_MAX_SHRINK = 0.5
#: activations for which s folds through the non-gated MLP (positively homogeneous)
_HOMOGENEOUS = ("relu",)
#: keyword arguments of an attention call that carry a KV cache (transformers 4.x and 5.x names)
_CACHE_KWARGS = ("cache", "past_key_values", "past_key_value")


def _pos_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


OPTIONS = (
    Option("n_grid", 20, "grid size: α ∈ {0, 1/n_grid, …, (n_grid−1)/n_grid} and clip ratios "
           "p = 1 − i/n_grid, i < n_grid/2", check=_pos_int, valid="an int >= 1"),
    Option("clip", True, "symmetric clip search after the scaling (q and k are not clipped)", choices=(True, False)),
    Option("clip_tokens", 512, "calibration tokens sampled per block for the clip search", check=_pos_int,
           valid="an int >= 1"),
    Option("seed", 0, "seed of the clip search's token sample", check=lambda v: isinstance(v, int)
           and not isinstance(v, bool), valid="an int"),
)


@dataclass
class AWQResult:
    """What :func:`awq` chose: per group input key the α, the loss on the α grid and the scales s
    (float64, [in]); per clipped linear the clip ratios [out, groups] and the output MSE on the
    sampled tokens with and without the clip; skipped groups/linears with the reason."""

    alphas: dict[str, float] = field(default_factory=dict)
    losses: dict[str, list[float]] = field(default_factory=dict)
    scales: dict[str, torch.Tensor] = field(default_factory=dict)
    clip_ratios: dict[str, torch.Tensor] = field(default_factory=dict)
    clip_err: dict[str, tuple[float, float]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


# ------------------------------------------------------------------------------------------------
# Pieces
# ------------------------------------------------------------------------------------------------


def awq_scales(a: torch.Tensor, alpha: float) -> torch.Tensor:
    """``s = clamp(a^α, 1e-4)``, then ``s / sqrt(max(s)·min(s))`` (float64). α = 0 gives s = 1."""
    s = a.to(torch.float64).pow(float(alpha)).clamp(min=MIN_SCALE)
    return s / torch.sqrt(s.max() * s.min())


def _resolve(fmt):
    from ..qlinear import resolve_format

    return resolve_format(fmt)


def _fake_quant(W: torch.Tensor, spec) -> torch.Tensor:
    """Fake quantization of a weight [out, in] along in, in float32."""
    from ..qlinear import fake_quant

    return fake_quant(W.to(torch.float32), spec, axis=-1).to(torch.float32)


def _scaled_quant(W: torch.Tensor, s: torch.Tensor, spec) -> torch.Tensor:
    """``Q(W·diag(s))·diag(1/s)`` in W's dtype (W itself when the linear is not quantized)."""
    if spec is None:
        return W
    Ws = W.to(torch.float64) * s.to(W.device)[None, :]
    return (_fake_quant(Ws, spec).to(torch.float64) / s.to(W.device)[None, :]).to(W.dtype)


def clip_group_size(spec, n_in: int) -> int | None:
    """Length along in of the independent groups of a weight format's clip search: the group size
    (integer groups) or block size (MX/BFP), ``n_in`` for per-channel integer formats, None where
    a group's quantization depends on other groups (per-tensor scale, a tensor scale) or the
    format has no scale (not clipped)."""
    name = type(spec).__name__
    if name == "ScaledIntSpec":
        if spec.granularity == "group":
            return int(spec.group_size)
        if spec.granularity in ("channel", "token"):
            return int(n_in)
        return None
    if name == "BlockSpec":
        return int(spec.block_size) if getattr(spec, "tensor_scale", None) is None else None
    return None


def _partial_err(Xg: torch.Tensor, D: torch.Tensor, chunk_elems: int = 1 << 24) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared partial outputs of a weight error, averaged over tokens: Xg [G, n, g] (the input by
    group), D [out, G, g] -> per (row, group) ``mean_t (Σ_{k∈g} x_k D_{o,k})²`` [out, G] and per row
    ``mean_t (Σ_k x_k D_{o,k})²`` [out] (the row's full output error), both float64."""
    G, n, _ = Xg.shape
    out = D.shape[0]
    rows = max(1, chunk_elems // max(1, n * G))
    err = torch.empty(out, G, dtype=torch.float64, device=D.device)
    full = torch.empty(out, dtype=torch.float64, device=D.device)
    for r in range(0, out, rows):
        P = torch.bmm(Xg, D[r:r + rows].permute(1, 2, 0))  # [G, n, rows]
        err[r:r + rows] = P.square().mean(1).T.to(torch.float64)
        full[r:r + rows] = P.sum(0).square().mean(0).to(torch.float64)
    return err, full


@torch.no_grad()
def clip_search(W: torch.Tensor, X: torch.Tensor, fmt, *, n_grid: int = 20, max_shrink: float = CLIP_MAX_SHRINK,
                layer: str | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
    """AWQ's symmetric clip search of one linear (see the module docstring, step 4).

    Args:
        W: weight [out, in]; X: its input on the sampled tokens [n, in]; fmt: the weight format
            (a name or spec whose groups are independent, :func:`clip_group_size`).
    Returns:
        ``(W_clip, info)``: the clipped weight (float32, [out, in]) and ``{"ratios": [out, G]
        float64 tensor, "err": float, "err_noclip": float, "rows_uniform": int}``, errors the
        mean over tokens and outputs of the squared output error of the quantized weight,
        ``rows_uniform`` the rows that took one ratio for all their groups (p = 1 included)
        because it beat the per-group choice on the row's full output error.
    """
    spec = _resolve(fmt)
    if spec is None:
        raise ValueError(f"{layer or 'clip_search'}: no weight format to clip for")
    W32 = W.detach().to(torch.float32)
    X32 = X.detach().to(torch.float32).to(W32.device)
    check_finite(W32, "W", layer)
    check_finite(X32, "X", layer)
    out_f, n_in = W32.shape
    if X32.dim() != 2 or X32.shape[1] != n_in:
        raise ValueError(f"{layer or 'clip_search'}: X must be [n, {n_in}], got {tuple(X32.shape)}")
    gs = clip_group_size(spec, n_in)
    if gs is None:
        raise ValueError(f"{layer or 'clip_search'}: format {getattr(spec, 'name', spec)!r} has no independent "
                         "weight groups to clip (per-tensor or tensor-scaled)")
    G = -(-n_in // gs)
    pad = G * gs - n_in
    pad_fn = (lambda t: torch.nn.functional.pad(t, (0, pad))) if pad else (lambda t: t)
    Wp = pad_fn(W32).view(out_f, G, gs)
    Xg = pad_fn(X32).view(-1, G, gs).permute(1, 0, 2).contiguous()  # [G, n, g]
    amax = Wp.abs().amax(-1).to(torch.float64)  # [out, G]

    def clipped(p: torch.Tensor) -> torch.Tensor:
        lim = (amax * p).to(torch.float32).unsqueeze(-1)
        return torch.maximum(torch.minimum(Wp, lim), -lim).reshape(out_f, G * gs)[:, :n_in]

    dev = W32.device
    best_err = torch.full((out_f, G), math.inf, dtype=torch.float64, device=dev)
    best_p = torch.ones(out_f, G, dtype=torch.float64, device=dev)
    row_err = torch.full((out_f,), math.inf, dtype=torch.float64, device=dev)
    row_p = torch.ones(out_f, dtype=torch.float64, device=dev)
    for i in range(max(1, int(max_shrink * n_grid))):
        p = 1.0 - i / n_grid
        Wq = _fake_quant(clipped(torch.full_like(amax, p)), spec)
        err, full = _partial_err(Xg, pad_fn(Wq - W32).view(out_f, G, gs))
        better = err < best_err  # strict: ties keep the larger ratio (no clip first)
        best_err = torch.where(better, err, best_err)
        best_p = torch.where(better, torch.full_like(best_p, p), best_p)
        rbetter = full < row_err
        row_err = torch.where(rbetter, full, row_err)
        row_p = torch.where(rbetter, torch.full_like(row_p, p), row_p)
    # per row, the best of: the per-group choice (llm-awq), one ratio for the whole row, no clip
    # (float64 output errors, so the result never exceeds the unclipped error)
    X64 = X32.to(torch.float64)
    cands = [best_p, row_p[:, None].expand(out_f, G), torch.ones_like(best_p)]
    Wc = [clipped(p) for p in cands]
    errs = torch.stack([(X64 @ (_fake_quant(w, spec) - W32).to(torch.float64).T).pow(2).mean(0) for w in Wc])
    pick = torch.zeros(out_f, dtype=torch.long, device=dev)
    for c in (1, 2):  # strict: ties keep the earlier candidate
        pick = torch.where(errs[c] < errs.gather(0, pick[None])[0], torch.full_like(pick, c), pick)
    ratios = torch.stack(cands).gather(0, pick[None, :, None].expand(1, out_f, G))[0]
    W_clip = torch.stack(Wc).gather(0, pick[None, :, None].expand(1, out_f, n_in))[0]
    e_final = errs.gather(0, pick[None])[0]
    return W_clip, {"ratios": ratios.clone(), "err": float(e_final.mean()), "err_noclip": float(errs[2].mean()),
                    "rows_uniform": int((pick > 0).sum())}


def _scale_cols(lin: nn.Module, s: torch.Tensor) -> None:
    W = lin.weight.detach()
    lin.weight.data = (W.to(torch.float64) * s.to(W.device)[None, :]).to(W.dtype)


def _scale_rows(lin: nn.Module, s: torch.Tensor) -> None:
    W = lin.weight.detach()
    lin.weight.data = (W.to(torch.float64) / s.to(W.device)[:, None]).to(W.dtype)
    if getattr(lin, "bias", None) is not None:
        b = lin.bias.detach()
        lin.bias.data = (b.to(torch.float64) / s.to(b.device)).to(b.dtype)


def _scale_norm(norm, s: torch.Tensor) -> None:
    """Divide a norm's output by s: RMSNorm ``γ/s``, Gemma ``w ← (1+w)/s − 1``, LayerNorm ``γ/s, β/s``."""
    m = norm.module
    w = m.weight.detach()
    w64, s = w.to(torch.float64), s.to(w.device)
    if norm.kind == "rms":
        m.weight.data = (w64 / s).to(w.dtype)
    elif norm.kind == "rms_1p":
        m.weight.data = ((1.0 + w64) / s - 1.0).to(w.dtype)
    elif norm.kind == "layernorm":
        m.weight.data = (w64 / s).to(w.dtype)
        if getattr(m, "bias", None) is not None:
            b = m.bias.detach()
            m.bias.data = (b.to(torch.float64) / s).to(b.dtype)
    else:  # pragma: no cover - the adapters only produce the three kinds
        raise ValueError(f"{norm.name}: norm kind {norm.kind!r} cannot carry a scale")


def _check_supported(ad: ModelAdapter) -> None:
    mtype = getattr(ad.config, "model_type", None)
    if not isinstance(ad, (LlamaAdapter, OPTAdapter)):
        raise ValueError(f"awq: model type {mtype!r} is not supported (the scales fold into pre-norm LLaMA-family, "
                         "Gemma-3 and OPT blocks)")
    if not ad.pre_norm:
        raise ValueError(f"awq: model type {mtype!r} with post-LN blocks (do_layer_norm_before=False) is not "
                         "supported: no norm precedes q/k/v and fc1 to carry 1/s")


# ------------------------------------------------------------------------------------------------
# One block
# ------------------------------------------------------------------------------------------------


class _Capture:
    """Inputs of chosen modules over a block pass (all tokens, or the flat token rows ``select``)
    and, optionally, the attention call's arguments per batch."""

    def __init__(self, modules: dict[str, nn.Module], attn: nn.Module | None, select: torch.Tensor | None = None):
        self.x: dict[str, list[torch.Tensor]] = {k: [] for k in modules}
        self.calls: list[tuple[tuple, dict]] = []
        self.select = select
        self.offset = 0
        self.handles = [m.register_forward_pre_hook(self._hook(k)) for k, m in modules.items()]
        if attn is not None:
            self.handles.append(attn.register_forward_pre_hook(self._attn_hook, with_kwargs=True))

    def _hook(self, key):
        def hook(_m, args):
            x = args[0].detach()
            if self.select is not None:
                flat = x.reshape(-1, x.shape[-1])
                lo, hi = self.offset, self.offset + flat.shape[0]
                idx = self.select[(self.select >= lo) & (self.select < hi)] - lo
                x = flat[idx.to(flat.device)]
            self.x[key].append(x)

        return hook

    def _attn_hook(self, _m, args, kwargs):
        kw = dict(kwargs)
        for k in _CACHE_KWARGS:  # the call is replayed once per α: nothing may append to a KV cache
            if kw.get(k) is not None:
                kw[k] = None
        self.calls.append((tuple(args), kw))

    def advance(self, n_tokens: int) -> None:
        self.offset += n_tokens

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


def _attn_runner(attn: nn.Module, calls: list[tuple[tuple, dict]]) -> Callable[[int, torch.Tensor], torch.Tensor]:
    def run(j: int, x: torch.Tensor) -> torch.Tensor:
        args, kwargs = calls[j]
        if "hidden_states" in kwargs or not args:
            out = attn(*args, **{**kwargs, "hidden_states": x})
        else:
            out = attn(x, *args[1:], **kwargs)
        return out[0] if isinstance(out, (tuple, list)) else out

    return run


def _mlp_runner(block: nn.Module, ad: ModelAdapter, up_group) -> Callable[[int, torch.Tensor], torch.Tensor] | None:
    lay = ad.mlp_layout(block)
    mlp = getattr(block, "mlp", None)
    if lay.gated and isinstance(mlp, nn.Module):
        return lambda _j, x: mlp(x)
    if not lay.gated and hasattr(block, "activation_fn"):
        fc1 = up_group.linears[0]
        fc2 = ad.linear_groups(block)[3].linears[0]
        return lambda _j, x: fc2(block.activation_fn(fc1(x)))
    return None


def _row_weights(n_rows: int, seq_len: int, sink_weight: float, device) -> torch.Tensor | None:
    """Weights of the flattened token rows of a batch (row r is position r % seq_len): the
    sequence's first position (BOS, the attention sink) weighs ``sink_weight``, the others 1;
    None when every weight is 1."""
    if sink_weight == 1.0:
        return None
    w = torch.ones(n_rows, dtype=torch.float64, device=device)
    w[::seq_len] = float(sink_weight)
    return w


def _search_alpha(items, specs, xs, run, a, n_grid, seq_len: int, sink_weight: float
                  ) -> tuple[float, list[float], torch.Tensor]:
    """α on the grid minimising the sub-module's output MSE (see the module docstring, step 2),
    each token weighted as in :func:`_row_weights`."""
    refs = [run(j, x) for j, x in enumerate(xs)]
    W0 = {name: lin.weight.detach().clone() for name, lin in items}
    losses: list[float] = []
    best = (math.inf, 0.0, None)
    try:
        for i in range(n_grid):
            alpha = i / n_grid
            s = awq_scales(a, alpha)
            for name, lin in items:
                lin.weight.data = _scaled_quant(W0[name], s, specs[name])
            tot, cnt = 0.0, 0.0
            for j, (x, ref) in enumerate(zip(xs, refs)):
                d = run(j, x).to(torch.float64) - ref.to(torch.float64)
                d = d.reshape(-1, d.shape[-1])
                w = _row_weights(d.shape[0], seq_len, sink_weight, d.device)
                if w is None:
                    tot += float(d.pow(2).sum())
                    cnt += d.numel()
                else:
                    tot += float((d.pow(2).sum(1) * w).sum())
                    cnt += float(w.sum()) * d.shape[1]
            loss = tot / cnt if cnt > 0 else 0.0
            losses.append(loss)
            if loss < best[0]:
                best = (loss, alpha, s)
    finally:
        for name, lin in items:
            lin.weight.data = W0[name]
    if best[2] is None:  # every loss NaN
        raise ValueError(f"awq: the scale search's loss is not finite for every α ({losses[:3]}...)")
    return best[1], losses, best[2]


def _mean_abs(xs: list[torch.Tensor], seq_len: int, sink_weight: float) -> torch.Tensor:
    """Per-channel mean |x| over the tokens (weighted as in :func:`_row_weights`), float64."""
    tot, n = None, 0.0
    for x in xs:
        flat = x.reshape(-1, x.shape[-1]).to(torch.float64)
        w = _row_weights(flat.shape[0], seq_len, sink_weight, flat.device)
        t = flat.abs().sum(0) if w is None else w @ flat.abs()
        tot = t if tot is None else tot + t
        n += flat.shape[0] if w is None else float(w.sum())
    if n <= 0:
        raise ValueError("awq: every calibration token has weight 0 (sink_weight = 0 with sequences of one token)")
    return tot / n


@torch.no_grad()
def _awq_block(ad: ModelAdapter, block: nn.Module, i: int, hs: list[torch.Tensor], binp, recipe, events: list,
               res: AWQResult, *, n_grid: int, clip: bool, clip_tokens: int, gen: torch.Generator,
               pre_transformed: set[str], sink_weight: float) -> list[torch.Tensor]:
    dev = next(block.parameters()).device
    seq_len = int(hs[0].shape[1])
    groups = ad.linear_groups(block)
    qkv, o, upg, down = groups
    norms = {n.feeds: n for n in ad.norms(block)}
    specs = {}
    for g in groups:
        for name, lin in zip(g.names, g.linears):
            if not isinstance(lin, nn.Linear):
                raise ValueError(f"awq: {name} is a {type(lin).__name__}, not an nn.Linear (a transform runs before "
                                 "the rounding stage)")
            check_finite(lin.weight.detach(), "weight", name)
            cfg = recipe.layer_config(name) if recipe is not None else None
            specs[name] = _resolve(cfg.w) if cfg is not None else None
    attn = ad.attention_module(block)
    firsts = {g.input_key: g.linears[0] for g in groups}
    # 1. capture on the full-precision trajectory (these outputs are the next block's inputs)
    cap = _Capture(firsts, attn)
    outs = []
    try:
        for h in hs:
            outs.append(ad.block_forward(block, h.to(dev), binp.context(i, h)).detach().to(h.device))
    finally:
        cap.remove()
    if len(cap.calls) != len(hs):  # pragma: no cover - attention not reached once per batch
        raise RuntimeError(f"awq: block {i}: the attention module ran {len(cap.calls)} times for {len(hs)} batches")

    v_lin = qkv.linears[2]
    lay = ad.attn_layout(block)
    mlp_lay = ad.mlp_layout(block)
    up_lin = next((lin for lin, sh in zip(upg.linears, upg.short) if sh == mlp_lay.up), upg.linears[-1])
    runners = {
        qkv.input_key: _attn_runner(attn, cap.calls),
        o.input_key: lambda _j, x, lin=o.linears[0]: lin(x),
        upg.input_key: _mlp_runner(block, ad, upg),
        down.input_key: lambda _j, x, lin=down.linears[0]: lin(x),
    }
    prev = {qkv.input_key: ("norm", norms.get(qkv.name)), o.input_key: ("rows", v_lin),
            upg.input_key: ("norm", norms.get(upg.name)), down.input_key: ("rows", up_lin)}

    # 2./3. scale search and fold, group by group
    for g in groups:
        key = g.input_key
        items = list(zip(g.names, g.linears))
        kind, target = prev[key]
        why = None
        if all(specs[n] is None for n, _l in items):
            why = "no linear of the group is quantized"
        elif any(n in pre_transformed or lin._forward_pre_hooks for n, lin in items):
            why = "an online transform precedes the group's linears"
        elif g is o and lay.n_heads != lay.n_kv_heads:
            why = (f"H = {lay.n_heads} != H_kv = {lay.n_kv_heads}: v_proj rows cannot carry a per-channel scale of "
                   "o_proj's input")
        elif g is down and not mlp_lay.gated and str(mlp_lay.activation).lower() not in _HOMOGENEOUS:
            why = f"activation {mlp_lay.activation!r} is not positively homogeneous"
        elif runners[key] is None:
            why = "no MLP module to evaluate"
        elif target is None:
            why = "no norm feeds the group"
        if why is not None:
            res.skipped[key] = why
            record(events, STAGE, key, "awq_skip", why)
            continue
        xs = cap.x[key]
        a = _mean_abs(xs, seq_len, sink_weight)
        check_finite(a, "mean |x|", key)
        alpha, losses, s = _search_alpha(items, specs, xs, runners[key], a, n_grid, seq_len, sink_weight)
        if kind == "norm":
            _scale_norm(target, s)
        else:
            _scale_rows(target, s)
        for _n, lin in items:
            _scale_cols(lin, s)
        res.alphas[key], res.losses[key], res.scales[key] = alpha, losses, s.cpu()
        record(events, STAGE, key, "awq_alpha", {"alpha": alpha, "loss": min(losses), "loss_rtn": losses[0],
                                                  "losses": losses})
    del cap

    # 4. clip search on sampled tokens of the scaled block
    if clip:
        n_tok = sum(h.shape[0] * h.shape[1] for h in hs)
        k = min(int(clip_tokens), n_tok)
        sel = torch.randperm(n_tok, generator=gen)[:k].sort().values
        cap2 = _Capture(firsts, None, select=sel)
        try:
            for h in hs:
                ad.block_forward(block, h.to(dev), binp.context(i, h))
                cap2.advance(h.shape[0] * h.shape[1])
        finally:
            cap2.remove()
        for g in groups:
            X = torch.cat(cap2.x[g.input_key], 0)
            if sink_weight != 1.0:  # weighted errors: row t scaled by sqrt(w_t · n / Σw)
                w = torch.where(sel % seq_len == 0, float(sink_weight), 1.0).to(torch.float64)
                X = X * (w * (len(w) / max(float(w.sum()), 1e-300))).sqrt().to(X.dtype).to(X.device)[:, None]
            for pos, (name, lin) in enumerate(zip(g.names, g.linears)):
                spec = specs[name]
                if spec is None or (g is qkv and pos < 2):  # not quantized; q and k are not clipped
                    continue
                if clip_group_size(spec, lin.in_features) is None:
                    res.skipped[name] = f"format {getattr(spec, 'name', spec)!r} has no independent groups to clip"
                    record(events, STAGE, name, "awq_skip", res.skipped[name])
                    continue
                W_clip, info = clip_search(lin.weight.detach(), X, spec, n_grid=n_grid, layer=name)
                lin.weight.data = W_clip.to(lin.weight.dtype)
                r = info["ratios"]
                res.clip_ratios[name] = r.cpu()
                res.clip_err[name] = (info["err"], info["err_noclip"])
                record(events, STAGE, name, "awq_clip", {
                    "mean_ratio": float(r.mean()), "min_ratio": float(r.min()),
                    "clipped": float((r < 1).double().mean()),
                    "err": info["err"], "err_noclip": info["err_noclip"], "rows_uniform": info["rows_uniform"],
                    "tokens": int(X.shape[0])})
    return outs


# ------------------------------------------------------------------------------------------------
# The model and the stage
# ------------------------------------------------------------------------------------------------


@torch.no_grad()
def awq(model: nn.Module, calib: Any, recipe, *, adapter: ModelAdapter | None = None, events: list | None = None,
        progress: bool = False, n_grid: int = 20, clip: bool = True, clip_tokens: int = 512, seed: int = 0,
        batch_size: int | None = None, pre_transformed: set[str] | frozenset[str] = frozenset(),
        sink_weight: float | None = None) -> AWQResult:
    """AWQ-style scaling and clip search of ``model`` in place (see the module docstring).

    Args:
        calib: token ids [N, T] (unpadded); recipe: a :class:`~hwsim.quant.config.Recipe` whose
            ``layer_config(name).w`` are the target weight formats (None: every linear high
            precision, nothing to do). ``batch_size``: sequences per block pass (default: the
            recipe's ``calib_batch_size``). ``pre_transformed``: qualified names of linears with
            an online transform before them (their group is skipped). ``sink_weight``: weight
            of each sequence's first position (BOS, the attention sink) in ``a``, the α loss and
            the clip errors (default: ``recipe.sink_weight_for("awq")``; 1 = every token counts once).
    """
    from ..threads import prefer_workqueue

    prefer_workqueue()  # numba workers that sleep, not spin, between the codec calls (hwsim.quant.threads)
    t0 = time.perf_counter()
    ad = adapter or get_adapter(model)
    _check_supported(ad)
    for opt, v in (("n_grid", n_grid), ("clip_tokens", clip_tokens)):
        if not _pos_int(v):
            raise ValueError(f"awq: option {opt!r}: {v!r} is not valid; valid: an int >= 1")
    events = events if events is not None else []
    ids = as_token_ids(calib, model_vocab_size(model))
    bs = int(batch_size or getattr(recipe, "calib_batch_size", 2) or 2)
    sw = float(recipe.sink_weight_for("awq") if sink_weight is None else sink_weight)
    if not (math.isfinite(sw) and sw >= 0):
        raise ValueError(f"awq: sink_weight must be a finite number >= 0, got {sw!r}")
    binp = capture_block_inputs(model, ids, adapter=ad, batch_size=bs)
    hs = binp.hidden
    gen = torch.Generator().manual_seed(int(seed))
    res = AWQResult()
    blocks = ad.blocks()
    for i in _progress(range(len(blocks)), progress, "awq", total=len(blocks)):
        hs = _awq_block(ad, blocks[i], i, hs, binp, recipe, events, res, n_grid=n_grid, clip=clip,
                        clip_tokens=clip_tokens, gen=gen, pre_transformed=set(pre_transformed), sink_weight=sw)
    res.seconds = time.perf_counter() - t0
    return res


@register_stage(STAGE, kind="transform", calib=True, options=OPTIONS)
def awq_stage(model, adapter, ctx, **options) -> None:
    """AWQ-style scaling (α grid per group) then symmetric clip search, exact folds (§4.6 init)"""
    awq(model, ctx.calib, ctx.recipe, adapter=adapter, events=ctx.events, progress=ctx.progress,
        pre_transformed=set(ctx.pre_transforms), **options)
