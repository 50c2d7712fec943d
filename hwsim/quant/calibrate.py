"""Calibration statistics gathered by forward pre-hooks on linear inputs (docs/spec/algorithms.md §2).

Kinds (``STAT_KINDS``):

- ``mean_abs_lqer``: running max over forward calls of the per-call mean of |x| (LQER
  convention, float32), finalised as ``clamp(s, 1e-4) / sqrt(min*max)``; the profiling batch
  size is part of its key.
- ``mean_sq``: float64 sum of x² per channel and a token count; finalised as the RMS
  ``r = sqrt(Σx²/n)``.
- ``rxx``: ``XᵀX`` formed in float32 (``outer_dtype``) products of up to ``GRAM_ROWS`` rows and
  summed in float64 on CPU; finalised as ``R = Σ/n`` [in, in] (weighted: the first positions'
  extra ``sink_weight - 1`` in float64). GPTQ's Hessian is ``2T·R`` and reuses it.
- ``mean_abs``: float64 sum of |x| per channel; finalised as the mean.

One statistic object per ``input_key`` (q/k/v share one, gate/up share one). Hooks are always
removed when collection ends, also on error.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import torch
from torch import nn

from .dense import dense_linear
from .model import LinearGroup, ModelAdapter, get_adapter

__all__ = [
    "STAT_KINDS",
    "MeanAbsLqer",
    "MeanSq",
    "Rxx",
    "MeanAbs",
    "LayerStats",
    "StatsCollector",
    "collect_stats",
    "as_token_ids",
    "check_token_range",
    "model_vocab_size",
    "capture_block_inputs",
    "BlockInputs",
    "FpStatsCache",
]

STAT_KINDS = ("mean_abs_lqer", "mean_sq", "rxx", "mean_abs")


class _Stat:
    kind = ""

    def __init__(self, dim: int):
        self.dim = dim
        self.n = 0

    def _check(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.dim:
            raise ValueError(f"x: last dimension {x.shape[-1]} does not match the statistic's {self.dim}")
        return x.detach().reshape(-1, self.dim)

    def update(self, x: torch.Tensor) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _require_tokens(self) -> None:
        """Every statistic refuses to finalise before it has seen a token (an all-zero
        statistic would silently turn an activation-aware method into its unaware one)."""
        if self.n == 0:
            raise ValueError(f"{self.kind}: no tokens were recorded; give calibration token ids [N, T] "
                             "with N >= 1 sequences and T >= 1 tokens")

    def finalize(self) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def nbytes(self) -> int:
        return 0


class MeanAbsLqer(_Stat):
    """LQER's activation magnitude: max over calls of mean |x| over the call's tokens."""

    kind = "mean_abs_lqer"

    def __init__(self, dim: int, clamp_min: float = 1e-4):
        super().__init__(dim)
        self.s = torch.zeros(dim, dtype=torch.float32)
        self.clamp_min = clamp_min

    def update(self, x):
        x = self._check(x).float()
        m = x.abs().mean(dim=0).cpu()
        self.s = torch.maximum(self.s, m)
        self.n += x.shape[0]

    def finalize(self):
        self._require_tokens()
        s = self.s.clamp(min=self.clamp_min)
        return s / torch.sqrt(s.min() * s.max())

    @property
    def nbytes(self):
        return 4 * self.dim


class MeanSq(_Stat):
    kind = "mean_sq"

    def __init__(self, dim: int):
        super().__init__(dim)
        self.sum = torch.zeros(dim, dtype=torch.float64)

    def update(self, x):
        x = self._check(x)
        self.sum += x.to(torch.float64).pow(2).sum(dim=0).cpu()
        self.n += x.shape[0]

    def finalize(self):
        self._require_tokens()
        return torch.sqrt(self.sum / self.n)

    @property
    def nbytes(self):
        return 8 * self.dim


#: column-block width of the Gram accumulation (``gram_lower``); 128 measured best or near it for
#: the 576- and 1536-wide inputs of SmolLM2 at 4,096 tokens per product
GRAM_BLOCK = 128
#: rows per Gram product in ``Rxx`` (smaller calls are buffered): at 1,024-row calls, one product
#: of 4,096 rows costs 0.81x (576 wide) and 0.88x (1536 wide) of four (idle, 2 threads)
GRAM_ROWS = 4096


def gram_lower(xt: torch.Tensor, out: torch.Tensor, block: int = GRAM_BLOCK) -> None:
    """out += xt·xtᵀ on and below the diagonal blocks (xt [d, n]: the inputs transposed, one row
    per channel; out [d, d] float64).

    The blocks above the diagonal are not touched (about half the flops of a full product, the
    work a BLAS ``syrk`` saves); ``symmetrize_lower`` completes the matrix. Each column block is
    one ``dense_linear`` (oneDNN) of contiguous row ranges of xt: with the 4,096-row buffer of
    ``Rxx`` filled transposed, 0.71x the time of MKL products of column slices of x at 1536 wide
    and 0.96x at 576 (16 calls of 1,024 rows, copies included, idle, 2 threads).
    """
    d, n = xt.shape
    if d <= 2 * block or n < block:  # small: one product (the blocks would cost more than they save)
        out += dense_linear(xt, xt).to(torch.float64).cpu()
        return
    for i in range(0, d, block):
        j = min(i + block, d)
        out[i:, i:j] += dense_linear(xt[i:], xt[i:j]).to(torch.float64).cpu()


def symmetrize_lower(a: torch.Tensor, block: int = GRAM_BLOCK) -> torch.Tensor:
    """The symmetric matrix whose lower triangle (diagonal included) is a's [d, d].

    Mirrored by row blocks of ``block`` (a transposed copy of the strictly lower part of each
    column block): 8.4 -> 3.3 ms at d = 1536 and 2.7 -> 0.4 ms at 576 against ``tril(a) +
    tril(a, -1)ᵀ`` (scratch timing, float64, 2 threads)."""
    d = a.shape[0]
    out = a.clone()
    for i in range(0, d, block):
        j = min(i + block, d)
        out[i:j, j:] = a[j:, i:j].T
        diag = a[i:j, i:j]
        out[i:j, i:j] = torch.tril(diag) + torch.tril(diag, -1).T
    return out


class Rxx(_Stat):
    """R = Σ w_t x_t x_tᵀ / Σ w_t; w_t = ``sink_weight`` for the first position of each sequence
    (inputs [b, T, d]; the BOS token, the attention sink), 1 elsewhere (issue 17).

    Accumulated in float64 from float32 (``outer_dtype``) products, the lower triangle only
    (``gram_lower``), and mirrored at ``finalize``: R is symmetric to the bit. Rows are copied,
    transposed, into a [d, ``GRAM_ROWS``] buffer and multiplied when it would overflow (one large
    product instead of many small ones) and at ``finalize``. The first positions' extra weight is
    one product of all of them at ``finalize``: a [d, d] update per call would cost as much as
    the call's own product.
    """

    kind = "rxx"

    def __init__(self, dim: int, outer_dtype: torch.dtype = torch.float32, sink_weight: float = 1.0):
        super().__init__(dim)
        self.outer_dtype = outer_dtype
        self.sink_weight = float(sink_weight)
        self.sum = torch.zeros(dim, dim, dtype=torch.float64)
        self.weight = 0.0
        self._buffer: torch.Tensor | None = None  # [dim, GRAM_ROWS]: rows not yet in ``sum``, transposed
        self._filled = 0
        self._sink_rows: list[torch.Tensor] = []  # first positions, [b, dim] per call

    def update(self, x):
        if self.sink_weight != 1.0 and x.dim() == 3:
            self._sink_rows.append(self._check(x[:, 0, :]).to(self.outer_dtype, copy=True))
            self.weight += (self.sink_weight - 1.0) * x.shape[0]
        x = self._check(x).to(self.outer_dtype)
        rows = x.shape[0]
        self.n += rows
        self.weight += rows
        if self._filled and self._filled + rows > GRAM_ROWS:
            self._flush()
        if rows >= GRAM_ROWS:
            gram_lower(x.T.contiguous(), self.sum)
            return
        if self._buffer is None or self._buffer.device != x.device:
            self._flush()
            self._buffer = torch.empty(self.dim, GRAM_ROWS, dtype=self.outer_dtype, device=x.device)
        self._buffer[:, self._filled:self._filled + rows].copy_(x.T)
        self._filled += rows

    def _flush(self) -> None:
        if self._filled:
            xt = self._buffer if self._filled == self._buffer.shape[1] else self._buffer[:, :self._filled].contiguous()
            gram_lower(xt, self.sum)
            self._filled = 0

    def finalize(self):
        self._require_tokens()
        self._flush()
        self._buffer = None
        total = self.sum
        if self._sink_rows:
            first = torch.cat(self._sink_rows).to(device="cpu", dtype=torch.float64)
            # float64 products of float32 values are exact; one fused product-and-add
            total = torch.addmm(self.sum, first.T, first, alpha=self.sink_weight - 1.0)
        return symmetrize_lower(total).div_(self.weight)

    @property
    def nbytes(self):
        return stat_bytes(self.kind, self.dim)


class MeanAbs(_Stat):
    kind = "mean_abs"

    def __init__(self, dim: int):
        super().__init__(dim)
        self.sum = torch.zeros(dim, dtype=torch.float64)

    def update(self, x):
        x = self._check(x)
        self.sum += x.to(torch.float64).abs().sum(dim=0).cpu()
        self.n += x.shape[0]

    def finalize(self):
        self._require_tokens()
        return self.sum / self.n

    @property
    def nbytes(self):
        return 8 * self.dim


_STAT_CLASSES = {"mean_abs_lqer": MeanAbsLqer, "mean_sq": MeanSq, "rxx": Rxx, "mean_abs": MeanAbs}


def stat_bytes(kind: str, dim: int) -> int:
    """Bytes one statistic of ``kind`` holds for a ``dim``-wide input (R_xx: its float64 sum and
    its float32 row buffer)."""
    return 8 * dim * dim + 4 * GRAM_ROWS * dim if kind == "rxx" else 8 * dim


@dataclass
class LayerStats:
    """Statistics of one input (shared by the linears of a group)."""

    input_key: str
    dim: int
    stats: dict[str, _Stat]
    batch_size: int | None = None
    state_tag: str = ""
    _final: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    #: derived objects shared by the linears reading this input (e.g. GPTQ's inverse factor)
    cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def n_tokens(self) -> int:
        return max((s.n for s in self.stats.values()), default=0)

    def update(self, x: torch.Tensor) -> None:
        for s in self.stats.values():
            s.update(x)

    def as_dict(self) -> dict[str, torch.Tensor]:
        """Finalised statistics by kind name (the ``stats`` argument of ``reconstruct``)."""
        for k, s in self.stats.items():
            if k not in self._final:
                self._final[k] = s.finalize()
        return dict(self._final)

    def __getitem__(self, kind: str) -> torch.Tensor:
        if kind not in self.stats:
            raise KeyError(f"statistic {kind!r} was not collected for {self.input_key}; have {sorted(self.stats)}")
        return self.as_dict()[kind]

    @property
    def nbytes(self) -> int:
        return sum(s.nbytes for s in self.stats.values())


def _check_kinds(kinds: Iterable[str]) -> tuple[str, ...]:
    kinds = tuple(dict.fromkeys(kinds))
    for k in kinds:
        if k not in _STAT_CLASSES:
            raise ValueError(f"kinds: unknown statistic {k!r}; valid: {', '.join(STAT_KINDS)}")
    return kinds


class StatsCollector(contextlib.AbstractContextManager):
    """Context manager registering one forward pre-hook per input key.

    ``groups`` is a list of ``LinearGroup``; the hook sits on the group's first linear (all of
    them read the same tensor). On exit, every hook is removed (also after an exception).
    """

    def __init__(self, groups: list[LinearGroup], kinds: Iterable[str], *, outer_dtype: torch.dtype = torch.float32,
                 batch_size: int | None = None, state_tag: str = "", sink_weight: float = 1.0):
        self.sink_weight = float(sink_weight)
        self.kinds = _check_kinds(kinds)
        self.groups = groups
        self.outer_dtype = outer_dtype
        self.stats: dict[str, LayerStats] = {}
        self.batch_size = batch_size
        self.state_tag = state_tag
        self._handles: list[Any] = []

    def __enter__(self):
        for g in self.groups:
            ls = make_layer_stats(g, self.kinds, outer_dtype=self.outer_dtype, batch_size=self.batch_size,
                                  state_tag=self.state_tag, sink_weight=self.sink_weight)
            self.stats[g.input_key] = ls
            self._handles.append(g.linears[0].register_forward_pre_hook(_make_hook(ls)))
        return self

    def stop_at(self, group: LinearGroup) -> None:
        """Stop every forward pass at ``group``'s first linear, after its statistics are recorded
        (raises ``StopForward``; catch it around the forward)."""
        self._handles.append(group.linears[0].register_forward_pre_hook(_stop_hook))

    def __exit__(self, *exc):
        self.remove()
        return False

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


def make_layer_stats(group: LinearGroup, kinds: Iterable[str], *, outer_dtype: torch.dtype = torch.float32,
                     batch_size: int | None = None, state_tag: str = "", sink_weight: float = 1.0) -> LayerStats:
    """Empty statistics of ``group``'s input (fill with ``LayerStats.update``); ``sink_weight``
    weights the first position of each sequence in ``rxx``."""
    lin = group.linears[0]
    dim = int(getattr(lin, "in_features", None) or lin.weight.shape[1])
    objs = {}
    for k in _check_kinds(kinds):
        objs[k] = Rxx(dim, outer_dtype, sink_weight) if k == "rxx" else _STAT_CLASSES[k](dim)
    return LayerStats(group.input_key, dim, objs, batch_size, state_tag)


def _stop_hook(module, args):
    raise StopForward


def _make_hook(ls: LayerStats):
    def hook(module, args):
        x = args[0] if args else None
        if x is None:
            return None
        with torch.autocast(device_type=x.device.type, enabled=False):
            ls.update(x)
        return None

    return hook


def as_token_ids(calib: Any, vocab_size: int | None = None) -> torch.Tensor:
    """Token ids ``LongTensor [N, T]`` from ``calib`` (tensor, dict with ``input_ids``, or an
    object with ``input_ids``/``ids``/``tokens``). Padded batches, empty ones (N = 0 or T = 0) and
    negative ids are rejected, and with ``vocab_size`` ids >= the vocabulary too."""
    mask = None
    ids = calib
    if isinstance(calib, dict) or hasattr(calib, "keys") and not isinstance(calib, torch.Tensor):
        ids = calib["input_ids"]
        mask = calib.get("attention_mask") if hasattr(calib, "get") else None
    elif not isinstance(calib, torch.Tensor):
        for attr in ("input_ids", "ids", "tokens"):
            if hasattr(calib, attr):
                ids = getattr(calib, attr)
                mask = getattr(calib, "attention_mask", None)
                break
    if not isinstance(ids, torch.Tensor):
        ids = torch.as_tensor(ids)
    if ids.ndim != 2 or ids.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"calib: expected integer token ids [N, T], got shape {tuple(ids.shape)} dtype {ids.dtype}")
    if ids.shape[0] == 0 or ids.shape[1] == 0:
        raise ValueError(f"calib: token ids of shape {tuple(ids.shape)} hold no tokens; give [N, T] with N >= 1 "
                         "sequences of T >= 1 tokens")
    if mask is not None and not bool(torch.as_tensor(mask).bool().all()):
        raise ValueError("calib: padded batches are not allowed (every token counts in every statistic)")
    ids = ids.long()
    check_token_range(ids, vocab_size)
    return ids


def check_token_range(ids: torch.Tensor, vocab_size: int | None) -> None:
    """Raise a ValueError naming ``calib`` if a token id is negative or (with ``vocab_size``) not
    below the vocabulary size: the embedding lookup would fail with a bare IndexError."""
    lo, hi = int(ids.min()), int(ids.max())
    if lo < 0:
        valid = "0 or more" if vocab_size is None else f"0..{vocab_size - 1}"
        raise ValueError(f"calib: token id {lo} is negative; valid ids: {valid}")
    if vocab_size is not None and hi >= vocab_size:
        n_bad = int((ids >= vocab_size).sum())
        raise ValueError(f"calib: token id {hi} is outside the model's vocabulary of {vocab_size} (valid ids "
                         f"0..{vocab_size - 1}; {n_bad} id(s) too large): were the ids made with another tokenizer?")


def model_vocab_size(model: nn.Module) -> int | None:
    """Rows of the model's input embedding (None if it has none that says)."""
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    n = getattr(emb, "num_embeddings", None)
    if n is None:
        n = getattr(getattr(model, "config", None), "vocab_size", None)
    return int(n) if n is not None else None


# ------------------------------------------------------------------------------------------------
# Whole-model collection
# ------------------------------------------------------------------------------------------------


@torch.no_grad()
def collect_stats(model: nn.Module, calib: Any, kinds: Iterable[str], *, adapter: ModelAdapter | None = None,
                  blocks: Iterable[int] | None = None, include_head: bool = False, batch_size: int = 2,
                  outer_dtype: torch.dtype = torch.float32, progress: bool = True) -> dict[str, LayerStats]:
    """Run the model over ``calib`` [N, T] in batches of ``batch_size`` and return the statistics
    of every input key of the selected blocks (all by default), keyed by ``input_key``."""
    adapter = adapter or get_adapter(model)
    ids = as_token_ids(calib, model_vocab_size(model))
    sel = set(range(len(adapter.blocks()))) if blocks is None else set(blocks)
    groups = [g for i, g in adapter.all_linear_groups(include_head=include_head) if (i in sel) or (i is None)]
    device = next(model.parameters()).device
    with StatsCollector(groups, kinds, outer_dtype=outer_dtype, batch_size=batch_size) as col:
        for start in _progress(range(0, ids.shape[0], batch_size), progress, "calibrate"):
            model(ids[start:start + batch_size].to(device), use_cache=False)
    return col.stats


def _progress(it, enabled: bool, desc: str, total: int | None = None):
    if not enabled:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, desc=desc, total=total, leave=False)


# ------------------------------------------------------------------------------------------------
# Block input capture (docs/spec/algorithms.md §2.4)
# ------------------------------------------------------------------------------------------------


class StopForward(Exception):
    """Sentinel that stops a forward pass at a block or a linear."""


_StopForward = StopForward


@dataclass
class BlockInputs:
    """Hidden states entering a block, split in mini-batches, plus the per-block context.

    ``hidden``: list of [b, T, d] tensors (CPU, model dtype); ``ctx[block][b]``: keyword arguments
    the model passes to that block for a mini-batch of b sequences.
    """

    hidden: list[torch.Tensor]
    ctx: list[dict[int, dict[str, Any]]]

    def context(self, block: int, h: torch.Tensor) -> dict[str, Any]:
        return self.ctx[block][h.shape[0]]

    @property
    def nbytes(self) -> int:
        return sum(h.numel() * h.element_size() for h in self.hidden)


@torch.no_grad()
def capture_block_inputs(model: nn.Module, calib: Any, *, adapter: ModelAdapter | None = None, batch_size: int = 2,
                         progress: bool = False) -> BlockInputs:
    """Run the embeddings and stop at block 0; store the hidden states and every block's context.

    The first mini-batch of each size runs to the last block so that the context of every block
    is recorded (Gemma-3 alternates sliding and global attention); the others stop at block 0.
    In that pass only block 0 computes: the model builds every block's keyword context before
    its block loop, so blocks 1 .. N-2 pass their input through (in block 0's output structure,
    a tensor) while their context is recorded (1.9 s → 0.1 s for SmolLM2's 30 blocks at 2 x
    512 tokens). A block output of another structure keeps the real forward.
    """
    adapter = adapter or get_adapter(model)
    ids = as_token_ids(calib, model_vocab_size(model))
    blocks = adapter.blocks()
    device = next(model.parameters()).device
    hidden: list[torch.Tensor] = []
    ctx: list[dict[int, dict[str, Any]]] = [dict() for _ in blocks]
    state = {"full": False}

    def make_hook(i):
        def hook(module, args, kwargs):
            h = args[0] if args else kwargs["hidden_states"]
            b = h.shape[0]
            kw = {k: v for k, v in kwargs.items() if k != "hidden_states"}
            if b not in ctx[i]:
                ctx[i][b] = _detach_ctx(kw)
            if i == 0:
                hidden.append(h.detach().to("cpu"))
            if not state["full"] or i == len(blocks) - 1:
                raise _StopForward
            return None

        return hook

    passed: list[nn.Module] = []

    def pass_through(*args, **kwargs):
        return args[0] if args else kwargs["hidden_states"]

    def after_block0(module, args, kwargs, output):
        # the blocks' forward is looked up before their pre-hooks run: set it here, before block 1
        if state["full"] and isinstance(output, torch.Tensor):
            for blk in blocks[1:-1]:
                if "forward" not in blk.__dict__:
                    blk.forward = pass_through  # this pass only; removed below
                    passed.append(blk)

    handles = [blk.register_forward_pre_hook(make_hook(i), with_kwargs=True) for i, blk in enumerate(blocks)]
    handles.append(blocks[0].register_forward_hook(after_block0, with_kwargs=True))
    try:
        for start in _progress(range(0, ids.shape[0], batch_size), progress, "capture"):
            chunk = ids[start:start + batch_size].to(device)
            state["full"] = chunk.shape[0] not in ctx[-1]
            try:
                model(chunk, use_cache=False)
            except _StopForward:
                pass
            finally:
                for blk in passed:
                    del blk.forward
                passed.clear()
    finally:
        for h in handles:
            h.remove()
    return BlockInputs(hidden, ctx)


def _detach_ctx(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach()
    if isinstance(obj, dict):
        return {k: _detach_ctx(v) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return tuple(_detach_ctx(v) for v in obj)
    if isinstance(obj, list):
        return [_detach_ctx(v) for v in obj]
    return obj


def iter_batches(n: int, batch_size: int) -> Iterator[slice]:
    for s in range(0, n, batch_size):
        yield slice(s, min(n, s + batch_size))


def rxx_budget_bytes(dims: Iterable[int]) -> int:
    return sum(8 * d * d for d in dims)



class FpStatsCache:
    """Finalised full-precision statistics by (input key, kind), reused across quantizations.

    With ``stats_source="fp"`` the statistics depend on the model, the calibration tokens, the
    transforms applied before collection, the batch size and the sink weight, never on the target
    formats: a study that quantizes one model in several formats computes them once. The caller
    keys one cache per such combination (``hwsim.dse`` does). ``get`` returns fresh
    :class:`LayerStats` holding clones, so a consumer may modify what it receives.
    """

    def __init__(self, final: dict[tuple[str, str], tuple[torch.Tensor, int]] | None = None):
        self.final: dict[tuple[str, str], tuple[torch.Tensor, int]] = dict(final or {})

    def covers(self, group: LinearGroup, kinds: Iterable[str]) -> bool:
        return all((group.input_key, k) in self.final for k in kinds)

    def get(self, group: LinearGroup, kinds: Iterable[str], **layer_stats_kw: Any) -> LayerStats:
        kinds = tuple(kinds)
        ls = make_layer_stats(group, kinds, **layer_stats_kw)
        for k in kinds:
            tensor, n = self.final[(group.input_key, k)]
            ls.stats[k].n = n
            ls._final[k] = tensor.clone()
        return ls

    def put(self, ls: LayerStats) -> None:
        for k, tensor in ls.as_dict().items():
            self.final[(ls.input_key, k)] = (tensor.clone(), ls.stats[k].n)

    def kinds(self) -> set[str]:
        return {k for _, k in self.final}
