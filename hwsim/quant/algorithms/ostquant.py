"""The ``ostquant`` transform stage (docs/spec/algorithms.md §4.5): learned orthogonal and scaling
transforms under fake quantization, folded exactly into the weights before rounding.

``"ostquant+gptq"`` (the presets ``ostquant-w4a4kv4``, ``ostquant-w4a16``, ...) runs, in place:

1. **Preparation**: ``fold_norms`` (§1.4; idempotent, unties lm_head); for OPT with ``R_res`` the
   weight-side student needs the residual mean-centring of §1.5 first.
2. **Initialisation** (:func:`hwsim.quant.ostquant_init.init_ost_params`, float64): WOMI by
   default, or QuaRot-style random Hadamards, or identity; every scale 1.
3. **Teacher**: the norm-folded, unquantized model's final hidden states on the training
   sequences, reduced once to their KL-Top top-k indices and log-probabilities
   (:func:`hwsim.quant.algorithms.kl_top.teacher_topk_from_hidden`; cached, identical loss).
4. **Training**: ``steps`` steps of ``batch_size`` sequences of ``seq_len`` tokens from the
   calibration ids (``n_samples`` of them, a seeded permutation per epoch). Loss: KL-Top
   (``k``, the official ``post_attn`` form or ``loss="kl_top_renorm"``) of the student's logits
   against the teacher, computed from the hidden states in token chunks. Rotations (``R_res``,
   per-layer ``R_ov`` [H_kv, d_h, d_h]) by :class:`~hwsim.quant.algorithms.stiefel.StiefelAdam`
   at ``lr_rot``, scales (``S_attn``, ``S_ffn``, ``S_ov``, tied ``S_qk``, ``S_up_down``) by Adam
   at ``lr_scale``, both decaying linearly to 0 without warm-up (the official rates by default).
   The student fake-quantizes, with the recipe's own formats (``recipe.layer_config(name).x``
   of every linear, ``recipe.attention`` for K/V/Q/P), the tensors §4.5 lists: q/k/v and
   gate/up inputs, o_proj input, down_proj input after the online Hadamard, K after RoPE and V;
   and, when ``quant_weights`` (default: only when the recipe has no activation quantizer, the
   W4A16 case), every linear's weight in its ``layer_config(name).w`` format. Rounding is
   straight-through; for scaled-integer formats the gradient also flows through the min-max
   scale (the official quantizer), while the forward value is the hwsim codec's, bit for bit.
   A non-finite loss or gradient stops training, restores the last parameters that gave a
   finite loss and records ``{stage: "ostquant", kind: "nonfinite_loss", value: step}``.
5. **Fold**: rotations re-projected onto the orthogonal group, everything folded in float64
   (:func:`hwsim.quant.ostquant_fold.fold_ost`; the exact forms unless ``official_compat``).
   The online Hadamard ``z ← z·H_mᵀ`` before each down_proj goes into ``ctx.pre_transforms``
   (kind ``"hadamard"``: the down_proj QLinear's ``pre_transform``, charged by the cost model)
   and, until the QLinear replaces the linear, into a forward pre-hook, so that the model keeps
   its function (and GPTQ's statistics see ``z·H``).

**Two equivalent students.** ``student="weights"`` recomputes every block's effective weights
from the parameters with the fold formulas (:func:`~hwsim.quant.ostquant_fold.transform_block_weights`,
float32 with autograd) each step and runs the model on them (``torch.func.functional_call``):
the spec's description, needed when weights are fake-quantized and for ``official_compat``.
``student="activations"`` keeps the weights and moves every transform to the quantizer it
serves: a quantized input x of a linear whose folded weight is ``W T⁻ᵀ`` becomes
``Q(x T)·T⁻¹`` (``T = R·diag(1/s)`` for q/k/v and gate/up, ``H_m`` and ``s_m`` for down, the
per-KV-head ``R_ov``/``S_ov`` on v's output and o_proj's input, ``S_qk`` on q/k's outputs or on
Gemma's q/k norms). Without weight quantization the two give the same student function (tested);
the second costs O(tokens·d²) instead of O(weights·d) per step, which is what makes the CPU budget
possible (SmolLM2: ~2·10¹¹ fewer flops per step). ``"auto"`` picks ``"activations"`` unless weights
are fake-quantized or ``official_compat`` is set.

**Budgets** (``budget`` fills ``steps``, ``batch_size``, ``n_samples``, ``seq_len`` unless given):

| budget | steps | batch × seq_len | n_samples |
|---|---|---|---|
| ``"paper"`` | 100 | 16 × 2048 | all given (official: WikiText-2 train, every 2048-token chunk, seed 42) |
| ``"cpu"`` | 16 | 1 × 256 | 16 (SmolLM2-135M on 2 cores; figures in docs/quant_algorithms.md) |

Fewer calibration sequences or tokens than asked for are used as given (recorded as a
``budget_clipped`` event).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from ..hadamard import apply_hadamard
from ..model import ModelAdapter, OPTAdapter, fold_norms, get_adapter
from ..ostquant_fold import (LayerParams, OSTParams, add_online_hadamard_hooks, block_weights, center_opt_residual,
                             fold_ost, transform_block_weights)
from ..ostquant_init import INITS, init_ost_params
from ..stages import Option, register_stage
from .common import record
from .kl_top import DEFAULT_K, TeacherTopK, kl_top_from_hidden, teacher_topk_from_hidden
from .stiefel import MOMENTUM_PROJECTIONS, OFFICIAL_ROTATE_LR, OFFICIAL_SMOOTH_LR, StiefelAdam

__all__ = ["BUDGETS", "OSTQuantResult", "ostquant", "ste_fake_quant", "Student", "ALL_TRANSFORMS"]

#: the training budgets (see the module docstring); None = every calibration sequence
BUDGETS: dict[str, dict[str, int | None]] = {
    "paper": {"steps": 100, "batch_size": 16, "n_samples": None, "seq_len": 2048},
    "cpu": {"steps": 16, "batch_size": 1, "n_samples": 16, "seq_len": 256},
}
#: transform names of docs/spec/algorithms.md §1.5 (``hadamard_down`` is its own option)
ALL_TRANSFORMS = ("R_res", "S_attn", "S_ffn", "R_ov", "S_ov", "S_qk", "S_up_down")
STUDENTS = ("auto", "activations", "weights")
LOSSES = ("kl_top", "kl_top_renorm")
#: OPT's S_up_down is clamped to at least this after each step (ReLU needs s > 0; §4.5)
OPT_MIN_SCALE = 1e-4


def _pos_int_or_none(v) -> bool:
    return v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 1)


def _lr(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0


def _transforms_ok(v) -> bool:
    if v == "all":
        return True
    return isinstance(v, (list, tuple)) and all(isinstance(t, str) and t in ALL_TRANSFORMS for t in v)


OPTIONS = (
    Option("budget", "cpu", "training budget filling steps, batch_size, n_samples, seq_len", choices=tuple(BUDGETS)),
    Option("steps", None, "training steps (None: the budget's)", check=_pos_int_or_none, valid="an int >= 1 or None"),
    Option("batch_size", None, "sequences per step (None: the budget's)", check=_pos_int_or_none,
           valid="an int >= 1 or None"),
    Option("n_samples", None, "calibration sequences trained on (None: the budget's; the paper budget: all)",
           check=_pos_int_or_none, valid="an int >= 1 or None"),
    Option("seq_len", None, "tokens per training sequence (None: the budget's)", check=_pos_int_or_none,
           valid="an int >= 1 or None"),
    Option("lr_rot", OFFICIAL_ROTATE_LR, "learning rate of the rotations (Stiefel Adam; official value)", check=_lr,
           valid="a finite number >= 0"),
    Option("lr_scale", OFFICIAL_SMOOTH_LR, "learning rate of the scales (Adam; official value)", check=_lr,
           valid="a finite number >= 0"),
    Option("init", "womi", "initial rotations", choices=INITS),
    Option("transforms", "all", "learned transforms: 'all' (every one the model family allows) or a list of "
           f"{', '.join(ALL_TRANSFORMS)}", check=_transforms_ok,
           valid=f"'all' or a list of {', '.join(ALL_TRANSFORMS)}"),
    Option("hadamard_down", True, "online Hadamard before down_proj (kept as its pre_transform)",
           choices=(True, False)),
    Option("k", DEFAULT_K, "KL-Top's top-k of the teacher", check=lambda v: v is not None and _pos_int_or_none(v),
           valid="an int >= 1"),
    Option("loss", "kl_top", "training loss: the official partial sum, or the renormalised variant", choices=LOSSES),
    Option("quant_weights", "auto", "fake-quantize the weights in training ('auto': when the recipe has no activation "
           "quantizer, W4A16)", choices=("auto", True, False)),
    Option("student", "auto", "how the student applies the transforms (equivalent without weight quantization)",
           choices=STUDENTS),
    Option("momentum_projection", "geoopt", "Stiefel momentum projection at re-projection (geoopt doubles it)",
           choices=MOMENTUM_PROJECTIONS),
    Option("stabilize", 10, "re-project the rotations every this many steps", check=_pos_int_or_none,
           valid="an int >= 1 or None"),
    Option("seed", 42, "seed of the initial random signs and of the sample order", check=lambda v: isinstance(v, int)
           and not isinstance(v, bool), valid="an int"),
    Option("official_compat", False, "reproduce the official code's two non-exact folds (§4.5; never a default)",
           choices=(True, False)),
    Option("allow_dense_orthogonal", False, "allow a seeded dense orthogonal matrix where no Hadamard order exists",
           choices=(True, False)),
    Option("chunk_tokens", None, "tokens per logits chunk of the loss (None: ~256 MiB of float32 logits)",
           check=_pos_int_or_none, valid="an int >= 1 or None"),
)


# ------------------------------------------------------------------------------------------------
# Straight-through fake quantization
# ------------------------------------------------------------------------------------------------


def _round_ste(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.round(x) - x).detach()


def _scaled_int_surrogate(x: torch.Tensor, spec) -> torch.Tensor:
    """Differentiable min-max fake quantization of a ScaledIntSpec along the last axis (round
    straight-through, the scale a function of x: the official quantizer's gradient)."""
    shape = x.shape
    n = shape[-1]
    gran = spec.granularity
    pad = 0
    if gran == "group":
        G = int(spec.group_size)
        pad = (-n) % G
        xg = torch.nn.functional.pad(x, (0, pad)) if pad else x
        xg = xg.reshape(*shape[:-1], -1, G)
    elif gran == "tensor":
        xg = x.reshape(1, -1)
    else:  # channel / token: one slice along the last axis
        xg = x.unsqueeze(-2)
    b = int(spec.bits)
    clip = float(spec.clip_ratio)
    tiny = torch.finfo(torch.float32).tiny
    if spec.symmetric:
        a = xg.abs().amax(-1, keepdim=True) * clip
        s = (a / float(spec.divisor_value)).clamp_min(tiny)
        q = torch.clamp(_round_ste(xg / s), -(1 << (b - 1)), (1 << (b - 1)) - 1)
        y = q * s
    else:
        lo = xg.amin(-1, keepdim=True).clamp(max=0) * clip
        hi = xg.amax(-1, keepdim=True).clamp(min=0) * clip
        s = ((hi - lo) / float(spec.divisor_value)).clamp_min(tiny)
        z = torch.round(-lo / s).detach().clamp(0, (1 << b) - 1)
        q = torch.clamp(_round_ste(xg / s) + z, 0, (1 << b) - 1)
        y = (q - z) * s
    if gran == "group":
        y = y.reshape(*shape[:-1], n + pad)[..., :n]
    return y.reshape(shape)


def ste_fake_quant(x: torch.Tensor, fmt) -> torch.Tensor:
    """Fake quantization along the last axis for training: the forward value is the hwsim codec's
    (``hwsim.quant.qlinear.fake_quant``, bit for bit); the gradient is straight-through, and for
    scaled-integer formats also flows through the min-max scale (:func:`_scaled_int_surrogate`)."""
    from ..qlinear import fake_quant, resolve_format

    spec = resolve_format(fmt)
    if spec is None:
        return x
    if not (torch.is_grad_enabled() and x.requires_grad):
        return fake_quant(x, spec, axis=-1)
    y = fake_quant(x.detach(), spec, axis=-1).to(x.dtype)
    if type(spec).__name__ == "ScaledIntSpec":
        sur = _scaled_int_surrogate(x.to(torch.float32), spec).to(x.dtype)
        return y + (sur - sur.detach())
    return y + (x - x.detach())


# ------------------------------------------------------------------------------------------------
# The student
# ------------------------------------------------------------------------------------------------


@dataclass
class _Block:
    """One decoder block's modules and target formats, by role."""

    index: int
    block: nn.Module
    q: nn.Linear
    k: nn.Linear
    v: nn.Linear
    o: nn.Linear
    gate: nn.Linear | None
    up: nn.Linear
    down: nn.Linear
    names: dict[str, str]
    x_fmt: dict[str, Any]
    w_fmt: dict[str, Any]
    n_heads: int
    n_kv_heads: int
    head_dim: int
    rope: str
    qk_norm: bool


def _blocks(ad: ModelAdapter, recipe) -> list[_Block]:
    from ..qlinear import resolve_format

    out = []
    for i, blk in enumerate(ad.blocks()):
        groups = ad.linear_groups(blk)
        q, k, v = groups[0].linears
        o = groups[1].linears[0]
        mlp = ad.mlp_layout(blk)
        gate = up = None
        if mlp.gate is not None:
            gate, up = groups[2].linears
        else:
            up = groups[2].linears[0]
        down = groups[3].linears[0]
        mods = {"q": q, "k": k, "v": v, "o": o, "gate": gate, "up": up, "down": down}
        names = {r: ad.name_of(m) for r, m in mods.items() if m is not None}
        x_fmt, w_fmt = {}, {}
        for r, name in names.items():
            cfg = recipe.layer_config(name) if recipe is not None else None
            x_fmt[r] = resolve_format(cfg.x, f"{name}: x") if cfg is not None else None
            w_fmt[r] = resolve_format(cfg.w, f"{name}: w") if cfg is not None else None
        lay = ad.attn_layout(blk)
        out.append(_Block(i, blk, q, k, v, o, gate, up, down, names, x_fmt, w_fmt, lay.n_heads, lay.n_kv_heads,
                          lay.head_dim, lay.rope, lay.qk_norm))
    return out


class Student:
    """The quantized student of OSTQuant training on ``model`` (norm-folded, unquantized): forward
    hooks that fake-quantize with the parameters' transforms, in one of two equivalent forms (see
    the module docstring). ``hidden(ids)`` returns the final hidden states (after the final norm)
    in the basis lm_head reads; ``remove()`` takes every hook away."""

    def __init__(self, model: nn.Module, adapter: ModelAdapter, params: OSTParams, recipe, *, mode: str,
                 quant_weights: bool, quant: Callable = ste_fake_quant, official_compat: bool = False,
                 tied_qk: bool = False):
        self.model, self.ad, self.params, self.recipe = model, adapter, params, recipe
        self.mode, self.quant_weights, self.quant = mode, bool(quant_weights), quant
        self.official_compat, self.tied_qk = bool(official_compat), bool(tied_qk)
        self.blocks = _blocks(adapter, recipe)
        att = getattr(recipe, "attention", None)
        self.kv_quant = att is not None and (att.k is not None or att.q is not None)
        self.v_quant = att is not None and att.v is not None
        self.handles: list = []
        self._M = None
        self._base = adapter.base()
        if mode == "weights":
            dt = self.blocks[0].q.weight.dtype  # norm gains come back in float64
            self._frozen = [{k: (None if t is None else t.detach().to(dt).clone()) for k, t in
                             block_weights(adapter, b.block).items()} for b in self.blocks]
            self._install_weights()
        elif mode == "activations":
            if self.quant_weights or self.official_compat:
                raise ValueError("student='activations' cannot fake-quantize weights or reproduce official_compat; "
                                 "use student='weights'")
            self._install_activations()
        else:
            raise ValueError(f"student mode {mode!r}; valid: activations, weights")

    # -- shared helpers ---------------------------------------------------------------------------
    def _lp(self, i: int) -> LayerParams:
        lp = self.params.layers[i]
        if self.tied_qk and lp.s_qk is not None:
            n_kv = self.blocks[i].n_kv_heads
            return LayerParams(lp.s_attn, lp.s_ffn, lp.R_ov, lp.s_ov, lp.s_qk.expand(n_kv, -1), lp.s_m)
        return lp

    def _u(self, b: _Block, lp: LayerParams) -> torch.Tensor:
        """S_qk expanded to [H_kv, d_h] (tied over RoPE pairs unless untied)."""
        u = lp.s_qk
        if u.shape[-1] == b.head_dim:
            return u
        return torch.cat([u, u], dim=-1) if b.rope == "half" else u.repeat_interleave(2, dim=-1)

    def _hook(self, module: nn.Module, fn: Callable, pre: bool) -> None:
        if module is None:
            return
        self.handles.append(module.register_forward_pre_hook(fn) if pre else module.register_forward_hook(fn))

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []

    # -- the activation-side student -----------------------------------------------------------------
    def _install_activations(self) -> None:
        P = self.params
        for b in self.blocks:
            i = b.index
            # q/k/v and gate/up inputs: Q(x R diag(1/s)) diag(s) Rᵀ, one computation per (input, format)
            for roles, attr in ((("q", "k", "v"), "s_attn"), (("gate", "up"), "s_ffn")):
                cache: dict = {}
                for r in roles:
                    fmt = b.x_fmt.get(r)
                    if fmt is None or getattr(b, r) is None:
                        continue
                    self._hook(getattr(b, r), self._norm_input_hook(i, attr, fmt, cache), pre=True)
            lp = P.layers[i]
            # S_qk: q rows / u, k rows · u (Gemma: on the q/k norms' outputs); cancels in q·k unless Q/K quantized
            if lp.s_qk is not None and self.kv_quant:
                if b.qk_norm:
                    att = self.ad.attention_module(b.block)
                    self._hook(att.q_norm, self._qk_hook(i, "q", flat=False), pre=False)
                    self._hook(att.k_norm, self._qk_hook(i, "k", flat=False), pre=False)
                else:
                    self._hook(b.q, self._qk_hook(i, "q", flat=True), pre=False)
                    self._hook(b.k, self._qk_hook(i, "k", flat=True), pre=False)
            # R_ov / S_ov: v rows and o_proj columns per KV head; cancel unless V or o's input is quantized
            if (lp.R_ov is not None or lp.s_ov is not None) and (self.v_quant or b.x_fmt.get("o") is not None):
                self._hook(b.v, self._v_hook(i), pre=False)
                self._hook(b.o, self._o_hook(i, b.x_fmt.get("o")), pre=True)
            elif b.x_fmt.get("o") is not None:
                self._hook(b.o, self._plain_hook(b.x_fmt["o"]), pre=True)
            # S_up_down and the online Hadamard: cancel unless down's input is quantized
            fd = b.x_fmt.get("down")
            if fd is not None:
                if lp.s_m is not None:
                    self._hook(b.up, self._up_hook(i), pre=False)
                self._hook(b.down, self._down_hook(i, fd), pre=True)

    def _norm_input_hook(self, i: int, attr: str, fmt, cache: dict):
        P = self.params

        def hook(_m, args):
            x = args[0]
            key = (id(x), x._version, id(fmt))
            hit = cache.get("key") == key
            if not hit:
                R, s = P.R_res, getattr(P.layers[i], attr)
                t = x @ R if R is not None else x
                if s is not None:
                    t = t / s
                t = self.quant(t, fmt)
                if s is not None:
                    t = t * s
                if R is not None:
                    t = t @ R.T
                cache["key"], cache["x"], cache["out"] = key, x, t
            return (cache["out"],) + tuple(args[1:])

        return hook

    def _qk_hook(self, i: int, role: str, flat: bool):
        def hook(_m, _args, out):
            b, lp = self.blocks[i], self._lp(i)
            u = self._u(b, lp)  # [H_kv, d_h]
            if b.qk_norm:  # shared gains: equal over heads
                u1 = u[0]
                return out / u1 if role == "q" else out * u1
            if role == "q":
                uq = u[torch.arange(b.n_heads) // (b.n_heads // b.n_kv_heads)].reshape(-1)
                return out / uq
            return out * u.reshape(-1)

        return hook

    def _v_hook(self, i: int):
        def hook(_m, _args, out):
            b, lp = self.blocks[i], self.params.layers[i]
            v = out.reshape(*out.shape[:-1], b.n_kv_heads, b.head_dim)
            if lp.s_ov is not None:
                v = v / lp.s_ov
            if lp.R_ov is not None:
                v = torch.einsum("...hi,hij->...hj", v, lp.R_ov)
            return v.reshape(out.shape)

        return hook

    def _o_hook(self, i: int, fmt):
        def hook(_m, args):
            b, lp = self.blocks[i], self.params.layers[i]
            a = args[0]
            if fmt is not None:
                a = self.quant(a, fmt)
            kv = torch.arange(b.n_heads) // (b.n_heads // b.n_kv_heads)
            a = a.reshape(*a.shape[:-1], b.n_heads, b.head_dim)
            if lp.R_ov is not None:
                a = torch.einsum("...hj,hij->...hi", a, lp.R_ov[kv])
            if lp.s_ov is not None:
                a = a * lp.s_ov[kv]
            return (a.reshape(args[0].shape),) + tuple(args[1:])

        return hook

    def _plain_hook(self, fmt):
        def hook(_m, args):
            return (self.quant(args[0], fmt),) + tuple(args[1:])

        return hook

    def _up_hook(self, i: int):
        def hook(_m, _args, out):
            return out / self.params.layers[i].s_m

        return hook

    def _down_hook(self, i: int, fmt):
        had = self.params.hadamard_down
        if had and self._M is None:  # M = H_mᵀ as a dense matrix: on CPU one GEMM beats the butterflies
            from ..hadamard import hadamard_matrix

            self._M = hadamard_matrix(self.blocks[0].down.in_features, torch.float64).T.contiguous()
        cast: dict = {}

        def hook(_m, args):
            z = args[0]
            if had:
                key = (z.dtype, z.device)
                if key not in cast:
                    cast[key] = (self._M.to(*key[::-1]), self._M.T.contiguous().to(*key[::-1]))
                z = z @ cast[key][0]  # z·H_mᵀ = apply_hadamard(z)
            z = self.quant(z, fmt)
            if had:
                z = z @ cast[key][1]
            s = self.params.layers[i].s_m
            if s is not None:
                z = z * s
            return (z,) + tuple(args[1:])

        return hook

    # -- the weight-side student ------------------------------------------------------------------
    def _install_weights(self) -> None:
        P = self.params
        emb = self.ad.embeddings()
        if P.R_res is not None:
            for e in (emb.token, emb.position):
                if e is not None:
                    self._hook(e, lambda _m, _a, out: out @ P.R_res, pre=False)
        for b in self.blocks:
            for r in ("q", "k", "v", "o", "gate", "up"):
                fmt = b.x_fmt.get(r)
                if fmt is not None and getattr(b, r) is not None:
                    self._hook(getattr(b, r), self._plain_hook(fmt), pre=True)
            fd = b.x_fmt.get("down")
            if P.hadamard_down or fd is not None:
                def down_hook(_m, args, fd=fd):
                    z = apply_hadamard(args[0]) if P.hadamard_down else args[0]
                    return (self.quant(z, fd) if fd is not None else z,) + tuple(args[1:])

                self._hook(b.down, down_hook, pre=True)

    def _weights(self) -> dict[str, torch.Tensor]:
        """{parameter name relative to the base model: effective tensor} of every block."""
        P = self.params
        base_name = self.ad.name_of(self._base)
        strip = (lambda n: n[len(base_name) + 1:]) if base_name else (lambda n: n)
        out: dict[str, torch.Tensor] = {}
        for b, w in zip(self.blocks, self._frozen):
            new = transform_block_weights(w, self._lp(b.index), P.R_res, n_heads=b.n_heads, n_kv_heads=b.n_kv_heads,
                                          head_dim=b.head_dim, rope=b.rope, qk_norm=b.qk_norm,
                                          down_matrix=apply_hadamard if P.hadamard_down else None,
                                          official_compat=self.official_compat, name=f"layers[{b.index}]")
            for r, name in b.names.items():
                W = new[f"{r}.weight"]
                if self.quant_weights and b.w_fmt.get(r) is not None:
                    W = self.quant(W, b.w_fmt[r])
                out[strip(f"{name}.weight")] = W
                if new.get(f"{r}.bias") is not None:
                    out[strip(f"{name}.bias")] = new[f"{r}.bias"]
            groups = self.ad.linear_groups(b.block)
            norms = {n.feeds: n for n in self.ad.norms(b.block)}
            for key, g in (("attn_gain", groups[0].name), ("ffn_gain", groups[2].name)):
                info = norms[g]
                gain = new[key]
                out[strip(f"{info.name}.weight")] = gain - 1.0 if info.kind == "rms_1p" else gain
            if b.qk_norm:
                att = self.ad.attention_module(b.block)
                for key, mod in (("q_gain", att.q_norm), ("k_gain", att.k_norm)):
                    out[strip(f"{self.ad.name_of(mod)}.weight")] = new[key] - 1.0
        return out

    # -- forward ---------------------------------------------------------------------------------
    def hidden(self, ids: torch.Tensor) -> torch.Tensor:
        """Final hidden states [b, T, d] (after the final norm) in lm_head's original basis."""
        if self.mode == "weights":
            from torch.func import functional_call

            h = functional_call(self._base, self._weights(), (ids,), {"use_cache": False},
                                strict=False).last_hidden_state
            return h @ self.params.R_res.T if self.params.R_res is not None else h
        return self._base(ids, use_cache=False).last_hidden_state


# ------------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------------


@dataclass
class OSTQuantResult:
    """What :func:`ostquant` did: the trained parameters (float32, detached), the fold's info,
    the loss of every step, timings (seconds), the resolved options and the online-Hadamard hooks
    left on the down_projs (remove them if the model is used without replacing those linears)."""

    params: OSTParams
    fold: Any
    losses: list[float] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    hooks: list = field(default_factory=list)
    stopped_at: int | None = None


def _trainable(params: OSTParams, tied_qk: bool) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    rots, scales = [], []
    if params.R_res is not None:
        params.R_res = params.R_res.detach().clone().requires_grad_(True)
        rots.append(params.R_res)
    for lp in params.layers:
        if lp.R_ov is not None:
            lp.R_ov = lp.R_ov.detach().clone().requires_grad_(True)
            rots.append(lp.R_ov)
        for attr in ("s_attn", "s_ffn", "s_ov", "s_qk", "s_m"):
            t = getattr(lp, attr)
            if t is None:
                continue
            if attr == "s_qk" and tied_qk:
                t = t[:1]
            t = t.detach().clone().requires_grad_(True)
            setattr(lp, attr, t)
            scales.append(t)
    return rots, scales


def _resolve_budget(opts: dict[str, Any]) -> dict[str, Any]:
    out = dict(BUDGETS[opts["budget"]])
    for k in out:
        if opts.get(k) is not None:
            out[k] = opts[k]
    return out


def _train_ids(ids: torch.Tensor, budget: dict[str, Any], events: list) -> torch.Tensor:
    N, T = ids.shape
    n = N if budget["n_samples"] is None else min(N, budget["n_samples"])
    t = min(T, budget["seq_len"])
    if (budget["n_samples"] is not None and N < budget["n_samples"]) or T < budget["seq_len"]:
        record(events, "ostquant", None, "budget_clipped",
               {"n_samples": [budget["n_samples"], n], "seq_len": [budget["seq_len"], t]})
    return ids[:n, :t].contiguous()


@torch.no_grad()
def _teacher(base: nn.Module, head: nn.Module, ids: torch.Tensor, batch: int, k: int, chunk_tokens):
    """Per sample: the teacher's top-k indices (int32) and log-probabilities, [T, k] each."""
    out = []
    for s in range(0, ids.shape[0], batch):
        h = base(ids[s:s + batch], use_cache=False).last_hidden_state
        for j in range(h.shape[0]):
            t = teacher_topk_from_hidden(h[j], head.weight, head.bias, k=k, chunk_tokens=chunk_tokens)
            out.append((t.idx.to(torch.int32), t.logp.to(torch.float32), t.vocab))
    return out


def _order(n: int, steps: int, batch: int, seed: int) -> list[list[int]]:
    """Sample indices of every step: seeded permutations of range(n), one per epoch."""
    g = torch.Generator().manual_seed(int(seed))
    seq: list[int] = []
    while len(seq) < steps * batch:
        seq.extend(torch.randperm(n, generator=g).tolist())
    return [seq[i * batch:(i + 1) * batch] for i in range(steps)]


def ostquant(model: nn.Module, calib: torch.Tensor, recipe, *, adapter: ModelAdapter | None = None,
             events: list | None = None, progress: bool = False, **options: Any) -> OSTQuantResult:
    """Run OSTQuant on ``model`` in place (see the module docstring): prepare, initialise, train on
    the calibration token ids ``calib`` [N, T] against the unquantized model, fold. ``recipe``:
    the target formats (a Recipe). ``options``: the stage's options (validated; defaults filled).
    The down_proj online Hadamard is left as forward pre-hooks (``result.hooks``)."""
    from ..stages import get_stage

    opts = get_stage("ostquant").resolve_options(options)
    events = events if events is not None else []
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    ad = adapter or get_adapter(model)
    if not ad.pre_norm:
        raise ValueError("ostquant: model is post-LN (do_layer_norm_before=False); its transforms are refused (§1.5)")
    fold_norms(model, ad)
    ad = get_adapter(model)
    allowed = set(ad.transforms) - {"hadamard_down"}
    wanted = set(ALL_TRANSFORMS) if opts["transforms"] == "all" else set(opts["transforms"])
    transforms = (wanted & allowed) | ({"hadamard_down"} if opts["hadamard_down"] else set())
    if opts["transforms"] != "all" and wanted - allowed:
        raise ValueError(f"stage 'ostquant' option 'transforms': {sorted(wanted - allowed)} not legal for model_type "
                         f"{ad.config.model_type!r}; legal: {sorted(allowed)}")
    has_x = any(recipe.layer_config(n) is not None and recipe.layer_config(n).x is not None
                for _b, g in ad.all_linear_groups(include_head=False) for n in g.names)
    quant_weights = (not has_x) if opts["quant_weights"] == "auto" else bool(opts["quant_weights"])
    mode = opts["student"]
    if mode == "auto":
        mode = "weights" if (quant_weights or opts["official_compat"]) else "activations"
    if mode == "weights" and "R_res" in transforms and isinstance(ad, OPTAdapter):
        center_opt_residual(model, ad)  # the weight-side student rotates a mean-free residual (§1.5)
        ad = get_adapter(model)
    budget = _resolve_budget(opts)
    from ..calibrate import as_token_ids

    ids = _train_ids(as_token_ids(calib), budget, events).to(ad.lm_head().weight.device)
    steps, batch = int(budget["steps"]), min(int(budget["batch_size"]), ids.shape[0])
    params = init_ost_params(model, opts["init"], seed=opts["seed"], transforms=transforms - {"hadamard_down"},
                             hadamard_down=opts["hadamard_down"], dtype=torch.float32,
                             allow_dense_orthogonal=opts["allow_dense_orthogonal"], events=events, adapter=ad)
    timings["init"] = time.perf_counter() - t0
    base, head = ad.base(), ad.lm_head()
    frozen = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in frozen:
        p.requires_grad_(False)
    t = time.perf_counter()
    teacher = _teacher(base, head, ids, batch, opts["k"], opts["chunk_tokens"])
    timings["teacher"] = time.perf_counter() - t
    tied_qk = any(ad.attn_layout(b).qk_norm for b in ad.blocks())
    rots, scales = _trainable(params, tied_qk)
    opt_r = StiefelAdam(rots, lr=opts["lr_rot"], stabilize=opts["stabilize"],
                        momentum_projection=opts["momentum_projection"]) if rots else None
    opt_s = torch.optim.Adam(scales, lr=opts["lr_scale"], betas=(0.9, 0.999), weight_decay=0.0) if scales else None
    positive = not ad.mlp_layout(ad.blocks()[0]).gated
    losses: list[float] = []
    stopped = None
    att = getattr(recipe, "attention", None)
    from ..attention import install_attention_quant, remove_attention_quant

    student = Student(model, ad, params, recipe, mode=mode, quant_weights=quant_weights,
                      official_compat=opts["official_compat"], tied_qk=tied_qk)
    if att is not None and att.active:
        install_attention_quant(model, att, ad, quant=ste_fake_quant)
    order = _order(ids.shape[0], steps, batch, opts["seed"])
    last_good = [p.detach().clone() for p in rots + scales]
    t = time.perf_counter()
    it = range(steps)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="ostquant", leave=False)
    try:
        with torch.enable_grad():
            for step in it:
                frac = 1.0 - step / steps  # linear decay to 0, no warm-up
                for o, lr in ((opt_r, opts["lr_rot"]), (opt_s, opts["lr_scale"])):
                    if o is not None:
                        for g in o.param_groups:
                            g["lr"] = lr * frac
                cur = [p.detach().clone() for p in rots + scales]
                idx = order[step]
                x = ids[idx]
                tt = TeacherTopK(torch.cat([teacher[j][0] for j in idx]).long(),
                                 torch.cat([teacher[j][1] for j in idx]), teacher[idx[0]][2])
                h = student.hidden(x)
                loss = kl_top_from_hidden(h, head.weight, head.bias, tt, k=opts["k"],
                                          renorm=opts["loss"] == "kl_top_renorm", chunk_tokens=opts["chunk_tokens"])
                if not loss.requires_grad:  # no quantizer sees a transform: nothing to learn
                    record(events, "ostquant", None, "nothing_to_train", "no quantizer depends on the transforms")
                    break
                for o in (opt_r, opt_s):
                    if o is not None:
                        o.zero_grad(set_to_none=True)
                ok = bool(torch.isfinite(loss))
                if ok:
                    loss.backward()
                    ok = all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in rots + scales)
                if not ok:
                    with torch.no_grad():
                        for p, good in zip(rots + scales, last_good):
                            p.copy_(good)
                    stopped = step
                    record(events, "ostquant", None, "nonfinite_loss", step,
                           message=f"non-finite loss or gradient at step {step}: training stopped, the last finite "
                                   f"parameters restored")
                    break
                losses.append(float(loss.detach()))
                last_good = cur
                if opt_r is not None:
                    opt_r.step()
                if opt_s is not None:
                    opt_s.step()
                if positive:
                    with torch.no_grad():
                        for lp in params.layers:
                            if lp.s_m is not None:
                                lp.s_m.clamp_(min=OPT_MIN_SCALE)
                if progress and hasattr(it, "set_postfix"):
                    it.set_postfix(loss=f"{losses[-1]:.4f}")
    finally:
        student.remove()
        if att is not None and att.active:
            remove_attention_quant(model, ad)
        for p, rg in frozen:
            p.requires_grad_(rg)
    timings["train"] = time.perf_counter() - t
    timings["step"] = timings["train"] / max(1, len(losses) + (stopped is not None))
    # fold (float64, rotations re-projected)
    t = time.perf_counter()
    final = OSTParams(None if params.R_res is None else params.R_res.detach().clone(), [], params.hadamard_down)
    for lp, blk in zip(params.layers, ad.blocks()):
        s_qk = lp.s_qk
        if s_qk is not None and tied_qk:
            s_qk = s_qk.expand(ad.attn_layout(blk).n_kv_heads, -1)
        final.layers.append(LayerParams(*(None if v is None else v.detach().clone()
                                          for v in (lp.s_attn, lp.s_ffn, lp.R_ov, lp.s_ov, s_qk, lp.s_m))))
    info = fold_ost(model, final, adapter=ad, official_compat=opts["official_compat"])
    events.extend(info.events)
    hooks = add_online_hadamard_hooks(model, info)
    timings["fold"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    resolved = {**opts, **budget, "steps": steps, "batch_size": batch, "n_samples": int(ids.shape[0]),
                "seq_len": int(ids.shape[1]), "student": mode, "quant_weights": quant_weights,
                "transforms": sorted(transforms)}
    record(events, "ostquant", None, "trained",
           {"steps": len(losses), "loss_first": losses[0] if losses else None,
            "loss_last": losses[-1] if losses else None, "stopped_at": stopped, "student": mode,
            "quant_weights": quant_weights, "seconds": round(timings["total"], 2),
            "seconds_per_step": round(timings["step"], 3)})
    return OSTQuantResult(final, info, losses, timings, resolved, hooks, stopped)


@register_stage("ostquant", kind="transform", calib=True, options=OPTIONS)
def ostquant_stage(model, adapter, ctx, **options) -> None:
    """OSTQuant (§4.5): learned rotations and scales under fake quantization (KL-Top), folded exactly"""
    res = ostquant(model, ctx.calib, ctx.recipe, adapter=adapter, events=ctx.events, progress=ctx.progress,
                   **options)
    if res.fold.down_matrix is not None:
        T = res.fold.down_matrix.to(torch.float32)  # one tensor shared by every down_proj's QLinear
        kind = "hadamard" if res.fold.hadamard.kind != "dense_orthogonal" else "dense"
        for name in res.fold.pre_transforms:
            ctx.pre_transforms[name] = (T, kind)
