"""F.block_scales: the scale codes of F.quantize for MX/BFP formats without encoding the elements
(GPTQ's FixedGrid reads only the scales of the unquantized weight; the sweep writes every code)."""

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import hwsim.formats as F
from fmt_helpers import all_names, with_block

BLOCK_NAMES = [n for n in all_names() if F.get(n).is_block and not F.get(n).is_nvfp4]
#: a few block sizes beside each name's own (tails shorter than a block included by the shapes)
EXTRA_BLOCKS = [with_block("mxint4", 16), with_block("mxfp4", 8), with_block("bfp8", 64)]
PROFILE = settings(max_examples=25, deadline=None, derandomize=True,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(autouse=True, scope="module")
def _one_numba_thread():
    import numba

    n0 = numba.get_num_threads()
    numba.set_num_threads(1)
    yield
    numba.set_num_threads(n0)


def _values():
    """fp32 values over the whole finite range: subnormals, zeros of both signs, the largest."""
    return st.one_of(
        st.floats(width=32, allow_nan=False, allow_infinity=False, allow_subnormal=True),
        st.builds(lambda m, k: float(np.float32(m * 2.0 ** k)), st.integers(-255, 255), st.integers(-149, 100)),
        st.sampled_from([0.0, -0.0, 2.0 ** -149, -(2.0 ** -126), 3.4028235e38, 1.0, 448.0, 6.0]),
    )


def _quantize_scales(x, name, axis):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return F.quantize(x, name, axis=axis).scales


def test_block_names_cover_every_kind():
    """The parametrisation below is not empty: MXINT, MXFP and BFP presets, RCEIL and FTZ variants."""
    specs = [F.get(n) for n in BLOCK_NAMES]
    assert any(s.name.startswith("mxint") for s in specs) and any(s.name.startswith("bfp") for s in specs)
    assert any(s.name.startswith("mxfp") for s in specs)
    assert any(s.rule is F.Rule.RCEIL for s in specs), "no RCEIL block format in the registry"
    assert any(s.input_ftz for s in specs), "no flush-to-zero block format in the registry"


@pytest.mark.parametrize("name", BLOCK_NAMES + EXTRA_BLOCKS)
@PROFILE
@given(data=st.data())
def test_equals_quantize_scales(name, data):
    rows = data.draw(st.integers(1, 3))
    cols = data.draw(st.integers(1, 80))
    x = data.draw(arrays(np.float32, (rows, cols), elements=_values()))
    axis = data.draw(st.sampled_from([-1, 0]))
    got = F.block_scales(x, name, axis=axis)
    want = _quantize_scales(x, name, axis)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("name", ["mxint4", "mxfp8_e4m3", "bfp8"])
def test_large_weight_and_3d_axis(name):
    """A weight-sized input (many rows, a tail) and a middle block axis of a 3-D input."""
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((257, 200)) * np.exp2(rng.integers(-20, 20, (257, 1)))).astype(np.float32)
    np.testing.assert_array_equal(F.block_scales(w, name), _quantize_scales(w, name, -1))
    x = rng.standard_normal((3, 70, 5)).astype(np.float64)
    np.testing.assert_array_equal(F.block_scales(x, name, axis=1), _quantize_scales(x, name, 1))


@pytest.mark.parametrize("name", BLOCK_NAMES)
def test_non_finite_blocks(name):
    """A NaN/Inf block: the NaN scale code where the scale has one, else the same error as quantize."""
    x = np.ones((2, 64), np.float32)
    x[1, 3] = np.nan
    x[0, 40] = np.inf
    spec = F.get(name)
    if spec.scale.nan_code is None:
        with pytest.raises(F.NonFiniteError, match="flat index"):
            F.block_scales(x, name)
        with pytest.raises(F.NonFiniteError):
            _quantize_scales(x, name, -1)
    else:
        np.testing.assert_array_equal(F.block_scales(x, name), _quantize_scales(x, name, -1))


@pytest.mark.parametrize("fmt,x,match", [
    ("int4_g128", np.ones((2, 128), np.float32), "MX/BFP block format"),
    ("nvfp4", np.ones((2, 32), np.float32), "MX/BFP block format"),
    ("mxint4", np.ones((2, 32), np.int32), "dtype"),
    ("mxint4", np.ones((0, 32), np.float32), "empty input"),
    ("mxint4", np.ones((2, 32), np.float32), None),  # axis checked below
])
def test_bad_input(fmt, x, match):
    if match is None:
        with pytest.raises(ValueError, match="axis=2"):
            F.block_scales(x, fmt, axis=2)
        return
    with pytest.raises(ValueError, match=match):
        F.block_scales(x, fmt)


def test_torch_input_is_refused():
    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError, match="numpy array"):
        F.block_scales(torch.ones(2, 32), "mxint4")
