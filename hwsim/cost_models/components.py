"""Primitive and compound hardware components (docs/spec/cost_model.md §3).

Each component is a small frozen dataclass with a library reference point and one named scaling
law, exposing ``area_um2`` (um^2), ``actions`` (action name -> pJ) and ``leak_w`` (W, 0).
Compounds list ``parts()`` as ``(name, component, multiplicity)``; their costs are the sums
(times a calibration factor kappa for the two FP compounds).

The cost formulas are the pure functions of ``laws.py`` on the coefficient dict of
:class:`~.tech.Technology`, evaluated at the library node and then scaled to the requested node.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import ClassVar

import numpy as np

from .laws import (AE, clog2, fp_add_terms, fp_mul_terms, kappa_weight, p_adder, p_bits, p_lzc, p_mult, p_umult,
                   p_shifter)
from .tech import KB, Technology, dram_types, load_data

@lru_cache(maxsize=None)
def _default_tech() -> Technology:
    return Technology()


# --------------------------------------------------------------------------------------------
# component classes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Component:
    """Base class. Subclasses define ``_raw(c) -> (area, energy)`` or ``parts()``."""

    tech: Technology | None = field(default=None, kw_only=True, repr=False)

    law: ClassVar[str] = ""
    reference: ClassVar[str] = ""
    action: ClassVar[str] = "op"
    kappa_key: ClassVar[str | None] = None
    leak_w: ClassVar[float] = 0.0

    @property
    def t(self) -> Technology:
        return self.tech if self.tech is not None else _default_tech()

    def parts(self) -> tuple[tuple[str, "Component", float], ...]:
        return ()

    def _raw(self, c: dict) -> AE:
        area = energy = 0.0
        for _, comp, n in self.parts():
            a, e = comp._raw(c)
            area += n * a
            energy += n * e
        if self.kappa_key:
            ka, ke = self.kappa(c)
            area *= ka
            energy *= ke
        return area, energy

    def kappa(self, c: dict) -> tuple[float, float]:
        """(area, energy) calibration factors applied to the sum of the parts (1, 1 without kappa)."""
        if not self.kappa_key:
            return 1.0, 1.0
        r = kappa_weight(self.e, self.m)
        return c[f"{self.kappa_key}.kappa_area"] ** r, c[f"{self.kappa_key}.kappa_energy"] ** r

    @cached_property
    def _ae(self) -> AE:
        a, e = self._raw(self.t.coefficients)
        return a * self.t.area_scale, e * self.t.energy_scale

    @property
    def area_um2(self) -> float:
        return self._ae[0]

    @property
    def energy_pj(self) -> float:
        """Energy of the main action (pJ)."""
        return self._ae[1]

    @property
    def actions(self) -> dict[str, float]:
        return {self.action: self.energy_pj}

    def breakdown(self, count: float = 1.0, path: str = "") -> list[dict]:
        """Flat list of rows (path, count, area_um2 each, energy_pj per action, law)."""
        name = type(self).__name__ + self._args()
        here = f"{path}/{name}" if path else name
        rows = [{"path": here, "count": count, "area_um2": self.area_um2, "energy_pj": self.energy_pj,
                 "law": self.law or "sum of parts" + (f" x kappa[{self.kappa_key}]" if self.kappa_key else "")}]
        for pname, comp, n in self.parts():
            rows.extend(comp.breakdown(count * n, f"{here}/{pname}"))
        return rows

    def _args(self) -> str:
        vals = [f"{v}" for k, v in self.__dict__.items() if k not in ("tech",) and not k.startswith("_")]
        return "(" + ",".join(vals) + ")"


def _check_pos(name: str, value, minimum: int = 1) -> None:
    if not (isinstance(value, (int, np.integer)) and value >= minimum):
        raise ValueError(f"{name}={value!r} must be an integer >= {minimum}")


@dataclass(frozen=True)
class IntAdder(Component):
    """w-bit integer adder. Law ``linear``: adder.area_per_bit * (w - adder.offset_bits) um^2, same
    shape for energy (horowitz45: offset from gate-level synthesis, scales over the Horowitz adds)."""

    w: int
    law: ClassVar[str] = "linear"
    reference: ClassVar[str] = "Horowitz ISSCC 2014 int8/16/32 add (log least squares), gate-level offset"
    action: ClassVar[str] = "add"

    def __post_init__(self):
        _check_pos("w", self.w)

    def _raw(self, c):
        return p_adder(c, self.w)


@dataclass(frozen=True)
class IntMultiplier(Component):
    """a x b multiplier. Signed (default), law ``bw_booth``: alpha * the cheaper of a Baugh-Wooley
    array (ab + beta (a+b) + gamma) and a radix-4 Booth multiplier (laws.mult_shape); unsigned
    (FP significands), law ``array``: alpha * the array shape (laws.array_shape). Gate-level shapes."""

    a: int
    b: int
    signed: bool = True
    law: ClassVar[str] = "bw_booth"
    reference: ClassVar[str] = ("gate-level shape (yosys); scale: Horowitz ISSCC 2014 int8/int32 mult "
                                "(log least squares)")
    action: ClassVar[str] = "mult"

    def __post_init__(self):
        _check_pos("a", self.a)
        _check_pos("b", self.b)

    def _raw(self, c):
        return p_mult(c, self.a, self.b) if self.signed else p_umult(c, self.a, self.b)

    def _args(self) -> str:
        return f"({self.a},{self.b}{'' if self.signed else ',unsigned'})"


@dataclass(frozen=True)
class Register(Component):
    """Register of ``bits`` flip-flops; action ``write`` (all bits)."""

    bits: int
    law: ClassVar[str] = "linear"
    reference: ClassVar[str] = "Aladdin 1-bit register / 32-bit adder ratio x Horowitz adder bit"
    action: ClassVar[str] = "write"

    def __post_init__(self):
        _check_pos("bits", self.bits, 0)

    def _raw(self, c):
        return p_bits(c, "register", self.bits)


@dataclass(frozen=True)
class Comparator(Component):
    """w-bit magnitude comparator; action ``compare``. Law ``linear``: comparator.area_per_bit *
    (w - comparator.offset_bits) um^2 (gate-level transistors at the adder's um^2 per transistor),
    the same shape for energy (Aladdin's comparator/adder energy density)."""

    w: int
    law: ClassVar[str] = "linear"
    reference: ClassVar[str] = "gate-level comparator / adder transistors x Horowitz adder bit"
    action: ClassVar[str] = "compare"

    def __post_init__(self):
        _check_pos("w", self.w)

    def _raw(self, c):
        return p_bits(c, "comparator", self.w)


@dataclass(frozen=True)
class Mux2(Component):
    """``bits`` two-input multiplexers; action ``select``. Law ``linear``: mux2.area_per_bit * bits
    um^2 (gate-level transistors per shifter mux bit at the adder's um^2 per transistor),
    mux2.energy_per_bit * bits pJ (Aladdin's shifter/adder energy density)."""

    bits: int
    law: ClassVar[str] = "linear"
    reference: ClassVar[str] = "gate-level shifter mux bit / adder transistors x Horowitz adder bit"
    action: ClassVar[str] = "select"

    def __post_init__(self):
        _check_pos("bits", self.bits, 0)

    def _raw(self, c):
        return p_bits(c, "mux2", self.bits)


@dataclass(frozen=True)
class BarrelShifter(Component):
    """W-bit shifter over S positions: Mux2 x W*ceil(log2(S+1)); with a narrower ``in_bits``-bit
    input (a product placed in a wide window), Mux2 x min(W, P*ceil(log2(S+1)) + S)
    (laws.shifter_mux_bits)."""

    width: int
    positions: int
    in_bits: int | None = None
    law: ClassVar[str] = "w_log2s"
    action: ClassVar[str] = "shift"

    def __post_init__(self):
        _check_pos("width", self.width)
        _check_pos("positions", self.positions, 0)
        if self.in_bits is not None:
            _check_pos("in_bits", self.in_bits)

    def _raw(self, c):
        return p_shifter(c, self.width, self.positions, self.in_bits)

    def _args(self) -> str:
        return f"({self.width},{self.positions}{'' if self.in_bits is None else f',in{self.in_bits}'})"


@dataclass(frozen=True)
class LeadingZeroCounter(Component):
    """Leading-zero counter of a ``width``-bit word; action ``count``. Law ``linear`` in mux2 bits:
    lzc.mux_per_bit * (width - lzc.offset_bits) Mux2 bits (a tree of valid/count nodes; gate level)."""

    width: int
    law: ClassVar[str] = "linear_mux"
    reference: ClassVar[str] = "mux2 bits, gate-level count (no own reference point)"
    action: ClassVar[str] = "count"

    def __post_init__(self):
        _check_pos("width", self.width)

    def _raw(self, c):
        return p_lzc(c, self.width)


@dataclass(frozen=True)
class AdderTree(Component):
    """B-input tree of w-bit operands, +1 bit per level: a level-l adder adds two (w+l-1)-bit
    operands (IntAdder(w+l-1); its carry out is the (w+l)-th bit of the sum)."""

    inputs: int
    w: int
    action: ClassVar[str] = "reduce"

    def __post_init__(self):
        _check_pos("inputs", self.inputs)
        _check_pos("w", self.w)

    def parts(self):
        out = []
        for lvl in range(1, clog2(self.inputs) + 1):
            out.append((f"level{lvl}", IntAdder(self.w + lvl - 1, tech=self.tech), math.ceil(self.inputs / 2 ** lvl)))
        return tuple(out)

    @property
    def out_bits(self) -> int:
        return self.w + clog2(self.inputs)


@dataclass(frozen=True)
class MaxTree(Component):
    """(B-1) x (Comparator(w) + Mux2(w))."""

    inputs: int
    w: int
    action: ClassVar[str] = "max"

    def __post_init__(self):
        _check_pos("inputs", self.inputs)
        _check_pos("w", self.w)

    def parts(self):
        n = self.inputs - 1
        return (("compare", Comparator(self.w, tech=self.tech), n), ("select", Mux2(self.w, tech=self.tech), n))


@dataclass(frozen=True)
class FPMultiplier(Component):
    """FP multiplier with e exponent and m stored mantissa bits (p = m+1); the sum of its parts
    (laws.fp_mul_terms) times kappa[fp_mul]^r, r = laws.kappa_weight(e, m): 0 for minifloats of at
    most 8 bits, 1 for FP16 and wider (kappa fitted to the Horowitz fp16 / fp32 mult)."""

    e: int
    m: int
    kappa_key: ClassVar[str] = "fp_mul"
    action: ClassVar[str] = "mult"

    def __post_init__(self):
        _check_pos("e", self.e, 0)
        _check_pos("m", self.m, 0)

    def parts(self):
        return _parts_of(fp_mul_terms(self.e, self.m, self.t.coefficients), self.tech)


@dataclass(frozen=True)
class FPAdder(Component):
    """FP adder with e exponent and m stored mantissa bits (p = m+1); action ``add``. Law: the sum
    of its parts (laws.fp_add_terms: exponent difference, swap, align shifter, significand adder,
    leading-zero counter, normalise shifter, round, saturate) times kappa[fp_add]^r (as
    FPMultiplier), which ``tech`` fits to the Horowitz fp16 / fp32 add (um^2, pJ)."""

    e: int
    m: int
    kappa_key: ClassVar[str] = "fp_add"
    reference: ClassVar[str] = "Horowitz ISSCC 2014 fp16/fp32 add (kappa, log least squares)"
    action: ClassVar[str] = "add"

    def __post_init__(self):
        _check_pos("e", self.e, 0)
        _check_pos("m", self.m, 0)

    def parts(self):
        return _parts_of(fp_add_terms(self.e, self.m, self.t.coefficients), self.tech)


def _parts_of(terms, tech) -> tuple:
    """Components of (part, law, args, count) terms (laws.fp_*_terms)."""
    make = {"adder": IntAdder, "mult": IntMultiplier, "umult": lambda a, b, tech: IntMultiplier(a, b, False, tech=tech),
            "mux2": Mux2, "shifter": BarrelShifter,
            "lzc": LeadingZeroCounter, "comparator": Comparator}
    return tuple((name, make[law](*args, tech=tech), n) for name, law, args, n in terms
                 if n and min(args) > 0)


@dataclass(frozen=True)
class IntToFP(Component):
    """w-bit integer to FP (e, m) converter; action ``convert``. Law: the sum of its parts, a
    w-bit leading-zero counter and normalising shifter, an (e+1)-bit exponent adder and an
    (m+2)-bit rounding adder (um^2, pJ; no own reference point)."""

    w: int
    e: int
    m: int
    action: ClassVar[str] = "convert"

    def parts(self):
        t = self.tech
        return (("lzc", LeadingZeroCounter(self.w, tech=t), 1), ("shift", BarrelShifter(self.w, self.w, tech=t), 1),
                ("exponent", IntAdder(self.e + 1, tech=t), 1), ("round", IntAdder(self.m + 2, tech=t), 1))


@dataclass(frozen=True)
class FPToInt(Component):
    """FP (e, m) to w-bit integer converter; action ``convert``. Law: the sum of its parts, an
    (m+2)-bit shifter over w positions, a w-bit rounding adder and a w-bit clamp comparator
    (um^2, pJ; no own reference point)."""

    e: int
    m: int
    w: int
    action: ClassVar[str] = "convert"

    def parts(self):
        t = self.tech
        return (("shift", BarrelShifter(self.m + 2, self.w, tech=t), 1), ("round", IntAdder(self.w, tech=t), 1),
                ("clamp", Comparator(self.w, tech=t), 1))


@dataclass(frozen=True)
class FPReciprocal(Component):
    """Assumption (flagged): 3 FPMultiplier equivalents (seed + one Newton step)."""

    e: int
    m: int
    action: ClassVar[str] = "reciprocal"

    def parts(self):
        return (("newton", FPMultiplier(self.e, self.m, tech=self.tech), 3),)


@dataclass(frozen=True)
class SRAM(Component):
    """SRAM of ``capacity_bytes`` with ``word_bits`` ports in ``banks`` banks.

    Area: ``capacity_linear`` (0.74 um^2/bit at 45 nm). Energy per word read = write:
    ``sqrt_capacity``: k*(word/64)*sqrt((C/banks)/8 KB), k = 9.6 pJ (log least squares).
    """

    capacity_bytes: int
    word_bits: int = 64
    banks: int = 1
    law: ClassVar[str] = "capacity_linear / sqrt_capacity"
    action: ClassVar[str] = "read"

    def __post_init__(self):
        _check_pos("capacity_bytes", self.capacity_bytes)
        _check_pos("word_bits", self.word_bits)
        _check_pos("banks", self.banks)

    def _raw(self, c):
        area = c["sram.area_per_bit"] * 8 * self.capacity_bytes
        energy = c["sram.energy_k"] * (self.word_bits / 64) * (
            (self.capacity_bytes / self.banks) / (8 * KB)) ** c["sram.energy_exponent"]
        return area, energy

    @property
    def actions(self):
        return {"read": self.energy_pj, "write": self.energy_pj}

    @property
    def energy_per_bit_pj(self) -> float:
        return self.energy_pj / self.word_bits


@dataclass(frozen=True)
class DRAM(Component):
    """Off-chip DRAM: pJ/bit from the DRAM table; area 0; does not scale with node."""

    dram_type: str = "HBM2"
    action: ClassVar[str] = "read"

    def __post_init__(self):
        if self.dram_type not in dram_types():
            raise ValueError(f"dram_type={self.dram_type!r} is unknown; valid: {sorted(dram_types())}")

    @property
    def _ae(self):
        t = self.t
        pj = t.dram_pj_per_bit if t.dram_type == self.dram_type else dram_types()[self.dram_type]
        return 0.0, pj

    @property
    def energy_per_bit_pj(self) -> float:
        return self._ae[1]

    @property
    def actions(self):
        return {"read_bit": self._ae[1], "write_bit": self._ae[1]}


@dataclass(frozen=True)
class Compound(Component):
    """Named group of parts (used by units): ``parts_`` is a tuple of (name, component, count)."""

    name: str
    parts_: tuple = ()
    action_name: str = "op"

    def parts(self):
        return self.parts_

    @property
    def actions(self):
        return {self.action_name: self.energy_pj}

    def _args(self):
        return f"[{self.name}]"


PRIMITIVES = (IntAdder, IntMultiplier, Register, Comparator, Mux2, BarrelShifter, LeadingZeroCounter, AdderTree,
              MaxTree, FPMultiplier, FPAdder, IntToFP, FPToInt, FPReciprocal, SRAM, DRAM)


def maestro_reference() -> dict:
    return load_data("horowitz45")["reference"]["maestro_int8_mac"]
