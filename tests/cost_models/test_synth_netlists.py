"""Every generated netlist equals its arithmetic (issue 16): structural Verilog of each unit family,
synthesized by yosys, the gate netlist simulated in Python against integer / float arithmetic
(exhaustive when the inputs hold at most 16 bits, i.e. every operand pair of widths <= 6..8;
2000 random vectors above). Needs yosys (Debian package ``yosys``, installed by scripts/setup.sh)."""

import numpy as np
import pytest

from hwsim.cost_models.synth import arith, netsim, reference, yosys
from hwsim.cost_models.synth.catalog import EXHAUSTIVE_BITS, check, default_units, unit
from hwsim.cost_models.synth.flow import synthesize_unit
from hwsim.cost_models.synth.rtl import Module

needs_yosys = pytest.mark.skipif(not yosys.available(), reason="yosys is not installed (Debian package `yosys`; "
                                                               "scripts/setup.sh installs it)")

SMALL = (
    [unit("mult", a=a, b=b, arch=arch) for arch in ("baugh_wooley", "booth4") for a, b in
     ((2, 2), (2, 5), (3, 3), (4, 4), (5, 3), (6, 6), (4, 6))]
    + [unit("mult", a=a, b=b, arch="unsigned") for a, b in ((2, 2), (3, 5), (6, 6))]
    + [unit("adder", w=w) for w in (2, 3, 5, 6)]
    + [unit("adder_tree", inputs=B, w=w) for B, w in ((2, 6), (3, 4), (4, 4))]
    + [unit("shifter", width=W, positions=S) for W, S in ((6, 5), (8, 3), (5, 8))]
    + [unit("comparator", w=w) for w in (2, 5, 6)]
    + [unit("max_tree", inputs=B, w=w) for B, w in ((2, 6), (3, 5), (4, 4))]
    + [unit("lzc", w=w) for w in (1, 2, 3, 5, 6, 7, 8)]
    + [unit("fp", op=op, fmt=f) for op in ("mul", "add") for f in ("fp4_e2m1", "fp6_e2m3", "fp6_e3m2")]
    + [unit("int_mac", a=a, b=b, acc=acc) for a, b, acc in ((3, 5, 12), (6, 6, 16))]
    # every block dot-product generator, on 4 lanes (the shipped units use the formats' block sizes)
    + [unit("block_dot", fa=f, fw=f, acc=acc, lanes=4) for f, acc in
       (("mxint8", 32), ("mxint4", 16), ("bfp8", 32), ("bfp4", 12), ("mxfp8_e4m3", 32), ("mxfp8_e5m2", 32),
        ("mxfp6_e3m2", 24), ("mxfp4", 32), ("mxfp4", 10), ("nvfp4", 32))]
    + [unit("block_dot", fa="mxint8_b16", fw="mxint4_b16", acc=32, lanes=4)]
)


def _operand_bits(spec) -> int:
    p = spec.p
    return {"mult": lambda: p["a"] + p["b"], "adder": lambda: 2 * p["w"], "comparator": lambda: 2 * p["w"],
            "adder_tree": lambda: p["inputs"] * p["w"], "max_tree": lambda: p["inputs"] * p["w"],
            "lzc": lambda: p["w"], "shifter": lambda: p["width"] + arith.clog2(p["positions"] + 1),
            "int_mac": lambda: p["a"] + p["b"], "fp": lambda: 0, "block_dot": lambda: 99}[spec.family]()


@needs_yosys
@pytest.mark.parametrize("spec", SMALL, ids=str)
def test_small_unit_netlist_equals_arithmetic(spec):
    res = synthesize_unit(spec)   # raises SelfCheckError on the first differing vector
    assert res.transistors > 0 and res.vectors > 0
    # every operand combination when the operands hold <= 16 bits (all minifloat pairs here)
    assert res.exhaustive == (_operand_bits(spec) <= EXHAUSTIVE_BITS)


@needs_yosys
def test_wide_fp_units_equal_exact_rounding():
    """bf16 multiplier: random vectors (with equal exponents, near-cancellation and tiny values)
    against exact integer rounding."""
    res = synthesize_unit(unit("fp", op="mul", fmt="bf16"))
    assert not res.exhaustive and res.vectors >= 2000


@needs_yosys
def test_a_wrong_netlist_is_caught():
    """The check is not vacuous: a multiplier whose product drops its top bit fails."""
    spec = unit("mult", a=4, b=4, arch="baugh_wooley")
    m = Module(spec.name)
    x, y = m.input("x", 4), m.input("y", 4)
    p = arith.mult_baugh_wooley(m, x, y)
    m.output("p", p[:-1] + [m.and_(p[-1], x[0])])
    syn = yosys.synthesize(m.verilog(), spec.name)
    with pytest.raises(AssertionError, match="differs"):
        check(spec, syn.netlist)


@needs_yosys
def test_register_state_is_simulated():
    """An IntMAC's next accumulator is read from its flip-flops' D inputs."""
    res = synthesize_unit(unit("int_mac", a=2, b=2, acc=8))
    assert res.cells.get("$_DFF_P_") == 8


def test_exact_rounding_equals_the_format_codec():
    """The integer reference used for IEEE widths equals hwsim.formats' encoder on every minifloat pair."""
    from hwsim.cost_models.synth.catalog import _elem, _grid

    for f in ("fp4_e2m1", "fp6_e3m2", "fp8_e5m2"):
        el = _elem(f)
        c = reference.finite_codes(el)
        x, y = _grid([c, c])
        assert (reference.fp_mul(x, y, el) == reference.fp_mul_exact(x, y, el)).all()
        assert (reference.fp_add_values(x, y, el) == reference.fp_add_exact(x, y, el)).all()


def test_windowed_block_sum_is_the_float_dot_product_when_exact():
    """With an uncapped window, the BlockDotFP sum times 2^(E_max - delta) is the float dot product."""
    from hwsim.cost_models.synth.catalog import _elem

    el = _elem("mxfp4")
    rng = np.random.default_rng(1)
    codes = reference.finite_codes(el)
    x, w = rng.choice(codes, (500, 32)), rng.choice(codes, (500, 32))
    delta = 2 * (el.emax - el.emin)
    total, e_max = reference.block_fp_sum(x, w, el, el, 2 * (el.mbits + 1) + delta)
    scale = np.exp2((e_max - delta - 2 * (el.bias + el.mbits)).astype(float))
    assert np.array_equal(total * scale, reference.block_fp_value(x, w, el, el))


def test_netlist_simulator_gates():
    """Each yosys gate type evaluates to its truth table (hand-built netlist, no yosys needed)."""
    cells = {t: {"type": t, "connections": {"A": [2], "B": [3], "S": [4], "Y": [10 + i]}}
             for i, t in enumerate(["$_AND_", "$_NAND_", "$_OR_", "$_NOR_", "$_XOR_", "$_XNOR_", "$_ANDNOT_",
                                    "$_ORNOT_", "$_MUX_"])}
    ports = {"a": {"direction": "input", "bits": [2]}, "b": {"direction": "input", "bits": [3]},
             "s": {"direction": "input", "bits": [4]},
             "y": {"direction": "output", "bits": [10 + i for i in range(len(cells))]}}
    net = netsim.Netlist.from_json({"modules": {"t": {"ports": ports, "cells": cells}}})
    a, b, s = (np.array(v) for v in zip(*[(i & 1, i >> 1 & 1, i >> 2 & 1) for i in range(8)]))
    y = net.simulate({"a": a, "b": b, "s": s}).output("y")
    want = [a & b, 1 - (a & b), a | b, 1 - (a | b), a ^ b, 1 - (a ^ b), a & (1 - b), a | (1 - b),
            np.where(s == 1, b, a)]
    for i, w in enumerate(want):
        assert np.array_equal((y >> i) & 1, w), list(cells)[i]


def test_missing_yosys_names_the_package(monkeypatch):
    monkeypatch.setattr(yosys.shutil, "which", lambda name: None)
    with pytest.raises(yosys.YosysMissing, match="Debian package `yosys`"):
        yosys.yosys_path()


@pytest.mark.slow
@needs_yosys
@pytest.mark.parametrize("spec", default_units(), ids=str)
def test_every_shipped_unit_netlist_equals_arithmetic(spec):
    """The full set of a --refit (minutes): each unit synthesized and checked again."""
    synthesize_unit(spec)


@needs_yosys
def test_refit_writes_both_data_files(tmp_path):
    """flow.refit on a minimal set (every family a law is fitted on): both files, with provenance,
    and the fitted shapes read back."""
    from hwsim.cost_models.synth import data
    from hwsim.cost_models.synth.flow import refit

    specs = ([unit("adder", w=w) for w in (3, 6, 9)] + [unit("comparator", w=w) for w in (3, 6)]
             + [unit("lzc", w=w) for w in (4, 7)] + [unit("shifter", width=6, positions=5)]
             + [unit("mult", a=a, b=b, arch="baugh_wooley") for a, b in ((2, 2), (3, 4), (5, 5))]
             + [unit("mult", a=a, b=b, arch="booth4") for a, b in ((4, 4), (4, 6), (6, 4), (6, 6))]
             + [unit("fp", op=op, fmt=f) for op in ("mul", "add") for f in ("fp4_e2m1", "fp6_e3m2")])
    counts, laws = tmp_path / "counts.toml", tmp_path / "laws.toml"
    rep = refit(jobs=1, specs=specs, counts_path=counts, laws_path=laws)
    assert rep.units == len(specs)
    c, g = data.read_counts(counts), data.read_laws(laws)
    assert len(c["unit"]) == len(specs) and c["provenance"]["yosys"] == yosys.version()
    assert g["provenance"]["fitted_from"] == "synth_counts.toml"
    assert 20 < g["adder"]["per_bit_transistors"] < 50 and g["multiplier"]["booth_units"] == 4
