"""Cost inputs that cannot exist are rejected; extrapolation is visible (issue 15)."""

import pytest

from hwsim.cost_models import SystolicArray, Technology, build_pe, cost_model, fpga, from_config
from hwsim.cost_models.fmt import HIGH_PRECISION_FORMAT, describe
from hwsim.cost_models.tech import node_table
from hwsim.cost_models.units import accumulator
from hwsim.cost_models.workload import LinearSpec, LowRank
from hwsim.matmul.datapath import FixedAcc, FloatAcc


@pytest.mark.parametrize("acc,spec", [("24", FixedAcc(24, 12, "wrap")), (" INT24 ", FixedAcc(24, 12, "wrap")),
                                      ("window(32)", FixedAcc(32, 16, "wrap")), (24, FixedAcc(24, 12, "wrap")),
                                      ("fp32", FloatAcc("fp32")), ("fixed:24:8:rne", FixedAcc(24, 8, "saturate", "rne"))])
def test_accumulator_grammar(acc, spec):
    """The cost model parses accumulators with hwsim.matmul's one grammar (tests/matmul/test_acc_grammar.py)."""
    assert accumulator(acc) == spec


@pytest.mark.parametrize("acc,match", [("-1", "width -1 is outside 2..128"), ("window(1000)", "outside 2..128"),
                                       ("window(x)", "is invalid; valid: 'fp32'"),
                                       ("int", "is invalid"), ("bogus", "is invalid"),
                                       (1, "2..128"), (True, "valid"), ("exact", "no hardware to cost")])
def test_bad_accumulators(acc, match):
    with pytest.raises(ValueError, match=match):
        accumulator(acc)


@pytest.mark.parametrize("a,w,acc,need", [
    ("mxint8", "mxint4", 3, 17), ("mxint8", "mxint4", "window(16)", 17), ("mxint8", "mxint8", "int20", 21),
    ("int8_tok", "int8_ch", 15, 16), ("mxfp4", "mxfp4", "window(2)", 8)])
def test_accumulator_narrower_than_a_partial_result_is_rejected(a, w, acc, need):
    with pytest.raises(ValueError, match=rf"narrower than the {need}-bit .* valid: a width of {need}\.\.128"):
        build_pe(a, w, acc)
    build_pe(a, w, need)  # the narrowest valid one
    with pytest.raises(ValueError, match="narrower"):
        SystolicArray(4, 4, acc=acc).gemm(8, 64, 8, a, w)


def test_none_means_not_quantized():
    assert describe("none") == describe(HIGH_PRECISION_FORMAT) == describe("NONE")
    spec = from_config("smollm2-135m", "mxint4", "none", phase="decode", seq=16)
    res = cost_model(spec, SystolicArray(8, 8))
    assert res.totals["energy_pj"] > 0
    assert build_pe("none", "mxint4").dequant is not None  # weight-only: fp16 activations


def test_rank_above_min_in_out_is_rejected():
    with pytest.raises(ValueError, match=r"rank=65 is above min\(in, out\) = min\(64, 128\) of linear 'q'; "
                                         r"valid: 1\.\.64"):
        LinearSpec("q", 64, 128, "mxint4", "mxint8", lowrank=LowRank(65))
    LinearSpec("q", 64, 128, "mxint4", "mxint8", lowrank=LowRank(64))
    with pytest.raises(ValueError, match="rank=100000"):
        from_config("smollm2-135m", lowrank=100000)


def test_node_below_the_table_warns():
    lo = min(node_table())
    assert Technology(node_nm=lo).warnings == ()
    t = Technology(node_nm="1nm")
    assert len(t.warnings) == 1 and "below the table" in t.warnings[0] and "extrapolated" in t.warnings[0]
    assert Technology(node_nm=28).warnings == ()  # interpolated between table nodes: a note, no warning


@pytest.mark.parametrize("bits", [0, 15, 65, 1000, "32", 32.0])
def test_fpga_acc_bits_range(bits):
    with pytest.raises(ValueError, match=r"acc_bits=.* valid: 16\.\.64"):
        fpga.inventories(bits)


def test_fpga_acc_bits_range_ends_are_valid_and_the_cli_help_says_so():
    from hwsim.cli.cost_cmd import _ACC_BITS_HELP

    lo, hi = fpga.ACC_BITS_RANGE
    assert fpga.headline(lo) > 0 and fpga.headline(hi) > 0
    assert f"{lo}..{hi}" in _ACC_BITS_HELP
