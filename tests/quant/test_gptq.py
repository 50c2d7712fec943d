"""GPTQ against an independent straightforward implementation, act_order "auto", the torch
per-column rounding and the one-pass sequential calibration (issue 17, docs/spec/algorithms.md §4.2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import hwsim.formats as F
from hwsim.quant.algorithms import gptq_quantize, output_error
from hwsim.quant.algorithms.gptq import prepare_hessian, resolve_act_order, upper_factor_of_inverse

D64 = torch.float64


def _problem(seed, n_in=256, n_out=48, n=4096):
    g = torch.Generator().manual_seed(seed)
    M = torch.randn(n_in, n_in, generator=g, dtype=D64) * 0.2 + torch.eye(n_in, dtype=D64)
    scale = torch.exp(torch.randn(n_in, generator=g, dtype=D64))  # unequal diag(H): act_order matters
    X = (torch.randn(n, n_in, generator=g, dtype=D64) @ M) * scale
    R = X.T @ X / n
    W = torch.randn(n_out, n_in, generator=g, dtype=D64) * 0.05
    W[:, 7] *= 30  # an outlier column: error feedback saturates some blocks
    return W, R


# ---- an independent, straightforward float64 GPTQ (column by column, no lazy batches) --------

def _ref_round(fmt, x32, scale_info, col):
    """Round the float32 column x32 with the fixed scales of column ``col``."""
    spec = F.get(fmt)
    if isinstance(spec, F.BlockSpec):  # MXINT: c = clamp(RNE(x / 2^(e+ie))), value c * 2^(e+ie)
        e = scale_info[:, col // spec.block_size] + spec.elem.ie
        y = x32.to(D64) * torch.exp2(-e)
        c = torch.round(y.to(torch.float32)).to(D64).clamp(spec.elem.c_min, spec.elem.c_max)
        return c * torch.exp2(e)
    s, z, lo, hi = scale_info  # scaled integer, one group
    y = (x32 / s).to(torch.float32)
    c = (torch.round(y).to(D64) + z).clamp(lo, hi)
    return (s * (c - z).to(torch.float32)).to(D64)


def _group_scales(fmt, Wg32):
    spec = F.get(fmt)
    q = F.quantize(np.ascontiguousarray(Wg32.numpy()), spec, axis=-1)
    s = torch.from_numpy(np.asarray(F.decode_elem(q.scales, spec.scale.elem), dtype=np.float32))[:, 0]
    z = (torch.zeros_like(s, dtype=D64) if q.zero_points is None
         else torch.from_numpy(np.asarray(q.zero_points).astype(np.float64))[:, 0])
    b = spec.bits
    lo, hi = (-(1 << (b - 1)), (1 << (b - 1)) - 1) if spec.symmetric else (0, (1 << b) - 1)
    return s, z, lo, hi


def reference_gptq(W, R, fmt, act_order, damp=0.01):
    spec = F.get(fmt)
    W = W.to(D64).clone()
    n_out, n_in = W.shape
    H = R.to(D64).clone()
    H += damp * torch.diagonal(H).mean() * torch.eye(n_in, dtype=D64)
    perm = torch.argsort(torch.diagonal(R), descending=True, stable=True) if act_order else torch.arange(n_in)
    W32 = W.to(torch.float32)
    if isinstance(spec, F.BlockSpec):
        q0 = F.quantize(np.ascontiguousarray(W32.numpy()), spec, axis=-1)
        block_e = torch.from_numpy(np.asarray(q0.scales).astype(np.float64)) - spec.scale.bias
    G = None if isinstance(spec, F.BlockSpec) else spec.group_size
    static = {}
    if G is not None and act_order:  # static groups from the unquantized W
        for g in range(0, n_in, G):
            static[g // G] = _group_scales(fmt, W32[:, g:g + G])
    H = H[perm][:, perm]
    U = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    Wp = W[:, perm].clone()
    Q = torch.zeros_like(Wp)
    cur_group = None
    for i in range(n_in):
        col = int(perm[i])
        if isinstance(spec, F.BlockSpec):
            info = block_e
        elif act_order:
            info = static[col // G]
        else:
            if col % G == 0:  # lazy: scales from the current (updated) weights of the group
                cur_group = _group_scales(fmt, Wp[:, i:i + G].to(torch.float32))
            info = cur_group
        q = _ref_round(fmt, Wp[:, i].to(torch.float32), info, col)
        Q[:, i] = q
        err = (Wp[:, i] - q) / U[i, i]
        Wp[:, i + 1:] -= err.unsqueeze(1) * U[i, i + 1:].unsqueeze(0)
    out = torch.empty_like(Q)
    out[:, perm] = Q
    return out


@pytest.mark.parametrize("fmt", ["mxint4", "int4_g32_asym"])
@pytest.mark.parametrize("act_order", [False, True])
@pytest.mark.parametrize("block_size", [256, 128, 48])
def test_sweep_equals_straightforward_float64_gptq(fmt, act_order, block_size):
    W, R = _problem(1)
    ref = reference_gptq(W, R, fmt, act_order)
    got = gptq_quantize(W, R, fmt, act_order=act_order, block_size=block_size)
    assert got.dtype == D64
    assert torch.equal(got, ref)


@pytest.mark.parametrize("fmt", ["mxint4", "mxint3", "bfp4", "mxint4_b16", "int4_g32_asym", "int4_g16_asym_hr",
                                 "int4_ch", "int3_ch_asym", "int8_t", "int4_g32"])
@pytest.mark.parametrize("act_order", [False, True])
def test_torch_rounder_is_bit_identical_to_fixed_grid(fmt, act_order):
    W, R = _problem(2, n_in=160, n_out=40)
    W = W.to(torch.float32)
    kw = dict(act_order=act_order, static_groups=True if act_order else None, return_info=True, block_size=64)
    a, ia = gptq_quantize(W, R, fmt, rounder="numpy", **kw)
    b, ib = gptq_quantize(W, R, fmt, rounder="torch", **kw)
    assert torch.equal(a, b)
    assert np.array_equal(np.asarray(ia.qtensor.codes.cpu()), np.asarray(ib.qtensor.codes.cpu()))
    assert ia.saturated == ib.saturated
    assert ib.loss == pytest.approx(ia.loss, rel=1e-6)  # Σ err² from the float32 errors
    assert torch.equal(_to(ib.qtensor.dequantize()), b)


def _to(x):
    return x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))


def test_act_order_auto_follows_the_scales():
    assert resolve_act_order("mxint4", "auto") == (True, False)
    assert resolve_act_order("bfp4") == (True, False)
    assert resolve_act_order("int4_ch", "auto") == (True, False)
    assert resolve_act_order("int4_g128_asym", "auto") == (False, False)  # lazy groups
    assert resolve_act_order("int4_g128_asym", "auto", static_groups=True) == (True, True)
    assert resolve_act_order("mxint4", False) == (False, False)
    with pytest.raises(ValueError, match="act_order must be"):
        resolve_act_order("mxint4", "yes")
    W, R = _problem(3, n_in=64, n_out=8)
    _, info = gptq_quantize(W.float(), R, "mxint4", return_info=True)
    assert info.act_order and info.perm is not None
    _, info = gptq_quantize(W.float(), R, "int4_g32_asym", return_info=True)
    assert not info.act_order and info.perm is None


@pytest.mark.parametrize("n", [1, 5, 64, 300])
def test_upper_factor_of_inverse_is_the_textbook_factor(n):
    """One reversed Cholesky + one triangular solve equal chol_upper(cholesky_inverse(chol(H)))
    (the reference GPTQ's three calls) to a few float64 ulps, and UᵀU H = I."""
    g = torch.Generator().manual_seed(n)
    X = torch.randn(4 * n + 16, n, generator=g, dtype=D64) * torch.exp(torch.randn(n, generator=g, dtype=D64))
    H = X.T @ X / X.shape[0]
    H += 0.01 * torch.diagonal(H).mean() * torch.eye(n, dtype=D64)
    U = upper_factor_of_inverse(H)
    textbook = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    assert torch.equal(U, torch.triu(U)) and bool((torch.diagonal(U) > 0).all())
    eps = torch.finfo(D64).eps
    cond = float(torch.linalg.cond(H))
    assert float((U - textbook).abs().max()) <= 64 * n * eps * cond * float(textbook.abs().max())
    assert float((U.T @ U @ H - torch.eye(n, dtype=D64)).abs().max()) <= 64 * n * eps * cond


def test_upper_factor_of_inverse_fails_on_an_indefinite_matrix():
    assert upper_factor_of_inverse(torch.diag(torch.tensor([1.0, -1.0], dtype=D64))) is None


def test_prepared_hessian_is_reused_and_checked():
    W, R = _problem(4, n_in=64, n_out=16)
    W = W.float()
    prep = prepare_hessian(R, act_order=True)
    a = gptq_quantize(W, R, "mxint4")
    b = gptq_quantize(W, R, "mxint4", prepared=prep)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="prepared Hessian"):
        gptq_quantize(W, R, "mxint4", act_order=False, prepared=prep)


# ---- real SmolLM2 layers ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def smollm2_block():
    """Weights of block 3 of SmolLM2-135M and the R of each of its inputs (fp trajectory, 4 × 256)."""
    models = pytest.importorskip("hwsim.eval.models")
    from hwsim.eval import data
    from hwsim.quant.calibrate import collect_stats
    from hwsim.quant.model import get_adapter

    try:
        model, tok = models.load("smollm2-135m", progress=False)
        calib = data.calibration_set(tok, "austen", n=4, seq_len=256, seed=0)
    except FileNotFoundError as exc:
        pytest.skip(f"offline model zoo not available: {exc}")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            stats = collect_stats(model, calib, ["rxx"], blocks=[3], progress=False)
    finally:
        torch.set_num_threads(n)
    ad = get_adapter(model)
    out = []
    for g in ad.linear_groups(ad.blocks()[3]):
        R = stats[g.input_key]["rxx"]
        for name, lin in zip(g.names, g.linears):
            out.append((name, lin.weight.detach().float().clone(), R))
    return out


@pytest.mark.model
def test_real_layers_sweep_equals_reference_and_act_order_helps(smollm2_block):
    for name, W, R in smollm2_block:
        if "q_proj" not in name and "down_proj" not in name:
            continue
        Wd = W[:64].double()  # 64 rows keep the float64 reference cheap
        for ao in (False, True):
            assert torch.equal(gptq_quantize(Wd, R, "mxint4", act_order=ao), reference_gptq(Wd, R, "mxint4", ao)), name
        assert torch.equal(gptq_quantize(Wd, R, "int4_g32_asym", act_order=False),
                           reference_gptq(Wd, R, "int4_g32_asym", False)), name


@pytest.mark.model
@pytest.mark.parametrize("fmt", ["mxint4", "mxint3"])
def test_real_block_gptq_objective_below_rtn_and_act_order_not_worse(smollm2_block, fmt):
    rows = []
    for name, W, R in smollm2_block:
        _, i_off = gptq_quantize(W, R, fmt, act_order=False, return_info=True)
        _, i_on = gptq_quantize(W, R, fmt, act_order=True, return_info=True)
        j_rtn = output_error(W, F.fake_quant(W, fmt, axis=-1), R)
        rows.append((name.rpartition(".")[2], j_rtn, i_off.objective, i_on.objective))
    print(fmt, [(n, round(a, 5), round(b, 5), round(c, 5)) for n, a, b, c in rows])
    for n, j_rtn, j_off, j_on in rows:
        assert j_on <= j_rtn and j_off <= j_rtn, n
        assert j_on <= j_off, n


@pytest.mark.model
def test_one_pass_sequential_calibration_equals_the_full_passes():
    """calib_pass "piecewise" (one block forward) and "stop" give the weights of the old path
    ("full": the whole block once per group, then once more to propagate), bit for bit."""
    models = pytest.importorskip("hwsim.eval.models")
    from hwsim.eval import data
    from hwsim.quant import get_recipe, quantize_model, quantized_linears, with_formats

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    weights, reports = {}, {}
    try:
        for cp in ("full", "stop", "piecewise"):
            try:
                model, tok = models.load("smollm2-135m", progress=False)
            except FileNotFoundError as exc:
                pytest.skip(f"offline model zoo not available: {exc}")
            model.model.layers = model.model.layers[:2]
            model.config.num_hidden_layers = 2
            calib = data.calibration_set(tok, "austen", n=2, seq_len=128, seed=0)
            rec = with_formats(get_recipe("gptq"), w="mxint4", a="mxint8")
            with torch.no_grad():
                reports[cp] = quantize_model(model, rec, calib, progress=False, calib_pass=cp)
            weights[cp] = {k: m.weight.clone() for k, m in quantized_linears(model)}
    finally:
        torch.set_num_threads(n)
    assert len(weights["full"]) == 14
    for cp in ("stop", "piecewise"):
        for k, w in weights["full"].items():
            assert torch.equal(weights[cp][k], w), (cp, k)
    assert reports["piecewise"].resolved == {"gptq": {"act_order": {"true": 14}, "saturation": {"clamp": 14}}}
    assert all(r["round_act_order"] is True for r in reports["piecewise"].layers)


@pytest.mark.parametrize("fmt", ["mxint4", "mxint3", "int4_g32_asym", "int4_ch"])
@pytest.mark.parametrize("act_order", [False, True])
def test_rows_sharing_a_hessian_swept_together_equal_one_by_one(fmt, act_order):
    from hwsim.quant.algorithms import gptq_quantize_many

    W, R = _problem(5, n_in=192, n_out=96)
    W = W.float()
    Ws = [W[:48], W[48:64], W[64:]]
    kw = dict(act_order=act_order, static_groups=True if act_order else None)
    many = gptq_quantize_many(Ws, R, fmt, **kw)
    for Wk, (Qk, info) in zip(Ws, many):
        Q1, i1 = gptq_quantize(Wk, R, fmt, return_info=True, **kw)
        assert torch.equal(Qk, Q1)
        assert np.array_equal(np.asarray(info.qtensor.codes.cpu()), np.asarray(i1.qtensor.codes.cpu()))
        assert info.saturated == i1.saturated and info.act_order == i1.act_order
        assert info.objective == pytest.approx(i1.objective, rel=1e-12)


def test_sink_weight_weights_the_first_position_of_each_sequence():
    from hwsim.quant.calibrate import Rxx

    x = torch.randn(3, 7, 5, generator=torch.Generator().manual_seed(0))
    r = Rxx(5, sink_weight=4.0)
    r.update(x)
    X = torch.cat([x[:, 0]] * 4 + [x[:, 1:].reshape(-1, 5)]).double()
    assert torch.allclose(r.finalize(), X.T @ X / X.shape[0], rtol=1e-5, atol=1e-6)
    assert r.n == 21
    r1 = Rxx(5)
    r1.update(x)
    X1 = x.reshape(-1, 5).double()
    assert torch.allclose(r1.finalize(), X1.T @ X1 / 21, rtol=1e-5, atol=1e-6)


def test_sink_weight_is_a_validated_recipe_field():
    from hwsim.quant import get_recipe, validate_recipe
    from hwsim.quant.config import Recipe

    r = get_recipe("gptq", sink_weight=64.0)
    assert Recipe.from_dict(r.to_dict()).sink_weight == 64.0
    assert r.sink_weight_for("rxx") == r.sink_weight_for("awq") == 64.0
    d = get_recipe("gptq")  # unset: each statistic's measured default
    assert d.sink_weight is None and Recipe.from_dict(d.to_dict()).sink_weight is None
    assert (d.sink_weight_for("rxx"), d.sink_weight_for("awq")) == (16.0, 1.0)
    validate_recipe(d)
    with pytest.raises(ValueError, match="sink_weight"):
        validate_recipe(get_recipe("gptq", sink_weight=-1.0))
    with pytest.raises(ValueError, match="valid: rxx, awq"):
        d.sink_weight_for("mean_sq")


def test_gptq_default_weights_the_sink_16_in_r_xx():
    """The pipeline's R_xx uses SINK_WEIGHT_DEFAULTS["rxx"] when the recipe sets none."""
    from hwsim.quant import get_recipe, quantize_model, quantized_linears
    from hwsim.quant.testing import tiny_model

    ids = torch.randint(0, 128, (4, 16), generator=torch.Generator().manual_seed(3))

    def weights(**kw):
        m = tiny_model("llama")
        quantize_model(m, get_recipe("gptq", layer={"w": "int3_g32_asym"}, **kw), ids, progress=False)
        return [lin.weight.clone() for _n, lin in quantized_linears(m)]

    default, w16, w1 = weights(), weights(sink_weight=16.0), weights(sink_weight=1.0)
    assert all(torch.equal(a, b) for a, b in zip(default, w16))
    assert not all(torch.equal(a, b) for a, b in zip(default, w1))


def test_saturation_raise_exponent_keeps_the_lower_objective():
    W, R = _problem(6, n_in=128, n_out=32)
    W = W.float()
    _, a = gptq_quantize(W, R, "mxint3", return_info=True)
    Q, b = gptq_quantize(W, R, "mxint3", return_info=True, saturation="raise_exponent")
    assert a.saturated > 0
    assert b.objective <= a.objective
    ev = [e for e in b.events if e["kind"] == "raise_exponent"]
    assert ev and ev[0]["objective_clamp"] == pytest.approx(a.objective)
    assert b.saturation in ("clamp", "raise_exponent")
    assert torch.equal(_to(b.qtensor.dequantize()).float(), Q)  # the codes carry the kept exponents
    with pytest.raises(ValueError, match="saturation"):
        gptq_quantize(W, R, "mxint3", saturation="bump")


@pytest.mark.parametrize("fmt", ["mxint4", "mxint3", "int4_ch", "int4_g32_asym"])
@pytest.mark.parametrize("act_order", [False, True])
def test_numba_lazy_batch_kernel_equals_the_torch_column_loop(fmt, act_order, monkeypatch):
    import hwsim.quant.algorithms.gptq as G

    W, R = _problem(7, n_in=200, n_out=40)
    W = W.float()
    kw = dict(act_order=act_order, static_groups=True if act_order else None, return_info=True)
    a, ia = gptq_quantize(W, R, fmt, **kw)
    monkeypatch.setattr(G, "USE_KERNEL", False)
    b, ib = gptq_quantize(W, R, fmt, **kw)
    assert torch.equal(a, b)
    assert np.array_equal(np.asarray(ia.qtensor.codes.cpu()), np.asarray(ib.qtensor.codes.cpu()))
    assert ia.saturated == ib.saturated and ia.loss == ib.loss


@pytest.mark.parametrize("fmt", ["mxint4", "int4_ch", "int4_g32_asym"])
@pytest.mark.parametrize("threads", [2, 3])
def test_rows_split_over_threads_equal_one_thread(fmt, threads, monkeypatch):
    """The sweep's row ranges on ``threads`` Python threads give the bits of one thread (values,
    codes, losses, saturation counts), for one weight and for weights sharing a Hessian. Both runs
    use the same torch threads (the objective's product) and the same 16-row trailing products
    (``SWEEP_GEMM_ROWS``); only the number of sweep threads differs, so equal bits are what the
    code defines, not a property of the BLAS."""
    import hwsim.quant.algorithms.gptq as G
    import hwsim.quant.threads as T
    from hwsim.quant.algorithms import gptq_quantize_many

    monkeypatch.setattr(G, "SWEEP_GEMM_ROWS", 16)  # 101 rows: 7 ranges, a short last one

    W, R = _problem(8, n_in=192, n_out=101)
    W = W.float()
    Ws = [W[:37], W[37:]]
    kw = dict(act_order=True, static_groups=True)

    def run():
        many = gptq_quantize_many(Ws, R, fmt, **kw)
        one = gptq_quantize(W, R, fmt, return_info=True, **kw)
        return many + [one]

    before = torch.get_num_threads()
    monkeypatch.setattr(T, "SWEEP_ROWS_PER_THREAD", 1000)
    with T.torch_threads(threads):
        assert T.sweep_workers(101) == 1
        serial = run()
    monkeypatch.setattr(T, "SWEEP_ROWS_PER_THREAD", 16)
    with T.torch_threads(threads):
        assert T.sweep_workers(101) == threads and T.sweep_workers(20) == 1
        split = run()
    assert torch.get_num_threads() == before  # the workers' one-thread setting does not leak
    for (qa, ia), (qb, ib) in zip(serial, split):
        assert torch.equal(qa, qb)
        assert np.array_equal(np.asarray(ia.qtensor.codes.cpu()), np.asarray(ib.qtensor.codes.cpu()))
        assert (ia.loss, ia.saturated, ia.objective) == (ib.loss, ib.saturated, ib.objective)
