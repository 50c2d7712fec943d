"""QLinear (docs/spec/algorithms.md §3)."""

import pytest
import torch
from torch import nn

import hwsim.formats as F
from hwsim.quant.qlinear import ActQuantCache, QLinear


U32 = 2.0 ** -24  # unit roundoff of fp32


def _gamma(k, u=U32):
    """Higham's gamma_k = k u / (1 - k u): relative error bound after k roundings, any order."""
    return k * u / (1 - k * u)


def _lin(in_f=48, out_f=40, bias=True, dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    return nn.Linear(in_f, out_f, bias=bias).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_bypass_reproduces_nn_linear_bitwise(dtype):
    lin = _lin(dtype=dtype)
    ql = QLinear(lin.weight, lin.bias, compute_dtype=dtype)
    x = torch.randn(3, 5, 48).to(dtype)
    assert torch.equal(ql(x), lin(x))


def test_forward_matches_formula():
    lin = _lin()
    g = torch.Generator().manual_seed(1)
    qw = F.quantize(lin.weight.detach(), "mxint4", axis=-1)
    A = torch.randn(48, 4, generator=g) * 0.1
    B = torch.randn(4, 40, generator=g) * 0.1
    qa = F.quantize(A, "mxint8", axis=0)
    qb = F.quantize(B, "mxint8", axis=0)
    ql = QLinear(qw, lin.bias, x_fmt="mxint8", lowrank={"A": qa, "B": qb, "xa_fmt": "mxint8", "xab_fmt": "mxint8"})
    x = torch.randn(6, 48, generator=g)
    xq = F.fake_quant(x, "mxint8")
    W = qw.dequantize()
    y = xq @ W.T + lin.bias
    # the branch runs the same products on the same tensors as QLinear (bit for bit, so its
    # quantizers see the same inputs); the main path is F.linear (a fused addmm) here vs matmul + add
    t = F.fake_quant(F.fake_quant(xq @ qa.dequantize(), "mxint8") @ qb.dequantize(), "mxint8")
    # fp32 bound, any summation order: each side is sum_k xq_k W_k + b (K + 1 terms, at most K + 1
    # roundings each: gamma_{K+1}) plus t (one more rounding), so within gamma_{K+2} S of the exact
    # value, S = |xq| |W|^T + |b| + |t|; the two sides within 2 gamma_{K+2} S, gamma_{K+3} for
    # computing S in float64
    S = xq.abs().double() @ W.abs().double().T + lin.bias.abs().double() + t.abs().double()
    err = (ql(x) - (y + t)).abs().double()
    assert (err <= 2 * _gamma(48 + 3) * S).all()
    assert ql.rank == 4
    r = ql.record()
    assert r.w_fmt == "mxint4" and r.x_fmt == "mxint8" and r.lowrank.rank == 4
    assert r.lowrank.a_axis == "in" and r.lowrank.b_axis == "k"
    assert r.in_features == 48 and r.out_features == 40 and r.bias
    expect_bpw = 4.25 + (8.25 * 48 * 4 + 8.25 * 4 * 40) / (48 * 40)
    assert r.bits_per_weight == pytest.approx(expect_bpw)
    text = repr(ql)
    for s in ("W=mxint4", "X=mxint8", "rank=4", "A=mxint8[in]", "B=mxint8[k]", "bpw="):
        assert s in text


def test_shared_activation_cache_reuses_and_invalidates():
    lin1, lin2 = _lin(seed=0), _lin(seed=1)
    cache = ActQuantCache()
    q1 = QLinear(lin1.weight, None, x_fmt="mxint8", act_cache=cache)
    q2 = QLinear(lin2.weight, None, x_fmt="mxint8", act_cache=cache)
    ref = QLinear(lin2.weight, None, x_fmt="mxint8")
    x = torch.randn(4, 48)
    q1(x)
    assert torch.equal(q2(x), ref(x))
    x.mul_(3.0)  # in-place change must invalidate the cached quantized input
    assert torch.equal(q2(x), ref(x))


def test_bad_arguments_raise_clear_errors():
    lin = _lin()
    with pytest.raises(ValueError, match="mode"):
        QLinear(lin.weight, None, mode="approx")
    with pytest.raises(ValueError, match="x_fmt"):
        QLinear(lin.weight, None, x_fmt="mxint99")
    with pytest.raises(ValueError, match="lowrank A"):
        QLinear(lin.weight, None, lowrank={"A": torch.zeros(47, 2), "B": torch.zeros(2, 40)})
    ql = QLinear(lin.weight, None)
    with pytest.raises(ValueError, match="in_features"):
        ql(torch.zeros(2, 47))


def test_exact_mode_requires_reduction_axis_blocking():
    lin = _lin()
    qw = F.quantize(lin.weight.detach(), "mxint4", axis=-1)
    A = torch.randn(48, 4) * 0.1
    B = torch.randn(4, 40) * 0.1
    code_axes = {"A": F.quantize(A, "bfp8", axis=1), "B": F.quantize(B, "bfp8", axis=1), "xa_fmt": "bfp8",
                 "xab_fmt": "bfp8"}
    ql = QLinear(qw, None, x_fmt="mxint8", lowrank=code_axes)
    with pytest.raises(ValueError, match=r"A \[in, k\] blocked along in"):
        ql.set_mode("exact")
    with pytest.raises(ValueError, match="X"):
        QLinear(qw, None, x_fmt=None, mode="exact")
    with pytest.raises(ValueError, match="element-only"):
        QLinear(qw, None, x_fmt="fp8_e4m3", mode="exact")


def test_exact_mode_close_to_fake():
    pytest.importorskip("hwsim.matmul")
    import hwsim.matmul as M

    if not hasattr(M, "matmul"):
        pytest.skip("hwsim.matmul.matmul not available yet")
    lin = _lin()
    qw = F.quantize(lin.weight.detach(), "mxint4", axis=-1)
    A = torch.randn(48, 4) * 0.1
    B = torch.randn(4, 40) * 0.1
    lr = {"A": F.quantize(A, "mxint8", axis=0), "B": F.quantize(B, "mxint8", axis=0), "xa_fmt": "mxint8",
          "xab_fmt": "mxint8"}
    fake = QLinear(qw, lin.bias, x_fmt="mxint8", lowrank=lr)
    exact = QLinear(qw, lin.bias, x_fmt="mxint8", lowrank=lr, mode="exact")
    x = torch.randn(2, 3, 48)
    y_f, y_e = fake(x), exact(x)
    assert y_e.shape == y_f.shape
    torch.testing.assert_close(y_e, y_f, rtol=1e-2, atol=1e-2)
    # without a branch both modes see the same quantized operands: only accumulation differs
    # within the fp32 bounds (docs/matmul.md): exact mode sums J = 2 exact segment products in fp32
    # and adds the bias (gamma_{J+1}), fake mode is an fp32 GEMM in an unspecified order plus the bias
    # (gamma_{K+1}); each relative to S = |xq| |W|^T + |b|, plus one u for computing S in float64
    f0 = QLinear(qw, lin.bias, x_fmt="mxint8")
    e0 = QLinear(qw, lin.bias, x_fmt="mxint8", mode="exact")
    xq = F.fake_quant(x, "mxint8").double()
    S = xq.abs() @ qw.dequantize().abs().double().T + lin.bias.abs().double()
    err = (e0(x) - f0(x)).abs().double()
    assert (err <= (_gamma(2 + 2) + _gamma(48 + 2)) * S).all()

