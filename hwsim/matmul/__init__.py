"""hwsim.matmul: the bit-exact block-scaled matmul core (docs/spec/matmul.md).

``matmul(a, b, accumulator="fp32", out_format=None, mode="exact", backend="auto", bias=None)``
computes what an MX/BFP/NVFP4/scaled-int dot-product datapath computes, bit for bit, on the numba
reference or the tiled numba kernel (numpy), the torch backend (CPU/CUDA) or the Triton GPU path.

The specs (``datapath``: accumulators, ``DatapathSpec``) import no kernel: ``hwsim.cost_models``
reads them without loading numba. The kernels' names are imported on first use.
"""

from .datapath import (
    ACCUMULATOR_FORMS, DatapathSpec, ExactAcc, FixedAcc, FloatAcc, Fp32Acc, OperandFacts, core_accumulator,
    operand_facts, parse_accumulator,
)

_LAZY = {"matmul": "api", "fake_matmul": "api", "emulate": "api", "error_report": "api",
         "MatmulErrorReport": "api", "AccEvents": "events", "OperandCache": "operands"}

__all__ = [
    "matmul", "fake_matmul", "emulate", "error_report", "MatmulErrorReport",
    "DatapathSpec", "FloatAcc", "Fp32Acc", "FixedAcc", "ExactAcc", "OperandFacts", "operand_facts",
    "parse_accumulator", "core_accumulator", "ACCUMULATOR_FORMS", "AccEvents", "OperandCache",
]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
