"""torch codec (CPU or GPU): the same integer-on-bits algorithms as ``numba_kernels``, vectorised.

Bit-identical to the numba path for every format and rounding mode (tests/formats cross-check).
All integer work is int64; powers of two come from a table built from bits. Inputs arrive
validated from ``api.py`` (block axis normalised); encoders return ``codec.Encoded`` fields.
"""

from __future__ import annotations

import warnings
from dataclasses import replace

import torch

from . import numba_kernels as K
from .bits import (F32_ABS_MASK, F32_BIAS, F32_EMAX, F32_EMIN, F32_HIDDEN_BIT, F32_INF_BITS,
                   F32_LSB_BIAS, F32_LSB_EXP, F32_MANT_BITS, F32_MANT_MASK, F32_MAX_LSHIFT, F32_MAX_SHIFT,
                   F32_SIGN_MASK, F32_SIGN_SHIFT, POW2_F32, POW2_ZERO, WORD_BITS, bitlen_t,
                   code_dtype_bits)
from .codec import Encoded
from .numba_kernels import (E_UNDERFLOW, FAST_E_HI, FAST_E_LO, FAST_E_LO_FTZ, KIND_INT, P_BIAS,
                            P_BITS, P_CMAX, P_CMIN, P_EBITS, P_EMAX, P_EMIN, P_IE, P_KIND,
                            P_MAXMANT, P_MBITS, P_SAT, P_SIGNMAG, P_SPECIALS, P_SUBN, PHILOX_M0,
                            PHILOX_M1, PHILOX_ROUNDS, PHILOX_W0, PHILOX_W1)
from .spec import (E4M3, MODE_RDN, MODE_RNA, MODE_RNE, MODE_RTZ, MODE_SR, NVFP4_ELEM_MAX,
                   NVFP4_SCALE_MAX, NVFP4_SCALE_NAN, NVFP4_TENSOR_DIV, RULE_CEIL, RULE_FLOOR,
                   SPECIALS_FN, SPECIALS_IEEE, SPECIALS_NONE, BlockSpec, FloatElem, IntElem,
                   NonFiniteError, NonFiniteWarning, Rounding, ScaledIntSpec)

_M32 = (1 << WORD_BITS) - 1
_POW2_CACHE: dict = {}


def pow2_table(device) -> torch.Tensor:
    """bits.POW2_F32 on ``device`` (index e + POW2_ZERO holds 2**e), built once per device."""
    t = _POW2_CACHE.get(device)
    if t is None:
        t = torch.from_numpy(POW2_F32.copy()).to(device)
        _POW2_CACHE[device] = t
    return t


def _params(elem) -> list[int]:
    return [int(v) for v in K.elem_params(elem)]


# ---- scalar building blocks, vectorised ------------------------------------------------------


def philox_u32(seed_lo: int, seed_hi: int, idx: torch.Tensor) -> torch.Tensor:
    """First word of Philox4x32-10 (key = seed words, counter = (idx lo, idx hi, 0, 0)), int64."""
    k0, k1 = seed_lo & _M32, seed_hi & _M32
    c0 = idx & _M32
    c1 = (idx >> WORD_BITS) & _M32
    c2 = torch.zeros_like(idx)
    c3 = torch.zeros_like(idx)
    for _ in range(PHILOX_ROUNDS):
        p0 = c0 * PHILOX_M0  # wraps modulo 2**64: the low 64 bits are exact
        p1 = c2 * PHILOX_M1
        n0 = ((p1 >> WORD_BITS) & _M32) ^ c1 ^ k0
        n2 = ((p0 >> WORD_BITS) & _M32) ^ c3 ^ k1
        c1, c3, c0, c2 = p1 & _M32, p0 & _M32, n0, n2
        k0 = (k0 + PHILOX_W0) & _M32
        k1 = (k1 + PHILOX_W1) & _M32
    return c0


def floor_log2_bits(ax: torch.Tensor) -> torch.Tensor:
    ef = ax >> F32_MANT_BITS
    return torch.where(ef == 0, bitlen_t(ax & F32_MANT_MASK) - F32_LSB_BIAS, ef - F32_BIAS)


def is_pow2_bits(ax: torch.Tensor) -> torch.Tensor:
    fr = ax & F32_MANT_MASK
    return torch.where((ax >> F32_MANT_BITS) == 0, (fr & (fr - 1)) == 0, fr == 0)


def round_mag(m, shift, neg, mode: int, r):
    """Integer magnitude of m * 2**-shift rounded with ``mode`` (see numba_kernels.round_mag)."""
    left = m << (-shift).clamp(0, F32_MAX_LSHIFT)
    sh = shift.clamp(1, F32_MAX_SHIFT)
    q = m >> sh
    rem = m - (q << sh)
    if mode in (MODE_RNE, MODE_RNA):
        half = torch.ones_like(sh) << (sh - 1)
        up = (rem > half) | ((rem == half) & ((q & 1) == 1)) if mode == MODE_RNE else rem >= half
    elif mode == MODE_RTZ:
        up = torch.zeros_like(rem, dtype=torch.bool)
    elif mode == MODE_RDN:
        up = (neg == 1) & (rem != 0)
    else:  # MODE_SR: the top 32 bits of the fraction against the random word
        f = torch.where(sh <= WORD_BITS, rem << (WORD_BITS - sh).clamp(min=0),
                        rem >> (sh - WORD_BITS).clamp(min=0))
        up = f > r
    return torch.where(shift <= 0, left, q + up.to(torch.int64))


def _decompose(xb):
    ax = xb & F32_ABS_MASK
    ef = ax >> F32_MANT_BITS
    m = torch.where(ef == 0, ax, (ax & F32_MANT_MASK) | F32_HIDDEN_BIT)
    lx = torch.where(ef == 0, torch.full_like(ef, F32_LSB_EXP), ef - F32_LSB_BIAS)
    return (xb >> F32_SIGN_SHIFT) & 1, ax, m, lx, floor_log2_bits(ax)


def encode_elem(xb, e, P, mode: int, r):
    """Element codes (int64) of finite fp32 bit patterns ``xb`` scaled by 2**-e."""
    neg, ax, m, lx, fl = _decompose(xb)
    if P[P_KIND] == KIND_INT:
        bits, cmin, cmax, ie, signmag = P[P_BITS], P[P_CMIN], P[P_CMAX], P[P_IE], P[P_SIGNMAG]
        n = torch.where(ax == 0, torch.zeros_like(m), round_mag(m, ie + e - lx, neg, mode, r))
        nneg = n.clamp(max=-cmin)
        negcode = ((1 << (bits - 1)) | nneg) if signmag else ((-nneg) & ((1 << bits) - 1))
        return torch.where(neg == 1, negcode, n.clamp(max=cmax))
    ebits, mbits, bias, emin, emax = P[P_EBITS], P[P_MBITS], P[P_BIAS], P[P_EMIN], P[P_EMAX]
    specials, subn, sat, maxmant = P[P_SPECIALS], P[P_SUBN], P[P_SAT], P[P_MAXMANT]
    signbit = neg << (ebits + mbits)
    E = (fl - e).clamp(min=emin)
    n = round_mag(m, E - mbits + e - lx, neg, mode, r)
    carry = n >= (1 << (mbits + 1))
    n = torch.where(carry, n >> 1, n)
    E = E + carry.to(torch.int64)
    sub = (E == emin) & (n < (1 << mbits))
    expf = torch.where(sub, torch.zeros_like(E), E + bias)
    mant = torch.where(sub, n, n - (1 << mbits))
    code = signbit | (expf << mbits) | mant
    ovf = (E > emax) | ((E == emax) & (mant > maxmant))
    maxcode = ((emax + bias) << mbits) | maxmant
    if sat or mode == MODE_RTZ:
        ovf_code = signbit | maxcode
    else:  # +-Inf (IEEE) or the NaN code ('fn')
        special = (((1 << ebits) - 1) << mbits) if specials == SPECIALS_IEEE else ((1 << (ebits + mbits)) - 1)
        ovf_code = signbit | special
        if mode == MODE_RDN:
            ovf_code = torch.where(neg == 1, ovf_code, signbit | maxcode)
    code = torch.where(ovf, ovf_code, code)
    zero = (ax == 0) | (n == 0)
    if not subn:
        zero = zero | sub
    return torch.where(zero, signbit, code)


def ldexp_f32(n: torch.Tensor, st: torch.Tensor, pow2: torch.Tensor) -> torch.Tensor:
    """RNE32(n * 2**st) for integers |n| < 2**24 (one rounding)."""
    f = n.to(torch.float32)
    e1 = st.clamp(F32_EMIN, F32_EMAX)
    e2 = st - e1
    v = (f * pow2[e1 + POW2_ZERO]) * pow2[e2.clamp(F32_LSB_EXP, F32_EMAX) + POW2_ZERO]
    return torch.where(e2 < F32_LSB_EXP, f * 0.0, v)


def decode_elem(code: torch.Tensor, e, P, pow2) -> torch.Tensor:
    """fp32 values of element codes times 2**e."""
    code = code.to(torch.int64)
    if P[P_KIND] == KIND_INT:
        bits, ie = P[P_BITS], P[P_IE]
        if P[P_SIGNMAG]:
            v = ldexp_f32(code & ((1 << (bits - 1)) - 1), ie + e, pow2)
            return torch.where(((code >> (bits - 1)) & 1) == 1, -v, v)
        c = torch.where((code >= (1 << (bits - 1))) & (P[P_CMIN] < 0), code - (1 << bits), code)
        return ldexp_f32(c, ie + e, pow2)
    ebits, mbits, bias, emin, specials = P[P_EBITS], P[P_MBITS], P[P_BIAS], P[P_EMIN], P[P_SPECIALS]
    neg = (code >> (ebits + mbits)) & 1
    expf = (code >> mbits) & ((1 << ebits) - 1)
    mant = code & ((1 << mbits) - 1)
    top = (1 << ebits) - 1
    sub = expf == 0
    n = torch.where(sub, mant, mant + (1 << mbits))
    st = torch.where(sub, torch.full_like(expf, emin), expf - bias) - mbits + e
    v = ldexp_f32(n, st, pow2)
    if specials == SPECIALS_IEEE:
        v = torch.where(expf == top, torch.where(mant == 0, torch.inf, torch.nan), v)
    elif specials == SPECIALS_FN:
        v = torch.where((expf == top) & (mant == (1 << mbits) - 1), torch.nan, v)
    return torch.where(neg == 1, -v, v)


# ---- layout helpers --------------------------------------------------------------------------


def _bits(x32: torch.Tensor) -> torch.Tensor:
    return x32.contiguous().view(torch.int32).to(torch.int64) & _M32  # fp32 bits as int64


def _rows(x: torch.Tensor, ax: int, G: int | None):
    """fp32 [rows, nblk, G] (zero-padded) moved view of x, and meta (lead shape, ax, post, L)."""
    x32 = x.detach().to(torch.float32)
    if x32.dim() == 0:
        x32 = x32.reshape(1)
    moved = x32.movedim(ax, -1)
    L = moved.shape[-1]
    lead = tuple(moved.shape[:-1])
    rows = 1
    for d in lead:
        rows *= d
    post = 1
    for d in x32.shape[ax + 1:]:
        post *= d
    G = L if G is None else G
    nblk = -(-L // G)
    flat = moved.reshape(rows, L)
    if nblk * G != L:
        flat = torch.nn.functional.pad(flat, (0, nblk * G - L))
    return flat.reshape(rows, nblk, G), (lead, ax, post, L)


def _unrows(a: torch.Tensor, meta, keep: int | None = None) -> torch.Tensor:
    lead, ax, _, L = meta
    a = a.reshape(a.shape[0], -1)
    if keep is not None:
        a = a[:, :keep]
    return a.reshape(lead + (a.shape[-1],)).movedim(-1, ax)


def _logical_index(meta, rows: int, nblk: int, G: int, device) -> torch.Tensor:
    _, _, post, L = meta
    r = torch.arange(rows, device=device, dtype=torch.int64)[:, None, None]
    i = (torch.arange(nblk, device=device, dtype=torch.int64)[None, :, None] * G
         + torch.arange(G, device=device, dtype=torch.int64)[None, None, :])
    return ((r // post) * L + i) * post + (r % post)


def _rand(mode: int, seeds, meta, shape, device):
    if mode != MODE_SR:
        return torch.zeros((), dtype=torch.int64, device=device)
    return philox_u32(seeds[0], seeds[1], _logical_index(meta, *shape, device))


_TORCH_UINT = {8: torch.uint8, 16: torch.uint16, 32: torch.uint32}


def _code_tensor(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Codes in the unsigned container of docs/spec/formats.md §5 (uint8 / uint16 / uint32)."""
    return codes.to(_TORCH_UINT[code_dtype_bits(bits)])


# ---- encoders ------------------------------------------------------------------------------


def quantize(x: torch.Tensor, spec, ax: int, mode: Rounding, seeds) -> Encoded:
    """Encoded fields of a validated input (``ax``: the normalised block axis)."""
    shape = tuple(x.shape)
    if isinstance(spec, FloatElem):
        codes = _encode_standalone(x.detach().to(torch.float32).reshape(-1), spec, mode.code, seeds)
        return Encoded(_code_tensor(codes.reshape(shape), spec.bits))
    if isinstance(spec, BlockSpec) and not spec.is_nvfp4:
        codes, scales, meta = _encode_blocks(x, spec, ax, mode.code, seeds)
        return Encoded(_code_tensor(_unrows(codes, meta), spec.element_bits),
                       _unrows(scales, meta).to(torch.uint8))
    if isinstance(spec, BlockSpec):
        return _nvfp4(x, spec, ax, mode.code, seeds)
    return _scaled_int(x, spec, ax, mode.code, seeds)


def _encode_standalone(x32: torch.Tensor, elem: FloatElem, mode: int, seeds) -> torch.Tensor:
    P = _params(elem)
    xb = _bits(x32)
    idx = torch.arange(xb.numel(), device=xb.device, dtype=torch.int64)
    r = (philox_u32(seeds[0], seeds[1], idx) if mode == MODE_SR
         else torch.zeros((), dtype=torch.int64, device=xb.device))
    ebits, mbits, emax, bias, maxmant = P[P_EBITS], P[P_MBITS], P[P_EMAX], P[P_BIAS], P[P_MAXMANT]
    signbit = ((xb >> F32_SIGN_SHIFT) & 1) << (ebits + mbits)
    ax = xb & F32_ABS_MASK
    finite = ax < F32_INF_BITS
    codes = encode_elem(torch.where(finite, xb, torch.zeros_like(xb)), 0, P, mode, r)
    top = (1 << ebits) - 1
    maxcode = ((emax + bias) << mbits) | maxmant
    if P[P_SPECIALS] == SPECIALS_IEEE:
        nancode, infcode = (top << mbits) | (1 << max(mbits - 1, 0)), top << mbits
    else:
        nancode = infcode = (1 << (ebits + mbits)) - 1
    inf_c = signbit | (maxcode if P[P_SAT] else infcode)
    isnan = ax > F32_INF_BITS
    if P[P_SPECIALS] == SPECIALS_NONE:  # no NaN code: -0
        nan_c = torch.full_like(xb, 1 << (ebits + mbits))
        lost = int(isnan.sum())
        if lost:
            warnings.warn(f"{lost} NaN input(s) encoded as -0: format {elem.name} has no NaN code",
                          NonFiniteWarning, stacklevel=4)
    else:
        nan_c = signbit | nancode
    codes = torch.where(ax == F32_INF_BITS, inf_c, codes)
    return torch.where(isnan, nan_c, codes)


def _encode_blocks(x, spec: BlockSpec, ax: int, mode: int, seeds):
    B = spec.block_size
    blk, meta = _rows(x, ax, B)
    rows, nblk, _ = blk.shape
    xb = _bits(blk)
    elem = spec.elem
    P = _params(elem)
    L = meta[3]
    if spec.input_ftz:
        xb = torch.where((xb & F32_ABS_MASK) < F32_HIDDEN_BIT, xb & F32_SIGN_MASK, xb)
    e, nonfinite = _block_exponents(xb & F32_ABS_MASK, spec, x)
    r = _rand(mode, seeds, meta, (rows, nblk, B), x.device)
    codes = encode_elem(xb, e[:, :, None], P, mode, r)
    pos = torch.arange(nblk * B, device=x.device).reshape(1, nblk, B)
    codes = torch.where(nonfinite[:, :, None] | (pos >= L), torch.zeros_like(codes), codes)
    sc = spec.scale
    scales = torch.where(nonfinite, torch.full_like(e, sc.nan_code or 0), e + sc.bias)
    return codes, scales, meta


def _block_exponents(absb: torch.Tensor, spec: BlockSpec, x: torch.Tensor):
    """(clamped shared exponent int64 [rows, nblk], non-finite mask) from the |x| bit patterns
    ``absb`` [rows, nblk, B] (int32 or int64; FTZ already applied). Raises NonFiniteError for a
    non-finite block when the scale has no NaN code (x: the input, to name the bad index)."""
    elem = spec.elem
    if spec.input_ftz:
        absb = torch.where(absb < F32_HIDDEN_BIT, torch.zeros_like(absb), absb)
    nonfin_el = absb >= F32_INF_BITS
    nonfinite = nonfin_el.any(dim=2)
    amax = torch.where(nonfin_el, torch.zeros_like(absb), absb).amax(dim=2).to(torch.int64)
    emax_elem = elem.emax_elem if isinstance(elem, IntElem) else elem.emax
    rule = spec.rule.code
    if rule == RULE_FLOOR:
        e = floor_log2_bits(amax) - emax_elem
    elif rule == RULE_CEIL:
        e = floor_log2_bits(amax) + (~is_pow2_bits(amax)).to(torch.int64) - emax_elem - 1
    else:
        af = amax.to(torch.int32).view(torch.float32)
        rq = _bits(af / torch.tensor(elem.max_value, dtype=torch.float32, device=af.device))
        e = torch.where(rq == 0, torch.full_like(rq, E_UNDERFLOW),
                        floor_log2_bits(rq) + (~is_pow2_bits(rq)).to(torch.int64))
    sc = spec.scale
    e = torch.where(amax == 0, torch.full_like(e, sc.e_min), e).clamp(min=sc.e_min)
    if sc.nan_code is not None:
        nonfinite = nonfinite | (e > sc.e_max)
    else:
        e = e.clamp(max=sc.e_max)
        if bool(nonfinite.any()):
            xf = x.detach().reshape(-1)
            idx = int(torch.nonzero(~torch.isfinite(xf))[0])
            raise NonFiniteError(f"input tensor has a non-finite value at flat index {idx} "
                                 f"({float(xf[idx])}); format {spec.name} has no NaN scale code")
    return e, nonfinite


def _fake_blocks_rne(x: torch.Tensor, spec: BlockSpec, ax: int) -> torch.Tensor:
    """Fused RNE fake quantization of MX/BFP blocks (fp32 result of x's shape), the torch mirror of
    numba_kernels._fake_block_rne: float arithmetic on blocks whose exponent makes it exact, the
    integer codec on the others (gathered, usually none)."""
    B = spec.block_size
    blk, meta = _rows(x, ax, B)
    bits = blk.view(torch.int32)
    e, nonfinite = _block_exponents(bits & F32_ABS_MASK, spec, x)
    elem = spec.elem
    P = _params(elem)
    ftz = spec.input_ftz
    e3 = e[:, :, None]
    p2 = pow2_table(x.device)
    if isinstance(elem, IntElem):
        st = e3 + elem.ie
        fast = (st >= (FAST_E_LO_FTZ if ftz else FAST_E_LO)) & (st <= FAST_E_HI)
        stc = st.clamp(FAST_E_LO, FAST_E_HI)
        y = torch.round(blk * p2[POW2_ZERO - stc]).clamp_(float(elem.c_min), float(elem.c_max))
        if elem.encoding != "signmag":
            y = y + 0.0  # two's complement has no -0
        y = y * p2[POW2_ZERO + stc]
    else:
        mbits, emin = elem.mbits, elem.emin
        lo = max(FAST_E_LO, F32_EMIN - emin,
                 FAST_E_LO_FTZ + mbits - emin if ftz else FAST_E_LO)
        fast = (e3 >= lo) & (e3 <= F32_EMAX)
        ec = e3.clamp(FAST_E_LO, F32_EMAX)
        shift = F32_MANT_BITS - mbits
        half = (1 << (shift - 1)) - 1
        rounded = ((bits + half + ((bits >> shift) & 1)) & ~((1 << shift) - 1)).view(torch.float32)
        inv_e = p2[POW2_ZERO - ec]
        v = blk * inv_e
        y = torch.where(v.abs() < 2.0 ** emin,
                        torch.round(v * 2.0 ** (mbits - emin)) * 2.0 ** (emin - mbits),
                        rounded * inv_e)
        vmax = float(elem.max_value)
        y = y.clamp_(-vmax, vmax) * p2[POW2_ZERO + ec]
    slow = ~fast & ~nonfinite[:, :, None]
    if bool(slow.any()):
        r_i, b_i = torch.nonzero(slow[:, :, 0], as_tuple=True)
        xb = _bits(blk[r_i, b_i])
        if ftz:
            xb = torch.where((xb & F32_ABS_MASK) < F32_HIDDEN_BIT, xb & F32_SIGN_MASK, xb)
        es = e[r_i, b_i][:, None]
        y[r_i, b_i] = decode_elem(encode_elem(xb, es, P, MODE_RNE, None), es, P, p2)
    y = torch.where(nonfinite[:, :, None], torch.nan, y)
    return _unrows(y, meta, meta[3])


def encode_floats(values: torch.Tensor, elem: FloatElem) -> torch.Tensor:
    """RNE-saturating element codes of fp32 values (scale casts)."""
    if not elem.saturate:
        elem = replace(elem, saturate=True)
    return encode_elem(_bits(values.to(torch.float32)), 0, _params(elem), MODE_RNE, None)


def _scale_cast(s: torch.Tensor, elem: FloatElem):
    P = _params(elem)
    pow2 = pow2_table(s.device)
    codes = encode_floats(s, elem)
    dec = decode_elem(codes, 0, P, pow2)
    tiny = int(encode_floats(torch.tensor([elem.min_normal], dtype=torch.float32), elem)[0])
    codes = torch.where(dec == 0, torch.full_like(codes, tiny), codes)
    return codes, decode_elem(codes, 0, P, pow2)


def _scaled_int(x, spec: ScaledIntSpec, ax: int, mode: int, seeds) -> Encoded:
    shape = tuple(x.shape)
    if not bool(torch.isfinite(x).all()):
        idx = int(torch.nonzero(~torch.isfinite(x.detach().reshape(-1)))[0])
        raise NonFiniteError(f"input tensor has a non-finite value at flat index {idx}; scaled "
                             f"integer format {spec.name} cannot represent it")
    G = spec.group_size if spec.granularity == "group" else None
    blk, meta = _rows(x, ax, G)
    rows, ns, g = blk.shape
    b = spec.bits
    clip = torch.tensor(spec.clip_ratio, dtype=torch.float32)
    if spec.granularity == "tensor":
        red = lambda f, a: f(a).reshape(1, 1).expand(rows, ns)
    else:
        red = lambda f, a: f(a, dim=2)
    if spec.symmetric:
        a = red(torch.amax, blk.abs())
        if spec.clip_ratio != 1.0:
            a = a * clip
        s_codes, s_dec = _scale_cast(a / torch.tensor(spec.divisor_value, dtype=torch.float32),
                                     spec.scale.elem)
        z = torch.zeros_like(s_codes)
        lo, hi = -(1 << (b - 1)), (1 << (b - 1)) - 1
    else:
        lo_v = red(torch.amin, blk).clamp(max=0.0)
        hi_v = red(torch.amax, blk).clamp(min=0.0)
        if spec.clip_ratio != 1.0:
            lo_v, hi_v = lo_v * clip, hi_v * clip
        s_codes, s_dec = _scale_cast((hi_v - lo_v) / torch.tensor(spec.divisor_value),
                                     spec.scale.elem)
        z = torch.round(-lo_v / s_dec).clamp(0, (1 << b) - 1).to(torch.int64)
        lo, hi = 0, (1 << b) - 1
    y = _bits(blk / s_dec[:, :, None])
    neg, ax_, m, lx, _ = _decompose(y)
    r = _rand(mode, seeds, meta, (rows, ns, g), x.device)
    n = torch.where(ax_ == 0, torch.zeros_like(m), round_mag(m, -lx, neg, mode, r))
    c = (torch.where(neg == 1, -n, n) + z[:, :, None]).clamp(lo, hi)
    pos = torch.arange(ns * g, device=x.device).reshape(1, ns, g)
    c = torch.where(pos >= meta[3], torch.zeros_like(c), c) & ((1 << b) - 1)
    keep = ns * g if G is not None else meta[3]
    codes = _unrows(c, meta, keep).to(torch.uint8)
    if spec.granularity == "tensor":
        ones = (1,) * len(shape)
        sc = s_codes.reshape(-1)[:1].reshape(ones)
        zp = None if spec.symmetric else z.reshape(-1)[:1].reshape(ones).to(torch.uint8)
    else:
        sc = _unrows(s_codes, meta)
        zp = None if spec.symmetric else _unrows(z, meta).to(torch.uint8)
    sc = _code_tensor(sc, spec.scale_bits)
    if not shape:
        codes, sc = codes.reshape(()), sc.reshape(())
        zp = None if zp is None else zp.reshape(())
    return Encoded(codes, sc, zp)


def _nvfp4(x, spec: BlockSpec, ax: int, mode: int, seeds) -> Encoded:
    blk, meta = _rows(x, ax, spec.block_size)
    rows, nblk, B = blk.shape
    finite = torch.isfinite(blk)
    absb = torch.where(finite, blk.abs(), torch.zeros_like(blk))
    t = absb.amax() if absb.numel() else torch.tensor(0.0)
    s_t = torch.where(t == 0, torch.ones_like(t), t / torch.tensor(NVFP4_TENSOR_DIV))
    r = (absb.amax(dim=2) / torch.tensor(NVFP4_ELEM_MAX)) / s_t
    P4 = _params(E4M3)
    sb_codes = encode_floats(torch.clamp(r, max=NVFP4_SCALE_MAX), E4M3)
    sb = decode_elem(sb_codes, 0, P4, pow2_table(x.device))
    d = s_t * sb
    bad = ~finite.all(dim=2)
    zero_blk = (d == 0) | bad
    y = torch.where(zero_blk[:, :, None], torch.zeros_like(blk), blk / d[:, :, None])
    rnd = _rand(mode, seeds, meta, (rows, nblk, B), x.device)
    codes = encode_elem(_bits(y), 0, _params(spec.elem), mode, rnd)
    pos = torch.arange(nblk * B, device=x.device).reshape(1, nblk, B)
    codes = torch.where(zero_blk[:, :, None] | (pos >= meta[3]), torch.zeros_like(codes), codes)
    sb_codes = torch.where(bad, torch.full_like(sb_codes, NVFP4_SCALE_NAN), sb_codes)
    return Encoded(_unrows(codes, meta).to(torch.uint8), _unrows(sb_codes, meta).to(torch.uint8),
                   tensor_scale=float(s_t))


# ---- decoders ------------------------------------------------------------------------------


_ELEM_TABLES: dict = {}


def _elem_table(elem, device) -> torch.Tensor:
    """fp32 value of every code of an element format (scale 2**0), indexed by code."""
    key = (elem, device)
    t = _ELEM_TABLES.get(key)
    if t is None:
        codes = torch.arange(1 << elem.bits, dtype=torch.int64)
        t = decode_elem(codes, torch.zeros_like(codes), _params(elem), pow2_table(codes.device)).to(device)
        _ELEM_TABLES[key] = t
    return t


def dequantize(q) -> torch.Tensor:
    """fp32 values of a QTensor with torch codes (same device)."""
    return decode(q.spec, Encoded(q.codes, q.scales, q.zero_points, q.tensor_scale), q.shape, q.axis)


def decode(spec, q: Encoded, shape, axis: int) -> torch.Tensor:
    """fp32 values of encoded fields of the logical ``shape`` blocked along ``axis``."""
    shape = tuple(shape)
    codes = q.codes.to(torch.int64)
    pow2 = pow2_table(codes.device)
    if isinstance(spec, FloatElem):
        return decode_elem(codes, 0, _params(spec), pow2).reshape(shape)
    ax = axis
    L = shape[ax] if shape else 1
    if isinstance(spec, BlockSpec):
        B = spec.block_size
        scales = q.scales.to(torch.int64)

        def per_element(t):  # per-block values [.., nblk, ..] -> per element along ax
            return t.repeat_interleave(B, dim=ax).narrow(ax, 0, codes.shape[ax])

        if spec.is_nvfp4:
            s_full = per_element(scales)
            vals = decode_elem(codes, 0, _params(spec.elem), pow2)
            d = decode_elem(s_full, 0, _params(E4M3), pow2) * torch.tensor(
                q.tensor_scale, dtype=torch.float32, device=codes.device)
            out = torch.where(s_full == NVFP4_SCALE_NAN, torch.nan, vals * d)
        else:
            sc = spec.scale
            # element value (exact fp32) times exact powers of two: for e <= 127 one IEEE
            # multiply, i.e. the single rounding RNE32(n * 2**st) of decode_elem; e = 128 (BFP)
            # takes 2**127 first, exact (or overflowing, as the result would) before the *2.
            # The multipliers are built per block (NaN for a NaN scale code), then expanded.
            e = scales - sc.bias
            mult = pow2[e.clamp(max=F32_EMAX) + POW2_ZERO]
            if sc.nan_code is not None:
                mult = torch.where(scales == sc.nan_code, torch.nan, mult)
            out = _elem_table(spec.elem, codes.device)[codes] * per_element(mult)
            if bool((e > F32_EMAX).any()):
                out = out * per_element(pow2[(e - F32_EMAX).clamp(min=0) + POW2_ZERO])
        return out.narrow(ax, 0, L).reshape(shape)
    s_full = decode_elem(q.scales.to(torch.int64), 0, _params(spec.scale.elem), pow2)
    zp = None if spec.symmetric else q.zero_points.to(torch.int64)
    if spec.granularity == "group":
        s_full = s_full.repeat_interleave(spec.group_size, dim=ax)
        zp = None if zp is None else zp.repeat_interleave(spec.group_size, dim=ax)
    b = spec.bits
    c = torch.where(codes >= (1 << (b - 1)), codes - (1 << b), codes) if zp is None else codes - zp
    out = s_full * c.to(torch.float32)
    if spec.granularity == "group":
        out = out.narrow(ax, 0, L)
    return out.reshape(shape)


class _StraightThrough(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, y):
        return y

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def fake_quant(x: torch.Tensor, spec, ax: int, mode: Rounding, seeds) -> torch.Tensor:
    """dequantize(quantize(x)) with a straight-through gradient; output dtype = input dtype
    (x validated, ``ax`` the normalised block axis)."""
    with torch.no_grad():
        if mode is Rounding.RNE and isinstance(spec, BlockSpec) and not spec.is_nvfp4:
            y = _fake_blocks_rne(x.detach(), spec, ax).to(x.dtype)
        else:
            enc = quantize(x.detach(), spec, ax, mode, seeds)
            y = decode(spec, enc, tuple(x.shape), ax).to(x.dtype)
    if x.requires_grad:
        return _StraightThrough.apply(x, y)
    return y
