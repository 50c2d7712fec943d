"""Public entry point: ``matmul(a, b, ...)`` with exact/fake emulation and backend dispatch."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np

from .datapath import OUT_FLOATS, ExactAcc, FixedAcc, Fp32Acc, core_accumulator
from .operands import Prepared, is_torch, prepare

log = logging.getLogger("hwsim.matmul")

BACKENDS = ("auto", "numba", "numba-tiled", "torch", "triton")
MODES = ("exact", "fake")


def _lib_of(q):
    return "torch" if is_torch(q.codes if hasattr(q, "codes") else q) else "numpy"


def _check_acc_support(p: Prepared, acc, backend: str) -> None:
    names = f"{p.facts_a.spec.name} x {p.facts_b.spec.name}"
    if isinstance(acc, FixedAcc):
        if p.sum_bits > 62 and p.case == "G":
            raise ValueError(f"accumulator={acc.name!r} is not supported for {names}: the exact segment sum "
                             f"needs {p.sum_bits} bits (> 62); use 'fp32' or 'exact'")
        if p.case == "G" and p.sum_bits + 24 > 62:
            raise ValueError(f"accumulator={acc.name!r} is not supported for {names} (case G): S_j * sigma "
                             f"needs {p.sum_bits + 24} bits (> 62); use 'fp32' or 'exact'")
    if backend == "triton" and not isinstance(acc, Fp32Acc):
        raise ValueError(f"backend='triton' supports accumulator='fp32' only, got {acc.name!r}; "
                         f"use backend='torch' or 'numba'")


def _cast_out(y, out, lib: str):
    """Cast an fp32 result to the output format (docs/spec/matmul.md §6)."""
    if not isinstance(out, str):
        import hwsim.formats as F

        return F.quantize(y, out, axis=-1)
    if out in ("fp32", "fp64"):
        return y
    if lib == "torch":
        import torch

        return y.to(torch.bfloat16 if out == "bf16" else torch.float16)
    if out == "fp16":
        return y.astype(np.float16)
    # bf16 RNE from fp32 bits; numpy has no bf16 dtype, so the values are returned as fp32
    u = np.ascontiguousarray(y, np.float32).view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16
    r = np.where(np.isnan(y), u | 0x400000, r).astype(np.uint32)
    return r.view(np.float32)


def _reshape_out(y, p: Prepared):
    return y.reshape(*p.batch_shape, p.N)


def matmul(a, b, *, accumulator="fp32", out_format=None, mode: str = "exact", backend: str = "auto",
           bias=None, operand_cache=None, events=None):
    """y = a @ b as a block-scaled datapath computes it (docs/spec/matmul.md).

    a: QTensor [..., M, K] blocked along its last axis; b: QTensor [K, N] blocked along axis 0
    (a [N, K] weight quantized along -1 is passed as ``w_q.T``). accumulator: a string of the one
    accumulator grammar (``datapath.parse_accumulator``: "fp32" (default), "fixed:W[:F][:wrap][:rne]",
    "int<W>", "exact", ...) or a spec object; the core runs fp32, fixed W <= 62 and exact. out_format: None (fp32; fp64 for "exact"),
    "fp32", "bf16", "fp16", "fp64" (exact only) or a block format (returns a QTensor blocked along N).
    mode: "exact" (this core) or "fake" (dequantize, then an fp32 GEMM). backend: "auto", "numba"
    (numpy inputs, the per-output reference kernels), "numba-tiled" (numpy inputs, the tiled fp32
    kernel: fp32 accumulator, segment sums of at most 53 bits, codes of at most 8 bits; a ValueError
    otherwise), "torch", "triton" (CUDA, or CPU with TRITON_INTERPRET=1); "auto" runs the first
    backend of ``AUTO_CUDA`` / ``AUTO_CPU`` that covers the pair and accumulator (Triton, then the
    batched-GEMM path, then torch on CUDA; the GEMM path, then the tiled numba kernel, then numba for
    numpy and torch for torch tensors on CPU). All backends give the same bits. bias: fp32 [N].
    operand_cache: an ``OperandCache`` for ``b`` (a layer's weight used with many ``a``): B's
    conversions are kept in it across calls (pass the same ``b`` object each time).
    events: an ``AccEvents`` to which a fixed-point accumulator's events (saturations, wraps, bits
    lost) are added; its ``complete`` turns False when the backend that ran does not count.
    Returns an array of the operands' library (numpy or torch) of shape [..., M, N] (or a QTensor).
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is invalid; expected one of {MODES}")
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is invalid; expected one of {BACKENDS}")
    acc = core_accumulator(accumulator)
    out = out_format
    if out is None:
        out = "fp64" if isinstance(acc, ExactAcc) else "fp32"
    if isinstance(out, str) and out.lower() in OUT_FLOATS:
        out = out.lower()
        if out == "fp64" and not isinstance(acc, ExactAcc):
            raise ValueError(f"out_format='fp64' needs accumulator='exact', got {acc.name!r}")
    else:
        import hwsim.formats as F

        out = F.get(out)
    if mode == "fake":
        if not isinstance(acc, Fp32Acc):
            raise ValueError(f"mode='fake' supports accumulator='fp32' only, got {acc.name!r}")
        return fake_matmul(a, b, out_format=out, bias=bias)
    p = prepare(a, b, operand_cache)
    lib = "torch" if is_torch(p.a.codes) else "numpy"
    if lib != ("torch" if is_torch(p.b.codes) else "numpy"):
        raise ValueError("operands a and b must both hold numpy arrays or both torch tensors")
    if backend == "numba" and lib == "torch":
        raise ValueError("backend='numba' needs numpy operands; got torch tensors (use backend='torch')")
    _check_acc_support(p, acc, backend)
    if backend in _NO_FALLBACK and not any(backend_module(m).covers(p, acc) for m in OWN_KERNELS[backend]):
        raise ValueError(_not_covered(p, acc, backend))
    y = _dispatch(p, acc, out, bias, backend, lib, events if isinstance(acc, FixedAcc) else None)
    if lib == "numpy" and is_torch(y):
        y = _np(y)
    y = _reshape_out(y, p)
    if isinstance(acc, ExactAcc) and isinstance(out, str):
        if out == "fp64":
            return y
        with np.errstate(over="ignore"):   # exact: already rounded once to out (overflow -> inf)
            y = y.float() if is_torch(y) else y.astype(np.float32)
        if out in ("bf16", "fp16") and is_torch(y):
            import torch

            return y.to(torch.bfloat16 if out == "bf16" else torch.float16)
        return y.astype(np.float16) if out == "fp16" else y
    if isinstance(acc, ExactAcc):
        y = y.float() if is_torch(y) else y.astype(np.float32)
    return _cast_out(y, out, lib)


def _np(x):
    return x.detach().cpu().numpy() if is_torch(x) else np.asarray(x)


# ---------------------------------------------------------------------------------------------
# backends
# ---------------------------------------------------------------------------------------------

# Each backend is a module with NAME, covers(p, acc) -> bool and run(p, acc, out, bias) -> [M, N]
# array or None (common.py). Modules are imported on first use, so that torch and triton load only
# when a path needs them.
_MODULES = {"numba": "reference", "numba-tiled": "tiled_backend", "gemm": "gemm", "torch": "torch_backend",
            "triton": "triton_backend"}

# The preference lists (docs/matmul.md, Backends): the first backend that covers the problem runs;
# one whose run() returns None (NaN/Inf element codes, found while converting) passes to the next.
AUTO_CUDA = ("triton", "gemm", "torch")                   # backend="auto", CUDA tensors
AUTO_CPU = ("gemm", "numba-tiled", "numba", "torch")      # backend="auto", numpy or CPU torch operands
# Each explicit backend's own kernels, and the fallbacks it passes to (none: a problem its kernels
# do not cover is a ValueError).
OWN_KERNELS = {"numba": ("numba",), "numba-tiled": ("numba-tiled",), "torch": ("gemm", "torch"),
               "triton": ("triton",)}
_FALLBACKS = {"triton": ("gemm", "torch")}
EXPLICIT = {name: mods + _FALLBACKS.get(name, ()) for name, mods in OWN_KERNELS.items()}
_NO_FALLBACK = ("numba-tiled",)


def backend_module(name: str):
    """The module of backend ``name`` (one of ``_MODULES``)."""
    import importlib

    return importlib.import_module(f".{_MODULES[name]}", __package__)


def preference(p: Prepared, backend: str) -> tuple[str, ...]:
    """The backends tried, in order, for ``backend=`` and this operand pair."""
    if backend != "auto":
        return EXPLICIT[backend]
    return AUTO_CUDA if p.is_torch and p.a.codes.is_cuda else AUTO_CPU


def _dispatch(p: Prepared, acc, out, bias, backend: str, lib: str, events=None):
    """[M, N] result of the first covering backend of ``preference(p, backend)``. ``events`` (fixed
    accumulator only) is counted by the GEMM path; another backend marks it incomplete."""
    if backend in ("torch", "triton") and lib == "numpy":
        p = _to_torch(p)
    for name in preference(p, backend):
        mod = backend_module(name)
        if not mod.covers(p, acc):
            if name == "triton" and backend == "triton":
                log.info("triton: %s x %s is outside the int8 path; using the exact torch backend",
                         p.facts_a.spec.name, p.facts_b.spec.name)
            continue
        y = mod.run(p, acc, out, bias, events=events) if (events is not None and name == "gemm") \
            else mod.run(p, acc, out, bias)
        if y is not None:
            if events is not None and name != "gemm":
                _uncounted(events, p)
            return y
    if backend in _NO_FALLBACK:
        raise ValueError(_not_covered(p, acc, backend, "its element codes hold NaN/Inf (found while converting)"))
    # only ExactAcc, and fixed-point sums wider than 62 bits, of torch operands get here
    warnings.warn(f"the torch backend delegates accumulator={acc.name!r} for {p.facts_a.spec.name} x "
                  f"{p.facts_b.spec.name} to the numba reference", stacklevel=3)
    import torch

    if events is not None:
        _uncounted(events, p)
    y = backend_module("numba").run(_to_numpy(p), acc, out, None if bias is None else _np(bias))
    return torch.as_tensor(y, device=p.a.codes.device)


def covering_backends(p: Prepared, acc) -> list[str]:
    """The explicit ``backend=`` names whose own kernels cover this operand pair and accumulator
    (numba: numpy operands; torch: the GEMM path or the per-segment torch backend; Triton only for
    CUDA tensors; the fallbacks an explicit backend passes to are not counted)."""
    cuda = p.is_torch and p.a.codes.is_cuda
    return [name for name, mods in OWN_KERNELS.items() if (name != "triton" or cuda)
            and any(backend_module(m).covers(p, acc) for m in mods)]


def _not_covered(p: Prepared, acc, backend: str, why: str = "") -> str:
    """The ValueError text for an explicit backend that does not cover the problem."""
    lib = "numpy"
    if p.is_torch:
        lib = "CUDA torch" if p.a.codes.is_cuda else "CPU torch"
    problem = (f"{p.facts_a.spec.name} x {p.facts_b.spec.name} (segment sums of {p.sum_bits} bits) with "
               f"accumulator={acc.name!r} on {lib} operands")
    what = {"numba-tiled": "numpy operands, the fp32 accumulator, segment sums of at most 53 bits and "
                           "element codes of at most 8 bits without NaN/Inf (no asymmetric ints)"}.get(backend)
    others = [b for b in covering_backends(p, acc) if b != backend]
    return (f"backend={backend!r} does not cover {problem}" + (f": {why}" if why else "")
            + (f"; it covers {what}" if what else "")
            + f"; backends that cover it: {', '.join(others) or 'none'} (or backend='auto')")


def _uncounted(events, p: Prepared) -> None:
    """A call whose accumulator events were not counted (a backend without counters ran)."""
    events.calls += 1
    events.outputs += p.M * p.N
    events.complete = False


def _to_torch(p: Prepared) -> Prepared:
    return p.converted("torch")


def _to_numpy(p: Prepared) -> Prepared:
    return p.converted("numpy")


# ---------------------------------------------------------------------------------------------
# fake mode
# ---------------------------------------------------------------------------------------------


def _dequant(x):
    import hwsim.formats as F

    if isinstance(x, F.QTensor):
        return x.dequantize()
    return x


def fake_matmul(a, b, *, out_format="fp32", bias=None):
    """mode="fake": dequantize both operands, then one fp32 GEMM whose summation order is unspecified.

    The operands are dequantized by ``hwsim.formats`` (bit-exact, as ``QTensor.dequantize``) to
    float32 and multiplied by ``torch.matmul`` (torch operands; TF32 and reduced-precision oneDNN
    modes forced off, so every operation is an IEEE fp32 one) or ``np.matmul`` (numpy operands).
    The order in which that GEMM sums the K products is left to BLAS / torch and is NOT specified
    by hwsim: it may change with the CPU (AMD and Intel kernels differ), the thread count, the
    operand layouts and the shapes, and FMAs may be used. Results are therefore not bit-reproducible
    across machines, nor equal bit for bit to another fp32 product of the same dequantized operands
    (``a.dequantize() @ w.dequantize().T`` may differ in the last bits). What holds for every order
    is the fp32 dot-product bound |y - A B| <= gamma_K (|A| |B|) (+ underflow), gamma_K = K u / (1 - K u),
    u = 2^-24, on the dequantized operands A, B. ``mode="exact"`` is the bit-reproducible datapath.
    ``bias`` (fp32 [N]) is added to the fp32 result; ``out_format`` casts it as ``matmul`` does.
    """
    xa, xb = _dequant(a), _dequant(b)
    if is_torch(xa) or is_torch(xb):
        import torch

        from .common import exact_float_matmul

        xa = torch.as_tensor(xa).float()
        xb = torch.as_tensor(xb, device=xa.device).float()
        with exact_float_matmul():
            y = torch.matmul(xa, xb)
        if bias is not None:
            y = y + torch.as_tensor(bias, dtype=torch.float32, device=y.device)
        lib = "torch"
    else:
        y = np.matmul(np.asarray(xa, np.float32), np.asarray(xb, np.float32))
        if bias is not None:
            y = (y + np.asarray(bias, np.float32)).astype(np.float32)
        lib = "numpy"
    if isinstance(out_format, str) and out_format == "fp64":
        raise ValueError("out_format='fp64' needs accumulator='exact' (not available in mode='fake')")
    return _cast_out(y, out_format or "fp32", lib)


def emulate(a, b, *, emulation: str = "exact", **kw):
    """The switch QLinear uses: emulation="fake" (dequantize + fp32 GEMM) or "exact" (this core)."""
    if emulation not in MODES:
        raise ValueError(f"emulation={emulation!r} is invalid; expected one of {MODES}")
    return matmul(a, b, mode=emulation, **kw)


# ---------------------------------------------------------------------------------------------
# error report: fake vs exact-fp32 vs exact-exact
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MatmulErrorReport:
    """Differences between fake, exact-fp32 and exact-exact results of one operand pair.

    All errors are absolute, in float64, over all finite outputs; ``*_rel`` divide by
    max |exact|. ``bound_fp32`` / ``bound_fake`` are the docs/spec/matmul.md §7 bounds (max over outputs)
    and ``*_within_bound`` say whether every output satisfies its bound.
    """

    shape: tuple
    fake_vs_exact_max: float
    fp32_vs_exact_max: float
    fake_vs_fp32_max: float
    fake_vs_exact_rel: float
    fp32_vs_exact_rel: float
    frac_fake_ne_fp32: float
    fp32_within_bound: bool
    fake_within_bound: bool


def error_report(a, b, *, backend: str = "auto") -> MatmulErrorReport:
    """Compare fake mode, exact mode with the fp32 accumulator, and exact mode with ExactAcc."""
    import hwsim.formats as F

    exact = _np(matmul(a, b, accumulator="exact", backend="numba" if _lib_of(a) == "numpy" else "torch"))
    fp32 = _np(matmul(a, b, accumulator="fp32", backend=backend)).astype(np.float64)
    fake = _np(matmul(a, b, mode="fake")).astype(np.float64)
    exact = exact.astype(np.float64)
    fin = np.isfinite(exact) & np.isfinite(fp32) & np.isfinite(fake)
    d = lambda x, y: float(np.max(np.abs(x - y)[fin], initial=0.0))  # noqa: E731
    scale = float(np.max(np.abs(exact[fin]), initial=0.0)) or 1.0
    # bounds (docs/spec/matmul.md §7) need sum_k |a_k b_k| and sum_j |P_j|: use dequantized |a| @ |b| (exact in fp64
    # for MX/BFP; an upper bound of sum_j |P_j| as well)
    xa = np.abs(_np(_dequant(a)).astype(np.float64)).reshape(-1, a.shape[-1])
    xb = np.abs(_np(_dequant(b)).astype(np.float64))
    absprod = (xa @ xb).reshape(exact.shape)
    p = prepare(a, b) if isinstance(a, F.QTensor) else None
    K = a.shape[-1]
    J = p.J if p is not None else K
    c = 0 if (p is not None and p.case == "P") else 2
    u = 2.0 ** -24
    g = lambda n: n * u / (1 - n * u)  # noqa: E731
    eta = 2.0 ** -150
    delta = 0.0 if (p is not None and p.case == "P") else 4 * u
    b32 = g(J + c) * absprod + J * eta
    bfk = (g(K) + delta) * absprod + K * eta
    e32 = np.abs(fp32 - exact)
    efk = np.abs(fake - exact)
    return MatmulErrorReport(
        shape=tuple(exact.shape),
        fake_vs_exact_max=d(fake, exact), fp32_vs_exact_max=d(fp32, exact), fake_vs_fp32_max=d(fake, fp32),
        fake_vs_exact_rel=d(fake, exact) / scale, fp32_vs_exact_rel=d(fp32, exact) / scale,
        frac_fake_ne_fp32=float(np.mean(fake[fin] != fp32[fin])) if fin.any() else 0.0,
        fp32_within_bound=bool(np.all((e32 <= b32)[fin])), fake_within_bound=bool(np.all((efk <= bfk)[fin])))
