"""Area and energy of a design by hardware component (what a stacked-bar chart of a report shows).

The datapath units name their parts (``mult``, ``tree``, ``acc_add``, ``scale_add``, ...; see
``units.py``); :data:`PART_COMPONENT` assigns each part of a processing element to one component,
so a PE's area and energy split exactly into multipliers, adders/accumulators and shared-exponent
logic. Edge units (input quantizers, weight dequantizers, output rescalers) are ``quantizers``;
operand registers ``registers``; SRAM ``buffers``.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

import numpy as np

from .units import PEConfig

if TYPE_CHECKING:
    from .array import SystolicArray

__all__ = ["PART_COMPONENT", "AREA_COMPONENTS", "ENERGY_COMPONENTS", "pe_shares", "area_components",
           "gemm_energy_components"]

#: component of each named part of a processing element (units.py)
PART_COMPONENT = {
    "mult": "multipliers", "sign": "multipliers",
    "tree": "adders_accumulators", "acc_add": "adders_accumulators", "acc_reg": "adders_accumulators",
    "saturate": "adders_accumulators",
    "scale_add": "shared_exponent", "scale_mult": "shared_exponent", "scale_exp": "shared_exponent",
    "scale_apply": "shared_exponent", "block_exp": "shared_exponent", "align": "shared_exponent",
    "lane_align": "shared_exponent", "exp_add": "shared_exponent", "exp_diff": "shared_exponent",
    "max_exp": "shared_exponent",
}
#: area components of a design; ``lowrank`` is the low-rank branch's own array, ``vector_unit`` the
#: fp16 lanes of the low-rank merge and the online transforms
AREA_COMPONENTS = ("multipliers", "adders_accumulators", "shared_exponent", "registers", "quantizers", "buffers",
                   "lowrank", "vector_unit")
#: energy components; ``transforms`` are online Hadamard transforms, ``dram`` off-chip traffic
ENERGY_COMPONENTS = AREA_COMPONENTS[:-1] + ("transforms", "dram")
#: GEMM energy-breakdown keys (array.py) that are not the PE itself
_GEMM_ENERGY_COMPONENT = {"pe_registers": "registers", "sram_ifmap": "buffers", "sram_filter": "buffers",
                          "sram_ofmap": "buffers", "dram": "dram", "act_quant": "quantizers", "dequant": "quantizers",
                          "rescale": "quantizers"}


def pe_shares(cfg: PEConfig) -> tuple[dict[str, float], dict[str, float]]:
    """(area shares, energy shares) of the PE unit's parts by component; each sums to 1."""
    area: dict[str, float] = defaultdict(float)
    energy: dict[str, float] = defaultdict(float)
    compound = cfg.pe.compounds[0][1]
    for name, comp, count in compound.parts():
        if name not in PART_COMPONENT:
            raise KeyError(f"PE part {name!r} of {cfg.pe.name} has no component; add it to PART_COMPONENT")
        area[PART_COMPONENT[name]] += count * comp.area_um2
        energy[PART_COMPONENT[name]] += count * comp.energy_pj
    ta, te = sum(area.values()), sum(energy.values())
    return {k: v / ta for k, v in area.items()}, {k: v / te for k, v in energy.items()}


def area_components(array: "SystolicArray", cfg: PEConfig, k: int | None = None) -> dict[str, float]:
    """Area (um^2) of ``array`` with PEs ``cfg`` by component; sums to ``array.area(...).total_um2``.
    ``array`` may be an ArrayBatch (then every area is an array, one element per array).

    The array's ``overhead`` fraction is spread over the components in proportion (it is defined
    as a fraction of their sum).
    """
    rep = array.area(cfg.a, cfg.w, cfg.acc, k)
    bd = rep.breakdown
    out: dict[str, float] = defaultdict(float)
    units_um2 = array.rows * array.cols * cfg.pe.area_um2
    area_shares, _ = pe_shares(cfg)
    for comp, share in area_shares.items():
        out[comp] += units_um2 * share
    out["registers"] += bd["pe_array"] - units_um2
    for key in ("sram_ifmap", "sram_filter", "sram_ofmap"):
        out["buffers"] += bd[key]
    for key in ("act_quant", "dequant", "rescale"):
        out["quantizers"] += bd[key]
    base = sum(out.values())
    if isinstance(base, np.ndarray):  # an ArrayBatch: one area per array
        scale = np.where(base != 0, rep.total_um2 / np.where(base != 0, base, 1.0), 1.0)
    else:
        scale = rep.total_um2 / base if base else 1.0
    return {c: out.get(c, 0.0) * scale for c in AREA_COMPONENTS}


def gemm_energy_components(cfg: PEConfig, energy_breakdown: dict) -> dict[str, float]:
    """Energy (pJ) of one GEMM (``GemmResult.energy_breakdown``) by component."""
    out: dict[str, float] = defaultdict(float)
    _, energy_shares = pe_shares(cfg)
    for key, pj in energy_breakdown.items():
        if key == "pe":
            for comp, share in energy_shares.items():
                out[comp] += pj * share
        else:
            out[_GEMM_ENERGY_COMPONENT[key]] += pj
    return dict(out)
