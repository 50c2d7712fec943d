"""RTN and GPTQ (docs/spec/algorithms.md §4.1–4.2, §7 "Rounding") on synthetic data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import hwsim.formats as F
from hwsim.quant.algorithms import QuantWarning, gptq_quantize, output_error, rtn_quantize

D64 = torch.float64
GPTQ_FORMATS = ["mxint4", "bfp4", "mxint3", "mxfp4", "mxint4_b16", "nvfp4", "int4_g16_asym",
                "int4_g32", "int4_ch", "int3_ch_asym", "int8_t", "int4_g16_asym_hr"]


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _correlated(seed, n_in=96, n_out=40, n=4096):
    """Weight and the second moment R of strongly correlated inputs."""
    g = _gen(seed)
    M = torch.randn(n_in, n_in, generator=g, dtype=D64) * 0.3 + torch.eye(n_in, dtype=D64)
    X = torch.randn(n, n_in, generator=g, dtype=D64) @ M
    X = X + 0.8 * torch.randn(n, 1, generator=g, dtype=D64)  # shared component
    R = X.T @ X / n
    W = torch.randn(n_out, n_in, generator=g)
    return W, R


# ---- RTN --------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["mxint8", "mxint4", "mxint3", "mxfp4", "mxfp8_e4m3", "int4_ch",
                                 "int8_ch", "int4_g128", "fp8_e4m3", "bf16"])
def test_rtn_output_is_on_the_grid(fmt):
    W = torch.randn(24, 160, generator=_gen(1))
    Wq, q = rtn_quantize(W, fmt, return_qtensor=True)
    q2 = F.quantize(Wq, fmt, axis=-1)
    assert torch.equal(torch.as_tensor(q2.codes), torch.as_tensor(q.codes))
    if q.scales is not None:
        assert torch.equal(torch.as_tensor(q2.scales), torch.as_tensor(q.scales))
    assert torch.equal(torch.as_tensor(q2.dequantize()), Wq)


def test_rtn_blocks_along_in_and_matches_the_format_library():
    W = torch.randn(8, 64, generator=_gen(2))
    Wq, q = rtn_quantize(W, "mxint4", return_qtensor=True)
    assert q.axis == 1 and tuple(q.scales.shape) == (8, 2)
    assert torch.equal(Wq, F.fake_quant(W, "mxint4", axis=-1))
    W64 = W.to(D64)
    assert rtn_quantize(W64, "mxint4").dtype == D64


def test_rtn_refuses_non_finite_weights():
    W = torch.randn(4, 32)
    W[1, 2] = float("inf")
    with pytest.raises(ValueError, match="layer 'lm'"):
        rtn_quantize(W, "mxint4", layer="lm")


# ---- GPTQ: identities -------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", GPTQ_FORMATS)
def test_gptq_with_scaled_identity_hessian_equals_rtn_bit_for_bit(fmt):
    W = torch.randn(20, 72, generator=_gen(3))
    Wr, qr = rtn_quantize(W, fmt, return_qtensor=True)
    Wg, info = gptq_quantize(W, 3.0 * torch.eye(72, dtype=D64), fmt, block_size=16,
                             return_info=True)
    assert torch.equal(Wg, Wr)
    assert torch.equal(torch.as_tensor(info.qtensor.codes), torch.as_tensor(qr.codes))
    assert torch.equal(torch.as_tensor(info.qtensor.scales), torch.as_tensor(qr.scales))
    if qr.zero_points is not None:
        assert torch.equal(torch.as_tensor(info.qtensor.zero_points),
                           torch.as_tensor(qr.zero_points))


@pytest.mark.parametrize("fmt", ["int4_g16_asym", "mxint4", "int4_ch"])
def test_gptq_lazy_batch_size_does_not_change_the_result(fmt):
    W, R = _correlated(4, n_in=80, n_out=24)
    W = W.to(D64)
    ref = gptq_quantize(W, R, fmt, block_size=128)
    for bs in (1, 7):
        out = gptq_quantize(W, R, fmt, block_size=bs)
        assert torch.allclose(out, ref, rtol=0, atol=1e-12), bs


@pytest.mark.parametrize("fmt", ["mxint4", "int4_g16_asym", "nvfp4", "int4_ch"])
def test_gptq_codes_are_emitted_directly_and_decode_to_the_result(fmt):
    W, R = _correlated(5, n_in=64, n_out=16)
    Wg, info = gptq_quantize(W, R, fmt, return_info=True)
    assert torch.equal(torch.as_tensor(info.qtensor.dequantize()), Wg)
    assert info.qtensor.shape == (16, 64) and info.qtensor.axis == 1


def test_gptq_block_exponents_equal_rtn_and_saturation_is_counted():
    W, R = _correlated(6)
    _, qr = rtn_quantize(W, "mxint4", return_qtensor=True)
    for act_order in (False, True):
        _, info = gptq_quantize(W, R, "mxint4", act_order=act_order, return_info=True)
        assert torch.equal(torch.as_tensor(info.qtensor.scales), torch.as_tensor(qr.scales))
        assert info.saturated > 0  # error feedback pushes some values past the block range
        assert info.events[-1]["kind"] == "saturated"


def test_gptq_act_order_permutation_is_undone():
    # diagonal H with distinct entries: no error feedback, so any order must give RTN's answer
    W = torch.randn(12, 48, generator=_gen(7))
    H = torch.diag(torch.rand(48, generator=_gen(8), dtype=D64) + 0.5)
    Wr = rtn_quantize(W, "int4_g16_asym")
    Wg, info = gptq_quantize(W, H, "int4_g16_asym", act_order=True, return_info=True)
    assert info.perm is not None and sorted(info.perm) == list(range(48))
    assert info.perm != tuple(range(48))
    assert torch.equal(Wg, Wr)


# ---- GPTQ: objective ---------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["mxint4", "int4_g32_asym"])
def test_gptq_objective_is_below_rtn_on_correlated_inputs(fmt):
    gains = []
    for seed in range(5):
        W, R = _correlated(100 + seed)
        j_rtn = output_error(W, rtn_quantize(W, fmt), R)
        Wg, info = gptq_quantize(W, R, fmt, return_info=True)
        j_gptq = output_error(W, Wg, R)
        # float32 weights: GPTQ forms D·H in float32 (sums in float64), output_error in float64
        assert info.objective == pytest.approx(j_gptq, rel=1e-6)
        Wg64, info64 = gptq_quantize(W.double(), R, fmt, return_info=True)
        assert info64.objective == pytest.approx(output_error(W.double(), Wg64, R), rel=1e-12)
        assert j_gptq <= j_rtn, seed
        gains.append(1 - j_gptq / j_rtn)
    assert np.mean(gains) >= 0.10, gains


def test_gptq_act_order_also_beats_rtn():
    W, R = _correlated(11)
    j_rtn = output_error(W, rtn_quantize(W, "int4_g32_asym"), R)
    j_ao = output_error(W, gptq_quantize(W, R, "int4_g32_asym", act_order=True), R)
    assert j_ao < j_rtn


# ---- GPTQ: degenerate inputs and errors ----------------------------------------------------

def test_gptq_dead_inputs_are_zeroed():
    W, R = _correlated(12, n_in=32, n_out=8)
    R[5, :] = 0
    R[:, 5] = 0
    Wg, info = gptq_quantize(W, R, "mxint4", return_info=True)
    assert info.dead_columns == 1
    assert torch.all(Wg[:, 5] == 0)


def test_gptq_damping_ladder_on_indefinite_hessian():
    W = torch.randn(8, 16, generator=_gen(13))
    H = torch.eye(16, dtype=D64)
    H[0, 0] = -0.5  # indefinite: percdamp 0.01 is not enough, 0.1 is not, 1.0 is
    with pytest.warns(QuantWarning, match="percdamp"):
        Wg, info = gptq_quantize(W, H, "mxint4", return_info=True)
    assert info.percdamp == pytest.approx(1.0)
    assert [e["kind"] for e in info.events if e["kind"] != "saturated"] == ["damping_retry"] * 2
    assert torch.isfinite(Wg).all()
    H[0, 0] = -10.0  # hopeless: even 10 × mean(diag H) = 3.1 does not make it definite
    with pytest.raises(ValueError, match="layer 'x'"), pytest.warns(QuantWarning):
        gptq_quantize(W, H, "mxint4", layer="x")


@pytest.mark.parametrize("fmt,match", [("fp8_e4m3", "element-only"),
                                       ("mxint4_sr", "stochastic")])
def test_gptq_rejects_unsupported_formats(fmt, match):
    with pytest.raises(ValueError, match=match):
        gptq_quantize(torch.randn(4, 32), torch.eye(32), fmt)


def test_gptq_argument_errors():
    W = torch.randn(4, 32)
    with pytest.raises(ValueError, match=r"\[32, 32\]"):
        gptq_quantize(W, torch.eye(31), "mxint4")
    with pytest.raises(ValueError, match="block_size"):
        gptq_quantize(W, torch.eye(32), "mxint4", block_size=0)
    with pytest.raises(ValueError, match="static_groups"):
        gptq_quantize(W, torch.eye(32), "int4_g16", act_order=True, static_groups=False)
    with pytest.raises(F.FormatNameError):
        gptq_quantize(W, torch.eye(32), "mxint17")
