"""One accumulator grammar for the exact core and the cost model (issue 14).

Every CLI (``hwsim matmul --accumulator``, ``hwsim cost gemm/model --acc``) and the study file's
hardware ``acc`` key take the same strings (``hwsim.matmul.datapath.parse_accumulator``); what a
consumer cannot build is refused by name (fp16/bf16 and W > 62 in the exact core, ``exact`` in the
cost model). The cost model sizes the accumulator from the spec: a wider one never costs less,
saturation costs a clamp mux, F and the rounding mode cost nothing. The int32 / default numbers
are those of the code before the grammar moved (tests/cost_models/test_acc_reference.py).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hwsim.cost_models import SystolicArray, build_pe, cost_model, from_config
from hwsim.dse.study import Study, StudyError
from hwsim.matmul.datapath import FixedAcc, FloatAcc, parse_accumulator


def _matmul(s):
    return ["matmul", "--shape", "2,64,3", "--accumulator", s]


def _gemm(s, fp):
    return ["cost", "gemm", "--M", "8", "--K", "64", "--N", "8", "--acc", s] + (["--a", "fp16", "--w", "fp16"] if fp else [])


def _model(s, fp):
    return ["cost", "model", "--phase", "decode", "--seq", "16", "--acc", s] + (["--a", "none", "--w", "none"] if fp else [])


def _units(s, fp):
    return ["cost", "units", "--acc", s] + (["--a", "fp16", "--w", "fp16"] if fp else ["--a", "mxint8", "--w", "mxint4"])


# (string, what the exact core says: None = runs, else a piece of its refusal)
VALID = [
    ("int32", None), ("int24", None), (" INT24 ", None), ("24", None), ("window(32)", None), ("fixed:24", None),
    ("fixed:24:8", None), ("fixed:24:8:saturate:rne", None), ("fixed:32:16:wrap", None),
    ("fixed:40:20:wrap:rne", None), ("int64", "2..62"),
    ("fp32", None), ("fp16", "fp32 only"), ("bf16", "fp32 only"), ("exact", None),
]


@pytest.mark.parametrize("text,core", VALID, ids=[v[0] for v in VALID])
def test_every_cli_and_the_study_file_take_the_same_strings(run_cli, text, core):
    spec = parse_accumulator(text)
    fp = isinstance(spec, FloatAcc)
    # hwsim matmul --accumulator
    rc, out, err = run_cli(_matmul(text))
    if core is None:
        assert rc == 0, err
        assert f"/{spec.name}->" in out
    else:
        assert rc == 1 and "Traceback" not in err and core in err and repr(spec.name) in err
    # hwsim cost gemm / model --acc, and the study file's hardware acc
    for argv in (_gemm(text, fp), _model(text, fp), _units(text, fp)):
        rc, out, err = run_cli(argv)
        if spec.kind == "exact":
            assert rc == 1 and "no hardware to cost" in err and "Traceback" not in err, argv
        else:
            assert rc == 0, (argv, err)
    if core is None:  # exact mode's accumulator in a study file (hwsim.quant's key), stored canonical too
        pts = Study.from_dict({"study": {"name": "t"}, "accuracy": {"recipes": "rtn", "w": "mxint4", "x": "mxint8",
                                                                    "modes": ["exact"], "accumulators": [text]}})
        assert [p.accumulator for p in pts.accuracy_points()] == [str(spec)]
    study = {"study": {"name": "t"}, "accuracy": {"recipes": "rtn"}, "hardware": {"acc": text}}
    if spec.kind == "exact":
        with pytest.raises(StudyError, match="no hardware to cost"):
            Study.from_dict(study)
    else:
        (hw,) = Study.from_dict(study).hardware_points()
        assert hw.acc == str(spec) and parse_accumulator(hw.acc) == spec


def test_the_cost_cli_names_the_spec_it_costed(run_cli):
    rc, out, _ = run_cli(_gemm("fixed:24:8:saturate:rne", False))
    assert rc == 0 and "BlockDotInt(8x4,B32,fixed:24:8:rne)" in out
    rc, out, _ = run_cli(_gemm("window(24)", False))
    assert rc == 0 and "BlockDotInt(8x4,B32,int24)" in out


INVALID = ["bogus", "fixed:x", "int", "window(3", "fixed:24:8:wrap:saturate", "int200", "fixed:24:8:clamp"]


@pytest.mark.parametrize("text", INVALID)
def test_invalid_strings_fail_the_same_way_everywhere(run_cli, text):
    for argv in (_matmul(text), _gemm(text, False), _model(text, False), _units(text, False)):
        rc, out, err = run_cli(argv)
        assert rc in (1, 2), argv
        assert err.startswith("hwsim: error: ") and "Traceback" not in err and err.count("\n") == 1, err
        assert repr(text) in err and "'fixed:W[:F][:saturate|:wrap][:truncate|:rne]'" in err and "'int<W>'" in err
    with pytest.raises(StudyError) as info:
        Study.from_dict({"study": {"name": "t"}, "accuracy": {"recipes": "rtn"}, "hardware": {"acc": text}})
    (problem,) = info.value.problems
    assert problem.startswith("hardware.acc") and repr(text) in problem and "'fixed:W[:F]" in problem


def test_model_acc_sizes_the_linears_of_its_kind():
    """``from_config(acc=)``: a fixed-point accumulator sizes the integer/block linears (the fp16 head and
    attention keep fp32), a float one the FP linears; one that fits no linear is refused."""
    arr = SystolicArray(32, 32, "ws")
    spec = from_config("smollm2-135m", "mxint4", "mxint8", phase="decode", seq=16, acc="int24")
    assert {lin.acc for layer in spec.layer_linears for lin in layer} == {"int24"} and spec.head.acc is None
    a = cost_model(spec, arr).totals["energy_pj"]
    b = cost_model(from_config("smollm2-135m", "mxint4", "mxint8", phase="decode", seq=16, acc="fixed:24:8"),
                   arr).totals["energy_pj"]
    assert b > a  # the saturating accumulator pays its clamp mux
    fp = from_config("smollm2-135m", "none", "none", phase="decode", seq=16, acc="fp16")
    assert {lin.acc for layer in fp.layer_linears for lin in layer} == {"fp16"}
    with pytest.raises(ValueError, match="fits no linear"):
        from_config("smollm2-135m", "mxint4", "mxint8", phase="decode", seq=16, acc="fp32")
    with pytest.raises(ValueError, match="fits no linear"):
        from_config("smollm2-135m", "none", "none", phase="decode", seq=16, acc="int32")


# ------------------------------------------------------------------------------------------------
# the cost model sizes the accumulator from the spec
# ------------------------------------------------------------------------------------------------

#: (activation, weight, narrowest fixed accumulator)
FIXED_PAIRS = [("mxint8", "mxint4", 17), ("mxint8", "mxint8", 21), ("int8_tok", "int4_ch", 12),
               ("int8_tok", "int4_g128", 12), ("mxfp4", "mxfp4", 8), ("nvfp4", "nvfp4", 8), ("bfp8", "bfp4", 16),
               ("mxfp8_e4m3", "mxint8", 32)]
_ARR = SystolicArray(16, 16, "ws")


def _cost(a, w, acc):
    g = _ARR.gemm(16, 256, 32, a, w, acc=acc)
    return g.energy_pj, _ARR.area(a, w, acc).total_um2


@settings(max_examples=60, deadline=None)
@given(pair=st.sampled_from(FIXED_PAIRS), extra=st.integers(0, 60), dw=st.integers(0, 24),
       ovf=st.sampled_from(["saturate", "wrap"]), ovf2=st.sampled_from(["saturate", "wrap"]))
def test_a_wider_fixed_accumulator_never_costs_less(pair, extra, dw, ovf, ovf2):
    a, w, need = pair
    lo = FixedAcc(min(need + extra, 128), None, ovf)
    hi = FixedAcc(min(need + extra + dw, 128), None, "saturate" if ovf == "saturate" else ovf2)
    (e_lo, a_lo), (e_hi, a_hi) = _cost(a, w, lo), _cost(a, w, hi)
    assert e_lo <= e_hi and a_lo <= a_hi
    if hi.width > lo.width:
        assert e_lo < e_hi and a_lo < a_hi


@pytest.mark.parametrize("a,w,need", FIXED_PAIRS)
def test_saturation_costs_a_clamp_mux_and_f_and_rounding_cost_nothing(a, w, need):
    W = max(need, 24)
    wrap, sat = _cost(a, w, f"int{W}"), _cost(a, w, f"fixed:{W}")
    assert sat[0] > wrap[0] and sat[1] > wrap[1]
    parts = dict((n, k) for n, _, k in build_pe(a, w, f"fixed:{W}").pe.compounds[0][1].parts())
    assert parts.get("saturate") == 1 and "saturate" not in dict(
        (n, k) for n, _, k in build_pe(a, w, f"int{W}").pe.compounds[0][1].parts())
    for other in (f"fixed:{W}:3", f"fixed:{W}:{W}:rne", f"fixed:{W}:-5:rne"):
        assert _cost(a, w, other) == sat, other
    assert _cost(a, w, f"fixed:{W}:{W // 2}:wrap:rne") == wrap


@pytest.mark.parametrize("a,w", [("fp16", "fp16"), ("fp8_e4m3", "fp8_e4m3"), ("bf16", "int4_g128"), ("bf16", "mxint4")])
def test_a_wider_float_accumulator_never_costs_less(a, w):
    f16, b16, f32 = (_cost(a, w, f) for f in ("fp16", "bf16", "fp32"))
    for narrow in (f16, b16):
        assert narrow[0] < f32[0] and narrow[1] < f32[1]
    assert _cost(a, w, None) == f32  # fp32 is the FP default


def test_default_is_the_int32_register():
    """No accumulator = int32 = window(32) = fixed:32:16:wrap, for integer and block units alike."""
    for a, w, _ in FIXED_PAIRS:
        ref = _cost(a, w, None)
        for s in ("int32", "window(32)", "32", 32, "fixed:32:16:wrap", FixedAcc(32, 16, "wrap")):
            assert _cost(a, w, s) == ref, (a, w, s)
        assert build_pe(a, w).acc == FixedAcc(32, 16, "wrap")
