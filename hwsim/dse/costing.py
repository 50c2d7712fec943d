"""Cost of a quantized model on one accelerator: the bridge from ``hwsim.quant`` records to
``hwsim.cost_models`` (what is costed is what was evaluated: the model's own ``QLinearRecord``\\ s).

:func:`accelerator` builds the :class:`~hwsim.cost_models.SystolicArray` of a
:class:`~.points.HardwarePoint`; :func:`cost_metrics` costs one prefill pass and one decode step
and returns flat metrics in report units (mm^2, uJ per token, ms, MB).
"""

from __future__ import annotations

from typing import Any, Iterable

from hwsim.cost_models import SystolicArray, Technology, cost_model, from_quantized
from hwsim.cost_models.array import SRAMConfig
from hwsim.cost_models.breakdown import AREA_COMPONENTS, ENERGY_COMPONENTS

from .points import HardwarePoint

__all__ = ["accelerator", "cost_metrics", "ModelCoster", "PHASES"]

#: a prefill pass of ``prefill_seq`` tokens, then one decode step at ``decode_context``
PHASES = ("prefill", "decode")

UM2_PER_MM2 = 1e6
PJ_PER_UJ = 1e6
BYTES_PER_MB = 1e6
BYTES_PER_KIB = 1024
#: the ofmap buffer is half the ifmap/filter size, as in the cost model's default SRAMConfig
OFMAP_FRACTION = 0.5


def accelerator(hw: HardwarePoint) -> SystolicArray:
    """The systolic array of a hardware point (technology, SRAM, DRAM, clock); the accumulator
    ``hw.acc`` is set per linear by :func:`cost_metrics` (integer and block datapaths only)."""
    tech = Technology(library=hw.library, node_nm=hw.node_nm, dram_type=hw.dram, dram_bandwidth_gbps=hw.dram_gbps,
                      f_clk_hz=None if hw.clock_mhz is None else hw.clock_mhz * 1e6)
    kib = hw.sram_kib * BYTES_PER_KIB
    sram = SRAMConfig(ifmap_bytes=kib, filter_bytes=kib, ofmap_bytes=max(1, int(kib * OFMAP_FRACTION)))
    return SystolicArray(hw.rows, hw.cols, hw.dataflow, tech=tech, sram=sram)


def _acc(hw: HardwarePoint) -> Any:
    return int(hw.acc) if isinstance(hw.acc, str) and hw.acc.isdigit() else hw.acc


class ModelCoster:
    """Costs one quantized model on many hardware points.

    The ModelSpec of each (phase, sequence, batch, context, accumulator) is built from the
    records once and reused: adding hardware points to a finished study costs no re-parsing.
    """

    def __init__(self, records: Iterable[Any], config: Any):
        self.records = list(records)
        self.config = config
        self._specs: dict = {}

    def _spec(self, phase: str, hw: HardwarePoint):
        key = (phase, hw.prefill_seq, hw.batch, hw.decode_context, _acc(hw))
        if key not in self._specs:
            self._specs[key] = from_quantized(self.records, self.config, phase=phase, seq=hw.prefill_seq,
                                              batch=hw.batch, context=hw.decode_context, include_attention=True,
                                              acc=_acc(hw))
        return self._specs[key]

    def __call__(self, hw: HardwarePoint) -> dict[str, Any]:
        """The metrics of :func:`cost_metrics` on ``hw``."""
        arr = accelerator(hw)
        out: dict[str, Any] = {"cost_warnings": []}
        for phase in PHASES:
            spec = self._spec(phase, hw)
            res = cost_model(spec, arr)
            t = res.totals
            tokens = t["tokens"]
            out[f"{phase}_latency_ms"] = t["latency_s"] * 1e3
            out[f"{phase}_cycles"] = t["cycles"]
            out[f"{phase}_dram_mb"] = t["dram_bytes"] / BYTES_PER_MB
            if phase == "prefill":
                out["area_mm2"] = res.area["total_um2"] / UM2_PER_MM2
                out.update({f"area_{c}_mm2": res.area_components[c] / UM2_PER_MM2 for c in AREA_COMPONENTS})
                out["energy_per_token_uj"] = t["energy_pj"] / tokens / PJ_PER_UJ
                out.update({f"energy_{c}_uj": res.energy_components[c] / tokens / PJ_PER_UJ
                            for c in ENERGY_COMPONENTS})
                out["weight_mb"] = t["weight_bytes"] / BYTES_PER_MB
                out["kv_cache_mb"] = t["kv_cache_bytes_per_seq"] * hw.batch / BYTES_PER_MB
                out["tops_per_mm2"] = t["TOPS_per_mm2"]
                out["not_costed"] = list(spec.not_costed)
            else:
                out["decode_energy_per_token_uj"] = t["energy_pj"] / tokens / PJ_PER_UJ
            out["cost_warnings"].extend(f"{phase}: {w}" for w in res.warnings)
        return out


def cost_metrics(records: Iterable[Any], config: Any, hw: HardwarePoint) -> dict[str, Any]:
    """Prefill (``hw.prefill_seq`` tokens) and decode (one token at ``hw.decode_context``) cost.

    records: ``hwsim.quant.model_records(model)`` (or dicts with the same fields); config: the
    model's transformers config. Returns area_mm2 and area_<component>_mm2, energy_per_token_uj
    and energy_<component>_uj (prefill, per token), decode_energy_per_token_uj,
    prefill/decode latency_ms and cycles, DRAM traffic, weight_mb, kv_cache_mb, warnings.
    For many hardware points, build one :class:`ModelCoster` and call it per point.
    """
    return ModelCoster(records, config)(hw)
