"""Primitive and compound hardware components (cost_model.md section 3).

Each component is a small frozen dataclass with a library reference point and one named scaling
law, exposing ``area_um2`` (um^2), ``actions`` (action name -> pJ) and ``leak_w`` (W, 0).
Compounds list ``parts()`` as ``(name, component, multiplicity)``; their costs are the sums
(times a calibration factor kappa for the two FP compounds).

The cost formulas are pure functions of the coefficient dict of :class:`~.tech.Technology`
(``_p_*``), evaluated at the library node and then scaled to the requested node.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import ClassVar

import numpy as np

from .tech import KB, Technology, _dram_types, load_data

AE = tuple[float, float]  # (area um^2, energy pJ) at the library node

# --------------------------------------------------------------------------------------------
# pure cost laws on a coefficient dict (library node)
# --------------------------------------------------------------------------------------------


def _clog2(x: int) -> int:
    return 0 if x <= 1 else math.ceil(math.log2(x))


def _p_adder(c, w) -> AE:  # law: linear
    return c["adder.area_per_bit"] * w, c["adder.energy_per_bit"] * w


def _p_mult(c, a, b) -> AE:  # law: pp_cpa = alpha*a*b + beta*(a+b)
    return (c["multiplier.area_alpha"] * a * b + c["multiplier.area_beta"] * (a + b),
            c["multiplier.energy_alpha"] * a * b + c["multiplier.energy_beta"] * (a + b))


def _p_bits(c, name, bits) -> AE:  # law: linear (register, comparator, mux2)
    return c[f"{name}.area_per_bit"] * bits, c[f"{name}.energy_per_bit"] * bits


def _p_shifter(c, w, s) -> AE:  # law: w_log2s -> W * ceil(log2(S+1)) mux bits
    return _p_bits(c, "mux2", w * _clog2(s + 1))


def _p_lzc(c, w) -> AE:  # law: nlog2n
    return _p_bits(c, "mux2", w * _clog2(w))


def _add(*terms: tuple[float, AE]) -> AE:
    return sum(k * t[0] for k, t in terms), sum(k * t[1] for k, t in terms)


def _p_fpmul_raw(c, e, m) -> AE:
    p = m + 1
    return _add((1, _p_mult(c, p, p)), (2, _p_adder(c, e + 2)), (1, _p_bits(c, "mux2", p)),
                (1, _p_adder(c, p + 1)))


def _p_fpadd_raw(c, e, m) -> AE:
    p = m + 1
    return _add((1, _p_adder(c, e + 1)), (1, _p_bits(c, "mux2", 2 * p + e)), (1, _p_shifter(c, p + 3, p + 3)),
                (1, _p_adder(c, p + 4)), (1, _p_lzc(c, p + 4)), (1, _p_shifter(c, p + 4, p + 4)),
                (1, _p_adder(c, p + 1)), (1, _p_adder(c, e + 1)))


def fit_fp_kappas(library: str, c: dict[str, float]) -> dict[str, float]:
    """The four kappa of FPMultiplier / FPAdder: log least squares over the FP16 and FP32 points.

    Libraries without FP reference points (aladdin40: multi-cycle FP energies) use kappa = 1.
    """
    if library == "horowitz45" or "reference" in _maybe_lib(library):
        ref = _maybe_lib(library)["reference"]
        out = {}
        for op, raw in (("mult", _p_fpmul_raw), ("add", _p_fpadd_raw)):
            ra, re_ = [], []
            for w in ("fp16", "fp32"):
                r = ref[f"{w}_{op}"]
                a, e = raw(c, r["ebits"], r["mbits"])
                ra.append(r["area_um2"] / a)
                re_.append(r["energy_pj"] / e)
            key = "fp_mul" if op == "mult" else "fp_add"
            out[f"{key}.kappa_area"] = float(np.exp(np.mean(np.log(ra))))
            out[f"{key}.kappa_energy"] = float(np.exp(np.mean(np.log(re_))))
        return out
    return {"fp_mul.kappa_area": 1.0, "fp_mul.kappa_energy": 1.0,
            "fp_add.kappa_area": 1.0, "fp_add.kappa_energy": 1.0}


def _maybe_lib(library: str) -> dict:
    from .tech import _library_data

    return _library_data(library)


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
            area *= c[f"{self.kappa_key}.kappa_area"]
            energy *= c[f"{self.kappa_key}.kappa_energy"]
        return area, energy

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
    """w-bit integer adder. Law ``linear``: 4.32*w um^2, 3.32*w fJ (horowitz45)."""

    w: int
    law: ClassVar[str] = "linear"
    reference: ClassVar[str] = "Horowitz ISSCC 2014 int8/16/32 add (log least squares)"
    action: ClassVar[str] = "add"

    def __post_init__(self):
        _check_pos("w", self.w)

    def _raw(self, c):
        return _p_adder(c, self.w)


@dataclass(frozen=True)
class IntMultiplier(Component):
    """a x b signed multiplier. Law ``pp_cpa``: alpha*a*b + beta*(a+b)."""

    a: int
    b: int
    law: ClassVar[str] = "pp_cpa"
    reference: ClassVar[str] = "Horowitz ISSCC 2014 int8/int32 mult (exact at both)"
    action: ClassVar[str] = "mult"

    def __post_init__(self):
        _check_pos("a", self.a)
        _check_pos("b", self.b)

    def _raw(self, c):
        return _p_mult(c, self.a, self.b)


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
        return _p_bits(c, "register", self.bits)


@dataclass(frozen=True)
class Comparator(Component):
    w: int
    law: ClassVar[str] = "linear"
    reference: ClassVar[str] = "Aladdin 32-bit comparator / adder ratio x Horowitz adder bit"
    action: ClassVar[str] = "compare"

    def __post_init__(self):
        _check_pos("w", self.w)

    def _raw(self, c):
        return _p_bits(c, "comparator", self.w)


@dataclass(frozen=True)
class Mux2(Component):
    bits: int
    law: ClassVar[str] = "linear"
    reference: ClassVar[str] = "Aladdin shifter as 160 mux bits / adder ratio x Horowitz adder bit"
    action: ClassVar[str] = "select"

    def __post_init__(self):
        _check_pos("bits", self.bits, 0)

    def _raw(self, c):
        return _p_bits(c, "mux2", self.bits)


@dataclass(frozen=True)
class BarrelShifter(Component):
    """W-bit shifter over S positions: Mux2 x W*ceil(log2(S+1))."""

    width: int
    positions: int
    law: ClassVar[str] = "w_log2s"
    action: ClassVar[str] = "shift"

    def __post_init__(self):
        _check_pos("width", self.width)
        _check_pos("positions", self.positions, 0)

    def _raw(self, c):
        return _p_shifter(c, self.width, self.positions)


@dataclass(frozen=True)
class LeadingZeroCounter(Component):
    width: int
    law: ClassVar[str] = "nlog2n"
    action: ClassVar[str] = "count"

    def __post_init__(self):
        _check_pos("width", self.width)

    def _raw(self, c):
        return _p_lzc(c, self.width)


@dataclass(frozen=True)
class AdderTree(Component):
    """B-input tree of w-bit operands, +1 bit per level."""

    inputs: int
    w: int
    action: ClassVar[str] = "reduce"

    def __post_init__(self):
        _check_pos("inputs", self.inputs)
        _check_pos("w", self.w)

    def parts(self):
        out = []
        for lvl in range(1, _clog2(self.inputs) + 1):
            out.append((f"level{lvl}", IntAdder(self.w + lvl, tech=self.tech), math.ceil(self.inputs / 2 ** lvl)))
        return tuple(out)

    @property
    def out_bits(self) -> int:
        return self.w + _clog2(self.inputs)


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
    """FP multiplier with e exponent and m stored mantissa bits (p = m+1)."""

    e: int
    m: int
    kappa_key: ClassVar[str] = "fp_mul"
    action: ClassVar[str] = "mult"

    def __post_init__(self):
        _check_pos("e", self.e, 0)
        _check_pos("m", self.m, 0)

    def parts(self):
        p, t = self.m + 1, self.tech
        return (("significand_mult", IntMultiplier(p, p, tech=t), 1), ("exponent_add", IntAdder(self.e + 2, tech=t), 2),
                ("normalise", Mux2(p, tech=t), 1), ("round", IntAdder(p + 1, tech=t), 1))


@dataclass(frozen=True)
class FPAdder(Component):
    e: int
    m: int
    kappa_key: ClassVar[str] = "fp_add"
    action: ClassVar[str] = "add"

    def __post_init__(self):
        _check_pos("e", self.e, 0)
        _check_pos("m", self.m, 0)

    def parts(self):
        p, e, t = self.m + 1, self.e, self.tech
        return (("exp_diff", IntAdder(e + 1, tech=t), 1), ("swap", Mux2(2 * p + e, tech=t), 1),
                ("align", BarrelShifter(p + 3, p + 3, tech=t), 1), ("significand_add", IntAdder(p + 4, tech=t), 1),
                ("lzc", LeadingZeroCounter(p + 4, tech=t), 1), ("normalise", BarrelShifter(p + 4, p + 4, tech=t), 1),
                ("round", IntAdder(p + 1, tech=t), 1), ("exp_adjust", IntAdder(e + 1, tech=t), 1))


@dataclass(frozen=True)
class IntToFP(Component):
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
        if self.dram_type not in _dram_types():
            raise ValueError(f"dram_type={self.dram_type!r} is unknown; valid: {sorted(_dram_types())}")

    @property
    def _ae(self):
        t = self.t
        pj = t.dram_pj_per_bit if t.dram_type == self.dram_type else _dram_types()[self.dram_type]
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
