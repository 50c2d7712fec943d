"""``quantize_model``: run a recipe (``[transform]* → rounding → [reconstruction]``) on a model.

The pipeline streams block by block (docs/spec/algorithms.md §2.3): it captures the inputs of block 0
once, then for each block collects the statistics its stages need with hooks (one statistic
per shared input), quantizes the block's linears into ``QLinear`` modules, frees the
statistics and advances the hidden states. With ``stats_source="fp"`` (LQER, QERA) the
statistics come from the full-precision trajectory; with ``"sequential"`` (GPTQ) from the model
whose earlier blocks, and earlier groups of the same block, are already quantized.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .calibrate import (FpStatsCache, LayerStats, StatsCollector, StopForward, _progress, as_token_ids, capture_block_inputs,
                        make_layer_stats, stat_bytes)
from .config import Recipe, get_recipe, validate_recipe
from .model import LinearGroup, ModelAdapter, get_adapter, set_module
from .dense import dense_linears
from .qlinear import ActQuantCache, QLinear, _to_torch
from .stages import TransformContext, get_stage

__all__ = ["quantize_model", "QuantReport", "quantize_linear", "quantized_linears", "model_records"]


@dataclass
class QuantReport:
    """What a pipeline run did: recipe, calibration provenance, per-layer metrics, recorded
    fall-backs (``events``: ``{stage, layer, kind, value}``) and wall time per stage (seconds)."""

    recipe: dict[str, Any]
    calib: dict[str, Any]
    layers: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    bits_per_weight: float = 0.0
    n_quantized: int = 0
    #: what "auto" options resolved to, per stage: e.g. ``{"gptq": {"act_order": {"true": 182, "false": 28}}}``
    resolved: dict[str, Any] = field(default_factory=dict)

    def add_time(self, stage: str, seconds: float) -> None:
        self.timings[stage] = self.timings.get(stage, 0.0) + seconds

    def to_dict(self) -> dict[str, Any]:
        return {"recipe": self.recipe, "calib": self.calib, "layers": self.layers, "events": self.events,
                "timings": self.timings, "bits_per_weight": self.bits_per_weight, "n_quantized": self.n_quantized,
                "resolved": self.resolved}

    def count_resolved(self, stage: str, option: str, value: Any) -> None:
        opt = self.resolved.setdefault(stage, {}).setdefault(option, {})
        key = str(value).lower()
        opt[key] = opt.get(key, 0) + 1


# ------------------------------------------------------------------------------------------------
# Algorithm calls (the algorithms live in hwsim.quant.algorithms and hwsim.quant.reconstruct)
# ------------------------------------------------------------------------------------------------


def _info_dict(info) -> dict[str, Any]:
    if info is None:
        return {}
    if isinstance(info, dict):
        return dict(info)
    if hasattr(info, "__dataclass_fields__"):
        return {k: getattr(info, k) for k in info.__dataclass_fields__}
    return {"info": repr(info)}


def _round(stage_name: str, W: torch.Tensor, fmt, stats: dict[str, torch.Tensor] | None, opts: dict, layer: str,
           cache: dict | None = None):
    """(QTensor, info dict) of one linear: the result its group or block already computed
    (``cache["rounded"]``), else the rounding stage's per-linear call."""
    done = cache.get("rounded", {}).pop(layer, None) if cache is not None else None
    if done is not None:
        q, info = done
        return q, _info_dict(info)
    q, info = get_stage(stage_name).fn(W, fmt, stats or {}, layer=layer, cache=cache, **opts)
    return q, _info_dict(info)


def _round_group(items, recipe: Recipe, stats: LayerStats, report: QuantReport | None) -> None:
    """Round the linears of one input together when the stage can (``group_fn``, e.g. GPTQ's
    joint sweep) and they share the weight format; the results wait in ``stats.cache["rounded"]``."""
    stage = get_stage(recipe.rounding)
    fmts = {cfg.w for _q, _l, cfg in items}
    if stage.group_fn is None or len(items) < 2 or len(fmts) != 1:
        return
    t0 = time.perf_counter()
    named = []
    for qname, lin, _cfg in items:
        W = lin.weight.detach().to(torch.float32).cpu()
        if not bool(torch.isfinite(W).all()):
            raise ValueError(f"{qname}: weight has non-finite values; refusing to quantize")
        named.append((qname, W))
    res = stage.group_fn(named, fmts.pop(), stats.as_dict(), stats.cache, **recipe.stage_options(recipe.rounding))
    stats.cache.setdefault("rounded", {}).update(res)
    if report is not None:
        report.add_time("round", time.perf_counter() - t0)


def _reconstruct(method: str, W, Wq, stats, rank: int, cfg, opts: dict, layer: str):
    from .reconstruct import reconstruct

    return reconstruct(method, W, Wq, stats, rank, fmt_a=cfg.a, fmt_b=cfg.b, axes=cfg.lowrank_axes, layer=layer,
                       **opts)


# ------------------------------------------------------------------------------------------------
# One linear
# ------------------------------------------------------------------------------------------------


@torch.no_grad()
def quantize_linear(linear: nn.Linear, cfg, recipe: Recipe, stats: LayerStats | None = None, *, name: str = "",
                    input_key: str | None = None, act_cache: ActQuantCache | None = None,
                    report: QuantReport | None = None, rounded: tuple | None = None,
                    pre_transform: tuple | None = None) -> QLinear:
    """Quantize one ``nn.Linear`` with the recipe's rounding and reconstruction into a QLinear.

    ``rounded``: ``(QTensor, info)`` already computed for this linear (a block-reconstruction
    stage), used instead of the rounding stage's per-linear call. ``pre_transform``: ``(T [in, in],
    kind)``, an online transform a transform stage left before this linear (``x' = x·T``)."""
    if not isinstance(linear, nn.Linear):
        raise ValueError(f"{name}: expected an nn.Linear, got {type(linear).__name__} (already quantized?)")
    W = linear.weight.detach().to(torch.float32).cpu()
    if not bool(torch.isfinite(W).all()):
        raise ValueError(f"{name}: weight has non-finite values; refusing to quantize")
    out_f, in_f = W.shape
    sdict = stats.as_dict() if stats is not None else {}
    t0 = time.perf_counter()
    if rounded is not None:
        q, rinfo = rounded[0], _info_dict(rounded[1])
    else:
        q, rinfo = _round(recipe.rounding, W, cfg.w, sdict, recipe.stage_options(recipe.rounding), name,
                          cache=stats.cache if stats is not None else None)
    t_round = time.perf_counter() - t0
    Wq = _to_torch(q.dequantize()).to(torch.float32)
    row: dict[str, Any] = {"layer": name, "in": in_f, "out": out_f, "w": cfg.w, "rank": 0,
                           "w_err_fro": float(torch.linalg.vector_norm((W - Wq).double())),
                           "t_round_s": t_round}
    for k in ("loss", "saturated", "damping", "percdamp", "act_order", "static_groups", "objective",
              "t_factor_s", "t_sweep_s", "raised_blocks", "saturation"):
        if k in rinfo and isinstance(rinfo[k], (int, float, str)):
            row[f"round_{k}"] = rinfo[k]
    events = list(rinfo.get("events", ()) or ())
    lowrank = None
    method = recipe.reconstruction
    t_rec = 0.0
    if method is not None and cfg.rank > 0:
        if cfg.rank > min(in_f, out_f):
            raise ValueError(f"{name}: rank={cfg.rank} exceeds min(in={in_f}, out={out_f})")
        t0 = time.perf_counter()
        rec = _reconstruct(method, W, Wq, sdict, cfg.rank, cfg, recipe.stage_options(method), name)
        t_rec = time.perf_counter() - t0
        A, B = rec[0], rec[1]
        info = getattr(rec, "info", None)
        qa = getattr(info, "qa", None) if info is not None else None
        qb = getattr(info, "qb", None) if info is not None else None
        lowrank = {"A": qa if qa is not None else A.to(torch.float32), "B": qb if qb is not None else B.to(torch.float32),
                   "xa_fmt": cfg.xa, "xab_fmt": cfg.xab}
        row["rank"] = cfg.rank
        if info is not None:
            for k in ("err_l1", "sigma_tail", "j0", "j", "damping", "svd_dtype", "floored_channels"):
                v = getattr(info, k, None)
                if v is not None:
                    row[k] = v
            events.extend(getattr(info, "events", ()) or ())
    row["t_reconstruct_s"] = t_rec
    pt, pt_kind = pre_transform if pre_transform is not None else (None, "none")
    ql = QLinear(q, linear.bias, x_fmt=cfg.x, bias_fmt=cfg.bias, lowrank=lowrank, mode="fake", name=name,
                 input_key=input_key, act_cache=act_cache, weight_deq=Wq, pre_transform=pt, pre_transform_kind=pt_kind)
    ql.to(linear.weight.device)
    ql.set_mode(recipe.mode, accumulator=recipe.accumulator if recipe.mode == "exact" else None)
    row["bits_per_weight"] = ql.bits_per_weight()
    if report is not None:
        report.layers.append(row)
        report.events.extend(dict(e) for e in events)
        report.add_time("round", t_round)
        report.add_time("reconstruct", t_rec)
        for k in ("t_factor_s", "t_sweep_s"):
            if isinstance(rinfo.get(k), float):
                report.add_time(f"round.{k[2:-2]}", rinfo[k])
        if "act_order" in rinfo:
            report.count_resolved(recipe.rounding, "act_order", rinfo["act_order"])
        if isinstance(rinfo.get("saturation"), str):
            report.count_resolved(recipe.rounding, "saturation", rinfo["saturation"])
    return ql


# ------------------------------------------------------------------------------------------------
# Whole model
# ------------------------------------------------------------------------------------------------


def _plan(adapter: ModelAdapter, recipe: Recipe):
    """[(block index or None, group, [(qualified name, module, LayerConfig)])] for the groups
    that have at least one linear to quantize."""
    plan = []
    for bidx, group in adapter.all_linear_groups(include_head=True):
        items = []
        for qname, _short, lin in group.items():
            cfg = recipe.layer_config(qname)
            if cfg is None:
                continue
            if isinstance(lin, QLinear):
                raise ValueError(f"{qname}: already a QLinear; quantize a fresh full-precision model")
            if not isinstance(lin, nn.Linear):
                raise ValueError(f"{qname}: expected nn.Linear, got {type(lin).__name__}")
            if cfg.rank > min(lin.in_features, lin.out_features) and recipe.reconstruction is not None:
                raise ValueError(f"{qname}: rank={cfg.rank} exceeds min(in={lin.in_features}, "
                                 f"out={lin.out_features})")
            items.append((qname, lin, cfg))
        if items:
            plan.append((bidx, group, items))
    return plan


@torch.no_grad()
def quantize_model(model: nn.Module, recipe: str | Recipe | dict, calib: Any = None, *,
                   adapter: ModelAdapter | None = None, progress: bool = True,
                   max_resident_bytes: int | None = None, calib_pass: str = "auto",
                   fp_stats: FpStatsCache | None = None, on_transformed=None) -> QuantReport:
    """Quantize ``model`` in place with ``recipe`` (a preset name, a Recipe or its dict).

    Args:
        calib: token ids ``LongTensor [N, T]`` (unpadded) or an object carrying them; needed when
            a stage uses statistics (GPTQ, L²QER, QERA).
        max_resident_bytes: budget for the statistics held at once (one block's); exceeding it
            raises a ValueError before collection.
        calib_pass: how sequential statistics are computed (``"auto"``, ``"piecewise"``, ``"stop"``,
            ``"full"``; see ``_streamed``); all give the same result, ``"auto"`` is the fastest.
        fp_stats: a cache of full-precision statistics for ``stats_source="fp"`` recipes: what it
            holds is used instead of a calibration pass, what is computed is added to it. The
            caller keys it by model, calibration tokens, transforms, batch size and sink weight.
        on_transformed: ``fn(model, adapter)`` called once the transform stages ran, before any
            rounding (e.g. a QSUR table of the transformed model).
    Returns:
        ``QuantReport``; it is also stored as ``model.hwsim_quant`` (used by ``save_quantized``).
    """
    recipe = validate_recipe(get_recipe(recipe))
    from .threads import prefer_workqueue

    prefer_workqueue()  # hwsim.quant.threads: numba workers that sleep, not spin, on shared cores
    adapter = adapter or get_adapter(model)
    t_start = time.perf_counter()
    plan = _plan(adapter, recipe)
    kinds = recipe.stat_kinds()
    block_stage = get_stage(recipe.rounding).block_data
    trains = [t for t in recipe.transforms if get_stage(t).calib]
    ids = None
    if kinds or block_stage or trains:
        if calib is None:
            need = (", ".join(kinds) if kinds else f"{recipe.rounding!r} reconstructs blocks on calibration data"
                    if block_stage else f"{trains[0]!r} trains on calibration data")
            raise ValueError(f"calib: recipe {recipe.name!r} needs calibration data ({need}); pass token ids [N, T]")
        ids = as_token_ids(calib)
    report = QuantReport(recipe=recipe.to_dict(), calib=_provenance(calib, ids, recipe))
    if max_resident_bytes is not None and kinds:
        for bidx, group, items in plan:
            need = _block_stat_bytes([g for b, g, _ in plan if b == bidx], kinds)
            if need > max_resident_bytes:
                where = f"block {bidx}" if bidx is not None else "lm_head"
                raise ValueError(f"max_resident_bytes={max_resident_bytes}: statistics of {where} need {need} bytes "
                                 f"({', '.join(kinds)}); raise the budget or drop R-based stages")
    tctx = TransformContext(recipe=recipe, progress=progress)
    if recipe.transforms:
        t0 = time.perf_counter()
        for t in recipe.transforms:
            stage = get_stage(t)
            tctx.calib = ids if stage.calib else None
            stage.fn(model, adapter, tctx, **recipe.stage_options(t))
            adapter = get_adapter(model)
        tctx.calib = None
        report.events.extend(dict(e) for e in tctx.events)
        plan = _plan(adapter, recipe)
        report.add_time("transform", time.perf_counter() - t0)
    if on_transformed is not None:
        on_transformed(model, adapter)
    caches: dict[str, ActQuantCache] = {}

    def quantize_group(group: LinearGroup, items, stats: LayerStats | None, rounded: dict | None = None):
        cache = caches.setdefault(group.input_key, ActQuantCache())
        if stats is not None and rounded is None:
            _round_group(items, recipe, stats, report)
        for qname, lin, cfg in items:
            ql = quantize_linear(lin, cfg, recipe, stats, name=qname, input_key=group.input_key, act_cache=cache,
                                 report=report, rounded=(rounded or {}).get(qname),
                                 pre_transform=tctx.pre_transforms.get(qname))
            set_module(model, qname, ql)

    if block_stage:
        _block_streamed(model, adapter, recipe, plan, ids, kinds, quantize_group, report, progress)
    elif not kinds:
        for _bidx, group, items in _progress(plan, progress, f"quantize[{recipe.name}]"):
            quantize_group(group, items, None)
    else:
        _streamed(model, adapter, recipe, plan, ids, kinds, quantize_group, report, progress, calib_pass, fp_stats)
    if recipe.attention.active:  # docs/spec/algorithms.md §3.3: Q/K/V/P quantizers through the adapter
        from .attention import install_attention_quant

        install_attention_quant(model, recipe.attention, adapter)
    _finish(model, report, recipe)
    report.timings["total"] = time.perf_counter() - t_start
    return report


def _block_stat_bytes(groups: list[LinearGroup], kinds) -> int:
    total = 0
    for g in groups:
        dim = g.linears[0].in_features
        total += sum(stat_bytes(k, dim) for k in kinds)
    return total


CALIB_PASSES = ("auto", "piecewise", "stop", "full")


def _llama_pieces_ok(adapter, block, groups) -> bool:
    """The piecewise pass reproduces ``LlamaDecoderLayer.forward`` (pre-norm attention, then a
    gated MLP ``down(act(gate(x)) * up(x))``, each added to the residual): only for LlamaAdapter
    models (LLaMA, Qwen2, Mistral, SmolLM2) with exactly the groups qkv, o, gate_up, down."""
    from .model import LlamaAdapter

    if type(adapter) is not LlamaAdapter:
        return False
    mlp = getattr(block, "mlp", None)
    need = (hasattr(block, "input_layernorm") and hasattr(block, "post_attention_layernorm")
            and hasattr(getattr(block, "self_attn", None), "o_proj") and mlp is not None
            and all(hasattr(mlp, a) for a in ("gate_proj", "up_proj", "down_proj", "act_fn")))
    if not need or type(mlp).forward is not _llama_mlp_forward():
        return False
    return [g.name for g in groups] == ["qkv", "o", "gate_up", "down"]


def _llama_mlp_forward():
    try:
        from transformers.models.llama.modeling_llama import LlamaMLP
    except ImportError:  # pragma: no cover
        return None
    return LlamaMLP.forward


def _streamed(model, adapter, recipe, plan, ids, kinds, quantize_group, report, progress, calib_pass="auto",
              fp_stats: FpStatsCache | None = None):
    """Stream the blocks: statistics, quantization, propagation (docs/spec/algorithms.md §2.3, §2.5).

    ``stats_source="fp"``: one forward of each block collects every group's statistics.
    ``"sequential"``: the statistics of each group come from the block whose earlier groups are
    already quantized. ``calib_pass`` chooses how: ``"piecewise"`` (LLaMA-style blocks; the default
    there under ``"auto"``) computes the block once, piece by piece (norm → q/k/v; attention up to
    o_proj; residual + post-norm → gate/up; gated product → down; residual = the block output), so
    statistics and propagation together cost one block forward; ``"stop"`` (``"auto"`` elsewhere)
    runs the block only up to each group's first linear and then once in full to propagate;
    ``"full"`` (the pre-issue-17 path) runs the whole block once per group and once to propagate.
    All give the same statistics and outputs bit for bit.
    """
    if calib_pass not in CALIB_PASSES:
        raise ValueError(f"calib_pass must be one of {CALIB_PASSES}, got {calib_pass!r}")
    bs = int(recipe.calib_batch_size)
    sw = recipe.sink_weight_for("rxx")
    tag = f"{recipe.name}:{recipe.stats_source}"
    if recipe.stats_source == "fp" and fp_stats is not None and all(fp_stats.covers(g, kinds) for _, g, _ in plan):
        for _bidx, group, items in _progress(plan, progress, f"quantize[{recipe.name}]"):
            quantize_group(group, items, fp_stats.get(group, kinds, batch_size=bs, state_tag=tag, sink_weight=sw))
        report.calib["fp_stats"] = "cached"
        return
    t0 = time.perf_counter()
    binp = capture_block_inputs(model, ids, adapter=adapter, batch_size=bs)
    report.add_time("calibrate", time.perf_counter() - t0)
    hs = binp.hidden
    blocks = adapter.blocks()
    by_block: dict[Any, list] = {}
    for bidx, group, items in plan:
        by_block.setdefault(bidx, []).append((group, items))
    it = _progress(range(len(blocks)), progress, f"quantize[{recipe.name}]", total=len(blocks))
    for i in it:
        block = blocks[i]
        todo = by_block.get(i, [])

        def run_block(hook_groups, stop=None):
            t = time.perf_counter()
            outs = []
            with StatsCollector(hook_groups, kinds, batch_size=bs, state_tag=tag, sink_weight=sw) as col, \
                    dense_linears(block):
                if stop is not None:
                    col.stop_at(stop)
                for h in hs:
                    try:
                        outs.append(adapter.block_forward(block, h, binp.context(i, h)))
                    except StopForward:
                        pass
            report.add_time("calibrate", time.perf_counter() - t)
            return col.stats, outs

        if recipe.stats_source == "fp":
            stats, outs = run_block([g for g, _ in todo])
            for group, items in todo:
                if fp_stats is not None:
                    fp_stats.put(stats[group.input_key])
                quantize_group(group, items, stats[group.input_key])
            del stats
            hs = outs
            continue
        mode = calib_pass
        all_groups = adapter.linear_groups(block)
        if mode in ("auto", "piecewise"):
            ok = _llama_pieces_ok(adapter, block, all_groups)
            if mode == "piecewise" and not ok:
                raise ValueError(f"calib_pass='piecewise' needs a LLaMA-style block; {type(block).__name__} "
                                 "is not one (use 'stop' or 'auto')")
            mode = "piecewise" if ok else "stop"
        if mode == "piecewise":
            hs = _piecewise_block(adapter, block, i, hs, binp, todo, all_groups, kinds, bs, tag,
                                  quantize_group, report, sw)
            continue
        for group, items in todo:
            stats, _ = run_block([group], stop=group if mode == "stop" else None)
            quantize_group(group, items, stats[group.input_key])
            del stats
        t = time.perf_counter()
        hs = [adapter.block_forward(block, h, binp.context(i, h)) for h in hs]
        report.add_time("propagate", time.perf_counter() - t)
    head = by_block.get(None)
    if head:
        group, items = head[0]
        t = time.perf_counter()
        norm = adapter.final_norm()
        with StatsCollector([group], kinds, batch_size=bs, state_tag=tag, sink_weight=sw) as col:
            ls = col.stats[group.input_key]
            for h in hs:
                ls.update(norm(h) if norm is not None else h)
        report.add_time("calibrate", time.perf_counter() - t)
        if fp_stats is not None and recipe.stats_source == "fp":
            fp_stats.put(ls)
        quantize_group(group, items, ls)


def _block_streamed(model, adapter, recipe, plan, ids, kinds, quantize_group, report, progress) -> None:
    """A block-reconstruction rounding stage (``Stage.block_data``, e.g. TesseraQ), block by block
    (docs/spec/algorithms.md §4.6): the full-precision block maps the full-precision trajectory to
    the targets (collecting the statistics a later reconstruction stage reads, ``stats_source="fp"``
    semantics); the stage learns the block's rounding from the quantized trajectory's inputs to
    those targets; the quantized block then advances the quantized trajectory. Linears outside the
    blocks (an unskipped lm_head) get the stage's per-linear rounding."""
    from .qlinear import fake_quant
    from .stages import BlockData

    stage = get_stage(recipe.rounding)
    opts = recipe.stage_options(recipe.rounding)
    bs = int(recipe.calib_batch_size)
    sw = recipe.sink_weight_for("rxx")
    tag = f"{recipe.name}:fp"
    t0 = time.perf_counter()
    binp = capture_block_inputs(model, ids, adapter=adapter, batch_size=bs)
    report.add_time("calibrate", time.perf_counter() - t0)
    contexts = _ContextSource(model, adapter, ids, binp)
    hs_fp = binp.hidden
    hs_q = list(hs_fp)
    blocks = adapter.blocks()
    by_block: dict[Any, list] = {}
    for bidx, group, items in plan:
        by_block.setdefault(bidx, []).append((group, items))
    for i in _progress(range(len(blocks)), progress, f"quantize[{recipe.name}]", total=len(blocks)):
        block = blocks[i]
        todo = by_block.get(i, [])
        t = time.perf_counter()
        with StatsCollector([g for g, _ in todo] if kinds else [], kinds, batch_size=bs, state_tag=tag,
                            sink_weight=sw) as col, dense_linears(block):
            targets = [adapter.block_forward(block, h, binp.context(i, h)) for h in hs_fp]
        stats = col.stats
        report.add_time("calibrate", time.perf_counter() - t)
        if todo:
            t = time.perf_counter()
            linears = {q: lin for _g, items in todo for q, lin, _c in items}
            cfgs = {q: cfg for _g, items in todo for q, _l, cfg in items}
            data = BlockData(
                index=i,
                block_fn=lambda x, i=i, block=block: adapter.block_forward(block, x, contexts.get(i, x.shape[0])),
                linears=linears, weight_formats={q: c.w for q, c in cfgs.items()},
                act_quant={q: (None if c.x is None else (lambda x, f=c.x: fake_quant(x.detach(), f, axis=-1)))
                           for q, c in cfgs.items()},
                inputs=hs_q, targets=targets, progress=False, block=block)
            with torch.enable_grad():
                rounded = stage.block_fn(data, **opts)
            report.add_time("round", time.perf_counter() - t)
            report.events.extend(dict(e) for e in data.events)
            for group, items in todo:
                quantize_group(group, items, stats.get(group.input_key) if kinds else None, rounded=rounded)
        t = time.perf_counter()
        hs_q = [adapter.block_forward(block, h, binp.context(i, h)) for h in hs_q]
        hs_fp = targets
        del stats
        report.add_time("propagate", time.perf_counter() - t)
    head = by_block.get(None)
    if head:
        group, items = head[0]
        norm = adapter.final_norm()
        with StatsCollector([group], kinds, batch_size=bs, state_tag=tag, sink_weight=sw) as col:
            ls = col.stats[group.input_key]
            for h in hs_fp:
                ls.update(norm(h) if norm is not None else h)
        quantize_group(group, items, ls)


class _ContextSource:
    """The keyword context a block needs for a mini-batch of b sequences: captured for the
    calibration batch sizes; for another b (a training batch), captured once from the model on
    the first b calibration sequences (the context depends on the batch shape, not the tokens)."""

    def __init__(self, model, adapter, ids, binp):
        self.model, self.adapter, self.ids, self.binp = model, adapter, ids, binp

    def get(self, block: int, b: int) -> dict[str, Any]:
        ctx = self.binp.ctx[block]
        if b not in ctx:
            if b > self.ids.shape[0]:
                raise ValueError(f"a batch of {b} sequences exceeds the {self.ids.shape[0]} calibration sequences")
            extra = capture_block_inputs(self.model, self.ids[:b], adapter=self.adapter, batch_size=b)
            for i, c in enumerate(extra.ctx):
                self.binp.ctx[i].setdefault(b, c[b])
        return ctx[b]


def _piecewise_block(adapter, block, i, hs, binp, todo, groups, kinds, bs, tag, quantize_group, report, sw=1.0):
    """One sequential pass over a LLaMA-style block (see ``_streamed``); returns the block outputs."""
    items_of = {g.input_key: items for g, items in todo}
    qkv, o, gate_up, down = groups
    clock = {"t": time.perf_counter()}

    def lap(stage):
        t = time.perf_counter()
        report.add_time(stage, t - clock["t"])
        clock["t"] = t

    def collect(group, xs):
        if group.input_key not in items_of:
            return
        if group.linears[0]._forward_pre_hooks:  # an online transform a transform stage left (down's H_m)
            xs = [_through_pre_hooks(group.linears[0], x) for x in xs]
        ls = make_layer_stats(group, kinds, batch_size=bs, state_tag=tag, sink_weight=sw)
        with torch.autocast(device_type=xs[0].device.type, enabled=False):
            for x in xs:
                ls.update(x)
            ls.as_dict()  # finalised here (R_xx's last buffered product), so it counts as calibration
        lap("calibrate")
        quantize_group(group, items_of[group.input_key], ls)
        clock["t"] = time.perf_counter()

    # q/k/v read the attention norm's output
    collect(qkv, [block.input_layernorm(h) for h in hs])
    # o_proj reads the attention output (block run up to o_proj, with q/k/v quantized)
    attn = []

    def grab(module, args):
        attn.append(args[0])
        raise StopForward

    handle = o.linears[0].register_forward_pre_hook(grab)
    try:
        for h in hs:
            try:
                adapter.block_forward(block, h, binp.context(i, h))
            except StopForward:
                pass
    finally:
        handle.remove()
    if len(attn) != len(hs):  # pragma: no cover - o_proj not reached
        raise RuntimeError(f"block {i}: o_proj was not reached by the piecewise pass")
    collect(o, attn)
    o_mod = block.self_attn.o_proj  # the QLinear once o is quantized
    h1 = [h + o_mod(a) for h, a in zip(hs, attn)]
    del attn
    x2 = [block.post_attention_layernorm(h) for h in h1]
    collect(gate_up, x2)
    mlp = block.mlp
    u = [mlp.act_fn(mlp.gate_proj(x)) * mlp.up_proj(x) for x in x2]
    del x2
    collect(down, u)
    out = [h + mlp.down_proj(x) for h, x in zip(h1, u)]
    lap("propagate")
    return out


def _through_pre_hooks(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """x as ``module`` sees it after its forward pre-hooks (statistics of the transformed input)."""
    for hook in list(module._forward_pre_hooks.values()):
        res = hook(module, (x,))
        if res is not None:
            x = res[0] if isinstance(res, tuple) else res
    return x


def _provenance(calib, ids, recipe) -> dict[str, Any]:
    prov: dict[str, Any] = {}
    if ids is not None:
        prov.update({"n_seq": int(ids.shape[0]), "seq_len": int(ids.shape[1]), "batch_size": recipe.calib_batch_size,
                     "sink_weight": recipe.sink_weight_for("rxx"),
                     "stats_source": recipe.stats_source})
    meta = getattr(calib, "provenance", None) or getattr(calib, "meta", None)
    if callable(meta):
        meta = meta()
    if isinstance(meta, dict):
        prov.update({k: v for k, v in meta.items() if isinstance(v, (str, int, float, bool, type(None)))})
    elif meta is not None and hasattr(meta, "__dataclass_fields__"):
        prov.update({k: getattr(meta, k) for k in meta.__dataclass_fields__
                     if isinstance(getattr(meta, k), (str, int, float, bool, type(None)))})
    return prov


def quantized_linears(model: nn.Module) -> list[tuple[str, QLinear]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, QLinear)]


def model_records(model: nn.Module):
    """``QLinearRecord`` of every QLinear in the model, then an ``AttentionRecord`` of every
    attention module with quantizers (KV-cache bits; ``kind="attention"``): the cost model's input."""
    from .attention import attention_records

    return [m.record() for _, m in quantized_linears(model)] + attention_records(model)


def _finish(model: nn.Module, report: QuantReport, recipe: Recipe) -> None:
    qls = quantized_linears(model)
    num = sum(m.bits_per_weight() * m.in_features * m.out_features for _, m in qls)
    den = sum(m.in_features * m.out_features for _, m in qls)
    report.bits_per_weight = num / den if den else 0.0
    report.n_quantized = len(qls)
    model.hwsim_quant = report
