"""hwsim.formats: bit-exact number formats (MXINT, MXFP, BFP, NVFP4, minifloats, scaled integers).

Semantics: docs/formats.md. Everything else in hwsim reads widths from these specs.

Layers, each importing only those above it: ``bits`` (fp32 layout, powers of two) and ``spec``
(format dataclasses, names, integer codes) -> ``registry`` (name grammar) and ``numba_kernels`` ->
``codec`` (numpy codec) and ``torch_ops`` (torch codec) -> ``qtensor`` (QTensor) -> ``api``
(validation and dispatch: quantize / dequantize / fake_quant).

    >>> import numpy as np, hwsim.formats as F
    >>> q = F.quantize(np.array([1.0, -0.3, 0.02], np.float32), "mxint8")
    >>> q.dequantize()
    array([ 1.     , -0.296875,  0.015625], dtype=float32)
"""

from .api import block_scales, dequantize, fake_quant, quantize
from .codec import decode_elem, encode_floats
from .qtensor import PackedQTensor, QTensor, pack_bits, unpack_bits
from .registry import ALIASES, GRAMMAR, PRESETS, format_name, get, list_formats
from .spec import (BF16_ELEM, BFP_SCALE, E2M1, E2M3, E3M2, E4M3, E5M2, E8M0, FP16_ELEM, FP32_ELEM,
                   UE4M3, BlockSpec, ExpScale, FloatElem, FloatScale, FormatSpec, FormatSpecError,
                   FormatNameError, IntElem, NonFiniteError, NonFiniteWarning, Rounding, Rule,
                   ScaledIntSpec)

__all__ = [
    "get", "list_formats", "format_name", "quantize", "dequantize", "fake_quant", "block_scales",
    "decode_elem", "encode_floats", "QTensor", "PackedQTensor", "pack_bits", "unpack_bits", "PRESETS", "ALIASES",
    "GRAMMAR", "IntElem", "FloatElem", "ExpScale", "FloatScale", "BlockSpec", "ScaledIntSpec",
    "FormatSpec", "Rounding", "Rule", "FormatSpecError", "FormatNameError", "NonFiniteError",
    "NonFiniteWarning", "E8M0", "BFP_SCALE", "UE4M3", "E4M3", "E5M2", "E3M2", "E2M3", "E2M1",
    "FP16_ELEM", "BF16_ELEM", "FP32_ELEM",
]
