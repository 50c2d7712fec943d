"""Datapath units derived from format specs (docs/spec/cost_model.md §4).

A :class:`Unit` is a named set of compounds, one per action (``mac``, ``block_dot``,
``dequant``, ``quantize``/``scale``, ``rescale``); its area is the sum of all compounds' areas.
:func:`build_pe` picks the processing element and edge units for a (activation, weight) format
pair; every width comes from :func:`hwsim.cost_models.fmt.describe`, never from a method name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

from .components import (
    AdderTree, BarrelShifter, Comparator, Compound, FPAdder, FPMultiplier, FPReciprocal, FPToInt, IntAdder,
    IntMultiplier, IntToFP, MaxTree, Mux2, Register,
)
from hwsim.matmul.datapath import ACCUMULATOR_FORMS, ExactAcc, FixedAcc, FloatAcc, parse_accumulator

from .fmt import FP16, FP32, FormatInfo, describe
from .laws import clog2
from .tech import Technology

#: what the cost model charges an accumulator for: a ``hwsim.matmul.datapath`` spec, parsed by its
#: one grammar (``parse_accumulator``), never retyped here
Accumulator = FixedAcc | FloatAcc
#: the defaults when none is given: a 32-bit integer register without saturation logic ("int32",
#: also spelled "window(32)" for block units) and an fp32 adder for float datapaths
DEFAULT_FIXED_ACC = FixedAcc(32, None, "wrap")
DEFAULT_FLOAT_ACC = FloatAcc("fp32")


_HW_FORMS = ACCUMULATOR_FORMS.replace("'exact', ", "")


def accumulator(acc: Any) -> Accumulator:
    """The accumulator spec of ``acc`` (``hwsim.matmul.datapath.parse_accumulator``: a string of the
    one grammar, an int width, or a spec). 'exact' is refused: it is a reference with no hardware."""
    spec = parse_accumulator(acc)
    if isinstance(spec, ExactAcc):
        raise ValueError(f"accumulator={acc!r} has no hardware to cost (an exact sum is a reference for "
                         f"accumulator error); valid here: {_HW_FORMS}")
    return spec


def _fixed(acc: Any) -> FixedAcc:
    spec = accumulator(acc)
    if not isinstance(spec, FixedAcc):
        raise ValueError(f"accumulator={acc!r}: this unit needs a fixed-point accumulator (e.g. 'int32', "
                         f"'fixed:24:8'), got {spec.name!r}")
    return spec


def _saturation(acc: FixedAcc, tech) -> list:
    """Saturation logic of a saturating accumulator: a W-bit 2:1 mux selecting the clamp value
    (the overflow flag is the XOR of two carries, not charged); none for a wrapping register."""
    return [("saturate", Mux2(acc.width, tech=tech), 1 if acc.saturates else 0)]


@dataclass(frozen=True)
class Unit:
    """A datapath unit: ``compounds`` maps action name -> Compound (energy per action, area)."""

    name: str
    lanes: int
    compounds: tuple[tuple[str, Compound], ...]
    notes: tuple[str, ...] = ()

    @property
    def area_um2(self) -> float:
        return sum(c.area_um2 for _, c in self.compounds)

    @property
    def actions(self) -> dict[str, float]:
        """Action name -> pJ per action."""
        return {a: c.energy_pj for a, c in self.compounds}

    def energy(self, action: str | None = None) -> float:
        if action is None:
            action = self.compounds[0][0]
        return self.actions[action]

    def breakdown(self, count: float = 1.0, path: str = "") -> list[dict]:
        rows = []
        for action, c in self.compounds:
            rows.extend(c.breakdown(count, f"{path}/{self.name}:{action}" if path else f"{self.name}:{action}"))
        return rows


def _c(name, parts, action, tech):
    return Compound(name, tuple((n, comp, k) for n, comp, k in parts if k), action, tech=tech)


# --------------------------------------------------------------------------------------------
# processing elements
# --------------------------------------------------------------------------------------------

def int_mac(a: int, b: int, acc: Any = 32, tech: Technology | None = None) -> Unit:
    """IntMAC(a, b, acc): IntMultiplier(a,b) + IntAdder(W) + Register(W) (+ the W-bit saturation
    mux of a saturating accumulator); action ``mac``. ``acc``: a fixed accumulator spec or string,
    or a width W (= ``int<W>``)."""
    t = tech
    acc = _fixed(acc)
    W = acc.width
    parts = [("mult", IntMultiplier(a, b, tech=t), 1), ("acc_add", IntAdder(W, tech=t), 1),
             ("acc_reg", Register(W, tech=t), 1)] + _saturation(acc, t)
    return Unit(f"IntMAC({a}x{b},{acc.name})", 1, (("mac", _c("IntMAC", parts, "mac", t)),))


def _scale_combine(sa: FormatInfo, sw: FormatInfo, wt: int, extra_exp: int, tech) -> tuple[list, int]:
    """Parts combining the two block scales, and the width of the scaled block sum.

    Power-of-two scales: IntAdder(s+1) adds the exponents. Minifloat scales (NVFP4's UE4M3): the
    exact product of the two scales, an unsigned p_s x p_s significand multiplier and an
    IntAdder(e_s+1) for the exponents, and an IntMultiplier(wt, 2 p_s) applying the product to the
    wt-bit block sum. ``extra_exp`` > 0 adds an IntAdder(extra_exp) (BlockDotFP: the block's
    largest product exponent joins the block exponent)."""
    floats = [f.scale_float for f in (sa, sw) if not f.scale_pow2 and f.scale_float]
    if floats:
        e = max(f[0] for f in floats)
        ps = max(f[1] for f in floats) + 1
        parts = [("scale_mult", IntMultiplier(ps, ps, False, tech=tech), 1),
                 ("scale_exp", IntAdder(e + 1, tech=tech), 1),
                 ("scale_apply", IntMultiplier(wt, 2 * ps, tech=tech), 1)]
        wt, width = wt + 2 * ps, e + 1
    else:
        width = max(sa.scale_bits, sw.scale_bits) + 1
        parts = [("scale_add", IntAdder(width, tech=tech), 1)]
    if extra_exp:
        parts.append(("block_exp", IntAdder(max(width, extra_exp) + 1, tech=tech), 1))
    return parts, wt


def _acc_tail(wt: int, acc: FixedAcc, tech) -> list:
    """Align the wt-bit block sum into the W-bit accumulator (a shifter with W output bits over
    W - wt positions; none when the sum is wider), add, register, and saturate if it saturates.
    The alignment drops no bits, so the rounding mode and F (wiring) cost nothing."""
    W = acc.width
    return [("align", BarrelShifter(W, max(W - wt, 0), wt, tech=tech), 1 if W > wt else 0),
            ("acc_add", IntAdder(W, tech=tech), 1), ("acc_reg", Register(W, tech=tech), 1)] + _saturation(acc, tech)


def block_dot_int(fa: FormatInfo, fw: FormatInfo, acc: Any = 32, tech: Technology | None = None) -> Unit:
    """BlockDotInt: B multipliers, adder tree, scale combine, align shifter, accumulator.

    Sign-magnitude elements (BFP) multiply their magnitudes (unsigned (a-1) x (b-1)) and negate
    the product when the signs differ (a negation of the (a+b-1)-bit product: XORs and a half-adder
    chain, priced as an adder one bit narrower)."""
    B = fa.block_size
    a, b = fa.operand_bits, fw.operand_bits
    t = tech
    acc = _fixed(acc)
    if fa.signmag or fw.signmag:
        pw = a + b - 1
        lane = [("mult", IntMultiplier(a - 1, b - 1, False, tech=t), B), ("sign", IntAdder(pw - 1, tech=t), B)]
    else:
        pw = a + b
        lane = [("mult", IntMultiplier(a, b, tech=t), B)]
    tree = AdderTree(B, pw, tech=t)
    scale, wt = _scale_combine(fa, fw, tree.out_bits, 0, t)
    parts = lane + [("tree", tree, 1)] + scale + _acc_tail(wt, acc, t)
    return Unit(f"BlockDotInt({a}x{b},B{B},{acc.name})", B, (("block_dot", _c("BlockDotInt", parts, "block_dot", t)),))


def mxfp_window(fa: FormatInfo, fw: FormatInfo, window: int | None = 32) -> tuple[int, int]:
    """(W_win, delta): product-exponent span delta and the fixed-point window min(pa+pb+delta, window)."""
    delta = (fa.emax - fa.emin) + (fw.emax - fw.emin)
    w = fa.operand_bits + fw.operand_bits + delta
    return (w if window is None else min(w, window)), delta


def block_dot_fp(fa: FormatInfo, fw: FormatInfo, acc: Any = 32, window: int | None = 32,
                 tech: Technology | None = None) -> Unit:
    """BlockDotFP (MXFP, NVFP4, or MXFP x MXINT): per lane an unsigned significand multiplier, the
    sign applied to the product (a negation of pa+pb+1 bits, priced as an adder one bit narrower),
    the product exponent (IntAdder(e+1)) and its difference to the block's largest (the shift
    amount: IntAdder(ceil(log2(delta+1))), at most e+2 bits),
    a (W_win+1)-bit shifter (sign included) of the (pa+pb+1)-bit product over delta positions;
    MaxTree(B, e+1); AdderTree(B, W_win+1);
    the block exponent (scales + largest product exponent); then the BlockDotInt tail."""
    B = fa.block_size
    t = tech
    acc = _fixed(acc)
    e = max(fa.exponent_bits, fw.exponent_bits)
    w_win, delta = mxfp_window(fa, fw, window)
    pw = fa.operand_bits + fw.operand_bits + 1
    tree = AdderTree(B, w_win + 1, tech=t)
    scale, wt = _scale_combine(fa, fw, tree.out_bits, e + 1, t)
    parts = [("mult", IntMultiplier(fa.operand_bits, fw.operand_bits, False, tech=t), B),
             ("sign", IntAdder(pw - 1, tech=t), B),
             ("exp_add", IntAdder(e + 1, tech=t), B), ("exp_diff", IntAdder(min(e + 2, clog2(delta + 1)), tech=t), B),
             ("lane_align", BarrelShifter(w_win + 1, max(delta, 1), pw, tech=t), B),
             ("max_exp", MaxTree(B, e + 1, tech=t), 1), ("tree", tree, 1)] + scale + _acc_tail(wt, acc, t)
    name = f"BlockDotFP(p{fa.operand_bits}e{fa.exponent_bits}xp{fw.operand_bits}e{fw.exponent_bits},B{B},win{w_win}"
    return Unit(f"{name},{acc.name})", B,
                (("block_dot", _c("BlockDotFP", parts, "block_dot", t)),))


def fp_mac(fa: FormatInfo, fw: FormatInfo, acc: Any = DEFAULT_FLOAT_ACC, tech: Technology | None = None) -> Unit:
    """FPMAC: FPMultiplier(max e, max m) + FPAdder(acc) + Register(acc); the accumulator's exponent
    and mantissa widths are its ``hwsim.formats`` element's."""
    t = tech
    acc = accumulator(acc)
    e = max(fa.exponent_bits, fw.exponent_bits)
    m = max(fa.man_bits, fw.man_bits)
    parts = [("mult", FPMultiplier(e, m, tech=t), 1), ("acc_add", FPAdder(acc.exponent_bits, acc.man_bits, tech=t), 1),
             ("acc_reg", Register(acc.width, tech=t), 1)]
    return Unit(f"FPMAC(e{e}m{m},{acc.name})", 1, (("mac", _c("FPMAC", parts, "mac", t)),))


# --------------------------------------------------------------------------------------------
# edge units
# --------------------------------------------------------------------------------------------

def dequant_to_fp16(fw: FormatInfo, tech: Technology | None = None) -> Unit:
    """DequantToFP16: zero-point subtract (if any) + IntToFP(b -> fp16) + FPMultiplier(fp16)."""
    t = tech
    b = fw.operand_bits if fw.kind != "block_fp" else fw.element_bits
    parts = [("zero_point", IntAdder(fw.element_bits, tech=t), 1 if fw.zp_bits else 0),
             ("to_fp16", IntToFP(b, FP16.exponent_bits, FP16.man_bits, tech=t), 1),
             ("scale_mult", FPMultiplier(FP16.exponent_bits, FP16.man_bits, tech=t), 1)]
    return Unit(f"DequantToFP16({fw.name})", 1, (("dequant", _c("DequantToFP16", parts, "dequant", t)),))


def act_quant_pow2(fa: FormatInfo, tech: Technology | None = None) -> Unit:
    """ActQuantPow2 for MX/BFP activations: per block max + exponent; per element shift/round/clamp."""
    t = tech
    B, b = fa.block_size, fa.element_bits
    per_block = [("amax", MaxTree(B, 15, tech=t), 1), ("exp_sub", IntAdder(9, tech=t), 1)]
    per_elem = [("shift", BarrelShifter(12, b + 2, tech=t), 1), ("round", IntAdder(b, tech=t), 1),
                ("clamp", Comparator(b, tech=t), 1), ("rebias", IntAdder(max(fa.exponent_bits, 1), tech=t),
                                                       1 if fa.kind == "block_fp" else 0)]
    return Unit(f"ActQuantPow2({fa.name})", 1, (("quantize", _c("quantize", per_elem, "quantize", t)),
                                                ("scale", _c("scale", per_block, "scale", t))))


def act_quant_scaled(fa: FormatInfo, group: int, tech: Technology | None = None) -> Unit:
    """ActQuantScaled for INT per-token/group activations.

    Per group: FPReciprocal(fp16) of amax; per element: FPMultiplier(fp16) + FPToInt(b), plus the
    amax reduction done as a streaming compare-select per element (two if asymmetric), so that
    per-token groups of thousands of elements need no thousand-input tree (a documented choice;
    the energy equals a (G-1)-node max tree up to one compare per group).
    """
    t = tech
    n_trees = 2 if fa.zp_bits else 1
    g = max(int(group), 1)
    per_group = [("reciprocal", FPReciprocal(FP16.exponent_bits, FP16.man_bits, tech=t), 1)]
    per_elem = [("amax_compare", Comparator(15, tech=t), n_trees), ("amax_select", Mux2(15, tech=t), n_trees),
                ("scale_mult", FPMultiplier(FP16.exponent_bits, FP16.man_bits, tech=t), 1),
                ("to_int", FPToInt(FP16.exponent_bits, FP16.man_bits, fa.element_bits, tech=t), 1)]
    return Unit(f"ActQuantScaled({fa.name},G{g})", 1, (("quantize", _c("quantize", per_elem, "quantize", t)),
                                                        ("scale", _c("scale", per_group, "scale", t))))


def output_rescale(acc_bits: int = 32, tech: Technology | None = None) -> Unit:
    """OutputRescale: IntToFP(acc -> fp32) + 2 FPMultiplier(fp32); one action per output."""
    t = tech
    parts = [("to_fp32", IntToFP(acc_bits, FP32.exponent_bits, FP32.man_bits, tech=t), 1),
             ("scale_mult", FPMultiplier(FP32.exponent_bits, FP32.man_bits, tech=t), 2)]
    return Unit(f"OutputRescale(int{acc_bits})", 1, (("rescale", _c("OutputRescale", parts, "rescale", t)),))


def group_rescale(acc_bits: int = 32, tech: Technology | None = None) -> Unit:
    """GroupRescale: IntToFP + FPMultiplier + FPAdder(fp32) per (group, output)."""
    t = tech
    parts = [("to_fp32", IntToFP(acc_bits, FP32.exponent_bits, FP32.man_bits, tech=t), 1),
             ("scale_mult", FPMultiplier(FP32.exponent_bits, FP32.man_bits, tech=t), 1),
             ("acc_add", FPAdder(FP32.exponent_bits, FP32.man_bits, tech=t), 1)]
    return Unit(f"GroupRescale(int{acc_bits})", 1, (("rescale", _c("GroupRescale", parts, "rescale", t)),))


def fp16_vector_adder(tech: Technology | None = None) -> Unit:
    """One fp16 adder lane (Hadamard transforms, low-rank merges)."""
    return Unit("FP16Adder", 1, (("add", _c("FP16Adder", [("add", FPAdder(5, 10, tech=tech), 1)], "add", tech)),))


# --------------------------------------------------------------------------------------------
# PE selection per format pair
# --------------------------------------------------------------------------------------------

SUPPORTED_PAIRS = (
    "block int x block int (MXINT/BFP; block sizes equal or one dividing the other) -> BlockDotInt",
    "block x block with a float side (MXFP, NVFP4; block sizes as above) -> BlockDotFP",
    "scaled int x scaled int (tensor/channel/token/group) -> IntMAC + OutputRescale/GroupRescale",
    "float element x float element (fp32/fp16/bf16/fp8/...) -> FPMAC",
    "float element activation x integer/block weight (weight-only) -> DequantToFP16 + FPMAC",
)


@dataclass(frozen=True)
class PEConfig:
    """The PE and its edge units for one (activation, weight) format pair.

    pe: the unit in every array cell (``lanes`` MACs per action); act_quant: input quantizer
    (None for float activations); dequant: weight-load dequantizer (weight-only formats);
    rescale: per-output (or per group-output) rescaler; ``rescale_per_group``: True for
    GroupRescale.
    """

    a: FormatInfo
    w: FormatInfo
    acc: Accumulator
    pe: Unit
    act_quant: Unit | None = None
    act_group: int | None = None
    dequant: Unit | None = None
    rescale: Unit | None = None
    rescale_per_group: bool = False
    notes: tuple[str, ...] = field(default=())

    @property
    def lanes(self) -> int:
        return self.pe.lanes

    @property
    def action(self) -> str:
        return self.pe.compounds[0][0]


def _unsupported(fa, fw, why):
    return ValueError(
        f"cannot build a datapath unit for a_format={fa.name!r} x w_format={fw.name!r} ({why}); "
        f"supported pairs: " + "; ".join(SUPPORTED_PAIRS)
    )


def _common_block(fa: FormatInfo, fw: FormatInfo) -> tuple[FormatInfo, FormatInfo, tuple[str, ...]]:
    """Operands of one block dot-product unit when the two block sizes differ.

    With block sizes B_a != B_w where one divides the other (e.g. MXINT4 weights in blocks of 16
    x MXINT8 activations in blocks of 32), the unit reduces over the smaller block B; the larger
    block's shared scale is reused by max(B_a, B_w) / B consecutive units.
    """
    if fa.block_size == fw.block_size:
        return fa, fw, ()
    small, large = sorted((fa.block_size, fw.block_size))
    if large % small:
        raise _unsupported(fa, fw, f"block sizes {fa.block_size} and {fw.block_size}: neither divides the other")
    note = (f"block sizes differ ({fa.block_size} vs {fw.block_size}): dot-product units over {small} elements, "
            f"the larger block's scale reused by {large // small} units")
    return replace(fa, block=small), replace(fw, block=small), (note,)


def build_pe(a_format: Any, w_format: Any, acc: Any = None, window: int | None = 32,
             k: int | None = None, tech: Technology | None = None) -> PEConfig:
    """PE + edge units for activation ``a_format`` x weight ``w_format``.

    acc: accumulator, a string of the one grammar (``hwsim.matmul.datapath.parse_accumulator``:
    'int32', 'fixed:24:8', 'window(32)', 'fp32', ...), an int width or a spec; defaults: int32 for
    integer and block units (a 32-bit register without saturation logic), fp32 for FP units.
    k: the reduction length (sizes per-token / per-channel quantizers; default 4096).
    """
    fa, fw = describe(a_format), describe(w_format)
    spec = None if acc is None else accumulator(acc)
    try:
        return _build_pe(fa, fw, spec, window, k or 4096, tech)
    except ValueError as exc:
        given = f"acc={spec.name}" if spec is not None else ""
        if given and str(exc).startswith(given) and isinstance(acc, str) and acc.strip().lower() != spec.name:
            raise ValueError(f"acc={acc!r} ({spec.name}){str(exc)[len(given):]}") from None
        raise


def _check_acc_width(acc: Accumulator, need: int, what: str, fa: FormatInfo, fw: FormatInfo) -> None:
    """An accumulator narrower than one unit's partial result cannot exist (the model would charge
    a smaller adder and register than the result it adds, so area and energy would drop)."""
    if acc.width < need:
        raise ValueError(f"acc={acc.name}: narrower than the {need}-bit {what} of a_format={fa.name!r} x "
                         f"w_format={fw.name!r}; valid: a width of {need}..128 (e.g. 'int{need}', 'int32')")


@lru_cache(maxsize=8192)
def _build_pe(fa: FormatInfo, fw: FormatInfo, acc: Accumulator | None, window, k: int, tech) -> PEConfig:
    aq = None
    group = None
    if fa.is_block:
        aq, group = act_quant_pow2(fa, tech), fa.block_size
    elif fa.kind == "int":
        group = fa.block_size if fa.granularity == "group" else k
        aq = act_quant_scaled(fa, group, tech)

    if fa.is_block and fw.is_block:
        ua, uw, notes = _common_block(fa, fw)
        acc = acc or DEFAULT_FIXED_ACC
        if isinstance(acc, FloatAcc):
            raise _unsupported(fa, fw, "block dot-product units accumulate in a fixed-point window, not FP")
        if fa.kind == "block_int" and fw.kind == "block_int":
            need = AdderTree(ua.block_size, ua.operand_bits + uw.operand_bits).out_bits
            _check_acc_width(acc, need, "exact segment sum (a+b+ceil(log2 B))", ua, uw)
            pe = block_dot_int(ua, uw, acc, tech)
        else:
            _check_acc_width(acc, mxfp_window(ua, uw, window)[0], "aligned product window W_win", ua, uw)
            pe = block_dot_fp(ua, uw, acc, window, tech)
        return PEConfig(fa, fw, acc, pe, aq, group, notes=notes)
    if fa.kind == "int" and fw.kind == "int":
        acc = acc or DEFAULT_FIXED_ACC
        if isinstance(acc, FloatAcc):
            raise _unsupported(fa, fw, "integer MACs accumulate in an integer register, not FP")
        _check_acc_width(acc, fa.operand_bits + fw.operand_bits, "product (a+b)", fa, fw)
        pe = int_mac(fa.operand_bits, fw.operand_bits, acc, tech)
        grouped = "group" in (fa.granularity, fw.granularity)
        resc = group_rescale(acc.width, tech) if grouped else output_rescale(acc.width, tech)
        return PEConfig(fa, fw, acc, pe, aq, group, None, resc, grouped)
    if fa.kind == "fp" and fw.kind == "fp":
        acc = acc or DEFAULT_FLOAT_ACC
        if not isinstance(acc, FloatAcc):
            raise _unsupported(fa, fw, "FP MACs need an FP accumulator (e.g. 'fp32')")
        return PEConfig(fa, fw, acc, fp_mac(fa, fw, acc, tech))
    if fa.kind == "fp" and fw.kind in ("int", "block_int", "block_fp"):
        acc = acc or DEFAULT_FLOAT_ACC
        if not isinstance(acc, FloatAcc):
            raise _unsupported(fa, fw, "weight-only dequantized GEMMs need an FP accumulator")
        return PEConfig(fa, fw, acc, fp_mac(fa, FP16, acc, tech), dequant=dequant_to_fp16(fw, tech),
                        notes=("weight dequantized to fp16 on the weight-load path",))
    raise _unsupported(fa, fw, f"{fa.kind} activations with {fw.kind} weights")


def unit_table(a_format: Any, w_format: Any, acc: Any = None, k: int | None = None,
               tech: Technology | None = None):
    """DataFrame: each unit of the pair with its area and every action's energy (``hwsim cost units``)."""
    import pandas as pd

    cfg = build_pe(a_format, w_format, acc, k=k, tech=tech)
    rows = []
    for role, u in (("pe", cfg.pe), ("act_quant", cfg.act_quant), ("dequant", cfg.dequant), ("rescale", cfg.rescale)):
        if u is None:
            continue
        for action, e in u.actions.items():
            rows.append({"role": role, "unit": u.name, "lanes": u.lanes, "area_um2": u.area_um2, "action": action,
                         "energy_pj": e, "energy_per_mac_pj": e / u.lanes if role == "pe" else float("nan")})
    return pd.DataFrame(rows)
