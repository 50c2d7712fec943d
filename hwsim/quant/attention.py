"""Attention-side quantizers (docs/spec/algorithms.md §3.3): Q and K after RoPE, V (K and V are
what a KV cache stores) and the attention probabilities P, each with any ``hwsim.formats`` format.

The quantizers are installed through transformers' own extension point, not by copying a model
class: every supported attention module (LLaMA family incl. SmolLM2, Gemma-3, OPT) looks its
attention kernel up as ``ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation)``
and calls it with Q, K, V after RoPE (and after the cache update). :func:`install_attention_quant`
gives each attention module a view of the model config whose ``_attn_implementation`` is
:data:`IMPL_NAME`, a function registered in that interface which quantizes Q, K and V and then
calls the kernel the model used before (``sdpa``, ``eager``, ...). With a P format it computes
``softmax(QKᵀ·scale + mask)`` itself (float32, as the eager kernels), quantizes P along the key
axis and multiplies by V. The model-level config (mask construction) is not touched. The o_proj
input quantizer is the o_proj QLinear's activation format (``LayerConfig.x``, an override).

Granularity (:class:`~hwsim.quant.config.AttentionConfig` ``axis``): a format's blocks, groups or
per-token slices run along the last axis of each operand as stored —

- ``"head"`` (default): along the d_h channels of one token in one head (Q, K, V as
  [b, heads, T, d_h]); ``int4_tok_asym`` is one scale per token and head, ``int4_g32_asym`` groups
  of 32 along d_h, ``int4_g128_asym`` with d_h ≤ 128 one group per head (OSTQuant's KV setting);
- ``"token"``: along all heads' channels of one token ([b, T, heads·d_h]);
- P always along the key positions of one query row.

Fake quantization only: the products QKᵀ and PV run in float32 on the dequantized values in both
recipe modes (``exact`` covers the linears). :func:`attention_records` describes the installed
quantizers for the cost model, including the KV-cache bits per element.
"""

from __future__ import annotations

import inspect
import sys
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

__all__ = ["IMPL_NAME", "AttentionRecord", "install_attention_quant", "remove_attention_quant",
           "set_attention_quant_enabled", "attention_records", "attention_modules", "kv_bits_per_element", "AXES"]

#: name of the wrapping kernel in transformers' ``ALL_ATTENTION_FUNCTIONS``
IMPL_NAME = "hwsim_quant"
#: how a format's slices run over Q/K/V (see the module docstring)
AXES = ("head", "token")
_STATE = "_hwsim_attn_quant"


@dataclass(frozen=True)
class AttentionRecord:
    """What the cost model needs about one attention module's quantizers (no torch objects).

    ``kv_bits`` is the KV cache's storage per element (scales and zero points included, K and V
    averaged; 16 for an unquantized operand); ``kind`` is always ``"attention"`` (how
    ``hwsim.cost_models.from_quantized`` tells these records from linear ones)."""

    name: str
    q_fmt: str | None
    k_fmt: str | None
    v_fmt: str | None
    p_fmt: str | None
    axis: str
    n_heads: int
    n_kv_heads: int
    head_dim: int
    kv_bits: float
    kind: str = "attention"


@dataclass
class _State:
    cfg: Any                      # AttentionConfig
    base_impl: str | None         # the module's attention implementation before wrapping
    base_fn: Callable
    orig_config: Any
    n_heads: int
    n_kv_heads: int
    head_dim: int
    enabled: bool = True
    #: fake quantizer (x, format) -> x̂ ; a training stage may swap in its straight-through version
    quant: Callable | None = None


class _ConfigView:
    """The model config as one attention module sees it: everything delegated, except the
    attention implementation, which names the wrapping kernel."""

    def __init__(self, base):
        object.__setattr__(self, "_base", base)

    _attn_implementation = IMPL_NAME

    def __getattr__(self, name):
        return getattr(object.__getattribute__(self, "_base"), name)

    def __setattr__(self, name, value):
        setattr(object.__getattribute__(self, "_base"), name, value)


def _default_quant(x: torch.Tensor, fmt) -> torch.Tensor:
    from .qlinear import fake_quant

    return fake_quant(x, fmt, axis=-1)


def _q(state: _State, x: torch.Tensor, fmt, axis: str) -> torch.Tensor:
    """Quantize x [b, heads, T, d_h] along the configured axis."""
    if fmt is None:
        return x
    quant = state.quant or _default_quant
    if axis == "token":
        b, h, t, dh = x.shape
        y = quant(x.transpose(1, 2).reshape(b, t, h * dh), fmt)
        return y.reshape(b, t, h, dh).transpose(1, 2)
    return quant(x, fmt)


def _quant_attention(module, query, key, value, attention_mask, *args, **kwargs):
    """The registered kernel: quantize Q, K, V (and P) of ``module`` then attend."""
    st: _State | None = getattr(module, _STATE, None)
    if st is None:  # pragma: no cover - only wrapped modules name this kernel
        raise RuntimeError(f"{type(module).__name__}: attention implementation {IMPL_NAME!r} without installed "
                           "quantizers (use hwsim.quant.attention.install_attention_quant)")
    if not st.enabled:
        return st.base_fn(module, query, key, value, attention_mask, *args, **kwargs)
    cfg = st.cfg
    query = _q(st, query, cfg.q, cfg.axis)
    key = _q(st, key, cfg.k, cfg.axis)
    value = _q(st, value, cfg.v, cfg.axis)
    if cfg.p is None:
        return st.base_fn(module, query, key, value, attention_mask, *args, **kwargs)
    return _attend_quantized_p(st, module, query, key, value, attention_mask, **kwargs)


def _attend_quantized_p(st: _State, module, query, key, value, attention_mask, dropout: float = 0.0,
                        scaling: float | None = None, softcap: float | None = None, is_causal: bool | None = None,
                        **_ignored):
    """softmax(Q Kᵀ·scaling (+ softcap) + mask) in float32, P quantized along the keys, P·V."""
    g = query.shape[1] // key.shape[1]
    if g > 1:
        key = key.repeat_interleave(g, dim=1)
        value = value.repeat_interleave(g, dim=1)
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    s = torch.matmul(query, key.transpose(2, 3)) * scaling
    if softcap is not None:
        s = torch.tanh(s / softcap) * softcap
    s = s.to(torch.float32)
    tq, tk = s.shape[-2], s.shape[-1]
    if attention_mask is not None:
        m = attention_mask[..., :tk]
        s = s.masked_fill(~m, float("-inf")) if m.dtype == torch.bool else s + m.to(s.dtype)
    elif (is_causal if is_causal is not None else getattr(module, "is_causal", True)) and tq > 1:
        keep = torch.ones(tq, tk, dtype=torch.bool, device=s.device).tril(diagonal=tk - tq)
        s = s.masked_fill(~keep, float("-inf"))
    p = torch.softmax(s, dim=-1)
    quant = st.quant or _default_quant
    p = quant(p, st.cfg.p).to(query.dtype)
    out = torch.matmul(p, value)
    return out.transpose(1, 2).contiguous(), p


def _register() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(IMPL_NAME, _quant_attention)


def attention_modules(model: nn.Module, adapter=None) -> list[tuple[str, nn.Module]]:
    """(qualified name, attention module) of every decoder block, from the adapter."""
    from .model import get_adapter

    ad = adapter or get_adapter(model)
    out = []
    for block in ad.blocks():
        mod = ad.attention_module(block)
        out.append((ad.name_of(mod), mod))
    return out


def _base_kernel(model_type: str, module: nn.Module, impl: str | None) -> Callable:
    """The kernel ``module`` called before wrapping; a module that does not dispatch through
    transformers' attention interface cannot be wrapped and raises naming the model type."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    fwd = inspect.unwrap(type(module).forward)
    names = getattr(getattr(fwd, "__code__", None), "co_names", ())
    home = sys.modules.get(type(module).__module__)
    eager = getattr(home, "eager_attention_forward", None)
    if "ALL_ATTENTION_FUNCTIONS" not in names or eager is None or not hasattr(module, "config"):
        raise ValueError(f"attention quantizers: model_type {model_type!r}: {type(module).__name__} does not call its "
                         "attention kernel through transformers' ALL_ATTENTION_FUNCTIONS interface, so Q/K/V cannot "
                         "be quantized there (supported: the LLaMA family incl. SmolLM2, Gemma-3, OPT)")
    if impl in (None, "eager"):
        return eager
    try:
        return ALL_ATTENTION_FUNCTIONS[impl]
    except KeyError:
        raise ValueError(f"attention quantizers: model_type {model_type!r}: attention implementation {impl!r} is not "
                         "registered in transformers' ALL_ATTENTION_FUNCTIONS") from None


def install_attention_quant(model: nn.Module, cfg, adapter=None, *, quant: Callable | None = None) -> list[str]:
    """Wrap every attention module of ``model`` with the quantizers of ``cfg`` (an
    ``AttentionConfig``; a module already wrapped gets the new config). ``quant``: the fake
    quantizer ``(x, format) -> x̂`` (default: ``hwsim.quant.qlinear.fake_quant`` along the last
    axis). Returns the wrapped modules' names. Raises ValueError naming the model type when its
    attention cannot be wrapped (before changing anything)."""
    from .model import get_adapter
    from .qlinear import resolve_format

    ad = adapter or get_adapter(model)
    mtype = getattr(ad.config, "model_type", None)
    cfg = _resolved(cfg, resolve_format)
    _register()
    plan = []
    for name, mod in attention_modules(model, ad):
        st = getattr(mod, _STATE, None)
        if st is None:
            impl = getattr(getattr(mod, "config", None), "_attn_implementation", None)
            base = _base_kernel(mtype, mod, impl)
            plan.append((name, mod, None, impl, base))
        else:
            plan.append((name, mod, st, None, None))
    for (name, mod, st, impl, base), block in zip(plan, ad.blocks()):
        if st is not None:
            st.cfg, st.enabled = cfg, True
            if quant is not None:
                st.quant = quant
            continue
        lay = ad.attn_layout(block)
        setattr(mod, _STATE, _State(cfg, impl, base, mod.config, lay.n_heads, lay.n_kv_heads, lay.head_dim,
                                    quant=quant))
        mod.config = _ConfigView(mod.config)
    return [p[0] for p in plan]


def _resolved(cfg, resolve_format):
    """The config with every format resolved to a spec once (names stay valid for records)."""
    from dataclasses import replace

    return replace(cfg, **{f: resolve_format(getattr(cfg, f), f"attention: {f}") for f in ("q", "k", "v", "p")})


def remove_attention_quant(model: nn.Module, adapter=None) -> None:
    """Undo :func:`install_attention_quant` (the original configs and kernels come back)."""
    for _name, mod in attention_modules(model, adapter):
        st = getattr(mod, _STATE, None)
        if st is not None:
            mod.config = st.orig_config
            delattr(mod, _STATE)


def set_attention_quant_enabled(model: nn.Module, enabled: bool, adapter=None) -> None:
    """Switch every installed attention quantizer on or off (a teacher pass runs with them off)."""
    for _name, mod in attention_modules(model, adapter):
        st = getattr(mod, _STATE, None)
        if st is not None:
            st.enabled = bool(enabled)


def kv_bits_per_element(fmt, slice_len: int) -> float:
    """Storage bits per element of K or V quantized with ``fmt`` along slices of ``slice_len``
    channels (16 for None). A group longer than the slice is the slice (the padding a codec
    stores for a short tail is not charged: a KV cache would store one group per head)."""
    from .qlinear import resolve_format

    spec = resolve_format(fmt)
    if spec is None:
        return 16.0
    if getattr(spec, "granularity", None) == "group" and spec.group_size > slice_len:
        import dataclasses

        spec = dataclasses.replace(spec, granularity="token", group_size=None)
    try:
        return float(spec.bits_per_element((1, slice_len)))
    except TypeError:
        return float(spec.bits_per_element())


def attention_records(model: nn.Module, adapter=None) -> list[AttentionRecord]:
    """An :class:`AttentionRecord` per wrapped attention module with at least one quantizer."""
    from .qlinear import fmt_name

    out = []
    try:
        mods = attention_modules(model, adapter)
    except ValueError:
        return out
    for name, mod in mods:
        st: _State | None = getattr(mod, _STATE, None)
        if st is None or not any(getattr(st.cfg, f) is not None for f in ("q", "k", "v", "p")):
            continue
        cfg = st.cfg
        sl = st.head_dim if cfg.axis == "head" else st.n_kv_heads * st.head_dim
        kv = 0.5 * (kv_bits_per_element(cfg.k, sl) + kv_bits_per_element(cfg.v, sl))
        out.append(AttentionRecord(name, fmt_name(cfg.q), fmt_name(cfg.k), fmt_name(cfg.v), fmt_name(cfg.p), cfg.axis,
                                   st.n_heads, st.n_kv_heads, st.head_dim, kv))
    return out

