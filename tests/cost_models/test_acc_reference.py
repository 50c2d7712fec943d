"""The accumulator grammar moved to ``hwsim.matmul.datapath`` (issue 14) without moving a cost number.

``data/acc_reference.json`` holds the cost model's numbers computed at commit 3c8d0fc, before the
accumulator refactor, by :func:`compute` below (``python tests/cost_models/test_acc_reference.py``
rewrites it; do that only for a deliberate change of the model). The accumulators are spelled
as they were then (``None``, ``int32``, ``window(32)``, ``24``, ``fp16``, ...); today they are
aliases of the one grammar and must give bit-identical energies, cycles and areas.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REFERENCE = Path(__file__).with_name("data") / "acc_reference.json"

#: (activation, weight, accumulators as spelled before the grammar moved)
GEMM_CASES = [
    ("mxint8", "mxint4", [None, "int32", "window(32)", 24, "int24", "window(40)", "int48", "17"]),
    ("int8_tok", "int4_ch", [None, "int32", 24, "int20", "int64"]),
    ("int8_tok", "int4_g128", [None, "int32"]),
    ("mxfp4", "mxfp4", [None, "window(32)", 40]),
    ("mxfp8_e4m3", "mxint8", [None]),
    ("nvfp4", "nvfp4", [None, "int36"]),
    ("bfp8", "bfp4", [None, "int28"]),
    ("fp16", "fp16", [None, "fp32", "fp16", "bf16"]),
    ("bf16", "int4_g128", [None, "fp32"]),
    ("fp8_e4m3", "fp8_e4m3", [None, "fp16"]),
]
#: (model, weight, activation, phase, accumulator)
MODEL_CASES = [
    ("smollm2-135m", "mxint4", "mxint8", "decode", None),
    ("smollm2-135m", "mxint4", "mxint8", "prefill", 24),
    ("smollm2-135m", "int4_ch", "int8_tok", "prefill", "int24"),
    ("smollm2-135m", "int4_ch", "int8_tok", "decode", None),
    ("smollm2-135m", "mxint4", "none", "decode", None),
    ("smollm2-135m", "mxfp4", "mxfp8_e4m3", "prefill", "window(36)"),
]


def compute() -> dict:
    from hwsim.cost_models import SystolicArray, Technology, cost_model, from_config

    out: dict = {"gemm": [], "model": []}
    for r, c, df, node in [(32, 32, "ws", 45), (16, 64, "os", 7)]:
        arr = SystolicArray(r, c, df, **({"tech": Technology(node_nm=7)} if node == 7 else {}))
        for a, w, accs in GEMM_CASES:
            for acc in accs:
                g = arr.gemm(64, 1024, 96, a, w, acc=acc)
                ar = arr.area(a, w, acc)
                out["gemm"].append({"arr": [r, c, df, node], "a": a, "w": w, "acc": acc, "energy_pj": g.energy_pj,
                                    "cycles": g.cycles, "breakdown": dict(g.energy_breakdown),
                                    "area_um2": ar.total_um2, "area_breakdown": dict(ar.breakdown)})
    arr = SystolicArray(32, 32, "ws")
    for m, w, x, ph, acc in MODEL_CASES:
        res = cost_model(from_config(m, w, x, phase=ph, seq=64, acc=acc), arr)
        out["model"].append({"model": m, "w": w, "x": x, "phase": ph, "acc": acc,
                             "totals": {k: v for k, v in res.totals.items() if isinstance(v, (int, float))},
                             "area": {k: v for k, v in res.area.items() if isinstance(v, (int, float))}})
    return out


def test_cost_numbers_equal_the_reference_bit_for_bit():
    ref = json.loads(REFERENCE.read_text())
    now = json.loads(json.dumps(compute()))  # the same float -> text -> float path as the file
    assert len(now["gemm"]) == len(ref["gemm"]) and len(now["model"]) == len(ref["model"])
    for got, want in zip(now["gemm"] + now["model"], ref["gemm"] + ref["model"]):
        assert got == want, (want.get("a"), want.get("w"), want.get("model"), want["acc"])


if __name__ == "__main__":  # pragma: no cover - regenerates the reference
    REFERENCE.write_text(json.dumps(compute(), separators=(",", ":"), sort_keys=True) + "\n")
    print(f"wrote {REFERENCE}", file=sys.stderr)
