"""The synthesized unit families (one job: what each unit is, how it is checked, what the model says).

A :class:`UnitSpec` names a family and its parameters. Each family gives

- ``build``: the structural Verilog module (``arith``, ``fp``, ``dot``);
- ``check``: test vectors (exhaustive when the inputs hold at most ``EXHAUSTIVE_BITS`` bits,
  random otherwise) and the expected outputs (``reference``), compared with a simulation of the
  *synthesized* gate netlist (``netsim``);
- ``model``: the cost-model object that prices the same hardware (a component of
  ``components`` or a unit of ``units``), whose ``area_um2`` the validation compares.

Format-driven families read every width from ``hwsim.formats`` specs through
``cost_models.fmt.describe`` (element bits, exponent bits, block size, scale format).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from . import arith, dot, fp, reference
from .netsim import Netlist
from .rtl import Module

#: bumped whenever a generator's structure changes (recorded with the synthesized counts)
GENERATOR_VERSION = 1
#: inputs of at most this many bits are checked exhaustively (covers every operand width <= 6 ... 8)
EXHAUSTIVE_BITS = 16
#: random vectors above that
RANDOM_VECTORS = 2000


class SelfCheckError(AssertionError):
    """A synthesized netlist differs from its arithmetic (the message names the unit and a vector)."""


@dataclass(frozen=True)
class UnitSpec:
    family: str
    params: tuple[tuple[str, Any], ...]

    @property
    def p(self) -> dict[str, Any]:
        return dict(self.params)

    @property
    def name(self) -> str:
        return FAMILIES[self.family].name(self.p)

    def __str__(self) -> str:
        return self.name


#: required parameters of each family (optional ones: block_dot window, lanes; int_mac arch)
REQUIRED = {"mult": ("a", "b", "arch"), "adder": ("w",), "adder_tree": ("inputs", "w"),
            "shifter": ("width", "positions"), "comparator": ("w",), "max_tree": ("inputs", "w"), "lzc": ("w",),
            "fp": ("op", "fmt"), "int_mac": ("a", "b", "acc"), "block_dot": ("fa", "fw", "acc")}
#: parameters with a fixed set of values, per family
CHOICES = {"mult": {"arch": ("baugh_wooley", "booth4", "unsigned")}, "int_mac": {"arch": ("baugh_wooley", "booth4")},
           "block_dot": {"arch": ("baugh_wooley", "booth4")}, "fp": {"op": ("mul", "add")}}


def unit(family: str, **params) -> UnitSpec:
    """A unit of ``family`` (see ``REQUIRED``); ValueError naming what is missing or invalid."""
    if family not in FAMILIES:
        raise ValueError(f"family={family!r} is unknown; valid: {sorted(FAMILIES)}")
    missing = [k for k in REQUIRED[family] if k not in params]
    if missing:
        raise ValueError(f"family {family!r} needs " + ", ".join(f"{k}=" for k in REQUIRED[family])
                         + f" (missing: {', '.join(missing)})")
    for k, valid in CHOICES.get(family, {}).items():
        if k in params and params[k] not in valid:
            raise ValueError(f"{k}={params[k]!r} is not valid; valid: {', '.join(valid)}")
    return UnitSpec(family, tuple(sorted(params.items())))


@dataclass(frozen=True)
class Family:
    name: Callable[[dict], str]
    build: Callable[[dict], Module]
    vectors: Callable[[dict, np.random.Generator], tuple[dict, dict, int, bool]]
    expect: Callable[[dict, dict, dict], dict]
    model: Callable[[dict, Any], Any]
    doc: str


# ------------------------------------------------------------------------ vector helpers

def _grid(ranges: list[np.ndarray]) -> list[np.ndarray]:
    mesh = np.meshgrid(*ranges, indexing="ij")
    return [g.ravel().astype(np.int64) for g in mesh]


def _signed_range(bits: int) -> np.ndarray:
    return np.arange(-(1 << (bits - 1)), 1 << (bits - 1), dtype=np.int64)


def _operands(widths: list[int], signed: bool, rng) -> tuple[list[np.ndarray], bool]:
    """All combinations when sum(widths) <= EXHAUSTIVE_BITS, else RANDOM_VECTORS random ones."""
    if sum(widths) <= EXHAUSTIVE_BITS:
        return _grid([_signed_range(w) if signed else np.arange(1 << w, dtype=np.int64) for w in widths]), True
    lo = [-(1 << (w - 1)) if signed else 0 for w in widths]
    return [rng.integers(a, a + (1 << w), RANDOM_VECTORS) for a, w in zip(lo, widths)], False


def _fmt(name):
    from ..fmt import describe

    return describe(name)


def _elem(name):
    """The FloatElem of an element float format or of a block format's elements."""
    spec = _fmt(name).spec
    return getattr(spec, "elem", spec)


# ------------------------------------------------------------------------ integer families

def _mult_build(p):
    a, b, arch = p["a"], p["b"], p["arch"]
    m = Module(_mult_name(p), f"{a} x {b} {'unsigned' if arch == 'unsigned' else 'signed'} multiplier ({arch})")
    x, y = m.input("x", a), m.input("y", b)
    m.output("p", arith.mult_unsigned(m, x, y) if arch == "unsigned" else arith.MULTIPLIERS[arch](m, x, y))
    return m


def _mult_name(p):
    return f"mult_{p['arch']}_{p['a']}x{p['b']}"


def _mult_vectors(p, rng):
    (x, y), ex = _operands([p["a"], p["b"]], p["arch"] != "unsigned", rng)
    return {"x": x, "y": y}, {}, len(x), ex


def _mult_model(p, tech):
    from ..components import IntMultiplier

    return IntMultiplier(p["a"], p["b"], p["arch"] != "unsigned", tech=tech)


def _adder_build(p):
    w = p["w"]
    m = Module(f"adder_{w}", f"{w}-bit ripple-carry adder (two's complement, wraps)")
    m.output("s", arith.add(m, m.input("x", w), m.input("y", w), w))
    return m


def _adder_vectors(p, rng):
    (x, y), ex = _operands([p["w"], p["w"]], True, rng)
    return {"x": x, "y": y}, {}, len(x), ex


def _tree_build(p):
    B, w = p["inputs"], p["w"]
    m = Module(f"adder_tree_{B}x{w}", f"{B}-input adder tree of {w}-bit signed operands")
    m.output("s", arith.adder_tree(m, [m.input(f"x{i}", w) for i in range(B)]))
    return m


def _tree_vectors(p, rng):
    ops, ex = _operands([p["w"]] * p["inputs"], True, rng)
    return {f"x{i}": o for i, o in enumerate(ops)}, {}, len(ops[0]), ex


def _shifter_build(p):
    W, S = p["width"], p["positions"]
    m = Module(f"shifter_{W}_{S}", f"{W}-bit left barrel shifter over {S} positions (zero fill)")
    m.output("y", arith.shift_left(m, m.input("x", W), m.input("s", arith.clog2(S + 1))))
    return m


def _shifter_vectors(p, rng):
    W, S = p["width"], p["positions"]
    k = arith.clog2(S + 1)
    if W + k <= EXHAUSTIVE_BITS:
        x, s = _grid([np.arange(1 << W), np.arange(S + 1)])
        return {"x": x, "s": s}, {}, len(x), True
    x = rng.integers(0, 1 << W, RANDOM_VECTORS)
    return {"x": x, "s": rng.integers(0, S + 1, RANDOM_VECTORS)}, {}, RANDOM_VECTORS, False


def _cmp_build(p):
    w = p["w"]
    m = Module(f"comparator_{w}", f"{w}-bit unsigned magnitude comparator x > y")
    m.output("gt", [arith.greater(m, m.input("x", w), m.input("y", w))])
    return m


def _cmp_vectors(p, rng):
    (x, y), ex = _operands([p["w"], p["w"]], False, rng)
    return {"x": x, "y": y}, {}, len(x), ex


def _max_build(p):
    B, w = p["inputs"], p["w"]
    m = Module(f"max_tree_{B}x{w}", f"{B}-input max tree of {w}-bit unsigned operands")
    m.output("y", arith.max_tree(m, [m.input(f"x{i}", w) for i in range(B)]))
    return m


def _max_vectors(p, rng):
    ops, ex = _operands([p["w"]] * p["inputs"], False, rng)
    return {f"x{i}": o for i, o in enumerate(ops)}, {}, len(ops[0]), ex


def _lzc_build(p):
    w = p["w"]
    m = Module(f"lzc_{w}", f"{w}-bit leading-zero counter")
    m.output("c", arith.lzc(m, m.input("x", w))[0])
    return m


def _lzc_vectors(p, rng):
    w = p["w"]
    if w <= EXHAUSTIVE_BITS:
        x = np.arange(1 << w, dtype=np.int64)
        return {"x": x}, {}, len(x), True
    # random words with every leading-zero count represented
    lz = rng.integers(0, w + 1, RANDOM_VECTORS)
    low = rng.integers(0, 1 << 62, RANDOM_VECTORS) & ((1 << w) - 1)
    x = np.where(lz >= w, 0, (low >> lz) | (1 << np.maximum(w - 1 - lz, 0)))
    return {"x": x}, {}, RANDOM_VECTORS, False


# ------------------------------------------------------------------------ minifloat families

def _fpop_build(p):
    el = _elem(p["fmt"])
    n = 1 + el.ebits + el.mbits
    op = p["op"]
    m = Module(f"fp_{op}_{_fmt(p['fmt']).name}", f"{p['fmt']} {op}: finite operands, round to nearest even, "
                                                 "saturating")
    x, y = m.input("x", n), m.input("y", n)
    m.output("z", (fp.fp_multiplier if op == "mul" else fp.fp_adder)(m, x, y, el))
    return m


def _fpop_vectors(p, rng):
    el = _elem(p["fmt"])
    nbits = 1 + el.ebits + el.mbits
    if 2 * nbits <= EXHAUSTIVE_BITS:
        codes = reference.finite_codes(el)
        x, y = _grid([codes, codes])
        return {"x": x, "y": y}, {}, len(x), True
    top = ((el.emax + el.bias) << el.mbits) | el.max_mantissa
    n = RANDOM_VECTORS
    sign = np.int64(1) << (el.ebits + el.mbits)
    x = rng.integers(0, top + 1, n) | np.where(rng.random(n) < 0.5, sign, 0)
    y = rng.integers(0, top + 1, n) | np.where(rng.random(n) < 0.5, sign, 0)
    # a quarter with equal exponents and a quarter one apart (cancellation, carries), some tiny ones
    q = n // 4
    mmask = (np.int64(1) << el.mbits) - 1
    y[:q] = (x[:q] & ~mmask) ^ (rng.integers(0, 1 << min(el.mbits, 62), q) & mmask) ^ sign
    y[q:2 * q] = np.minimum((x[q:2 * q] & (sign - 1)) + (np.int64(1) << el.mbits), top) | (y[q:2 * q] & sign)
    x[2 * q:2 * q + q // 4] &= sign | ((np.int64(1) << (el.mbits + 1)) - 1)
    return {"x": x, "y": y}, {}, n, False


def _fpop_expect(p, inp, _state):
    el = _elem(p["fmt"])
    small = 1 + el.ebits + el.mbits <= 8
    if p["op"] == "mul":
        return {"z": (reference.fp_mul if small else reference.fp_mul_exact)(inp["x"], inp["y"], el)}
    return {"z:values": (reference.fp_add_values if small else reference.fp_add_exact)(inp["x"], inp["y"], el)}


def _fpop_model(p, tech):
    from ..components import FPAdder, FPMultiplier

    f = _fmt(p["fmt"])
    return (FPMultiplier if p["op"] == "mul" else FPAdder)(f.exponent_bits, f.man_bits, tech=tech)


# ------------------------------------------------------------------------ MAC / dot-product units

def _mac_build(p):
    a, b, acc = p["a"], p["b"], p["acc"]
    m = Module(f"int_mac_{a}x{b}_acc{acc}", f"IntMAC: {a} x {b} signed multiply, {acc}-bit accumulator")
    dot.int_mac(m, a, b, acc, p.get("arch", "baugh_wooley"))
    return m


def _mac_vectors(p, rng):
    (x, w), ex = _operands([p["a"], p["b"]], True, rng)
    acc = rng.integers(-(1 << (p["acc"] - 1)), 1 << (p["acc"] - 1), len(x))
    return {"x": x, "w": w}, {"acc_q": acc}, len(x), ex


def _mac_expect(p, inp, state):
    return {"acc_q:next": reference.wrap(state["acc_q"] + inp["x"] * inp["w"], p["acc"])}


def _mac_model(p, tech):
    from ..units import int_mac

    return int_mac(p["a"], p["b"], p["acc"], tech=tech)


def _dot_formats(p):
    fa, fw = _fmt(p["fa"]), _fmt(p["fw"])
    if fa.block_size != fw.block_size or fa.kind != fw.kind:
        raise ValueError(f"block dot unit {p['fa']} x {p['fw']}: the synthesized units take equal block sizes "
                         "and element kinds")
    return fa, fw


def _lanes(p, fa) -> int:
    """Lanes of a block unit: the format's block size, or ``lanes`` (fewer, for quick tests)."""
    return int(p.get("lanes", fa.block_size))


def _dot_name(p):
    fa, fw = _dot_formats(p)
    pair = fa.name if fa.name == fw.name else f"{fa.name}_x_{fw.name}"
    lanes = f"_lanes{p['lanes']}" if "lanes" in p else ""
    return f"block_dot_{pair}_acc{p['acc']}{lanes}"


def _is_signmag(f) -> bool:
    return getattr(getattr(f.spec, "elem", None), "encoding", "twos") == "signmag"


def _dot_build(p):
    fa, fw = _dot_formats(p)
    B = _lanes(p, fa)
    m = Module(_dot_name(p), f"block dot-product unit {fa.name} x {fw.name}, {B} lanes, "
                             f"{p['acc']}-bit accumulator window")
    s = max(fa.scale_bits, fw.scale_bits)
    if fa.kind == "block_int":
        dot.block_dot_int(m, fa.operand_bits, fw.operand_bits, B, s, p["acc"], signmag=_is_signmag(fa),
                          arch=p.get("arch", "baugh_wooley"))
    else:
        scale = fa.spec.scale.elem if fa.scale_float else None
        dot.block_dot_fp(m, fa.spec.elem, fw.spec.elem, B, s, p["acc"], p.get("window", 32), scale)
    return m


def _int_elements(f, shape, rng):
    b = f.operand_bits
    if _is_signmag(f):
        return rng.integers(0, 1 << b, shape)            # any sign-magnitude code
    lim = (1 << (b - 1)) - 1
    return rng.integers(-lim, lim + 1, shape)            # symmetric two's complement range


def _dot_vectors(p, rng):
    fa, fw = _dot_formats(p)
    B, n = _lanes(p, fa), RANDOM_VECTORS
    s = max(fa.scale_bits, fw.scale_bits)
    if fa.kind == "block_int":
        x, w = _int_elements(fa, (n, B), rng), _int_elements(fw, (n, B), rng)
    else:
        ca, cw = reference.finite_codes(fa.spec.elem), reference.finite_codes(fw.spec.elem)
        x, w = rng.choice(ca, (n, B)), rng.choice(cw, (n, B))
        # a quarter of the blocks with small exponents only, so that every lane shift is exercised
        q = n // 4
        x[:q] &= ~np.int64(((1 << fa.spec.elem.ebits) - 2) << fa.spec.elem.mbits)
    if fa.scale_float:
        sc = reference.finite_codes(fa.spec.scale.elem, signed=False)
        xs, ws = rng.choice(sc, n), rng.choice(sc, n)
    else:
        xs, ws = rng.integers(0, 1 << s, n), rng.integers(0, 1 << s, n)
    acc = rng.integers(-(1 << (p["acc"] - 1)), 1 << (p["acc"] - 1), n)
    return {"x": x, "w": w, "xs": xs, "ws": ws}, {"acc_q": acc}, n, False


def _to_unsigned_codes(v, bits):
    return np.asarray(v, dtype=np.int64) & ((1 << bits) - 1)


def _dot_expect(p, inp, state):
    fa, fw = _dot_formats(p)
    acc = p["acc"]
    B = _lanes(p, fa)
    if fa.kind == "block_int":
        def val(v, f):
            if _is_signmag(f):
                mag = v & ((1 << (f.operand_bits - 1)) - 1)
                return np.where(v >> (f.operand_bits - 1) & 1, -mag, mag)
            return v
        total = (val(inp["x"], fa) * val(inp["w"], fw)).sum(axis=1)
        wt = fa.operand_bits + fw.operand_bits - (1 if _is_signmag(fa) else 0) + arith.clog2(B)
        blk = inp["xs"] + inp["ws"]
    else:
        ea, eb = fa.spec.elem, fw.spec.elem
        w_win = _window(p, fa, fw)
        total, e_max = reference.block_fp_sum(inp["x"], inp["w"], ea, eb, w_win)
        wt = w_win + 1 + arith.clog2(B)
        if fa.scale_float:
            se = fa.spec.scale.elem
            _, exs, gxs = reference.elem_fields(inp["xs"], se)
            _, ews, gws = reference.elem_fields(inp["ws"], se)
            total = total * gxs * gws
            wt += 2 * (se.mbits + 1)
            blk = exs + ews + e_max
        else:
            blk = inp["xs"] + inp["ws"] + e_max
    return {"acc_q:next": reference.accumulate(state["acc_q"], total, wt, blk, acc),
            "blk_exp": blk}


def _window(p, fa, fw):
    from ..units import mxfp_window

    return mxfp_window(fa, fw, p.get("window", 32))[0]


def _dot_model(p, tech):
    from dataclasses import replace

    from ..units import build_pe

    fa, fw = _dot_formats(p)
    if "lanes" in p:
        fa, fw = replace(fa, block=_lanes(p, fa)), replace(fw, block=_lanes(p, fa))
    return build_pe(fa, fw, acc=f"window({p['acc']})", window=p.get("window", 32), tech=tech).pe


FAMILIES: dict[str, Family] = {
    "mult": Family(_mult_name, _mult_build, _mult_vectors,
                   lambda p, i, s: {"p": i["x"] * i["y"]}, _mult_model,
                   "a x b multiplier: signed (Baugh-Wooley, radix-4 Booth) or unsigned (FP significands)"),
    "adder": Family(lambda p: f"adder_{p['w']}", _adder_build, _adder_vectors,
                    lambda p, i, s: {"s": reference.wrap(i["x"] + i["y"], p["w"])},
                    lambda p, t: _component("IntAdder", t, p["w"]), "w-bit ripple-carry adder"),
    "adder_tree": Family(lambda p: f"adder_tree_{p['inputs']}x{p['w']}", _tree_build, _tree_vectors,
                         lambda p, i, s: {"s": sum(i[f"x{k}"] for k in range(p["inputs"]))},
                         lambda p, t: _component("AdderTree", t, p["inputs"], p["w"]),
                         "adder tree, +1 bit per level"),
    "shifter": Family(lambda p: f"shifter_{p['width']}_{p['positions']}", _shifter_build, _shifter_vectors,
                      lambda p, i, s: {"y": (i["x"] << i["s"]) & ((1 << p["width"]) - 1)},
                      lambda p, t: _component("BarrelShifter", t, p["width"], p["positions"]),
                      "logarithmic left barrel shifter"),
    "comparator": Family(lambda p: f"comparator_{p['w']}", _cmp_build, _cmp_vectors,
                         lambda p, i, s: {"gt": (i["x"] > i["y"]).astype(np.int64)},
                         lambda p, t: _component("Comparator", t, p["w"]), "magnitude comparator"),
    "max_tree": Family(lambda p: f"max_tree_{p['inputs']}x{p['w']}", _max_build, _max_vectors,
                       lambda p, i, s: {"y": np.max([i[f"x{k}"] for k in range(p["inputs"])], axis=0)},
                       lambda p, t: _component("MaxTree", t, p["inputs"], p["w"]), "compare-select max tree"),
    "lzc": Family(lambda p: f"lzc_{p['w']}", _lzc_build, _lzc_vectors,
                  lambda p, i, s: {"c": reference.leading_zeros(i["x"], p["w"])},
                  lambda p, t: _component("LeadingZeroCounter", t, p["w"]), "leading-zero counter"),
    "fp": Family(lambda p: f"fp_{p['op']}_{_fmt(p['fmt']).name}", _fpop_build, _fpop_vectors, _fpop_expect,
                 _fpop_model, "minifloat multiplier / adder"),
    "int_mac": Family(lambda p: f"int_mac_{p['a']}x{p['b']}_acc{p['acc']}", _mac_build, _mac_vectors, _mac_expect,
                      _mac_model, "integer MAC with a wide accumulator"),
    "block_dot": Family(_dot_name, _dot_build, _dot_vectors, _dot_expect, _dot_model,
                        "block dot-product unit (MXINT, BFP, MXFP, NVFP4)"),
}


def _component(name, tech, *args):
    from .. import components

    return getattr(components, name)(*args, tech=tech)


# ------------------------------------------------------------------------ checking

@dataclass(frozen=True)
class CheckResult:
    unit: str
    vectors: int
    exhaustive: bool


def check(spec: UnitSpec, netlist: dict, seed: int = 0) -> CheckResult:
    """Simulate the synthesized ``netlist`` (yosys JSON) on the unit's vectors; SelfCheckError on
    the first output that differs from the arithmetic."""
    fam = FAMILIES[spec.family]
    p = spec.p
    rng = np.random.default_rng(seed)
    inputs, state, n, exhaustive = fam.vectors(p, rng)
    net = Netlist.from_json(netlist, spec.name)
    sim_inputs = {}
    for k, v in inputs.items():
        bits = len(net.ports[k][1])
        sim_inputs[k] = v
        if np.ndim(v) == 2:
            lane = bits // v.shape[1]
            sim_inputs[k] = _to_unsigned_codes(v, lane)
    sim = net.simulate(sim_inputs, state, n)
    expected = fam.expect(p, inputs, state)
    for key, want in expected.items():
        port, _, how = key.partition(":")
        if how == "next":
            got = sim.next_state(port, signed=True)
        elif how == "values":
            el = _elem(p["fmt"])
            got = reference.elem_values(sim.output(port), el)
        else:
            bits = len(net.ports[port][1])
            signed = bool((np.asarray(want) < 0).any())
            got = sim.output(port, signed=signed)
            if not signed and bits < 63:
                want = np.asarray(want) & ((1 << bits) - 1)
        bad = np.flatnonzero(np.asarray(got) != np.asarray(want))
        if bad.size:
            i = int(bad[0])
            shown = {k: (v[i].tolist() if np.ndim(v) else v) for k, v in {**inputs, **state}.items()}
            raise SelfCheckError(f"{spec.name}: output {port} differs on {bad.size} of {n} vectors; first: "
                                 f"inputs {shown} -> got {np.asarray(got)[i]}, expected {np.asarray(want)[i]}")
    return CheckResult(spec.name, n, exhaustive)


# ------------------------------------------------------------------------ the synthesized set

MULT_SQUARES = tuple(range(2, 17)) + (24, 32)
MULT_PAIRS = ((2, 4), (2, 8), (2, 16), (3, 5), (3, 8), (4, 6), (4, 8), (4, 12), (4, 16), (5, 8), (6, 8), (6, 12),
              (8, 12), (8, 16), (12, 16))
UNSIGNED = ((2, 2), (3, 3), (4, 4), (2, 4), (3, 4), (4, 3), (8, 8), (11, 11))
FP_FORMATS = ("fp4_e2m1", "fp6_e2m3", "fp6_e3m2", "fp8_e4m3", "fp8_e5m2")
#: IEEE widths: synthesized to fit the FP law shapes and listed for information (the model charges
#: them the published calibration kappa on top)
FP_IEEE = ("bf16", "fp16", "fp32")
DOT_PAIRS = (("mxint8", "mxint8"), ("mxint6", "mxint6"), ("mxint4", "mxint4"), ("mxint2", "mxint2"),
             ("mxint8_b16", "mxint4_b16"), ("bfp8", "bfp8"), ("bfp4", "bfp4"),
             ("mxfp8_e4m3", "mxfp8_e4m3"), ("mxfp8_e5m2", "mxfp8_e5m2"), ("mxfp6_e2m3", "mxfp6_e2m3"),
             ("mxfp6_e3m2", "mxfp6_e3m2"), ("mxfp4", "mxfp4"), ("nvfp4", "nvfp4"))


def default_units() -> list[UnitSpec]:
    """Every unit of a full ``--refit`` (the shipped data file lists them all)."""
    out = []
    for w in MULT_SQUARES:
        out += [unit("mult", a=w, b=w, arch="baugh_wooley"), unit("mult", a=w, b=w, arch="booth4")]
    for a, b in MULT_PAIRS:
        out += [unit("mult", a=a, b=b, arch="baugh_wooley"), unit("mult", a=a, b=b, arch="booth4"),
                unit("mult", a=b, b=a, arch="booth4")]
    out += [unit("mult", a=a, b=b, arch="unsigned") for a, b in UNSIGNED]
    out += [unit("adder", w=w) for w in (2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32)]
    out += [unit("adder_tree", inputs=B, w=w) for B, w in ((2, 8), (4, 8), (8, 8), (16, 8), (32, 8), (32, 16),
                                                           (16, 4), (32, 4), (16, 9), (32, 33))]
    out += [unit("shifter", width=W, positions=S) for W, S in ((8, 4), (8, 7), (12, 8), (16, 15), (24, 12),
                                                               (32, 11), (32, 31), (33, 28))]
    out += [unit("comparator", w=w) for w in (2, 4, 6, 8, 12, 16, 24, 32)]
    out += [unit("max_tree", inputs=B, w=w) for B, w in ((4, 4), (8, 5), (16, 5), (32, 5), (32, 6), (16, 9),
                                                         (32, 8), (16, 15))]
    out += [unit("lzc", w=w) for w in (4, 6, 8, 12, 16, 24, 28, 32)]
    out += [unit("fp", op=op, fmt=f) for op in ("mul", "add") for f in FP_FORMATS + FP_IEEE]
    out += [unit("int_mac", a=a, b=b, acc=acc) for a, b, acc in ((2, 2, 16), (4, 4, 32), (8, 4, 32), (6, 6, 32),
                                                                   (8, 8, 32), (8, 8, 24), (16, 16, 48))]
    out += [unit("block_dot", fa=a, fw=w, acc=32) for a, w in DOT_PAIRS]
    return out


def quick_units() -> list[UnitSpec]:
    """A few small units the data-file test re-synthesizes (seconds)."""
    return [unit("mult", a=2, b=2, arch="baugh_wooley"), unit("mult", a=4, b=4, arch="booth4"),
            unit("adder", w=8), unit("comparator", w=8), unit("lzc", w=8), unit("shifter", width=8, positions=7),
            unit("max_tree", inputs=4, w=4), unit("fp", op="mul", fmt="fp4_e2m1"),
            unit("int_mac", a=4, b=4, acc=32)]
