"""hwsim.cost_models: analytic area / energy / latency model of systolic-array accelerators.

Components with cited reference points and named scaling laws (``components``) compose into
datapath units sized by the format specs (``units``), units into an R x C systolic array
(``array``), and the GEMMs of a quantized model (``workload``) drive the array; energy is
sum(action count x energy per action). ``fpga`` holds the LUT model of the LQER-paper comparison.
Spec: docs/spec/cost_model.md. Imports hwsim.formats only.
"""

from . import fpga
from .array import DATAFLOWS, ArrayBatch, AreaReport, GemmBatch, GemmResult, SRAMConfig, SystolicArray
from .calibration import calibration_table
from .components import (
    DRAM, SRAM, AdderTree, BarrelShifter, Comparator, FPAdder, FPMultiplier, FPReciprocal, FPToInt, IntAdder,
    IntMultiplier, IntToFP, LeadingZeroCounter, MaxTree, Mux2, Register,
)
from .fmt import FormatInfo, describe
from .tech import Technology, load_user_file, node_factors
from .units import build_pe, unit_table
from .workload import (
    LinearSpec, LowRank, ModelCost, ModelSpec, cost_model, from_config, from_quantized, hadamard_adds,
    lqer_crossover, lqer_mult_counts,
)

__all__ = [
    "SystolicArray", "ArrayBatch", "SRAMConfig", "GemmResult", "GemmBatch", "AreaReport", "DATAFLOWS",
    "calibration_table", "fpga",
    "Technology", "load_user_file", "node_factors", "FormatInfo", "describe", "build_pe", "unit_table",
    "LinearSpec", "LowRank", "ModelSpec", "ModelCost", "cost_model", "from_config", "from_quantized",
    "hadamard_adds", "lqer_mult_counts", "lqer_crossover", "IntAdder", "IntMultiplier", "Register", "Comparator",
    "Mux2", "BarrelShifter", "LeadingZeroCounter", "AdderTree", "MaxTree", "FPMultiplier", "FPAdder", "IntToFP",
    "FPToInt", "FPReciprocal", "SRAM", "DRAM",
]
