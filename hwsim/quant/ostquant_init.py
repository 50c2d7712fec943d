"""Initial rotations of OSTQuant: WOMI and random Hadamard (docs/spec/algorithms.md §4.5).

WOMI (weight outlier minimisation initialisation), float64:

- ``R_res = U·H_rand``: U the eigenvectors (ascending eigenvalues) of the covariance
  ``C = W_cᵀ W_c / N`` over the input channels of ``W_stack``, the row-concatenation over all layers
  of the q, k, v, up and gate weights (OPT: fc1) of the norm-folded model, columns centred
  (``W_c``); ``H_rand = diag(±1)·H_d`` (normalised, seeded signs).
- ``R_ov^h = U_h·H_rand(d_h)`` per layer and KV head h, from the o_proj column blocks of the query
  heads of KV group h, stacked as rows of length d_h and centred.

Since ``(U H)ᵀ C (U H) = Hᵀ Λ H`` and every entry of ``H_d`` squares to 1/d, every rotated input
channel of ``W_stack`` has the same variance ``tr(C)/d``: the rotation spreads the weight outlier
channels evenly. ``init="hadamard"`` is QuaRot-style: ``R_res = H_rand(d)``, ``R_ov^h = H_rand(d_h)``.
Scales start at 1.
"""

from __future__ import annotations

import torch
from torch import nn

from .hadamard import hadamard_matrix
from .model import ModelAdapter, get_adapter
from .ostquant_fold import OSTParams

__all__ = ["init_ost_params", "womi_rotation", "w_stack", "o_proj_head_rows", "INITS"]

INITS = ("womi", "hadamard", "identity")


def _signs(n: int, g: torch.Generator) -> torch.Tensor:
    return (torch.randint(0, 2, (n,), generator=g) * 2 - 1).to(torch.float64)


def _h_rand(n: int, g: torch.Generator, allow_dense_orthogonal: bool, seed: int, events: list | None) -> torch.Tensor:
    H = hadamard_matrix(n, torch.float64, allow_dense_orthogonal=allow_dense_orthogonal, seed=seed, events=events)
    return _signs(n, g)[:, None] * H


def womi_rotation(W: torch.Tensor, H_rand: torch.Tensor) -> torch.Tensor:
    """``U·H_rand`` for the rows W [N, n] (float64): U the eigenvectors, ascending, of the
    covariance of W's columns (centred, divided by N)."""
    W = W.detach().to(torch.float64)
    Wc = W - W.mean(dim=0, keepdim=True)
    C = Wc.T @ Wc / W.shape[0]
    _, U = torch.linalg.eigh(0.5 * (C + C.T))
    return U @ H_rand


def w_stack(model_or_adapter) -> torch.Tensor:
    """The rows of every q, k, v, up and gate (OPT: fc1) weight of every layer, float64 [N, d]:
    the linears that read the residual stream through a norm."""
    ad = model_or_adapter if isinstance(model_or_adapter, ModelAdapter) else get_adapter(model_or_adapter)
    rows = []
    for blk in ad.blocks():
        for grp in ad.linear_groups(blk):
            if grp.input_norm is not None:
                rows.extend(lin.weight.detach().to(torch.float64) for lin in grp.linears)
    return torch.cat(rows)


def o_proj_head_rows(ad: ModelAdapter, block: nn.Module, kv_head: int) -> torch.Tensor:
    """o_proj column blocks of the query heads of KV group ``kv_head``, as rows of length d_h
    (float64 [G·d, d_h])."""
    lay = ad.attn_layout(block)
    o = ad.linear_groups(block)[1].linears[0].weight.detach().to(torch.float64)
    heads = [j for j in range(lay.n_heads) if lay.kv_head_of(j) == kv_head]
    return torch.cat([o[:, lay.o_cols(j)] for j in heads])


def init_ost_params(model: nn.Module, init: str = "womi", *, seed: int = 42, transforms: set[str] | None = None,
                    hadamard_down: bool | None = None, dtype: torch.dtype = torch.float32,
                    allow_dense_orthogonal: bool = False, events: list | None = None,
                    adapter: ModelAdapter | None = None) -> OSTParams:
    """Initial :class:`OSTParams` (docs/spec/algorithms.md §4.5) of a norm-folded model: rotations
    by ``init`` ("womi", "hadamard" or "identity"), every scale 1, in ``dtype`` (computed in
    float64). ``transforms`` defaults to every transform the model family allows."""
    if init not in INITS:
        raise ValueError(f"init={init!r}; valid: {list(INITS)}")
    ad = adapter or get_adapter(model)
    params = OSTParams.identity(ad, transforms=transforms, hadamard_down=hadamard_down, dtype=dtype)
    if init == "identity":
        return params
    g = torch.Generator().manual_seed(int(seed))
    if params.R_res is not None:
        d = params.R_res.shape[0]
        H = _h_rand(d, g, allow_dense_orthogonal, seed, events)
        R = womi_rotation(w_stack(ad), H) if init == "womi" else H
        params.R_res = R.to(dtype)
    for blk, lp in zip(ad.blocks(), params.layers):
        if lp.R_ov is None:
            continue
        hkv, dh = lp.R_ov.shape[0], lp.R_ov.shape[-1]
        Rs = []
        for h in range(hkv):
            H = _h_rand(dh, g, allow_dense_orthogonal, seed, events)
            Rs.append(womi_rotation(o_proj_head_rows(ad, blk, h), H) if init == "womi" else H)
        lp.R_ov = torch.stack(Rs).to(dtype)
    return params
