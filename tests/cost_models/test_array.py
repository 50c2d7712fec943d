"""Systolic-array closed forms, traffic and bad input (docs/spec/cost_model.md sections 5 and 8)."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hwsim.formats as F
from hwsim.cost_models import SRAMConfig, SystolicArray, Technology
from hwsim.cost_models.array import fold_cycles, mapping
from hwsim.cost_models.fmt import describe

CASES = [  # dataflow, (M, K, N), fmt, default, scalesim_compat
    ("ws", (8, 4, 4), "int8_ch", 18, 18),
    ("ws", (8, 10, 4), "int8_ch", 50, 54),
    ("os", (4, 8, 4), "int8_ch", 14, 14),
    ("is", (6, 4, 5), "int8_ch", 28, 30),
    ("ws", (8, 64, 4), "bfp8", 18, 18),  # L = 16 lanes: K' = 4
]


@pytest.mark.parametrize("df,mkn,fmt,default,compat", CASES)
def test_hand_computed_cycles(df, mkn, fmt, default, compat):
    M, K, N = mkn
    assert SystolicArray(4, 4, df).gemm(M, K, N, fmt, fmt).compute_cycles == default
    assert SystolicArray(4, 4, df, scalesim_compat=True).gemm(M, K, N, fmt, fmt).compute_cycles == compat


def test_hand_computed_sram_reads():
    r = SystolicArray(4, 4, "ws").gemm(8, 10, 4, "int8_ch", "int8_ch")
    assert r.folds == (3, 1)
    assert r.sram_accesses == {"ifmap_reads": 80, "filter_reads": 40, "ofmap_writes": 96, "psum_reads": 64}
    r = SystolicArray(4, 4, "is").gemm(6, 4, 5, "int8_ch", "int8_ch")
    assert r.folds == (1, 2)
    assert r.sram_accesses == {"ifmap_reads": 24, "filter_reads": 40, "ofmap_writes": 30, "psum_reads": 0}
    r = SystolicArray(4, 4, "os").gemm(4, 8, 4, "int8_ch", "int8_ch")
    assert r.sram_accesses == {"ifmap_reads": 32, "filter_reads": 32, "ofmap_writes": 16, "psum_reads": 0}


def _brute_cycles(SR, SC, T, R, C, df, compat):
    kr = 1 if df == 1 else 2
    total = 0
    for i in range(math.ceil(SR / R)):
        r = min(R, SR - i * R)
        for j in range(math.ceil(SC / C)):
            c = min(C, SC - j * C)
            total += (kr * R + C + T - 2) if compat else (kr * r + c + T - 2)
    return total


dims = st.integers(1, 70)


@settings(max_examples=60, deadline=None)
@given(M=dims, K=dims, N=dims, R=st.integers(1, 16), C=st.integers(1, 16), df=st.integers(0, 2),
       compat=st.booleans(), L=st.sampled_from([1, 4, 16]))
def test_closed_form_equals_fold_by_fold_sum(M, K, N, R, C, df, compat, L):
    SR, SC, T, _ = mapping(M, K, N, df, L)
    cyc, _, _ = fold_cycles(SR, SC, T, R, C, df, compat)
    assert int(cyc) == _brute_cycles(int(SR), int(SC), int(T), R, C, df, compat)


@settings(max_examples=60, deadline=None)
@given(M=st.integers(1, 300), K=st.integers(1, 300), N=st.integers(1, 300), R=st.integers(1, 40),
       C=st.integers(1, 40), dR=st.integers(0, 40), dC=st.integers(0, 40), df=st.sampled_from(["ws", "os", "is"]))
def test_bigger_array_never_more_cycles(M, K, N, R, C, dR, dC, df):
    small = SystolicArray(R, C, df).gemm(M, K, N, "int8_ch", "int8_ch")
    big = SystolicArray(R + dR, C + dC, df).gemm(M, K, N, "int8_ch", "int8_ch")
    assert big.compute_cycles <= small.compute_cycles
    assert 0 < small.utilization <= 1 and small.mapping_efficiency <= 1


def test_ws_filter_reads_and_utilisation():
    r = SystolicArray(16, 16, "ws").gemm(100, 300, 70, "int8_ch", "int8_ch")
    assert r.sram_accesses["filter_reads"] == 300 * 70
    assert r.utilization <= 1


@pytest.mark.parametrize("fmt", F.list_formats())
@pytest.mark.parametrize("shape", [(3, 40), (5, 128), (2, 17)])
def test_dram_bytes_equal_formats_packed_bytes(fmt, shape):
    M, K = shape
    N = 6
    rng = np.random.default_rng(0)
    spec = F.get(fmt)
    if spec.is_block and not spec.is_integer and describe(fmt).kind == "block_fp":
        a_fmt, w_fmt = fmt, fmt
    elif describe(fmt).kind == "fp":
        a_fmt = w_fmt = fmt
    else:
        a_fmt = w_fmt = fmt
    try:
        r = SystolicArray(4, 4, "ws").gemm(M, K, N, a_fmt, w_fmt)
    except ValueError:  # int activations are fine; a pair the model has no unit for is skipped
        pytest.skip("no unit")
    qa = F.quantize(rng.standard_normal((M, K)).astype(np.float32), fmt)
    qw = F.quantize(rng.standard_normal((N, K)).astype(np.float32), fmt)  # nn.Linear layout [N, K]
    assert r.dram_bytes["ifmap"] == qa.nbytes  # everything fits on chip: compulsory traffic only
    assert r.dram_bytes["filter"] == qw.nbytes


BPE = {"mxfp8_e4m3": 8.25, "mxint8": 8.25, "mxfp6_e3m2": 6.25, "mxfp4": 4.25, "mxint4": 4.25, "nvfp4": 4.5,
       "mxint4_b16": 4.5, "bfp4": 4.5, "bfp6": 6.5}


@pytest.mark.parametrize("fmt", sorted(BPE))
def test_bpe_table(fmt):
    assert describe(fmt).bits_per_element() == BPE[fmt]


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 64), blocks=st.integers(1, 64),
       fmt=st.sampled_from(["mxint8", "mxint4", "mxfp4", "bfp4", "bfp8", "int4_g128", "int4_g128_asym", "mxfp6_e2m3"]))
def test_traffic_is_elements_times_bpe(rows, blocks, fmt):
    spec = F.get(fmt)
    K = blocks * (spec.block_size if spec.block_size else 1) * 8
    assert describe(fmt).nbytes(rows, K) * 8 == rows * K * spec.bits_per_element((rows, K))


def test_bandwidth_sram_and_node_monotone():
    M, K, N = 256, 2048, 1024
    stalls = [SystolicArray(32, 32, "ws", tech=Technology(dram_bandwidth_gbps=bw)).gemm(M, K, N, "mxint8", "mxint4")
              .stall_cycles for bw in (16, 64, 256, 1024)]
    assert stalls == sorted(stalls, reverse=True) and stalls[0] > stalls[-1]
    dram = [SystolicArray(32, 32, "ws", sram=SRAMConfig(ifmap_bytes=s, filter_bytes=s, ofmap_bytes=s))
            .gemm(M, K, N, "mxint8", "mxint4").dram_total_bytes for s in (16 << 10, 256 << 10, 4 << 20)]
    assert dram == sorted(dram, reverse=True) and dram[0] > dram[-1]
    prev = None
    for node in (65, 45, 28, 16, 7):
        a = SystolicArray(32, 32, "ws", node=node)
        cur = (a.area("mxint8", "mxint4").total_um2, a.gemm(M, K, N, "mxint8", "mxint4").energy_pj)
        if prev:
            assert cur[0] <= prev[0] and cur[1] <= prev[1]
        prev = cur


def test_energy_and_area_breakdowns_sum():
    a = SystolicArray(16, 16, "os")
    r = a.gemm(64, 512, 256, "int8_tok", "int4_g128")
    assert r.energy_pj == pytest.approx(sum(r.energy_breakdown.values()))
    assert r.energy_breakdown["rescale"] > 0 and r.energy_breakdown["act_quant"] > 0
    area = a.area("int8_tok", "int4_g128")
    assert area.total_um2 == pytest.approx(sum(area.breakdown.values()))
    w = a.gemm(64, 512, 256, "fp16", "int4_g128")  # weight-only: dequantized once per weight entering
    assert w.energy_breakdown["dequant"] > 0 and w.pe.startswith("FPMAC")


def test_bad_inputs():
    with pytest.raises(ValueError, match="rows=0"):
        SystolicArray(0, 4)
    with pytest.raises(ValueError, match=r"dataflow='rs'.*\['ws', 'os', 'is'\]"):
        SystolicArray(4, 4, "rs")
    a = SystolicArray(4, 4)
    with pytest.raises(ValueError, match="K=-3"):
        a.gemm(4, -3, 4, "mxint8", "mxint4")
    with pytest.raises(ValueError, match="cannot build.*supported pairs"):
        a.gemm(4, 32, 4, "int8_tok", "mxint4")
    with pytest.raises(ValueError, match="neither divides the other"):
        a.gemm(4, 96, 4, "mxint8", "bfp4_b24")
    with pytest.raises(ValueError, match="a_format and w_format"):
        a.area()


def test_mismatched_block_sizes_use_the_smaller_block():
    """mxint8 (B=32) x mxint4_b16: units over 16 elements, priced as the same-block pair mxint8_b16."""
    a = SystolicArray(4, 4)
    mixed, same = a.pe_config("mxint8", "mxint4_b16"), a.pe_config("mxint8_b16", "mxint4_b16")
    assert mixed.lanes == same.lanes == 16
    assert mixed.pe.area_um2 == pytest.approx(same.pe.area_um2)
    assert mixed.act_group == 32 and any("block sizes differ" in n for n in mixed.notes)
    assert a.gemm(4, 64, 4, "mxint8", "mxint4_b16").macs == 4 * 64 * 4


def test_sweep_matches_scalar():
    arr = SystolicArray(8, 8, "ws")
    df = arr.sweep(64, 256, 128, [(8, 8), (16, 4), (3, 5)], format_pairs=[("mxint8", "mxint4"), ("fp16", "fp16")])
    assert len(df) == 3 * 3 * 2
    for _, row in df.sample(6, random_state=0).iterrows():
        a = SystolicArray(int(row.rows), int(row.cols), row.dataflow)
        r = a.gemm(64, 256, 128, row.a_format, row.w_format)
        assert r.cycles == row.cycles and r.energy_pj == pytest.approx(row.energy_pj)
        assert a.area(row.a_format, row.w_format, k=256).total_um2 == pytest.approx(row.area_um2)
