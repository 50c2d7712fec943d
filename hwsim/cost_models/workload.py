"""Workload mapping: a quantized model description -> GEMMs and vector ops (docs/spec/cost_model.md §6).

Inputs are plain records (:class:`ModelSpec`, :class:`LinearSpec`, :class:`LowRank`). Builders:
:func:`from_config` (a transformers config, a dict, a local path or a known model name, plus one
format per linear role) and :func:`from_quantized` (a duck-typed description of a quantized model,
e.g. what ``hwsim.quant`` produces; interface in docs/cost_models.md). :func:`cost_model` runs
every GEMM on a :class:`~.array.SystolicArray` (or on all arrays of an :class:`~.array.ArrayBatch` at
once) and returns a :class:`ModelCost`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property, reduce
from typing import Any

import numpy as np

from .array import ArrayBatch, SystolicArray
from .breakdown import ENERGY_COMPONENTS, area_components, gemm_energy_components
from .fmt import HIGH_PRECISION_FORMAT, describe, is_unquantized
from .tech import load_data
from .units import build_pe, fp16_vector_adder

LLAMA_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
PHASES = ("prefill", "decode")
#: which positions of a prefill pass go through lm_head: "last" (each sequence's last position, the
#: logits generation needs; the default), "all" (every position: scoring, perplexity), "none"
#: (leave the head out). A decode step always runs the head on its ``batch`` positions.
HEAD_TOKENS = ("last", "all", "none")
HEAD_NAME = "lm_head"


@dataclass(frozen=True)
class LowRank:
    """Low-rank error-reconstruction branch Y += (X A) B (LQER / L2QER / QERA; identical cost).

    rank k; A (K x k) in ``a_fmt``; B (k x N) in ``b_fmt``; XA quantized to ``xa_fmt`` before the
    second GEMM; XAB to ``xab_fmt`` before the fp16 merge (None: no quantizer).
    """

    rank: int
    a_fmt: Any = "mxint8"
    b_fmt: Any = "mxint8"
    xa_fmt: Any = None  # default: the linear's x_fmt
    xab_fmt: Any = None

    def __post_init__(self):
        if not (isinstance(self.rank, int) and self.rank > 0):
            raise ValueError(f"lowrank.rank={self.rank!r} must be a positive integer")


@dataclass(frozen=True)
class LinearSpec:
    """One linear layer: Y[M,N] = X[M,K] W[K,N].

    shares_input_with: name of an earlier linear of the same layer with the same input (q/k/v,
    gate/up): its input quantizer is not charged again. pre_transform: None or ``hadamard(m)``
    (an online Walsh-Hadamard transform of size m before this linear, e.g. OSTQuant's before
    down_proj). act_quant: charge the input quantizer.
    """

    name: str
    K: int
    N: int
    w_fmt: Any
    x_fmt: Any
    acc: Any = None
    out_fmt: Any = None
    shares_input_with: str | None = None
    pre_transform: str | None = None
    act_quant: bool = True
    lowrank: LowRank | None = None

    def __post_init__(self):
        for f in ("K", "N"):
            v = getattr(self, f)
            if not (isinstance(v, int) and v > 0):
                raise ValueError(f"linear {self.name!r}: {f}={v!r} must be a positive integer")
        if self.pre_transform is not None:
            hadamard_size(self.pre_transform, self.name)
        if self.lowrank is not None and self.lowrank.rank > min(self.K, self.N):
            raise ValueError(f"rank={self.lowrank.rank} is above min(in, out) = min({self.K}, {self.N}) of linear "
                             f"{self.name!r}; valid: 1..{min(self.K, self.N)} (0: no low-rank branch)")


def hadamard_size(pre_transform: str, layer: str = "?") -> int:
    m = re.fullmatch(r"\s*hadamard\((\d+)\)\s*", str(pre_transform))
    if not m:
        raise ValueError(f"linear {layer!r}: pre_transform={pre_transform!r}; valid: None or 'hadamard(m)'")
    return int(m.group(1))


@dataclass(frozen=True)
class ModelSpec:
    """Model dims + phase + the per-layer linears.

    phase 'prefill': M = batch*seq; 'decode': M = batch per step, with ``context`` tokens of KV.
    layer_linears: one tuple of LinearSpec per layer. head: the lm_head GEMM (K = hidden, N =
    vocab) or None; ``head_tokens`` (:data:`HEAD_TOKENS`) says which prefill positions it runs on.
    not_costed: names of quantized linears outside the decoder layers that are not costed.
    """

    name: str
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    d_head: int
    layer_linears: tuple[tuple[LinearSpec, ...], ...]
    phase: str = "prefill"
    batch: int = 1
    seq: int = 512
    context: int = 512
    include_attention: bool = False
    attn_fmt: Any = "fp16"
    kv_fmt: Any = "fp16"
    vocab: int = 0
    not_costed: tuple[str, ...] = ()
    #: KV-cache storage bits per element (scales included); None: ``describe(kv_fmt).bits_per_element()``
    kv_bits: float | None = None
    head: LinearSpec | None = None
    head_tokens: str = "last"

    def __post_init__(self):
        if self.phase not in PHASES:
            raise ValueError(f"phase={self.phase!r} is unknown; valid: {list(PHASES)}")
        for f in ("layers", "hidden", "intermediate", "heads", "kv_heads", "d_head", "batch", "seq", "context"):
            v = getattr(self, f)
            if not (isinstance(v, int) and v > 0):
                raise ValueError(f"model {self.name!r}: {f}={v!r} must be a positive integer")
        if self.kv_bits is not None and not (isinstance(self.kv_bits, (int, float)) and 0 < self.kv_bits <= 64):
            raise ValueError(f"model {self.name!r}: kv_bits={self.kv_bits!r} must be a number in (0, 64]")
        if self.head_tokens not in HEAD_TOKENS:
            raise ValueError(f"model {self.name!r}: head_tokens={self.head_tokens!r}; valid: {list(HEAD_TOKENS)}")
        if len(self.layer_linears) != self.layers:
            raise ValueError(f"model {self.name!r}: layer_linears has {len(self.layer_linears)} layers, expected {self.layers}")

    @property
    def kv_bpe(self) -> float:
        """Bits per element of the KV cache."""
        return float(self.kv_bits) if self.kv_bits is not None else describe(self.kv_fmt).bits_per_element()

    @property
    def M(self) -> int:
        return self.batch * self.seq if self.phase == "prefill" else self.batch

    @property
    def tokens(self) -> int:
        return self.M

    @property
    def head_M(self) -> int:
        """Rows of the lm_head GEMM (0: not costed)."""
        if self.head is None or self.head_tokens == "none":
            return 0
        return self.M if (self.phase == "decode" or self.head_tokens == "all") else self.batch


# --------------------------------------------------------------------------------------------
# builders
# --------------------------------------------------------------------------------------------

def _get(cfg: Any, *names, default=None):
    for n in names:
        if isinstance(cfg, Mapping) and n in cfg:
            return cfg[n]
        if not isinstance(cfg, Mapping) and getattr(cfg, n, None) is not None:
            return getattr(cfg, n)
    return default


def known_models() -> dict[str, dict]:
    """Architectures shipped in data/models.toml (used when no config is at hand)."""
    return load_data("models")["model"]


def resolve_config(config: Any) -> Any:
    """A transformers config / dict as is; a known name from data/models.toml; or a local path
    (directory with config.json, or the json file) loaded with transformers.AutoConfig."""
    if not isinstance(config, str):
        return config
    key = config.lower()
    if key in known_models():
        return dict(known_models()[key])
    from pathlib import Path

    p = Path(config)
    if p.exists():
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(str(p.parent if p.is_file() else p))
    raise ValueError(f"model={config!r} is not a known model {sorted(known_models())} nor a local config path")


def model_dims(config: Any) -> dict:
    cfg = resolve_config(config)
    hidden = int(_get(cfg, "hidden_size", "n_embd", "d_model"))
    heads = int(_get(cfg, "num_attention_heads", "n_head"))
    dims = {
        "name": str(_get(cfg, "name_or_path", "_name_or_path", "name", default="model") or "model"),
        "layers": int(_get(cfg, "num_hidden_layers", "n_layer")),
        "hidden": hidden,
        "intermediate": int(_get(cfg, "intermediate_size", "ffn_dim", default=4 * hidden)),
        "heads": heads,
        "kv_heads": int(_get(cfg, "num_key_value_heads", default=heads)),
        "d_head": int(_get(cfg, "head_dim", default=hidden // heads)),
        "vocab": int(_get(cfg, "vocab_size", default=0)),
    }
    return dims


def llama_linears(d: Mapping) -> list[tuple[str, int, int, str | None]]:
    """(name, K, N, shares_input_with) of the seven LLaMA linears."""
    h, i, kv = d["hidden"], d["intermediate"], d["kv_heads"] * d["d_head"]
    q = d["heads"] * d["d_head"]
    return [("q_proj", h, q, None), ("k_proj", h, kv, "q_proj"), ("v_proj", h, kv, "q_proj"),
            ("o_proj", q, h, None), ("gate_proj", h, i, None), ("up_proj", h, i, "gate_proj"),
            ("down_proj", i, h, None)]


def from_config(config: Any, w: Any = "mxint4", a: Any = "mxint8", *, phase: str = "prefill", seq: int = 512,
                batch: int = 1, context: int | None = None, acc: Any = None, lowrank: LowRank | int | None = None,
                hadamard_down: bool = False, formats: Mapping[str, tuple[Any, Any]] | None = None,
                include_attention: bool = False, name: str | None = None, head_tokens: str = "last") -> ModelSpec:
    """ModelSpec for a LLaMA-style decoder from a config with one (w, a) format for every linear.

    formats: optional per-role override {"down_proj": (w_fmt, x_fmt), ...}; lm_head stays in
    HIGH_PRECISION_FORMAT unless ``formats["lm_head"]`` says otherwise. lowrank: a LowRank or a
    rank (MXINT8 factors) for every linear. hadamard_down: OSTQuant-style online Hadamard of size
    intermediate before down_proj. head_tokens: :data:`HEAD_TOKENS` (the head needs the config's
    vocabulary size).
    """
    d = model_dims(config)
    if isinstance(lowrank, int):
        lowrank = LowRank(lowrank)
    formats = dict(formats or {})
    per_layer = []
    for lname, K, N, share in llama_linears(d):
        wf, xf = formats.get(lname, (w, a))
        pre = f"hadamard({K})" if (hadamard_down and lname == "down_proj") else None
        per_layer.append(LinearSpec(lname, K, N, wf, xf, acc=_acc_for(acc, xf), shares_input_with=share,
                                    pre_transform=pre, lowrank=lowrank))
    _check_acc_fits(acc, per_layer)
    head = None
    if d["vocab"]:
        hw, hx = formats.get(HEAD_NAME, (HIGH_PRECISION_FORMAT, HIGH_PRECISION_FORMAT))
        head = LinearSpec(HEAD_NAME, d["hidden"], d["vocab"], _hp(hw), _hp(hx), act_quant=not is_unquantized(hx))
    return ModelSpec(name or d["name"], d["layers"], d["hidden"], d["intermediate"], d["heads"], d["kv_heads"],
                     d["d_head"], (tuple(per_layer),) * d["layers"], phase=phase, batch=batch,
                     seq=seq, context=context or seq, include_attention=include_attention, vocab=d["vocab"],
                     head=head, head_tokens=head_tokens)


def _acc_for(acc: Any, x_fmt: Any) -> Any:
    """A model-wide accumulator for one linear: a fixed-point one (``int24``, ``fixed:24:8``, ...)
    sizes the integer and block datapaths, a float one (``fp32``, ``fp16``, ``bf16``) the FP
    datapaths (float activations); a linear of the other kind keeps its unit's default (None)."""
    if acc is None:
        return None
    from hwsim.matmul.datapath import FloatAcc

    from .units import accumulator

    return acc if isinstance(accumulator(acc), FloatAcc) == (describe(x_fmt).kind == "fp") else None


def _record_acc(rec: Any, x_fmt: Any, default: Any) -> Any:
    """The accumulator one record's linear is costed with (docs/cost_models.md, "Accumulators"):

    1. the record's own ``acc`` (a cost-model field), when given;
    2. else, for a linear evaluated in exact mode (``mode == "exact"``), the ``accumulator`` it was
       evaluated with, when the cost model can price it on that datapath: a fixed-point one
       (``fixed:W:F...``, ``int<W>``) on integer and block datapaths, a float one on FP datapaths
       (float activations). The exact core's ``fp32`` on an integer or block datapath (block sums
       added in fp32; the cost model has no FP accumulator for integer units) and ``exact`` (no
       hardware) are not priced, so rule 3 applies to them;
    3. else ``default``: the hardware point's accumulator for datapaths of its kind
       (:func:`_acc_for`), or None (the unit's default: int32, fp32 on FP datapaths).

    So cost follows the accumulator the accuracy was measured with; a fake-mode record (which
    carries ``accumulator="fp32"``, fake mode's fp32 sum) is costed as before.
    """
    explicit = _field(rec, "acc")
    if explicit is not None:
        return explicit
    if _field(rec, "mode") == "exact":
        measured = _field(rec, "accumulator")
        if measured is not None:
            from hwsim.matmul.datapath import ExactAcc, parse_accumulator

            if not isinstance(parse_accumulator(measured), ExactAcc):
                fits = _acc_for(measured, x_fmt)
                if fits is not None:
                    return fits
    return default


def _check_acc_fits(acc: Any, linears) -> None:
    """``from_config``'s accumulator must size at least one linear (else it was a mistake, e.g. fp32 on
    MXINT); ``from_quantized`` does not ask it (a study's hardware axis meets every model)."""
    if acc is not None and linears and all(lin.acc is None for lin in linears):
        from .units import accumulator

        kind = "float" if accumulator(acc).kind == "float" else "fixed-point"
        raise ValueError(f"acc={acc!r} fits no linear of the model: a {kind} accumulator sizes "
                         f"{'FP datapaths (float activations)' if kind == 'float' else 'integer and block datapaths'}"
                         f"; give a {'fixed-point one (e.g. int32, fixed:24:8)' if kind == 'float' else 'float one (fp32, fp16, bf16)'}")


def _field(rec: Any, *names, default=None):
    return _get(rec, *names, default=default)


_LAYER_RE = re.compile(r"layers\.(\d+)\.")
#: ``pre_transform`` values that mean "no online transform"
NO_TRANSFORM = (None, "", "none")


def _hp(fmt: Any) -> Any:
    """A record's format, with None or 'none' (high precision) costed as HIGH_PRECISION_FORMAT."""
    return HIGH_PRECISION_FORMAT if fmt is None or is_unquantized(fmt) else fmt


def _record_transform(rec: Any, name: str, K: int) -> str | None:
    pre = _field(rec, "pre_transform")
    if pre in NO_TRANSFORM:
        return None
    if pre == "hadamard":
        return f"hadamard({int(_field(rec, 'pre_transform_size', default=K) or K)})"
    hadamard_size(str(pre), name)  # validates 'hadamard(m)'
    return str(pre)


def _record_lowrank(rec: Any) -> LowRank | None:
    lr = _field(rec, "lowrank")
    if lr is None or not (_field(lr, "rank", default=0) or 0):
        return None
    return LowRank(int(_field(lr, "rank")), _hp(_field(lr, "a_fmt")), _hp(_field(lr, "b_fmt")),
                   _field(lr, "xa_fmt"), _field(lr, "xab_fmt"))


def _interned(layers) -> tuple:
    """Equal layers as one tuple object, so cost_model's per-layer memo finds them by identity."""
    seen: dict = {}
    return tuple(seen.setdefault(layer, layer) for layer in layers)


def from_quantized(desc: Any, config: Any = None, *, phase: str = "prefill", seq: int = 512, batch: int = 1,
                   context: int | None = None, include_attention: bool = False, acc: Any = None,
                   head_tokens: str = "last") -> ModelSpec:
    """ModelSpec of a quantized model from its linear records (``hwsim.quant.model_records``).

    ``desc.linears`` (or ``desc`` itself): an iterable of records or a mapping name -> record.
    A record (object or dict) carries the fields of ``hwsim.quant.QLinearRecord``: ``name``
    (module path with ``layers.<i>.``; may be the mapping key), ``in_features`` (K),
    ``out_features`` (N), ``w_fmt``, ``x_fmt`` (None = high precision, costed as
    HIGH_PRECISION_FORMAT), ``input_key`` (records with equal keys read one input, quantized once;
    default: k/v share q's input, up shares gate's), ``pre_transform`` ('none', 'hadamard' of
    ``pre_transform_size``, or 'hadamard(m)'), ``lowrank`` (None or ``rank``, ``a_fmt``, ``b_fmt``,
    ``xa_fmt``, ``xab_fmt``), optional ``acc``, ``mode`` and ``accumulator`` (exact mode's: sizes
    the linear's datapath when the cost model can price it, before ``acc=``; :func:`_record_acc`). A record named ``lm_head`` gives
    the head's formats (without one the head is costed in HIGH_PRECISION_FORMAT, as hwsim.quant
    leaves it; ``head_tokens``: :data:`HEAD_TOKENS`); other records outside the decoder layers are
    listed in ``ModelSpec.not_costed``. Attention records (``kind ==
    "attention"``, ``hwsim.quant.attention.AttentionRecord``) give the KV cache's ``kv_bits`` per
    element (mean over layers) and its K format as ``kv_fmt``. ``acc`` sets the accumulator of
    every linear whose record names none it can be costed with (no ``acc``, no priceable
    exact-mode ``accumulator``) and whose activations are not a float element format (FP
    datapaths keep their FP accumulator). The config comes from ``config`` or ``desc.config``.
    """
    cfg = config if config is not None else _get(desc, "config")
    if cfg is None:
        raise ValueError("from_quantized: no config (pass config= or give the description a .config)")
    d = model_dims(cfg)
    recs = _get(desc, "linears", default=desc)
    items = list(recs.items()) if isinstance(recs, Mapping) else [(None, r) for r in recs]
    if not items:
        raise ValueError("from_quantized: the description holds no linear records (was the model quantized?)")
    roles = {n: (K, N, s) for n, K, N, s in llama_linears(d)}
    layers: dict[int, list[LinearSpec]] = {i: [] for i in range(d["layers"])}
    first_of_input: dict[tuple[int, str], str] = {}
    not_costed = []
    kv_bits, kv_fmts = [], []
    head_rec = None
    for key, rec in items:
        if _field(rec, "kind") == "attention":
            kv_bits.append(float(_field(rec, "kv_bits")))
            kv_fmts.append(_field(rec, "k_fmt") or _field(rec, "v_fmt"))
            continue
        name = _field(rec, "name", default=key)
        if name is None:
            raise ValueError("from_quantized: a record has no name")
        mt = _LAYER_RE.search(str(name))
        if not mt:
            if str(name).rsplit(".", 1)[-1] == HEAD_NAME:
                head_rec = rec
            else:
                not_costed.append(str(name))
            continue
        li = int(mt.group(1))
        if li not in layers:
            raise ValueError(f"linear {name!r}: layer index {li} outside 0..{d['layers'] - 1}")
        short = str(name).rsplit(".", 1)[-1]
        K0, N0, share = roles.get(short, (None, None, None))
        K = _field(rec, "in_features", default=K0)
        N = _field(rec, "out_features", default=N0)
        if K is None or N is None:
            raise ValueError(f"linear {name!r}: in_features/out_features missing and {short!r} is not a LLaMA linear "
                             f"{LLAMA_LINEARS}")
        input_key = _field(rec, "input_key")
        if input_key is not None:
            share = first_of_input.setdefault((li, str(input_key)), short)
            share = None if share == short else share
        wf, xf = _hp(_field(rec, "w_fmt")), _hp(_field(rec, "x_fmt"))
        default_acc = _acc_for(acc, xf)  # an accumulator sizes the datapaths of its kind only
        layers[li].append(LinearSpec(short, int(K), int(N), wf, xf,
                                     acc=_record_acc(rec, xf, default_acc), shares_input_with=share,
                                     pre_transform=_record_transform(rec, str(name), int(K)),
                                     act_quant=_field(rec, "x_fmt") is not None, lowrank=_record_lowrank(rec)))
    head = None
    if d["vocab"]:
        hw, hx = (_field(head_rec, "w_fmt"), _field(head_rec, "x_fmt")) if head_rec is not None else (None, None)
        head = LinearSpec(HEAD_NAME, d["hidden"], d["vocab"], _hp(hw), _hp(hx), act_quant=hx is not None,
                          acc=_record_acc(head_rec, _hp(hx), None) if head_rec is not None else None)
    return ModelSpec(d["name"], d["layers"], d["hidden"], d["intermediate"], d["heads"], d["kv_heads"], d["d_head"],
                     _interned(tuple(v) for _, v in sorted(layers.items())), phase=phase, batch=batch, seq=seq,
                     head=head, head_tokens=head_tokens,
                     context=context or seq, include_attention=include_attention, vocab=d["vocab"],
                     not_costed=tuple(not_costed), kv_fmt=_hp(next((f for f in kv_fmts if f), None)),
                     kv_bits=sum(kv_bits) / len(kv_bits) if kv_bits else None)


# --------------------------------------------------------------------------------------------
# op-count identities
# --------------------------------------------------------------------------------------------

def hadamard_factor(m: int) -> tuple[int, int]:
    """(K_f, n) with m = K_f * 2**n, as QuaRot: K_f = 1 for a power of two, else 4 x odd part."""
    if not (isinstance(m, int) and m > 0):
        raise ValueError(f"hadamard size m={m!r} must be a positive integer")
    odd, n = m, 0
    while odd % 2 == 0:
        odd //= 2
        n += 1
    if odd == 1:
        return 1, n
    if n < 2:
        raise ValueError(f"hadamard size m={m}: needs m = K_f * 2**n with K_f = 4 x odd (a Hadamard order)")
    return 4 * odd, n - 2


def hadamard_adds(m: int) -> int:
    """Additions per token of a Kronecker fast Walsh-Hadamard transform of size m."""
    kf, n = hadamard_factor(m)
    return m * n + 2 ** n * kf * (kf - 1)


def lqer_mult_counts(L: int, m: int, n: int, k: int) -> tuple[int, int]:
    """(#mult_LQER, #mult_GPTQ) for X:[L, m], W:[m, n], rank k (LQER authors' identities)."""
    return L * m * n + L * (m + n) * k, m * n + L * m * n


def lqer_crossover(m: int, n: int, k: int) -> float:
    """LQER needs fewer multiplies iff L < this bound = m*n/((m+n)*k)."""
    return m * n / ((m + n) * k)


# --------------------------------------------------------------------------------------------
# costing
# --------------------------------------------------------------------------------------------

# cost_model runs the same code on one SystolicArray (numbers) and on an ArrayBatch (a numpy array
# per hardware-dependent quantity, one element per array); these do on an array, element by
# element, exactly what the Python built-in does on a number (and are that built-in otherwise).

def _vmax(a, b):
    """max(a, b)."""
    return np.maximum(a, b) if isinstance(a, np.ndarray) or isinstance(b, np.ndarray) else max(a, b)


def _vceil(x):
    """math.ceil(x)."""
    return np.ceil(x).astype(np.int64) if isinstance(x, np.ndarray) else math.ceil(x)


def _vint(x):
    """int(x)."""
    return x.astype(np.int64) if isinstance(x, np.ndarray) else int(x)


def _vfloat(x):
    """float(x)."""
    return x.astype(np.float64) if isinstance(x, np.ndarray) else float(x)


BANDWIDTH_BOUND = "bandwidth_bound: DRAM stalls exceed 50 % of the cycles"


@dataclass
class ModelCost:
    """Result of :func:`cost_model`: per-linear table, totals and assumptions.

    area_components (um^2) and energy_components (pJ, whole pass) split the totals by hardware
    component (``breakdown.AREA_COMPONENTS`` / ``ENERGY_COMPONENTS``); each sums to its total.
    Of an :class:`~.array.ArrayBatch`: every value that depends on the array is a numpy array with
    one element per array (in rows, totals, area and the components), and ``warnings`` holds one
    list per array.
    """

    rows: list  # one dict per (layer, linear) and attention GEMM; as a DataFrame: per_layer
    totals: dict
    area: dict
    assumptions: dict
    warnings: list = field(default_factory=list)
    area_components: dict = field(default_factory=dict)
    energy_components: dict = field(default_factory=dict)

    @cached_property
    def per_layer(self):
        """pandas DataFrame of :attr:`rows` (built on first access)."""
        import pandas as pd

        return pd.DataFrame(self.rows)

    def summary(self):
        import pandas as pd

        return pd.Series(self.totals)


def cost_model(model: ModelSpec, array: SystolicArray | ArrayBatch, *, lowrank_placement: str = "separate",
               lowrank_array: SystolicArray | None = None, shared_mode: str = "widen",
               overlap_transforms: bool = False, hadamard_impl: str = "fwht",
               vector_lanes: int | None = None) -> ModelCost:
    """Cost every GEMM and vector op of ``model`` on ``array``.

    lowrank_placement: 'separate' (a second array of R*C/16 PEs running concurrently; latency =
    max(main, branch) + merge) or 'shared' (branch GEMMs follow the main GEMM on the main array).
    shared_mode: 'widen' (PE sized for the widest pair) or 'split' (ceil(b/b_port) passes).
    hadamard_impl: 'fwht' (fp16 vector unit, ceil(adds/V) cycles per token) or 'gemm'.

    Per decoder layer (identical layers are costed once and their rows repeated), each linear is
    costed in three steps: (1) the main GEMM, (2) its low-rank branch, (3) the online transform
    before it; then (4) the attention GEMMs of the layer. (5) costs lm_head on ``model.head_M`` rows (its row
    has ``layer == model.layers``); like the attention GEMMs it runs at its own formats without
    widening the array's PEs. (6) sums the rows into totals and sizes the arrays and the vector unit.

    ``array`` may be an :class:`~.array.ArrayBatch` (arrays differing in rows, cols, dataflow): the
    same steps run once with a numpy array per hardware-dependent quantity, and each element of
    the result equals (exactly) ``cost_model`` on that array alone; see :class:`ModelCost`.
    """
    if lowrank_placement not in ("separate", "shared"):
        raise ValueError(f"lowrank_placement={lowrank_placement!r}; valid: ['separate', 'shared']")
    if shared_mode not in ("widen", "split"):
        raise ValueError(f"shared_mode={shared_mode!r}; valid: ['widen', 'split']")
    if hadamard_impl not in ("fwht", "gemm"):
        raise ValueError(f"hadamard_impl={hadamard_impl!r}; valid: ['fwht', 'gemm']")
    if lowrank_array is None:  # R_lr * C_lr = R * C / 16 (the LQER hardware assumption)
        lowrank_array = array.with_(rows=_vmax(1, array.rows // 4), cols=_vmax(1, array.cols // 4))
    c = _Coster(model, array, lowrank_array, lowrank_placement, shared_mode, overlap_transforms,
                hadamard_impl, vector_lanes or array.cols)
    rows = []
    layer_memo: dict = {}  # identical layers (the usual case) are costed once
    for li, linears in enumerate(model.layer_linears):
        if linears in layer_memo:
            memo_rows, memo_energy = layer_memo[linears]
            rows.extend({**r, "layer": li} for r in memo_rows)
        else:
            memo_rows, memo_energy = layer_memo[linears] = c.layer(li, linears)
            rows.extend(memo_rows)
        c.charge(memo_energy)
    if model.head_M:                                                     # step 5
        rows.append(c.head(model.layers, model.head))
    return c.summarise(rows)


class _Coster:
    """The state of one cost_model() call: GEMM cache, energy by component, format pairs seen."""

    def __init__(self, model, array, lowrank_array, placement, shared_mode, overlap_transforms,
                 hadamard_impl, V):
        self.model, self.array, self.lowrank_array = model, array, lowrank_array
        self.placement, self.shared_mode = placement, shared_mode
        self.overlap_transforms, self.hadamard_impl, self.V = overlap_transforms, hadamard_impl, V
        self.M = model.M
        self.vec = fp16_vector_adder(array.tech)
        self.e_add = self.vec.energy("add")
        self.cache: dict = {}
        self.energy_by = dict.fromkeys(ENERGY_COMPONENTS, 0.0)
        self.pairs_main: set = set()
        self.pairs_lr: set = set()

    def run(self, arr, m, k, n, xf, wf, acc, qin):
        """(GemmResult, energy by component) of one GEMM, each distinct GEMM costed once."""
        key = (id(arr), m, k, n, describe(xf), describe(wf), acc, qin)
        if key not in self.cache:
            g = arr.gemm(m, k, n, xf, wf, acc=acc, quantize_input=qin)
            self.cache[key] = (g, gemm_energy_components(arr.pe_config(xf, wf, acc, k), g.energy_breakdown))
        return self.cache[key]

    def charge(self, components: dict, times: int = 1) -> None:
        for comp, pj in components.items():
            self.energy_by[comp] += pj * times

    # ---- one decoder layer -------------------------------------------------------------------
    def layer(self, li: int, linears) -> tuple[list[dict], dict]:
        """(rows, energy by component) of decoder layer ``li``; charges nothing to the model."""
        model_energy, self.energy_by = self.energy_by, dict.fromkeys(ENERGY_COMPONENTS, 0.0)
        rows = []
        quantized_inputs: set[str] = set()
        for lin in linears:
            share = lin.shares_input_with
            qin = lin.act_quant and not (share is not None and share in quantized_inputs)
            quantized_inputs.add(lin.name)
            row, g = self.main_gemm(li, lin, qin)                        # step 1
            layer_cycles = self.lowrank_branch(lin, row, g)              # step 2
            extra_cycles = self.transform(lin, row)                      # step 3
            row["cycles"] = layer_cycles + extra_cycles
            rows.append(row)
        if self.model.include_attention:                                 # step 4
            rows.extend(_attention_rows(self.model, self.array, li, self.run, self.charge))
        layer_energy, self.energy_by = self.energy_by, model_energy
        return rows, layer_energy

    def main_gemm(self, li: int, lin, qin: bool, M: int | None = None, sizes_array: bool = True) -> tuple[dict, Any]:
        """Step 1: the linear's GEMM on the main array (``M`` rows, default the model's); its row
        (cycles filled in later). ``sizes_array``: its format pair takes part in sizing the PEs."""
        M = self.M if M is None else M
        g, g_energy = self.run(self.array, M, lin.K, lin.N, lin.x_fmt, lin.w_fmt, lin.acc, qin)
        self.charge(g_energy)
        if sizes_array:
            self.pairs_main.add((describe(lin.x_fmt), describe(lin.w_fmt), lin.acc))
        row = {"layer": li, "linear": lin.name, "M": M, "K": lin.K, "N": lin.N, "w_fmt": g.w_format,
               "x_fmt": g.a_format, "macs": g.macs, "main_cycles": g.cycles, "compute_cycles": g.compute_cycles,
               "stall_cycles": g.stall_cycles, "energy_pj": g.energy_pj, "dram_bytes": g.dram_total_bytes,
               "weight_bytes": describe(lin.w_fmt).nbytes(lin.N, lin.K), "lowrank_macs": 0, "lowrank_cycles": 0,
               "transform_adds": 0, "transform_cycles": 0, "merge_cycles": 0}
        return row, g

    def lowrank_branch(self, lin, row: dict, g) -> int:
        """Step 2: x A then (x A) B on the low-rank array (or after the main GEMM on the main array),
        the merge into the main result; the layer's cycles so far."""
        if lin.lowrank is None:
            return g.cycles
        M, lr, e_add = self.M, lin.lowrank, self.e_add
        xa = lr.xa_fmt if lr.xa_fmt is not None else lin.x_fmt
        arr = self.lowrank_array if self.placement == "separate" else self.array
        g1 = self.run(arr, M, lin.K, lr.rank, lin.x_fmt, lr.a_fmt, None, False)[0]
        g2 = self.run(arr, M, lr.rank, lin.N, xa, lr.b_fmt, None, True)[0]
        passes = 1
        if self.placement == "shared" and self.shared_mode == "split":
            port = max(describe(lin.w_fmt).element_bits, 1)
            passes = max(math.ceil(describe(lr.a_fmt).element_bits / port),
                         math.ceil(describe(lr.b_fmt).element_bits / port))
        lr_cycles = (g1.cycles + g2.cycles) * passes
        lr_energy = (g1.energy_pj + g2.energy_pj) * passes
        if passes > 1:  # shift-add of the partial results of each extra pass
            lr_energy += (passes - 1) * (M * lr.rank + M * lin.N) * e_add
        if lr.xab_fmt is not None:
            cfg = build_pe(lr.xab_fmt, lr.xab_fmt, tech=self.array.tech, k=lin.N)
            if cfg.act_quant is not None:
                lr_energy += M * lin.N * cfg.act_quant.energy("quantize") + M * math.ceil(
                    lin.N / (cfg.act_group or lin.N)) * cfg.act_quant.energy("scale")
        merge = _vceil(M * lin.N / self.V)
        lr_energy += M * lin.N * e_add
        row.update(lowrank_macs=g1.macs + g2.macs, lowrank_cycles=lr_cycles, merge_cycles=merge)
        # a row's values may be a cached GEMM's arrays (ArrayBatch): add out of place, never +=
        row["energy_pj"] = row["energy_pj"] + lr_energy
        self.energy_by["lowrank"] += lr_energy
        row["dram_bytes"] = row["dram_bytes"] + g1.dram_total_bytes + g2.dram_total_bytes
        row["weight_bytes"] += describe(lr.a_fmt).nbytes(lr.rank, lin.K) + describe(lr.b_fmt).nbytes(lin.N, lr.rank)
        self.pairs_lr.add((describe(lin.x_fmt), describe(lr.a_fmt), None))
        self.pairs_lr.add((describe(xa), describe(lr.b_fmt), None))
        if self.placement == "separate":
            return _vmax(g.cycles, lr_cycles) + merge
        return g.cycles + lr_cycles + merge

    def transform(self, lin, row: dict) -> int:
        """Step 3: the online Hadamard transform before the linear (vector-unit FWHT or an fp16
        GEMM); the cycles it adds to the layer (0 when overlapped)."""
        if lin.pre_transform is None:
            return 0
        M, V = self.M, self.V
        msize = hadamard_size(lin.pre_transform, lin.name)
        if self.hadamard_impl == "fwht":
            adds = hadamard_adds(msize) * M
            tc = M * _vceil(hadamard_adds(msize) / V)
            row["energy_pj"] = row["energy_pj"] + adds * self.e_add  # out of place (see lowrank_branch)
            self.energy_by["transforms"] += adds * self.e_add
        else:
            gh = self.run(self.array, M, msize, msize, "fp16", "fp16", None, False)[0]
            adds, tc = gh.macs, gh.cycles
            row["energy_pj"] = row["energy_pj"] + gh.energy_pj
            self.energy_by["transforms"] += gh.energy_pj
            row["dram_bytes"] = row["dram_bytes"] + gh.dram_total_bytes
        row.update(transform_adds=adds, transform_cycles=tc)
        return 0 if self.overlap_transforms else tc

    # ---- step 5: lm_head ------------------------------------------------------------------------
    def head(self, li: int, lin) -> dict:
        """The lm_head GEMM on ``model.head_M`` rows; its row (energy charged to the model)."""
        row, g = self.main_gemm(li, lin, lin.act_quant, M=self.model.head_M, sizes_array=False)
        row["cycles"] = g.cycles
        return row

    # ---- step 6: totals -----------------------------------------------------------------------
    def summarise(self, rows: list[dict]) -> ModelCost:
        model, array, lowrank_array, V = self.model, self.array, self.lowrank_array, self.V
        pairs_main, pairs_lr, M = self.pairs_main, self.pairs_lr, self.M

        def total(col: str) -> int | float:
            return sum(r[col] for r in rows)

        # areas: the main array sized for its widest pair, the low-rank array, the vector unit
        main_pairs = list(pairs_main) + (list(pairs_lr) if self.placement == "shared" and self.shared_mode == "widen"
                                         else [])
        main_area, area_by = _widest(array, main_pairs)
        lr_area = reduce(_vmax, [lowrank_array.area(x, w, a).total_um2 for x, w, a in pairs_lr]) \
            if self.placement == "separate" and pairs_lr else 0.0
        vec_area = V * self.vec.area_um2 if (pairs_lr or total("transform_adds") > 0) else 0.0
        area = {"main_array_um2": main_area, "lowrank_array_um2": lr_area, "vector_unit_um2": vec_area}
        area["total_um2"] = sum(area.values())
        area_by.update(lowrank=lr_area, vector_unit=vec_area)
        cycles = _vint(total("cycles"))
        clk = array.tech.clock_hz
        macs_useful = _vint(total("macs"))
        latency = cycles / clk
        energy = _vfloat(total("energy_pj"))
        ops_useful = 2 * macs_useful
        ops_total = ops_useful + 2 * _vint(total("lowrank_macs")) + _vint(total("transform_adds"))
        weight_bytes = _vint(total("weight_bytes"))  # attention rows hold no weights
        kv_bytes = 2 * model.layers * model.kv_heads * model.d_head * model.context * model.kv_bpe / 8
        totals = {
            "phase": model.phase, "tokens": model.tokens, "M": M, "cycles": cycles,
            "compute_cycles": _vint(total("compute_cycles")), "stall_cycles": _vint(total("stall_cycles")),
            "latency_s": latency, "energy_pj": energy, "energy_per_token_pj": energy / model.tokens,
            "macs_useful": macs_useful, "ops_useful": ops_useful, "ops_total": ops_total,
            "dram_bytes": _vint(total("dram_bytes")), "weight_bytes": weight_bytes,
            "kv_cache_bytes_per_seq": int(math.ceil(kv_bytes)), "area_um2": area["total_um2"],
            "area_mm2": area["total_um2"] / 1e6, "TOPS": ops_useful / latency / 1e12,
            "TOPS_per_mm2": ops_useful / latency / 1e12 / (area["total_um2"] / 1e6),
            "TOPS_per_W": ops_useful / energy,
        }
        bound = totals["stall_cycles"] > 0.5 * cycles
        if isinstance(bound, np.ndarray):  # an ArrayBatch: one list per array
            warnings: list = [[BANDWIDTH_BOUND] if b else [] for b in bound.tolist()]
        else:
            warnings = [BANDWIDTH_BOUND] if bound else []
        assumptions = {**array.tech.assumptions, "array": repr(array), "lowrank_array": repr(lowrank_array),
                       "lowrank_placement": self.placement, "shared_mode": self.shared_mode,
                       "hadamard_impl": self.hadamard_impl, "overlap_transforms": self.overlap_transforms,
                       "vector_lanes": V, "include_attention": model.include_attention,
                       "lm_head": f"{model.head_M} rows" if model.head_M else "not costed", "limitations": LIMITATIONS}
        return ModelCost(rows, totals, area, assumptions, warnings, area_by, self.energy_by)


def _widest(array, pairs) -> tuple[Any, dict]:
    """(area, area by component) of ``array`` with PEs sized for the widest of the format ``pairs``:
    the first pair of largest area, per array of an ArrayBatch."""
    areas = [array.area(*p).total_um2 for p in pairs]
    if not isinstance(array, ArrayBatch):
        main_area, main_pair = max(zip(areas, pairs), key=lambda t: t[0])
        return main_area, area_components(array, array.pe_config(*main_pair))
    pick, main_area = np.zeros(len(array), dtype=np.int64), areas[0]
    for i, a in enumerate(areas[1:], 1):  # max() above keeps the first of equal areas: replace on > only
        wider = a > main_area
        pick, main_area = np.where(wider, i, pick), np.where(wider, a, main_area)
    by_pair = {i: area_components(array, array.pe_config(*pairs[i])) for i in np.unique(pick).tolist()}
    if len(by_pair) == 1:
        return main_area, next(iter(by_pair.values()))
    return main_area, {c: np.select([pick == i for i in by_pair], [by[c] for by in by_pair.values()])
                       for c in next(iter(by_pair.values()))}


def _attention_rows(model: ModelSpec, array: SystolicArray, li: int, run, charge) -> list[dict]:
    """Per-head QK^T (M_q, d_h, L_kv) and A.V (M_q, L_kv, d_h) at attn_fmt, times heads."""
    Mq = model.M
    Lkv = model.seq if model.phase == "prefill" else model.context
    out = []
    for nm, (m, k, n) in (("attn_qk", (Mq, model.d_head, Lkv)), ("attn_av", (Mq, Lkv, model.d_head))):
        g, g_energy = run(array, m, k, n, model.attn_fmt, model.attn_fmt, None, False)
        kv_read = 0
        if model.phase == "decode":
            kv_read = int(math.ceil(Lkv * model.d_head * model.kv_heads * model.kv_bpe / 8))
        charge(g_energy, model.heads)
        charge({"dram": kv_read * 8 * array.tech.dram_pj_per_bit})
        out.append({"layer": li, "linear": nm, "M": m, "K": k, "N": n, "w_fmt": g.w_format, "x_fmt": g.a_format,
                    "macs": g.macs * model.heads, "main_cycles": g.cycles * model.heads,
                    "compute_cycles": g.compute_cycles * model.heads, "stall_cycles": g.stall_cycles * model.heads,
                    "energy_pj": g.energy_pj * model.heads + kv_read * 8 * array.tech.dram_pj_per_bit,
                    "dram_bytes": g.dram_total_bytes * model.heads + kv_read, "weight_bytes": 0,
                    "lowrank_macs": 0, "lowrank_cycles": 0, "transform_adds": 0, "transform_cycles": 0,
                    "merge_cycles": 0, "cycles": g.cycles * model.heads})
    return out


LIMITATIONS = (
    "absolute numbers: libraries differ by 2-5x; compare within one library, node and array only",
    "FP16 and wider FP units rest on four kappa (Horowitz; FP-adder area within 25 %, 1.8-3.8x a gate-level "
    "design); integer units and FP8/FP6/FP4 follow gate-level synthesis (within x1.3, hwsim cost synth --table)",
    "not modelled: leakage, clock tree, NoC, wires, SRAM bank conflicts, DRAM timing, PE pipeline depth, "
    "softmax/norms/activations/RoPE",
    "attention and lm_head GEMMs run on the main array at their own formats (energy, cycles) without "
    "widening its PEs: the array is sized for the decoder linears",
    "FPGA mode: five constants over seven numbers; FP16-heavy baselines keep large residuals",
    "anchors conflict on MXINT versus MXFP efficiency",
)
