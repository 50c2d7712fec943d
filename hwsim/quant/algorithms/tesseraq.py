"""TesseraQ core (docs/spec/algorithms.md §4.6): options, exact quantile and the soft quantizer.

TesseraQ reconstructs one block at a time with **progressive adaptive rounding** (PAR) and
**dequantization scale tuning** (DST). This module holds the per-weight part; the block trainer
is :func:`hwsim.quant.algorithms.tesseraq_block.tesseraq_block`.

Public API (shapes: a linear weight is ``W [out, in]``, float32; ``ns`` is the number of scale
entries per row: ``ceil(in / G)`` for groups/blocks of G along ``in``, 1 per channel, and the
per-tensor scale is ``[1, 1]``):

- ``GAMMA = -0.1``, ``ZETA = 1.1``: AdaRound's rectified sigmoid
  ``h(ν) = clamp(σ(ν)(ζ − γ) + γ, 0, 1)`` (dimensionless, in units of one grid step).
- ``SCHEDULES``: PAR schedules (tuples of the soft fraction τ_i per stage), ``"default"`` (K = 20)
  and ``"short"`` (K = 10).
- :class:`TesseraQOptions` (frozen), ``PRESETS = {"paper", "cpu"}`` (the spec's budget table) and
  :func:`from_options` (a dict of options, validated, optionally starting from ``preset``).
- :func:`exact_quantile(x, q)`: the order statistic ``x_(k)``, ``k = clamp(ceil(q·n), 1, n)``,
  valid for any number of elements (``torch.quantile`` refuses more than 2**24).
- :class:`SoftQuantizer`: soft weight of one linear, ``harden(τ)``, ``harden_all()``,
  ``hard_fraction()``, ``int_values()``, ``qtensor()``.
- :func:`llmc_bake(W, step, nu)`: the reference code's alternative bake (float weight that RTN
  with the same grid rounds to the PAR codes, except exact ties).

Soft quantizer (all in float32; ``s`` is the grid step of the element, ``z`` the zero point)::

    W_int = clamp(floor(W/s) + h(ν) + z, qmin, qmax)       # codes, integers once hardened
    Ŵ     = (W_int − z) · S,   S = cast_f(s · 2σ(v))          # DST; S = s when v = 0 or off

- Scaled-integer formats (``int<b>_g<G>[_asym]``, ``int<b>_ch[_asym]``, ``int<b>[_asym]``, any
  scale type, clip ratio, divisor): ``s`` and ``z`` are the format's own min-max quantization of
  W (``hwsim.formats.quantize``), computed once, never learned. ``[qmin, qmax]`` is the code range
  (``[0, 2**b − 1]`` asymmetric, ``[−2**(b−1), 2**(b−1) − 1]`` symmetric). One DST parameter
  ``v`` per scale entry (``[out, ns]``, ``v₀ = 0``); the stored scale is ``s · 2σ(v)`` cast to the
  format's scale type (fp16 by default), and the forward uses that same cast value (with a
  straight-through gradient), so that hardened weights equal ``qtensor().dequantize()`` bit for
  bit at every v.
- Block formats with integer elements (MXINT, BFP): the shared exponents are fixed from the
  unquantized W (as GPTQ's FixedGrid), ``s = 2**(e + ie)`` per block, ``z = 0``, ``[qmin, qmax]``
  the element's code range; PAR runs on that element grid. DST is disabled with a recorded
  ``dst_disabled`` event and a :class:`QuantWarning` (a power-of-two scale cannot carry a
  continuous multiplier).
- Minifloat elements (MXFP, NVFP4, fp8/fp6/fp4, bf16, ...) raise ``ValueError``.

ν is initialised so that ``h(ν₀) = frac(W/s)``: the soft weight equals W at initialisation
(inside the clamp range). The format's own rounding mode (RNE, RNA, SR, ...) plays no part: PAR
replaces it; "zero iterations" (``harden_all`` right after construction) rounds up iff
``frac(W/s) > 0.5``, i.e. RTN except exact ties.

PAR hardening rule (``harden(τ)``): the spec's score is ``HS = |h(ν) − 0.5|`` with hardened
elements at 0.5. HS is a non-decreasing function of ``|ν|`` (strictly increasing until h
saturates at 0 or 1), so the selection is made on ``|ν|``, with hardened elements at +inf: the
same elements as the spec wherever h is not saturated, while saturated soft elements (exact HS
ties at 0.5 in the spec's formula, which would then never be selected) are ordered by ``|ν|``.
``t = exact_quantile(score, τ)``; soft elements with ``score > t`` are hardened, up iff ``ν > 0``
(equivalently ``h > 0.5 + t_HS`` → 1, ``h < 0.5 − t_HS`` → 0). Scores equal to t are ties
(common in float32: frac(W/s) takes few distinct values); hwsim hardens the first of them in flat
order until exactly ``n − ceil(τ·n)`` elements are hard (unless more were hard already), so the
hard fraction is ``1 − τ`` within one element with or without ties (the threshold rule alone
would harden fewer at a tie). Hardened elements are a mask plus a fixed value: no
gradient reaches their ν. ``harden_all()`` hardens the rest, up iff ``ν > 0`` (ν = 0 rounds down).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from .common import as_tensor, check_finite, record

__all__ = [
    "GAMMA", "ZETA", "SCHEDULES", "PRESETS", "STAGE", "TesseraQOptions", "from_options",
    "exact_quantile", "quantile_rank", "rectified_sigmoid", "inverse_rectified_sigmoid", "SoftQuantizer",
    "llmc_bake",
]

GAMMA = -0.1  # AdaRound rectified sigmoid: lower stretch
ZETA = 1.1    # AdaRound rectified sigmoid: upper stretch

SCHEDULES: dict[str, tuple[float, ...]] = {
    "default": (0.8, 0.65, 0.5, 0.43, 0.38, 0.34, 0.3, 0.27, 0.24, 0.21, 0.18, 0.15, 0.12, 0.10,
                0.08, 0.06, 0.04, 0.02, 0.01, 0.005),
    "short": (0.75, 0.5, 0.375, 0.25, 0.125, 0.09, 0.06, 0.04, 0.02, 0.005),
}

STAGE = "tesseraq"  # the stage name of recorded events
INITS = ("rtn", "awq")
DST_MULTIPLIER_MAX = 2.0  # 2σ(v) ∈ (0, 2)


# ---------------------------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------------------------


def _bad(name: str, value: Any, valid: str) -> ValueError:
    return ValueError(f"tesseraq option {name}={value!r} is invalid: expected {valid}")


def _check_int(name: str, value: Any, lo: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise _bad(name, value, f"an integer >= {lo}")


def _check_real(name: str, value: Any, lo: float, lo_open: bool) -> None:
    ok = (not isinstance(value, bool) and isinstance(value, (int, float, np.floating, np.integer))
          and math.isfinite(float(value)) and (float(value) > lo if lo_open else float(value) >= lo))
    if not ok:
        raise _bad(name, value, f"a finite number {'>' if lo_open else '>='} {lo}")


def resolve_schedule(schedule: str | tuple | list) -> tuple[float, ...]:
    """Schedule name or fractions -> the validated tuple of soft fractions τ_1 > ... > τ_K."""
    if isinstance(schedule, str):
        if schedule not in SCHEDULES:
            raise _bad("schedule", schedule, f"one of {sorted(SCHEDULES)} or a strictly decreasing "
                       f"sequence of fractions in (0, 1)")
        return SCHEDULES[schedule]
    try:
        taus = tuple(float(t) for t in schedule)
    except (TypeError, ValueError):
        raise _bad("schedule", schedule, f"one of {sorted(SCHEDULES)} or a strictly decreasing "
                   f"sequence of fractions in (0, 1)") from None
    if (not taus or any(not (0.0 < t < 1.0) for t in taus)
            or any(b >= a for a, b in zip(taus, taus[1:]))):
        raise _bad("schedule", schedule, "a non-empty, strictly decreasing sequence of fractions "
                   f"in (0, 1) (or one of {sorted(SCHEDULES)})")
    return taus


@dataclass(frozen=True)
class TesseraQOptions:
    """Budget and hyper-parameters of TesseraQ (docs/spec/algorithms.md §4.6, "Budgets").

    schedule: a name of ``SCHEDULES`` or the soft fractions τ_i (strictly decreasing in (0, 1)).
    iters_per_stage: Adam steps after each hardening. batch_size: sequences per step (drawn at
    random from the block inputs). lr: Adam learning rate of ν (no weight decay). scale_lr,
    scale_weight_decay: Adam learning rate and weight decay of the DST parameters v.
    dst: train the scale multipliers 2σ(v) (integer formats only). init: ``"rtn"`` (min-max of
    the given weights) or ``"awq"`` (paper default; not implemented by the block trainer).
    amp: fp16 autocast with a gradient scaler on CUDA (off on CPU). seed: seed of the batch draw.
    """

    schedule: str | tuple[float, ...] = "default"
    iters_per_stage: int = 250
    batch_size: int = 4
    lr: float = 1e-3
    scale_lr: float = 1e-3
    scale_weight_decay: float = 1e-4
    dst: bool = True
    init: str = "rtn"
    amp: bool = False
    seed: int = 0

    def __post_init__(self):
        if not isinstance(self.schedule, str):
            object.__setattr__(self, "schedule", resolve_schedule(self.schedule))
        else:
            resolve_schedule(self.schedule)
        _check_int("iters_per_stage", self.iters_per_stage, 0)
        _check_int("batch_size", self.batch_size, 1)
        _check_real("lr", self.lr, 0.0, True)
        _check_real("scale_lr", self.scale_lr, 0.0, True)
        _check_real("scale_weight_decay", self.scale_weight_decay, 0.0, False)
        for name in ("dst", "amp"):
            if not isinstance(getattr(self, name), bool):
                raise _bad(name, getattr(self, name), "True or False")
        if self.init not in INITS:
            raise _bad("init", self.init, f"one of {list(INITS)}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) \
                or not 0 <= int(self.seed) < 2 ** 63:
            raise _bad("seed", self.seed, "an integer in [0, 2**63)")

    @property
    def taus(self) -> tuple[float, ...]:
        """The soft fractions τ_1 > ... > τ_K of the schedule."""
        return resolve_schedule(self.schedule)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (the schedule as given: a name or a list of fractions)."""
        d = dataclasses.asdict(self)
        if not isinstance(self.schedule, str):
            d["schedule"] = list(self.schedule)
        return d


PRESETS: dict[str, TesseraQOptions] = {
    # Paper defaults (LLaMA-2/3.1 W2/W3/W4): 20 stages x 250 iterations, batch 4, AWQ init.
    "paper": TesseraQOptions(schedule="default", iters_per_stage=250, batch_size=4, lr=1e-3,
                             scale_lr=1e-3, scale_weight_decay=1e-4, init="awq", amp=True),
    # CPU budget, sized so that SmolLM2-135M on 32 x 256 calibration tokens finishes in minutes on
    # 2 cores (benchmarks/bench_tesseraq.py): 10 stages x 5 iterations, batch 2, RTN init, float32
    # (the spec's example CPU column has 50 iterations on 64 x 512 tokens: about 50x the work).
    # lr 2e-2, not the paper's 1e-3: Adam moves every soft ν by about lr per step whatever its
    # gradient, so lr x iters_per_stage is how far a stage can move a rounding; at 5 steps, 1e-3
    # (0.005 per stage) leaves nearly RTN (SmolLM2 block 1, int3_g128_asym: block MSE RTN 104.5,
    # lr 1e-3 61.5, 2e-2 31.8; docs/quant_algorithms.md, "TesseraQ", "Learning rate")
    "cpu": TesseraQOptions(schedule="short", iters_per_stage=5, batch_size=2, lr=2e-2,
                           scale_lr=1e-3, scale_weight_decay=1e-4, init="rtn", amp=False),
}

_FIELDS = tuple(f.name for f in dataclasses.fields(TesseraQOptions))


def from_options(options: Mapping[str, Any] | TesseraQOptions | None = None) -> TesseraQOptions:
    """Options from a dict: optional ``preset`` (a name of ``PRESETS``, default: the dataclass
    defaults, i.e. the paper budget with RTN init and no autocast) plus any field of
    :class:`TesseraQOptions`. Unknown keys and invalid values raise ValueError naming the
    option, the value and the valid choices or range."""
    if options is None:
        return TesseraQOptions()
    if isinstance(options, TesseraQOptions):
        return options
    if not isinstance(options, Mapping):
        raise ValueError(f"tesseraq options: expected a mapping, got {type(options).__name__}")
    opts = dict(options)
    preset = opts.pop("preset", None)
    unknown = sorted(set(opts) - set(_FIELDS))
    if unknown:
        raise ValueError(f"tesseraq options: unknown option(s) {unknown}; valid: "
                         f"{['preset', *_FIELDS]}")
    if preset is None:
        base = TesseraQOptions()
    elif isinstance(preset, str) and preset in PRESETS:
        base = PRESETS[preset]
    else:
        raise _bad("preset", preset, f"one of {sorted(PRESETS)}")
    return dataclasses.replace(base, **opts)


# ---------------------------------------------------------------------------------------------
# Exact quantile
# ---------------------------------------------------------------------------------------------


def quantile_rank(q: float, n: int) -> int:
    """1-based rank k = clamp(ceil(q·n), 1, n), with q·n evaluated exactly on the shortest decimal
    form of q (``repr``): q = 0.3, n = 10 gives 3 and q = 0.005, n = 1000 gives 5, as written,
    where the float product (3.0000000000000004) or the binary value of 0.005 (slightly above
    5/1000) would give one more."""
    return min(max(math.ceil(Fraction(repr(float(q))) * n), 1), n)


def exact_quantile(x: torch.Tensor, q: float) -> torch.Tensor:
    """The order statistic ``x_(k)`` (k-th smallest of all elements), ``k = clamp(ceil(q·n), 1, n)``.

    x: any shape, n >= 1 elements, no NaN (±inf allowed); q in [0, 1]. Returns a 0-d tensor of
    x's dtype and device. ``ceil(q·n)`` is evaluated exactly on the decimal value of q
    (:func:`quantile_rank`: q = 0.3, n = 10 gives k = 3, not 4). With no ties, exactly ``n − k``
    elements are ``> x_(k)``, so the fraction above the returned value is ``1 − q`` within one
    element (``n(1 − q) − 1 <= n − k <= n(1 − q)``, the lower bound reached only at q = 0 where
    k = 1). Uses ``torch.kthvalue`` (selection), valid beyond 2**24 elements.
    """
    if isinstance(q, bool) or not isinstance(q, (int, float, np.floating)) or not 0.0 <= float(q) <= 1.0:
        raise ValueError(f"exact_quantile: q={q!r} is invalid: expected a number in [0, 1]")
    flat = x.detach().reshape(-1)
    n = flat.numel()
    if n == 0:
        raise ValueError("exact_quantile: x is empty (expected at least one element)")
    if flat.is_floating_point() and bool(torch.isnan(flat).any()):
        raise ValueError("exact_quantile: x contains NaN (expected finite or ±inf values)")
    return torch.kthvalue(flat, quantile_rank(float(q), n)).values


# ---------------------------------------------------------------------------------------------
# Rectified sigmoid
# ---------------------------------------------------------------------------------------------


def rectified_sigmoid(nu: torch.Tensor) -> torch.Tensor:
    """h(ν) = clamp(σ(ν)(ζ − γ) + γ, 0, 1), elementwise."""
    return torch.clamp(torch.sigmoid(nu) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def inverse_rectified_sigmoid(f: torch.Tensor) -> torch.Tensor:
    """ν₀ with h(ν₀) = f for f in [0, 1), ν₀ = −log((ζ − γ)/(f − γ) − 1), evaluated in float64 and
    returned in f's dtype, with the sign forced to ``sign(f − 0.5)`` (ν₀ ≤ 0 at f = 0.5): the zero
    iteration rounding ``ν > 0`` is then exactly ``f > 0.5``."""
    f64 = f.to(torch.float64)
    nu = -torch.log((ZETA - GAMMA) / (f64 - GAMMA) - 1.0)
    nu = torch.where(f64 > 0.5, nu.abs(), -nu.abs())
    return nu.to(f.dtype)


# ---------------------------------------------------------------------------------------------
# Soft quantizer
# ---------------------------------------------------------------------------------------------

# Scale types of scaled-integer formats -> the torch dtype whose cast is the format's RNE cast.
_F32_EMAX = 127           # largest exponent of a normal fp32 (shared exponents above are refused)
SOFT, HARD_DOWN, HARD_UP = -1, 0, 1  # SoftQuantizer.state values


def _torch_scale_dtype(elem) -> torch.dtype:
    from hwsim.formats import BF16_ELEM, FP16_ELEM, FP32_ELEM

    table = {FP16_ELEM: torch.float16, BF16_ELEM: torch.bfloat16, FP32_ELEM: torch.float32}
    try:
        return table[elem]
    except KeyError:
        raise ValueError(f"TesseraQ DST: scale element {elem.name} has no torch dtype (supported: "
                         f"fp16, bf16, fp32)") from None


def cast_scale(s: torch.Tensor, elem) -> torch.Tensor:
    """fp32 scales -> the fp32 value of their storage in ``elem`` (fp16/bf16/fp32): RNE,
    saturating at the largest finite value, zero replaced by the smallest normal (the rule of
    ``hwsim.formats`` for scaled-integer scales)."""
    dt = _torch_scale_dtype(elem)
    y = torch.clamp(s, max=elem.max_value).to(dt).to(torch.float32)
    return torch.where(y == 0, torch.full_like(y, elem.min_normal), y)


class _StraightThrough(torch.autograd.Function):
    """Forward returns y exactly; the gradient goes to x unchanged."""

    @staticmethod
    def forward(ctx, x, y):  # noqa: D102
        return y

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        return grad, None


SUPPORTED = ("scaled integers (int<b>_g<G>[_asym], int<b>_ch[_asym], int<b>[_asym])",
             "integer-element block formats (mxint<b>, bfp<b>)")


class SoftQuantizer(nn.Module):
    """Soft (PAR + DST) quantizer of one linear weight ``W [out, in]`` in a weight format.

    Args:
        weight: W [out, in] (any float dtype; copied to float32, on its device).
        fmt: ``hwsim.formats`` name or spec (see the module docstring for what is supported).
        dst: train one scale multiplier 2σ(v) per scale entry (scaled-integer formats; block
            formats record a ``dst_disabled`` event and warn).
        layer: name used in errors and events. events: list receiving ``{stage, layer, kind,
            value}`` records.

    Parameters: ``nu`` [out, in] (rounding logits ν), ``v`` [out, ns] or None (DST).
    Buffers: ``flo`` = floor(W/s) [out, in], ``state`` int8 [out, in] (SOFT = −1, HARD_DOWN = 0,
    HARD_UP = 1), ``s`` [out, ns] (fp32 grid step: the decoded stored scale, or 2**(e+ie)),
    ``zf`` [out, ns] (zero point as float), ``sign`` bool [out, in] (sign-magnitude codes only).
    ``forward()`` returns the soft weight Ŵ [out, in] float32 (see :meth:`weight`).
    """

    def __init__(self, weight: torch.Tensor, fmt, *, dst: bool = True, layer: str | None = None,
                 events: list[dict] | None = None):
        super().__init__()
        import hwsim.formats as F
        from hwsim.formats import BlockSpec, IntElem, ScaledIntSpec

        from .rtn import encode, to_torch_qtensor

        W = as_tensor(weight, "weight")
        if W.dim() != 2:
            raise ValueError(f"SoftQuantizer: weight of layer {layer!r} must be 2-D [out, in], got "
                             f"shape {tuple(W.shape)}")
        check_finite(W, "weight", layer)
        W = W.to(torch.float32)
        spec = F.get(fmt)
        self.spec = spec
        self.layer = layer
        self.out_features, self.in_features = W.shape
        events = [] if events is None else events
        if isinstance(spec, BlockSpec) and isinstance(spec.elem, IntElem) and not spec.is_nvfp4:
            if spec.input_ftz:
                tiny = torch.abs(W) < 2.0 ** -126
                W = torch.where(tiny, torch.copysign(torch.zeros_like(W), W), W)
            self.kind = "block"
        elif isinstance(spec, ScaledIntSpec):
            self.kind = "int"
        else:
            raise ValueError(f"TesseraQ: format {spec.name} of layer {layer!r} is not supported: "
                             f"PAR needs an integer grid; supported: {'; '.join(SUPPORTED)}")
        if W.device.type == "cpu":  # the numba codec: bit-identical to the torch codec, far faster on CPU
            from ..qlinear import quantize_np

            q0 = to_torch_qtensor(quantize_np(W, spec, axis=-1))
        else:
            q0 = encode(W, spec, axis=-1)
        self.q0 = q0
        if self.kind == "int":
            self.G = spec.group_size if spec.granularity == "group" else None
            b = spec.bits
            self.qmin, self.qmax = ((-(1 << (b - 1)), (1 << (b - 1)) - 1) if spec.symmetric
                                    else (0, (1 << b) - 1))
            s = self._decode_scale_codes(q0.scales).to(W.device)
            if spec.granularity == "tensor":
                s = s.reshape(1, 1)
            z = (torch.zeros_like(s) if spec.symmetric
                 else torch.as_tensor(q0.zero_points).to(W.device, torch.float32).reshape(s.shape))
            self.dst = bool(dst)
        else:
            self.G = spec.block_size
            el = spec.elem
            self.qmin, self.qmax = el.c_min, el.c_max
            sc = torch.as_tensor(q0.scales).to(torch.int64)
            if spec.scale.nan_code is not None and bool((sc == spec.scale.nan_code).any()):
                raise ValueError(f"TesseraQ: format {spec.name} gives a NaN block scale for layer "
                                 f"{layer!r} (values beyond the scale range)")
            e = sc - spec.scale.bias
            if bool((e > _F32_EMAX).any()):
                raise ValueError(f"TesseraQ: layer {layer!r} has a block exponent above "
                                 f"{_F32_EMAX} in format {spec.name}")
            s = torch.ldexp(torch.ones(e.shape, dtype=torch.float64), (e + el.ie).to(torch.float64))
            s = s.to(torch.float32).to(W.device)
            z = torch.zeros_like(s)
            self.dst = False
            if dst:
                record(events, STAGE, layer, "dst_disabled", spec.name,
                       message=f"DST disabled for the power-of-two scales of {spec.name} (a shared "
                               f"exponent cannot carry a continuous multiplier)")
        self.register_buffer("s", s)
        self.register_buffer("zf", z)
        # y = fp32(W / s), as hwsim.formats computes it (block formats: exact scaling by 2**-k)
        if self.kind == "int":
            y = W / self._per_element(s)
        else:
            y = (W.to(torch.float64) / self._per_element(s).to(torch.float64)).to(torch.float32)
        flo = torch.floor(y)
        frac = y - flo
        self.register_buffer("flo", flo)
        self.register_buffer("state", torch.full(W.shape, SOFT, dtype=torch.int8, device=W.device))
        self.register_buffer("sign", torch.signbit(W) if self.kind == "block"
                             and spec.elem.encoding == "signmag" else None)
        self.nu = nn.Parameter(inverse_rectified_sigmoid(frac))
        self.v = nn.Parameter(torch.zeros_like(s)) if self.dst else None

    # ---- per-scale -> per-element ---------------------------------------------------------------
    def _per_element(self, t: torch.Tensor) -> torch.Tensor:
        """[out, ns] per-scale values -> broadcastable to [out, in] (expanded for groups/blocks)."""
        if self.G is None:
            return t  # [out, 1] (channel/token) or [1, 1] (tensor) broadcast
        return t.repeat_interleave(self.G, dim=1)[:, :self.in_features]

    def _grouped(self) -> bool:
        return self.G is not None and self.in_features % self.G == 0

    def _to_work(self, x: torch.Tensor) -> torch.Tensor:
        """[out, in] -> the shape per-scale values broadcast against: [out, ns, G] for whole
        groups/blocks (a view), else unchanged."""
        return x.view(self.out_features, -1, self.G) if self._grouped() else x

    def _from_work(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(self.out_features, self.in_features)

    def _scale_work(self, t: torch.Tensor) -> torch.Tensor:
        """[out, ns] -> broadcastable against ``_to_work`` tensors (no copy for whole groups)."""
        return t.unsqueeze(-1) if self._grouped() else self._per_element(t)

    def _masks(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(soft bool [out, in], hardened value fp32 [out, in]), cached until ``state`` changes."""
        key = (self.state._version, self.state.data_ptr())
        if getattr(self, "_mask_key", None) != key:
            self._mask_cache = (self.state == SOFT, self.state.clamp(min=0).to(torch.float32))
            self._mask_key = key
        return self._mask_cache

    def _decode_scale_codes(self, codes) -> torch.Tensor:
        import hwsim.formats as F

        c = codes.detach().cpu().numpy() if isinstance(codes, torch.Tensor) else np.asarray(codes)
        return torch.from_numpy(F.decode_elem(c.astype(np.int64), self.spec.scale.elem))

    # ---- soft weight ---------------------------------------------------------------------------
    def h(self) -> torch.Tensor:
        """Rectified sigmoid h(ν) [out, in] (soft rounding offset in grid steps, in [0, 1])."""
        return rectified_sigmoid(self.nu)

    def rounding(self, rounded: bool = False) -> torch.Tensor:
        """Rounding offset [out, in]: hardened value (0/1) where hard, else h(ν) (or, with
        ``rounded``, the hard decision ``ν > 0`` without changing the state)."""
        soft, hard_val = self._masks()
        r = (self.nu > 0).to(torch.float32) if rounded else self.h()
        return torch.where(soft, r, hard_val)

    def multiplier(self) -> torch.Tensor | None:
        """DST multiplier 2σ(v) [out, ns] (exactly 1 at v = 0), or None without DST."""
        if self.v is None:
            return None
        return DST_MULTIPLIER_MAX * torch.sigmoid(self.v)

    def scale(self) -> torch.Tensor:
        """Scale the forward multiplies by, [out, ns] fp32: ``cast_f(s · 2σ(v))`` with a
        straight-through gradient (the value stored in ``qtensor()``), s without DST."""
        m = self.multiplier()
        if m is None:
            return self.s
        sm = self.s * m
        return _StraightThrough.apply(sm, cast_scale(sm.detach(), self.spec.scale.elem))

    def _bounds(self) -> tuple[torch.Tensor | float, torch.Tensor | float]:
        """Clamp range of W_int − z, [qmin − z, qmax − z], in the ``_to_work`` shape (scalars for
        z = 0)."""
        if self.kind == "block" or self.spec.symmetric:
            return float(self.qmin), float(self.qmax)
        zf = self._scale_work(self.zf)
        return self.qmin - zf, self.qmax - zf

    def _offsets_work(self, rounded: bool) -> torch.Tensor:
        lo, hi = self._bounds()
        return torch.clamp(self._to_work(self.flo + self.rounding(rounded)), lo, hi)

    def int_offsets(self, rounded: bool = False) -> torch.Tensor:
        """W_int − z [out, in] fp32: ``clamp(floor(W/s) + r, qmin − z, qmax − z)``, integers where
        hard (all of them with ``rounded``)."""
        return self._from_work(self._offsets_work(rounded))

    def weight(self, rounded: bool = False) -> torch.Tensor:
        """Soft weight Ŵ = (W_int − z) · S [out, in] fp32 (S: :meth:`scale`). With ``rounded``,
        soft elements are rounded by ``ν > 0`` (the weight ``qtensor()`` would store)."""
        return self._from_work(self._offsets_work(rounded) * self._scale_work(self.scale()))

    def forward(self, rounded: bool = False) -> torch.Tensor:  # noqa: D102
        return self.weight(rounded)

    # ---- PAR ----------------------------------------------------------------------------------
    @torch.no_grad()
    def harden(self, tau: float) -> int:
        """Harden all but a fraction τ of the elements (PAR stage, module docstring): afterwards
        ``n − ceil(τ·n)`` elements are hard (more only if more were hard already); ties of the
        score at the threshold are broken by flat index. Returns the number hardened by this call."""
        if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not 0.0 < float(tau) < 1.0:
            raise ValueError(f"harden: tau={tau!r} is invalid: expected a fraction in (0, 1)")
        nu = self.nu.detach()
        soft = self.state == SOFT
        score = torch.where(soft, nu.abs(), torch.full_like(nu, math.inf))
        n = score.numel()
        t = exact_quantile(score, float(tau))
        new = soft & (score > t)
        need = (n - quantile_rank(float(tau), n)) - int((~soft).sum()) - int(new.sum())
        if need > 0:  # ties at t: the first `need` of them in flat order
            at_t = torch.nonzero((soft & (score == t)).reshape(-1)).reshape(-1)[:need]
            new.view(-1)[at_t] = True
        self.state[new] = (nu[new] > 0).to(torch.int8)
        return int(new.sum())

    @torch.no_grad()
    def harden_all(self) -> int:
        """Harden every soft element, up iff ν > 0. Returns the number hardened."""
        soft = self.state == SOFT
        self.state[soft] = (self.nu.detach()[soft] > 0).to(torch.int8)
        return int(soft.sum())

    def hard_fraction(self) -> float:
        """Fraction of hardened elements (of out × in)."""
        return float((self.state != SOFT).sum()) / self.state.numel()

    @torch.no_grad()
    def n_saturated(self) -> int:
        """Elements whose rounded value ``floor(W/s) + r`` lies outside the code range (clamped)."""
        lo, hi = self._bounds()
        x = self._to_work(self.flo + self.rounding(True))
        return int(((x < lo) | (x > hi)).sum())

    def step_per_element(self) -> torch.Tensor:
        """Grid step s [out, in] fp32 (without the DST multiplier)."""
        return self._per_element(self.s).expand(self.out_features, self.in_features)

    def zero_point_per_element(self) -> torch.Tensor:
        """Zero point z [out, in] fp32 (0 for symmetric and block formats)."""
        return self._per_element(self.zf).expand(self.out_features, self.in_features)

    # ---- bake ---------------------------------------------------------------------------------
    @torch.no_grad()
    def int_values(self) -> torch.Tensor:
        """Signed element integers W_int − z [out, in] int64, soft elements rounded by ν > 0."""
        return self.int_offsets(rounded=True).to(torch.int64)

    @torch.no_grad()
    def stored_scale(self):
        """(scale codes, fp32 values) of the stored scale [out, ns]; integer formats only.
        Codes from ``hwsim.formats.encode_floats`` (RNE, saturating, zero -> smallest normal)."""
        import hwsim.formats as F

        if self.kind != "int":
            raise ValueError(f"stored_scale: format {self.spec.name} has power-of-two block scales")
        if self.v is None:
            return self.q0.scales, self.s
        elem = self.spec.scale.elem
        sm = (self.s * self.multiplier()).detach().cpu().numpy().astype(np.float32)
        codes = F.encode_floats(sm, elem)
        dec = F.decode_elem(codes, elem)
        if (dec == 0).any():
            tiny = int(F.encode_floats(np.array([elem.min_normal], np.float32), elem)[0])
            codes = np.where(dec == 0, tiny, codes)
            dec = F.decode_elem(codes, elem)
        return codes, torch.from_numpy(dec).to(self.s.device)

    @torch.no_grad()
    def qtensor(self):
        """The hwsim QTensor of the hardened weight (soft elements rounded by ν > 0): codes
        straight from the integers (no float round trip), zero points of the initial min-max,
        scales ``s · 2σ(v)`` in the format's scale type (block formats: the fixed exponents).
        ``qtensor().dequantize()`` equals ``weight(rounded=True)`` bit for bit."""
        import hwsim.formats as F

        spec = self.spec
        k = self.int_values()
        codes = torch.as_tensor(self.q0.codes).to(k.device, torch.int64).clone()
        zps = self.q0.zero_points
        if self.kind == "int":
            c = k + self._per_element(self.zf).to(torch.int64)
            if spec.symmetric:
                c = c & ((1 << spec.bits) - 1)
            sc_codes, sc_val = self.stored_scale()
            if self.v is not None and not torch.equal(
                    sc_val.to(torch.float32), cast_scale((self.s * self.multiplier()), spec.scale.elem)):
                raise RuntimeError(f"TesseraQ: the torch scale cast of layer {self.layer!r} differs "
                                   f"from hwsim.formats' {spec.scale.elem.name} encoding")
            scales = torch.as_tensor(np.asarray(sc_codes) if not isinstance(sc_codes, torch.Tensor)
                                     else sc_codes).to(torch.int64)
            scales = scales.reshape(torch.as_tensor(self.q0.scales).shape)
        else:
            el = spec.elem
            if el.encoding == "signmag":
                c = (self.sign.to(torch.int64) << (el.bits - 1)) | k.abs()
            else:
                c = k & ((1 << el.bits) - 1)
            scales = self.q0.scales
        codes[:, :self.in_features] = c
        like = self.q0.codes
        if isinstance(like, torch.Tensor):
            scales = torch.as_tensor(scales).to(like.device)
            zps = None if zps is None else torch.as_tensor(zps).to(like.device)
            codes = codes.to(like.device)
        else:
            codes = codes.cpu().numpy()
            scales = torch.as_tensor(scales).cpu().numpy()
        return F.QTensor.from_codes(spec, codes, scales, zps, self.q0.tensor_scale,
                                    shape=(self.out_features, self.in_features), axis=1)

    def extra_repr(self) -> str:
        return (f"{self.spec.name}, shape=({self.out_features}, {self.in_features}), "
                f"dst={self.dst}, hard={self.hard_fraction():.3f}")


def llmc_bake(W: torch.Tensor, step: torch.Tensor, nu: torch.Tensor) -> torch.Tensor:
    """The reference code's bake: ``W + ½·s·(1[ν > 0] − 1[frac(W/s) > 0.5])`` [out, in] fp32.

    W, nu [out, in]; step s broadcastable to W (the grid step, e.g.
    ``SoftQuantizer.step_per_element()``). Round-to-nearest-even of the result on the same grid
    (same s and z) reproduces the PAR rounding ``floor(W/s) + 1[ν > 0]`` except at exact ties:
    ``frac(W/s) = 0`` with ``ν > 0`` (the baked value lies half way) and ``frac(W/s) = 0.5`` with
    ``ν <= 0`` (unchanged, RNE picks the even neighbour). Alternative only: hwsim stores the codes
    directly (docs/spec/algorithms.md §4.6, "Bake")."""
    W = W.to(torch.float32)
    y = W / step
    frac = y - torch.floor(y)
    up = (nu > 0).to(torch.float32) - (frac > 0.5).to(torch.float32)
    return W + 0.5 * step * up
