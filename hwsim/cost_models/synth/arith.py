"""Integer datapath blocks drawn bit by bit (one job: the structure of each integer unit).

Every function takes a :class:`~.rtl.Module` and words (lists of signals, LSB first) and returns
words. The structures are the textbook ones the cost model's laws describe:

- ``add``: ripple-carry adder of full adders (the ``linear`` adder law);
- ``mult_baugh_wooley`` / ``mult_booth4`` / ``mult_unsigned``: a partial-product bit matrix
  (AND/NAND terms; radix-4 Booth rows) compressed column by column with full and half adders,
  carries into the next column (the ``pp_cpa`` law: partial products plus carry propagation);
- ``adder_tree``: a tree of ripple adders, +1 bit per level;
- ``shift_left`` / ``shift_right``: logarithmic barrel shifter, one 2:1 mux row per amount bit;
- ``greater`` / ``max2`` / ``max_tree``: borrow-chain comparator, compare-select tree;
- ``lzc``: leading-zero counter as a tree of (valid, count) nodes.
"""

from __future__ import annotations

from .rtl import ONE, ZERO, Module


def clog2(x: int) -> int:
    """ceil(log2 x), 0 for x <= 1."""
    return max(int(x) - 1, 0).bit_length()


def sext(x: list[str], width: int) -> list[str]:
    """Sign-extend (or truncate) a two's-complement word to ``width`` bits."""
    return list(x[:width]) + [x[-1]] * max(width - len(x), 0)


def zext(x: list[str], width: int) -> list[str]:
    """Zero-extend (or truncate) an unsigned word to ``width`` bits."""
    return list(x[:width]) + [ZERO] * max(width - len(x), 0)


def half_adder(m: Module, a: str, b: str) -> tuple[str, str]:
    return m.xor(a, b, "hs"), m.and_(a, b, "hc")


def full_adder(m: Module, a: str, b: str, c: str) -> tuple[str, str]:
    """(sum, carry): sum = a^b^c, carry = a&b | (a^b)&c."""
    t = m.xor(a, b, "fx")
    return m.xor(t, c, "fs"), m.or_(m.and_(a, b, "fg"), m.and_(t, c, "fp"), "fc")


def add(m: Module, x: list[str], y: list[str], width: int, signed: bool = True, cin: str = ZERO) -> list[str]:
    """x + y + cin, ripple carry, ``width`` output bits (operands extended to ``width``)."""
    ext = sext if signed else zext
    x, y = ext(x, width), ext(y, width)
    out, c = [], cin
    for i in range(width):
        s, c = full_adder(m, x[i], y[i], c)
        out.append(s)
    return out


def sub(m: Module, x: list[str], y: list[str], width: int, signed: bool = True) -> list[str]:
    """x - y as x + ~y + 1 (``width`` bits)."""
    ext = sext if signed else zext
    return add(m, ext(x, width), [m.not_(b) for b in ext(y, width)], width, True, ONE)


def increment(m: Module, x: list[str], inc: str) -> list[str]:
    """x + inc (one bit), a half-adder chain, same width as x."""
    out, c = [], inc
    for b in x:
        s, c = half_adder(m, b, c)
        out.append(s)
    return out


def cond_negate(m: Module, x: list[str], neg: str) -> list[str]:
    """``neg ? -x : x`` in two's complement, width of x: (x ^ neg) + neg."""
    return increment(m, [m.xor(b, neg, "ng") for b in x], neg)


def mux_word(m: Module, sel: str, a0: list[str], a1: list[str]) -> list[str]:
    """``sel ? a1 : a0`` bit by bit (equal widths)."""
    return [m.mux(sel, p, q) for p, q in zip(a0, a1)]


# ------------------------------------------------------------------------ bit matrices

def _fold_constants(cols: list[list[str]]) -> None:
    """Replace the ONE constants of every column by their binary sum (mod 2^width), in place."""
    width = len(cols)
    total = 0
    for k, col in enumerate(cols):
        total += sum(1 for b in col if b == ONE) << k
        col[:] = [b for b in col if b not in (ONE, ZERO)]
    total %= 1 << width
    for k in range(width):
        if (total >> k) & 1:
            cols[k].append(ONE)


def compress(m: Module, cols: list[list[str]]) -> list[str]:
    """Sum of a bit matrix (``cols[k]``: the bits of weight 2^k), modulo 2^len(cols).

    Each column is reduced to one bit by full adders (three bits to a sum in the column and a carry
    into the next) and a half adder for a last pair; the carries ripple up column by column.
    """
    cols = [list(c) for c in cols]
    _fold_constants(cols)
    out = []
    for k, col in enumerate(cols):
        while len(col) > 1:
            if len(col) >= 3:
                s, c = full_adder(m, col.pop(0), col.pop(0), col.pop(0))
            else:
                s, c = half_adder(m, col.pop(0), col.pop(0))
            col.append(s)
            if k + 1 < len(cols):
                cols[k + 1].append(c)
        out.append(col[0] if col else ZERO)
    return out


def mult_unsigned(m: Module, x: list[str], y: list[str], width: int | None = None) -> list[str]:
    """Unsigned x * y: AND partial products, compressed (len(x)+len(y) bits unless ``width``)."""
    width = width or len(x) + len(y)
    cols: list[list[str]] = [[] for _ in range(width)]
    for j, yj in enumerate(y):
        for i, xi in enumerate(x):
            if i + j < width:
                cols[i + j].append(m.and_(xi, yj, "pp"))
    return compress(m, cols)


def mult_baugh_wooley(m: Module, x: list[str], y: list[str]) -> list[str]:
    """Signed x * y (two's complement, a = len(x), b = len(y) >= 2), a + b bits.

    Baugh-Wooley: the partial products with exactly one sign bit enter inverted (NAND), and the
    constant 2^(a-1) + 2^(b-1) + 2^(a+b-1) (mod 2^(a+b)) corrects them.
    """
    a, b = len(x), len(y)
    if a < 2 or b < 2:
        raise ValueError(f"Baugh-Wooley needs operands of >= 2 bits, got {a} x {b}")
    width = a + b
    cols: list[list[str]] = [[] for _ in range(width)]
    for j in range(b):
        for i in range(a):
            t = m.and_(x[i], y[j], "pp")
            if (i == a - 1) != (j == b - 1):
                t = m.not_(t, "ppn")
            cols[i + j].append(t)
    for k in (a - 1, b - 1, a + b - 1):
        cols[k].append(ONE)
    return compress(m, cols)


def mult_booth4(m: Module, x: list[str], y: list[str]) -> list[str]:
    """Signed x * y by radix-4 Booth recoding of y, a + b bits.

    Each digit d = -2 y[2g+1] + y[2g] + y[2g-1] in {-2..2} selects 0, x or 2x (an (a+1)-bit row),
    inverted when negative with the +1 added at the row's LSB; each row's sign bit enters inverted
    with a constant -2^k correction, so no row is sign-extended.
    """
    a, b = len(x), len(y)
    width = a + b
    cols: list[list[str]] = [[] for _ in range(width)]
    yy = [ZERO] + list(y) + [y[-1]] * 2          # y[-1] = 0 below, sign-extended above
    xs = list(x) + [x[-1]]                        # x sign-extended to a+1 bits
    const = 0
    for g in range((b + 1) // 2):
        y_lo, y_mid, y_hi = yy[2 * g], yy[2 * g + 1], yy[2 * g + 2]
        one = m.xor(y_mid, y_lo, "b1")
        two = m.and_(m.xor(y_hi, y_mid, "bd"), m.not_(one), "b2")
        neg = y_hi
        shift = 2 * g
        row = []
        for j in range(a + 1):
            sel = m.or_(m.and_(one, xs[j], "bs"), m.and_(two, xs[j - 1] if j else ZERO, "bt"), "bm")
            row.append(m.xor(sel, neg, "bx"))
        for j, bit in enumerate(row):
            k = shift + j
            if k >= width:
                break
            if j == a:            # sign bit of the (a+1)-bit row: -s*2^k = ~s*2^k - 2^k
                cols[k].append(m.not_(bit, "bsn"))
                const -= 1 << k
            else:
                cols[k].append(bit)
        if shift < width:
            cols[shift].append(neg)
    const %= 1 << width
    for k in range(width):
        if (const >> k) & 1:
            cols[k].append(ONE)
    return compress(m, cols)


def mult_signmag(m: Module, xmag: list[str], xs: str, ymag: list[str], ys: str) -> list[str]:
    """Sign-magnitude operands -> two's-complement product: unsigned |x|*|y|, then negated when
    the signs differ; len(xmag) + len(ymag) + 1 bits."""
    p = mult_unsigned(m, xmag, ymag) + [ZERO]
    return cond_negate(m, p, m.xor(xs, ys, "psg"))


MULTIPLIERS = {"baugh_wooley": mult_baugh_wooley, "booth4": mult_booth4}


# ------------------------------------------------------------------------ trees, shifters

def adder_tree(m: Module, ops: list[list[str]], signed: bool = True) -> list[str]:
    """Sum of ``ops`` (equal width w) by a tree of ripple adders: level l adds (w+l-1)-bit pairs
    into w+l bits; an odd operand passes to the next level. Output w + ceil(log2 len(ops)) bits."""
    level = [list(o) for o in ops]
    w = len(level[0])
    lvl = 0
    while len(level) > 1:
        lvl += 1
        m.section(f"adder tree level {lvl}: {len(level) // 2} adders of {w + lvl} bits")
        ext = sext if signed else zext
        nxt = [add(m, level[i], level[i + 1], w + lvl, signed) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(ext(level[-1], w + lvl))
        level = nxt
    return level[0]


def shift_left(m: Module, x: list[str], amt: list[str], width: int | None = None) -> list[str]:
    """x << amt, zero fill, ``width`` output bits (default len(x)); one mux row per amount bit."""
    width = width or len(x)
    cur = zext(x, width)
    for k, s in enumerate(amt):
        d = 1 << k
        cur = [m.mux(s, cur[i], cur[i - d] if i >= d else ZERO, "shl") for i in range(width)]
    return cur


def shift_right(m: Module, x: list[str], amt: list[str], fill: str = ZERO, sticky: bool = False
                ) -> tuple[list[str], str]:
    """(x >> amt with ``fill`` shifted in, sticky = OR of the bits shifted out (ZERO unless
    ``sticky``)); same width as x; one mux row per amount bit."""
    cur = list(x)
    st = ZERO
    n = len(cur)
    for k, s in enumerate(amt):
        d = 1 << k
        if sticky:
            st = m.or_(st, m.and_(s, m.or_reduce(cur[:d], "stk")), "stk")
        cur = [m.mux(s, cur[i], cur[i + d] if i + d < n else fill, "shr") for i in range(n)]
    return cur, st


def greater(m: Module, x: list[str], y: list[str]) -> str:
    """x > y (unsigned, equal widths): the carry out of x + ~y, a chain of majority gates."""
    c = ZERO
    for xi, yi in zip(x, y):
        nyi = m.not_(yi)
        c = m.or_(m.and_(xi, nyi, "cg"), m.and_(c, m.or_(xi, nyi, "co"), "cp"), "cc")
    return c


def max2(m: Module, x: list[str], y: list[str]) -> list[str]:
    """max(x, y), unsigned: comparator + one mux per bit."""
    return mux_word(m, greater(m, y, x), x, y)


def max_tree(m: Module, ops: list[list[str]]) -> list[str]:
    """max of ``ops`` (unsigned, equal width) by a tree of len(ops) - 1 compare-select nodes."""
    level = [list(o) for o in ops]
    while len(level) > 1:
        nxt = [max2(m, level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def _lzc_node(m: Module, x: list[str]) -> tuple[str, list[str]]:
    """(any bit set, leading zeros of x within a power-of-two span; x MSB last)."""
    if len(x) == 1:
        return x[0], []
    half = len(x) // 2
    v_lo, c_lo = _lzc_node(m, x[:half])
    v_hi, c_hi = _lzc_node(m, x[half:])
    count = [m.mux(v_hi, lo, hi, "lzm") for lo, hi in zip(c_lo, c_hi)] + [m.not_(v_hi, "lzn")]
    return m.or_(v_hi, v_lo, "lzv"), count


def lzc(m: Module, x: list[str]) -> tuple[list[str], str]:
    """(leading zeros of x, clog2(len(x)+1) bits; all-zero flag). The word is padded at the LSB
    to a power of two with a one right below x (zeros under it), so an all-zero x counts exactly len(x)."""
    w = len(x)
    p = 1 << clog2(w)
    if p == w:
        valid, count = _lzc_node(m, list(x))
        out = [m.and_(valid, c, "lzo") for c in count] + [m.not_(valid, "lzz")]
        return out[:clog2(w + 1)], m.not_(valid)
    padded = [ZERO] * (p - w - 1) + [ONE] + list(x)
    _, count = _lzc_node(m, padded)
    zero = m.not_(m.or_reduce(list(x), "nz"))
    return count[:clog2(w + 1)], zero
