"""hwsim.quant: quantize transformers models (docs/spec/algorithms.md).

    from hwsim.quant import quantize_model, get_recipe
    report = quantize_model(model, "l2qer", calib_ids)      # calib_ids: LongTensor [N, T]

Pieces: model adapters (``get_adapter``), calibration statistics (``collect_stats``),
``QLinear``, recipes/presets (``get_recipe``, ``list_recipes``), the pipeline
(``quantize_model``), save/reload (``save_quantized``, ``load_quantized``), exact emulation
(``set_mode(model, "exact", accumulator="fixed:24:8")``, ``acc_events``), and the pure
algorithms (``reconstruct``, ``rtn_quantize``, ``gptq_quantize``).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    # model adapters
    "get_adapter": ".model", "fold_norms": ".model", "LinearGroup": ".model", "ModelAdapter": ".model",
    "supported_model_types": ".model",
    # calibration
    "collect_stats": ".calibrate", "capture_block_inputs": ".calibrate", "StatsCollector": ".calibrate",
    "LayerStats": ".calibrate", "STAT_KINDS": ".calibrate",
    # layers
    "QLinear": ".qlinear", "QLinearRecord": ".qlinear", "LowRankRecord": ".qlinear",
    # recipes and pipeline
    "Recipe": ".config", "LayerConfig": ".config", "get_recipe": ".config", "list_recipes": ".config",
    "validate_recipe": ".config", "with_formats": ".config",
    "quantize_model": ".pipeline", "QuantReport": ".pipeline", "quantize_linear": ".pipeline",
    "model_records": ".pipeline", "quantized_linears": ".pipeline",
    "save_quantized": ".serialize", "load_quantized": ".serialize",
    # exact emulation
    "set_mode": ".exact", "acc_events": ".exact", "acc_events_total": ".exact", "reset_acc_events": ".exact",
}
_ALGO_EXPORTS = ("rtn_quantize", "gptq_quantize", "QuantWarning", "DampingWarning", "output_error")

__all__ = sorted(list(_EXPORTS) + list(_ALGO_EXPORTS) + ["reconstruct"])

# Bound eagerly: the function shares its name with the submodule ``hwsim.quant.reconstruct``,
# and importing the submodule first would otherwise leave the module object under this name.
try:
    from .reconstruct import reconstruct  # noqa: E402
except ImportError:  # pragma: no cover - partial installation; resolved lazily below
    pass


def __getattr__(name: str):
    if name in _EXPORTS:
        mod = importlib.import_module(_EXPORTS[name], __name__)
        value = getattr(mod, name)
    elif name == "reconstruct":
        value = importlib.import_module(".reconstruct", __name__).reconstruct
    elif name in _ALGO_EXPORTS:
        mod = importlib.import_module(".algorithms", __name__)
        value = getattr(mod, name)
    else:
        raise AttributeError(f"module 'hwsim.quant' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return __all__
