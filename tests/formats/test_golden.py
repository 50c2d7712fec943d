"""Every golden vector of docs/spec/formats.md §6 (G1-G12), the packing examples of §5 and the idempotence
counterexamples, on both codecs (numpy/numba and torch), checked bit for bit."""

import numpy as np
import pytest

import fmt_golden as G
import hwsim.formats as F
from fmt_helpers import BACKENDS, assert_same_float_bits, quantize, summary

pytestmark = pytest.mark.parametrize("backend", BACKENDS)


def _check_block(backend, fmt, x, byte, codes, dec, **kw):
    x = np.array(x, np.float32)
    s = summary(quantize(x, fmt, backend, **kw))
    n = len(x)
    assert int(s["scales"].reshape(-1)[0]) == byte, f"{fmt} {x}: scale byte {int(s['scales'].reshape(-1)[0])} != {byte}"
    if codes is not None:
        got = [int(c) for c in s["codes"][:n]]
        assert got == list(codes), f"{fmt} {x}: codes {[hex(c) for c in got]} != {[hex(c) for c in codes]}"
    assert (s["codes"][n:] == 0).all(), f"{fmt}: padded codes must be 0"
    assert s["decoded"].shape == (n,)
    assert_same_float_bits(s["decoded"], np.array(dec, np.float32), f"{fmt} {x} decoded")
    return s


@pytest.mark.parametrize("case", G.G1, ids=lambda c: f"{c[0]}-{c[1][0]:.4g}")
def test_g1_mxint8(backend, case):
    _check_block(backend, *case)


@pytest.mark.parametrize("mode", ["rne", "rna", "rtz", "rdn"])
def test_g2_rounding_mxint8(backend, mode):
    for x, modes in G.G2_MXINT8:
        code = modes[mode]
        k = code - 256 if code >= 128 else code
        _check_block(backend, f"mxint8_{mode}", [x], 127, [code], [k / 64])
        # the rounding= argument overrides the name's rounding (RNE name, explicit mode)
        _check_block(backend, "mxint8", [x], 127, [code], [k / 64], rounding=mode)
    code = G.G2_TINY[mode]
    _check_block(backend, f"mxint8_{mode}", [1.0, -2.0 ** -30], 127, [0x40, code],
                 [1.0, -0.015625 if code == 0xFF else 0.0])


@pytest.mark.parametrize("mode", ["rne", "rna", "rtz", "rdn"])
def test_g2_rounding_mxfp4(backend, mode):
    for x, modes in G.G2_MXFP4:
        code = modes[mode]
        val = G.E2M1_VALUES[code & 7] * (-1 if code & 8 else 1)
        _check_block(backend, f"mxfp4_{mode}", [6.0, x], 127, [7, code], [6.0, val])


def test_g2_stochastic_rounding(backend):
    for x, codes in G.G2_SR:
        dec = [(c - 256 if c >= 128 else c) / 64 for c in codes]
        _check_block(backend, "mxint8_sr", x, 127, codes, dec, seed=G.G2_SR_SEED)
        _check_block(backend, "mxint8", x, 127, codes, dec, rounding="sr", seed=G.G2_SR_SEED)


@pytest.mark.parametrize("case", G.BLOCK_CASES, ids=lambda c: f"{c[0]}-{c[1][0]:.4g}")
def test_g3_to_g10_blocks(backend, case):
    _check_block(backend, *case)


def test_g3_standalone_nosat(backend):
    cases = [("fp8_e4m3_nosat", 480, 0x7F), ("fp8_e4m3_nosat", 470, 0x7F), ("fp8_e4m3_nosat", -500, 0xFF),
             ("fp8_e4m3_nosat", 464, 0x7E), ("fp8_e4m3_nosat", float(np.float32(464.00003)), 0x7F),
             ("fp8_e5m2_nosat", 61439, 0x7B), ("fp8_e5m2_nosat", 61440, 0x7C)]
    for fmt, x, code in cases:
        s = summary(quantize(np.array([x], np.float32), fmt, backend))
        assert s["scales"] is None
        assert int(s["codes"][0]) == code, f"{fmt}({x}) -> {int(s['codes'][0]):#x}, expected {code:#x}"
        exp = {0x7F: np.nan, 0xFF: np.nan, 0x7E: 448.0, 0x7B: 57344.0, 0x7C: np.inf}[code]
        assert_same_float_bits(s["decoded"], np.array([exp], np.float32))
    # saturating standalone: 464.00003 -> 448, Inf -> max
    s = summary(quantize(np.array([464.00003, -1e9, np.inf, -np.inf], np.float32), "fp8_e4m3", backend))
    assert s["codes"].tolist() == [0x7E, 0xFE, 0x7E, 0xFE]


def test_g4_e2m1_decode_table(backend):
    codes = np.arange(16, dtype=np.uint8)
    got = F.decode_elem(codes, F.get("mxfp4").elem)
    exp = np.array(G.E2M1_VALUES + [-v for v in G.E2M1_VALUES], np.float32)
    exp[8] = -0.0
    assert_same_float_bits(got, exp)


def test_g7_bfp_nan_raises(backend):
    with pytest.raises(F.NonFiniteError):
        quantize(np.array([1.0, np.nan], np.float32), "bfp8", backend)


def test_g8_tail_block(backend):
    x = np.array([G.G8_X], np.float32)
    q = quantize(x, "mxint4", backend)
    s = summary(q)
    assert s["codes"].shape == (1, 64)
    assert s["scales"].shape == (1, 2)
    assert s["scales"][0].tolist() == G.G8_BYTES
    assert s["codes"][0, :32].tolist() == G.G8_CODES0
    assert s["codes"][0, 32:].tolist() == G.G8_CODES1
    assert s["decoded"].shape == (1, 40)
    assert_same_float_bits(s["decoded"][0, 32:], np.array(G.G8_DEC1, np.float32))
    assert q.nbytes == 34
    p = q.pack()
    assert p.nbytes == 34
    assert bytes(np.asarray(p.code_bytes, np.uint8)[16:32]) == G.G8_PACKED1
    assert np.asarray(p.scale_bytes, np.uint8).tolist() == G.G8_BYTES


@pytest.mark.parametrize("ex", G.PACK_EXAMPLES, ids=lambda e: f"{e[0]}-{len(e[1])}")
def test_pack_examples(backend, ex):
    fmt, codes, packed = ex
    spec = F.get(fmt)
    n = len(codes)
    kw = {}
    if spec.is_block:
        kw["scales"] = np.array([127], np.uint8)
    q = F.QTensor.from_codes(spec, np.array(codes, np.uint8), shape=(n,), **kw)
    p = q.pack()
    assert bytes(np.asarray(p.code_bytes, np.uint8)) == packed
    u = p.unpack()
    assert np.asarray(u.codes).tolist() == codes


def test_g11_nvfp4(backend):
    for x, g in ((G.G11_T6_X, G.G11_T6), (G.G11_T100_X, G.G11_T100)):
        s = summary(quantize(np.array(x, np.float32), "nvfp4", backend))
        assert int(s["tensor_scale"].view(np.uint32)) == g["st_bits"]
        assert s["scales"].tolist() == g["sb"]
        st = s["tensor_scale"]
        for b, (codes, dec) in enumerate(zip(g["codes"], g["dec"])):
            blk = s["codes"][16 * b: 16 * b + 16]
            assert blk[: len(codes)].tolist() == codes, f"block {b}"
            assert (blk[len(codes):] == 0).all()
            sb = np.array([g["sb"][b]], np.uint8).view(__import__("ml_dtypes").float8_e4m3fn).astype(np.float32)[0]
            d = np.float32(sb * st)
            assert d == np.float32(g["d"][b])
            vals = np.array([G.E2M1_VALUES[c & 7] * (-1 if c & 8 else 1) for c in codes], np.float32)
            exp = (vals * d).astype(np.float32)
            exp[np.array(codes, int) == 8] = -0.0
            got = s["decoded"][16 * b: 16 * b + len(codes)]
            assert_same_float_bits(got, exp, f"nvfp4 block {b}")
            assert_same_float_bits(got, np.array(dec, np.float32), f"nvfp4 block {b} vs table")


def _signed(c, b):
    return c - 2 ** b if c >= 2 ** (b - 1) else c


def test_g12_scaled_int(backend):
    x = np.array([G.G12_X], np.float32)
    for name, sbits, codes in G.G12:
        b = int(name[3])
        s = summary(quantize(x, name, backend))
        assert s["scales"].shape == (1, 1)
        assert int(s["scales"][0, 0]) == sbits, f"{name}: scale bits {int(s['scales'][0, 0]):#x} != {sbits:#x}"
        assert [_signed(int(c), b) for c in s["codes"][0]] == codes, name
        sc = np.array([sbits], np.uint16).view(np.float16).astype(np.float32)[0]
        exp = (sc * np.array(codes, np.float32)).astype(np.float32)
        assert_same_float_bits(s["decoded"][0], exp, name)
    name, sbits, z, codes = G.G12_ASYM
    s = summary(quantize(np.array([G.G12_ASYM_X], np.float32), name, backend))
    assert int(s["scales"][0, 0]) == sbits
    assert int(s["zero_points"][0, 0]) == z
    assert s["codes"][0].tolist() == codes
    sc = np.array([sbits], np.uint16).view(np.float16).astype(np.float32)[0]
    assert_same_float_bits(s["decoded"][0], (sc * (np.array(codes, np.float32) - z)).astype(np.float32))
    # all-zero slice: s = 2^-14 (0x0400), zero codes
    s = summary(quantize(np.zeros((2, 8), np.float32), "int8_ch", backend))
    assert s["scales"].reshape(-1).tolist() == [0x0400, 0x0400]
    assert (s["codes"] == 0).all()


def test_idempotence_counterexamples(backend):
    q1 = summary(quantize(np.array([0.51, 0.1], np.float32), "bfp4", backend))
    assert int(q1["scales"][0]) == 127
    assert_same_float_bits(q1["decoded"], np.array([0.5, 0.125], np.float32))
    q2 = summary(quantize(q1["decoded"], "bfp4", backend))
    assert int(q2["scales"][0]) == 126
    assert_same_float_bits(q2["decoded"], np.array([0.4375, 0.125], np.float32))
    q1 = summary(quantize(np.array([3.2, 1.0], np.float32), "mxfp4_rceil", backend))
    assert int(q1["scales"][0]) == 127 and q1["codes"][:2].tolist() == [5, 2]
    q2 = summary(quantize(q1["decoded"], "mxfp4_rceil", backend))
    assert int(q2["scales"][0]) == 126 and q2["codes"][:2].tolist() == [7, 4]
    assert_same_float_bits(q2["decoded"], q1["decoded"])
