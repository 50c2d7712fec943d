"""Workload mapping, op counts and the CLI (docs/spec/cost_model.md sections 6 and 8)."""

import pytest

from hwsim.cli import main
from hwsim.cost_models import (
    LinearSpec, LowRank, SystolicArray, cost_model, describe, from_config, from_quantized, hadamard_adds,
    lqer_crossover, lqer_mult_counts,
)


def test_lqer_footprint():
    assert describe("bfp4").nbytes(11008, 4096) == 25_362_432
    assert describe("mxint4_b16").nbytes(11008, 4096) == 25_362_432
    assert describe("bfp8").nbytes(32, 4096) == 139_264  # A: K x k, quantized along K
    assert describe("bfp8").nbytes(11008, 32) == 374_272  # B: k x N


def test_op_count_identities():
    lq, gp = lqer_mult_counts(1, 4096, 11008, 32)
    assert lq - 4096 * 11008 == 483_328
    assert lqer_crossover(4096, 11008, 32) == pytest.approx(93.29, abs=0.01)
    for L in (93, 94):
        lq, gp = lqer_mult_counts(L, 4096, 11008, 32)
        assert (lq < gp) == (L <= 93)
    assert hadamard_adds(11008) == 1_948_416
    assert hadamard_adds(14336) == 516_096
    assert hadamard_adds(4096) == 4096 * 12


def _llama7b_layer(**kw):
    return from_config("llama-2-7b", "bfp4", "bfp8", phase="decode", **kw)


def test_branch_macs_and_shared_quantizer():
    arr = SystolicArray(32, 32, "ws")
    spec = _llama7b_layer(lowrank=LowRank(32, "bfp8", "bfp8"))
    res = cost_model(spec, arr)
    gate = res.per_layer[(res.per_layer.layer == 0) & (res.per_layer.linear == "gate_proj")].iloc[0]
    assert gate.lowrank_macs == 483_328 and gate.macs == 45_088_768
    # one input quantizer for linears that share an input: k_proj costs what q_proj costs minus it
    g_q = arr.gemm(1, 4096, 4096, "bfp8", "bfp4")
    g_k = arr.gemm(1, 4096, 4096, "bfp8", "bfp4", quantize_input=False)
    assert g_q.energy_breakdown["act_quant"] > 0 and g_k.energy_breakdown["act_quant"] == 0
    plain = cost_model(_llama7b_layer(), arr).per_layer
    k_row = plain[(plain.layer == 0) & (plain.linear == "k_proj")].iloc[0]
    q_row = plain[(plain.layer == 0) & (plain.linear == "q_proj")].iloc[0]
    assert k_row.energy_pj < q_row.energy_pj  # same shape (MHA), no second quantizer


def test_separate_vs_shared_placement():
    arr = SystolicArray(32, 32, "ws")
    spec = from_config("smollm2-135m", "bfp4", "bfp8", phase="prefill", seq=64, lowrank=LowRank(32, "bfp8", "bfp8"))
    sep = cost_model(spec, arr, lowrank_placement="separate")
    sh = cost_model(spec, arr, lowrank_placement="shared")
    assert sh.totals["cycles"] > sep.totals["cycles"]
    assert sh.area["total_um2"] < sep.area["total_um2"]
    assert sep.totals["ops_total"] > sep.totals["ops_useful"]


def test_hadamard_transform_costs_time():
    arr = SystolicArray(32, 32, "ws")
    base = cost_model(from_config("smollm2-135m", "bfp4", "bfp8", phase="decode"), arr).totals
    had = cost_model(from_config("smollm2-135m", "bfp4", "bfp8", phase="decode", hadamard_down=True), arr)
    assert had.totals["cycles"] > base["cycles"] and had.totals["ops_useful"] == base["ops_useful"]
    ov = cost_model(from_config("smollm2-135m", "bfp4", "bfp8", phase="decode", hadamard_down=True), arr,
                    overlap_transforms=True)
    assert ov.totals["cycles"] == base["cycles"]
    gemm = cost_model(from_config("smollm2-135m", "bfp4", "bfp8", phase="decode", hadamard_down=True), arr,
                      hadamard_impl="gemm")
    assert gemm.totals["energy_pj"] > had.totals["energy_pj"]


def test_from_transformers_config_and_quantized_description():
    from transformers import LlamaConfig

    cfg = LlamaConfig(num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=100)
    spec = from_config(cfg, "mxint4", "mxint8", seq=16)
    assert spec.layers == 2 and spec.layer_linears[0][1].N == 32 and spec.M == 16

    class Desc:
        config = cfg
        linears = {f"model.layers.{i}.mlp.{n}": {"w_fmt": "mxint4", "x_fmt": "mxint8",
                                                  "lowrank": {"rank": 8, "a_fmt": "mxint8", "b_fmt": "mxint8"} if i else None}
                   for i in range(2) for n in ("gate_proj", "up_proj", "down_proj")}

    q = from_quantized(Desc(), seq=16)
    assert [lin.name for lin in q.layer_linears[1]] == ["gate_proj", "up_proj", "down_proj"]
    assert q.layer_linears[0][0].lowrank is None and q.layer_linears[1][2].lowrank.rank == 8
    assert q.layer_linears[1][1].shares_input_with == "gate_proj"
    res = cost_model(q, SystolicArray(8, 8))
    assert len(res.per_layer) == 6 + 1  # + lm_head
    # weight-only record: high-precision activations are costed as fp16
    wo = from_quantized({"model.layers.0.mlp.up_proj": {"w_fmt": "mxint4", "x_fmt": None}}, cfg)
    assert wo.layer_linears[0][0].x_fmt == "fp16" and not wo.layer_linears[0][0].act_quant
    with pytest.raises(ValueError, match="pre_transform='rotate'"):
        from_quantized({"model.layers.0.mlp.up_proj": {"w_fmt": "mxint4", "pre_transform": "rotate"}}, cfg)


def test_lm_head_is_costed_at_its_format_on_the_positions_that_need_it():
    """lm_head (hidden x vocab, high precision unless quantized): one row per sequence in prefill
    (head_tokens 'last'), every position with 'all', each decode position; it adds MACs, energy
    and weights but never widens the array's PEs."""
    arr = SystolicArray(16, 16)
    K, N = 576, 49152  # SmolLM2-135M hidden, vocab
    costs = {ht: cost_model(from_config("smollm2-135m", "mxint4", "mxint8", seq=64, batch=2, head_tokens=ht), arr)
             for ht in ("none", "last", "all")}
    assert "lm_head" not in set(costs["none"].per_layer.linear)
    for ht, rows in (("last", 2), ("all", 128)):
        head = costs[ht].per_layer[costs[ht].per_layer.linear == "lm_head"].iloc[0]
        assert (head.layer, head.M, head.K, head.N, head.w_fmt, head.macs) == (30, rows, K, N, "fp16", rows * K * N)
        assert costs[ht].totals["macs_useful"] == costs["none"].totals["macs_useful"] + rows * K * N
        assert costs[ht].totals["energy_pj"] > costs["none"].totals["energy_pj"]
        assert costs[ht].totals["weight_bytes"] == costs["none"].totals["weight_bytes"] + 2 * K * N  # fp16
        assert costs[ht].area == costs["none"].area
    decode = cost_model(from_config("smollm2-135m", "mxint4", "mxint8", phase="decode", batch=3,
                                    head_tokens="last"), arr).per_layer
    assert decode[decode.linear == "lm_head"].iloc[0].M == 3
    # a quantized lm_head record gives the head its formats
    recs = {"model.layers.0.mlp.up_proj": {"w_fmt": "mxint4", "x_fmt": "mxint8"},
            "lm_head": {"w_fmt": "mxint4", "x_fmt": "mxint8"}}
    q = from_quantized(recs, "smollm2-135m")
    assert (q.head.w_fmt, q.head.x_fmt, q.head.act_quant, q.not_costed) == ("mxint4", "mxint8", True, ())
    assert from_quantized({"model.layers.0.mlp.up_proj": {"w_fmt": "mxint4"}}, "smollm2-135m").head.w_fmt == "fp16"
    with pytest.raises(ValueError, match="head_tokens='first'.*valid"):
        from_config("smollm2-135m", head_tokens="first")


def test_bad_workload_inputs():
    with pytest.raises(ValueError, match="'q'.*K=0"):
        LinearSpec("q", 0, 4, "mxint4", "mxint8")
    with pytest.raises(ValueError, match="phase"):
        from_config("smollm2-135m", phase="train")
    with pytest.raises(ValueError, match="not a known model"):
        from_config("no-such-model")
    with pytest.raises(ValueError, match="pre_transform"):
        LinearSpec("d", 4, 4, "mxint4", "mxint8", pre_transform="fft")


def test_cli(capsys):
    assert main(["cost", "lqer-table"]) == 0
    out = capsys.readouterr().out
    assert "L2QER MXINT W4A8" in out and "acc_bits = 24" in out
    assert main(["cost", "model", "--model", "smollm2-135m", "--w", "mxint4", "--a", "mxint8", "--seq", "32"]) == 0
    out = capsys.readouterr().out
    assert "down_proj" in out and "totals" in out and "decode" in out and "+ lm_head at fp16" in out
    assert main(["cost", "model", "--seq", "32", "--phase", "decode", "--head", "none"]) == 0
    assert "not costed: lm_head (--head none)" in capsys.readouterr().out
    assert main(["cost", "gemm", "--M", "8", "--K", "64", "--N", "16", "--rows", "4", "--cols", "4"]) == 0
    assert main(["cost", "calibration"]) == 0
    assert "int8 MAC" in capsys.readouterr().out
    assert main(["cost", "gemm", "--M", "8", "--K", "64", "--N", "16", "--dataflow", "zz"]) == 1


@pytest.mark.parametrize("w, a, rank, placement, attention", [
    ("mxint4", "mxint8", 0, "separate", False), ("mxint4_b16", "mxint8", 8, "separate", True),
    ("mxfp4", "mxfp8_e4m3", 8, "shared", False), ("int4_g128", "int8_tok", 0, "separate", True),
    ("mxint4", "fp16", 0, "separate", False)])
def test_component_breakdowns_sum_to_totals(w, a, rank, placement, attention):
    """Area and energy by component add up to the totals, for every unit family and branch placement."""
    from hwsim.cost_models.breakdown import AREA_COMPONENTS, ENERGY_COMPONENTS

    spec = from_config("smollm2-135m", w, a, seq=64, lowrank=rank or None, hadamard_down=True,
                       include_attention=attention)
    res = cost_model(spec, SystolicArray(16, 16), lowrank_placement=placement)
    assert set(res.area_components) == set(AREA_COMPONENTS) and set(res.energy_components) == set(ENERGY_COMPONENTS)
    assert sum(res.area_components.values()) == pytest.approx(res.area["total_um2"], rel=1e-12)
    assert sum(res.energy_components.values()) == pytest.approx(res.totals["energy_pj"], rel=1e-12)
    assert min(res.area_components.values()) >= 0 and res.energy_components["transforms"] > 0
    assert (res.energy_components["lowrank"] > 0) == bool(rank)
    assert res.area_components["multipliers"] > 0 and res.energy_components["dram"] > 0
