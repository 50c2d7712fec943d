"""`hwsim formats list` and `hwsim formats show NAME` through hwsim.cli.main (stdout captured)."""

import re

import pytest

import hwsim.formats as F
from hwsim.cli import main


def _run(capsys, *argv):
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_formats_list(capsys):
    rc, out, _ = _run(capsys, "formats", "list")
    assert rc == 0
    for name in F.list_formats():
        assert re.search(rf"(?m)^\s*\S*\s*{re.escape(name)}\b", out) or f" {name} " in f" {out} ", name
        bpe = F.get(name).bits_per_element()
        line = next(l for l in out.splitlines() if re.search(rf"(^|\s){re.escape(name)}(\s|$)", l))
        nums = [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?(?:e[+-]?\d+)?", line)]
        assert any(abs(v - bpe) < 1e-3 for v in nums), f"bits per element {bpe} missing in: {line!r}"


@pytest.mark.parametrize("name,expect", [
    ("mxint8", ["1.984375", "8.25", "32"]),
    ("mxfp8_e4m3", ["448", "8.25", "NaN"]),
    ("fp8_e5m2", ["57344", "inf"]),
    ("mxfp4", ["mxfp4_e2m1", "6", "4.25"]),
    ("bfp4", ["0.875", "4.5", "16"]),
    ("int4_g128_asym", ["4.15625", "128"]),
    ("nvfp4", ["4.5", "16"]),
])
def test_formats_show(capsys, name, expect):
    rc, out, _ = _run(capsys, "formats", "show", name)
    assert rc == 0
    assert F.get(name).name in out
    low = out.lower()
    for e in expect:
        assert e.lower() in low, f"{e!r} missing from `hwsim formats show {name}`:\n{out}"
    # grid max and min (smallest step / min normal) are shown
    assert "max" in low and ("min" in low or "step" in low)


def test_formats_show_bad_name(capsys):
    rc, out, err = _run(capsys, "formats", "show", "mxint9")
    assert rc != 0
    assert "mxint9" in err and "mxint8" in err


@pytest.mark.parametrize("name", ["int4_g128_asym", "int8_ch_asym", "int4_g128", "int8_ch_hr"])
def test_divisor_is_the_codecs(capsys, name):
    """`formats show` prints the divisor the codec uses (issue 15: asymmetric showed 7, divided by 15)."""
    import numpy as np

    spec = F.get(name)
    x = np.linspace(-3.0, 5.0, 256, dtype=np.float32).reshape(2, 128)
    q = F.quantize(x, spec, axis=-1)
    scale = q.scales.reshape(-1).view(np.float16).astype(np.float32)
    rng = (x.max(axis=1) - np.minimum(x.min(axis=1), 0)) if not spec.symmetric else np.abs(x).max(axis=1)
    expect = (rng.astype(np.float32) / np.float32(spec.divisor_value)).astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(scale, expect)
    rc, out, _ = _run(capsys, "formats", "show", name)
    assert rc == 0
    assert f"divisor {spec.divisor_value:g} (" in out
    assert spec.divisor_value == ((2 ** spec.bits - 1) if not spec.symmetric else
                                  (2 ** (spec.bits - 1) - 1) if spec.divisor == "max" else (2 ** spec.bits - 1) / 2)
