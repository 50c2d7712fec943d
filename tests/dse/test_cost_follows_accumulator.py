"""Cost follows the accumulator the accuracy was measured with (issue 14).

A linear evaluated in exact mode with a fixed-point accumulator is costed with that accumulator,
before the hardware point's ``acc``; the hardware ``acc`` still sizes records without one (fake
mode, or the exact core's fp32 on an integer datapath, which the cost model cannot price); a
float-activation linear keeps its FP accumulator.
"""

import dataclasses
import warnings

import pytest
import torch

from hwsim.cost_models import SystolicArray, cost_model, from_quantized
from hwsim.dse import HardwarePoint, cost_metrics
from hwsim.quant import get_recipe, model_records, quantize_model, set_mode, with_formats
from hwsim.quant.testing import tiny_model

CALIB = torch.randint(0, 128, (4, 32), generator=torch.Generator().manual_seed(0))
ARR = SystolicArray(8, 8, "ws")


def _model(w="mxint4", a="mxint8"):
    m = tiny_model("llama")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_model(m, with_formats(get_recipe("rtn"), w=w, a=a), CALIB, progress=False)
    return m


@pytest.fixture(scope="module")
def mx():
    return _model()


@pytest.fixture(scope="module")
def ch():
    return _model("int4_ch", "int8_tok")


def _exact(recs, accumulator):
    return [dataclasses.replace(r, mode="exact", accumulator=accumulator) for r in recs]


def _totals(recs, config, acc=None, phase="prefill"):
    res = cost_model(from_quantized(recs, config=config, phase=phase, seq=32, acc=acc), ARR)
    return res.area["total_um2"], res.totals["energy_pj"]


def _accs(recs, config, acc=None):
    spec = from_quantized(recs, config=config, seq=32, acc=acc)
    return [lin.acc for layer in spec.layer_linears for lin in layer]


@pytest.mark.parametrize("fixture", ["mx", "ch"])
def test_a_narrow_measured_accumulator_costs_less_than_int32(fixture, request):
    m = request.getfixturevalue(fixture)
    recs = model_records(m)
    base = _totals(recs, m.config)
    # fake mode and exact fp32 (not priceable on an integer datapath): today's int32 numbers
    assert _totals(_exact(recs, "fp32"), m.config) == base
    assert _totals(recs, m.config, acc="int32") == base
    assert _totals(_exact(recs, "exact"), m.config) == base
    narrow = _totals(_exact(recs, "fixed:20:10"), m.config)
    assert narrow[0] < base[0] and narrow[1] < base[1]
    # the measured accumulator takes precedence over the hardware point's
    assert _totals(_exact(recs, "fixed:20:10"), m.config, acc="int32") == narrow
    assert _totals(_exact(recs, "fixed:20:10"), m.config, acc="int24") == narrow
    assert set(_accs(_exact(recs, "fixed:20:10"), m.config, acc="int32")) == {"fixed:20:10"}
    # fixed:32 saturating = int32 plus the clamp mux: at least as expensive
    sat32 = _totals(_exact(recs, "fixed:32:16"), m.config)
    assert sat32[0] > base[0] and sat32[1] >= base[1]
    # wider never costs less, in both phases
    for phase in ("prefill", "decode"):
        prev = None
        for w in (20, 24, 32, 40):
            cur = _totals(_exact(recs, f"fixed:{w}:{w // 2}"), m.config, phase=phase)
            if prev is not None:
                assert cur[0] >= prev[0] and cur[1] >= prev[1]
            prev = cur


def test_the_hardware_acc_applies_to_records_without_one(mx):
    recs = model_records(mx)
    assert _accs(recs, mx.config, acc="int24") == ["int24"] * 14
    assert _accs(_exact(recs, "fp32"), mx.config, acc="int24") == ["int24"] * 14
    # a mix: the exact-mode linears take theirs, the others the hardware's
    mixed = [dataclasses.replace(r, mode="exact", accumulator="fixed:20:10") if r.name.endswith("down_proj") else r
             for r in recs]
    accs = _accs(mixed, mx.config, acc="int24")
    assert accs.count("fixed:20:10") == 2 and accs.count("int24") == 12
    # an explicit record ``acc`` (a cost-model field) comes first
    as_dicts = [{**dataclasses.asdict(r), "acc": "int28"} for r in _exact(recs, "fixed:20:10")]
    assert set(_accs(as_dicts, mx.config, acc="int24")) == {"int28"}


def test_stored_dict_records_are_read_the_same(mx):
    recs = _exact(model_records(mx), "fixed:24:12")
    assert _totals([dataclasses.asdict(r) for r in recs], mx.config) == _totals(recs, mx.config)


def test_a_float_activation_linear_keeps_its_fp_accumulator():
    m = _model("int4_ch", "none")  # weight-only: fp16 activations on an FP datapath
    recs = model_records(m)
    base = _totals(recs, m.config)
    assert _accs(_exact(recs, "fixed:20:10"), m.config) == [None] * 14
    assert _totals(_exact(recs, "fixed:20:10"), m.config) == base
    assert _totals(_exact(recs, "fp32"), m.config) == base


def test_a_measured_accumulator_the_cost_model_refuses_is_an_error(mx):
    # mxint4 x mxint8 blocks of 32 have a 17-bit exact segment sum: a 16-bit register cannot hold it
    with pytest.raises(ValueError, match="fixed:16:8"):
        _totals(_exact(model_records(mx), "fixed:16:8"), mx.config)


def test_the_study_coster_follows_the_records(mx):
    hw = HardwarePoint(rows=8, cols=8, prefill_seq=32, decode_context=32, acc="int32")
    recs = model_records(mx)
    base = cost_metrics(recs, mx.config, hw)
    narrow = cost_metrics(_exact(recs, "fixed:20:10"), mx.config, hw)
    assert narrow["area_mm2"] < base["area_mm2"]
    assert narrow["energy_per_token_uj"] < base["energy_per_token_uj"]
    assert narrow["decode_energy_per_token_uj"] < base["decode_energy_per_token_uj"]


def test_set_mode_records_carry_what_is_costed(mx):
    import copy

    m = copy.deepcopy(mx)
    set_mode(m, "exact", accumulator="fixed:20:10:saturate")
    accs = _accs(model_records(m), m.config, acc="int32")
    assert set(accs) == {"fixed:20:10"}


def test_hwsim_quantize_refuses_an_unpriceable_accumulator_before_any_work(capsys):
    from hwsim.cli import main

    argv = ["quantize", "--model", "smollm2-135m", "--recipe", "rtn", "--w", "mxint4", "--a", "mxint8",
            "--mode", "exact", "--accumulator", "fixed:16:8"]
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert "--accumulator 'fixed:16:8'" in err and "17-bit exact segment sum" in err and "--no-cost" in err


def test_hwsim_quantize_accepts_what_the_cost_model_prices():
    from hwsim.cli.quant_cmd import _check_costed_accumulator, build_recipe

    for w, a, acc in (("mxint4", "mxint8", "fixed:20:4"), ("int4_ch", "int8_tok", "fixed:16:8"),
                      ("mxint4", "mxint8", "fp32"), ("mxint4", "mxint8", "exact")):
        _check_costed_accumulator(build_recipe("rtn", w=w, a=a, mode="exact", accumulator=acc))
