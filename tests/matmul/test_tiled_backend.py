"""The tiled numba kernel as a backend of its own, "numba-tiled" (issue 9): the same bits as the numba
reference backend (per-output kernels) where it covers the problem, a ValueError naming the backend,
the problem and the covering backends where it does not, and its place in ``auto``'s CPU preference
list (after the batched-GEMM path, before the numba reference: what ``auto`` ran before the split).
"""

import ast
from pathlib import Path

import numpy as np
import pytest

import hwsim.formats as F
from hwsim.matmul import api, gemm, matmul, reference, tiled_backend
from hwsim.matmul.datapath import core_accumulator
from hwsim.matmul.operands import prepare

from mm_helpers import make_operand
from test_mm_backends import PAIRS, SHAPES, _pair_ops, _to_torch, bits

COVERED = [p for p in PAIRS if p not in (("mxfp8_e5m2", "mxfp8_e5m2"), ("int4_g128_asym", "int8_tok"))]
UNCOVERED = [("mxfp8_e5m2", "mxfp8_e5m2"), ("int4_g128_asym", "int8_tok")]
# the cross-backend shapes plus odd sizes: 8-row tiles with a tail, K off the blocks, N = 1
TILED_SHAPES = SHAPES + [(13, 200, 9), (9, 33, 17), (17, 95, 1)]
# scale-code ranges: ordinary, E8M0 extremes (Inf / underflow), NaN-scale blocks (code 255)
SCALES = {"normal": (110, 140), "extreme": (0, 254), "nan": (120, 255)}


def _ids(pairs):
    return [f"{a}x{b}" for a, b in pairs]


@pytest.mark.parametrize("regime", list(SCALES))
@pytest.mark.parametrize("fa,fb", COVERED, ids=_ids(COVERED))
def test_tiled_equals_numba_reference(fa, fb, regime):
    lo, hi = SCALES[regime]
    if (fa.startswith("bfp") or fb.startswith("bfp")) and hi == 255:
        hi = 254     # BFP scales have no NaN code
    for si, shape in enumerate(TILED_SHAPES):
        a, b = _pair_ops(fa, fb, shape, 20 * si + 3, scale_lo=lo, scale_hi=hi, zero_frac=0.2)
        p = prepare(a, b)
        assert tiled_backend.covers(p, core_accumulator("fp32")), f"{fa}x{fb}"
        bias = np.random.default_rng(si).standard_normal(shape[2]).astype(np.float32)
        for bb in (None, bias):
            y_t = matmul(a, b, backend="numba-tiled", bias=bb)
            y_n = matmul(a, b, backend="numba", bias=bb)
            assert isinstance(y_t, np.ndarray) and y_t.dtype == np.float32 and y_t.shape == y_n.shape
            np.testing.assert_array_equal(bits(y_t), bits(y_n),
                                          err_msg=f"{fa}x{fb} {regime} {shape} bias={bb is not None}")
    if fa == "nvfp4":     # the tensor scales went through the backend's epilogue
        assert p.tA is not None and p.tB is not None


def test_tiled_batched_and_out_formats():
    rng = np.random.default_rng(4)
    a = F.quantize(rng.standard_normal((2, 3, 64)).astype(np.float32), "mxint8")
    b = F.quantize(rng.standard_normal((5, 64)).astype(np.float32), "mxint4").T
    y = matmul(a, b, backend="numba-tiled")
    assert y.shape == (2, 3, 5)
    np.testing.assert_array_equal(bits(y), bits(matmul(a, b, backend="numba")))
    for out in ("fp16", "bf16"):
        np.testing.assert_array_equal(matmul(a, b, backend="numba-tiled", out_format=out),
                                      matmul(a, b, backend="numba", out_format=out))


@pytest.mark.parametrize("fa,fb", UNCOVERED, ids=_ids(UNCOVERED))
def test_uncovered_pairs_raise(fa, fb):
    a, b = _pair_ops(fa, fb, (3, 70, 5), 1)
    assert not tiled_backend.covers(prepare(a, b), core_accumulator("fp32"))
    with pytest.raises(ValueError, match=rf"backend='numba-tiled' does not cover {fa} x {fb} .*"
                                         r"backends that cover it: numba, torch"):
        matmul(a, b, backend="numba-tiled")
    # auto passes over it: the same bits as the reference
    np.testing.assert_array_equal(bits(matmul(a, b)), bits(matmul(a, b, backend="numba")))


@pytest.mark.parametrize("acc", ["fixed:24:10", "fixed:12:4:wrap:rne", "int16", "exact"])
def test_other_accumulators_raise(acc):
    a, b = _pair_ops("mxint8", "mxint8", (3, 70, 5), 2)
    assert not tiled_backend.covers(prepare(a, b), core_accumulator(acc))
    covering = "numba" if acc == "exact" else "numba, torch"
    with pytest.raises(ValueError, match=rf"backend='numba-tiled' does not cover mxint8 x mxint8 .*"
                                         rf"accumulator='{core_accumulator(acc).name}'.*"
                                         rf"backends that cover it: {covering} "):
        matmul(a, b, accumulator=acc, backend="numba-tiled")


def test_torch_operands_raise():
    a, b = _pair_ops("mxint8", "mxint4", (3, 64, 2), 3)
    ta, tb = _to_torch(a), _to_torch(b)
    assert not tiled_backend.covers(prepare(ta, tb))
    with pytest.raises(ValueError, match=r"backend='numba-tiled' does not cover .* on CPU torch operands.*"
                                         r"backends that cover it: torch "):
        matmul(ta, tb, backend="numba-tiled")


def test_element_specials_decline_at_run_time():
    """NaN/Inf element codes: covers is static (True), run returns None, the explicit backend raises,
    auto falls back to the per-output reference."""
    a = make_operand("mxfp8_e4m3", "a", 4, 64, np.random.default_rng(1), allow_specials=True)
    b = make_operand("mxfp8_e4m3", "b", 5, 64, np.random.default_rng(2), allow_specials=True)
    p = prepare(a, b)
    assert p.has_specials and tiled_backend.covers(p)
    assert tiled_backend.run(p, core_accumulator("fp32"), "fp32") is None
    with pytest.raises(ValueError, match=r"backend='numba-tiled' does not cover mxfp8_e4m3 x mxfp8_e4m3 .*NaN/Inf"):
        matmul(a, b, backend="numba-tiled")
    np.testing.assert_array_equal(bits(matmul(a, b)), bits(matmul(a, b, backend="numba")))


def test_auto_preference_lists():
    a, b = _pair_ops("mxint8", "mxint4", (3, 64, 2), 5)
    p = prepare(a, b)
    assert "numba-tiled" in api.BACKENDS
    assert api.preference(p, "auto") == api.AUTO_CPU == ("gemm", "numba-tiled", "numba", "torch")
    assert api.preference(p, "numba-tiled") == ("numba-tiled",)
    assert api.preference(p, "numba") == ("numba",)
    assert "numba-tiled" not in api.AUTO_CUDA
    # the first covering backend of auto: the GEMM path, then the tiled kernel
    first = [n for n in api.AUTO_CPU if api.backend_module(n).covers(p, core_accumulator("fp32"))]
    assert first[:3] == ["gemm", "numba-tiled", "numba"]


def _spy(monkeypatch, mod, name):
    calls = []
    real = getattr(mod, name)
    monkeypatch.setattr(mod, name, lambda *a, **k: calls.append(name) or real(*a, **k))
    return calls


def test_auto_runs_tiled_where_gemm_declines(monkeypatch):
    """auto tries the GEMM path first (as before the split) and the tiled backend next: with the GEMM
    path declining, the tiled kernel computes the result; the numba reference is not reached."""
    a, b = _pair_ops("mxfp4", "mxfp8_e4m3", (9, 70, 6), 6)
    ref = bits(matmul(a, b, backend="numba"))
    tiled_calls = _spy(monkeypatch, tiled_backend, "run_fp32")
    ref_calls = _spy(monkeypatch, reference, "run_fp32_fixed")
    gemm_calls = _spy(monkeypatch, gemm, "run_fp32")
    np.testing.assert_array_equal(bits(matmul(a, b)), ref)
    assert gemm_calls and not tiled_calls and not ref_calls      # the GEMM path covers it
    gemm_calls.clear()
    monkeypatch.setattr(gemm, "run", lambda *a, **k: None)       # the GEMM path declines
    np.testing.assert_array_equal(bits(matmul(a, b)), ref)
    assert tiled_calls and not ref_calls
    tiled_calls.clear()
    np.testing.assert_array_equal(bits(matmul(a, b, backend="numba")), ref)
    assert ref_calls and not tiled_calls                         # numba: per-output kernels only
    np.testing.assert_array_equal(bits(matmul(a, b, accumulator="fixed:24:8")),
                                  bits(matmul(a, b, accumulator="fixed:24:8", backend="numba")))
    assert not tiled_calls                                       # fixed: never the tiled kernel


MATMUL = Path(api.__file__).parent


def test_backends_share_one_interface_and_no_private_imports():
    """Every backend module has NAME, covers and run; none imports another backend, and no module
    of hwsim.matmul imports an underscore name from a sibling."""
    backend_files = {f"{m}.py" for m in api._MODULES.values()}
    for key, modname in api._MODULES.items():
        mod = api.backend_module(key)
        assert mod.NAME == key and callable(mod.covers) and callable(mod.run), modname
    for path in sorted(MATMUL.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{path.name} imports {private} from .{node.module}"
                if path.name in backend_files:
                    assert f"{node.module}.py" not in backend_files - {path.name}, \
                        f"backend {path.name} imports backend {node.module}"
