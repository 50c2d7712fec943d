"""The test oracles themselves reproduce the spec's known answers (docs/spec/formats.md §2, §6).

If these fail, the oracle is wrong, not hwsim. They import nothing from hwsim.
"""

import numpy as np
import pytest

import fmt_golden as G
import fmt_oracle as O


def test_philox_known_answers():
    first = O.philox_first_word((0, 0, 0, 0), (0, 0))
    assert int(first) == 0x6627E8D5
    assert int(O.philox_first_word((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2)) == 0x408F276D
    got = O.philox_first_word((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0))
    assert int(got) == 0xD16CFE09


def test_philox_seed42_indices():
    r = O.philox_r(42, np.arange(8))
    assert [int(v) for v in r] == G.G2_SR_R


@pytest.mark.parametrize("case", G.G1 + G.BLOCK_CASES, ids=lambda c: c[0])
def test_oracle_block_goldens(case):
    fmt, x, byte, codes, dec = case
    out = O.block_quantize(np.array(x, np.float32), fmt)
    assert int(out["scales"][0]) == byte
    n = len(x)
    if codes is not None:
        assert [int(c) for c in out["codes"][:n]] == codes
    np.testing.assert_array_equal(out["decoded"], np.array(dec, np.float32))


def test_oracle_g2():
    for x, modes in G.G2_MXINT8:
        for mode, code in modes.items():
            out = O.block_quantize(np.array([x], np.float32), "mxint8", rounding=mode)
            assert int(out["codes"][0]) == code, (x, mode)
    for x, modes in G.G2_MXFP4:
        for mode, code in modes.items():
            out = O.block_quantize(np.array([6.0, x], np.float32), "mxfp4", rounding=mode)
            assert int(out["codes"][1]) == code, (x, mode)
    for mode, code in G.G2_TINY.items():
        out = O.block_quantize(np.array([1.0, -2.0 ** -30], np.float32), "mxint8", rounding=mode)
        assert int(out["codes"][1]) == code
    for x, codes in G.G2_SR:
        out = O.block_quantize(np.array(x, np.float32), "mxint8_sr", seed=G.G2_SR_SEED)
        assert [int(c) for c in out["codes"][: len(x)]] == codes


def test_oracle_g8():
    out = O.block_quantize(np.array([G.G8_X], np.float32), "mxint4")
    assert out["scales"].tolist() == [G.G8_BYTES]
    assert out["codes"][0, :32].tolist() == G.G8_CODES0
    assert out["codes"][0, 32:].tolist() == G.G8_CODES1


def test_oracle_rne_rule_matches_ml_dtypes():
    """The hand-written rounding rule and the ml_dtypes cast agree on RNE (checks the oracle)."""
    bits = np.arange(0, 1 << 16, dtype=np.uint32) << 16
    x = bits.view(np.float32)
    x = x[np.isfinite(x)].astype(np.float64)
    for fe in (O.E4M3, O.E5M2, O.E3M2, O.E2M3, O.E2M1):
        a = O.float_round(x, fe, "rne")
        # the generic rule with an explicit RNE integer rounding
        with np.errstate(all="ignore"):
            _, ex = np.frexp(np.abs(x))
        E = np.maximum(ex - 1, fe.emin)
        y = np.clip(np.ldexp(np.rint(np.ldexp(x, -(E - fe.mbits))), E - fe.mbits), -fe.maxv, fe.maxv)
        np.testing.assert_array_equal(a, y)


def test_oracle_g11_nvfp4():
    out = O.nvfp4_quantize(np.array(G.G11_T6_X, np.float32))
    assert int(np.float32(out["tensor_scale"]).view(np.uint32)) == G.G11_T6["st_bits"]
    assert out["scales"].tolist() == G.G11_T6["sb"]
    out = O.nvfp4_quantize(np.array(G.G11_T100_X, np.float32))
    assert int(np.float32(out["tensor_scale"]).view(np.uint32)) == G.G11_T100["st_bits"]
    assert out["scales"].tolist() == G.G11_T100["sb"]
    assert out["codes"][16:19].tolist() == [7, 0, 8]


def test_oracle_g12():
    for name, sbits, codes in G.G12:
        if "c90" in name:
            continue
        b = int(name[3])
        out = O.scaled_int_quantize(np.array([G.G12_X], np.float32), b, "channel", half_range="hr" in name)
        assert int(out["scales"][0, 0]) == sbits, name
        assert out["codes"][0].tolist() == [c & (2 ** b - 1) for c in codes], name
    name, sbits, z, codes = G.G12_ASYM
    out = O.scaled_int_quantize(np.array([G.G12_ASYM_X], np.float32), 4, "group", group=8, asym=True)
    assert int(out["scales"][0, 0]) == sbits and int(out["zero_points"][0, 0]) == z
    assert out["codes"][0].tolist() == codes
