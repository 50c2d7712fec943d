"""The one accumulator grammar (issue 14): ``hwsim.matmul.datapath.parse_accumulator``.

Every form parses to one spec object, ``str(spec)`` is canonical and parses back to the same spec,
aliases of the cost model's old spellings are the same objects, invalid strings name the value and
list the valid forms. The CLIs and study files are checked in tests/cost_models/test_acc_cli.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hwsim.matmul.datapath import (
    ACCUMULATOR_FORMS, CORE_MAX_WIDTH, FLOAT_ACCUMULATORS, WIDTH_RANGE, AccRounding, DatapathSpec, ExactAcc, FixedAcc,
    FloatAcc, Fp32Acc, Overflow, core_accumulator, parse_accumulator,
)

# (string, spec, canonical string)
TABLE = [
    ("fp32", FloatAcc("fp32"), "fp32"),
    ("FP32", Fp32Acc(), "fp32"),
    ("fp16", FloatAcc("fp16"), "fp16"),
    ("bf16", FloatAcc("bf16"), "bf16"),
    ("exact", ExactAcc(), "exact"),
    ("fixed:24:8", FixedAcc(24, 8), "fixed:24:8"),
    ("fixed:24:8:saturate:rne", FixedAcc(24, 8, "saturate", "rne"), "fixed:24:8:rne"),
    ("fixed:24:8:rne:saturate", FixedAcc(24, 8, "saturate", "rne"), "fixed:24:8:rne"),
    ("fixed:24:8:truncate", FixedAcc(24, 8), "fixed:24:8"),
    ("fixed:32:16:wrap", FixedAcc(32, 16, "wrap"), "int32"),
    ("fixed:12:14:wrap:rne", FixedAcc(12, 14, "wrap", "rne"), "fixed:12:14:wrap:rne"),
    ("fixed:24:-3", FixedAcc(24, -3), "fixed:24:-3"),
    ("fixed:24", FixedAcc(24, 12), "fixed:24:12"),
    ("fixed:24:wrap", FixedAcc(24, 12, "wrap"), "int24"),
    ("fixed:24:rne", FixedAcc(24, 12, "saturate", "rne"), "fixed:24:12:rne"),
    ("fixed:99:8", FixedAcc(99, 8), "fixed:99:8"),
    # the cost model's spellings: a W-bit integer register without saturation logic
    ("int32", FixedAcc(32, 16, "wrap", "truncate"), "int32"),
    (" INT24 ", FixedAcc(24, 12, "wrap"), "int24"),
    ("int 24", FixedAcc(24, 12, "wrap"), "int24"),
    ("window(32)", FixedAcc(32, 16, "wrap"), "int32"),
    ("window( 40 )", FixedAcc(40, 20, "wrap"), "int40"),
    ("24", FixedAcc(24, 12, "wrap"), "int24"),
    (24, FixedAcc(24, 12, "wrap"), "int24"),
    ("int128", FixedAcc(128, 64, "wrap"), "int128"),
    ("int2", FixedAcc(2, 1, "wrap"), "int2"),
]


@pytest.mark.parametrize("text,spec,canonical", TABLE, ids=[repr(t[0]) for t in TABLE])
def test_table_parse_and_canonical(text, spec, canonical):
    got = parse_accumulator(text)
    assert got == spec and type(got) is type(spec)
    assert str(got) == got.name == canonical
    assert parse_accumulator(canonical) == got                     # parse(str(spec)) == spec
    assert parse_accumulator(got) is got                           # a spec is returned as is
    assert hash(parse_accumulator(canonical)) == hash(got)


def test_spec_fields_and_codes():
    a = parse_accumulator("fixed:24:8:wrap:rne")
    assert (a.width, a.frac_bits, a.kind) == (24, 8, "fixed")
    assert a.overflow is Overflow.WRAP and a.rounding is AccRounding.RNE and not a.saturates
    assert a.overflow == "wrap" and a.rounding == "rne"             # str enums, as the kernels compare them
    assert (Overflow.SATURATE.code, Overflow.WRAP.code) == (0, 1)
    assert (AccRounding.TRUNCATE.code, AccRounding.RNE.code) == (0, 1)
    assert FixedAcc(24, 8, "WRAP", "RNE") == a                       # strings are coerced to the enums
    assert FixedAcc(24) == FixedAcc(24, 12) == parse_accumulator("fixed:24")
    f16 = parse_accumulator("fp16")
    assert (f16.kind, f16.width, f16.exponent_bits, f16.significand_bits, f16.man_bits) == ("float", 16, 5, 11, 10)
    assert (FloatAcc("bf16").exponent_bits, FloatAcc("bf16").man_bits, FloatAcc().width) == (8, 7, 32)
    assert ExactAcc().kind == "exact"
    import hwsim.formats as F

    assert parse_accumulator(F.get("fp16")) == f16                  # an hwsim.formats float element spec


_fixed = st.builds(FixedAcc, st.integers(*WIDTH_RANGE), st.one_of(st.none(), st.integers(-64, 192)),
                   st.sampled_from(list(Overflow)), st.sampled_from(list(AccRounding)))
_specs = st.one_of(_fixed, st.sampled_from(FLOAT_ACCUMULATORS).map(FloatAcc), st.just(ExactAcc()))


@settings(max_examples=300, deadline=None)
@given(_specs)
def test_round_trip_property(spec):
    """parse -> spec -> string -> parse over every valid spec."""
    text = str(spec)
    assert parse_accumulator(text) == spec
    assert str(parse_accumulator(text)) == text
    assert parse_accumulator(text.upper()) == spec


@st.composite
def _fixed_strings(draw):
    """A random spelling of the fixed form (option order, defaults spelled out or not, case), and its spec."""
    w = draw(st.integers(*WIDTH_RANGE))
    f = draw(st.one_of(st.none(), st.integers(-40, 140)))
    ovf = draw(st.sampled_from([None, "saturate", "wrap"]))
    rnd = draw(st.sampled_from([None, "truncate", "rne"]))
    opts = [o for o in (ovf, rnd) if o is not None]
    if draw(st.booleans()):
        opts.reverse()
    text = ":".join(["fixed", str(w)] + ([str(f)] if f is not None else []) + opts)
    if draw(st.booleans()):
        text = text.upper()
    return text, FixedAcc(w, f, ovf or "saturate", rnd or "truncate")


@settings(max_examples=300, deadline=None)
@given(_fixed_strings())
def test_every_spelling_of_the_fixed_form(case):
    text, spec = case
    assert parse_accumulator(text) == spec
    assert parse_accumulator(str(spec)) == spec


@settings(max_examples=100, deadline=None)
@given(st.integers(*WIDTH_RANGE))
def test_integer_register_aliases_are_one_spec(w):
    spec = FixedAcc(w, w // 2, "wrap", "truncate")
    for text in (f"int{w}", f"window({w})", str(w), w, f"fixed:{w}:wrap", f"fixed:{w}:{w // 2}:wrap:truncate"):
        assert parse_accumulator(text) == spec, text
    assert str(spec) == f"int{w}"


BAD = [
    ("bogus", ""), ("int", ""), ("window(x)", ""), ("window(3", ""), ("3)", ""), ("fixed", "needs a width"),
    ("fixed:", "needs a width"), ("fixed:x", "not an integer"), ("fixed:24:x", "unknown option 'x'"),
    ("fixed:24:8:clamp", "unknown option 'clamp'"), ("fixed:24:wrap:8", "F comes right after W"),
    ("fixed:24:8:wrap:saturate", "overflow given twice"), ("fixed:24:8:rne:truncate", "rounding given twice"),
    ("fixed:24:8:", "empty option"), ("int1", "outside 2..128"), ("int200", "outside 2..128"),
    ("window(1000)", "outside 2..128"), ("-1", "outside 2..128"), ("fixed:129:8", "outside 2..128"),
    ("fp8", ""), ("float", ""), ("", ""), (1, "outside 2..128"), (True, "a bool is not"), (3.5, "a float is not"),
    (None, "a NoneType is not"),
]


@pytest.mark.parametrize("text,why", BAD, ids=[repr(b[0]) for b in BAD])
def test_invalid_strings_name_the_value_and_the_valid_forms(text, why):
    with pytest.raises(ValueError) as err:
        parse_accumulator(text)
    msg = str(err.value)
    assert msg.startswith(f"accumulator={text!r} is invalid") and why in msg
    assert msg.endswith(f"valid: {ACCUMULATOR_FORMS}")
    for form in ("'fp32'", "'exact'", "'fixed:W[:F][:saturate|:wrap][:truncate|:rne]'", "'int<W>'", "'window(<W>)'"):
        assert form in msg


@pytest.mark.parametrize("bad,match", [(lambda: FixedAcc(200), "width=200"), (lambda: FixedAcc(24, 1.5), "frac_bits"),
                                       (lambda: FixedAcc(24, 8, "clamp"), "overflow='clamp'"),
                                       (lambda: FixedAcc(24, 8, "wrap", "rna"), "rounding='rna'"),
                                       (lambda: FloatAcc("fp8"), "format='fp8'")])
def test_invalid_spec_objects(bad, match):
    with pytest.raises(ValueError, match=match):
        bad()


def test_core_accumulator_refuses_what_the_exact_core_cannot_run():
    assert core_accumulator("int24") == FixedAcc(24, 12, "wrap")
    assert core_accumulator(f"fixed:{CORE_MAX_WIDTH}:30") == FixedAcc(CORE_MAX_WIDTH, 30)
    with pytest.raises(ValueError, match=r"accumulator='int64'.*2\.\.62"):
        core_accumulator("int64")
    for f in ("fp16", "bf16"):
        with pytest.raises(ValueError, match=rf"accumulator='{f}'.*fp32 only"):
            core_accumulator(f)
    with pytest.raises(ValueError, match="is invalid"):
        core_accumulator("bogus")


def test_datapath_spec_takes_the_grammar():
    d = DatapathSpec("mxint8", "mxint4", "window(24)")
    assert d.accumulator == FixedAcc(24, 12, "wrap") and d.name == "mxint8xmxint4/int24->fp32"
    assert DatapathSpec("mxint8", "mxint4", "fixed:24:12:wrap") == d


def test_aliases_run_the_core_bit_for_bit():
    """``int24`` is ``fixed:24:12:wrap`` in the exact core too (and ``24`` is ``int24``)."""
    import hwsim.formats as F
    from hwsim.matmul import matmul

    rng = np.random.default_rng(3)
    a = F.quantize((rng.standard_normal((4, 128)) * 30).astype(np.float32), "mxint8")
    b = F.quantize(rng.standard_normal((5, 128)).astype(np.float32), "mxint4").T
    ref = matmul(a, b, accumulator=FixedAcc(24, 12, "wrap"))
    for text in ("int24", "window(24)", "24", 24, "fixed:24:wrap"):
        assert np.array_equal(matmul(a, b, accumulator=text), ref, equal_nan=True), text
    assert not np.array_equal(matmul(a, b, accumulator="fixed:12:6"), matmul(a, b, accumulator="int12"))
