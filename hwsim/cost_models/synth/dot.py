"""Complete multiply-accumulate units per format pair (one job: the structure of the cost model's PEs).

Each function mirrors one unit of ``hwsim.cost_models.units`` part by part, so a synthesized unit
checks the composition as well as the laws:

- ``int_mac`` (IntMAC): a x b multiplier, acc-bit adder, acc-bit register;
- ``block_dot_int`` (BlockDotInt: MXINT two's complement, BFP sign-magnitude elements): B
  multipliers, adder tree, scale-exponent adder, align shifter into the accumulator window,
  accumulator adder and register;
- ``block_dot_fp`` (BlockDotFP: MXFP, NVFP4): per lane an unsigned significand multiplier, the
  sign applied to the product, the product exponent, the block's largest product exponent (max
  tree), the difference to it and an arithmetic right shift into the W_win-bit window; the adder
  tree; the block exponent (scales + largest product exponent); for minifloat scales (NVFP4's
  UE4M3) the exact scale product and its multiplication into the block sum; then the same
  align / accumulate tail as the integer unit.

Ports: ``x``, ``w`` (B packed element codes), ``xs``, ``ws`` (block scale codes), ``clk``; outputs
``acc`` (the accumulator register) and ``blk_exp`` (the block's exponent, which also sets the align
shift). The accumulator register's next state is ``acc + (block sum << shift)`` (the sum's top
``acc`` bits when it is wider than the accumulator).
"""

from __future__ import annotations

from .arith import (MULTIPLIERS, add, adder_tree, clog2, cond_negate, max_tree, mult_baugh_wooley,
                    mult_signmag, mult_unsigned, sext, shift_left, shift_right, sub)
from .fp import decode
from .rtl import ZERO, Module


def signed_multiplier(m: Module, x: list[str], y: list[str], arch: str) -> list[str]:
    """Signed x * y with the named architecture ('baugh_wooley', 'booth4'; for Booth the narrower-
    row orientation is the caller's choice: y is recoded)."""
    return MULTIPLIERS[arch](m, x, y)


def accumulate(m: Module, total: list[str], blk_exp: list[str], acc_bits: int) -> None:
    """Align ``total`` into the accumulator window by ``blk_exp`` and add it to the register ``acc_q``.

    Wider than the accumulator: its top ``acc_bits`` bits are added (no shifter). Narrower: a left
    shifter over acc_bits - len(total) positions (amount: the low bits of ``blk_exp``)."""
    wt = len(total)
    m.output("blk_exp", blk_exp)
    if acc_bits > wt:
        k = clog2(acc_bits - wt + 1)
        m.section(f"align into the accumulator: {acc_bits}-bit shifter over {acc_bits - wt} positions")
        aligned = shift_left(m, sext(total, acc_bits), blk_exp[:k], acc_bits)
    else:
        aligned = total[wt - acc_bits:]
    m.section(f"accumulate ({acc_bits} bits) and register")
    q = [f"acc_q[{i}]" for i in range(acc_bits)]
    d = add(m, q, aligned, acc_bits)
    m.register("acc_q", d)
    m.output("acc", q)


def int_mac(m: Module, a: int, b: int, acc_bits: int, arch: str = "baugh_wooley") -> None:
    """IntMAC: acc_q <= acc_q + x * w (x: a bits, w: b bits, two's complement)."""
    x, w = m.input("x", a), m.input("w", b)
    m.section(f"{a} x {b} multiplier ({arch})")
    p = signed_multiplier(m, x, w, arch)
    q = [f"acc_q[{i}]" for i in range(acc_bits)]
    m.section(f"accumulate ({acc_bits} bits) and register")
    d = add(m, q, p, acc_bits)
    m.register("acc_q", d)
    m.output("acc", q)


def _lanes(bits: list[str], B: int, width: int) -> list[list[str]]:
    return [bits[i * width:(i + 1) * width] for i in range(B)]


def block_dot_int(m: Module, a: int, b: int, B: int, s: int, acc_bits: int, signmag: bool = False,
                  arch: str = "baugh_wooley") -> None:
    """BlockDotInt over B lanes of a-bit x b-bit elements with s-bit power-of-two scales.

    ``signmag``: elements are sign-magnitude (BFP): |x| * |w| unsigned, negated when the signs
    differ; otherwise two's complement (MXINT) with the ``arch`` multiplier."""
    xl, wl = _lanes(m.input("x", B * a), B, a), _lanes(m.input("w", B * b), B, b)
    xs, ws = m.input("xs", s), m.input("ws", s)
    prods = []
    for i in range(B):
        m.section(f"lane {i}: {a} x {b} multiplier ({'sign-magnitude' if signmag else arch})")
        if signmag:
            prods.append(mult_signmag(m, xl[i][:-1], xl[i][-1], wl[i][:-1], wl[i][-1]))
        else:
            prods.append(signed_multiplier(m, xl[i], wl[i], arch))
    total = adder_tree(m, prods)
    m.section(f"block exponent: scale add ({s + 1} bits)")
    blk_exp = add(m, xs, ws, s + 1, signed=False)
    accumulate(m, total, blk_exp, acc_bits)


def block_dot_fp(m: Module, ea, eb, B: int, s: int, acc_bits: int, window: int | None,
                 scale_elem=None) -> tuple[int, int]:
    """BlockDotFP over B lanes of minifloat elements (FloatElem ``ea``, ``eb``); returns (W_win, delta).

    ``scale_elem``: the FloatElem of an unsigned minifloat scale (NVFP4's UE4M3), else the scales
    are s-bit power-of-two exponents."""
    na, nb = 1 + ea.ebits + ea.mbits, 1 + eb.ebits + eb.mbits
    pa, pb = ea.mbits + 1, eb.mbits + 1
    delta = (ea.emax - ea.emin) + (eb.emax - eb.emin)
    w_exact = pa + pb + delta
    w_win = w_exact if window is None else min(w_exact, window)
    xl, wl = _lanes(m.input("x", B * na), B, na), _lanes(m.input("w", B * nb), B, nb)
    xs, ws = m.input("xs", s), m.input("ws", s)
    we = max(ea.ebits, eb.ebits) + 1
    prods, exps = [], []
    for i in range(B):
        m.section(f"lane {i}: decode, {pa} x {pb} significand product, sign, product exponent")
        sx, ex, gx = decode(m, xl[i], ea)
        sw, ew, gw = decode(m, wl[i], eb)
        p = mult_unsigned(m, gx, gw) + [ZERO]
        prods.append(cond_negate(m, p, m.xor(sx, sw, "ps")))
        exps.append(add(m, ex, ew, we, signed=False))
    m.section(f"largest product exponent of the block ({B}-input max tree, {we} bits)")
    e_max = max_tree(m, exps)
    k = clog2(delta + 1)
    aligned = []
    drop = w_exact - w_win
    for i in range(B):
        m.section(f"lane {i}: difference to the largest exponent, right shift into the {w_win}-bit window")
        diff = sub(m, e_max, exps[i], we + 1, signed=False)[:k]
        frame = [ZERO] * delta + prods[i]                   # product at the top of the exact frame
        shifted, _ = shift_right(m, frame, diff, fill=prods[i][-1])
        aligned.append(shifted[drop:])
    total = adder_tree(m, aligned)
    m.section("block exponent: scales + largest product exponent")
    if scale_elem is None:
        blk = add(m, xs, ws, s + 1, signed=False)
    else:
        m.section("minifloat scales: exact product of the two scales, applied to the block sum")
        _, exs, gxs = decode(m, xs[:scale_elem.ebits + scale_elem.mbits], scale_elem)
        _, ews, gws = decode(m, ws[:scale_elem.ebits + scale_elem.mbits], scale_elem)
        sprod = mult_unsigned(m, gxs, gws)
        blk = add(m, exs, ews, scale_elem.ebits + 1, signed=False)
        total = mult_baugh_wooley(m, total, sprod + [ZERO])[:len(total) + len(sprod)]
    blk_exp = add(m, blk, e_max, max(len(blk), we) + 1, signed=False)
    accumulate(m, total, blk_exp, acc_bits)
    return w_win, delta
