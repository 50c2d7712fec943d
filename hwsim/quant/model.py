"""Model adapters: what the quantization algorithms need to know about a transformers model.

Algorithms never name LLaMA modules; they ask an adapter (``get_adapter(model)``) for the decoder
blocks, the linears that read one shared input (``LinearGroup``), the norms, the head layout, ...
(docs/spec/algorithms.md §1). Supported: LLaMA family (LLaMA, SmolLM2, TinyLlama, Qwen2, Mistral),
Gemma-3 text and OPT.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = [
    "LinearGroup",
    "NormInfo",
    "AttnLayout",
    "MlpLayout",
    "Embeddings",
    "ModelAdapter",
    "LlamaAdapter",
    "Gemma3Adapter",
    "OPTAdapter",
    "get_adapter",
    "supported_model_types",
    "set_module",
    "fold_norms",
]


@dataclass(frozen=True, eq=False)
class LinearGroup:
    """Linears of one block that read the same input tensor.

    ``names`` are qualified module names in the model, ``short`` the attribute names
    (``q_proj``, ``fc1``, ...) used for per-layer-type overrides, ``input_key`` the calibration
    key shared by the group, ``input_norm`` the qualified name of the norm producing the input
    (None for o_proj/down_proj).
    """

    name: str
    names: tuple[str, ...]
    short: tuple[str, ...]
    linears: tuple[nn.Module, ...]
    input_norm: str | None
    input_key: str

    def items(self) -> list[tuple[str, str, nn.Module]]:
        return list(zip(self.names, self.short, self.linears))


@dataclass(frozen=True, eq=False)
class NormInfo:
    """A norm of a block: ``kind`` in {"rms", "rms_1p", "layernorm"}; ``feeds`` a group name or
    ``"residual"`` for output norms (Gemma-3)."""

    name: str
    module: nn.Module
    kind: str
    eps: float
    feeds: str


@dataclass(frozen=True)
class AttnLayout:
    """Head layout of one attention module (docs/spec/algorithms.md §1.3). Slices are row slices of q/k/v
    and column slices of o_proj."""

    n_heads: int
    n_kv_heads: int
    head_dim: int
    rope: str  # "half", "interleaved" or "none"
    qk_norm: bool

    @property
    def group_size(self) -> int:
        return self.n_heads // self.n_kv_heads

    def kv_head_of(self, q_head: int) -> int:
        return q_head // self.group_size

    def q_rows(self, j: int) -> slice:
        return slice(j * self.head_dim, (j + 1) * self.head_dim)

    def kv_rows(self, h: int) -> slice:
        return slice(h * self.head_dim, (h + 1) * self.head_dim)

    def o_cols(self, j: int) -> slice:
        return slice(j * self.head_dim, (j + 1) * self.head_dim)


@dataclass(frozen=True)
class MlpLayout:
    gated: bool
    activation: str
    intermediate: int
    up: str
    gate: str | None
    down: str


@dataclass(frozen=True, eq=False)
class Embeddings:
    token: nn.Module
    position: nn.Module | None
    multiplier: float


def set_module(root: nn.Module, qualified_name: str, new: nn.Module) -> None:
    """Replace the sub-module ``qualified_name`` of ``root`` by ``new``."""
    parent_name, _, attr = qualified_name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, attr, new)


class ModelAdapter:
    """Base adapter. Subclasses fill the architecture-specific tables."""

    model_types: tuple[str, ...] = ()
    pre_norm: bool = True
    transforms: frozenset[str] = frozenset()

    def __init__(self, model: nn.Module):
        self.model = model
        self.config = model.config
        self._names = {id(m): n for n, m in model.named_modules()}

    # -- naming -------------------------------------------------------------------------------
    def name_of(self, module: nn.Module) -> str:
        try:
            return self._names[id(module)]
        except KeyError:
            self._names = {id(m): n for n, m in self.model.named_modules()}
            return self._names[id(module)]

    def block_name(self, index: int) -> str:
        return self.name_of(self.blocks()[index])

    # -- contract -----------------------------------------------------------------------------
    def base(self) -> nn.Module:
        return self.model.model

    def blocks(self) -> list[nn.Module]:
        return list(self.base().layers)

    def embeddings(self) -> Embeddings:
        raise NotImplementedError

    def final_norm(self) -> nn.Module | None:
        return self.base().norm

    def lm_head(self) -> nn.Module:
        return self.model.lm_head

    @property
    def tied(self) -> bool:
        head = self.lm_head()
        w = getattr(head, "weight", None)
        return w is not None and w is self.embeddings().token.weight

    @property
    def capabilities(self) -> dict[str, Any]:
        return {"transforms": self.transforms, "pre_norm": self.pre_norm}

    @property
    def skip(self) -> tuple[str, ...]:
        """Qualified names of modules kept in high precision by default."""
        emb = self.embeddings()
        names = [self.name_of(emb.token)]
        if emb.position is not None:
            names.append(self.name_of(emb.position))
        if self.final_norm() is not None:
            names.append(self.name_of(self.final_norm()))
        names.append(self.name_of(self.lm_head()))
        return tuple(names)

    def _group_table(self, block: nn.Module) -> list[tuple[str, list[str], str | None]]:
        """[(group name, [attribute paths in block], input norm path or None)]."""
        raise NotImplementedError

    def linear_groups(self, block: nn.Module) -> list[LinearGroup]:
        prefix = self.name_of(block)
        groups = []
        for gname, paths, norm in self._group_table(block):
            mods = tuple(block.get_submodule(p) for p in paths)
            groups.append(
                LinearGroup(
                    name=gname,
                    names=tuple(f"{prefix}.{p}" for p in paths),
                    short=tuple(p.rpartition(".")[2] for p in paths),
                    linears=mods,
                    input_norm=f"{prefix}.{norm}" if norm else None,
                    input_key=f"{prefix}:{gname}",
                )
            )
        return groups

    def head_group(self) -> LinearGroup:
        head = self.lm_head()
        name = self.name_of(head)
        norm = self.final_norm()
        return LinearGroup(
            name="lm_head",
            names=(name,),
            short=(name.rpartition(".")[2],),
            linears=(head,),
            input_norm=self.name_of(norm) if norm is not None else None,
            input_key=f"{name}:lm_head",
        )

    def norms(self, block: nn.Module) -> list[NormInfo]:
        raise NotImplementedError

    def residual_writers(self, block: nn.Module) -> list[tuple[str, nn.Module]]:
        raise NotImplementedError

    def attn_layout(self, block: nn.Module) -> AttnLayout:
        raise NotImplementedError

    def attention_module(self, block: nn.Module) -> nn.Module:
        """The block's attention module (where ``hwsim.quant.attention`` installs Q/K/V/P quantizers)."""
        return block.self_attn

    def mlp_layout(self, block: nn.Module) -> MlpLayout:
        raise NotImplementedError

    def block_forward(self, block: nn.Module, h: torch.Tensor, ctx: dict[str, Any]) -> torch.Tensor:
        """Run one block on hidden states ``h`` [n, T, d] with the captured context ``ctx``."""
        kwargs = dict(ctx)
        kwargs["use_cache"] = False
        kwargs.pop("past_key_values", None)
        kwargs.pop("past_key_value", None)
        out = block(h, **kwargs)
        if isinstance(out, (tuple, list)):
            out = out[0]
        return out

    def all_linear_groups(self, include_head: bool = True) -> list[tuple[int | None, LinearGroup]]:
        """Every group of every block (block index), plus the lm_head group (index None)."""
        out: list[tuple[int | None, LinearGroup]] = []
        for i, blk in enumerate(self.blocks()):
            out.extend((i, g) for g in self.linear_groups(blk))
        if include_head:
            out.append((None, self.head_group()))
        return out


def _text_config(config):
    return getattr(config, "text_config", None) or config


class LlamaAdapter(ModelAdapter):
    """LLaMA 1/2/3, TinyLlama, SmolLM2, Qwen2 (q/k/v biases), Mistral."""

    model_types = ("llama", "qwen2", "mistral")
    transforms = frozenset({"R_res", "S_attn", "S_ffn", "R_ov", "S_ov", "S_qk", "S_up_down", "hadamard_down"})

    def embeddings(self) -> Embeddings:
        return Embeddings(self.base().embed_tokens, None, 1.0)

    def _group_table(self, block):
        return [
            ("qkv", ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"], "input_layernorm"),
            ("o", ["self_attn.o_proj"], None),
            ("gate_up", ["mlp.gate_proj", "mlp.up_proj"], "post_attention_layernorm"),
            ("down", ["mlp.down_proj"], None),
        ]

    def norms(self, block):
        p = self.name_of(block)
        return [
            NormInfo(f"{p}.input_layernorm", block.input_layernorm, "rms", _eps(block.input_layernorm), "qkv"),
            NormInfo(
                f"{p}.post_attention_layernorm", block.post_attention_layernorm, "rms",
                _eps(block.post_attention_layernorm), "gate_up",
            ),
        ]

    def residual_writers(self, block):
        p = self.name_of(block)
        return [(f"{p}.self_attn.o_proj", block.self_attn.o_proj), (f"{p}.mlp.down_proj", block.mlp.down_proj)]

    def attn_layout(self, block):
        c = _text_config(self.config)
        h = c.num_attention_heads
        hkv = getattr(c, "num_key_value_heads", None) or h
        dh = getattr(c, "head_dim", None) or c.hidden_size // h
        return AttnLayout(h, hkv, dh, rope="half", qk_norm=False)

    def mlp_layout(self, block):
        c = _text_config(self.config)
        return MlpLayout(True, c.hidden_act, c.intermediate_size, "up_proj", "gate_proj", "down_proj")


class Gemma3Adapter(LlamaAdapter):
    """Gemma-3 text models: gain ``1+w`` norms, output norms, q/k norms, embedding × √d."""

    model_types = ("gemma3_text",)
    transforms = frozenset({"S_attn", "S_ffn", "R_ov", "S_ov", "S_qk", "S_up_down", "hadamard_down"})

    def embeddings(self) -> Embeddings:
        emb = self.base().embed_tokens
        mult = float(getattr(emb, "scalar_embed_scale", _text_config(self.config).hidden_size ** 0.5))
        return Embeddings(emb, None, mult)

    def _group_table(self, block):
        return [
            ("qkv", ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"], "input_layernorm"),
            ("o", ["self_attn.o_proj"], None),
            ("gate_up", ["mlp.gate_proj", "mlp.up_proj"], "pre_feedforward_layernorm"),
            ("down", ["mlp.down_proj"], None),
        ]

    def norms(self, block):
        p = self.name_of(block)
        out = []
        for attr, feeds in (
            ("input_layernorm", "qkv"),
            ("post_attention_layernorm", "residual"),
            ("pre_feedforward_layernorm", "gate_up"),
            ("post_feedforward_layernorm", "residual"),
        ):
            m = getattr(block, attr)
            out.append(NormInfo(f"{p}.{attr}", m, "rms_1p", _eps(m), feeds))
        return out

    def residual_writers(self, block):
        p = self.name_of(block)
        return [
            (f"{p}.post_attention_layernorm", block.post_attention_layernorm),
            (f"{p}.post_feedforward_layernorm", block.post_feedforward_layernorm),
        ]

    def attn_layout(self, block):
        c = _text_config(self.config)
        return AttnLayout(c.num_attention_heads, c.num_key_value_heads, c.head_dim, rope="half", qk_norm=True)

    def mlp_layout(self, block):
        c = _text_config(self.config)
        act = getattr(c, "hidden_activation", None) or getattr(c, "hidden_act", "gelu_pytorch_tanh")
        return MlpLayout(True, act, c.intermediate_size, "up_proj", "gate_proj", "down_proj")


class OPTAdapter(ModelAdapter):
    """OPT (pre-LN; post-LN OPT-350m is recognised and marked ``pre_norm=False``)."""

    model_types = ("opt",)
    transforms = frozenset({"R_res", "S_attn", "S_ffn", "R_ov", "S_ov", "S_qk", "S_up_down", "hadamard_down"})

    def __init__(self, model):
        super().__init__(model)
        self.pre_norm = bool(getattr(self.config, "do_layer_norm_before", True))
        if not self.pre_norm:
            self.transforms = frozenset()

    def base(self):
        return self.model.model.decoder

    def embeddings(self) -> Embeddings:
        d = self.base()
        return Embeddings(d.embed_tokens, d.embed_positions, 1.0)

    def final_norm(self):
        return self.base().final_layer_norm

    def _group_table(self, block):
        return [
            ("qkv", ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"],
             "self_attn_layer_norm" if self.pre_norm else None),
            ("out_proj", ["self_attn.out_proj"], None),
            ("fc1", ["fc1"], "final_layer_norm" if self.pre_norm else None),
            ("fc2", ["fc2"], None),
        ]

    def norms(self, block):
        p = self.name_of(block)
        return [
            NormInfo(f"{p}.self_attn_layer_norm", block.self_attn_layer_norm, "layernorm",
                     _eps(block.self_attn_layer_norm), "qkv" if self.pre_norm else "residual"),
            NormInfo(f"{p}.final_layer_norm", block.final_layer_norm, "layernorm",
                     _eps(block.final_layer_norm), "fc1" if self.pre_norm else "residual"),
        ]

    def residual_writers(self, block):
        p = self.name_of(block)
        return [(f"{p}.self_attn.out_proj", block.self_attn.out_proj), (f"{p}.fc2", block.fc2)]

    def attn_layout(self, block):
        c = self.config
        h = c.num_attention_heads
        return AttnLayout(h, h, c.hidden_size // h, rope="none", qk_norm=False)

    def mlp_layout(self, block):
        return MlpLayout(False, self.config.activation_function, self.config.ffn_dim, "fc1", None, "fc2")


def _eps(norm: nn.Module) -> float:
    for attr in ("eps", "variance_epsilon"):
        if hasattr(norm, attr):
            return float(getattr(norm, attr))
    return 1e-6


_ADAPTERS: dict[str, type[ModelAdapter]] = {}
for _cls in (LlamaAdapter, Gemma3Adapter, OPTAdapter):
    for _t in _cls.model_types:
        _ADAPTERS[_t] = _cls


def supported_model_types() -> list[str]:
    return sorted(_ADAPTERS)


def get_adapter(model: nn.Module) -> ModelAdapter:
    """Adapter for ``model`` chosen from ``model.config.model_type``."""
    config = getattr(model, "config", None)
    mtype = getattr(config, "model_type", None)
    if mtype not in _ADAPTERS:
        raise ValueError(
            f"model: unsupported model_type {mtype!r}; supported: {', '.join(supported_model_types())}"
        )
    return _ADAPTERS[mtype](model)


# ------------------------------------------------------------------------------------------------
# Norm-gain folding (docs/spec/algorithms.md §1.4)
# ------------------------------------------------------------------------------------------------


@torch.no_grad()
def fold_norms(model: nn.Module, adapter: ModelAdapter | None = None) -> ModelAdapter:
    """Fold norm gains (and LayerNorm biases) into the linears they feed, in float64.

    After folding every foldable norm has gain 1 (Gemma: ``w = 0``) and bias 0; the final norm is
    folded into an untied lm_head. Output norms (Gemma-3) are left alone. The function of the
    model is unchanged up to rounding in the model dtype. Refuses post-LN models.
    """
    adapter = adapter or get_adapter(model)
    if not adapter.pre_norm:
        raise ValueError("fold_norms: model is post-LN (do_layer_norm_before=False); folding is not defined")
    for block in adapter.blocks():
        groups = {g.name: g for g in adapter.linear_groups(block)}
        for info in adapter.norms(block):
            if info.feeds == "residual":
                continue
            _fold_one(info.module, info.kind, groups[info.feeds].linears)
    norm = adapter.final_norm()
    if norm is not None:
        head = adapter.lm_head()
        if adapter.tied:
            head.weight = nn.Parameter(head.weight.detach().clone())
            if hasattr(model.config, "tie_word_embeddings"):
                model.config.tie_word_embeddings = False
        kind = "layernorm" if isinstance(norm, nn.LayerNorm) else ("rms_1p" if isinstance(adapter, Gemma3Adapter) else "rms")
        _fold_one(norm, kind, (head,))
    return adapter


def _fold_one(norm: nn.Module, kind: str, linears) -> None:
    w_norm = norm.weight.detach().to(torch.float64)
    gamma = 1.0 + w_norm if kind == "rms_1p" else w_norm
    beta = norm.bias.detach().to(torch.float64) if (kind == "layernorm" and norm.bias is not None) else None
    for lin in linears:
        W = lin.weight.detach().to(torch.float64)
        if beta is not None:
            extra = W @ beta
            if lin.bias is None:
                lin.bias = nn.Parameter(torch.zeros(W.shape[0], dtype=lin.weight.dtype, device=lin.weight.device))
            lin.bias.data = (lin.bias.detach().to(torch.float64) + extra).to(lin.bias.dtype)
        lin.weight.data = (W * gamma[None, :]).to(lin.weight.dtype)
    if kind == "rms_1p":
        norm.weight.data.zero_()
    else:
        norm.weight.data.fill_(1.0)
    if beta is not None:
        norm.bias.data.zero_()

