"""hwsim.matmul: the bit-exact block-scaled matmul core (docs/spec/matmul.md).

``matmul(a, b, accumulator="fp32", out_format=None, mode="exact", backend="auto", bias=None)``
computes what an MX/BFP/NVFP4/scaled-int dot-product datapath computes, bit for bit, on the numba
reference (numpy), the torch backend (CPU/CUDA) or the Triton GPU path.
"""

from .api import MatmulErrorReport, emulate, error_report, fake_matmul, matmul
from .datapath import DatapathSpec, ExactAcc, FixedAcc, Fp32Acc, OperandFacts, operand_facts, parse_accumulator
from .events import AccEvents
from .operands import OperandCache

__all__ = [
    "matmul", "fake_matmul", "emulate", "error_report", "MatmulErrorReport",
    "DatapathSpec", "Fp32Acc", "FixedAcc", "ExactAcc", "OperandFacts", "operand_facts",
    "parse_accumulator", "AccEvents", "OperandCache",
]
