"""TesseraQ core (docs/spec/algorithms.md §4.6; the TesseraQ bullets of §7)."""

import dataclasses
import math
import warnings
from fractions import Fraction

import numpy as np
import pytest
import torch

import hwsim.formats as F
from hwsim.quant.algorithms.common import QuantWarning
from hwsim.quant.algorithms.rtn import encode, rtn_quantize
from hwsim.quant.algorithms.tesseraq import (GAMMA, PRESETS, SCHEDULES, ZETA, SoftQuantizer,
                                             TesseraQOptions, cast_scale, exact_quantile,
                                             from_options, llmc_bake)
from hwsim.quant.algorithms.tesseraq_block import SequenceBank, tesseraq_block
from smollm2_fixtures import zoo  # noqa: F401 (fixture; skips without the offline model zoo)

INT_FORMATS = ["int4_g128_asym", "int3_g128_asym", "int4_ch_asym", "int4_ch", "int4_g128",
               "int3_g64_asym_sbf16", "int4_g128_asym_sf32", "int4_asym"]
BLOCK_FORMATS = ["mxint4", "bfp4", "mxint3_full"]
RTN_FORMATS = ["int4_g128_asym", "int3_g128_asym", "int4_ch_asym", "int4_ch", "mxint4", "bfp4"]
OUT, IN = 48, 320  # IN is not a multiple of 128 (padded last group) nor of 32 for MX (10 blocks)


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def weight(seed=0, out=OUT, n_in=IN):
    g = torch.Generator().manual_seed(seed)
    W = 0.02 * torch.randn(out, n_in, generator=g)
    W[:, 7] *= 8.0  # an outlier input channel
    return W


def soft(W, fmt, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", QuantWarning)
        return SoftQuantizer(W, fmt, **kw)


def codes_of(q):
    return torch.as_tensor(np.asarray(q.codes) if not isinstance(q.codes, torch.Tensor)
                           else q.codes).to(torch.int64)


def exact_ties(sq, W):
    """frac(W/s) == 0.5 exactly (RNE may go either way, PAR goes down)."""
    y = W / sq.step_per_element() if sq.kind == "int" else (
        W.double() / sq.step_per_element().double()).float()
    return (y - torch.floor(y)) == 0.5


def inside_clamp(sq, W):
    y = W / sq.step_per_element()
    z = sq.zero_point_per_element()
    return (y + z >= sq.qmin) & (y + z <= sq.qmax)


# ---- options -----------------------------------------------------------------------------------


def test_constants_schedules_and_presets():
    assert (GAMMA, ZETA) == (-0.1, 1.1)
    assert len(SCHEDULES["default"]) == 20 and len(SCHEDULES["short"]) == 10
    assert SCHEDULES["default"][:3] == (0.8, 0.65, 0.5) and SCHEDULES["default"][-1] == 0.005
    assert SCHEDULES["short"] == (0.75, 0.5, 0.375, 0.25, 0.125, 0.09, 0.06, 0.04, 0.02, 0.005)
    for taus in SCHEDULES.values():
        assert all(0 < b < a < 1 for a, b in zip(taus, taus[1:]))
    p, c = PRESETS["paper"], PRESETS["cpu"]
    assert (p.taus, p.iters_per_stage, p.batch_size, p.lr, p.scale_lr, p.scale_weight_decay,
            p.init, p.amp) == (SCHEDULES["default"], 250, 4, 1e-3, 1e-3, 1e-4, "awq", True)
    assert (c.taus, c.iters_per_stage, c.batch_size, c.lr, c.scale_lr, c.scale_weight_decay,
            c.init, c.amp) == (SCHEDULES["short"], 5, 2, 2e-2, 1e-3, 1e-4, "rtn", False)


def test_from_options_overrides_a_preset_and_round_trips():
    o = from_options({"preset": "cpu", "iters_per_stage": 7, "schedule": [0.6, 0.2]})
    assert o.iters_per_stage == 7 and o.taus == (0.6, 0.2) and o.batch_size == 2
    assert from_options(o.to_dict()) == o
    assert from_options(None) == TesseraQOptions()


@pytest.mark.parametrize("key, value, valid", [
    ("schedule", "long", "default"),
    ("schedule", [0.5, 0.5], "strictly decreasing"),
    ("schedule", [0.5, 1.0], "(0, 1)"),
    ("schedule", [], "non-empty"),
    ("iters_per_stage", -1, ">= 0"),
    ("batch_size", 0, ">= 1"),
    ("batch_size", 2.5, "integer"),
    ("lr", 0.0, "> 0"),
    ("scale_lr", float("nan"), "finite"),
    ("scale_weight_decay", -1e-4, ">= 0"),
    ("dst", "yes", "True or False"),
    ("init", "omniquant", "rtn"),
    ("seed", -3, "[0, 2**63)"),
    ("preset", "gpu", "paper"),
])
def test_from_options_rejects_bad_values_naming_them(key, value, valid):
    with pytest.raises(ValueError) as ei:
        from_options({key: value})
    msg = str(ei.value)
    assert key in msg and repr(value) in msg and valid in msg


def test_from_options_rejects_unknown_keys_listing_valid_ones():
    with pytest.raises(ValueError, match=r"unknown option.*'iters'.*iters_per_stage"):
        from_options({"iters": 3})


# ---- exact quantile ----------------------------------------------------------------------------


@pytest.mark.parametrize("q", [0.0, 0.005, 0.1, 0.3, 0.5, 0.65, 0.8, 0.999, 1.0])
def test_exact_quantile_is_the_ceil_order_statistic(q):
    x = torch.randn(1000, generator=torch.Generator().manual_seed(3)).reshape(10, 100)
    n = x.numel()
    k = min(max(math.ceil(Fraction(str(q)) * n), 1), n)
    t = exact_quantile(x, q)
    assert torch.equal(t, torch.kthvalue(x.reshape(-1), k).values)
    above = int((x > t).sum())
    rest = n * (1 - Fraction(str(q)))
    assert rest - 1 <= above <= rest  # fraction 1 - q within one element


def test_exact_quantile_rank_is_exact_in_q():
    x = torch.arange(10.0)
    assert exact_quantile(x, 0.3) == 2.0  # k = ceil(0.3 * 10) = 3 (0.3 * 10 = 3.0000000000000004)
    assert exact_quantile(torch.arange(1000.0), 0.005) == 4.0  # k = 5 (binary 0.005 > 5/1000)
    assert exact_quantile(x, 0.0) == 0.0 and exact_quantile(x, 1.0) == 9.0
    with pytest.raises(ValueError, match="q=1.5"):
        exact_quantile(x, 1.5)
    with pytest.raises(ValueError, match="NaN"):
        exact_quantile(torch.tensor([1.0, float("nan")]), 0.5)


@pytest.mark.slow
def test_exact_quantile_beyond_2_24_elements():
    n = (1 << 24) + 5
    x = torch.randperm(n, generator=torch.Generator().manual_seed(0)).to(torch.float32)
    with pytest.raises(RuntimeError):
        torch.quantile(x, 0.5)  # the limitation the selection routine avoids
    for q in (0.005, 0.5, 0.8):
        k = math.ceil(Fraction(str(q)) * n)
        assert float(exact_quantile(x, q)) == k - 1  # x is a permutation of 0..n-1


# ---- soft quantizer ----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", INT_FORMATS + BLOCK_FORMATS)
def test_soft_weight_equals_w_at_init(fmt):
    W = weight(1)
    sq = soft(W, fmt)
    y = (W.double() / sq.step_per_element().double()).float()
    torch.testing.assert_close(sq.h(), y - torch.floor(y), rtol=0, atol=1e-6)
    inside = inside_clamp(sq, W)
    assert inside.float().mean() > 0.9
    err = (sq.weight().detach() - W).abs()[inside]
    assert float(err.max()) <= 1e-6 * float(W.abs().max())


@pytest.mark.parametrize("fmt", RTN_FORMATS)
def test_zero_iterations_give_rtn_codes(fmt):
    W = weight(2)
    sq = soft(W, fmt)
    sq.harden_all()
    q, q0 = sq.qtensor(), encode(W, fmt)
    c, c0 = codes_of(q), codes_of(q0)
    assert c.shape == c0.shape
    ties = exact_ties(sq, W)
    differ = c[:, :IN] != c0[:, :IN]
    assert not bool((differ & ~ties).any())
    assert torch.equal(c[:, IN:], c0[:, IN:])  # padding codes
    assert torch.equal(torch.as_tensor(q.scales).long(), torch.as_tensor(q0.scales).long())
    if q0.zero_points is not None:
        assert torch.equal(torch.as_tensor(q.zero_points), torch.as_tensor(q0.zero_points))
    same = ~ties
    torch.testing.assert_close(q.dequantize()[same], rtn_quantize(W, fmt)[same], rtol=0, atol=0)


def test_zero_iterations_differ_from_rne_only_at_ties():
    """Exact ties go down in PAR (ν₀ = 0) and to the even neighbour in RNE."""
    W = torch.tensor([[0.0, 1.5, 2.5, 3.0, 7.0]]) * 0.125  # int4_ch: s = 7 * 0.125 / 7 = 0.125
    sq = soft(W, "int4_ch")
    sq.harden_all()
    assert sq.int_values().tolist() == [[0, 1, 2, 3, 7]]
    assert codes_of(encode(W, "int4_ch")).tolist() == [[0, 2, 2, 3, 7]]


def test_stage1_hardening_agrees_with_rtn():
    W = weight(3)
    sq = soft(W, "int3_g128_asym")
    k_rtn = (codes_of(encode(W, "int3_g128_asym"))[:, :IN] - sq.zero_point_per_element().long())
    y = W / sq.step_per_element()
    dist = ((y - torch.floor(y)) - 0.5).abs()
    sq.harden(SCHEDULES["default"][0])
    hard = sq.state >= 0
    assert sq.hard_fraction() == 0.2  # 3072 of 15360, although |frac - 0.5| has many ties
    assert torch.equal(sq.int_values()[hard], k_rtn[hard])
    assert float(dist[hard].min()) >= float(dist[~hard].max())  # nearest to the grid first


@pytest.mark.parametrize("fmt", ["int4_g128_asym", "mxint4"])
def test_hard_fraction_after_each_stage(fmt):
    W = weight(4)
    sq = soft(W, fmt)
    n = W.numel()
    g = torch.Generator().manual_seed(5)
    prev_state = sq.state.clone()
    for i, tau in enumerate(SCHEDULES["default"]):
        with torch.no_grad():  # stand-in for training: move ν, saturating some h at 0 / 1
            sq.nu.add_(0.5 * torch.randn(sq.nu.shape, generator=g))
            if i == 3:
                sq.nu.mul_(20.0)
        sq.harden(tau)
        assert sq.hard_fraction() == (n - math.ceil(Fraction(str(tau)) * n)) / n
        was = prev_state >= 0
        assert torch.equal(sq.state[was], prev_state[was])  # hard elements stay hard
        prev_state = sq.state.clone()
    sq.harden_all()
    assert sq.hard_fraction() == 1.0
    soft_before = ~(prev_state >= 0)
    assert torch.equal(sq.state[soft_before] == 1, sq.nu.detach()[soft_before] > 0)


def test_harden_breaks_score_ties_by_flat_index():
    """|ν| takes two values: the threshold rule alone would harden too few (none at τ = 0.8);
    the tie break hardens exactly n - ceil(τ n): everything above t, then the first tied
    elements in flat order."""
    sq = soft(weight(12), "int4_g128_asym")
    g = torch.Generator().manual_seed(13)
    levels = torch.tensor([-0.7, -0.3, 0.3, 0.7])
    with torch.no_grad():
        sq.nu.copy_(levels[torch.randint(0, 4, sq.nu.shape, generator=g)])
    n = sq.nu.numel()
    for tau in (0.8, 0.5, 0.3):
        before = (sq.state >= 0).reshape(-1)
        k = math.ceil(Fraction(str(tau)) * n)
        score = torch.where(before, torch.tensor(math.inf), sq.nu.detach().abs().reshape(-1))
        t = torch.kthvalue(score, k).values
        sq.harden(tau)
        hard = (sq.state >= 0).reshape(-1)
        assert int(hard.sum()) == n - k
        new = hard & ~before
        assert bool(new[~before & (score > t)].all()) and not bool(new[score < t].any())
        chosen = new[~before & (score == t)]
        assert torch.equal(chosen, torch.arange(chosen.numel()) < int(chosen.sum()))
    hard = sq.state >= 0
    assert torch.equal(sq.state[hard] == 1, sq.nu.detach()[hard] > 0)


def test_nu_zero_rounds_down():
    sq = soft(weight(14), "int4_g128_asym")
    with torch.no_grad():
        sq.nu.zero_()
        sq.nu[0, :3] = torch.tensor([-0.0, 1e-30, -1e-30])
    sq.harden(0.5)  # ±1e-30 score above the tied zeros, then half of the zeros: all down
    assert sq.state[0, :3].tolist() == [0, 1, 0] and sq.hard_fraction() == 0.5  # -0.0: first tie
    assert int((sq.state == 1).sum()) == 1
    sq.harden_all()
    assert sq.state[0, :3].tolist() == [0, 1, 0] and int((sq.state == 1).sum()) == 1
    z = sq.zero_point_per_element()
    down = torch.clamp(sq.flo, -z, 15 - z).long()
    down[0, 1] = min(int(sq.flo[0, 1]) + 1, 15 - int(z[0, 1]))
    assert torch.equal(sq.int_values(), down)


def test_hardened_elements_get_no_gradient():
    W = weight(5)
    sq = soft(W, "int4_g128_asym")
    sq.harden(0.5)
    hard = sq.state >= 0
    before = sq.weight().detach()
    (sq.weight() * torch.randn(W.shape)).sum().backward()
    assert bool((sq.nu.grad[hard] == 0).all())
    assert bool((sq.nu.grad[~hard] != 0).float().mean() > 0.9)
    with torch.no_grad():
        sq.nu.add_(torch.randn(W.shape))  # moving ν does not change hardened elements
    assert torch.equal(sq.weight().detach()[hard], before[hard])


@pytest.mark.parametrize("fmt", INT_FORMATS + BLOCK_FORMATS)
@pytest.mark.parametrize("v_std", [0.0, 0.4, 3.0])
def test_all_hardened_forward_equals_dequant_bit_for_bit(fmt, v_std):
    W = weight(6)
    sq = soft(W, fmt)
    with torch.no_grad():
        sq.nu.add_(torch.randn(W.shape, generator=torch.Generator().manual_seed(7)))
        if sq.v is not None:
            sq.v.copy_(v_std * torch.randn(sq.v.shape, generator=torch.Generator().manual_seed(8)))
    sq.harden_all()
    q = sq.qtensor()
    w = sq.weight().detach()
    assert torch.equal(w, q.dequantize())
    assert torch.equal(w, torch.from_numpy(q.pack().unpack().dequantize()))  # numpy codec too
    if sq.v is not None and v_std > 0:
        assert not torch.equal(torch.as_tensor(q.scales), torch.as_tensor(encode(W, fmt).scales))


def test_dst_multiplier_is_one_at_v0():
    W = weight(7)
    sq = soft(W, "int4_g128_asym")
    assert sq.v is not None and tuple(sq.v.shape) == (OUT, 3)
    m = sq.multiplier()
    assert bool((m == 1.0).all())
    assert torch.equal(sq.scale(), sq.s)
    assert soft(W, "int4_ch_asym").v.shape == (OUT, 1)
    assert soft(W, "int4_g128_asym", dst=False).v is None


@pytest.mark.parametrize("fmt", BLOCK_FORMATS)
def test_block_formats_disable_dst_with_an_event(fmt):
    events = []
    with pytest.warns(QuantWarning, match="DST disabled"):
        sq = SoftQuantizer(weight(8), fmt, layer="mlp.down_proj", events=events)
    assert sq.v is None and sq.multiplier() is None
    assert events == [{"stage": "tesseraq", "layer": "mlp.down_proj", "kind": "dst_disabled",
                       "value": F.get(fmt).name}]


@pytest.mark.parametrize("fmt", ["mxfp4", "nvfp4", "fp8_e4m3", "mxfp8_e4m3", "bf16"])
def test_minifloat_formats_are_refused(fmt):
    with pytest.raises(ValueError) as ei:
        SoftQuantizer(weight(9), fmt, layer="q_proj")
    msg = str(ei.value)
    assert F.get(fmt).name in msg and "mxint" in msg and "int<b>_g<G>" in msg and "q_proj" in msg


@pytest.mark.parametrize("scale_fmt", ["int4_g128_asym", "int4_g128_asym_sbf16", "int4_g128_asym_sf32"])
def test_cast_scale_matches_the_library(scale_fmt):
    elem = F.get(scale_fmt).scale.elem
    g = torch.Generator().manual_seed(10)
    s = torch.cat([torch.exp(torch.empty(4000).uniform_(-110, 90, generator=g)).to(torch.float32),
                   torch.tensor([0.0, 1e-45, 6e-8, 65504.0, 65519.0, 65520.0, 1e38, 3.4e38])])
    codes = F.encode_floats(s.numpy(), elem)
    dec = F.decode_elem(codes, elem)
    tiny = F.decode_elem(F.encode_floats(np.array([elem.min_normal], np.float32), elem), elem)
    ref = torch.from_numpy(np.where(dec == 0, tiny, dec))
    assert torch.equal(cast_scale(s, elem), ref)


@pytest.mark.parametrize("fmt", ["int4_g128_asym", "int3_g128_asym", "int4_ch", "mxint4"])
def test_llmc_bake_reproduces_the_codes_except_ties(fmt):
    W = weight(11)
    sq = soft(W, fmt)
    g = torch.Generator().manual_seed(12)
    with torch.no_grad():
        sq.nu.copy_(torch.randn(W.shape, generator=g))
        # plant both tie kinds: frac(W/s) = 0 with ν > 0, frac(W/s) = 0.5 with ν <= 0
        s = sq.step_per_element()
        W[0, :4] = torch.tensor([2.0, -1.0, 2.5, -0.5]) * s[0, :4]
        sq2 = soft(W, fmt)
        sq2.nu.copy_(sq.nu)
        sq2.nu[0, :4] = torch.tensor([1.0, 1.0, -1.0, 0.0])
    sq2.harden_all()
    s, z = sq2.step_per_element(), sq2.zero_point_per_element()
    Wb = llmc_bake(W, s, sq2.nu.detach())
    y = W / s if sq2.kind == "int" else (W.double() / s.double()).float()
    frac = y - torch.floor(y)
    nu = sq2.nu.detach()
    ties = ((frac == 0) & (nu > 0)) | ((frac == 0.5) & (nu <= 0))
    assert bool(ties[0, :4].all())
    k_rtn = torch.clamp(torch.round(Wb / s) + z, sq2.qmin, sq2.qmax) - z  # RNE on the same grid
    k_par = sq2.int_values()
    assert torch.equal(k_rtn[~ties].long(), k_par[~ties])
    assert bool((k_rtn[0, :4].long() != k_par[0, :4]).any())  # the planted ties do differ


# ---- block trainer ----------------------------------------------------------------------------

D, T_SEQ, N_SEQ = 64, 32, 16
LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


def tiny_llama_block(seed=0):
    """A random LlamaDecoderLayer (d = 64, H = 4, H_kv = 2, m = 192), block_fn, inputs, targets."""
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding

    cfg = LlamaConfig(hidden_size=D, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                      intermediate_size=192, vocab_size=128, max_position_embeddings=256)
    cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    layer = LlamaDecoderLayer(cfg, layer_idx=0).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if "norm" in name:
                p.add_(0.2 * torch.randn(p.shape, generator=g))
    cos, sin = LlamaRotaryEmbedding(cfg)(torch.zeros(1, T_SEQ, D), torch.arange(T_SEQ)[None])
    mask = torch.full((T_SEQ, T_SEQ), -math.inf).triu(1)[None, None]

    def block_fn(x):
        return layer(x, attention_mask=mask, position_embeddings=(cos, sin))

    chan = torch.exp(torch.randn(D, generator=g))  # uneven channel scales
    x = torch.randn(N_SEQ, T_SEQ, D, generator=g) * chan
    with torch.no_grad():
        y = block_fn(x)
    linears = {n: layer.get_submodule(n) for n in LINEARS}
    return layer, block_fn, linears, x, y


def block_mse(block_fn, layer, weights, x, y):
    """Block loss with the given weights written in (restored after)."""
    saved = {n: layer.get_submodule(n).weight.detach().clone() for n in weights}
    try:
        with torch.no_grad():
            for n, w in weights.items():
                layer.get_submodule(n).weight.copy_(w)
            return float(((block_fn(x) - y) ** 2).sum(-1).mean())
    finally:
        with torch.no_grad():
            for n, w in saved.items():
                layer.get_submodule(n).weight.copy_(w)


FAST = TesseraQOptions(schedule="short", iters_per_stage=20, batch_size=2, lr=5e-3, scale_lr=1e-3,
                       seed=0)


@pytest.mark.parametrize("fmt", ["int3_g32_asym", "mxint4"])
def test_one_block_run_lowers_block_mse_below_rtn(fmt):
    layer, block_fn, linears, x, y = tiny_llama_block()
    w_fp = {n: lin.weight.detach().clone() for n, lin in linears.items()}
    grads = {n: p.requires_grad for n, p in layer.named_parameters()}
    events = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", QuantWarning)
        res = tesseraq_block(block_fn, linears, {n: fmt for n in linears}, x, y, FAST, block=layer,
                             events=events)
    # nothing left behind: weights, forwards, requires_grad
    for n, lin in linears.items():
        assert torch.equal(lin.weight, w_fp[n]) and "forward" not in lin.__dict__
    assert {n: p.requires_grad for n, p in layer.named_parameters()} == grads
    mse_rtn = block_mse(block_fn, layer, {n: rtn_quantize(w_fp[n], fmt) for n in linears}, x, y)
    mse_tq = block_mse(block_fn, layer, {n: q.dequantize() for n, (q, _) in res.items()}, x, y)
    info = res[LINEARS[0]][1]["block"]
    assert info["mse_rtn"] == pytest.approx(mse_rtn, rel=1e-4)
    assert info["mse_final"] == pytest.approx(mse_tq, rel=1e-5)
    assert mse_tq < 0.8 * mse_rtn
    for n, (q, inf) in res.items():
        assert inf["hard_fraction"][-1] == pytest.approx(1 - 0.005, abs=1e-3)
        assert inf["dst"] == (fmt.startswith("int"))
    assert len(info["stage_loss"]) == 10 and info["time_s"] > 0
    assert [e["kind"] for e in events] == (["dst_disabled"] * 7 if fmt == "mxint4" else [])


def test_block_trainer_inputs_as_batches_match_one_tensor():
    layer, block_fn, linears, x, y = tiny_llama_block(1)
    opts = dataclasses.replace(FAST, schedule=(0.5, 0.1), iters_per_stage=5)
    fmts = {n: "int4_g32_asym" for n in linears}
    a = tesseraq_block(block_fn, linears, fmts, x, y, opts)
    xs, ys = [x[:5], x[5:6], x[6:]], [y[:5], y[5:6], y[6:]]
    b = tesseraq_block(block_fn, linears, fmts, xs, ys, opts)
    for n in linears:
        assert torch.equal(codes_of(a[n][0]), codes_of(b[n][0]))
        assert torch.equal(torch.as_tensor(a[n][0].scales), torch.as_tensor(b[n][0].scales))
    bank = SequenceBank(xs, "inputs")
    idx = torch.tensor([7, 0, 5, 15])
    assert torch.equal(bank.take(idx), x[idx])


def test_block_trainer_applies_activation_quantizers_straight_through():
    layer, block_fn, linears, x, y = tiny_llama_block(2)
    calls = []

    def aq(t):
        calls.append(t.shape)
        return F.fake_quant(t, "int8_tok")

    opts = dataclasses.replace(FAST, schedule=(0.5,), iters_per_stage=3)
    res = tesseraq_block(block_fn, linears, {n: "int4_g32_asym" for n in linears}, x, y, opts,
                         act_quant={"mlp.down_proj": aq})
    assert len(calls) == 3 + 2 * (N_SEQ // 2)  # 3 steps + 2 evaluations of 8 batches
    assert res["mlp.down_proj"][1]["block"]["mse_final"] > 0


def test_block_trainer_validates_its_arguments():
    layer, block_fn, linears, x, y = tiny_llama_block(3)
    fmts = {n: "int4_g32_asym" for n in linears}
    opts = dataclasses.replace(FAST, iters_per_stage=0)
    with pytest.raises(ValueError, match=r"missing \['mlp.down_proj'\]"):
        tesseraq_block(block_fn, linears, {n: f for n, f in fmts.items() if n != "mlp.down_proj"},
                       x, y, opts)
    with pytest.raises(ValueError, match="act_quant names unknown linears"):
        tesseraq_block(block_fn, linears, fmts, x, y, opts, act_quant={"mlp.up": None})
    with pytest.raises(ValueError, match="targets"):
        tesseraq_block(block_fn, linears, fmts, x, y[:3], opts)
    with pytest.raises(NotImplementedError, match="init='awq'"):
        tesseraq_block(block_fn, linears, fmts, x, y, dataclasses.replace(opts, init="awq"))
    with pytest.raises(ValueError, match="mxfp4"):
        tesseraq_block(block_fn, linears, {**fmts, "mlp.up_proj": "mxfp4"}, x, y, opts)
    assert all("forward" not in lin.__dict__ for lin in linears.values())


def test_zero_iterations_block_run_is_rtn():
    """iters_per_stage = 0: the hardening alone gives RTN's codes except exact ties (this block
    has one, in up_proj, where PAR rounds down and RNE to the even code)."""
    layer, block_fn, linears, x, y = tiny_llama_block(4)
    opts = dataclasses.replace(FAST, iters_per_stage=0)
    res = tesseraq_block(block_fn, linears, {n: "int3_g32_asym" for n in linears}, x, y, opts)
    n_ties = 0
    for n, (q, info) in res.items():
        W = linears[n].weight.detach()
        ties = exact_ties(soft(W, "int3_g32_asym"), W)
        n_ties += int(ties.sum())
        differ = codes_of(q) != codes_of(encode(W, "int3_g32_asym"))
        assert torch.equal(differ, differ & ties)
        assert info["block"]["mse_final"] == info["block"]["mse_rtn"]
    assert n_ties >= 1


# ---- real model (offline zoo) -----------------------------------------------------------------


def smollm2_block_mse(zoo, fmt: str, opts) -> tuple[float, float, float, float]:
    """Block MSE of RTN, GPTQ (R = XᵀX/n of each linear's input) and TesseraQ (``opts``) on
    SmolLM2-135M block 1, inputs the full-precision trajectory of the zoo's austen calibration
    tokens; and TesseraQ's seconds."""
    from hwsim.quant.algorithms import gptq_quantize
    from hwsim.quant.calibrate import capture_block_inputs
    from hwsim.quant.model import get_adapter

    models, tok, calib = zoo
    model, _ = models.load("smollm2-135m", progress=False)
    ad = get_adapter(model)
    b_idx = 1
    with torch.no_grad():
        bi = capture_block_inputs(model, calib, batch_size=2)
        blocks = ad.blocks()
        hs = [ad.block_forward(blocks[0], h, bi.context(0, h)) for h in bi.hidden]
        blk = blocks[b_idx]

        def block_fn(x):
            return ad.block_forward(blk, x, bi.context(b_idx, x))

        ys = [block_fn(h) for h in hs]
    linears = {n: lin for g in ad.linear_groups(blk) for n, lin in zip(g.names, g.linears)}
    xtx, count = {}, {}

    def hook(name):
        def pre(module, args):
            x = args[0].reshape(-1, args[0].shape[-1]).to(torch.float64)
            xtx[name] = xtx.get(name, 0) + x.T @ x
            count[name] = count.get(name, 0) + x.shape[0]
        return pre

    handles = [lin.register_forward_pre_hook(hook(n)) for n, lin in linears.items()]
    try:
        with torch.no_grad():
            for h in hs:
                block_fn(h)
    finally:
        for hd in handles:
            hd.remove()

    def mse(weights):
        saved = {n: lin.weight.detach().clone() for n, lin in linears.items()}
        try:
            with torch.no_grad():
                for n, w in weights.items():
                    linears[n].weight.copy_(w)
                tot = sum(float(((block_fn(h) - y) ** 2).sum(-1).mean()) * h.shape[0]
                          for h, y in zip(hs, ys))
            return tot / sum(h.shape[0] for h in hs)
        finally:
            with torch.no_grad():
                for n, w in saved.items():
                    linears[n].weight.copy_(w)

    w_fp = {n: lin.weight.detach().clone() for n, lin in linears.items()}
    mse_rtn = mse({n: rtn_quantize(w, fmt) for n, w in w_fp.items()})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mse_gptq = mse({n: gptq_quantize(w, (xtx[n] / count[n]).to(torch.float32), fmt)
                        for n, w in w_fp.items()})
    res = tesseraq_block(block_fn, linears, {n: fmt for n in linears}, hs, ys, opts, block=blk)
    mse_tq = mse({n: q.dequantize() for n, (q, _) in res.items()})
    assert res[next(iter(res))][1]["block"]["mse_final"] == pytest.approx(mse_tq, rel=1e-5)
    return mse_rtn, mse_gptq, mse_tq, res[next(iter(res))][1]["block"]["time_s"]


@pytest.mark.slow
@pytest.mark.model
def test_smollm2_block_tesseraq_beats_gptq_at_w2(zoo):
    """int2_g64_asym, 10 stages x 20 steps: the block MSE after TesseraQ is below GPTQ's, which is
    below RTN's (measured: RTN 482.0, GPTQ 217.3, TesseraQ 97.0; 27 s of training on an idle machine)."""
    opts = TesseraQOptions(schedule="short", iters_per_stage=20, batch_size=2, lr=5e-3)
    mse_rtn, mse_gptq, mse_tq, secs = smollm2_block_mse(zoo, "int2_g64_asym", opts)
    print(f"SmolLM2-135M block 1 int2_g64_asym: block MSE rtn {mse_rtn:.3f} gptq {mse_gptq:.3f} "
          f"tesseraq {mse_tq:.3f} ({secs:.0f} s)")
    assert mse_tq < mse_gptq < mse_rtn


@pytest.mark.slow
@pytest.mark.model
def test_smollm2_block_tesseraq_beats_gptq_at_w3(zoo):
    """int3_g64_asym, 10 stages x 40 steps at lr 2e-3: the block MSE after TesseraQ is below GPTQ's.
    How far a stage can move a rounding is about lr x steps (Adam), and more than ~0.1 per stage
    hurts (at lr 5e-3: 30.0 at 10 steps, 23.5 at 20, 32.2 at 40, 34.4 at 80); at that distance
    more, smaller steps help (docs/quant_algorithms.md, "TesseraQ", "Learning rate"). Measured:
    RTN 80.3, GPTQ 22.9, TesseraQ 20.7 (seed 0; 21.1 with seed 1)."""
    opts = TesseraQOptions(schedule="short", iters_per_stage=40, batch_size=2, lr=2e-3)
    mse_rtn, mse_gptq, mse_tq, secs = smollm2_block_mse(zoo, "int3_g64_asym", opts)
    print(f"SmolLM2-135M block 1 int3_g64_asym: block MSE rtn {mse_rtn:.3f} gptq {mse_gptq:.3f} "
          f"tesseraq {mse_tq:.3f} ({secs:.0f} s)")
    assert mse_tq < mse_gptq < mse_rtn


@pytest.mark.slow
@pytest.mark.model
@pytest.mark.parametrize("fmt", ["int2_g64_asym", "int3_g128_asym"])
def test_smollm2_block_cpu_budget(zoo, fmt):
    """The stage's default "cpu" budget (10 stages x 5 steps, lr 2e-2) on the real block: below GPTQ
    at W2, below 0.4 x RTN at W3 g128 (measured: W2 RTN 482.0, GPTQ 217.3, TesseraQ 138.3; W3 g128
    RTN 104.5, GPTQ 28.2, TesseraQ 31.8). With the former lr 1e-3 the 5 steps hardly moved the
    roundings: 250.2 at W2, 61.5 at W3 g128."""
    mse_rtn, mse_gptq, mse_tq, secs = smollm2_block_mse(zoo, fmt, PRESETS["cpu"])
    print(f"SmolLM2-135M block 1 {fmt}, cpu budget: block MSE rtn {mse_rtn:.3f} gptq {mse_gptq:.3f} "
          f"tesseraq {mse_tq:.3f} ({secs:.0f} s)")
    if fmt.startswith("int2"):
        assert mse_tq < mse_gptq
    else:
        assert mse_tq < 0.4 * mse_rtn
