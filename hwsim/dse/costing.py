"""Cost of a quantized model on one accelerator: the bridge from ``hwsim.quant`` records to
``hwsim.cost_models`` (what is costed is what was evaluated: the model's own ``QLinearRecord``\\ s).

:func:`accelerator` builds the :class:`~hwsim.cost_models.SystolicArray` of a
:class:`~.points.HardwarePoint`; :func:`cost_metrics` costs one prefill pass and one decode step
and returns flat metrics in report units (mm^2, uJ per token, ms, MB). :meth:`ModelCoster.many`
costs many hardware points at once: points that differ only in rows, cols and dataflow form one
:class:`~hwsim.cost_models.ArrayBatch`, costed in one vectorised pass per phase, with metrics
exactly equal to costing each point alone (``tests/dse/test_cost_many.py``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Sequence

import numpy as np

from hwsim.cost_models import ArrayBatch, SystolicArray, Technology, cost_model, from_quantized
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
    ``hw.acc`` is set per linear by :func:`cost_metrics` (integer and block datapaths only; a linear
    evaluated in exact mode with a fixed-point accumulator is costed with that one instead:
    ``hwsim.cost_models.workload._record_acc``)."""
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
    ``coster(hw)`` costs one point; ``coster.many(hws)`` costs a list of points in vectorised
    groups, with the same metrics.
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
        cols, warnings = self._metrics(hw, accelerator(hw))
        return {"cost_warnings": [f"{phase}: {w}" for phase, ws in warnings for w in ws], **cols}

    def many(self, hardware: Sequence[HardwarePoint]) -> list[dict[str, Any] | Exception]:
        """The metrics of every hardware point, in order (each equal to ``self(hw)``).

        Points equal but for rows, cols and dataflow share a technology, SRAM and workload: each
        such group is one :class:`~hwsim.cost_models.ArrayBatch`, costed by one ``cost_model``
        call per phase (a group of one point is costed as ``self(hw)``). A group that fails is
        costed point by point, and a point whose cost raises ValueError or KeyError gets that
        exception in its place in the list.
        """
        groups: dict[HardwarePoint, list[int]] = {}
        for i, hw in enumerate(hardware):
            groups.setdefault(dataclasses.replace(hw, rows=1, cols=1, dataflow="ws"), []).append(i)
        out: list[Any] = [None] * len(hardware)
        for idx in groups.values():
            points = [hardware[i] for i in idx]
            try:  # a group of one: numbers are quicker than arrays of one element
                metrics = self._many(points) if len(points) > 1 else [self._one(points[0])]
            except (ValueError, KeyError):
                metrics = [self._one(hw) for hw in points]
            for i, m in zip(idx, metrics):
                out[i] = m
        return out

    def _one(self, hw: HardwarePoint) -> dict[str, Any] | Exception:
        try:
            return self(hw)
        except (ValueError, KeyError) as exc:
            return exc

    def _many(self, points: list[HardwarePoint]) -> list[dict[str, Any]]:
        """Metrics of points that differ only in rows, cols and dataflow (one vectorised pass)."""
        arrays = accelerator(points[0]).batch([p.rows for p in points], [p.cols for p in points],
                                              [p.dataflow for p in points])
        cols, warnings = self._metrics(points[0], arrays)
        values = {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in cols.items()}
        out = []
        for i in range(len(points)):
            m: dict[str, Any] = {"cost_warnings": [f"{phase}: {w}" for phase, ws in warnings for w in ws[i]]}
            for k, v in values.items():
                m[k] = v[i] if isinstance(cols[k], np.ndarray) else (list(v) if isinstance(v, list) else v)
            out.append(m)
        return out

    def _metrics(self, hw: HardwarePoint, arr: SystolicArray | ArrayBatch) -> tuple[dict[str, Any], list]:
        """(metrics, [(phase, warnings)]) of the workload of ``hw`` on ``arr``: numbers on a
        SystolicArray; on an ArrayBatch, a numpy array (one element per array) for each metric
        that depends on the array, and warnings as one list per array."""
        out: dict[str, Any] = {}
        warnings = []
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
            warnings.append((phase, res.warnings))
        return out, warnings


def cost_metrics(records: Iterable[Any], config: Any, hw: HardwarePoint) -> dict[str, Any]:
    """Prefill (``hw.prefill_seq`` tokens) and decode (one token at ``hw.decode_context``) cost.

    records: ``hwsim.quant.model_records(model)`` (or dicts with the same fields); config: the
    model's transformers config. Returns area_mm2 and area_<component>_mm2, energy_per_token_uj
    and energy_<component>_uj (prefill, per token), decode_energy_per_token_uj,
    prefill/decode latency_ms and cycles, DRAM traffic, weight_mb, kv_cache_mb, warnings.
    For many hardware points, build one :class:`ModelCoster` and call its ``many``.
    """
    return ModelCoster(records, config)(hw)
