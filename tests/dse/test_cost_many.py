"""ModelCoster.many: hardware points grouped into ArrayBatches (one vectorised cost_model call per
group and phase) give exactly the metrics of costing each point alone, as stored by the runner."""

from __future__ import annotations

import itertools
import json
import sqlite3

import pytest

from hwsim.dse import HardwarePoint, Study
from hwsim.dse import runner as R
from hwsim.dse.costing import ModelCoster
from hwsim.dse.store import _dumps

#: a two-layer LLaMA (the tiny test model's shape) as a plain config dict
CONFIG = {"hidden_size": 64, "intermediate_size": 192, "num_hidden_layers": 2, "num_attention_heads": 4,
          "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 128}
SHAPES = {"q_proj": (64, 64), "k_proj": (64, 32), "v_proj": (64, 32), "o_proj": (64, 64), "gate_proj": (64, 192),
          "up_proj": (64, 192), "down_proj": (192, 64)}
INPUT = {"q_proj": "attn_in", "k_proj": "attn_in", "v_proj": "attn_in", "gate_proj": "mlp_in", "up_proj": "mlp_in"}


def records(w, x, *, lowrank=None, hadamard_down=False, layer_w=None, lm_head=False) -> list[dict]:
    """Records as the runner stores them (QLinearRecord fields); ``layer_w``: {layer: (w, x)}."""
    out = []
    for li in range(CONFIG["num_hidden_layers"]):
        lw, lx = (layer_w or {}).get(li, (w, x))
        for name, (k, n) in SHAPES.items():
            had = hadamard_down and name == "down_proj"
            out.append({"name": f"model.layers.{li}.{'self_attn' if name[0] in 'qkvo' else 'mlp'}.{name}",
                        "in_features": k, "out_features": n, "w_fmt": lw, "x_fmt": lx, "input_key": INPUT.get(name),
                        "pre_transform": "hadamard" if had else "none", "pre_transform_size": k if had else None,
                        "lowrank": lowrank})
    if lm_head:
        out.append({"name": "lm_head", "in_features": 64, "out_features": 128, "w_fmt": w, "x_fmt": x})
    return out


MODELS = {
    "w4a8": records("mxint4", "mxint8"),
    "weight-only": records("mxint3", None, lm_head=True),
    "lowrank+hadamard": records("mxint4_b16", "mxint8", hadamard_down=True,
                                lowrank={"rank": 8, "a_fmt": "mxint8", "b_fmt": "mxint8", "xa_fmt": None,
                                         "xab_fmt": "mxint8"}),
    # int8 x int8 and MXINT8 x MXINT8 layers: which PE sizes the array depends on the array's shape
    "mixed-layers": records("mxint8", "mxint8", layer_w={0: ("int8", "int8")}),
}
#: hardware settings that are not vectorised (each one its own ArrayBatch)
GROUPS = [
    {},
    {"node_nm": 45.0},
    {"library": "aladdin40", "node_nm": 28.0, "sram_kib": 8, "dram": "LPDDR4", "dram_gbps": 5.0},
    {"clock_mhz": 500.0, "acc": "int24", "prefill_seq": 32, "decode_context": 2048, "batch": 2},
]
GRID = list(itertools.product((1, 3, 16, 40), (1, 5, 32, 128), ("ws", "os", "is")))


def hardware_points() -> list[HardwarePoint]:
    return [HardwarePoint(rows=r, cols=c, dataflow=d, **g) for g in GROUPS for r, c, d in GRID]


def as_json(metrics: dict) -> str:
    """Exact comparison: float reprs and int/float types must match, as they would in the database."""
    return json.dumps(metrics, sort_keys=True)


@pytest.mark.parametrize("model", list(MODELS))
def test_many_equals_each_point_alone(model):
    hws = hardware_points()
    coster = ModelCoster(MODELS[model], CONFIG)
    many = coster.many(hws)
    assert len(many) == len(hws)
    warned = 0
    for hw, m in zip(hws, many):
        one = coster(hw)
        assert as_json(m) == as_json(one), hw.label
        warned += bool(one["cost_warnings"])
    if model == "w4a8":  # the grid holds bandwidth-bound points and others
        assert 0 < warned < len(hws)
    if model == "weight-only":
        # the quantized lm_head is costed at its record's formats; each point gets its own list
        assert many[0]["not_costed"] == [] and many[0]["not_costed"] is not many[1]["not_costed"]


def test_many_keeps_the_order_of_interleaved_groups():
    hws = hardware_points()
    hws = hws[::2] + hws[1::2][::-1]  # groups interleaved, shapes out of order
    coster = ModelCoster(MODELS["w4a8"], CONFIG)
    assert [as_json(m) for m in coster.many(hws)] == [as_json(coster(hw)) for hw in hws]


def test_a_failing_point_fails_alone():
    coster = ModelCoster(MODELS["w4a8"], CONFIG)
    good = [HardwarePoint(rows=r, cols=8) for r in (4, 8)]
    bad = HardwarePoint(rows=0, cols=8)  # same group as the good points
    out = coster.many([good[0], bad, good[1]])
    with pytest.raises(ValueError) as info:
        coster(bad)
    assert isinstance(out[1], ValueError) and str(out[1]) == str(info.value)
    assert [as_json(out[0]), as_json(out[2])] == [as_json(coster(h)) for h in good]


def test_runner_stores_the_per_point_metrics(tmp_path, monkeypatch):
    """A study (and hardware points added to it later, costed from the stored records) stores, for
    every design point, the metrics of costing that point alone."""
    recs = MODELS["lowrank+hadamard"]
    canned = {"status": "ok", "metrics": {"ppl": 30.0, "bits_per_byte": 1.2, "fp_ppl": 25.0}, "records": recs,
              "model_config": CONFIG, "timings": {}, "warnings": [], "versions": {}, "error": "", "traceback": "",
              "wall_s": 0.0}
    monkeypatch.setattr(R, "evaluate_accuracy", lambda point, **kw: dict(canned))  # no model work
    base = {"study": {"name": "many", "db": str(tmp_path / "many.db")},
            "protocol": {"model": "smollm2-135m", "n_tokens": 256, "seq_len": 128},
            "accuracy": {"recipes": ["rtn"], "w": ["mxint4"], "x": ["mxint8"]},
            "hardware": {"rows": [4, 16], "cols": [8, 32], "dataflow": ["ws", "os", "is"], "node_nm": [7, 45]}}
    Study.from_dict(base).run(progress=False)
    grown = dict(base, hardware={**base["hardware"], "rows": [4, 16, 33], "sram_kib": [64, 256]})
    study = Study.from_dict(grown)
    summary = study.run(progress=False)
    assert summary["recosted"] == 1 and summary["design"] == len(study.hardware_points()) == 72
    con = sqlite3.connect(tmp_path / "many.db")
    stored = dict(con.execute("SELECT hardware_key, metrics_json FROM design").fetchall())
    con.close()
    coster = ModelCoster(recs, CONFIG)
    for hw in study.hardware_points():  # byte-identical rows
        assert stored[hw.key] == _dumps(coster(hw)), hw.label
