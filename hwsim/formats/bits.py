"""The fp32 bit layout and the helpers every bit-exact path shares (a leaf module: numpy, numba).

The exact kernels decompose an fp32 number into (sign, integer significand m < 2**24, exponent of
its least significant bit) and work on integers; the numbers below are the IEEE 754 binary32
layout they read (docs/spec/formats.md §0). ``POW2_F32`` is the one table of powers of two that the
numba, torch and matmul paths index; it is built from bit patterns, never with exp2/pow.
"""

from __future__ import annotations

import numba as nb
import numpy as np

# ---- IEEE 754 binary32 layout ----------------------------------------------------------------
F32_MANT_BITS = 23                       # stored mantissa bits
F32_BIAS = 127                           # exponent bias
F32_EMIN = 1 - F32_BIAS                  # -126: exponent of the smallest normal number
F32_EMAX = F32_BIAS                      # 127: exponent of the largest finite number
F32_LSB_EXP = F32_EMIN - F32_MANT_BITS   # -149: exponent of the last bit (smallest subnormal)
F32_LSB_BIAS = F32_BIAS + F32_MANT_BITS  # 150: a normal number with exponent field ef has LSB
                                         # exponent ef - 150 (significand m = mantissa | hidden bit)
F32_SIGN_SHIFT = 31
F32_SIGN_MASK = 1 << F32_SIGN_SHIFT      # 0x80000000
F32_ABS_MASK = F32_SIGN_MASK - 1         # 0x7FFFFFFF: |x| as bits
F32_MANT_MASK = (1 << F32_MANT_BITS) - 1  # 0x7FFFFF: the mantissa field
F32_HIDDEN_BIT = 1 << F32_MANT_BITS      # 0x800000: implicit leading one; also the bits of 2**-126
F32_INF_BITS = 0xFF << F32_MANT_BITS     # 0x7F800000: +Inf; |x| bits above it are NaN
F32_EXP_FIELD_MAX = 0xFF
F32_MAX_SHIFT = 62                       # right shifts of int64 significands are clamped here
F32_MAX_LSHIFT = 38                      # left shifts too (m < 2**24, so m << 38 < 2**62)
WORD_BITS = 32                           # Philox output word / SR threshold width

# ---- powers of two -------------------------------------------------------------------------
POW2_MIN = F32_LSB_EXP                   # -149
POW2_MAX = F32_EMAX                      # 127
POW2_ZERO = -POW2_MIN                    # 149: index of 2**0, i.e. POW2_F32[e + POW2_ZERO] == 2**e

# 2**k as fp32 for k in [-149, 127]: subnormals have one mantissa bit set, normals an exponent field.
POW2_F32 = np.concatenate([
    (np.uint32(1) << np.arange(F32_MANT_BITS, dtype=np.uint32)).view(np.float32),
    (np.arange(1, F32_EXP_FIELD_MAX, dtype=np.uint32) << np.uint32(F32_MANT_BITS)).view(np.float32),
]).astype(np.float32)
POW2_F32.setflags(write=False)
assert POW2_F32.shape == (POW2_MAX - POW2_MIN + 1,)


def pow2_f64(E) -> np.ndarray:
    """2**E as float64 built from the bit pattern, E integer in [-1022, 1023] (numpy)."""
    E = np.asarray(E, np.int64)
    return ((E + 1023) << 52).view(np.float64)


def is_torch(a) -> bool:
    """Whether ``a`` is a torch object (tested by module name, so torch is never imported here)."""
    return type(a).__module__.startswith("torch")


@nb.njit(cache=True, inline="always")
def bitlen(v):
    """Number of bits of a non-negative integer (0 for 0), as int.bit_length()."""
    n = 0
    while v > 0:
        v >>= 1
        n += 1
    return n


def bitlen_t(v):
    """Elementwise bit length of a non-negative int64 torch tensor below 2**53 (0 for 0): the
    exponent of frexp of the exact float64 value."""
    return v.double().frexp()[1].long()


def code_dtype_bits(bits: int) -> int:
    """Container width for codes of ``bits`` bits: 8, 16 or 32 (docs/spec/formats.md §5)."""
    return 8 if bits <= 8 else (16 if bits <= 16 else 32)


def code_dtype(bits: int) -> np.dtype:
    """The numpy unsigned container of codes of ``bits`` bits (``code_dtype_bits`` wide)."""
    return np.dtype(f"uint{code_dtype_bits(bits)}")
