"""Riemannian Adam on the Stiefel manifold (orthogonal matrices), docs/spec/algorithms.md §4.5.

The optimiser OSTQuant uses for its rotations, written from the math (no geoopt). For a matrix
X [n, p] (n ≥ p, XᵀX = I; square: orthogonal) with Euclidean gradient G, under the canonical
metric ``<ξ, η>_X = tr(ξᵀ(I − ½XXᵀ)η)``:

    g  = G − X Gᵀ X                                  Riemannian gradient
    m ← β₁ m + (1 − β₁) g
    v ← β₂ v + (1 − β₂) <g, g>_X                     one scalar per matrix
    u  = −lr · (m / (1 − β₁ᵗ)) / (sqrt(v / (1 − β₂ᵗ)) + ε)
    A  = u Xᵀ − X uᵀ                                 skew [n, n]
    [X, m] ← (I − A/2)⁻¹ (I + A/2) [X, m]            Cayley retraction; m transported by it

and every ``stabilize`` steps ``X ← U Vᵀ`` (SVD of X) and the momentum is projected back to the
tangent space. This is geoopt's ``RiemannianAdam`` with ``Stiefel()`` (canonical), which the
official OSTQuant code uses. One detail of geoopt is kept selectable: its momentum "projection"
at stabilisation is ``m − X mᵀ X``, which for a tangent m (= XΩ, Ω skew, square X) returns
**2m**, so geoopt doubles the momentum every ``stabilize`` steps. ``momentum_projection="geoopt"``
(default, reproduces the official training dynamics) does the same; ``"tangent"`` uses the
orthogonal projection ``m − X sym(Xᵀm)`` (idempotent).

Leading dimensions are a batch of independent matrices (e.g. the per-KV-head ``R_ov``
[H_kv, d_h, d_h]), each with its own scalar second moment.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch

__all__ = ["StiefelAdam", "OFFICIAL_ROTATE_LR", "OFFICIAL_SMOOTH_LR", "OFFICIAL_BETAS", "stiefel_error",
           "project_orthogonal", "canonical_inner", "MOMENTUM_PROJECTIONS"]

#: Learning rate of the official OSTQuant code for orthogonal matrices (docs/spec/algorithms.md §4.5).
OFFICIAL_ROTATE_LR = 0.01689753172873217
#: Learning rate of the official OSTQuant code for scaling vectors (ordinary Adam).
OFFICIAL_SMOOTH_LR = 0.0017898822675917248
OFFICIAL_BETAS = (0.9, 0.999)
#: Default re-projection period (steps), as the official code (geoopt ``stabilize=10``).
DEFAULT_STABILIZE = 10
#: A parameter further than this from the manifold at its first step is rejected.
_ON_MANIFOLD_TOL = 1e-3
MOMENTUM_PROJECTIONS = ("geoopt", "tangent")


def stiefel_error(X: torch.Tensor) -> float:
    """``max |XᵀX − I|`` over all entries (and batch elements) of X [..., n, p]."""
    X = X.detach()
    p = X.shape[-1]
    eye = torch.eye(p, dtype=X.dtype, device=X.device)
    return float((X.transpose(-1, -2) @ X - eye).abs().max())


def project_orthogonal(X: torch.Tensor) -> torch.Tensor:
    """Nearest point of the Stiefel manifold (polar factor) ``U Vᵀ`` from the SVD of X [..., n, p]."""
    U, _, Vh = torch.linalg.svd(X, full_matrices=False)
    return U @ Vh


def canonical_inner(X: torch.Tensor, u: torch.Tensor, v: torch.Tensor | None = None) -> torch.Tensor:
    """Canonical metric ``tr(uᵀv) − ½ tr((Xᵀu)ᵀ(Xᵀv))`` per matrix, shape [..., 1, 1]."""
    v = u if v is None else v
    xu = X.transpose(-1, -2) @ u
    xv = xu if v is u else X.transpose(-1, -2) @ v
    return ((u * v).sum((-1, -2), keepdim=True) - 0.5 * (xu * xv).sum((-1, -2), keepdim=True))


def _rgrad(X: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    return G - X @ G.transpose(-1, -2) @ X


def _cayley(X: torch.Tensor, u: torch.Tensor, *vs: torch.Tensor) -> list[torch.Tensor]:
    """Cayley map ``(I − A/2)⁻¹(I + A/2)`` with ``A = u Xᵀ − X uᵀ``, applied to X and each of vs."""
    n, p = X.shape[-2], X.shape[-1]
    A = u @ X.transpose(-1, -2) - X @ u.transpose(-1, -2)
    eye = torch.eye(n, dtype=X.dtype, device=X.device)
    rhs = torch.cat((X,) + vs, dim=-1)
    out = torch.linalg.solve(eye - 0.5 * A, rhs + 0.5 * (A @ rhs))
    return list(out.split(p, dim=-1))


class StiefelAdam(torch.optim.Optimizer):
    """Riemannian Adam for parameters constrained to ``XᵀX = I`` (X [..., n, p], n ≥ p).

    Args:
        params: the orthogonal matrices (leaf tensors with ``requires_grad``), or param groups.
        lr: learning rate (default: the official OSTQuant rotation rate).
        betas, eps: as Adam; the second moment is one scalar per matrix.
        weight_decay: L2 term added to the Euclidean gradient (0 in OSTQuant).
        stabilize: re-project X and the momentum every this many steps of a parameter (None: never).
        momentum_projection: ``"geoopt"`` (``m − X mᵀ X``, geoopt's behaviour) or ``"tangent"``.
        compute_dtype: dtype of the step's linear algebra (Riemannian gradient, Cayley solve,
            re-projection); the parameter and its state keep their dtype. Default float64: a
            float32 Cayley solve drifts off the manifold by ~1e-6 within 10 steps, the cast of a
            float64 result only by its rounding. None: the parameter's dtype (as geoopt).
    """

    def __init__(self, params: Iterable, lr: float = OFFICIAL_ROTATE_LR,
                 betas: tuple[float, float] = OFFICIAL_BETAS, eps: float = 1e-8, weight_decay: float = 0.0,
                 stabilize: int | None = DEFAULT_STABILIZE, momentum_projection: str = "geoopt",
                 compute_dtype: torch.dtype | None = torch.float64):
        if not lr >= 0.0:
            raise ValueError(f"lr={lr!r}: must be >= 0")
        if not (len(betas) == 2 and all(0.0 <= b < 1.0 for b in betas)):
            raise ValueError(f"betas={betas!r}: two values in [0, 1)")
        if not eps > 0.0:
            raise ValueError(f"eps={eps!r}: must be > 0")
        if stabilize is not None and (isinstance(stabilize, bool) or not isinstance(stabilize, int) or stabilize < 1):
            raise ValueError(f"stabilize={stabilize!r}: a positive int or None")
        if momentum_projection not in MOMENTUM_PROJECTIONS:
            raise ValueError(f"momentum_projection={momentum_projection!r}; valid: {list(MOMENTUM_PROJECTIONS)}")
        if compute_dtype not in (None, torch.float32, torch.float64):
            raise ValueError(f"compute_dtype={compute_dtype!r}; valid: None, torch.float32, torch.float64")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, stabilize=stabilize,
                        momentum_projection=momentum_projection, compute_dtype=compute_dtype)
        super().__init__(params, defaults)
        for group in self.param_groups:
            for i, p in enumerate(group["params"]):
                if p.dim() < 2 or p.shape[-2] < p.shape[-1]:
                    raise ValueError(f"params[{i}]: shape {tuple(p.shape)} is not [..., n, p] with n >= p")

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for i, X in enumerate(group["params"]):
                if X.grad is None:
                    continue
                G = X.grad
                if G.is_sparse:
                    raise ValueError(f"params[{i}]: sparse gradients are not supported")
                state = self.state[X]
                if not state:
                    err = stiefel_error(X)
                    if not err < _ON_MANIFOLD_TOL:
                        raise ValueError(f"params[{i}]: not on the Stiefel manifold (max |XᵀX − I| = {err:.3g},"
                                         f" tolerance {_ON_MANIFOLD_TOL}); initialise it orthogonal")
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(X)
                    state["exp_avg_sq"] = torch.zeros(X.shape[:-2] + (1, 1), dtype=X.dtype, device=X.device)
                state["step"] += 1
                t = state["step"]
                cd = group["compute_dtype"] or X.dtype
                Xc, m, v = X.to(cd), state["exp_avg"].to(cd), state["exp_avg_sq"].to(cd)
                G = G.to(cd)
                if group["weight_decay"]:
                    G = G + group["weight_decay"] * Xc
                g = _rgrad(Xc, G)
                m = b1 * m + (1 - b1) * g
                v = b2 * v + (1 - b2) * canonical_inner(Xc, g)
                denom = (v / (1 - b2 ** t)).sqrt() + group["eps"]
                u = (m / (1 - b1 ** t)) / denom * (-group["lr"])
                Xc, m = _cayley(Xc, u, m)
                if group["stabilize"] is not None and t % group["stabilize"] == 0:
                    Xc, m = self._stabilize(Xc, m, group["momentum_projection"])
                X.copy_(Xc)
                state["exp_avg"].copy_(m)
                state["exp_avg_sq"].copy_(v)
        return loss

    @staticmethod
    def _stabilize(X: torch.Tensor, m: torch.Tensor, how: str) -> tuple[torch.Tensor, torch.Tensor]:
        X = project_orthogonal(X)
        if how == "geoopt":
            return X, m - X @ m.transpose(-1, -2) @ X
        xm = X.transpose(-1, -2) @ m
        return X, m - X @ (0.5 * (xm + xm.transpose(-1, -2)))
