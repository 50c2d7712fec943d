"""QLinear exact mode at study speed (issue 14): bit-for-bit equality with ``hwsim.matmul.matmul``,
the cached weight operand (converted once, decode does not re-convert, invalidated when the weight
changes), fixed-point accumulator events, ``hwsim.quant.set_mode`` on a whole model, and the
accumulator option's validation in recipes, recipe files, study files and ``hwsim quantize``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import hwsim.formats as F
from hwsim.matmul import AccEvents, matmul
from hwsim.quant import QLinear
from hwsim.quant.qlinear import as_numpy_q

PAIRS = [("mxint4", "mxint8"), ("int4_g128", "int8_tok")]   # case P (E8M0 scales), case G (float scales)
K, N = 256, 48


def _layer(w_fmt, x_fmt, acc, seed=0, bias=True):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(N, K, generator=g)
    b = torch.randn(N, generator=g) if bias else None
    return QLinear(F.quantize(W, w_fmt, axis=-1), b, x_fmt=x_fmt, mode="exact", datapath=acc), W, b


def _ref(ql: QLinear, x: torch.Tensor, acc):
    """hwsim.matmul.matmul on freshly built operands (no cache): the activation quantized by the
    numba codec, the weight's codes as numpy, W^T as the B operand."""
    x2 = x.reshape(-1, K).float().numpy()
    xq = F.quantize(x2, ql.x_fmt, axis=-1)
    bias = None if ql.bias is None else ql.bias.float().numpy()
    y = matmul(xq, as_numpy_q(ql.qweight).T, accumulator=acc, bias=bias)
    return torch.from_numpy(np.asarray(y)).reshape(*x.shape[:-1], N)


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.equal(a.float().contiguous().view(torch.int32),
                                              b.float().contiguous().view(torch.int32))


@pytest.mark.parametrize("w_fmt,x_fmt", PAIRS)
@pytest.mark.parametrize("acc", ["fp32", "fixed:24:8:saturate:rne", "fixed:16:2", "fixed:20:6:wrap"])
@pytest.mark.parametrize("shape", [(1, 1, K), (2, 150, K)], ids=["decode", "prefill"])
def test_exact_equals_matmul_bit_for_bit(w_fmt, x_fmt, acc, shape):
    ql, _, _ = _layer(w_fmt, x_fmt, acc)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1)) * 3
    y1 = ql(x)
    y2 = ql(x)                      # second call: the cached operand
    ref = _ref(ql, x, acc)
    assert _same_bits(y1, ref) and _same_bits(y2, ref)


def test_weight_converted_once_and_decode_does_not_reconvert(monkeypatch):
    from hwsim.matmul import gemm

    calls = {"a": 0, "b": 0}
    orig = gemm._fill_new

    def counting(p, role, *a, **kw):
        calls[role] += 1
        return orig(p, role, *a, **kw)

    monkeypatch.setattr(gemm, "_fill_new", counting)
    for acc in ("fp32", "fixed:24:8"):
        calls.update(a=0, b=0)
        ql, _, _ = _layer("mxint4", "mxint8", acc)
        g = torch.Generator().manual_seed(2)
        ql(torch.randn(1, 64, K, generator=g))          # prefill
        for _ in range(5):                                # decode, M = 1
            ql(torch.randn(1, 1, K, generator=g))
        assert calls["b"] == 1, calls                     # the weight: once
        assert calls["a"] == 6, calls                     # the activation: once per forward


def test_activation_quantized_once_for_a_shared_input(monkeypatch):
    from hwsim.quant import qlinear as qmod
    from hwsim.quant.qlinear import ActQuantCache

    n = {"q": 0}
    orig = qmod.quantize_np

    def counting(*a, **kw):
        n["q"] += 1
        return orig(*a, **kw)

    monkeypatch.setattr(qmod, "quantize_np", counting)
    cache = ActQuantCache()
    qls = []
    for seed in range(3):  # q/k/v: one input, one key
        ql, _, _ = _layer("mxint4", "mxint8", "fp32", seed=seed)
        ql.act_cache = cache
        qls.append(ql)
    x = torch.randn(1, 8, K)
    ys = [ql(x) for ql in qls]
    assert n["q"] == 1
    assert all(_same_bits(y, _ref(ql, x, "fp32")) for y, ql in zip(ys, qls))


def test_cached_weight_operand_invalidated_when_the_weight_changes():
    ql, W, b = _layer("mxint4", "mxint8", "fixed:24:8")
    x = torch.randn(1, 4, K, generator=torch.Generator().manual_seed(3))
    y0 = ql(x)
    # a new QTensor
    ql.qweight = F.quantize(W * -0.5, "mxint4", axis=-1)
    y1 = ql(x)
    assert not _same_bits(y0, y1) and _same_bits(y1, _ref(ql, x, "fixed:24:8"))
    # torch codes changed in place (version counter)
    ql.qweight.codes[:, :40] = ql.qweight.codes[:, :40].flip(1)
    y2 = ql(x)
    assert not _same_bits(y1, y2) and _same_bits(y2, _ref(ql, x, "fixed:24:8"))
    # torch scales changed in place
    ql.qweight.scales[0, 0] += 1
    y3 = ql(x)
    assert not _same_bits(y2, y3) and _same_bits(y3, _ref(ql, x, "fixed:24:8"))
    # numpy codes changed in place: invalidate_exact_cache() (documented)
    ql.qweight = as_numpy_q(ql.qweight)
    y4 = ql(x)
    assert _same_bits(y4, y3)
    ql.qweight.codes[:, :8] = 0
    ql.invalidate_exact_cache()
    y5 = ql(x)
    assert not _same_bits(y4, y5) and _same_bits(y5, _ref(ql, x, "fixed:24:8"))


@pytest.mark.parametrize("w_fmt,x_fmt", PAIRS)
def test_narrow_fixed_accumulator_saturates_and_changes_the_output(w_fmt, x_fmt):
    x = torch.randn(2, 20, K, generator=torch.Generator().manual_seed(4)) * 8
    wide, _, _ = _layer(w_fmt, x_fmt, "fp32", bias=False)
    narrow, _, _ = _layer(w_fmt, x_fmt, "fixed:10:2", bias=False)
    y_fp32, y_narrow = wide(x), narrow(x)
    ev = narrow.acc_events
    assert isinstance(ev, AccEvents) and ev.saturations > 0 and ev.wraps == 0 and ev.complete
    assert ev.outputs == 40 * N and ev.calls == 1
    assert not torch.allclose(y_fp32, y_narrow, rtol=0.05, atol=0.05)
    rec = narrow.record()
    assert rec.accumulator == "fixed:10:2" and rec.acc_events["saturations"] == ev.saturations
    assert wide.acc_events is None and wide.record().acc_events is None
    # wrap-around instead of saturation
    wrap, _, _ = _layer(w_fmt, x_fmt, "fixed:10:2:wrap", bias=False)
    wrap(x)
    assert wrap.acc_events.wraps > 0 and wrap.acc_events.saturations == 0


def test_wide_fixed_accumulator_equals_exact_accumulation():
    """mxint4 x mxint8: every segment product is a multiple of 2**(E_A + E_B + q); with enough
    fractional bits and width, the fixed register holds the exact sum, rounded once to fp32 at the
    end: the same bits as the exact accumulator rounded to fp32."""
    x = torch.randn(2, 20, K, generator=torch.Generator().manual_seed(5))
    ql, _, _ = _layer("mxint4", "mxint8", "fixed:62:36", bias=False)
    y = ql(x)
    ev = ql.acc_events
    assert ev.saturations == 0 and ev.rounded == 0 and ev.flushed == 0 and ev.adds > 0
    xq = F.quantize(x.reshape(-1, K).numpy(), "mxint8", axis=-1)
    exact = matmul(xq, as_numpy_q(ql.qweight).T, accumulator="exact", out_format="fp32")
    assert _same_bits(y.reshape(-1, N), torch.from_numpy(np.asarray(exact, np.float32)))


def test_events_match_a_python_model_of_the_register():
    """The GEMM path's counters against a direct simulation with Python integers (case P)."""
    from hwsim.matmul.operands import prepare

    rng = np.random.default_rng(6)
    xq = F.quantize((rng.standard_normal((5, 96)) * 6).astype(np.float32), "mxint8", axis=-1)
    wq = F.quantize(rng.standard_normal((7, 96)).astype(np.float32), "mxint4", axis=-1)
    for spec in ("fixed:9:3", "fixed:9:3:rne", "fixed:8:1:wrap", "fixed:10:2:wrap:rne"):
        ev = AccEvents()
        y = np.asarray(matmul(xq, wq.T, accumulator=spec, events=ev))
        parts = spec.split(":")
        W, Fb, wrap, rne = int(parts[1]), int(parts[2]), "wrap" in parts, "rne" in parts
        p = prepare(xq, wq.T)
        half = 1 << (W - 1)
        cnt = dict(adds=0, saturations=0, wraps=0, rounded=0, flushed=0, max_bits_lost=0)
        out = np.empty((p.M, p.N), np.float32)
        for m in range(p.M):
            for n in range(p.N):
                A = 0
                for j in range(p.J):
                    S = int(np.dot(p.kA[m, j * p.L:(j + 1) * p.L], p.kB[n, j * p.L:(j + 1) * p.L]))
                    if S == 0:
                        continue
                    cnt["adds"] += 1
                    sh = int(p.EA[m, j]) + int(p.EB[n, j]) + Fb
                    if sh >= 0:
                        t = S << sh
                    else:
                        rs = -sh
                        t = S >> rs                                   # floor
                        rem = S - (t << rs)
                        if rne and (2 * rem > (1 << rs) or (2 * rem == (1 << rs) and t & 1)):
                            t += 1
                        lost = abs(S) & ((1 << rs) - 1)
                        if lost:
                            cnt["rounded"] += 1
                            cnt["max_bits_lost"] = max(cnt["max_bits_lost"], lost.bit_length())
                        if t == 0:
                            cnt["flushed"] += 1
                    s = A + t
                    if not -half <= s < half:
                        if wrap:
                            cnt["wraps"] += 1
                            s = ((s + half) % (2 * half)) - half
                        else:
                            cnt["saturations"] += 1
                            s = min(max(s, -half), half - 1)
                    elif wrap and not -half <= t < half:
                        cnt["wraps"] += 1
                    A = s
                out[m, n] = np.float32(A * 2.0 ** -Fb)
        got = {k: getattr(ev, k) for k in cnt}
        assert got == cnt, (spec, got, cnt)
        assert np.array_equal(out, y), spec
        assert cnt["saturations"] + cnt["wraps"] > 0 and cnt["rounded"] > 0


def test_set_mode_on_a_model_and_the_recipe_route():
    from hwsim.quant import acc_events, acc_events_total, get_recipe, quantize_model, set_mode, with_formats
    from hwsim.quant.testing import tiny_model

    torch.manual_seed(0)
    model = tiny_model("llama")
    rec = with_formats(get_recipe("rtn"), w="mxint4", a="mxint8")
    quantize_model(model, rec, None, progress=False)
    ids = torch.randint(0, 128, (1, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        fake = model(ids).logits
        n = set_mode(model, "exact", accumulator="fp32")
        assert n == 14
        exact = model(ids).logits
        assert torch.allclose(fake, exact, rtol=1e-3, atol=1e-3)
        assert acc_events(model) == {} and acc_events_total(model) is None
        set_mode(model, "exact", accumulator="fixed:8:12")
        narrow = model(ids).logits
    ev = acc_events(model)
    assert len(ev) == 14 and acc_events_total(model)["adds"] == sum(e["adds"] for e in ev.values())
    assert acc_events_total(model)["saturations"] > 0 and not torch.allclose(narrow, exact, atol=1e-2)
    with pytest.raises(ValueError, match="accumulator: 'fixed:8:x' is not a valid accumulator.*fixed:W"):
        set_mode(model, "exact", accumulator="fixed:8:x")
    with pytest.raises(ValueError, match="needs mode 'exact'"):
        set_mode(model, "fake", accumulator="fixed:24:8")
    # the recipe route: mode and accumulator on every QLinear
    model2 = tiny_model("llama")
    rec2 = with_formats(get_recipe("rtn"), w="mxint4", a="mxint8", mode="exact", accumulator="fixed:24:8:rne")
    quantize_model(model2, rec2, None, progress=False)
    from hwsim.quant import quantized_linears

    assert {(m.mode, m.accumulator) for _, m in quantized_linears(model2)} == {("exact", "fixed:24:8:rne")}


# -- validation: recipes, recipe files, study files, the CLI --------------------------------------

@pytest.mark.parametrize("changes,match", [
    (dict(mode="exact", accumulator="fixed:x"), ["accumulator", "'fixed:x'", "fixed:W"]),
    (dict(mode="exact", accumulator="int"), ["accumulator", "'int'", "'fp32', 'exact'"]),
    (dict(mode="exact", accumulator="fixed:200:8"), ["accumulator", "'fixed:200:8'"]),
    (dict(mode="fake", accumulator="fixed:24:8"), ["accumulator 'fixed:24:8' needs mode 'exact'"]),
    # valid grammar, but not something the exact core runs (the cost model takes them)
    (dict(mode="exact", accumulator="fp16"), ["accumulator", "'fp16'", "fp32 only", "W <= 62"]),
    (dict(mode="exact", accumulator="int64"), ["accumulator", "'int64'", "2..62"]),
])
def test_recipe_accumulator_validation(changes, match):
    from hwsim.quant import get_recipe, validate_recipe, with_formats

    with pytest.raises(ValueError) as err:
        validate_recipe(with_formats(get_recipe("rtn"), w="mxint4", a="mxint8", **changes))
    for m in match:
        assert m in str(err.value)


def test_grammar_aliases_reach_the_layers():
    """The one grammar's aliases (F = W//2 by default, int<W> = fixed:W:W//2:wrap) work in exact mode."""
    x = torch.randn(1, 6, K, generator=torch.Generator().manual_seed(7))
    for spec, canon in (("fixed:24", "fixed:24:12"), ("int24", "int24"), (24, "int24")):
        ql, _, _ = _layer("mxint4", "mxint8", spec)
        assert ql.accumulator == canon and ql.record().accumulator == canon
        assert _same_bits(ql(x), _ref(ql, x, canon))


def test_recipe_file_accumulator(tmp_path):
    from hwsim.quant.config import load_recipe

    good = tmp_path / "good.toml"
    good.write_text('pipeline = "rtn"\nmode = "exact"\naccumulator = "fixed:24:8:saturate:rne"\n'
                    '[layer]\nw = "mxint4"\nx = "mxint8"\n')
    r = load_recipe(good)
    assert (r.mode, r.accumulator) == ("exact", "fixed:24:8:saturate:rne")
    assert r.to_dict()["accumulator"] == "fixed:24:8:saturate:rne"
    bad = tmp_path / "bad.toml"
    bad.write_text('pipeline = "rtn"\nmode = "exact"\naccumulator = "fixed:24:x"\n[layer]\nw = "mxint4"\nx = "mxint8"\n')
    with pytest.raises(ValueError) as err:
        load_recipe(bad)
    for m in ("bad.toml", "accumulator", "'fixed:24:x'", "unknown option 'x'", "fixed:W"):
        assert m in str(err.value)


def test_study_accumulator_keys(tmp_path):
    from hwsim.dse.study import Study, StudyError

    ok = tmp_path / "ok.toml"
    ok.write_text('[study]\nname = "acc"\n[accuracy]\nrecipes = ["rtn"]\nw = "mxint4"\nx = "mxint8"\n'
                  'modes = ["fake", "exact"]\naccumulators = ["fp32", "fixed:24:8:saturate:truncate", "fixed:16:4"]\n')
    pts = Study.from_toml(ok).accuracy_points()
    got = sorted((p.mode, p.accumulator) for p in pts)
    assert got == [("exact", "fixed:16:4"), ("exact", "fixed:24:8"), ("exact", "fp32"), ("fake", "fp32")]
    fp = next(p for p in pts if p.mode == "fake")
    from hwsim.dse.points import AccuracyPoint, config_key

    d = fp.to_dict()
    del d["accumulator"], d["qsur"]  # both left out of the key at their defaults
    assert fp.key == config_key("accuracy", d)   # keys written before the field existed still match
    bad = tmp_path / "bad.toml"
    bad.write_text('[study]\nname = "acc"\n[accuracy]\nrecipes = ["rtn"]\nw = "mxint4"\nx = "mxint8"\n'
                   'modes = ["exact"]\naccumulators = ["fixed:24:x"]\n'
                   '[[accuracy.point]]\nrecipe = "rtn"\nw = "mxint4"\nx = "mxint8"\naccumulator = "fixed:24:8"\n')
    with pytest.raises(StudyError) as err:
        Study.from_toml(bad)
    msg = str(err.value)
    assert "accuracy.accumulators" in msg and "'fixed:24:x'" in msg and "fixed:W" in msg
    assert "accuracy.point[0]" in msg and "needs mode 'exact'" in msg
    assert AccuracyPoint(mode="exact", accumulator="fixed:24:8").label.endswith("exact acc=fixed:24:8")


CLI_CASES = [
    (["quantize", "--mode", "exact", "--accumulator", "fixed:24:x"], ["--accumulator", "'fixed:24:x'", "fixed:W"]),
    (["quantize", "--mode", "exact", "--accumulator", "int"], ["--accumulator", "'int'", "'fp32', 'exact'"]),
    (["quantize", "--mode", "exact", "--accumulator", "fixed:24:8:clamp"], ["--accumulator", "'fixed:24:8:clamp'",
                                                                           "saturate"]),
    (["quantize", "--recipe", "rtn", "--w", "mxint4", "--a", "mxint8", "--accumulator", "fixed:24:8"],
     ["accumulator 'fixed:24:8' needs mode 'exact'"]),
]


@pytest.mark.parametrize("argv,needles", CLI_CASES, ids=[" ".join(c[0][1:]) for c in CLI_CASES])
def test_quantize_cli_accumulator_errors(run_cli, argv, needles):
    rc, out, err = run_cli(argv)
    assert rc == 1, (rc, out, err)
    assert "Traceback" not in err
    for n in needles:
        assert n in err, (n, err)
