"""Perplexity, bits per byte and per-layer output error, each with its full protocol.

Token perplexity (LQER's protocol): the text is tokenized without special tokens, the first
``n_tokens`` ids are cut into non-overlapping windows of ``seq_len`` ids (the last one may be
shorter). With ``bos`` the tokenizer's BOS is prepended to every window and is not scored, so all
``n_tokens`` ids are scored; without it the first id of each window has no context and is not
scored. ``ppl = exp(total NLL / scored tokens)``; ``bits_per_byte = total NLL / ln 2 / bytes``
where ``bytes`` is the UTF-8 size of the scored text.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from hwsim.eval.data import load as load_corpus
from hwsim.eval.data import normalize_split

__all__ = ["Protocol", "PerplexityResult", "perplexity", "evaluate", "relative_error",
           "layer_output_errors"]


@dataclass(frozen=True)
class Protocol:
    """Everything that must match for two metric values to be compared."""

    model: str
    corpus: str
    split: str
    seq_len: int
    n_tokens: int | None  # requested cap (None: whole split)
    dtype: str
    seed: int
    bos: bool
    metric: str = "token-ppl"

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class PerplexityResult:
    """``ppl`` (token perplexity), ``bits_per_byte``, the totals behind them, and the protocol."""

    ppl: float
    bits_per_byte: float
    nll: float  # total negative log-likelihood in nats
    scored_tokens: int
    n_bytes: int
    n_windows: int
    protocol: Protocol

    def as_dict(self) -> dict:
        d = asdict(self)
        d["protocol"] = self.protocol.as_dict()
        return d

    def __str__(self) -> str:
        p = self.protocol
        return (f"ppl {self.ppl:.2f}  bits/byte {self.bits_per_byte:.4f}  "
                f"({self.scored_tokens} tokens in {self.n_windows} windows; model={p.model} "
                f"corpus={p.corpus}:{p.split} seq_len={p.seq_len} n_tokens={p.n_tokens} "
                f"dtype={p.dtype} bos={p.bos} seed={p.seed})")


def _model_dtype(model) -> str:
    try:
        return str(next(model.parameters()).dtype).replace("torch.", "")
    except (StopIteration, AttributeError):
        return "unknown"


def _encode(tokenizer, text: str,
            n_tokens: int | None) -> tuple[list[int], list[tuple[int, int]] | None]:
    """Ids (capped at n_tokens) and their character offsets when the tokenizer provides them."""
    n_chars = len(text) if n_tokens is None else max(4096, 8 * n_tokens)
    while True:
        sub = text[:n_chars]
        try:
            enc = tokenizer(sub, add_special_tokens=False, return_offsets_mapping=True)
            offsets = [tuple(o) for o in enc["offset_mapping"]]
        except (NotImplementedError, TypeError, ValueError, KeyError):
            enc = tokenizer(sub, add_special_tokens=False)
            offsets = None
        ids = list(enc["input_ids"])
        if n_tokens is None or n_chars >= len(text) or len(ids) > n_tokens + 1:
            if n_tokens is not None:
                if n_chars < len(text):  # the last id of a prefix may be cut mid-word
                    ids = ids[:-1]
                    offsets = offsets[:-1] if offsets is not None else None
                ids = ids[:n_tokens]
                offsets = offsets[:n_tokens] if offsets is not None else None
            return ids, offsets
        n_chars *= 2


def _scored_bytes(tokenizer, text: str, ids: list[int], offsets, start: int, end: int) -> int:
    """UTF-8 size of the text spanned by ids[start:end]."""
    if end <= start:
        return 0
    if offsets is not None:
        lo = offsets[start - 1][1] if start > 0 else 0
        # the scored text of a window runs from the end of the previous id to the end of the last
        return len(text[lo:offsets[end - 1][1]].encode("utf-8"))
    return len(tokenizer.decode(ids[start:end], clean_up_tokenization_spaces=False).encode("utf-8"))


def perplexity(model, tokenizer, text: str, *, seq_len: int = 512, n_tokens: int | None = 2048,
               bos: bool | None = None, batch_size: int = 1, progress: bool = True,
               model_name: str | None = None, corpus: str = "text", split: str = "eval",
               seed: int = 0) -> PerplexityResult:
    """Token perplexity and bits per byte of ``model`` on ``text``; see the module docstring.

    ``seq_len``: text tokens per window; ``n_tokens``: cap on the text tokens (None = all);
    ``bos``: None follows ``tokenizer.hwsim_prepend_bos`` (set by ``models.load``), else whether
    the tokenizer has a BOS. ``model_name``/``corpus``/``split``/``seed`` only label the protocol.
    """
    import torch
    from tqdm.auto import tqdm

    if not isinstance(seq_len, int) or seq_len < 2:
        raise ValueError(f"seq_len={seq_len!r} must be an int >= 2")
    if n_tokens is not None and (not isinstance(n_tokens, int) or n_tokens < 2):
        raise ValueError(f"n_tokens={n_tokens!r} must be None or an int >= 2")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be a positive int")
    if bos is None:
        bos = bool(getattr(tokenizer, "hwsim_prepend_bos",
                           getattr(tokenizer, "bos_token_id", None) is not None))
    bos_id = getattr(tokenizer, "bos_token_id", None)
    if bos and bos_id is None:
        raise ValueError("bos=True but the tokenizer has no bos_token_id")
    ids, offsets = _encode(tokenizer, text, n_tokens)
    if len(ids) < 2:
        raise ValueError("the text is too short to score (fewer than 2 tokens)")
    windows = [(s, min(s + seq_len, len(ids))) for s in range(0, len(ids), seq_len)]
    if not bos and windows[-1][1] - windows[-1][0] < 2:
        windows.pop()  # a 1-token window scores nothing without BOS
    device = next(model.parameters()).device
    total_nll = 0.0
    scored = 0
    n_bytes = 0
    model_was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            batches = [windows[i:i + batch_size] for i in range(0, len(windows), batch_size)]
            for batch in tqdm(batches, desc="perplexity", unit="batch", disable=not progress,
                              leave=False):
                # windows in one batch have equal length except possibly the last: group by length
                for length in sorted({e - s for s, e in batch}):
                    group = [(s, e) for s, e in batch if e - s == length]
                    x = torch.tensor([ids[s:e] for s, e in group], dtype=torch.long)
                    if bos:
                        x = torch.cat([torch.full((len(group), 1), bos_id, dtype=torch.long), x], 1)
                    x = x.to(device)
                    logits = model(input_ids=x).logits.float()
                    logp = torch.log_softmax(logits[:, :-1], dim=-1)
                    nll = -logp.gather(-1, x[:, 1:, None]).squeeze(-1)
                    total_nll += float(nll.double().sum())
                    scored += nll.numel()
                    for s, e in group:
                        n_bytes += _scored_bytes(tokenizer, text, ids, offsets,
                                                 s if bos else s + 1, e)
    finally:
        model.train(model_was_training)
    protocol = Protocol(model=model_name or getattr(model, "hwsim_name", None)
                        or getattr(model.config, "_name_or_path", "") or type(model).__name__,
                        corpus=corpus, split=split, seq_len=seq_len, n_tokens=n_tokens,
                        dtype=_model_dtype(model), seed=seed, bos=bos)
    return PerplexityResult(ppl=math.exp(total_nll / scored),
                            bits_per_byte=total_nll / math.log(2) / max(n_bytes, 1),
                            nll=total_nll, scored_tokens=scored, n_bytes=n_bytes,
                            n_windows=len(windows), protocol=protocol)


def evaluate(model, tokenizer, corpus: str = "austen", split: str = "eval", *, seq_len: int = 512,
             n_tokens: int | None = 2048, bos: bool | None = None, batch_size: int = 1,
             progress: bool = True, model_name: str | None = None,
             seed: int = 0) -> PerplexityResult:
    """``perplexity`` on a named corpus split (``hwsim.eval.data.load(corpus, split)``)."""
    split = normalize_split(split)
    text = load_corpus(corpus, split)
    return perplexity(model, tokenizer, text, seq_len=seq_len, n_tokens=n_tokens, bos=bos,
                      batch_size=batch_size, progress=progress, model_name=model_name,
                      corpus=corpus, split=split, seed=seed)


def relative_error(y_q, y_fp) -> float:
    """``||y_q - y_fp||_F / ||y_fp||_F`` (torch tensors or numpy arrays of the same shape)."""
    import numpy as np

    a = np.asarray(y_q.detach().cpu().double() if hasattr(y_q, "detach") else y_q, dtype=np.float64)
    b = np.asarray(y_fp.detach().cpu().double() if hasattr(y_fp, "detach") else y_fp,
                   dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"y_q shape {a.shape} != y_fp shape {b.shape}")
    den = np.linalg.norm(b)
    if den == 0:
        raise ValueError("y_fp is all zeros: the relative error is undefined")
    return float(np.linalg.norm(a - b) / den)


def layer_output_errors(model_fp, model_q, tokens, *, names: list[str] | None = None,
                        mode: str = "local", progress: bool = True) -> dict[str, float]:
    """Relative Frobenius output error of each linear of ``model_q`` vs ``model_fp``.

    ``tokens``: LongTensor [N, T] of held-out ids. ``names``: module names to compare (default:
    every ``torch.nn.Linear`` of ``model_fp`` that ``model_q`` also has). ``mode="local"`` feeds
    each quantized module the *fp* model's input of that layer (isolates its own error, nothing
    stored); ``mode="propagated"`` runs each model on its own activations (includes the error of
    earlier layers; stores one sequence's fp outputs at a time). The error is accumulated over all
    sequences: ``sqrt(sum ||Yq-Yfp||^2 / sum ||Yfp||^2)``.
    """
    import torch
    from tqdm.auto import tqdm

    if mode not in ("local", "propagated"):
        raise ValueError(f"mode={mode!r} is not valid; valid: local, propagated")
    if not hasattr(tokens, "dim") or tokens.dim() != 2:
        raise ValueError("tokens must be a LongTensor [N, T]")
    fp_mods = dict(model_fp.named_modules())
    q_mods = dict(model_q.named_modules())
    if names is None:
        names = [n for n, m in fp_mods.items() if isinstance(m, torch.nn.Linear) and n in q_mods]
    missing = [n for n in names if n not in fp_mods or n not in q_mods]
    if missing:
        raise ValueError(f"names: modules not in both models: {missing[:5]}")
    num = dict.fromkeys(names, 0.0)
    den = dict.fromkeys(names, 0.0)
    dev_fp = next(model_fp.parameters()).device
    dev_q = next(model_q.parameters()).device
    handles = []
    store: dict[str, Any] = {}

    def local_hook(name):
        def hook(mod, inputs, out):
            yq = q_mods[name](inputs[0].to(dev_q)).to(out.device)
            num[name] += float((yq.double() - out.double()).pow(2).sum())
            den[name] += float(out.double().pow(2).sum())
        return hook

    def store_hook(name):
        def hook(mod, inputs, out):
            store[name] = out.detach()
        return hook

    def compare_hook(name):
        def hook(mod, inputs, out):
            ref = store.pop(name).to(out.device)
            num[name] += float((out.double() - ref.double()).pow(2).sum())
            den[name] += float(ref.double().pow(2).sum())
        return hook

    try:
        with torch.no_grad():
            for name in names:
                if mode == "local":
                    handles.append(fp_mods[name].register_forward_hook(local_hook(name)))
                else:
                    handles.append(fp_mods[name].register_forward_hook(store_hook(name)))
                    handles.append(q_mods[name].register_forward_hook(compare_hook(name)))
            for row in tqdm(tokens, desc="layer errors", unit="seq", disable=not progress,
                            leave=False):
                model_fp(input_ids=row[None].to(dev_fp))
                if mode == "propagated":
                    model_q(input_ids=row[None].to(dev_q))
                    store.clear()
    finally:
        for h in handles:
            h.remove()
    return {n: math.sqrt(num[n] / den[n]) if den[n] > 0 else float("nan") for n in names}
