"""R x C systolic array: WS/OS/IS dataflows, SRAM/DRAM traffic, stalls, area, energy (docs/spec/cost_model.md §5).

All quantities are closed forms (SCALE-Sim's mapping, Samajdar et al., ISPASS 2020), evaluated
with numpy so that a sweep over array shapes and dataflows is one vectorised call
(:meth:`SystolicArray.sweep`; :class:`ArrayBatch` for whole models through ``cost_model``). Shapes: A is M x K activations, W is K x N weights, Y is M x N.
Units: cycles, pJ, um^2, bytes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

import numpy as np

from .components import SRAM, Register
from .fmt import FP16, FormatInfo, describe
from .tech import Technology, get_technology
from .units import PEConfig, build_pe

DATAFLOWS = ("ws", "os", "is")
_DF_CODE = {d: i for i, d in enumerate(DATAFLOWS)}


def _check_dim(name: str, v) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
        raise ValueError(f"{name}={v!r} must be a positive integer")
    return int(v)


def _check_dataflow(dataflow: str) -> str:
    d = str(dataflow).lower() if isinstance(dataflow, str) else dataflow
    if d not in DATAFLOWS:
        raise ValueError(f"dataflow={dataflow!r} is unknown; valid: {list(DATAFLOWS)}")
    return d


# --------------------------------------------------------------------------------------------
# closed forms (numpy; broadcast over R, C, dataflow code, M, K, N)
# --------------------------------------------------------------------------------------------

def _cdiv(a, b):
    return -(-a // b)


class Flow(NamedTuple):
    """One dataflow's closed forms (docs/spec/cost_model.md §5): the mapping of the GEMM onto the array and how
    often each operand passes through its SRAM port, in terms of the fold counts F_R, F_C.

    S_R x S_C is the matrix mapped onto R x C PEs (F_R = ceil(S_R/R) by F_C = ceil(S_C/C) folds),
    T the time steps of a fold; ``kr`` counts how many times a fold's rows are traversed (2 when
    the stationary operand is first loaded through them). ``a_passes`` / ``w_passes`` / ``y_passes``
    ("1", "FR" or "FC"): how many times A is read, W is read, Y is written (partial sums are read
    back y_passes - 1 times and spill to DRAM when they do not fit). ``regs``: the operand registers
    written per action; ``stationary``: the operand loaded once per fold into the PEs ("a", "w", None).
    """

    SR: Any
    SC: Any
    T: Any
    kr: int
    a_passes: str
    w_passes: str
    y_passes: str
    regs: tuple[str, ...]
    stationary: str | None


def weight_stationary(M, Kp, N) -> Flow:
    """WS: W [K', N] stays in the PEs; A streams through in M steps, is read once per column fold,
    and each row fold writes Y once (partial sums of the previous row folds read back)."""
    return Flow(SR=Kp, SC=N, T=M, kr=2, a_passes="FC", w_passes="1", y_passes="FR", regs=("a",),
                stationary="w")


def output_stationary(M, Kp, N) -> Flow:
    """OS: Y [M, N] accumulates in the PEs over K' steps; A is read once per column fold, W once
    per row fold, Y written once (no partial sums leave the array)."""
    return Flow(SR=M, SC=N, T=Kp, kr=1, a_passes="FC", w_passes="FR", y_passes="1", regs=("a", "w"),
                stationary=None)


def input_stationary(M, Kp, N) -> Flow:
    """IS: A^T [K', M] stays in the PEs; W streams through in N steps, is read once per column fold,
    A once, and each row fold writes Y once (partial sums read back)."""
    return Flow(SR=Kp, SC=M, T=N, kr=2, a_passes="1", w_passes="FC", y_passes="FR", regs=("w",),
                stationary="a")


FLOWS = (weight_stationary, output_stationary, input_stationary)   # in DATAFLOWS order (df codes)


def _select(df, values):
    """Per element of the dataflow codes ``df``, the value of its dataflow (values in FLOWS order)."""
    return np.choose(df, [np.asarray(v, dtype=np.int64) for v in values])


def _flows(M, K, N, df, lanes=1):
    """(the three Flows, K') for int64 arrays M, K, N, df (broadcast)."""
    M, K, N, df = (np.asarray(x, dtype=np.int64) for x in (M, K, N, df))
    Kp = _cdiv(K, np.int64(lanes))
    return [f(M, Kp, N) for f in FLOWS], Kp


def _passes(flows, field_name: str, df, FR, FC):
    """The pass count ``field_name`` of each element's dataflow, as int64 (broadcast)."""
    count = {"1": np.ones_like(FR), "FR": FR, "FC": FC}
    return _select(df, [count[getattr(f, field_name)] for f in flows])


def mapping(M, K, N, df, lanes=1):
    """(S_R, S_C, T, K') of SCALE-Sim's mapping; df: 0 = WS, 1 = OS, 2 = IS (arrays broadcast)."""
    flows, Kp = _flows(M, K, N, df, lanes)
    df = np.asarray(df, dtype=np.int64)
    SR, SC, T = (_select(df, [getattr(f, k) for f in flows]) for k in ("SR", "SC", "T"))
    return SR, SC, T, Kp


def _kr(df):
    return _select(np.asarray(df, dtype=np.int64), [f(0, 0, 0).kr for f in FLOWS])


def fold_cycles(SR, SC, T, R, C, df, compat=False):
    """Compute cycles (no stalls) summed over folds.

    default: WS/IS 2*S_R*F_C + S_C*F_R + F*(T-2); OS S_R*F_C + S_C*F_R + F*(T-2).
    compat (scalesim_compat=True): F*(2R+C+T-2) for WS/IS, F*(R+C+T-2) for OS. This is
    SCALE-Sim's trace length, one more than the "Total Cycles" its report prints: the report gives
    the 0-based index of the last cycle (one MAC on a 1x1 output-stationary array reports 0, here 1).
    """
    SR, SC, T, R, C, df = (np.asarray(x, dtype=np.int64) for x in (SR, SC, T, R, C, df))
    FR, FC = _cdiv(SR, R), _cdiv(SC, C)
    F = FR * FC
    kr = _kr(df)
    if compat:
        return F * (kr * R + C + T - 2), FR, FC
    return kr * SR * FC + SC * FR + F * (T - 2), FR, FC


def _fold_tau(r, c, T, kr, R, C, compat):
    if compat:
        return kr * R + C + T - 2
    return kr * r + c + T - 2


def stall_cycles(t_mem, SR, SC, T, R, C, df, compat=False, double_buffer=True):
    """DRAM stall cycles with per-fold memory time ``t_mem`` (cycles, uniform over folds).

    double-buffered: t_mem + sum_{f>1} max(0, t_mem - tau_f); otherwise F * t_mem.
    """
    SR, SC, T, R, C, df = (np.asarray(x, dtype=np.int64) for x in (SR, SC, T, R, C, df))
    t_mem = np.asarray(t_mem, dtype=np.float64)
    FR, FC = _cdiv(SR, R), _cdiv(SC, C)
    F = FR * FC
    if not double_buffer:
        return F * t_mem
    kr = _kr(df)
    r_full, c_full = np.minimum(R, SR), np.minimum(C, SC)
    r_last, c_last = SR - (FR - 1) * R, SC - (FC - 1) * C
    total = np.zeros(np.broadcast(t_mem, SR, R, df).shape)
    classes = (
        ((FR - 1) * (FC - 1), r_full, c_full),
        ((FR - 1) * np.minimum(FC, 1), r_full, c_last),
        (np.minimum(FR, 1) * (FC - 1), r_last, c_full),
        (np.ones_like(F), r_last, c_last),
    )
    for n, r, c in classes:
        tau = _fold_tau(r, c, T, kr, R, C, compat)
        total = total + n * np.maximum(0.0, t_mem - tau)
    # first fold (0, 0): replace its overlap term by the full t_mem
    r0 = np.where(FR > 1, r_full, SR)
    c0 = np.where(FC > 1, c_full, SC)
    tau0 = _fold_tau(r0, c0, T, kr, R, C, compat)
    return total - np.maximum(0.0, t_mem - tau0) + t_mem


# --------------------------------------------------------------------------------------------
# configuration and results
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SRAMConfig:
    """On-chip buffers (bytes). Each partition is banked; energy uses the bank capacity."""

    ifmap_bytes: int = 256 * 1024
    filter_bytes: int = 256 * 1024
    ofmap_bytes: int = 128 * 1024
    word_bits: int = 64
    banks: int = 8

    def __post_init__(self):
        for k in ("ifmap_bytes", "filter_bytes", "ofmap_bytes", "word_bits", "banks"):
            _check_dim(k, getattr(self, k))


@dataclass(frozen=True)
class GemmResult:
    """Cost of one GEMM Y[M,N] = A[M,K] @ W[K,N] on one array (cycles, pJ, bytes)."""

    M: int
    K: int
    N: int
    rows: int
    cols: int
    dataflow: str
    a_format: str
    w_format: str
    pe: str
    lanes: int
    folds: tuple[int, int]
    compute_cycles: int
    stall_cycles: int
    cycles: int
    utilization: float
    mapping_efficiency: float
    macs: int
    pe_actions: int
    latency_s: float
    energy_pj: float
    energy_breakdown: dict
    sram_accesses: dict
    sram_bits: dict
    dram_bytes: dict
    area_um2: float
    assumptions: dict = field(default_factory=dict, repr=False)
    warnings: tuple[str, ...] = ()

    @property
    def ops(self) -> int:
        return 2 * self.macs

    @property
    def dram_total_bytes(self) -> int:
        return int(sum(self.dram_bytes.values()))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class AreaReport:
    """Area of an array (um^2) with a breakdown by part."""

    total_um2: float
    breakdown: dict

    @property
    def total_mm2(self) -> float:
        return self.total_um2 / 1e6

    def __float__(self) -> float:
        return float(self.total_um2)


def _fmt_name(f: FormatInfo) -> str:
    return f.name


class SystolicArray:
    """R x C array of PEs (scalar MACs or B-lane block dot-product units).

    Parameters: rows, cols; dataflow 'ws' | 'os' | 'is'; scalesim_compat (charge the full array
    on every fold, as scale-sim-v2: the cycles then equal SCALE-Sim's trace length, which is one
    more than the "Total Cycles" its report prints, the 0-based index of the last cycle); tech (Technology, library name or None); node (shortcut for
    tech.at_node); sram (SRAMConfig); double_buffer; overhead_fraction; a_format / w_format /
    acc: the default PE formats used by :meth:`area` and when :meth:`gemm` gets none.
    """

    def __init__(self, rows: int, cols: int, dataflow: str = "ws", scalesim_compat: bool = False, *,
                 tech: Technology | str | None = None, node: Any = None, sram: SRAMConfig | None = None,
                 double_buffer: bool = True, overhead_fraction: float = 0.0, a_format: Any = None,
                 w_format: Any = None, acc: Any = None, out_format: Any = None, mxfp_window: int | None = 32):
        self.rows = _check_dim("rows", rows)
        self.cols = _check_dim("cols", cols)
        self.dataflow = _check_dataflow(dataflow)
        self.scalesim_compat = bool(scalesim_compat)
        self.tech = get_technology(tech, node)
        self.sram = sram or SRAMConfig()
        self.double_buffer = bool(double_buffer)
        if not (0 <= overhead_fraction < 10):
            raise ValueError(f"overhead_fraction={overhead_fraction!r} must be in [0, 10)")
        self.overhead_fraction = float(overhead_fraction)
        self.a_format, self.w_format, self.acc = a_format, w_format, acc
        self.out_format = out_format
        self.mxfp_window = mxfp_window
        t = self.tech
        self._sram_units = {p: SRAM(getattr(self.sram, f"{p}_bytes"), self.sram.word_bits, self.sram.banks, tech=t)
                            for p in ("ifmap", "filter", "ofmap")}
        self._reg_bit = Register(1, tech=t)

    def __repr__(self):
        return (f"SystolicArray({self.rows}, {self.cols}, {self.dataflow!r}, scalesim_compat={self.scalesim_compat}, "
                f"node={self.tech.node_nm:g}nm, library={self.tech.library!r})")

    # ---------------------------------------------------------------- helpers
    def pe_config(self, a_format=None, w_format=None, acc=None, k: int | None = None) -> PEConfig:
        a = a_format if a_format is not None else self.a_format
        w = w_format if w_format is not None else self.w_format
        if a is None or w is None:
            raise ValueError("a_format and w_format must be given (to gemm/area or to the SystolicArray constructor)")
        return build_pe(a, w, acc if acc is not None else self.acc, window=self.mxfp_window, k=k, tech=self.tech)

    def _out_info(self, out_format) -> FormatInfo:
        o = out_format if out_format is not None else self.out_format
        return FP16 if o is None else describe(o)

    @staticmethod
    def _reg_bits(f: FormatInfo, lanes: int) -> int:
        return f.element_bits * lanes + (f.scale_bits if f.is_block else 0)

    def _pe_area(self, cfg: PEConfig) -> float:
        regs = self._reg_bits(cfg.a, cfg.lanes) + self._reg_bits(cfg.w, cfg.lanes)
        return cfg.pe.area_um2 + regs * self._reg_bit.area_um2

    def pe_area(self, a_format=None, w_format=None, acc=None) -> float:
        """Area of one PE (um^2): the unit plus its activation and weight operand registers."""
        return self._pe_area(self.pe_config(a_format, w_format, acc))

    # ---------------------------------------------------------------- area
    def area(self, a_format=None, w_format=None, acc=None, k: int | None = None) -> AreaReport:
        """Area (um^2): R*C*A_PE + SRAM + edge units (R input quantizers/dequantizers, C
        rescalers), plus overhead_fraction of that sum."""
        return self._area(self.pe_config(a_format, w_format, acc, k), self.rows, self.cols)

    def _area(self, cfg: PEConfig, R, C) -> AreaReport:
        """:meth:`area` of PEs ``cfg`` on R x C (ints, or arrays: one element per array of an ArrayBatch)."""
        bd = {"pe_array": R * C * self._pe_area(cfg),
              "sram_ifmap": self._sram_units["ifmap"].area_um2,
              "sram_filter": self._sram_units["filter"].area_um2,
              "sram_ofmap": self._sram_units["ofmap"].area_um2,
              **self._edge_area(cfg, R, C)}
        base = sum(bd.values())
        bd["overhead"] = self.overhead_fraction * base
        return AreaReport(base + bd["overhead"], bd)

    # ---------------------------------------------------------------- edge units
    # The units outside the PE grid, area and energy side by side: R input quantizers (MX/BFP
    # activations) and dequantizers (one per row), C output rescalers (float scales, one per column).
    @staticmethod
    def _edge_area(cfg: PEConfig, R, C) -> dict:
        return {"act_quant": R * cfg.act_quant.area_um2 if cfg.act_quant else 0.0,
                "dequant": R * cfg.dequant.area_um2 if cfg.dequant else 0.0,
                "rescale": C * cfg.rescale.area_um2 if cfg.rescale else 0.0}

    @staticmethod
    def _edge_energy(cfg: PEConfig, M64, K64, N64, fi_reads, quantize_input: bool, zero) -> dict:
        """act_quant: every activation once, plus one scale per group (unless the input was already
        quantized); dequant: every weight read; rescale: every output once per scale group."""
        fa, fw = cfg.a, cfg.w
        out = {"act_quant": zero, "dequant": zero, "rescale": zero}
        if cfg.act_quant is not None and quantize_input:
            g = cfg.act_group or K64
            out["act_quant"] = (M64 * K64 * cfg.act_quant.energy("quantize")
                                + M64 * _cdiv(K64, g) * cfg.act_quant.energy("scale"))
        if cfg.dequant is not None:
            out["dequant"] = fi_reads * cfg.dequant.energy("dequant")
        if cfg.rescale is not None:
            groups = _cdiv(K64, (fw.group or fa.group)) if cfg.rescale_per_group else 1
            out["rescale"] = M64 * N64 * groups * cfg.rescale.energy("rescale")
        return out

    # ---------------------------------------------------------------- gemm
    def gemm(self, M: int, K: int, N: int, a_format: Any = None, w_format: Any = None, *, acc: Any = None,
             out_format: Any = None, quantize_input: bool = True) -> GemmResult:
        """Cost of Y[M,N] = A[M,K] @ W[K,N] (A in ``a_format``, W in ``w_format``).

        quantize_input: charge the input quantizer (False when the input tensor is shared with a
        previous GEMM that already quantized it).
        """
        M, K, N = _check_dim("M", M), _check_dim("K", K), _check_dim("N", N)
        cfg = self.pe_config(a_format, w_format, acc, K)
        res = self._evaluate(cfg, M, K, N, np.array([self.rows]),
                             np.array([self.cols]), np.array([_DF_CODE[self.dataflow]]), self._out_info(out_format),
                             quantize_input)
        s = {k: (v[0] if isinstance(v, np.ndarray) else v) for k, v in res.items()}
        area = self.area(cfg.a, cfg.w, cfg.acc, K)
        warnings = []
        if s["stall"] > 0.5 * (s["compute"] + s["stall"]):
            warnings.append("bandwidth_bound: DRAM stalls exceed 50 % of the cycles")
        return GemmResult(
            M=M, K=K, N=N, rows=self.rows, cols=self.cols, dataflow=self.dataflow, a_format=cfg.a.name,
            w_format=cfg.w.name, pe=cfg.pe.name, lanes=cfg.lanes, folds=(int(s["FR"]), int(s["FC"])),
            compute_cycles=int(s["compute"]), stall_cycles=int(s["stall"]), cycles=int(s["compute"] + s["stall"]),
            utilization=float(s["util"]), mapping_efficiency=float(s["map_eff"]), macs=M * K * N,
            pe_actions=int(s["pe_actions"]), latency_s=float(s["compute"] + s["stall"]) / self.tech.clock_hz,
            energy_pj=float(s["energy"]), energy_breakdown={k: float(v[0]) for k, v in res["energy_bd"].items()},
            sram_accesses={k: int(v[0]) for k, v in res["sram_acc"].items()},
            sram_bits={k: int(v[0]) for k, v in res["sram_bits"].items()},
            dram_bytes={k: int(v[0]) for k, v in res["dram"].items()}, area_um2=area.total_um2,
            assumptions={**self.tech.assumptions, "dataflow": self.dataflow, "scalesim_compat": self.scalesim_compat,
                         "double_buffer": self.double_buffer, "sram": asdict(self.sram),
                         "accumulator": cfg.acc.name, "notes_pe": list(cfg.notes)},
            warnings=tuple(warnings))

    def _evaluate(self, cfg: PEConfig, M: int, K: int, N: int, R, C, df, out: FormatInfo,
                  quantize_input: bool) -> dict:
        """Vectorised core over arrays R, C, df (broadcast) for one GEMM (M, K, N ints)."""
        L = cfg.lanes
        fa, fw = cfg.a, cfg.w
        # ---- 1. mapping and folds of each point's dataflow
        flows, _ = _flows(M, K, N, df, L)
        SR, SC, T, Kp = mapping(M, K, N, df, L)
        compute, FR, FC = fold_cycles(SR, SC, T, R, C, df, self.scalesim_compat)
        F = FR * FC
        M64, K64, N64 = np.int64(M), np.int64(K), np.int64(N)
        a_passes, w_passes, y_passes = (_passes(flows, k, df, FR, FC) for k in ("a_passes", "w_passes", "y_passes"))
        # ---- 2. SRAM accesses (elements)
        if_reads = M64 * K64 * a_passes
        fi_reads = K64 * N64 * w_passes
        of_writes = M64 * N64 * y_passes
        ps_reads = M64 * N64 * (y_passes - 1)
        acc_bits = cfg.acc.width

        if_bits = if_reads * fa.bits_per_element(K64)   # the format spec's bits per element (scales included)
        fi_bits = fi_reads * fw.bits_per_element(K64)
        of_bits = (of_writes + ps_reads) * acc_bits
        # ---- 3. DRAM bytes: an operand that does not fit its SRAM half is fetched once per pass
        Dx, Dw, Dout = fa.nbytes(M, K), fw.nbytes(N, K), out.nbytes(M, N)
        half = 2 if self.double_buffer else 1
        cap_if, cap_fi, cap_of = (getattr(self.sram, f"{p}_bytes") / half for p in ("ifmap", "filter", "ofmap"))
        x_fits, w_fits = Dx <= cap_if, Dw <= cap_fi
        dram_x = np.where(x_fits, Dx, Dx * a_passes)
        dram_w = np.where(w_fits, Dw, Dw * w_passes)
        psum_bytes = M64 * N64 * acc_bits / 8
        spill = np.where(psum_bytes <= cap_of, 0, np.ceil(2 * psum_bytes * (y_passes - 1))).astype(np.int64)
        dram_out = np.full(np.shape(dram_x), Dout, dtype=np.int64)
        dram_total = dram_x + dram_w + dram_out + spill
        # ---- 4. stalls
        bytes_per_cycle = self.tech.bandwidth_gbps * 1e9 / self.tech.clock_hz
        t_mem = dram_total / bytes_per_cycle / F
        stall = np.ceil(stall_cycles(t_mem, SR, SC, T, R, C, df, self.scalesim_compat, self.double_buffer) - 1e-9)
        stall = np.maximum(stall, 0).astype(np.int64)
        # ---- 5. energy
        pe_actions = M64 * Kp * N64
        e_act = cfg.pe.energy(cfg.action)
        rb = self._reg_bit.energy_pj
        a_reg, w_reg = self._reg_bits(fa, L), self._reg_bits(fw, L)
        reg_bits = {"a": a_reg, "w": w_reg}
        per_action_regs = _select(df, [sum(reg_bits[r] for r in f.regs) for f in flows]) * rb
        loads = {"w": Kp * N64 * w_reg, "a": Kp * M64 * a_reg, None: 0}
        stationary = _select(df, [loads[f.stationary] for f in flows]) * rb
        e_sram = {p: self._sram_units[p].energy_per_bit_pj for p in ("ifmap", "filter", "ofmap")}
        bd = {
            "pe": pe_actions * e_act,
            "pe_registers": pe_actions * per_action_regs + stationary,
            "sram_ifmap": (if_bits + dram_x * 8) * e_sram["ifmap"],
            "sram_filter": (fi_bits + dram_w * 8) * e_sram["filter"],
            "sram_ofmap": of_bits * e_sram["ofmap"],
            "dram": dram_total * 8 * self.tech.dram_pj_per_bit,
        }
        bd.update(self._edge_energy(cfg, M64, K64, N64, fi_reads, quantize_input, np.zeros_like(bd["pe"], dtype=np.float64)))
        energy = sum(np.asarray(v, dtype=np.float64) for v in bd.values())
        cycles = compute + stall
        R64, C64 = np.asarray(R, dtype=np.int64), np.asarray(C, dtype=np.int64)
        return {
            "compute": compute, "stall": stall, "FR": FR, "FC": FC, "pe_actions": pe_actions,
            "util": pe_actions / (compute * R64 * C64), "util_with_stalls": pe_actions / (cycles * R64 * C64),
            "map_eff": SR * SC / (F * R64 * C64), "energy": energy,
            "energy_bd": {k: np.asarray(v, dtype=np.float64) * np.ones_like(energy) for k, v in bd.items()},
            "sram_acc": {"ifmap_reads": if_reads, "filter_reads": fi_reads, "ofmap_writes": of_writes,
                         "psum_reads": ps_reads},
            "sram_bits": {"ifmap": np.ceil(if_bits).astype(np.int64), "filter": np.ceil(fi_bits).astype(np.int64),
                          "ofmap": of_bits.astype(np.int64)},
            "dram": {"ifmap": dram_x.astype(np.int64), "filter": dram_w.astype(np.int64),
                     "ofmap": dram_out.astype(np.int64), "psum_spill": spill},
        }

    # ---------------------------------------------------------------- sweep
    def sweep(self, M: int, K: int, N: int, shapes, dataflows=DATAFLOWS, format_pairs=None):
        """Vectorised sweep over array shapes x dataflows x format pairs for one GEMM.

        shapes: iterable of (rows, cols); format_pairs: iterable of (a_format, w_format).
        Returns a DataFrame with one row per point (cycles, energy, area, utilisation, DRAM bytes).
        The SRAM, technology and flags of this array apply to every point.
        """
        import pandas as pd

        M, K, N = _check_dim("M", M), _check_dim("K", K), _check_dim("N", N)
        shapes = np.asarray(list(shapes), dtype=np.int64).reshape(-1, 2)
        if (shapes <= 0).any():
            raise ValueError(f"shapes must be positive (rows, cols) pairs, got {shapes[(shapes <= 0).any(1)][:3].tolist()}")
        dfs = [_check_dataflow(d) for d in dataflows]
        pairs = list(format_pairs) if format_pairs is not None else [(self.a_format, self.w_format)]
        R = np.repeat(shapes[:, 0], len(dfs))
        C = np.repeat(shapes[:, 1], len(dfs))
        D = np.tile([_DF_CODE[d] for d in dfs], len(shapes))
        frames = []
        out = self._out_info(None)
        for a_fmt, w_fmt in pairs:
            cfg = self.pe_config(a_fmt, w_fmt, None, K)
            r = self._evaluate(cfg, M, K, N, R, C, D, out, True)
            pe_area = self._pe_area(cfg)
            fixed = sum(u.area_um2 for u in self._sram_units.values())
            e = self._edge_area(cfg, R, C)
            edge = e["act_quant"] + e["dequant"] + e["rescale"]
            area = (R * C * pe_area + fixed + edge) * (1 + self.overhead_fraction)
            frames.append(pd.DataFrame({
                "rows": R, "cols": C, "dataflow": np.array(DATAFLOWS)[D], "a_format": cfg.a.name,
                "w_format": cfg.w.name, "compute_cycles": r["compute"], "stall_cycles": r["stall"],
                "cycles": r["compute"] + r["stall"], "utilization": r["util"], "energy_pj": r["energy"],
                "area_um2": area, "dram_bytes": sum(v for v in r["dram"].values())}))
        return pd.concat(frames, ignore_index=True)

    def batch(self, rows, cols, dataflows=None) -> "ArrayBatch":
        """Arrays of this one's technology, SRAM and flags with per-array ``rows``, ``cols`` and
        ``dataflows`` (default: this array's dataflow): see :class:`ArrayBatch`."""
        return ArrayBatch(self, rows, cols, self.dataflow if dataflows is None else dataflows)

    def with_(self, **kwargs) -> "SystolicArray":
        """Copy with some constructor arguments changed."""
        params = dict(rows=self.rows, cols=self.cols, dataflow=self.dataflow, scalesim_compat=self.scalesim_compat,
                      tech=self.tech, sram=self.sram, double_buffer=self.double_buffer,
                      overhead_fraction=self.overhead_fraction, a_format=self.a_format, w_format=self.w_format,
                      acc=self.acc, out_format=self.out_format, mxfp_window=self.mxfp_window)
        params.update(kwargs)
        return SystolicArray(**params)


# --------------------------------------------------------------------------------------------
# many arrays at once (the vectorised path of cost_model)
# --------------------------------------------------------------------------------------------

class GemmBatch(NamedTuple):
    """One GEMM on every array of an :class:`ArrayBatch`: the :class:`GemmResult` fields that
    ``cost_model`` reads, each hardware-dependent one an array with one element per array (equal
    to the GemmResult of that array: same numpy operations, element by element)."""

    M: int
    K: int
    N: int
    a_format: str
    w_format: str
    macs: int
    compute_cycles: np.ndarray
    stall_cycles: np.ndarray
    cycles: np.ndarray
    energy_pj: np.ndarray
    energy_breakdown: dict
    dram_bytes: dict
    dram_total_bytes: np.ndarray


def _check_dims(name: str, v) -> np.ndarray:
    a = np.asarray(v).reshape(-1)
    if a.dtype.kind not in "iu" or (a <= 0).any():
        raise ValueError(f"{name} must be positive integers, got {a[:3].tolist()}...")
    return a.astype(np.int64)


class ArrayBatch:
    """n systolic arrays that differ only in rows, cols and dataflow, sharing the technology, SRAM,
    clock and flags of ``base`` (a :class:`SystolicArray`, whose own rows, cols and dataflow are
    not used): ``cost_model(spec, batch)`` costs a model on all of them in one pass.

    rows, cols: n positive integers; dataflows: n names or one for all. :meth:`gemm`,
    :meth:`area`, :meth:`pe_config` and :meth:`with_` mirror SystolicArray's; every quantity
    that depends on the array is a numpy array with one element per array, exactly equal to what
    the SystolicArray :meth:`point` (i) gives (the same elementwise numpy operations; nothing is
    reduced across arrays).
    """

    def __init__(self, base: SystolicArray, rows, cols, dataflows):
        self.base = base
        self.rows, self.cols = _check_dims("rows", rows), _check_dims("cols", cols)
        dfs = [dataflows] if isinstance(dataflows, str) else list(dataflows)
        dfs = [_check_dataflow(d) for d in dfs]
        if len(dfs) == 1:
            dfs = dfs * len(self.rows)
        if not (len(self.rows) == len(self.cols) == len(dfs) > 0):
            raise ValueError(f"rows, cols and dataflows differ in length: {len(self.rows)}, {len(self.cols)}, "
                             f"{len(dfs)}")
        self.dataflows = tuple(dfs)
        self._df = np.array([_DF_CODE[d] for d in dfs], dtype=np.int64)
        self.tech = base.tech

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self):
        return f"ArrayBatch({len(self)} arrays of {self.base!r})"

    def point(self, i: int) -> SystolicArray:
        """The i-th array as a SystolicArray."""
        return self.base.with_(rows=int(self.rows[i]), cols=int(self.cols[i]), dataflow=self.dataflows[i])

    def pe_config(self, a_format=None, w_format=None, acc=None, k: int | None = None) -> PEConfig:
        return self.base.pe_config(a_format, w_format, acc, k)

    def area(self, a_format=None, w_format=None, acc=None, k: int | None = None) -> AreaReport:
        """:meth:`SystolicArray.area` of every array (total and breakdown: arrays)."""
        return self.base._area(self.pe_config(a_format, w_format, acc, k), self.rows, self.cols)

    def gemm(self, M: int, K: int, N: int, a_format: Any = None, w_format: Any = None, *, acc: Any = None,
             out_format: Any = None, quantize_input: bool = True) -> GemmBatch:
        """:meth:`SystolicArray.gemm` on every array (one vectorised evaluation)."""
        M, K, N = _check_dim("M", M), _check_dim("K", K), _check_dim("N", N)
        b = self.base
        cfg = b.pe_config(a_format, w_format, acc, K)
        r = b._evaluate(cfg, M, K, N, self.rows, self.cols, self._df, b._out_info(out_format), quantize_input)
        dram = r["dram"]
        g = GemmBatch(M=M, K=K, N=N, a_format=cfg.a.name, w_format=cfg.w.name, macs=M * K * N,
                      compute_cycles=r["compute"], stall_cycles=r["stall"], cycles=r["compute"] + r["stall"],
                      energy_pj=r["energy"], energy_breakdown=r["energy_bd"], dram_bytes=dram,
                      dram_total_bytes=sum(dram.values()))
        # read-only: a caller that updated a (cached, shared) result in place (x += y, which is
        # harmless on the floats of a GemmResult) would corrupt it; this makes that an error
        for v in (g.compute_cycles, g.stall_cycles, g.cycles, g.energy_pj, g.dram_total_bytes,
                  *g.energy_breakdown.values(), *g.dram_bytes.values()):
            v.flags.writeable = False
        return g

    def with_(self, **kwargs) -> "ArrayBatch":
        """Copy with rows / cols / dataflow (per array or one for all) or base arguments changed."""
        n = len(self)
        rows, cols = kwargs.pop("rows", self.rows), kwargs.pop("cols", self.cols)
        dataflows = kwargs.pop("dataflow", self.dataflows)
        base = self.base.with_(**kwargs) if kwargs else self.base
        return ArrayBatch(base, np.broadcast_to(rows, n), np.broadcast_to(cols, n), dataflows)
