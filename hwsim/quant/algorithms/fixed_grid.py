"""Column-at-a-time rounding with scales fixed in advance (the rounding step inside GPTQ).

GPTQ rounds one input column at a time with scales that were chosen before the column is
reached (docs/spec/algorithms.md §4.2 step 5): block exponents of MXINT/BFP (and NVFP4 block scales) from
the unquantized W, integer scales per channel from the whole row, integer groups either static
(from the unquantized W) or lazily from the current, already-updated weights.

All encoding decisions are made by ``hwsim.formats``:
- scales and zero points come from ``hwsim.formats.quantize`` of W (or of a group slice); MX/BFP
  shared exponents from ``hwsim.formats.block_scales`` (the same codes, no elements encoded);
- element rounding goes through ``hwsim.formats.encode_floats``/``decode_elem``: minifloat
  elements directly, integer elements through an *integer grid* expressed as a minifloat,
  ``FloatElem(ebits=1, mbits=b-1, bias=2-b, specials="none")``, whose values are exactly the
  integers -(2**b - 1) .. 2**b - 1 (subnormals 0 .. 2**(b-1) - 1, one normal binade above), so
  every rounding mode of the library (RNE/RNA/RTZ/RDN) applies to integers unchanged; the
  integer range of the element is then applied as a clamp;
- the final QTensor is assembled with ``QTensor.from_codes`` and decoded by the library.
The only format knowledge here is the code layout of integer elements (two's complement or
sign-magnitude), the decode rules of docs/spec/formats.md §3 for one value, and the scaling by 2**-e.
"""

from __future__ import annotations

import numpy as np

from hwsim.formats.bits import code_dtype

from .common import record


def _int_grid(bits: int):
    """Minifloat whose finite values are exactly the integers -(2**bits - 1) .. 2**bits - 1."""
    from hwsim.formats import FloatElem

    return FloatElem(ebits=1, mbits=bits - 1, bias=2 - bits, specials="none")


class FixedGrid:
    """Rounds columns of a weight [out, in] (blocks along in) with pre-fixed scales.

    Usage: ``fg = FixedGrid(spec, W0)``; optionally ``fg.set_group(g, slice)`` for lazy integer
    groups; ``values, codes, n_sat = fg.round(col_index, w_col_fp32)``; at the end
    ``fg.qtensor()`` returns the QTensor of every rounded column (missing/padded columns are
    rounded as zeros).
    """

    def __init__(self, spec, W0: np.ndarray, lazy_groups: bool):
        import hwsim.formats as F
        from hwsim.formats import BlockSpec, FloatElem, IntElem, Rounding, ScaledIntSpec

        self.F = F
        self.spec = spec
        self.out, self.n_in = W0.shape
        if spec.rounding is Rounding.SR:
            raise ValueError(f"GPTQ does not support stochastic rounding (format {spec.name}): "
                             f"its random stream is indexed by element position")
        self.mode = spec.rounding
        W0 = np.ascontiguousarray(W0, dtype=np.float32)
        if isinstance(spec, BlockSpec) and not spec.is_nvfp4:
            # MX/BFP: only the shared exponents of W0 are fixed in advance; the sweep writes every
            # code, and the padded tail keeps the library's +0 codes
            scales = F.block_scales(W0, spec, axis=-1)
            self.codes = np.zeros((self.out, scales.shape[1] * spec.block_size), code_dtype(spec.element_bits))
            zero_points = tensor_scale = None
        else:
            q0 = F.quantize(W0, spec, axis=-1)
            scales, zero_points, tensor_scale = q0.scales, q0.zero_points, q0.tensor_scale
            self.codes = np.array(q0.codes, copy=True)  # padded [out, in_pad], overwritten per column
        #: the scale codes, zero points and tensor scale chosen from W0 (before any raise)
        self.scales0, self.zero_points0, self.tensor_scale0 = scales, zero_points, tensor_scale
        self.n_pad = self.codes.shape[1]
        self.done = np.zeros(self.n_pad, dtype=bool)
        self.lazy = False
        if isinstance(spec, BlockSpec):
            self.B = spec.block_size
            self.elem = spec.elem
            if spec.is_nvfp4:
                self.kind = "nvfp4"
                sb = F.decode_elem(scales, spec.scale.elem).astype(np.float32)
                self.d = (np.float32(tensor_scale) * sb).astype(np.float32)  # [out, nblk]
            else:
                self.kind = "block"
                sc = np.asarray(scales).astype(np.int64)
                if spec.scale.nan_code is not None and bool((sc == spec.scale.nan_code).any()):
                    raise ValueError(f"GPTQ: format {spec.name} gives a NaN block scale for this "
                                     f"weight (values beyond the scale range)")
                self.e = sc - spec.scale.bias  # [out, nblk]
                if isinstance(self.elem, IntElem):
                    self.grid = _int_grid(self.elem.bits)
            self.ftz = spec.input_ftz
        elif isinstance(spec, ScaledIntSpec):
            self.kind = "int"
            self.ftz = False
            b = spec.bits
            self.grid = _int_grid(b + 1)
            self.lo, self.hi = ((-(1 << (b - 1)), (1 << (b - 1)) - 1) if spec.symmetric
                                else (0, (1 << b) - 1))
            self.mask = (1 << b) - 1
            self.G = spec.group_size if spec.granularity == "group" else None
            self.s_codes = np.array(scales, copy=True)
            self.z = (np.zeros(self.s_codes.shape, np.int64) if zero_points is None
                      else np.asarray(zero_points).astype(np.int64))
            self.lazy = lazy_groups and self.G is not None
        elif isinstance(spec, FloatElem):
            raise ValueError(f"GPTQ needs a block or scaled-integer format, got the element-only "
                             f"format {spec.name} (use RTN)")
        else:  # pragma: no cover
            raise ValueError(f"GPTQ: unsupported format {spec!r}")
        if self.kind == "int":
            self._refresh_scales()

    # ---- scales ------------------------------------------------------------------------------
    def raise_exponents(self, mask: np.ndarray) -> int:
        """Block formats: shared exponent + 1 of the blocks where ``mask`` [out, nblk] is set (and
        the scale code allows it); the emitted QTensor carries the raised scale codes. Returns the
        number of blocks raised."""
        if self.kind != "block":
            raise ValueError(f"raise_exponents applies to MX/BFP block formats, not {self.spec.name}")
        sc = np.array(self.scales0, copy=True)
        m = np.asarray(mask, dtype=bool) & (sc.astype(np.int64) - self.spec.scale.bias < self.spec.scale.e_max)
        sc[m] = sc[m] + 1
        self.e = sc.astype(np.int64) - self.spec.scale.bias
        self.scale_codes = sc
        return int(m.sum())

    def _refresh_scales(self):
        s = self.F.decode_elem(self.s_codes, self.spec.scale.elem).astype(np.float32)
        self.s = np.broadcast_to(s, (self.out, s.shape[1])) if s.shape[0] == 1 else s
        self.zz = np.broadcast_to(self.z, self.s.shape)

    def group_of(self, j: int) -> int:
        if self.kind in ("block", "nvfp4"):
            return j // self.B
        if self.G is None:
            return 0
        return j // self.G

    def set_group(self, g: int, current: np.ndarray) -> None:
        """Lazy integer groups: scales of group g from the current weights [out, <= G]."""
        qg = self.F.quantize(np.ascontiguousarray(current, dtype=np.float32), self.spec, axis=-1)
        self.s_codes[:, g] = np.asarray(qg.scales)[:, 0]
        if qg.zero_points is not None:
            self.z[:, g] = np.asarray(qg.zero_points).astype(np.int64)[:, 0]
        self._refresh_scales()

    # ---- rounding ------------------------------------------------------------------------------
    def round(self, j: int, w: np.ndarray):
        """Round column j (values w, any float dtype; encoded as fp32 like the library does).

        Returns (dequantized values float64 [out], element codes [out], saturated count).
        """
        F = self.F
        x = np.asarray(w, dtype=np.float32)
        if self.ftz:
            x = np.where(np.abs(x) < np.float32(2.0 ** -126), np.copysign(np.float32(0), x), x)
        g = self.group_of(j)
        if self.kind == "block":
            e = self.e[:, g]
            v = np.ldexp(x.astype(np.float64), -e)  # exact: x * 2**-e
            from hwsim.formats import IntElem

            if isinstance(self.elem, IntElem):
                el = self.elem
                y = np.ldexp(v, -el.ie).astype(np.float32)
                r = F.decode_elem(F.encode_floats(y, self.grid, self.mode), self.grid)
                r = r.astype(np.int64)
                c = np.clip(r, el.c_min, el.c_max)
                n_sat = int(np.count_nonzero(c != r))
                if el.encoding == "signmag":
                    codes = (np.signbit(y).astype(np.int64) << (el.bits - 1)) | np.abs(c)
                else:
                    codes = c & ((1 << el.bits) - 1)
                vals = np.ldexp(c.astype(np.float64), e + el.ie)
            else:
                y = v.astype(np.float32)
                codes = F.encode_floats(y, self.elem, self.mode)
                n_sat = int(np.count_nonzero(np.abs(y) > self.elem.max_value))
                vals = np.ldexp(F.decode_elem(codes, self.elem).astype(np.float64), e)
        elif self.kind == "nvfp4":
            d = self.d[:, g]
            with np.errstate(divide="ignore", invalid="ignore"):
                y = np.where(d == 0, np.float32(0), x / np.where(d == 0, 1, d)).astype(np.float32)
            codes = F.encode_floats(y, self.elem, self.mode)
            codes = np.where(d == 0, 0, codes)
            n_sat = int(np.count_nonzero(np.abs(y) > self.elem.max_value))
            vals = (F.decode_elem(codes, self.elem) * d).astype(np.float32).astype(np.float64)
        else:
            s = self.s[:, g]
            z = self.zz[:, g]
            y = (x / s).astype(np.float32)  # RNE32(x / s), docs/spec/formats.md §3.3
            r = F.decode_elem(F.encode_floats(y, self.grid, self.mode), self.grid).astype(np.int64)
            raw = r + z
            c = np.clip(raw, self.lo, self.hi)
            n_sat = int(np.count_nonzero(c != raw))
            codes = c & self.mask if self.spec.symmetric else c
            vals = (s * (c - z).astype(np.float32)).astype(np.float32).astype(np.float64)
        self.codes[:, j] = codes.astype(self.codes.dtype)
        self.done[j] = True
        return vals, codes, n_sat

    def qtensor(self):
        """QTensor of all rounded columns; padded positions keep the library's padding codes."""
        missing = np.flatnonzero(~self.done[:self.n_in])
        if missing.size:  # pragma: no cover - the sweep rounds every column
            raise RuntimeError(f"GPTQ: columns {missing[:5].tolist()} were never rounded")
        F = self.F
        scales = getattr(self, "scale_codes", self.scales0)
        zps = self.zero_points0
        if self.kind == "int":
            scales = self.s_codes
            zps = None if self.spec.symmetric else self.z.astype(np.uint8)
        return F.QTensor.from_codes(self.spec, self.codes, scales, zps, self.tensor_scale0,
                                    shape=(self.out, self.n_in), axis=1)


def saturation_event(events, layer, n_sat: int) -> None:
    """Record (without a warning) how many elements saturated during the sweep."""
    if n_sat:
        record(events, "gptq", layer, "saturated", n_sat)

