"""A realistic synthetic study result: 12 accuracy points x 2 hardware points, one failed point.

Numbers are shaped like a real study (smollm2-135m on austen, fp ppl ~18.6; a 7 nm and a 28 nm
array) but invented: they exercise the report, they are not results.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd

from hwsim.dse.columns import AREA_COMPONENTS, ENERGY_COMPONENTS

FP_PPL = 18.62
FP_BPB = 1.031

#: (recipe, stages, w_fmt, x_fmt, rank, lowrank_fmt, setting, ppl, bits_per_weight)
ACCURACY_POINTS = (
    ("fp", "", "none", "none", 0, "none", "FP32", 18.62, 32.0),
    ("rtn", "rtn", "mxint8", "mxint8", 0, "none", "W8A8 MXINT", 18.71, 8.25),
    ("rtn", "rtn", "mxint4", "mxint8", 0, "none", "W4A8 MXINT", 27.9, 4.25),
    ("rtn", "rtn", "mxint4", "mxint4", 0, "none", "W4A4 MXINT", 96.4, 4.25),
    ("gptq", "gptq", "mxint4", "mxint8", 0, "none", "W4A8 MXINT", 22.3, 4.25),
    ("gptq", "gptq", "mxint3", "mxint8", 0, "none", "W3A8 MXINT", 41.7, 3.25),
    ("l2qer", "rtn+l2qer", "mxint4", "mxint8", 16, "mxint8", "W4A8 MXINT", 21.2, 4.62),
    ("l2qer", "rtn+l2qer", "mxint4", "mxint8", 32, "mxint8", "W4A8 MXINT", 20.4, 4.99),
    ("l2qer", "rtn+l2qer", "mxint4", "mxint8", 64, "mxint8", "W4A8 MXINT", 19.8, 5.73),
    ("qera", "gptq+qera", "mxint4", "mxint8", 32, "mxint8", "W4A8 MXINT", 20.1, 4.99),
    ("qera", "gptq+qera", "mxint3", "mxint8", 32, "mxint8", "W3A8 MXINT", 26.5, 3.99),
    ("rtn", "rtn", "mxfp4", "mxfp8", 0, "none", "W4A8 MXFP", 29.6, 4.25),
)

#: (rows, cols, dataflow, node_nm, library, sram_kib, dram, dram_gbps, clock_mhz, area scale, energy scale)
HARDWARE_POINTS = (
    (32, 32, "ws", 7.0, "horowitz45", 256, "HBM2", 256.0, 1000.0, 1.0, 1.0),
    (16, 16, "os", 28.0, "horowitz45", 128, "LPDDR4", 25.6, 500.0, 4.1, 3.3),
)

_FMT_BITS = {"none": 32, "mxint8": 8, "mxint4": 4, "mxint3": 3, "mxfp8": 8, "mxfp4": 4}


def synthetic_results(failed: int = 1) -> pd.DataFrame:
    """The study's rows (one per design point, the contract's columns); the last ``failed`` fail."""
    rows = []
    for hw in HARDWARE_POINTS:
        for acc in ACCURACY_POINTS:
            rows.append(_row(acc, hw))
    df = pd.DataFrame(rows)
    for i in range(len(df) - failed, len(df)):
        _fail(df, i)
    return df


def study_info(df: pd.DataFrame, *, finished: bool = True, expected: int | None = None) -> dict:
    """The ``hwsim.dse.study_info`` dict for ``df``."""
    return {"name": "w4a8-lowrank", "description": "Low-rank error reconstruction at W4A8 on two arrays",
            "expected_design_points": len(df) if expected is None else expected, "finished": finished,
            "failed_points": int((df["status"] == "failed").sum()), "updated_at": "2025-01-07T12:00:00",
            "study_toml": "[study]\nname = \"w4a8-lowrank\"\n"}


def _row(acc: tuple, hw: tuple) -> dict:
    recipe, stages, w_fmt, x_fmt, rank, lr_fmt, setting, ppl, bpw = acc
    rows_, cols, dataflow, node, library, sram, dram, gbps, clock, a_scale, e_scale = hw
    acc_label = f"{recipe} W={w_fmt} X={x_fmt}" + (f" r={rank}" if rank else "")
    hw_label = f"{rows_}x{cols} {dataflow} {node:g}nm {dram}"
    wb, xb = _FMT_BITS[w_fmt], _FMT_BITS[x_fmt]
    mult = 0.08 * wb * xb / 32 * a_scale * rows_ * cols / 1024
    area = {"multipliers": mult, "adders_accumulators": 0.4 * mult + 0.01 * a_scale,
            "shared_exponent": 0.003 * a_scale if w_fmt.startswith("mx") else 0.0,
            "registers": 0.002 * (wb + xb) * a_scale, "quantizers": 0.004 * a_scale if xb < 32 else 0.0,
            "buffers": 0.0006 * sram * a_scale, "lowrank": 0.0006 * rank * a_scale,
            "vector_unit": 0.01 * a_scale}
    e_mac = 0.9 * wb * xb / 64 * e_scale
    energy = {"multipliers": e_mac, "adders_accumulators": 0.5 * e_mac, "shared_exponent": 0.05 * e_scale,
              "registers": 0.08 * (wb + xb) / 16 * e_scale, "quantizers": 0.06 * e_scale if xb < 32 else 0.0,
              "buffers": 0.7 * e_scale, "lowrank": 0.004 * rank * e_scale, "transforms": 0.0,
              "dram": 0.05 * bpw * e_scale}
    cycles_prefill = int(2.7e8 * max(wb, xb) / 8 / (rows_ * cols / 1024) * (1 + rank / 256))
    weight_mb = 135e6 * bpw / 8 / 1e6
    row = {
        "design_key": _key((acc, hw)), "accuracy_key": _key(acc), "hardware_key": _key(hw), "status": "ok", "error": "",
        "label": f"{acc_label} @ {hw_label}", "acc_label": acc_label, "hw_label": hw_label, "setting": setting,
        "model": "smollm2-135m", "eval_corpus": "austen", "calib_corpus": "austen", "seq_len": 512,
        "n_tokens": 2048, "n_calib": 32, "calib_len": 512, "seed": 0, "recipe": recipe, "stages": stages,
        "w_fmt": w_fmt, "x_fmt": x_fmt, "rank": rank, "lowrank_fmt": lr_fmt, "mode": "fake",
        "rows": rows_, "cols": cols, "dataflow": dataflow, "node_nm": node, "library": library,
        "sram_kib": sram, "dram": dram, "dram_gbps": gbps, "clock_mhz": clock, "acc": "int32",
        "prefill_seq": 512, "decode_context": 512, "batch": 1,
        "ppl": ppl, "bits_per_byte": FP_BPB * np.log(ppl) / np.log(FP_PPL), "fp_ppl": FP_PPL,
        "fp_bits_per_byte": FP_BPB, "bits_per_weight": bpw,
        "layer_err_mean": np.nan if recipe == "fp" else 0.01 * (ppl - FP_PPL + 0.5),
        "layer_err_max": np.nan if recipe == "fp" else 0.04 * (ppl - FP_PPL + 0.5),
        "area_mm2": sum(area.values()), "energy_per_token_uj": sum(energy.values()),
        "decode_energy_per_token_uj": 0.8 * weight_mb * e_scale + 0.3 * e_scale,
        "prefill_latency_ms": cycles_prefill / (clock * 1e3),
        "decode_latency_ms": weight_mb / gbps + cycles_prefill / 512 / (clock * 1e3),
        "prefill_cycles": cycles_prefill, "decode_cycles": cycles_prefill // 512,
        "weight_mb": weight_mb, "kv_cache_mb": 11.8,
        "warnings": json.dumps(["FP8/FP6/FP4 units are extrapolated"] if w_fmt.startswith("mxfp") else []),
        "timings": json.dumps({"accuracy_s": 41.0, "cost_s": 0.3}), "versions": json.dumps({"hwsim": "0.1.0"}),
        "config_json": json.dumps({"recipe": recipe, "w": w_fmt, "x": x_fmt, "rank": rank}),
        "finished_at": "2025-01-07T11:59:00", "wall_s": 41.3,
    }
    row.update({f"area_{c}_mm2": area[c] for c in AREA_COMPONENTS})
    row.update({f"energy_{c}_uj": energy[c] for c in ENERGY_COMPONENTS})
    return row


def _key(obj) -> str:
    return hashlib.sha256(repr(obj).encode()).hexdigest()[:16]


def _fail(df: pd.DataFrame, i: int) -> None:
    metrics = [c for c in df.columns if c.startswith(("area_", "energy_", "ppl", "bits_", "fp_", "layer_err",
                                                        "decode_", "prefill_"))
               and c not in ("prefill_seq", "decode_context")] + ["weight_mb", "kv_cache_mb"]
    df.loc[df.index[i], metrics] = np.nan
    df.loc[df.index[i], ["status", "error"]] = ["failed", "ValueError: mxfp4 weights with mxfp8 activations: "
                                                           "no matching accumulator for acc='int32' (valid: fp32)"]
