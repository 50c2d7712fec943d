"""QSUR, the quantization space utilisation rate of OSTQuant (docs/spec/algorithms.md §4.5).

An analysis quantity, never optimised: for the d-dimensional vectors feeding one quantizer
(activations of one group, or weight rows), modelled as N(μ, Σ), QSUR is the volume of the
α-confidence ellipsoid ``{x : (x − μ)ᵀ Σ⁻¹ (x − μ) ≤ c}``, ``c = χ²_d(α)``, divided by the volume
of the quantization hypercube that contains it (one range shared by all d channels):

    log V_X = (d/2) log π − lgamma(d/2 + 1) + (d/2) log c + ½ Σ_i log λ_i
    paper:  log V_S = d·log( max_j(μ_j + r|q_j|) − min_j(μ_j − r|q_j|) ),  r = sqrt(c λ_max)
    box:    log V_S = d·log( max_j(μ_j + sqrt(c Σ_jj)) − min_j(μ_j − sqrt(c Σ_jj)) )

(λ_i the eigenvalues of Σ, q the principal eigenvector). ``box`` is the cube around the exact
bounding box of the ellipsoid, so its QSUR never exceeds the ball-in-cube ratio
``π^{d/2} / (Γ(d/2 + 1) 2^d)``; ``paper`` (OSTQuant eqs. 3–7) bounds only the principal axis and
can exceed 1 (an isotropic 2-D Gaussian whose principal axis is the diagonal: π/2). Everything
is evaluated in log space in float64 (the volumes under/overflow for d in the hundreds), and
``QSUR^{1/d}`` is returned with ``log QSUR``. c is the Wilson–Hilferty approximation
``d(1 − 2/(9d) + z_α sqrt(2/(9d)))³``, ``z_α = √2 erfinv(2α − 1)`` (no scipy dependency), within
0.05 % of the exact quantile for d ≥ 32 at α ≤ 0.99 (at α = 0.999 only from d ≈ 110).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

__all__ = ["QSUR", "qsur", "chi2_quantile_wh", "ball_in_cube_log_ratio", "VARIANTS", "DEFAULT_ALPHA", "qsur_table",
           "format_qsur_table"]

VARIANTS = ("box", "paper")
DEFAULT_ALPHA = 0.99
#: Eigenvalues below this fraction of the largest are clamped to it (docs/spec/algorithms.md §4.5).
EIG_CLAMP = 1e-12


class QSUR(NamedTuple):
    """``root = QSUR^{1/d}`` and ``log = log QSUR`` (natural log), for one (μ, Σ)."""

    root: float
    log: float


def chi2_quantile_wh(d: int, alpha: float = DEFAULT_ALPHA) -> float:
    """Wilson–Hilferty approximation of the α-quantile of χ² with d degrees of freedom."""
    if isinstance(d, bool) or not isinstance(d, int) or d < 1:
        raise ValueError(f"d={d!r}: a positive int")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha={alpha!r}: must lie in (0, 1)")
    z = math.sqrt(2.0) * float(torch.special.erfinv(torch.tensor(2.0 * alpha - 1.0, dtype=torch.float64)))
    return d * (1.0 - 2.0 / (9.0 * d) + z * math.sqrt(2.0 / (9.0 * d))) ** 3


def ball_in_cube_log_ratio(d: int) -> float:
    """log of (volume of the unit d-ball) / (volume of its bounding cube): the box variant's
    largest possible log QSUR."""
    return (d / 2) * math.log(math.pi) - math.lgamma(d / 2 + 1) - d * math.log(2.0)


def qsur(X: torch.Tensor | None = None, alpha: float = DEFAULT_ALPHA, variant: str = "box", *,
         mu: torch.Tensor | None = None, sigma: torch.Tensor | None = None,
         events: list | None = None, layer: str | None = None) -> QSUR:
    """QSUR of the vectors X [..., d] (flattened to n ≥ d rows; μ and the 1/n covariance Σ
    estimated in float64), or of a given ``mu`` [d] and ``sigma`` [d, d].

    A clamp of small eigenvalues (rank-deficient Σ) emits a DampingWarning and appends
    ``{stage: "qsur", layer, kind: "eig_clamp", value: count}`` to ``events``.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant={variant!r}; valid: {list(VARIANTS)}")
    if X is not None:
        if mu is not None or sigma is not None:
            raise ValueError("qsur: give X, or mu and sigma, not both")
        if not torch.is_tensor(X) or X.dim() < 2:
            raise ValueError(f"X: expected a tensor [..., d] with d ≥ 1 and at least 2 dims, got "
                             f"{getattr(X, 'shape', type(X).__name__)}")
        Xf = X.detach().reshape(-1, X.shape[-1]).to(torch.float64)
        n, d = Xf.shape
        if n < d:
            raise ValueError(f"X: n={n} rows for d={d} channels; QSUR needs n ≥ d (a full-rank covariance)")
        mu = Xf.mean(0)
        Xc = Xf - mu
        sigma = Xc.T @ Xc / n
    else:
        if mu is None or sigma is None:
            raise ValueError("qsur: give X [..., d], or both mu [d] and sigma [d, d]")
        mu = torch.as_tensor(mu).detach().to(torch.float64).reshape(-1)
        sigma = torch.as_tensor(sigma).detach().to(torch.float64)
        d = mu.numel()
        if tuple(sigma.shape) != (d, d):
            raise ValueError(f"sigma: expected shape ({d}, {d}) for mu of {d} entries, got {tuple(sigma.shape)}")
    sigma = 0.5 * (sigma + sigma.T)
    lam, vecs = torch.linalg.eigh(sigma)
    lam_max = float(lam[-1])
    if not lam_max > 0.0:
        raise ValueError(f"sigma: no positive eigenvalue (largest {lam_max:.3g}); QSUR is undefined")
    floor = EIG_CLAMP * lam_max
    n_clamped = int((lam < floor).sum())
    if n_clamped:
        from .algorithms.common import DampingWarning, record

        record(events if events is not None else [], "qsur", layer, "eig_clamp", n_clamped,
               message=f"{n_clamped} eigenvalue(s) of Σ below {EIG_CLAMP:g}·λ_max clamped", category=DampingWarning)
        lam = lam.clamp_min(floor)
    c = chi2_quantile_wh(d, alpha)
    log_vx = (d / 2) * math.log(math.pi) - math.lgamma(d / 2 + 1) + (d / 2) * math.log(c) + 0.5 * float(lam.log().sum())
    if variant == "paper":
        half = math.sqrt(c * lam_max) * vecs[:, -1].abs()
    else:
        half = (c * torch.diagonal(sigma).clamp_min(0.0)).sqrt()
    side = float((mu + half).max() - (mu - half).min())
    log_vs = d * math.log(side)
    log_q = log_vx - log_vs
    return QSUR(math.exp(log_q / d), log_q)


# ------------------------------------------------------------------------------------------------
# Per-layer table of a model (``hwsim quantize ... --qsur``)
# ------------------------------------------------------------------------------------------------


@torch.no_grad()
def qsur_table(model, ids: torch.Tensor, *, adapter=None, alpha: float = DEFAULT_ALPHA, variant: str = "box",
               max_tokens: int = 4096, events: list | None = None) -> list[dict]:
    """``QSUR^{1/d}`` of the input every linear group's activation quantizer sees, per decoder block:
    rows ``{"block", "group", "d", "qsur", "n"}`` (``qsur`` None where fewer than d tokens were seen).

    One forward of the first calibration sequences (at most ``max_tokens`` tokens, one batch) with
    a forward pre-hook on each group's first linear, registered last so that it sees the input
    after any online transform a transform stage left (down_proj's Hadamard); a QLinear's own
    ``pre_transform`` is applied too. The statistics are computed in the hook (float64) and the
    activations dropped, so memory stays at one forward.
    """
    from .model import get_adapter
    from .qlinear import QLinear

    ad = adapter or get_adapter(model)
    ids = torch.as_tensor(ids)
    n_seq = max(1, min(ids.shape[0], max_tokens // max(1, ids.shape[1])))
    batch = ids[:n_seq]
    rows: list[dict] = []
    handles = []
    for bi, block in enumerate(ad.blocks()):
        for grp in ad.linear_groups(block):
            lin = grp.linears[0]
            row = {"block": bi, "group": grp.name, "d": int(lin.in_features), "qsur": None, "n": 0}
            rows.append(row)

            def hook(mod, args, row=row, name=grp.names[0]):
                x = args[0].detach()
                if isinstance(mod, QLinear) and mod.pre_transform is not None:
                    x = x.to(mod.pre_transform.dtype) @ mod.pre_transform
                X = x.reshape(-1, x.shape[-1])
                row["n"] = int(X.shape[0])
                if X.shape[0] >= X.shape[1]:
                    row["qsur"] = qsur(X, alpha, variant, events=events, layer=name).root

            handles.append(lin.register_forward_pre_hook(hook))
    try:
        model(batch, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return rows


def format_qsur_table(before: list[dict], after: list[dict] | None = None, *, variant: str = "box",
                      alpha: float = DEFAULT_ALPHA) -> str:
    """Markdown table: one row per block, ``before → after`` per linear group, and the mean."""
    groups = list(dict.fromkeys(r["group"] for r in before))
    idx = {(r["block"], r["group"]): r for r in (after or [])}
    head = f"QSUR^(1/d) of each quantizer input ({variant} variant, alpha={alpha:g}; higher is better)"
    lines = [head, "", "| block | " + " | ".join(f"{g} (d={next(r['d'] for r in before if r['group'] == g)})"
                                               for g in groups) + " |", "|---" * (len(groups) + 1) + "|"]

    def cell(b, a):
        f = (lambda v: "-" if v is None else f"{v:.4f}")
        return f(b) if after is None else f"{f(b)} → {f(a)}"

    for blk in sorted({r["block"] for r in before}):
        cells = []
        for g in groups:
            b = next((r["qsur"] for r in before if r["block"] == blk and r["group"] == g), None)
            a = idx.get((blk, g), {}).get("qsur")
            cells.append(cell(b, a))
        lines.append(f"| {blk} | " + " | ".join(cells) + " |")
    means = []
    for g in groups:
        vb = [r["qsur"] for r in before if r["group"] == g and r["qsur"] is not None]
        va = [r["qsur"] for r in (after or []) if r["group"] == g and r["qsur"] is not None]
        mb = sum(vb) / len(vb) if vb else None
        ma = sum(va) / len(va) if va else None
        means.append(cell(mb, ma))
    lines.append("| mean | " + " | ".join(means) + " |")
    return "\n".join(lines)
