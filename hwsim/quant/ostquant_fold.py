"""OSTQuant's function-preserving transforms and their exact folds (docs/spec/algorithms.md §4.5, §1.5).

``fold_ost(model, params)`` folds an :class:`OSTParams` set into a model whose norms were folded
(``hwsim.quant.model.fold_norms``), in float64, casting each weight back to its dtype. With
``R = R_res`` (d×d orthogonal), per layer ``s_a``, ``s_f`` (d), per KV head h ``R_h`` (d_h×d_h
orthogonal), ``t_h`` (d_h), ``u_h`` (d_h, tied over RoPE pairs), ``s_m`` (m), and M the online
matrix before down_proj (``z ← z·M``; ``M = H_mᵀ`` so that the online op is
``hwsim.quant.hadamard.apply_hadamard``), weights in ``nn.Linear`` orientation [out, in]:

| weight | fold |
|---|---|
| embedding (OPT: token and position) | ``E ← E R`` |
| pre-attention / pre-MLP norm gain | ``1/s_a`` / ``1/s_f`` |
| q rows of query head j (KV head h) | ``diag(1/u_h)·W_q[j]·R·diag(s_a)``, bias ``/u_h`` |
| k rows of KV head h | ``diag(u_h)·W_k[h]·R·diag(s_a)``, bias ``·u_h`` |
| v rows of KV head h | ``R_hᵀ·diag(1/t_h)·W_v[h]·R·diag(s_a)``, bias ``R_hᵀ diag(1/t_h) b`` |
| o_proj | ``Rᵀ W_o``, column block j: ``·diag(t_h)·R_h``; bias ``Rᵀ b`` |
| gate, up | ``W R diag(s_f)``; up rows (and bias) ``/s_m`` |
| down | ``Rᵀ (W diag(s_m)) M``; bias ``Rᵀ b`` |
| lm_head | ``W R`` |

Model families (capabilities of docs/spec/algorithms.md §1.5): LLaMA family (incl. Qwen2 biases)
everything; Gemma-3 no ``R_res`` (output norms sit between the writers and the residual), and
``S_qk`` goes into the shared ``q_norm``/``k_norm`` gains (so it must be equal for every KV head);
OPT (pre-LN) everything, ``S_qk`` untied (no RoPE), ``S_up_down > 0`` (ReLU), and ``R_res`` after
mean-centring every residual writer, which makes each (folded) LayerNorm an RMSNorm that is then
**replaced** by one (:class:`RMSNormGain`).

``official_compat=True`` reproduces the two folds of the official code that are not
function-preserving (never a default): (a) the down fold ``Rᵀ (W M) diag(s_m)`` (Hadamard before
the column scaling), (b) an untied ``S_qk`` of d_h values per KV head applied before RoPE.

:func:`transform_block_weights` is the per-block fold as a pure, differentiable function of the
weights and the parameters, so a training loop can build its student's effective weights with the
same formulas (in float32 with autograd) that :func:`fold_ost` applies in float64.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from .hadamard import HadamardInfo, apply_hadamard, hadamard_info, hadamard_matrix
from .model import Gemma3Adapter, ModelAdapter, OPTAdapter, get_adapter, set_module

__all__ = ["OSTParams", "LayerParams", "OSTFoldInfo", "RMSNormGain", "fold_ost", "transform_block_weights",
           "center_opt_residual", "add_online_hadamard_hooks", "block_weights", "MIN_ABS_SCALE"]

#: A scale with |s| below this at fold time raises (docs/spec/algorithms.md §4.5).
MIN_ABS_SCALE = 1e-6
#: An R further than this from orthogonal (max |RᵀR − I|) is rejected; closer ones are re-projected.
ORTHO_TOL = 1e-3
#: Norm gains counted as "folded" within this tolerance.
_FOLDED_TOL = 1e-12


@dataclass
class LayerParams:
    """Per-layer OSTQuant parameters (any may be None = identity).

    s_attn, s_ffn: [d]; R_ov: [H_kv, d_h, d_h]; s_ov: [H_kv, d_h]; s_qk: [H_kv, d_h/2] tied over
    RoPE pairs, or [H_kv, d_h] (models without RoPE; with RoPE only under ``official_compat``);
    s_m: [m].
    """

    s_attn: torch.Tensor | None = None
    s_ffn: torch.Tensor | None = None
    R_ov: torch.Tensor | None = None
    s_ov: torch.Tensor | None = None
    s_qk: torch.Tensor | None = None
    s_m: torch.Tensor | None = None


@dataclass
class OSTParams:
    """All OSTQuant transforms of a model: ``R_res`` [d, d] (or None), one :class:`LayerParams` per
    decoder block (shorter lists are padded with identities), and whether the online Hadamard
    before down_proj is used."""

    R_res: torch.Tensor | None = None
    layers: list[LayerParams] = field(default_factory=list)
    hadamard_down: bool = False

    def transforms(self) -> set[str]:
        """Names (docs/spec/algorithms.md §1.5) of the transforms this set uses."""
        names = {"R_res"} if self.R_res is not None else set()
        for lp in self.layers:
            for attr, name in (("s_attn", "S_attn"), ("s_ffn", "S_ffn"), ("R_ov", "R_ov"), ("s_ov", "S_ov"),
                               ("s_qk", "S_qk"), ("s_m", "S_up_down")):
                if getattr(lp, attr) is not None:
                    names.add(name)
        if self.hadamard_down:
            names.add("hadamard_down")
        return names

    @classmethod
    def identity(cls, model_or_adapter, *, transforms: set[str] | None = None, hadamard_down: bool | None = None,
                 dtype: torch.dtype = torch.float32) -> "OSTParams":
        """Identity initialisation (R = I, scales 1) of the given transforms (default: every
        transform the model's adapter allows). ``S_qk`` is tied ([H_kv, d_h/2]) unless the model
        has no RoPE."""
        ad = _adapter(model_or_adapter)
        allowed = set(ad.transforms)
        names = allowed if transforms is None else set(transforms)
        bad = names - allowed
        if bad:
            raise ValueError(f"transforms: {sorted(bad)} not legal for model_type "
                             f"{ad.config.model_type!r}; legal: {sorted(allowed)}")
        blk = ad.blocks()[0]
        lay, mlp = ad.attn_layout(blk), ad.mlp_layout(blk)
        d = _hidden(ad)
        hkv, dh = lay.n_kv_heads, lay.head_dim
        qk = dh if lay.rope == "none" else dh // 2

        def ones(*shape):
            return torch.ones(*shape, dtype=dtype)

        layers = []
        for _ in ad.blocks():
            layers.append(LayerParams(
                s_attn=ones(d) if "S_attn" in names else None,
                s_ffn=ones(d) if "S_ffn" in names else None,
                R_ov=torch.eye(dh, dtype=dtype).repeat(hkv, 1, 1) if "R_ov" in names else None,
                s_ov=ones(hkv, dh) if "S_ov" in names else None,
                s_qk=ones(hkv, qk) if "S_qk" in names else None,
                s_m=ones(mlp.intermediate) if "S_up_down" in names else None,
            ))
        R = torch.eye(d, dtype=dtype) if "R_res" in names else None
        hd = ("hadamard_down" in names) if hadamard_down is None else bool(hadamard_down)
        return cls(R, layers, hd)


@dataclass
class OSTFoldInfo:
    """What :func:`fold_ost` did. ``pre_transforms`` maps each down_proj's qualified name to the
    cost model's string (``hadamard(m)``); ``down_matrix`` is M [m, m] (float64) with the online
    op ``z ← z·M`` = ``apply_hadamard(z)`` (QLinear's ``pre_transform`` T with ``x' = x·T``)."""

    transforms: list[str]
    official_compat: bool
    pre_transforms: dict[str, str] = field(default_factory=dict)
    down_matrix: torch.Tensor | None = None
    hadamard: HadamardInfo | None = None
    centered: bool = False
    replaced_norms: list[str] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)


class RMSNormGain(nn.Module):
    """RMSNorm ``x / sqrt(mean(x²) + eps) · weight`` computed in the input's dtype; replaces an
    OPT LayerNorm once the residual stream is mean-free (``bias`` is None, for the adapter)."""

    def __init__(self, weight: torch.Tensor, eps: float):
        super().__init__()
        self.weight = nn.Parameter(weight.detach().clone())
        self.bias = None
        self.eps = float(eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, eps={self.eps}"


# ------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------


def _adapter(model_or_adapter) -> ModelAdapter:
    return model_or_adapter if isinstance(model_or_adapter, ModelAdapter) else get_adapter(model_or_adapter)


def _hidden(ad: ModelAdapter) -> int:
    return int(ad.embeddings().token.weight.shape[1])


def _f64(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.detach().to(torch.float64)


def _check_scale(s: torch.Tensor | None, name: str, shape: tuple[int, ...], positive: bool = False) -> None:
    if s is None:
        return
    if tuple(s.shape) != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {tuple(s.shape)}")
    if not torch.isfinite(s).all():
        raise ValueError(f"{name}: has non-finite values")
    small = float(s.abs().min())
    if small < MIN_ABS_SCALE:
        raise ValueError(f"{name}: a scale of magnitude {small:.3g} < {MIN_ABS_SCALE:g} cannot be folded")
    if positive and float(s.min()) <= 0:
        raise ValueError(f"{name}: must be > 0 (ReLU is positively homogeneous only), min {float(s.min()):.3g}")


def _check_rotation(R: torch.Tensor | None, name: str, shape: tuple[int, ...], events: list) -> torch.Tensor | None:
    """Validate and re-project onto the orthogonal group (float64 SVD polar factor)."""
    if R is None:
        return None
    if tuple(R.shape) != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {tuple(R.shape)}")
    R64 = _f64(R)
    eye = torch.eye(shape[-1], dtype=torch.float64)
    err = float((R64.transpose(-1, -2) @ R64 - eye).abs().max())
    if not err < ORTHO_TOL:
        raise ValueError(f"{name}: not orthogonal (max |RᵀR − I| = {err:.3g} ≥ {ORTHO_TOL:g})")
    U, _, Vh = torch.linalg.svd(R64)
    events.append({"stage": "ostquant_fold", "layer": name, "kind": "reprojection", "value": err})
    return U @ Vh


def _expand_qk(u: torch.Tensor, rope: str, dh: int, name: str, official_compat: bool) -> torch.Tensor:
    """[H_kv, d_h/2] tied → [H_kv, d_h] by the RoPE pairing; [H_kv, d_h] only without RoPE or
    under official_compat (untied, changes q·k after RoPE)."""
    if u.shape[-1] == dh and (rope == "none" or official_compat):
        return u
    if u.shape[-1] == dh // 2 and rope != "none":
        return torch.cat([u, u], dim=-1) if rope == "half" else u.repeat_interleave(2, dim=-1)
    want = f"d_h/2 = {dh // 2} (tied over RoPE pairs)" if rope != "none" else f"d_h = {dh}"
    raise ValueError(f"{name}: last dimension {u.shape[-1]} invalid for rope={rope!r}; expected {want}"
                     + ("" if rope == "none" else f" (an untied {dh} only with official_compat=True)"))


def _is_folded(module: nn.Module, kind: str) -> bool:
    w = module.weight.detach().to(torch.float64)
    target = 0.0 if kind == "rms_1p" else 1.0
    ok = bool((w - target).abs().max() <= _FOLDED_TOL)
    b = getattr(module, "bias", None)
    if kind == "layernorm" and b is not None:
        ok = ok and bool(b.detach().abs().max() <= _FOLDED_TOL)
    return ok


def _norm_kind(ad: ModelAdapter, module: nn.Module) -> str:
    if isinstance(module, RMSNormGain):
        return "rms"
    if isinstance(module, nn.LayerNorm):
        return "layernorm"
    return "rms_1p" if isinstance(ad, Gemma3Adapter) else "rms"


def _set_gain(module: nn.Module, kind: str, gain: torch.Tensor) -> None:
    """Set a norm's effective gain (``1 + w`` for Gemma) to ``gain`` (float64)."""
    w = gain - 1.0 if kind == "rms_1p" else gain
    module.weight.data = w.to(module.weight.dtype)


def _gain(module: nn.Module, kind: str) -> torch.Tensor:
    w = module.weight.detach().to(torch.float64)
    return 1.0 + w if kind == "rms_1p" else w


def block_weights(ad: ModelAdapter, block: nn.Module) -> dict[str, torch.Tensor | None]:
    """The weights :func:`transform_block_weights` reads, by role: ``q.weight`` ... ``down.bias``
    (``gate.*`` None for OPT), ``attn_gain``/``ffn_gain`` (effective norm gains) and, for Gemma,
    ``q_gain``/``k_gain`` (effective q_norm/k_norm gains)."""
    groups = {g.name: g for g in ad.linear_groups(block)}
    names = list(groups)
    q, k, v = groups[names[0]].linears
    o = groups[names[1]].linears[0]
    mlp = ad.mlp_layout(block)
    up = block.get_submodule(_mlp_path(ad, mlp.up))
    gate = block.get_submodule(_mlp_path(ad, mlp.gate)) if mlp.gate else None
    down = block.get_submodule(_mlp_path(ad, mlp.down))
    out: dict[str, torch.Tensor | None] = {}
    for role, lin in (("q", q), ("k", k), ("v", v), ("o", o), ("gate", gate), ("up", up), ("down", down)):
        out[f"{role}.weight"] = None if lin is None else lin.weight
        out[f"{role}.bias"] = None if lin is None else lin.bias
    norms = {i.feeds: i for i in ad.norms(block)}
    attn_norm, ffn_norm = norms[names[0]].module, norms[names[2]].module
    out["attn_gain"] = _gain(attn_norm, _norm_kind(ad, attn_norm))
    out["ffn_gain"] = _gain(ffn_norm, _norm_kind(ad, ffn_norm))
    if ad.attn_layout(block).qk_norm:
        out["q_gain"] = _gain(block.self_attn.q_norm, "rms_1p")
        out["k_gain"] = _gain(block.self_attn.k_norm, "rms_1p")
    return out


def _mlp_path(ad: ModelAdapter, short: str) -> str:
    return short if isinstance(ad, OPTAdapter) else f"mlp.{short}"


# ------------------------------------------------------------------------------------------------
# The per-block fold (pure)
# ------------------------------------------------------------------------------------------------


def transform_block_weights(w: dict[str, torch.Tensor | None], lp: LayerParams, R: torch.Tensor | None, *,
                            n_heads: int, n_kv_heads: int, head_dim: int, rope: str, qk_norm: bool = False,
                            down_matrix: torch.Tensor | Callable[[torch.Tensor], torch.Tensor] | None = None,
                            official_compat: bool = False, name: str = "layer") -> dict[str, torch.Tensor | None]:
    """The exact OSTQuant fold of one block as a pure function (differentiable in ``w``, ``lp``,
    ``R``; computes in the dtype of its inputs). ``w`` as returned by :func:`block_weights`;
    returns a dict with the same keys holding the transformed tensors.

    ``qk_norm`` (Gemma-3): ``S_qk`` scales ``q_gain``/``k_gain`` instead of the q/k rows and must be
    equal for every KV head. ``down_matrix``: M of the online ``z ← z·M`` before down_proj, as a
    tensor [m, m] or a function computing ``x ↦ x·M`` on rows (e.g. ``apply_hadamard`` for
    ``M = H_mᵀ``: O(m log m) per row instead of m²).
    """
    right = (down_matrix if callable(down_matrix) else
             (lambda x: x @ down_matrix) if down_matrix is not None else None)
    H, Hkv, dh = n_heads, n_kv_heads, head_dim
    G = H // Hkv
    kv_of_q = torch.arange(H) // G
    out = dict(w)

    def rot_in(W, s):  # W R diag(s)
        if W is None:
            return None
        if R is not None:
            W = W @ R
        return W * s[None, :] if s is not None else W

    # --- attention input side
    for role in ("q", "k", "v"):
        out[f"{role}.weight"] = rot_in(w[f"{role}.weight"], lp.s_attn)
    if lp.s_attn is not None:
        out["attn_gain"] = w["attn_gain"] / lp.s_attn
    # --- S_qk
    if lp.s_qk is not None:
        u = _expand_qk(lp.s_qk, rope, dh, f"{name}.s_qk", official_compat)  # [Hkv, dh]
        if qk_norm:
            if (u - u[:1]).abs().max() > 0:
                raise ValueError(f"{name}.s_qk: q_norm/k_norm gains are shared by all heads; S_qk must be "
                                 f"equal for every KV head")
            out["q_gain"] = w["q_gain"] / u[0]
            out["k_gain"] = w["k_gain"] * u[0]
        else:
            uq = u[kv_of_q]  # [H, dh]
            Wq = out["q.weight"]
            out["q.weight"] = (Wq.reshape(H, dh, -1) / uq[:, :, None]).reshape(Wq.shape)
            Wk = out["k.weight"]
            out["k.weight"] = (Wk.reshape(Hkv, dh, -1) * u[:, :, None]).reshape(Wk.shape)
            if w["q.bias"] is not None:
                out["q.bias"] = (w["q.bias"].reshape(H, dh) / uq).reshape(-1)
            if w["k.bias"] is not None:
                out["k.bias"] = (w["k.bias"].reshape(Hkv, dh) * u).reshape(-1)
    # --- S_ov, R_ov on v rows
    t, Rh = lp.s_ov, lp.R_ov
    if t is not None or Rh is not None:
        Wv = out["v.weight"].reshape(Hkv, dh, -1)
        bv = w["v.bias"].reshape(Hkv, dh) if w["v.bias"] is not None else None
        if t is not None:
            Wv = Wv / t[:, :, None]
            bv = bv / t if bv is not None else None
        if Rh is not None:
            Rt = Rh.transpose(-1, -2)
            Wv = Rt @ Wv
            bv = (Rt @ bv[:, :, None])[:, :, 0] if bv is not None else None
        out["v.weight"] = Wv.reshape(w["v.weight"].shape)
        if bv is not None:
            out["v.bias"] = bv.reshape(-1)
    # --- o_proj: Rᵀ W_o, column block j: ·diag(t_h)·R_h
    Wo = w["o.weight"]
    if R is not None:
        Wo = R.T @ Wo
        if w["o.bias"] is not None:
            out["o.bias"] = w["o.bias"] @ R
    if t is not None or Rh is not None:
        Wo3 = Wo.reshape(Wo.shape[0], H, dh)
        if t is not None:
            Wo3 = Wo3 * t[kv_of_q][None, :, :]
        if Rh is not None:
            Wo3 = torch.einsum("dhi,hij->dhj", Wo3, Rh[kv_of_q])
        Wo = Wo3.reshape(Wo.shape)
    out["o.weight"] = Wo
    # --- MLP input side
    out["up.weight"] = rot_in(w["up.weight"], lp.s_ffn)
    out["gate.weight"] = rot_in(w["gate.weight"], lp.s_ffn)
    if lp.s_ffn is not None:
        out["ffn_gain"] = w["ffn_gain"] / lp.s_ffn
    sm = lp.s_m
    if sm is not None:
        out["up.weight"] = out["up.weight"] / sm[:, None]
        if w["up.bias"] is not None:
            out["up.bias"] = w["up.bias"] / sm
    # --- down: Rᵀ (W diag(s_m)) M   (official_compat: Rᵀ (W M) diag(s_m))
    Wd = w["down.weight"]
    if official_compat:
        if right is not None:
            Wd = right(Wd)
        if sm is not None:
            Wd = Wd * sm[None, :]
    else:
        if sm is not None:
            Wd = Wd * sm[None, :]
        if right is not None:
            Wd = right(Wd)
    if R is not None:
        Wd = R.T @ Wd
        if w["down.bias"] is not None:
            out["down.bias"] = w["down.bias"] @ R
    out["down.weight"] = Wd
    return out


# ------------------------------------------------------------------------------------------------
# OPT mean-centring
# ------------------------------------------------------------------------------------------------


@torch.no_grad()
def center_opt_residual(model: nn.Module, adapter: ModelAdapter | None = None) -> list[str]:
    """SliceGPT's centring of an OPT model (docs/spec/algorithms.md §1.5): every residual writer
    outputs mean-free vectors (embedding rows minus their mean; ``W ← (I − 𝟙𝟙ᵀ/d) W``,
    ``b ← b − mean(b)`` for out_proj and fc2), so the residual stream is mean-free and each folded
    LayerNorm (γ = 1, β = 0) equals an RMSNorm with the same eps, by which it is replaced.
    Requires folded norms. Returns the names of the replaced norms."""
    ad = adapter or get_adapter(model)
    if not isinstance(ad, OPTAdapter):
        raise ValueError(f"center_opt_residual: model_type {ad.config.model_type!r} is not 'opt'")
    if not ad.pre_norm:
        raise ValueError("center_opt_residual: model is post-LN (do_layer_norm_before=False); refused")
    _require_folded(ad)
    emb = ad.embeddings()
    for e in (emb.token, emb.position):
        W = e.weight.detach().to(torch.float64)
        e.weight.data = (W - W.mean(dim=1, keepdim=True)).to(e.weight.dtype)
    for blk in ad.blocks():
        for _, lin in ad.residual_writers(blk):
            W = lin.weight.detach().to(torch.float64)
            lin.weight.data = (W - W.mean(dim=0, keepdim=True)).to(lin.weight.dtype)
            if lin.bias is not None:
                b = lin.bias.detach().to(torch.float64)
                lin.bias.data = (b - b.mean()).to(lin.bias.dtype)
    replaced = []
    targets = [(i.name, i.module, i.eps) for blk in ad.blocks() for i in ad.norms(blk) if i.feeds != "residual"]
    fn = ad.final_norm()
    if fn is not None:
        targets.append((ad.name_of(fn), fn, float(fn.eps)))
    for name, mod, eps in targets:
        if isinstance(mod, nn.LayerNorm):
            set_module(model, name, RMSNormGain(mod.weight.detach(), eps))
            replaced.append(name)
    ad._names = {id(m): n for n, m in model.named_modules()}
    return replaced


def _require_folded(ad: ModelAdapter) -> None:
    bad = []
    for blk in ad.blocks():
        for info in ad.norms(blk):
            if info.feeds != "residual" and not _is_folded(info.module, _norm_kind(ad, info.module)):
                bad.append(info.name)
    fn = ad.final_norm()
    if fn is not None and not _is_folded(fn, _norm_kind(ad, fn)):
        bad.append(ad.name_of(fn))
    if bad:
        raise ValueError(f"norms are not folded ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}); "
                         f"call hwsim.quant.model.fold_norms(model) first")


# ------------------------------------------------------------------------------------------------
# fold_ost
# ------------------------------------------------------------------------------------------------


@torch.no_grad()
def fold_ost(model: nn.Module, params: OSTParams, *, adapter: ModelAdapter | None = None,
             official_compat: bool = False) -> OSTFoldInfo:
    """Fold ``params`` into ``model`` (in place, float64 arithmetic, weights cast back to their
    dtype) and return what a later stage needs (the online down_proj transform).

    Preconditions: ``fold_norms(model)`` was called (norm gains 1, lm_head untied). Rotations
    are re-projected onto the orthogonal group first (a recorded event); a scale with
    ``|s| < 1e-6`` raises; transforms the model family does not allow raise. The online Hadamard
    (``params.hadamard_down``) is **not** installed in the model: apply ``info.down_matrix``
    before each down_proj (QLinear ``pre_transform``, or :func:`add_online_hadamard_hooks`).
    """
    ad = adapter or get_adapter(model)
    if not ad.pre_norm:
        raise ValueError("fold_ost: model is post-LN (do_layer_norm_before=False); transforms are refused")
    used = params.transforms()
    illegal = used - set(ad.transforms)
    if illegal:
        raise ValueError(f"params: transforms {sorted(illegal)} are not legal for model_type "
                         f"{ad.config.model_type!r}; legal: {sorted(ad.transforms)}")
    _require_folded(ad)
    blocks = ad.blocks()
    if len(params.layers) > len(blocks):
        raise ValueError(f"params.layers: {len(params.layers)} entries for a model of {len(blocks)} blocks")
    layers = list(params.layers) + [LayerParams() for _ in range(len(blocks) - len(params.layers))]
    d = _hidden(ad)
    info = OSTFoldInfo(sorted(used), bool(official_compat))
    R = _check_rotation(params.R_res, "params.R_res", (d, d), info.events)
    if R is not None and ad.tied:
        raise ValueError("fold_ost: lm_head is tied to the embedding; call fold_norms(model) first (it unties)")
    # validate every layer before touching the model
    checked = []
    for i, (blk, lp) in enumerate(zip(blocks, layers)):
        lay, mlp = ad.attn_layout(blk), ad.mlp_layout(blk)
        hkv, dh = lay.n_kv_heads, lay.head_dim
        p = f"params.layers[{i}]"
        _check_scale(lp.s_attn, f"{p}.s_attn", (d,))
        _check_scale(lp.s_ffn, f"{p}.s_ffn", (d,))
        _check_scale(lp.s_ov, f"{p}.s_ov", (hkv, dh))
        _check_scale(lp.s_m, f"{p}.s_m", (mlp.intermediate,), positive=not mlp.gated)
        if lp.s_qk is not None:
            if lp.s_qk.dim() != 2 or lp.s_qk.shape[0] != hkv:
                raise ValueError(f"{p}.s_qk: expected shape ({hkv}, {dh // 2 if lay.rope != 'none' else dh}), "
                                 f"got {tuple(lp.s_qk.shape)}")
            _expand_qk(lp.s_qk, lay.rope, dh, f"{p}.s_qk", official_compat)
            _check_scale(lp.s_qk, f"{p}.s_qk", tuple(lp.s_qk.shape))
        Rh = _check_rotation(lp.R_ov, f"{p}.R_ov", (hkv, dh, dh), info.events)
        checked.append(LayerParams(_f64(lp.s_attn), _f64(lp.s_ffn), Rh, _f64(lp.s_ov), _f64(lp.s_qk), _f64(lp.s_m)))
    # online Hadamard
    M = None
    if params.hadamard_down:
        m = ad.mlp_layout(blocks[0]).intermediate
        info.hadamard = hadamard_info(m)
        M = hadamard_matrix(m, torch.float64).T  # z·M = z·Hᵀ = apply_hadamard(z)
        info.down_matrix = M
    # OPT: centre and replace LayerNorms before rotating
    if R is not None and isinstance(ad, OPTAdapter):
        info.replaced_norms = center_opt_residual(model, ad)
        info.centered = True
        blocks = ad.blocks()
    # embeddings and lm_head
    if R is not None:
        emb = ad.embeddings()
        for e in (emb.token, emb.position):
            if e is not None:
                e.weight.data = (_f64(e.weight) @ R).to(e.weight.dtype)
        head = ad.lm_head()
        head.weight.data = (_f64(head.weight) @ R).to(head.weight.dtype)
    # blocks
    for i, (blk, lp) in enumerate(zip(blocks, checked)):
        lay = ad.attn_layout(blk)
        w = block_weights(ad, blk)
        w64 = {k: _f64(v) for k, v in w.items()}
        new = transform_block_weights(w64, lp, R, n_heads=lay.n_heads, n_kv_heads=lay.n_kv_heads,
                                      head_dim=lay.head_dim, rope=lay.rope, qk_norm=lay.qk_norm,
                                      down_matrix=apply_hadamard if M is not None else None,
                                      official_compat=official_compat, name=f"params.layers[{i}]")
        for key, tensor in w.items():
            if key.endswith((".weight", ".bias")) and tensor is not None:
                tensor.data = new[key].to(tensor.dtype)
        groups = [g.name for g in ad.linear_groups(blk)]
        norms = {n.feeds: n.module for n in ad.norms(blk)}
        for key, group in (("attn_gain", groups[0]), ("ffn_gain", groups[2])):
            mod = norms[group]
            _set_gain(mod, _norm_kind(ad, mod), new[key])
        if lay.qk_norm:
            _set_gain(blk.self_attn.q_norm, "rms_1p", new["q_gain"])
            _set_gain(blk.self_attn.k_norm, "rms_1p", new["k_gain"])
        if M is not None:
            down = ad.linear_groups(blk)[3].names[0]
            info.pre_transforms[down] = info.hadamard.pre_transform
    return info


def add_online_hadamard_hooks(model: nn.Module, info: OSTFoldInfo) -> list:
    """Forward pre-hooks applying ``z ← z·M`` (the fast Hadamard) to the input of every down_proj
    of ``info.pre_transforms``; returns the hook handles (``.remove()`` each to undo). For tests
    and evaluation of a folded model before its linears are replaced by QLinears."""
    handles = []
    mods = dict(model.named_modules())
    for name in info.pre_transforms:
        def hook(_mod, args):
            return (apply_hadamard(args[0]),) + tuple(args[1:])
        handles.append(mods[name].register_forward_pre_hook(hook))
    return handles
