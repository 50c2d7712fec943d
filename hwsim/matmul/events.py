"""Accumulator events of the fixed-point datapath (docs/matmul.md, "Accumulator events").

A ``FixedAcc`` (``fixed:W:F[:wrap][:rne]``) adds each segment product P_j to a W-bit register with F
fractional bits: t = rnd(P_j * 2**F), A <- ovf(A + t). :class:`AccEvents` counts what that costs, per
call or summed over many calls (a QLinear sums its forwards):

- ``adds``: nonzero segment products added to an accumulator;
- ``saturations``: adds whose result was clamped to the register range (overflow="saturate");
- ``wraps``: adds whose result wrapped around (overflow="wrap"; a product that alone leaves the
  range counts as a wrap);
- ``rounded``: adds whose alignment to the 2**-F grid dropped nonzero low bits of the product;
- ``flushed``: nonzero products that rounded to 0 (the whole product was below the grid);
- ``max_bits_lost``: the most significant bits of one product dropped by that alignment
  (bit length of the discarded magnitude);
- ``outputs``: outputs computed; ``nan_outputs``: outputs that are NaN (NaN/Inf scales or codes);
- ``calls``: matmul calls counted.

The counts come from the CPU GEMM path of the fixed accumulator (``gemm.run_fixed``), which computes
the same bits as the reference kernel. ``complete`` is False when some call ran on a backend that does
not count (the numba reference for NaN/Inf element codes or segment sums wider than 53 bits; GPU).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["AccEvents", "EV_FIELDS", "N_EV"]

#: order of the per-thread int64 counter arrays filled by the numba epilogue
EV_FIELDS = ("adds", "saturations", "wraps", "rounded", "flushed", "max_bits_lost")
N_EV = len(EV_FIELDS)


@dataclass
class AccEvents:
    """Counts of fixed-point accumulator events (see the module docstring); summable with ``+=``."""

    accumulator: str = ""
    calls: int = 0
    outputs: int = 0
    adds: int = 0
    saturations: int = 0
    wraps: int = 0
    rounded: int = 0
    flushed: int = 0
    max_bits_lost: int = 0
    nan_outputs: int = 0
    complete: bool = True

    def add_counts(self, counts: np.ndarray) -> None:
        """Add one per-thread counter array (``EV_FIELDS`` order)."""
        c = [int(v) for v in np.asarray(counts).reshape(-1)[:N_EV]]
        self.adds += c[0]
        self.saturations += c[1]
        self.wraps += c[2]
        self.rounded += c[3]
        self.flushed += c[4]
        self.max_bits_lost = max(self.max_bits_lost, c[5])

    def __iadd__(self, other: "AccEvents") -> "AccEvents":
        if not self.accumulator:
            self.accumulator = other.accumulator
        for f in ("calls", "outputs", "adds", "saturations", "wraps", "rounded", "flushed", "nan_outputs"):
            setattr(self, f, getattr(self, f) + getattr(other, f))
        self.max_bits_lost = max(self.max_bits_lost, other.max_bits_lost)
        self.complete = self.complete and other.complete
        return self

    @property
    def overflows(self) -> int:
        """Saturations plus wraps."""
        return self.saturations + self.wraps

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        s = (f"{self.accumulator or 'fixed'}: {self.calls} calls, {self.outputs} outputs, {self.adds} adds, "
             f"{self.saturations} saturations, {self.wraps} wraps, {self.rounded} rounded "
             f"(max {self.max_bits_lost} bits lost), {self.flushed} flushed")
        if self.nan_outputs:
            s += f", {self.nan_outputs} NaN outputs"
        if not self.complete:
            s += " (incomplete: some calls ran on a backend that does not count)"
        return s
