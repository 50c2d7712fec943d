"""Design points of a study: what is evaluated once (accuracy) and what is costed many times (hardware).

A design point is one :class:`AccuracyPoint` (model, corpora, protocol, recipe, formats, rank,
emulation mode) combined with one :class:`HardwarePoint` (an accelerator and the phases it is
costed in). Accuracy is expensive and is computed once per accuracy point; cost is cheap and is
computed for every pair. Both are frozen, JSON-serialisable and hashed by :func:`config_key`.

Format fields follow ``hwsim quantize``: ``None`` keeps the recipe preset's format, ``"none"``
means high precision (bypass).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields
from functools import cached_property
from typing import Any, Mapping

__all__ = ["AccuracyPoint", "HardwarePoint", "DesignPoint", "config_key", "KEY_SCHEMA"]

#: bumped when the meaning of a point's fields changes, so old rows are not mistaken for new ones
KEY_SCHEMA = 1
#: hex digits of sha256 kept in a key (64 bits: collisions are negligible for any real study)
KEY_HEX_DIGITS = 16


def config_key(kind: str, config: Mapping[str, Any]) -> str:
    """Stable hash of a configuration: sha256 of its canonical JSON (sorted keys, no spaces)."""
    blob = json.dumps({"kind": kind, "schema": KEY_SCHEMA, "config": config}, sort_keys=True,
                      separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:KEY_HEX_DIGITS]


class _Point:
    """A frozen point whose fields are all scalars (str, int, float, None): ``to_dict`` is a
    shallow dict (dataclasses.asdict's deep copy would give the same dict, far more slowly), and
    ``key`` is computed once per instance (a study computes it for every pair it plans, costs and
    stores)."""

    KIND = ""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]):
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @cached_property
    def key(self) -> str:
        return config_key(self.KIND, self.to_dict())


@dataclass(frozen=True)
class AccuracyPoint(_Point):
    """One quantized model evaluated once.

    model: zoo name or local path. eval_corpus / calib_corpus: corpus names (``hwsim.eval.data``).
    seq_len, n_tokens: evaluation windows (tokens). n_calib x calib_len: calibration sequences x
    tokens. recipe: a preset name or stages joined by '+'. w / x / lowrank_fmt: formats (None =
    preset default, "none" = high precision). rank: low-rank k (None = preset default; 0 = none).
    mode: "fake" or "exact" emulation. accumulator: exact mode's accumulator in ``hwsim.matmul``'s
    grammar, canonical name ("fp32", "fixed:24:8:rne", "exact"); the default "fp32" is left out of
    ``key``, so points written before this field existed keep their keys. qsur: also measure the
    QSUR of every quantizer input before and after the recipe's transforms and store its summary
    (``hwsim.quant.qsur``); False is left out of ``key`` like the default accumulator.
    """

    KIND = "accuracy"

    model: str = "smollm2-135m"
    eval_corpus: str = "austen"
    calib_corpus: str = "austen"
    seq_len: int = 512
    n_tokens: int = 2048
    n_calib: int = 32
    calib_len: int = 512
    seed: int = 0
    recipe: str = "rtn"
    w: str | None = None
    x: str | None = None
    lowrank_fmt: str | None = None
    rank: int | None = None
    mode: str = "fake"
    accumulator: str = "fp32"
    qsur: bool = False

    @cached_property
    def key(self) -> str:
        d = self.to_dict()
        if d["accumulator"] == "fp32":
            del d["accumulator"]
        if not d["qsur"]:
            del d["qsur"]
        return config_key(self.KIND, d)

    @property
    def protocol_key(self) -> str:
        """Key of what the full-precision baseline depends on (model, corpus, windows)."""
        return config_key("protocol", {k: getattr(self, k) for k in ("model", "eval_corpus", "seq_len", "n_tokens")})

    @property
    def calib_key(self) -> str:
        """Key of the calibration data (model tokenizer, corpus, sampling)."""
        return config_key("calib", {k: getattr(self, k) for k in ("model", "calib_corpus", "n_calib", "calib_len",
                                                                  "seed")})

    @property
    def label(self) -> str:
        """Short human label, e.g. ``l2qer W=mxint4 X=mxint8 r=32``."""
        parts = [self.recipe]
        if self.w is not None:
            parts.append(f"W={self.w}")
        if self.x is not None:
            parts.append(f"X={self.x}")
        if self.rank is not None:
            parts.append(f"r={self.rank}")
        if self.lowrank_fmt is not None:
            parts.append(f"AB={self.lowrank_fmt}")
        if self.mode != "fake":
            parts.append(self.mode)
        if self.accumulator != "fp32":
            parts.append(f"acc={self.accumulator}")
        if self.qsur:
            parts.append("qsur")
        return " ".join(parts)


@dataclass(frozen=True)
class HardwarePoint(_Point):
    """One accelerator, costed for a prefill pass and for one decode step.

    rows x cols PEs with ``dataflow`` ('ws' | 'os' | 'is'); node_nm and library select the
    technology data; sram_kib: ifmap / filter buffers (KiB each; ofmap gets half); dram: DRAM type;
    dram_gbps: bandwidth (GB/s, None = the type's default); clock_mhz (None = the library's);
    acc: accumulator of the datapath (the one grammar of ``hwsim.matmul.datapath.parse_accumulator``:
    'int32', 'fixed:24:8', 'fp32', an int width, ...; stored canonical, e.g. 24 -> 'int24'; None = the
    unit's default). prefill_seq: tokens of the prefill pass; decode_context:
    KV length of the decode step; batch: sequences.
    """

    KIND = "hardware"

    rows: int = 32
    cols: int = 32
    dataflow: str = "ws"
    node_nm: float = 7.0
    library: str = "horowitz45"
    sram_kib: int = 256
    dram: str = "HBM2"
    dram_gbps: float | None = None
    clock_mhz: float | None = None
    acc: str | None = None
    prefill_seq: int = 512
    decode_context: int = 512
    batch: int = 1

    @property
    def label(self) -> str:
        """Short human label, e.g. ``32x32 ws 7nm HBM2`` (`` acc=int24`` when an accumulator is set)."""
        acc = f" acc={self.acc}" if self.acc is not None else ""
        return f"{self.rows}x{self.cols} {self.dataflow} {self.node_nm:g}nm {self.dram}{acc}"


@dataclass(frozen=True)
class DesignPoint:
    """An accuracy point costed on one hardware point; ``key`` is the resume key of the pair."""

    accuracy: AccuracyPoint
    hardware: HardwarePoint

    @property
    def key(self) -> str:
        return config_key("design", {"accuracy": self.accuracy.key, "hardware": self.hardware.key})

    @property
    def label(self) -> str:
        return f"{self.accuracy.label} @ {self.hardware.label}"
