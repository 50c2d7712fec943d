"""numba (numpy) vs torch bit equality (docs/spec/formats.md §7.5), plus the independent oracles where one exists:
random (normal, heavy-tailed, bf16-valued) and adversarial data, every preset and modifier variant,
every rounding mode (SR with several seeds), any axis, float64/float16/bfloat16 inputs."""

import re
import warnings

import ml_dtypes as mld
import numpy as np
import pytest
import torch

import fmt_oracle as O
import hwsim.formats as F
from fmt_helpers import (ROUNDINGS, all_names, as_input, assert_same_float_bits, assert_same_ints,
                         assert_same_summary, summary, with_rounding)

SEEDS = (0, 42, 2 ** 32 + 5, 2 ** 64 - 1)  # seeds >= 2^32 use the second key word
NAMES = all_names()


def _combos():
    out = []
    for n in NAMES:
        modes = ("rne",) if n in ("bf16", "fp16", "fp32") else ROUNDINGS
        out += [(n, m) for m in modes]
    return out


def _random_data(rng) -> dict[str, np.ndarray]:
    k = 80  # not a multiple of 32 or 16: short tails
    normal = rng.standard_normal((6, k)).astype(np.float32)
    heavy = (rng.standard_cauchy((6, k)) * np.exp2(rng.integers(-40, 40, (6, 1)))).astype(np.float32)
    bf16 = (rng.standard_normal((6, k)) * 3).astype(mld.bfloat16).astype(np.float32)
    return {"normal": normal, "heavy": heavy, "bf16": bf16}


def _adversarial(rng) -> np.ndarray:
    """Ties of every grid, exact powers of two, 1 ulp below them, fp32 subnormals, zero blocks."""
    p2 = np.exp2(np.arange(-149, 128, dtype=np.float64)).astype(np.float32)
    below = np.nextafter(p2, np.float32(0))
    ties = np.concatenate([(1 + (2 * np.arange(2 ** m) + 1) / 2 ** (m + 1)) for m in range(0, 5)])
    ties = (ties[None, :] * np.exp2(np.arange(-12, 12))[:, None]).astype(np.float32).ravel()
    sub = (np.arange(1, 64, dtype=np.uint32) * 3).view(np.float32)
    pool = np.concatenate([p2, below, ties, sub, np.float32([0.0, -0.0, 1.5, 448, 480, 57344, 61440, 6, 7])])
    pool = pool * rng.choice(np.float32([-1, 1]), pool.size)
    pool = pool[rng.permutation(pool.size)]
    n = pool.size // 40 * 40
    x = pool[:n].reshape(-1, 40)
    # blocks pinned by a max element, so the small ones sit on a known grid
    pinned = np.sort(rng.choice(ties, (8, 40)), axis=1).astype(np.float32)
    pinned[:, -1] = np.float32(1.0)
    zeros = np.zeros((2, 40), np.float32)
    return np.concatenate([x, pinned, -pinned, zeros]).astype(np.float32)


def _nonfinite(rng) -> np.ndarray:
    x = rng.standard_normal((4, 40)).astype(np.float32)
    x[0, 3], x[1, 35], x[2, 0], x[2, 39] = np.nan, np.inf, -np.inf, np.nan
    return x


def _oracle(name: str, x, axis, mode, seed):
    """Independent oracle for the families it covers, else None."""
    if re.match(r"^(mx|bfp)", name):
        return O.block_quantize(x, name, axis=axis, rounding=mode, seed=seed)
    if name.startswith("nvfp4"):
        return O.nvfp4_quantize(x, axis=axis, rounding=mode, seed=seed)
    m = re.match(r"^int([2-8])(?:_(t|ch|tok|g\d+))?((?:_asym)?)((?:_hr)?)((?:_sf16|_sbf16|_sf32)?)(?:_(rne|rna|rtz|rdn|sr))?$", name)
    if m:
        gran = {None: "tensor", "t": "tensor", "ch": "channel", "tok": "token"}.get(m.group(2), "group")
        group = int(m.group(2)[1:]) if gran == "group" else None
        sdt = {"": "fp16", "_sf16": "fp16", "_sbf16": "bf16", "_sf32": "fp32"}[m.group(5)]
        return O.scaled_int_quantize(x, int(m.group(1)), gran, group, asym=bool(m.group(3)),
                                     half_range=bool(m.group(4)), sdt=sdt, axis=axis, rounding=mode, seed=seed)
    return None


def _both(x, name, axis=-1, seed=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = summary(F.quantize(x, name, axis=axis, seed=seed))
        b = summary(F.quantize(torch.from_numpy(np.ascontiguousarray(x)), name, axis=axis, seed=seed))
    return a, b


def _check(x, name, mode, axis=-1, seed=None, ctx=""):
    a, b = _both(x, name, axis, seed)
    assert_same_summary(a, b, f"{name} numba vs torch {ctx}")
    o = _oracle(name, x, axis, mode, seed)
    if o is not None:
        assert_same_ints(a["codes"], o["codes"], f"{name} codes vs oracle {ctx}")
        assert_same_ints(a["scales"], o["scales"], f"{name} scales vs oracle {ctx}")
        if "zero_points" in o:
            assert_same_ints(a["zero_points"], o["zero_points"], f"{name} zp vs oracle {ctx}")
        if "tensor_scale" in o:
            assert_same_float_bits(a["tensor_scale"], o["tensor_scale"], f"{name} tensor scale {ctx}")
        assert_same_float_bits(a["decoded"], o["decoded"], f"{name} decoded vs oracle {ctx}")


def _all_data(rng) -> np.ndarray:
    """normal, heavy-tailed, bf16-valued and adversarial rows in one [rows, 80] array (one codec call:
    each call has a fixed cost, and the 2-core CI budget is small)."""
    d = _random_data(rng)
    adv = _adversarial(rng)
    adv = adv[: adv.shape[0] // 2 * 2].reshape(-1, 80)
    return np.concatenate([d["normal"], d["heavy"], d["bf16"], adv]).astype(np.float32)


@pytest.mark.parametrize("name,mode", _combos())
def test_numba_torch_and_oracle(name, mode):
    rng = np.random.default_rng(abs(hash((name, mode))) % 2 ** 32)
    full = with_rounding(name, mode)
    seeds = (42, 2 ** 64 - 1) if mode == "sr" else (None,)
    x = _all_data(rng)
    for seed in seeds:
        _check(x, full, mode, seed=seed, ctx=f"[random+adversarial seed={seed}]")
    if mode not in ("rne", "sr"):
        return
    seed = seeds[-1]
    # other axes: 2-D along axis 0 and 3-D along axis 1 (SR index is the logical row-major index)
    _check(np.ascontiguousarray(x[:6].T), full, mode, axis=0, seed=seed, ctx="[axis 0]")
    x3 = x[:6, :75].reshape(3, 2, 75).transpose(0, 2, 1).copy()
    _check(x3, full, mode, axis=-2, seed=seed, ctx="[3-D axis -2]")
    # non-finite inputs: NaN blocks (MX, NVFP4), element NaN/Inf rules, or NonFiniteError on both
    xn = _nonfinite(rng)
    spec = F.get(full)
    raises = isinstance(spec, F.ScaledIntSpec) or (
        isinstance(spec, F.BlockSpec) and isinstance(spec.scale, F.ExpScale) and not spec.scale.nan)
    if raises:
        for arr in (xn, torch.from_numpy(xn)):
            with pytest.raises(F.NonFiniteError):
                F.quantize(arr, full, seed=seed)
    else:
        a, b = _both(xn, full, seed=seed)
        assert_same_summary(a, b, f"{full} non-finite")
        if isinstance(spec, F.BlockSpec):
            assert np.isnan(a["decoded"][0, 3]) and np.isnan(a["decoded"][1, 35])


@pytest.mark.parametrize("name", ["mxint8", "mxfp8_e4m3", "mxfp4_e2m1", "bfp4", "nvfp4", "fp8_e5m2",
                                  "int8_ch", "int4_g128_asym", "fp16"])
@pytest.mark.parametrize("dtype", ["float64", "float16", "bfloat16"])
def test_input_dtypes(name, dtype):
    """float64 is rounded to fp32 (RNE) first; fp16/bf16 are widened exactly (docs/spec/formats.md §0)."""
    rng = np.random.default_rng(7)
    x64 = rng.standard_normal((4, 160)) * np.exp2(rng.integers(-8, 8, (4, 1)))
    # float64 values just off fp32 ties, to catch double rounding
    x64[0, :8] = 1 + 2.0 ** -24 + np.array([1, -1, 2, -2, 1, -1, 2, -2]) * 2.0 ** -40
    np_dt = {"float64": np.float64, "float16": np.float16, "bfloat16": mld.bfloat16}[dtype]
    t_dt = {"float64": torch.float64, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]
    xn = x64.astype(np_dt)
    ref32 = xn.astype(np.float32)  # numpy's float64->float32 cast is RNE
    ref = summary(F.quantize(ref32, name))
    got_np = summary(F.quantize(xn, name))
    assert_same_summary(got_np, ref, f"{name} numpy {dtype}")
    xt = torch.from_numpy(x64).to(t_dt) if dtype != "float64" else torch.from_numpy(x64)
    got_t = summary(F.quantize(xt, name))
    assert_same_summary(got_t, ref, f"{name} torch {dtype}")
    for arr in (xn, xt):
        fq = F.fake_quant(arr, name)
        # "returning the input's type": accept fp32 output equal to dequantize, or the input dtype
        # holding dequantize's values cast (RNE) to it
        if isinstance(fq, torch.Tensor):
            assert fq.dtype in (torch.float32, arr.dtype), fq.dtype
            got = fq.detach().float().cpu().numpy()
            exp = ref["decoded"] if fq.dtype == torch.float32 else \
                torch.from_numpy(ref["decoded"]).to(fq.dtype).float().numpy()
        else:
            assert fq.dtype in (np.float32, arr.dtype), fq.dtype
            got = fq.astype(np.float32)
            exp = ref["decoded"].astype(fq.dtype).astype(np.float32)
        assert_same_float_bits(got, exp, f"fake_quant {dtype} -> {fq.dtype}")


def test_sr_known_answer_index0():
    """Philox KAT (counter 0, key 0) -> r = 0x6627e8d5 at seed 0, index 0: F just below r keeps the
    floor, F just above rounds up (mxint8: v = 64 + F/2^32, fp32 resolution 2^15 in F)."""
    r = 0x6627E8D5
    f_lo = (r >> 15) << 15
    f_hi = f_lo + (1 << 15)
    for f, code in ((f_lo, 0x40), (f_hi, 0x41)):
        x = np.float32((64 + f / 2 ** 32) / 64)
        for arr in (np.array([x], np.float32), torch.tensor([x], dtype=torch.float32)):
            q = summary(F.quantize(arr, "mxint8_sr", seed=0))
            assert int(q["codes"][0]) == code, (hex(f), hex(int(q["codes"][0])))


def test_sr_requires_seed_and_keeps_grid_values():
    x = np.array([1.0, 0.5, -0.25, 0.75], np.float32)
    with pytest.raises(ValueError, match="seed"):
        F.quantize(x, "mxint8_sr")
    with pytest.raises(ValueError, match="seed"):
        F.quantize(torch.from_numpy(x), "mxint8", rounding="sr")
    for seed in SEEDS:
        assert_same_float_bits(F.fake_quant(x, "mxint4_sr", seed=seed), x)


def test_sr_thread_count_independent():
    numba = pytest.importorskip("numba")
    x = np.random.default_rng(3).standard_normal((64, 256)).astype(np.float32)
    n0 = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        a = summary(F.quantize(x, "mxfp4_sr", seed=99))
        numba.set_num_threads(n0)
        b = summary(F.quantize(x, "mxfp4_sr", seed=99))
    finally:
        numba.set_num_threads(n0)
    assert_same_summary(a, b, "threads")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
@pytest.mark.parametrize("name,mode", [(n, m) for n in ("mxint8", "mxfp8_e4m3", "mxfp4_e2m1", "bfp4", "nvfp4",
                                                         "int8_ch", "int4_g128_asym", "fp8_e4m3")
                                       for m in ROUNDINGS])
def test_gpu_matches_cpu(name, mode):
    rng = np.random.default_rng(11)
    full = with_rounding(name, mode)
    seed = 12345 if mode == "sr" else None
    for x in list(_random_data(rng).values()) + [_adversarial(rng)]:
        a = summary(F.quantize(torch.from_numpy(x), full, seed=seed))
        b = summary(F.quantize(torch.from_numpy(x).cuda(), full, seed=seed))
        assert_same_summary(a, b, f"{full} cpu vs gpu")


def _tiny_blocks(rng) -> np.ndarray:
    """Blocks whose abs-max sits at 2**k for every k in [-149, -80] plus a few normal ones, filled
    with values down to 30 binades below it (fp32 subnormals included): they exercise the edges of
    the fused fake-quant fast path (scale exponents near -127, subnormal inputs, FTZ)."""
    rows = []
    for k in range(-149, -79):
        mant = rng.uniform(1, 2, 64) * rng.choice([-1.0, 1.0], 64)
        row = mant * np.exp2(k - rng.integers(0, 30, 64).astype(np.float64))
        row[::32] = np.exp2(k) * rng.uniform(1, 2, 2)
        rows.append(row)
    return np.concatenate([np.array(rows), rng.standard_normal((4, 64))]).astype(np.float32)


BLOCK_NAMES = [n for n in NAMES if isinstance(F.get(n), F.BlockSpec) and not F.get(n).is_nvfp4]


@pytest.mark.parametrize("name", BLOCK_NAMES + ["mxfp8_e4m3_ftz", "mxfp4_ftz", "mxfp6_e2m3_ftz"])
def test_fused_fake_quant_equals_quantize_then_dequantize(name):
    """The fused fake-quant paths (numba kernel and torch, each a float path for RNE with an integer
    fallback) give the bits of quantize() followed by dequantize(), for every rounding mode."""
    rng = np.random.default_rng(abs(hash(name)) % 2 ** 32)
    x = np.concatenate([_all_data(rng)[:, :64], _tiny_blocks(rng), _adversarial(rng)[:, :32].reshape(-1, 64)])
    for mode in ROUNDINGS:
        seed = 7 if mode == "sr" else None
        full = with_rounding(name, mode)
        for arr, axis in ((x, -1), (np.ascontiguousarray(x[:40].T), 0)):
            exp = F.quantize(arr, full, axis=axis, seed=seed).dequantize()
            got = F.fake_quant(arr, full, axis=axis, seed=seed)
            assert_same_float_bits(got, exp, f"{full} axis={axis}")
            got_t = F.fake_quant(torch.from_numpy(arr), full, axis=axis, seed=seed).numpy()
            assert_same_float_bits(got_t, exp, f"{full} torch axis={axis}")
