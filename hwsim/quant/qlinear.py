"""``QLinear``: a linear layer with a quantized weight, a dynamic activation quantizer and an
optional low-rank error-correction branch (docs/spec/algorithms.md §3).

Forward (§3.2)::

    x' = x·T                                   if pre_transform T
    x_q = Q_X(x')                              dynamic activation quantizer (bypass if None)
    y  = x_q · deq(W_q)ᵀ + b
    y += Q_Bout( Q_Aout(x_q · A_q) · B_q )     if a low-rank branch is present

``mode="fake"`` dequantizes and multiplies in ``compute_dtype`` (float32 by default);
``mode="exact"`` passes codes and scales of every operand to ``hwsim.matmul.matmul`` with the layer's
accumulator (``"fp32"``, ``"fixed:W:F[:wrap][:rne]"``, ``"exact"``; ``hwsim.matmul.parse_accumulator``).

Exact mode at study speed (docs/quant.md, "Exact mode"): each weight operand (W, and A/B of a low-rank
branch) is converted to the matmul core's operand form once and kept with an
``hwsim.matmul.OperandCache`` (re-made when the QTensor, or a torch code/scale array in place,
changes); the activation is quantized once per forward and shared by the linears that read it
(``act_cache``). A fixed-point accumulator's events (saturations, wraps, bits lost) are summed in
``acc_events`` and reported by ``record()``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as Fn
from torch import nn

from .dense import dense_linear

__all__ = ["QLinear", "QLinearRecord", "LowRankRecord", "fmt_name", "resolve_format", "bits_per_element",
           "MODES", "ActQuantCache", "check_accumulator"]

MODES = ("fake", "exact")


def _formats():
    import hwsim.formats as F

    return F


def _acc_forms() -> str:
    from hwsim.matmul.datapath import ACCUMULATOR_FORMS, CORE_MAX_WIDTH

    return f"{ACCUMULATOR_FORMS}; exact mode runs 'fp32', 'exact' and fixed-point registers of W <= {CORE_MAX_WIDTH}"


def check_accumulator(acc: Any, what: str = "accumulator"):
    """The accumulator spec of ``acc`` for exact mode: a string of the one grammar
    (``hwsim.matmul.datapath.parse_accumulator``) or a spec object, refused when the exact core
    cannot run it (``core_accumulator``: fp16/bf16, W > 62). A ValueError names ``what``, the value
    and the valid forms."""
    from hwsim.matmul.datapath import core_accumulator

    try:
        return core_accumulator(acc)
    except ValueError as exc:
        msg = str(exc).split("; valid: ")[0]           # the parser's reason, without its list of forms
        head = f"accumulator={acc!r} is invalid"
        why = msg[len(head):].lstrip(": ") if msg.startswith(head) else msg
        why = f" ({why})" if why else ""
        raise ValueError(f"{what}: {acc!r} is not a valid accumulator{why}; valid: {_acc_forms()}") from None


def resolve_format(fmt, what: str = "format"):
    """A format spec from a name or spec (None stays None); bad names raise a ValueError naming ``what``."""
    if fmt is None:
        return None
    F = _formats()
    try:
        return F.get(fmt)
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from exc


def fake_quant(x: torch.Tensor, fmt, axis: int = -1) -> torch.Tensor:
    """``hwsim.formats.fake_quant`` choosing the codec: on CPU without autograd the numba codec
    (numpy; bit-identical to the torch codec and much faster on CPU), otherwise the torch codec
    (GPU tensors, straight-through gradients). Returns a tensor of x's dtype."""
    F = _formats()
    if x.device.type == "cpu" and not (torch.is_grad_enabled() and x.requires_grad):
        from .threads import numba_threads, numba_threads_for

        xn = x.detach().to(torch.float32).contiguous().numpy()
        with numba_threads(numba_threads_for(xn.size)):  # hwsim.quant.threads: 1 thread for small calls
            y = torch.from_numpy(F.fake_quant(xn, fmt, axis=axis))
        return y if x.dtype == torch.float32 else y.to(x.dtype)
    return F.fake_quant(x, fmt, axis=axis)


def quantize_np(x: torch.Tensor, fmt, axis: int = -1):
    """``hwsim.formats.quantize`` through the numba codec (numpy codes) for a CPU tensor."""
    from .threads import numba_threads, numba_threads_for

    F = _formats()
    xn = x.detach().to(torch.float32).cpu().contiguous().numpy()
    with numba_threads(numba_threads_for(xn.size)):
        return F.quantize(xn, fmt, axis=axis)


def as_numpy_q(q):
    """The same QTensor with numpy codes (for the numba matmul reference)."""
    F = _formats()
    if not isinstance(q.codes, torch.Tensor):
        return q
    n = (lambda a: None if a is None else a.detach().cpu().numpy())  # noqa: E731
    return F.QTensor.from_codes(q.spec, n(q.codes), n(q.scales), n(q.zero_points), q.tensor_scale, q.shape, q.axis)


def fmt_name(fmt) -> str | None:
    if fmt is None:
        return None
    if isinstance(fmt, str):
        return resolve_format(fmt).name
    return fmt.name


def bits_per_element(fmt, shape_axis_last: tuple[int, ...] | None = None) -> float:
    """Bits per element of ``fmt`` for a tensor whose block/slice axis is last (scales included)."""
    if fmt is None:
        return 16.0
    spec = resolve_format(fmt)
    try:
        return float(spec.bits_per_element(shape_axis_last))
    except TypeError:
        return float(spec.bits_per_element())


def _is_blocked(spec) -> bool:
    """True for formats with scales along an axis (block formats and scaled integers)."""
    return bool(getattr(spec, "is_block", False)) or type(spec).__name__ == "ScaledIntSpec"


@dataclass(frozen=True)
class LowRankRecord:
    rank: int
    a_fmt: str | None
    a_axis: str  # "in" or "k"
    b_fmt: str | None
    b_axis: str  # "k" or "out"
    xa_fmt: str | None
    xab_fmt: str | None


@dataclass(frozen=True)
class QLinearRecord:
    """What the cost model needs about one quantized linear (docs/spec/algorithms.md §3.4); no torch objects.

    ``in_features`` is the GEMM reduction size K and ``out_features`` N. Formats are canonical
    hwsim names (None = high precision / bypass).
    """

    name: str
    in_features: int
    out_features: int
    w_fmt: str | None
    w_axis: str
    x_fmt: str | None
    bias: bool
    bias_fmt: str | None
    input_key: str | None  # linears with the same key read one input, quantized once
    pre_transform: str
    pre_transform_size: int | None
    lowrank: LowRankRecord | None
    mode: str
    bits_per_weight: float
    #: exact mode's accumulator (``hwsim.matmul`` grammar); "fp32" in fake mode
    accumulator: str = "fp32"
    #: accumulator events summed over the exact-mode forwards (``hwsim.matmul.AccEvents.to_dict()``;
    #: fixed-point accumulators only), None when none were counted
    acc_events: dict | None = field(default=None, compare=False, hash=False)


class ActQuantCache:
    """Shares one quantized activation between the linears of a group (q/k/v read the same x).

    Holds a strong reference to the last input so that an identity check is safe, and compares the
    tensor's version counter so in-place changes invalidate it.
    """

    def __init__(self):
        self._x = None
        self._version = -1
        self._key = None
        self._xq = None

    def get(self, x: torch.Tensor, key):
        if self._x is x and self._version == x._version and self._key == key:
            return self._xq
        return None

    def put(self, x: torch.Tensor, key, xq: torch.Tensor) -> None:
        self._x, self._version, self._key, self._xq = x, x._version, key, xq

    def clear(self) -> None:
        self._x = self._xq = None


class QLinear(nn.Module):
    """Quantized linear layer.

    Args:
        weight: a ``hwsim.formats.QTensor`` of logical shape [out, in] (blocks along ``in`` for
            exact mode) or a float tensor [out, in] (kept in high precision).
        bias: float [out] or None.
        x_fmt: dynamic activation format (blocks along the last dimension of each token) or None.
        bias_fmt: optional format for the bias (blocks along ``out``).
        lowrank: optional dict with ``A`` [in, k] and ``B`` [k, out], each a QTensor or a float
            tensor, and ``xa_fmt``/``xab_fmt`` for the branch outputs (None = bypass).
        mode: ``"fake"`` (default) or ``"exact"``.
        pre_transform: optional [in, in] orthogonal matrix applied to x before ``x_fmt``.
        datapath: accumulator for exact mode (passed to ``hwsim.matmul.matmul``), default ``"fp32"``;
            a string of the matmul grammar (``"fixed:24:8:saturate:rne"``) or a spec object.
    """

    def __init__(self, weight, bias: torch.Tensor | None = None, *, x_fmt=None, bias_fmt=None,
                 lowrank: dict[str, Any] | None = None, mode: str = "fake", pre_transform: torch.Tensor | None = None,
                 pre_transform_kind: str = "none", datapath: Any = "fp32", compute_dtype: torch.dtype = torch.float32,
                 name: str = "", input_key: str | None = None, act_cache: ActQuantCache | None = None,
                 weight_deq: torch.Tensor | None = None):
        super().__init__()
        F = _formats()
        if isinstance(weight, torch.Tensor):
            if weight.ndim != 2:
                raise ValueError(f"weight: expected [out, in], got shape {tuple(weight.shape)}")
            self.qweight = None
            w_deq = weight.detach().to(compute_dtype)
        elif isinstance(weight, F.QTensor):
            if len(weight.shape) != 2:
                raise ValueError(f"weight: expected a QTensor of shape [out, in], got {tuple(weight.shape)}")
            self.qweight = weight
            w_deq = (weight_deq if weight_deq is not None else _to_torch(weight.dequantize())).to(compute_dtype)
            if tuple(w_deq.shape) != tuple(weight.shape):
                raise ValueError(f"weight_deq: shape {tuple(w_deq.shape)} != weight shape {tuple(weight.shape)}")
        else:
            raise ValueError(f"weight: expected a torch.Tensor or hwsim.formats.QTensor, got {type(weight).__name__}")
        self.out_features, self.in_features = int(w_deq.shape[0]), int(w_deq.shape[1])
        self.register_buffer("weight", w_deq, persistent=False)
        self.compute_dtype = compute_dtype
        self.name = name
        self.input_key = input_key
        self.x_fmt = resolve_format(x_fmt, f"{name or 'QLinear'}: x_fmt")
        self.bias_fmt = resolve_format(bias_fmt, f"{name or 'QLinear'}: bias_fmt")
        self.qbias = None
        if bias is not None:
            b = bias.detach().to(compute_dtype).reshape(-1)
            if b.numel() != self.out_features:
                raise ValueError(f"bias: expected {self.out_features} values, got {b.numel()}")
            if self.bias_fmt is not None:
                self.qbias = F.quantize(b.float(), self.bias_fmt, axis=-1)
                b = _to_torch(self.qbias.dequantize()).to(compute_dtype)
            self.register_buffer("bias", b, persistent=False)
        else:
            self.bias = None
        self.rank = 0
        self.qA = self.qB = None
        self.xa_fmt = self.xab_fmt = None
        self.register_buffer("lr_A", None, persistent=False)
        self.register_buffer("lr_B", None, persistent=False)
        if lowrank is not None:
            self._set_lowrank(lowrank)
        if pre_transform is not None:
            if tuple(pre_transform.shape) != (self.in_features, self.in_features):
                raise ValueError(f"pre_transform: expected [{self.in_features}, {self.in_features}], "
                                 f"got {tuple(pre_transform.shape)}")
            self.register_buffer("pre_transform", pre_transform.detach().to(compute_dtype), persistent=False)
        else:
            self.pre_transform = None
        self.pre_transform_kind = pre_transform_kind if pre_transform is not None else "none"
        self.act_cache = act_cache
        self.mode = "fake"
        self._exact_ops: dict[str, tuple] = {}
        self.acc_events = None
        self.datapath = check_accumulator(datapath, f"{name or 'QLinear'}: accumulator")
        self.set_mode(mode)

    # -- construction helpers -----------------------------------------------------------------
    def _set_lowrank(self, lr: dict[str, Any]) -> None:
        F = _formats()
        A, B = lr["A"], lr["B"]
        a_deq = _to_torch(A.dequantize()) if isinstance(A, F.QTensor) else A.detach()
        b_deq = _to_torch(B.dequantize()) if isinstance(B, F.QTensor) else B.detach()
        if a_deq.ndim != 2 or a_deq.shape[0] != self.in_features:
            raise ValueError(f"lowrank A: expected [in={self.in_features}, k], got {tuple(a_deq.shape)}")
        k = a_deq.shape[1]
        if tuple(b_deq.shape) != (k, self.out_features):
            raise ValueError(f"lowrank B: expected [k={k}, out={self.out_features}], got {tuple(b_deq.shape)}")
        self.rank = int(k)
        self.qA = A if isinstance(A, F.QTensor) else None
        self.qB = B if isinstance(B, F.QTensor) else None
        self.lr_A = a_deq.to(self.compute_dtype)
        self.lr_B = b_deq.to(self.compute_dtype)
        self.xa_fmt = resolve_format(lr.get("xa_fmt"), f"{self.name or 'QLinear'}: xa_fmt")
        self.xab_fmt = resolve_format(lr.get("xab_fmt"), f"{self.name or 'QLinear'}: xab_fmt")

    @property
    def w_fmt(self):
        return None if self.qweight is None else self.qweight.spec

    @property
    def a_fmt(self):
        return None if self.qA is None else self.qA.spec

    @property
    def b_fmt(self):
        return None if self.qB is None else self.qB.spec

    @property
    def accumulator(self) -> str:
        """Name of exact mode's accumulator (``"fp32"``, ``"fixed:24:8:rne"``, ...)."""
        return self.datapath.name

    def set_mode(self, mode: str, accumulator: Any = None) -> None:
        """Switch emulation mode; ``"exact"`` validates reduction-axis blocking first.
        ``accumulator`` (exact mode's; None keeps the current one) is validated too and resets
        ``acc_events``. A non-fp32 accumulator with ``mode="fake"`` is an error."""
        if mode not in MODES:
            raise ValueError(f"mode: {mode!r} is not valid; valid: {', '.join(MODES)}")
        n = self.name or "QLinear"
        acc = self.datapath if accumulator is None else check_accumulator(accumulator, f"{n}: accumulator")
        if mode == "fake" and acc.name != "fp32" and accumulator is not None:
            raise ValueError(f"{n}: accumulator {acc.name!r} needs mode='exact' (fake mode sums in fp32)")
        if mode == "exact":
            self.check_exact()
        if accumulator is not None:
            if acc != self.datapath:
                self._exact_ops.clear()   # the fp32 and fixed paths keep different operand views
            self.datapath = acc
            self.acc_events = None
        self.mode = mode

    def invalidate_exact_cache(self) -> None:
        """Drop the converted weight operands (done automatically when a QTensor is replaced or a
        torch code/scale array changes in place; needed after an in-place change of numpy codes)."""
        self._exact_ops.clear()

    def reset_acc_events(self) -> None:
        self.acc_events = None

    def check_exact(self) -> None:
        """Raise a ValueError naming the tensor when an operand is not blocked along its GEMM's
        reduction dimension (docs/spec/algorithms.md §3.2)."""
        n = self.name or "QLinear"

        def need(spec, tensor: str, what: str):
            if spec is None:
                raise ValueError(f"{n}: exact mode needs {tensor} quantized with a block or scaled-integer format "
                                 f"({what}); it is high precision/bypassed")
            if not _is_blocked(spec):
                raise ValueError(f"{n}: exact mode needs {tensor} in a block or scaled-integer format; "
                                 f"{spec.name} is element-only (use mode='fake')")

        need(self.x_fmt, "X", "activation quantizer")
        need(self.w_fmt, "W", "weight")
        if self.qweight.axis != 1:
            raise ValueError(f"{n}: exact mode needs W [out, in] blocked along in (axis 1), got axis {self.qweight.axis}")
        if self.rank:
            need(self.a_fmt, "A", "low-rank factor")
            need(self.b_fmt, "B", "low-rank factor")
            need(self.xa_fmt, "XA", "branch output quantizer")
            if self.qA.axis != 0:
                raise ValueError(f"{n}: exact mode needs A [in, k] blocked along in (axis 0), got axis {self.qA.axis} "
                                 f"(the paper preset blocks A along k: use a '-hw' recipe)")
            if self.qB.axis != 0:
                raise ValueError(f"{n}: exact mode needs B [k, out] blocked along k (axis 0), got axis {self.qB.axis} "
                                 f"(the paper preset blocks B along out: use a '-hw' recipe)")
        if self.pre_transform is not None:
            pass  # the transform is a float product before the activation quantizer

    # -- forward ------------------------------------------------------------------------------
    def _quant_x(self, xc: torch.Tensor) -> torch.Tensor:
        if self.x_fmt is None:
            return xc
        F = _formats()
        key = (self.x_fmt, self.compute_dtype)
        if self.act_cache is not None and self.pre_transform is None:
            hit = self.act_cache.get(xc, key)
            if hit is not None:
                return hit
            xq = fake_quant(xc, self.x_fmt, axis=-1)
            self.act_cache.put(xc, key, xq)
            return xq
        return fake_quant(xc, self.x_fmt, axis=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"{self.name or 'QLinear'}: input last dimension {x.shape[-1]} != in_features "
                             f"{self.in_features}")
        if self.mode == "exact":
            return self._forward_exact(x)
        dt = x.dtype
        xc = x if dt == self.compute_dtype else x.to(self.compute_dtype)
        if self.pre_transform is not None:
            xc = xc @ self.pre_transform
        xq = self._quant_x(xc)
        y = dense_linear(xq, self.weight, self.bias)
        if self.rank:
            t = xq @ self.lr_A
            if self.xa_fmt is not None:
                t = fake_quant(t, self.xa_fmt, axis=-1)
            t = t @ self.lr_B
            if self.xab_fmt is not None:
                t = fake_quant(t, self.xab_fmt, axis=-1)
            y = y + t
        return y if y.dtype == dt else y.to(dt)

    def _exact_operand(self, which: str, on_cpu: bool):
        """(B operand QTensor, OperandCache) of ``which`` ("w": W^T [in, out]; "A", "B": the low-rank
        factors), with numpy codes for CPU inputs: made once, re-made when the QTensor object or
        (torch codes) one of its arrays changes in place."""
        q = {"w": self.qweight, "A": self.qA, "B": self.qB}[which]
        tok = (id(q),) + tuple((id(a), getattr(a, "_version", None)) for a in (q.codes, q.scales, q.zero_points))
        ent = self._exact_ops.get((which, on_cpu))
        if ent is None or ent[0] != tok or ent[1] is not q:
            from hwsim.matmul import OperandCache

            b = as_numpy_q(q) if on_cpu else q
            ent = (tok, q, b.T if which == "w" else b, OperandCache())
            self._exact_ops[(which, on_cpu)] = ent
        return ent[2], ent[3]

    def _quant_x_exact(self, x: torch.Tensor, x2: torch.Tensor, on_cpu: bool):
        """The activation QTensor (quantized once per input; shared through ``act_cache``)."""
        F = _formats()
        key = ("exact", self.x_fmt, on_cpu)
        share = self.act_cache is not None and self.pre_transform is None
        if share:
            hit = self.act_cache.get(x, key)
            if hit is not None:
                return hit
        xq = quantize_np(x2, self.x_fmt) if on_cpu else F.quantize(x2, self.x_fmt, axis=-1)
        if share:
            self.act_cache.put(x, key, xq)
        return xq

    def _forward_exact(self, x: torch.Tensor) -> torch.Tensor:
        F = _formats()
        try:
            from hwsim.matmul import AccEvents, FixedAcc, matmul
        except ImportError as exc:  # pragma: no cover - depends on the matmul package being present
            raise RuntimeError("QLinear mode='exact' needs hwsim.matmul.matmul, which is not available "
                               f"({exc}); use mode='fake'") from exc
        dt = x.dtype
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features).to(torch.float32)
        if self.pre_transform is not None:
            x2 = x2 @ self.pre_transform.to(torch.float32)
        # CPU: numba codec, numpy operands (the GEMM path of hwsim.matmul); GPU: torch codec and backend
        on_cpu = x2.device.type == "cpu"
        xq = self._quant_x_exact(x, x2, on_cpu)
        bias = None if self.bias is None else self.bias.to(torch.float32)
        if bias is not None and on_cpu:
            bias = bias.cpu().numpy()
        acc = self.datapath
        ev = None
        if isinstance(acc, FixedAcc):
            if self.acc_events is None:
                self.acc_events = AccEvents(accumulator=acc.name)
            ev = self.acc_events
        wT, wc = self._exact_operand("w", on_cpu)
        y = _to_torch(matmul(xq, wT, accumulator=acc, bias=bias, mode="exact", operand_cache=wc, events=ev))
        y = y.to(x.device)
        if self.rank:
            qa, ca = self._exact_operand("A", on_cpu)
            qb, cb = self._exact_operand("B", on_cpu)
            t = matmul(xq, qa, accumulator=acc, out_format=self.xa_fmt, mode="exact", operand_cache=ca, events=ev)
            out_b = self.xab_fmt if self.xab_fmt is not None else "fp32"
            t = matmul(t, qb, accumulator=acc, out_format=out_b, mode="exact", operand_cache=cb, events=ev)
            t = _to_torch(t.dequantize()) if isinstance(t, F.QTensor) else _to_torch(t)
            y = y + t.to(y.device)
        return y.reshape(*lead, self.out_features).to(dt)

    # -- reporting ----------------------------------------------------------------------------
    def weight_bits(self) -> float:
        """Bits of the main weight per element (scales included); 16 for a high-precision weight."""
        return bits_per_element(self.w_fmt, (self.out_features, self.in_features))

    def bits_per_weight(self) -> float:
        """Storage bits of W plus the low-rank factors, per element of W. High-precision factors
        count 16 bits (bf16 storage)."""
        total = self.weight_bits() * self.in_features * self.out_features
        if self.rank:
            k = self.rank
            a_shape = (k, self.in_features) if (self.qA is not None and self.qA.axis == 0) else (self.in_features, k)
            b_shape = (self.out_features, k) if (self.qB is not None and self.qB.axis == 0) else (k, self.out_features)
            total += bits_per_element(self.a_fmt, a_shape) * self.in_features * k
            total += bits_per_element(self.b_fmt, b_shape) * k * self.out_features
        return total / (self.in_features * self.out_features)

    def record(self) -> QLinearRecord:
        lr = None
        if self.rank:
            lr = LowRankRecord(
                rank=self.rank,
                a_fmt=fmt_name(self.a_fmt),
                a_axis="in" if (self.qA is not None and self.qA.axis == 0) else "k",
                b_fmt=fmt_name(self.b_fmt),
                b_axis="k" if (self.qB is not None and self.qB.axis == 0) else "out",
                xa_fmt=fmt_name(self.xa_fmt),
                xab_fmt=fmt_name(self.xab_fmt),
            )
        return QLinearRecord(
            name=self.name,
            in_features=self.in_features,
            out_features=self.out_features,
            w_fmt=fmt_name(self.w_fmt),
            w_axis="in" if (self.qweight is None or self.qweight.axis == 1) else "out",
            x_fmt=fmt_name(self.x_fmt),
            bias=self.bias is not None,
            bias_fmt=fmt_name(self.bias_fmt),
            input_key=self.input_key,
            pre_transform=self.pre_transform_kind,
            pre_transform_size=self.in_features if self.pre_transform is not None else None,
            lowrank=lr,
            mode=self.mode,
            bits_per_weight=self.bits_per_weight(),
            accumulator=self.accumulator if self.mode == "exact" else "fp32",
            acc_events=None if self.acc_events is None else self.acc_events.to_dict(),
        )

    def extra_repr(self) -> str:
        w = fmt_name(self.w_fmt) or "hp"
        parts = [f"in={self.in_features}", f"out={self.out_features}",
                 f"W={w}({self.weight_bits():g}b)", f"X={fmt_name(self.x_fmt) or 'bypass'}"]
        if self.rank:
            r = self.record().lowrank
            parts.append(f"rank={self.rank} A={r.a_fmt or 'hp'}[{r.a_axis}] B={r.b_fmt or 'hp'}[{r.b_axis}] "
                         f"XA={r.xa_fmt or 'bypass'} XAB={r.xab_fmt or 'bypass'}")
        if self.bias is not None:
            parts.append(f"bias={fmt_name(self.bias_fmt) or 'hp'}")
        if self.pre_transform is not None:
            parts.append(f"pre={self.pre_transform_kind}")
        parts.append(f"bpw={self.bits_per_weight():.3f}")
        parts.append(f"mode={self.mode}")
        if self.mode == "exact":
            parts.append(f"acc={self.accumulator}")
        return ", ".join(parts)


def _to_torch(a) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return a
    import numpy as np

    return torch.from_numpy(np.ascontiguousarray(a))
