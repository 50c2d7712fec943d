"""KL-Top, OSTQuant's training loss (docs/spec/algorithms.md §4.5), computed in token chunks.

Per token, with teacher logits ``z_fp`` and student logits ``z_q`` over a vocabulary of V:
``I = TopK(z_fp, k)``, ``p = softmax(z_fp)`` gathered at I (probabilities of the **full**
softmax), ``log q = log_softmax(z_q)`` gathered at I, and

    ℒ = Σ_{i∈I} p_i (log p_i − log q_i)            (the official ``post_attn=True`` form)

averaged over the tokens. It is a partial sum that can be negative. Its gradient with respect
to the student logits is ``m_p·q − p·1_I`` with ``m_p = Σ_{i∈I} p_i`` and q the full softmax.
The renormalised variant (:func:`kl_top_renorm`) takes the softmax over I on both sides,
``p' = softmax(z_fp[I])``, ``q' = softmax(z_q[I])``, ``ℒ' = KL(p' ‖ q') ≥ 0``, gradient
``q' − p'`` on I and 0 elsewhere. For k = V both equal the full KL divergence.

Logits are processed ``chunk_tokens`` tokens at a time in forward and backward (a custom autograd
function recomputes the softmax in backward instead of keeping V-wide intermediates), so the
V-wide working set is one chunk; :func:`kl_top_from_hidden` goes further and never materialises
the student logits at all (it recomputes ``h Wᵀ + b`` per chunk). The teacher's top-k indices
and probabilities can be cached (:func:`teacher_topk`) with an identical result.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["TeacherTopK", "teacher_topk", "teacher_topk_from_hidden", "kl_top", "kl_top_renorm",
           "kl_top_from_hidden", "DEFAULT_K", "chunk_size"]

#: The official top-k (docs/spec/algorithms.md §4.5).
DEFAULT_K = 1000
#: Bytes of float32 V-wide working set per chunk (the chunk length follows from V).
DEFAULT_CHUNK_BYTES = 256 * 2 ** 20


def chunk_size(vocab: int, chunk_tokens: int | None = None) -> int:
    """Tokens per chunk: ``chunk_tokens`` or as many as fit ``DEFAULT_CHUNK_BYTES`` of float32 logits."""
    if chunk_tokens is None:
        return max(1, DEFAULT_CHUNK_BYTES // (4 * int(vocab)))
    if isinstance(chunk_tokens, bool) or not isinstance(chunk_tokens, int) or chunk_tokens < 1:
        raise ValueError(f"chunk_tokens={chunk_tokens!r}: a positive int or None")
    return chunk_tokens


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


@dataclass(frozen=True)
class TeacherTopK:
    """The teacher side of KL-Top for N tokens: ``idx`` [N, k] (int64) top-k vocabulary indices,
    ``logp`` [N, k] their log-probabilities under the full teacher softmax (float32 or float64).
    Cacheable per sample; the loss from it equals the loss from the teacher logits."""

    idx: torch.Tensor
    logp: torch.Tensor
    vocab: int

    @property
    def k(self) -> int:
        return int(self.idx.shape[-1])

    @property
    def n_tokens(self) -> int:
        return int(self.idx.shape[0])


def _check_k(k, vocab: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k={k!r}: a positive int (the top-k of the teacher; {DEFAULT_K} in OSTQuant)")
    return min(k, vocab)  # k ≥ V means the whole vocabulary


@torch.no_grad()
def teacher_topk(teacher_logits: torch.Tensor, k: int = DEFAULT_K, chunk_tokens: int | None = None) -> TeacherTopK:
    """Top-k indices and full-softmax log-probabilities of teacher logits [..., V] (no grad)."""
    z = teacher_logits.reshape(-1, teacher_logits.shape[-1])
    V = z.shape[-1]
    k = _check_k(k, V)
    wd = _work_dtype(z.dtype)
    idx, logp = [], []
    for s in range(0, z.shape[0], chunk_size(V, chunk_tokens)):
        zc = z[s:s + chunk_size(V, chunk_tokens)].to(wd)
        top, i = torch.topk(zc, k, dim=-1)
        idx.append(i)
        logp.append(top - torch.logsumexp(zc, dim=-1, keepdim=True))
    return TeacherTopK(torch.cat(idx), torch.cat(logp), V)


@torch.no_grad()
def teacher_topk_from_hidden(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                             k: int = DEFAULT_K, chunk_tokens: int | None = None) -> TeacherTopK:
    """:func:`teacher_topk` of the logits ``hidden @ weightᵀ + bias`` (hidden [..., d], weight
    [V, d]), computed per chunk without materialising all logits."""
    h = hidden.reshape(-1, hidden.shape[-1])
    V = weight.shape[0]
    k = _check_k(k, V)
    wd = _work_dtype(h.dtype)
    step = chunk_size(V, chunk_tokens)
    parts = [teacher_topk(_logits(h[s:s + step], weight, bias, wd), k, chunk_tokens=step)
             for s in range(0, h.shape[0], step)]
    return TeacherTopK(torch.cat([p.idx for p in parts]), torch.cat([p.logp for p in parts]), V)


def _logits(h: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None, wd: torch.dtype) -> torch.Tensor:
    z = h.to(wd) @ W.to(wd).T
    return z + b.to(wd) if b is not None else z


def _chunk_loss_grad(z: torch.Tensor, idx: torch.Tensor, logp: torch.Tensor, renorm: bool,
                     need_grad: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Sum over the chunk's tokens of ℒ, and dℒ_sum/dz [n, V] (if need_grad). z in work dtype."""
    logp = logp.to(z.dtype)
    logq = torch.gather(z, -1, idx) - torch.logsumexp(z, dim=-1, keepdim=True)
    if renorm:  # the same operations on both sides: student = teacher gives exactly 0
        logp = logp - torch.logsumexp(logp, dim=-1, keepdim=True)
        logq = logq - torch.logsumexp(logq, dim=-1, keepdim=True)
    p = logp.exp()
    loss = (p * (logp - logq)).sum()
    if not need_grad:
        return loss, None
    if renorm:
        g = torch.zeros_like(z).scatter_(-1, idx, logq.exp() - p)
    else:
        g = torch.softmax(z, dim=-1) * p.sum(-1, keepdim=True)
        g.scatter_add_(-1, idx, -p)
    return loss, g


def _as_teacher(teacher, vocab: int, k: int, chunk_tokens: int | None) -> TeacherTopK:
    if isinstance(teacher, TeacherTopK):
        if teacher.vocab != vocab:
            raise ValueError(f"teacher: built for a vocabulary of {teacher.vocab}, student has {vocab}")
        return teacher
    if not torch.is_tensor(teacher):
        raise ValueError(f"teacher: expected logits [..., V] or a TeacherTopK, got {type(teacher).__name__}")
    if teacher.shape[-1] != vocab:
        raise ValueError(f"teacher: logits have V={teacher.shape[-1]}, student has V={vocab}")
    return teacher_topk(teacher, k, chunk_tokens)


class _KLTopLogits(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, idx, logp, renorm, step):
        wd = _work_dtype(z.dtype)
        total = torch.zeros((), dtype=wd, device=z.device)
        for s in range(0, z.shape[0], step):
            total += _chunk_loss_grad(z[s:s + step].to(wd), idx[s:s + step], logp[s:s + step], renorm, False)[0]
        ctx.save_for_backward(z, idx, logp)
        ctx.renorm, ctx.step = renorm, step
        return (total / z.shape[0]).to(z.dtype if z.dtype == torch.float64 else torch.float32)

    @staticmethod
    def backward(ctx, grad_out):
        z, idx, logp = ctx.saved_tensors
        wd = _work_dtype(z.dtype)
        grad = torch.empty_like(z)
        scale = grad_out.to(wd) / z.shape[0]
        for s in range(0, z.shape[0], ctx.step):
            _, g = _chunk_loss_grad(z[s:s + ctx.step].to(wd), idx[s:s + ctx.step], logp[s:s + ctx.step],
                                    ctx.renorm, True)
            grad[s:s + ctx.step] = (g * scale).to(z.dtype)
        return grad, None, None, None, None


class _KLTopHidden(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, W, b, idx, logp, renorm, step):
        wd = _work_dtype(h.dtype)
        total = torch.zeros((), dtype=wd, device=h.device)
        for s in range(0, h.shape[0], step):
            z = _logits(h[s:s + step], W, b, wd)
            total += _chunk_loss_grad(z, idx[s:s + step], logp[s:s + step], renorm, False)[0]
        ctx.save_for_backward(h, W, b, idx, logp)
        ctx.renorm, ctx.step, ctx.has_bias = renorm, step, b is not None
        return (total / h.shape[0]).to(h.dtype if h.dtype == torch.float64 else torch.float32)

    @staticmethod
    def backward(ctx, grad_out):
        h, W, b, idx, logp = ctx.saved_tensors
        wd = _work_dtype(h.dtype)
        scale = grad_out.to(wd) / h.shape[0]
        need_h, need_W, need_b = ctx.needs_input_grad[:3]
        gh = torch.empty_like(h) if need_h else None
        gW = torch.zeros(W.shape, dtype=wd, device=W.device) if need_W else None
        gb = torch.zeros(W.shape[0], dtype=wd, device=W.device) if (need_b and ctx.has_bias) else None
        W_w = W.to(wd)
        for s in range(0, h.shape[0], ctx.step):
            hc = h[s:s + ctx.step].to(wd)
            z = _logits(hc, W_w, b, wd)
            _, g = _chunk_loss_grad(z, idx[s:s + ctx.step], logp[s:s + ctx.step], ctx.renorm, True)
            g = g * scale
            if need_h:
                gh[s:s + ctx.step] = (g @ W_w).to(h.dtype)
            if need_W:
                gW += g.T @ hc
            if gb is not None:
                gb += g.sum(0)
        return (gh, None if gW is None else gW.to(W.dtype), None if gb is None else gb.to(b.dtype),
                None, None, None, None)


def kl_top(student_logits: torch.Tensor, teacher, k: int = DEFAULT_K, *, renorm: bool = False,
           chunk_tokens: int | None = None) -> torch.Tensor:
    """KL-Top loss (scalar, mean over tokens) of student logits [..., V] against the teacher
    (logits [..., V] of the same leading shape, or a :class:`TeacherTopK` for the same tokens).
    Differentiable in the student logits; float32 (float64 for float64 logits)."""
    V = student_logits.shape[-1]
    z = student_logits.reshape(-1, V)
    t = _as_teacher(teacher, V, _check_k(k, V), chunk_tokens)
    if t.n_tokens != z.shape[0]:
        raise ValueError(f"teacher: {t.n_tokens} tokens, student: {z.shape[0]}")
    return _KLTopLogits.apply(z, t.idx.to(z.device), t.logp.to(z.device), bool(renorm), chunk_size(V, chunk_tokens))


def kl_top_renorm(student_logits: torch.Tensor, teacher, k: int = DEFAULT_K, *,
                  chunk_tokens: int | None = None) -> torch.Tensor:
    """The renormalised variant: KL between the softmaxes restricted to the teacher's top-k."""
    return kl_top(student_logits, teacher, k, renorm=True, chunk_tokens=chunk_tokens)


def kl_top_from_hidden(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, teacher,
                       k: int = DEFAULT_K, *, renorm: bool = False, chunk_tokens: int | None = None) -> torch.Tensor:
    """KL-Top of the student logits ``hidden @ weightᵀ + bias`` (hidden [..., d], weight [V, d]),
    never materialising more than one chunk of logits (forward and backward); differentiable in
    hidden, weight and bias. ``teacher``: a :class:`TeacherTopK` (or teacher logits [..., V])."""
    V = weight.shape[0]
    h = hidden.reshape(-1, hidden.shape[-1])
    t = _as_teacher(teacher, V, _check_k(k, V), chunk_tokens)
    if t.n_tokens != h.shape[0]:
        raise ValueError(f"teacher: {t.n_tokens} tokens, student: {h.shape[0]}")
    return _KLTopHidden.apply(h, weight, bias, t.idx.to(h.device), t.logp.to(h.device), bool(renorm),
                              chunk_size(V, chunk_tokens))
