"""Technology data: libraries, node scaling, DRAM table, overrides (docs/spec/cost_model.md §2).

Numbers live in ``hwsim/cost_models/data/*.toml``; this module reads them and derives the
primitive coefficients (per-bit adder cost, multiplier law, register / comparator / mux bits, SRAM
law) by named fits: shapes from gate-level synthesis (``data/gate_laws.toml``, written by
``hwsim cost synth --refit``), scales from the published reference points.  Everything is returned
at the *library's* node; components multiply by :meth:`Technology.area_scale` /
:meth:`Technology.energy_scale`.

Units: area um^2, energy pJ, node nm.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .laws import kappa_weight, mult_shape, p_fpadd_raw, p_fpmul_raw

DATA_DIR = Path(__file__).with_name("data")
LIBRARIES = ("horowitz45", "aladdin40")
KB = 1024


@lru_cache(maxsize=None)
def _load_toml(path: str) -> dict:
    with open(path, "rb") as fh:
        return tomllib.load(fh)


def load_data(name: str) -> dict:
    """Parsed content of ``data/<name>.toml`` (cached; treat as read-only)."""
    return _load_toml(str(DATA_DIR / f"{name}.toml"))


def _library_data(library: str) -> dict:
    if library in LIBRARIES:
        return load_data(library)
    p = Path(library)
    if p.suffix == ".toml" and p.exists():
        return _load_toml(str(p.resolve()))
    raise ValueError(
        f"library={library!r} is unknown; valid: {list(LIBRARIES)} or a path to a .toml library file"
    )


# --------------------------------------------------------------------------------------------
# node scaling
# --------------------------------------------------------------------------------------------

def parse_node(node: Any) -> float:
    """'45nm', '45', 45 -> 45.0 (nm). Raises ValueError naming the argument."""
    if isinstance(node, (int, float)) and not isinstance(node, bool):
        val = float(node)
    elif isinstance(node, str) and re.fullmatch(r"\s*\d+(\.\d+)?\s*(nm)?\s*", node):
        val = float(node.strip().removesuffix("nm"))
    else:
        raise ValueError(
            f"node={node!r} is not a technology node; give nanometres such as '45nm', 28 or '7nm' "
            f"(table nodes: {sorted(node_table(), reverse=True)})"
        )
    if not (0 < val <= max(node_table())):
        raise ValueError(
            f"node={node!r} is outside the supported range (0, {max(node_table()):g}] nm; "
            f"add a node with Technology(node_nm=..., area_factor=..., energy_factor=...)"
        )
    return val


def node_table(extra: Mapping[float, tuple[float, float]] | None = None) -> dict[float, tuple[float, float]]:
    """{node_nm: (area factor, energy factor)} relative to 45 nm (Stillmaker & Baas 2017)."""
    tab = {float(k): (float(v["area"]), float(v["energy"])) for k, v in load_data("nodes")["node"].items()}
    if extra:
        tab.update({float(k): (float(a), float(e)) for k, (a, e) in extra.items()})
    return tab


_BELOW_TABLE = "is below the table"


def node_factors(node_nm: float, extra: Mapping[float, tuple[float, float]] | None = None
                 ) -> tuple[float, float, list[str]]:
    """(area factor, energy factor, notes) of ``node_nm`` relative to 45 nm.

    Table nodes are exact; between nodes log(factor) is linear in log(node); below the smallest
    table node area ~ node and energy ~ sqrt(node) (IRDS-style, as hwcomponents), with energy
    frozen below 1 nm.
    """
    tab = node_table(extra)
    nodes = np.array(sorted(tab))
    notes: list[str] = []
    if node_nm in tab:
        a, e = tab[node_nm]
        return a, e, notes
    lo = nodes[0]
    if node_nm < lo:
        a0, e0 = tab[float(lo)]
        notes.append(f"node {node_nm:g} nm {_BELOW_TABLE} ({lo:g} nm): area ~ node, energy ~ sqrt(node)")
        return a0 * node_nm / lo, e0 * math.sqrt(max(node_nm, 1.0) / lo), notes
    la = np.log([tab[float(n)][0] for n in nodes])
    le = np.log([tab[float(n)][1] for n in nodes])
    x = math.log(node_nm)
    a = float(np.exp(np.interp(x, np.log(nodes), la)))
    e = float(np.exp(np.interp(x, np.log(nodes), le)))
    notes.append(
        f"node {node_nm:g} nm interpolated log-log between table nodes (Accelergy interpolates by "
        "table index; differences of a few per cent)"
    )
    return a, e, notes


# --------------------------------------------------------------------------------------------
# derived primitive coefficients (at the library node)
# --------------------------------------------------------------------------------------------

def _geo_mean(values) -> float:
    return float(np.exp(np.mean(np.log(np.asarray(values, dtype=float)))))


def gate_laws() -> dict:
    """The law shapes fitted to gate-level synthesis (``data/gate_laws.toml``, written by
    ``hwsim cost synth --refit``)."""
    return load_data("gate_laws")


_MULT_SHAPE = ("bw_beta", "bw_gamma", "array_floor", "booth_alpha", "booth_beta_x", "booth_beta_y", "booth_gamma")


def _structural(g: dict) -> dict[str, float]:
    """Gate-level shape coefficients every library shares (dimensionless)."""
    out = {"lzc.mux_per_bit": float(g["lzc"]["mux_per_bit"]), "lzc.offset_bits": float(g["lzc"]["offset_bits"])}
    for op in ("fp_mul", "fp_add"):
        for k in ("mant_adders", "exp_adders"):
            out[f"{op}.{k}"] = float(g[op][k])
    return out


def _horowitz_coefficients(lib: dict, ala: dict) -> dict[str, float]:
    """Coefficients of a library with Horowitz-style reference points.

    Shapes come from gate-level synthesis (``gate_laws``), scales from the published points:
    the adder (linear, gate-level offset) and the multiplier (Baugh-Wooley / Booth shape) by log
    least squares over their published areas and energies; mux2 and comparator bits are their
    gate-level transistors at the published adders' and multipliers' mean um^2 per transistor
    (geometric), each keeping its library energy per um^2 relative to the adder (Aladdin ratios);
    the register keeps its Aladdin ratio."""
    ref = lib["reference"]
    g = gate_laws()
    c: dict[str, float] = {}
    # IntAdder: linear law with the gate-level offset, log least squares over the 8/16/32-bit adds
    off = float(g["adder"]["offset_bits"])
    adds = [ref[k] for k in ("int8_add", "int16_add", "int32_add")]
    c["adder.offset_bits"] = off
    c["adder.area_per_bit"] = _geo_mean([r["area_um2"] / (r["width"] - off) for r in adds])
    c["adder.energy_per_bit"] = _geo_mean([r["energy_pj"] / (r["width"] - off) for r in adds])
    # IntMultiplier: gate-level shape (cheaper of Baugh-Wooley and Booth), scales over int8/int32
    for k in _MULT_SHAPE:
        c[f"multiplier.{k}"] = float(g["multiplier"][k])
    mults = [ref["int8_mult"], ref["int32_mult"]]
    shapes = [mult_shape(c, r["width"], r["width"]) for r in mults]
    c["multiplier.area_alpha"] = _geo_mean([r["area_um2"] / s for r, s in zip(mults, shapes)])
    c["multiplier.energy_alpha"] = _geo_mean([r["energy_pj"] / s for r, s in zip(mults, shapes)])
    # gate-level primitives at the mean um^2 per transistor of the published adders and multipliers
    # (geometric); energy density ratios from Aladdin
    comp = ala["component"]
    um2_per_transistor = math.sqrt(c["adder.area_per_bit"] / float(g["adder"]["per_bit_transistors"])
                                   * c["multiplier.area_alpha"] / float(g["multiplier"]["bitprod_transistors"]))
    add_density = (comp["adder"]["energy_pj"] / comp["adder"]["area_um2"])
    hz_density = c["adder.energy_per_bit"] / c["adder.area_per_bit"]
    sh = comp["shifter"]
    for name, t_bit, (e, a) in (("mux2", g["mux2"]["per_bit_transistors"], (sh["energy_pj"], sh["area_um2"])),
                                ("comparator", g["comparator"]["per_bit_transistors"],
                                 (comp["comparator"]["energy_pj"], comp["comparator"]["area_um2"]))):
        area = um2_per_transistor * float(t_bit)
        c[f"{name}.area_per_bit"] = area
        c[f"{name}.energy_per_bit"] = area * (e / a) / add_density * hz_density
    c["comparator.offset_bits"] = float(g["comparator"]["offset_bits"])
    c.update(_structural(g))
    # register: per-bit ratio to the Aladdin adder bit, applied to the Horowitz adder bit
    add_a = comp["adder"]["area_um2"] / comp["adder"]["width"]
    add_e = comp["adder"]["energy_pj"] / comp["adder"]["width"]
    reg = comp["register"]
    c["register.area_per_bit"] = reg["area_um2"] / reg["width"] / add_a * c["adder.area_per_bit"]
    c["register.energy_per_bit"] = reg["energy_pj"] / reg["width"] / add_e * c["adder.energy_per_bit"]
    # SRAM: E = k * (word/64) * (C/8KB)^0.5, k by log least squares over the 64-bit reads
    srams = [ref[k] for k in ("sram_8kb_read64", "sram_32kb_read64", "sram_1mb_read64")]
    c["sram.energy_exponent"] = 0.5
    c["sram.energy_k"] = _geo_mean(
        [r["energy_pj"] * (64 / r["word_bits"]) / math.sqrt(r["capacity_bytes"] / (8 * KB)) for r in srams]
    )
    c["sram.area_per_bit"] = lib["sram"]["cell_area_um2"] / lib["sram"]["array_efficiency"]
    return c


def _aladdin_coefficients(ala: dict) -> dict[str, float]:
    """Aladdin's own laws: linear adder, comparator and mux bits, pure product multiplier."""
    comp = ala["component"]
    c: dict[str, float] = {}
    c["adder.offset_bits"] = 0.0
    c["adder.area_per_bit"] = comp["adder"]["area_um2"] / comp["adder"]["width"]
    c["adder.energy_per_bit"] = comp["adder"]["energy_pj"] / comp["adder"]["width"]
    w2 = comp["multiplier"]["width"] ** 2
    c.update({"multiplier.bw_beta": 0.0, "multiplier.bw_gamma": 0.0, "multiplier.array_floor": 0.0,
              "multiplier.booth_alpha": 1.0,
              "multiplier.booth_beta_x": 0.0, "multiplier.booth_beta_y": 0.0, "multiplier.booth_gamma": 0.0})
    c["multiplier.area_alpha"] = comp["multiplier"]["area_um2"] / w2
    c["multiplier.energy_alpha"] = comp["multiplier"]["energy_pj"] / w2
    for name in ("register", "comparator"):
        c[f"{name}.area_per_bit"] = comp[name]["area_um2"] / comp[name]["width"]
        c[f"{name}.energy_per_bit"] = comp[name]["energy_pj"] / comp[name]["width"]
    c["comparator.offset_bits"] = 0.0
    sh = comp["shifter"]
    c["mux2.area_per_bit"] = sh["area_um2"] / (sh["width"] * sh["stages"])
    c["mux2.energy_per_bit"] = sh["energy_pj"] / (sh["width"] * sh["stages"])
    c.update(_structural(gate_laws()))
    # SRAM: no Aladdin SRAM; reuse the Horowitz law scaled from 45 nm to 40 nm (flagged).
    hz = _horowitz_coefficients(load_data("horowitz45"), ala)
    a40, e40, _ = node_factors(40.0)
    c["sram.energy_exponent"] = 0.5
    c["sram.energy_k"] = hz["sram.energy_k"] * e40
    c["sram.area_per_bit"] = hz["sram.area_per_bit"] * a40
    return c


# --------------------------------------------------------------------------------------------
# Technology
# --------------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def dram_types() -> dict[str, float]:
    return {k: float(v["pj_per_bit"]) for k, v in load_data("dram")["type"].items()}


@dataclass(frozen=True)
class Technology:
    """A technology point: library + node + Vdd + DRAM + overrides (immutable, hashable).

    ``node_nm`` accepts 45, '45nm', ...; ``area_factor``/``energy_factor`` (relative to 45 nm)
    define a node that is not in the table.  ``extra_nodes`` adds table entries
    ``((node_nm, area_factor, energy_factor), ...)``.
    """

    library: str = "horowitz45"
    node_nm: float | str = 45
    vdd: float | None = None
    dram_type: str = "HBM2"
    dram_bandwidth_gbps: float | None = None
    f_clk_hz: float | None = None
    area_factor: float | None = None
    energy_factor: float | None = None
    extra_nodes: tuple[tuple[float, float, float], ...] = ()
    overrides: tuple[tuple[str, float], ...] = ()

    def __post_init__(self):
        _library_data(self.library)  # validates
        if (self.area_factor is None) != (self.energy_factor is None):
            raise ValueError("area_factor and energy_factor must be given together (both relative to 45 nm)")
        if self.area_factor is not None:
            if not (self.area_factor > 0 and self.energy_factor > 0):
                raise ValueError(f"area_factor={self.area_factor}, energy_factor={self.energy_factor}: must be > 0")
            if not (isinstance(self.node_nm, (int, float)) and self.node_nm > 0):
                raise ValueError(f"node_nm={self.node_nm!r} must be a positive number of nm")
            object.__setattr__(self, "node_nm", float(self.node_nm))
        else:
            object.__setattr__(self, "node_nm", self._parse_node(self.node_nm))
        types = dram_types()
        if self.dram_type not in types:
            raise ValueError(f"dram_type={self.dram_type!r} is unknown; valid: {sorted(types)}")
        if self.vdd is not None and not self.vdd > 0:
            raise ValueError(f"vdd={self.vdd!r} must be > 0 volts")
        if self.dram_bandwidth_gbps is not None and not self.dram_bandwidth_gbps > 0:
            raise ValueError(f"dram_bandwidth_gbps={self.dram_bandwidth_gbps!r} must be > 0")
        if self.f_clk_hz is not None and not self.f_clk_hz > 0:
            raise ValueError(f"f_clk_hz={self.f_clk_hz!r} must be > 0")
        valid = set(self.base_coefficients) | {"dram.pj_per_bit"}
        for key, val in self.overrides:
            if key not in valid:
                raise ValueError(f"override key {key!r} is unknown; valid keys: {sorted(valid)}")
            if not (isinstance(val, (int, float)) and val >= 0):
                raise ValueError(f"override {key!r}={val!r} must be a non-negative number")

    def _parse_node(self, node) -> float:
        extra = {float(n): (a, e) for n, a, e in self.extra_nodes}
        if extra:
            if isinstance(node, (int, float)) and float(node) in extra:
                return float(node)
        return parse_node(node)

    # ---------------------------------------------------------------- data
    @cached_property
    def library_data(self) -> dict:
        return _library_data(self.library)

    @property
    def library_node_nm(self) -> float:
        return float(self.library_data["library"]["node_nm"])

    @property
    def library_vdd(self) -> float:
        return float(self.library_data["library"]["vdd"])

    @cached_property
    def base_coefficients(self) -> dict[str, float]:
        """Primitive coefficients at the library node (before overrides and node scaling)."""
        ala = load_data("aladdin40")
        if "reference" in self.library_data:
            c = _horowitz_coefficients(self.library_data, ala)
        else:
            c = _aladdin_coefficients(self.library_data)
        c.update(fit_fp_kappas(self.library, c))
        return c

    @cached_property
    def coefficients(self) -> dict[str, float]:
        """Coefficients at the library node with the overrides applied."""
        c = dict(self.base_coefficients)
        c.update({k: float(v) for k, v in self.overrides if k in c})
        return c

    def coef(self, key: str) -> float:
        return self.coefficients[key]

    # ---------------------------------------------------------------- scaling
    @cached_property
    def _scales(self) -> tuple[float, float, tuple[str, ...]]:
        extra = {float(n): (a, e) for n, a, e in self.extra_nodes}
        if self.area_factor is not None:
            a_to, e_to, notes = self.area_factor, self.energy_factor, [
                f"user node {self.node_nm:g} nm: area x{self.area_factor}, energy x{self.energy_factor} vs 45 nm"]
        else:
            a_to, e_to, notes = node_factors(self.node_nm, extra)
        a_from, e_from, _ = node_factors(self.library_node_nm)
        e = e_to / e_from
        if self.vdd is not None:
            e *= (self.vdd / self.library_vdd) ** 2
            notes.append(f"Vdd {self.vdd} V: energy scaled by (V/{self.library_vdd})^2 (CV^2 approximation)")
        return a_to / a_from, e, tuple(notes)

    @property
    def area_scale(self) -> float:
        """Multiply library-node areas by this to get areas at ``node_nm``."""
        return self._scales[0]

    @property
    def energy_scale(self) -> float:
        """Multiply library-node logic/SRAM energies by this (DRAM does not scale)."""
        return self._scales[1]

    @property
    def dram_pj_per_bit(self) -> float:
        for k, v in self.overrides:
            if k == "dram.pj_per_bit":
                return float(v)
        return dram_types()[self.dram_type]

    @property
    def bandwidth_gbps(self) -> float:
        if self.dram_bandwidth_gbps is not None:
            return float(self.dram_bandwidth_gbps)
        return float(load_data("dram")["default_bandwidth_gbps"])

    @property
    def clock_hz(self) -> float:
        return float(self.f_clk_hz or self.library_data["library"].get("f_clk_hz", 1e9))

    # ---------------------------------------------------------------- api
    def with_overrides(self, overrides: Mapping[str, float]) -> "Technology":
        """New Technology with ``{"<component>.<field>": value}`` overrides (unknown keys fail)."""
        merged = dict(self.overrides)
        merged.update(overrides)
        import dataclasses

        return dataclasses.replace(self, overrides=tuple(sorted(merged.items())))

    def at_node(self, node) -> "Technology":
        import dataclasses

        return dataclasses.replace(self, node_nm=node, area_factor=None, energy_factor=None)

    @property
    def warnings(self) -> tuple[str, ...]:
        """What a user should see, not only find in ``assumptions``: a node below the smallest
        table node is extrapolated (area ~ node, energy ~ sqrt(node)), not looked up."""
        return tuple(f"{n}; extrapolated, not in the node table (use a table node, or give measured factors "
                     "with area_factor/energy_factor or a tech file)" for n in self._scales[2] if _BELOW_TABLE in n)

    @property
    def assumptions(self) -> dict[str, Any]:
        return {
            "library": self.library,
            "library_node_nm": self.library_node_nm,
            "node_nm": self.node_nm,
            "vdd": self.vdd or self.library_vdd,
            "f_clk_hz": self.clock_hz,
            "dram": f"{self.dram_type} {self.dram_pj_per_bit} pJ/bit, {self.bandwidth_gbps} GB/s",
            "area_scale": self.area_scale,
            "energy_scale": self.energy_scale,
            "overrides": dict(self.overrides),
            "notes": list(self._scales[2]),
        }


def get_technology(tech: "Technology | str | None" = None, node: Any = None) -> Technology:
    """Coerce None / library name / Technology (+ optional node) into a Technology."""
    if tech is None:
        t = Technology()
    elif isinstance(tech, Technology):
        t = tech
    elif isinstance(tech, str):
        t = Technology(library=tech)
    else:
        raise ValueError(f"tech={tech!r} must be a Technology, a library name {list(LIBRARIES)} or None")
    if node is not None:
        t = t.at_node(node)
    return t


def load_user_file(path: str | Path) -> Technology:
    """A Technology from a user TOML file.

    Keys: ``library`` (name or path), ``node_nm``, ``vdd``, ``dram_type``,
    ``dram_bandwidth_gbps``; ``[node."N"] area=..., energy=...`` tables add nodes;
    ``[overrides]`` maps "<component>.<field>" to values.
    """
    data = _load_toml(str(Path(path).resolve()))
    extra = tuple((float(k), float(v["area"]), float(v["energy"])) for k, v in data.get("node", {}).items())
    kwargs = {k: data[k] for k in ("library", "node_nm", "vdd", "dram_type", "dram_bandwidth_gbps") if k in data}
    t = Technology(extra_nodes=extra, **kwargs)
    if data.get("overrides"):
        t = t.with_overrides(data["overrides"])
    return t


_dram_types = dram_types   # the name hwsim.dse.study imports


def fit_fp_kappas(library: str, c: dict[str, float]) -> dict[str, float]:
    """The four kappa of FPMultiplier / FPAdder: log least squares over the FP16 and FP32 points.

    A unit of n = 1 + e + m bits is charged kappa^r with r = ``laws.kappa_weight(e, m)``: 1 for
    FP16 and wider (the published points), 0 for minifloat elements of at most 8 bits (the
    gate-level structure, checked by synthesis), linear in log2 n between.
    Libraries without FP reference points (aladdin40: multi-cycle FP energies) use kappa = 1.
    """
    lib = _library_data(library)
    if library == "horowitz45" or "reference" in lib:
        ref = lib["reference"]
        out = {}
        for op, raw in (("mult", p_fpmul_raw), ("add", p_fpadd_raw)):
            ra, re_, wt = [], [], []
            for w in ("fp16", "fp32"):
                r = ref[f"{w}_{op}"]
                a, e = raw(c, r["ebits"], r["mbits"])
                ra.append(math.log(r["area_um2"] / a))
                re_.append(math.log(r["energy_pj"] / e))
                wt.append(kappa_weight(r["ebits"], r["mbits"]))
            key = "fp_mul" if op == "mult" else "fp_add"
            # least squares of r * log(kappa) against log(published / raw)
            den = sum(x * x for x in wt)
            out[f"{key}.kappa_area"] = math.exp(sum(x * y for x, y in zip(wt, ra)) / den)
            out[f"{key}.kappa_energy"] = math.exp(sum(x * y for x, y in zip(wt, re_)) / den)
        return out
    return {"fp_mul.kappa_area": 1.0, "fp_mul.kappa_energy": 1.0,
            "fp_add.kappa_area": 1.0, "fp_add.kappa_energy": 1.0}
