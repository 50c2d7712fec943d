"""Quantization algorithms of ``hwsim.quant`` as pure functions on one weight matrix, each file also
registering its pipeline stage (``hwsim.quant.stages``).

Transforms: ``fold_norms``. Rounding (weight -> dequantized weight, codes via ``hwsim.formats``):
:func:`rtn_quantize`, :func:`gptq_quantize`, TesseraQ (:func:`tesseraq_block`, block by block). Reconstruction (W, W̃, statistics -> low-rank A, B):
:func:`lqer`, :func:`l2qer`, :func:`qera_approx`, :func:`qera_exact`; the dispatcher is
``hwsim.quant.reconstruct.reconstruct``. Spec: docs/spec/algorithms.md §4.1–4.4.
A new algorithm is one more module here, imported below so that its stage registers.
"""

from . import awq as _awq  # noqa: F401  (registers the stage)
from . import fold_norms as _fold_norms  # noqa: F401  (registers the stage)
from . import ostquant as _ostquant  # noqa: F401  (registers the stage)
from .common import DampingWarning, QuantWarning, output_error
from .gptq import GPTQInfo, gptq_quantize, gptq_quantize_many
from .lowrank import Reconstruction, ReconstructInfo
from .lqer import l2qer, lqer
from .qera import qera_approx, qera_exact
from .rtn import rtn_quantize
from .tesseraq import SCHEDULES, SoftQuantizer, TesseraQOptions, exact_quantile, llmc_bake
from .tesseraq_block import tesseraq_block

__all__ = [
    "DampingWarning", "GPTQInfo", "QuantWarning", "ReconstructInfo", "Reconstruction",
    "gptq_quantize", "gptq_quantize_many", "l2qer", "lqer", "output_error", "qera_approx", "qera_exact", "rtn_quantize",
    "SCHEDULES", "SoftQuantizer", "TesseraQOptions", "exact_quantile", "llmc_bake", "tesseraq_block",
]
