"""Corpora for calibration and evaluation, read offline from the hwsim cache.

``load(name, split)`` returns the split's text (``str``); ``split`` is ``"calib"`` or ``"eval"``
(aliases: ``calibration``/``train`` and ``evaluation``/``test``). Calibration and evaluation
text never overlap:

=============  ========================================  =====================================
corpus         calib                                     eval
=============  ========================================  =====================================
``austen``     *Emma* + *Mansfield Park*                 *Pride and Prejudice*
``brown``      all 456 texts outside category ``ca``     the 44 ``ca`` texts (press reportage)
``wikitext2``  wikitext-2-raw-v1 train                   wikitext-2-raw-v1 test
``file:PATH``  first 90 % of the file (cut at a newline)  the remaining 10 %
=============  ========================================  =====================================

``calibration_set(tokenizer, ...)`` turns a split into the unpadded ``LongTensor [N, T]`` the
quantizers consume, with its provenance.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from hwsim.eval.cache import MissingResourceError, cache_dir
from hwsim.eval.fetch import corpus_dir

__all__ = ["CORPORA", "SPLITS", "DEFAULT_CORPUS", "load", "austen_novels", "brown_texts",
           "strip_brown_tags", "detokenize_brown", "normalize_split", "check_corpus",
           "CalibrationSet", "calibration_set", "tokenize", "tokenize_split"]

DEFAULT_CORPUS = "austen"
CORPORA = ("austen", "brown", "wikitext2", "file:PATH")
SPLITS = ("calib", "eval")
_SPLIT_ALIASES = {"calib": "calib", "calibration": "calib", "train": "calib",
                  "eval": "eval", "evaluation": "eval", "test": "eval"}

AUSTEN_SPLITS = {"calib": ("emma", "mansfieldpark"), "eval": ("prideprejudice",)}
BROWN_EVAL_CATEGORY = "a"  # files ca01..ca44: press reportage


def normalize_split(split: str) -> str:
    """Canonical split name ("calib" or "eval"); ValueError otherwise."""
    if split not in _SPLIT_ALIASES:
        raise ValueError(f"split={split!r} is not valid; valid: calib (calibration, train), "
                         "eval (evaluation, test)")
    return _SPLIT_ALIASES[split]


def _missing(name: str) -> MissingResourceError:
    return MissingResourceError(
        f"corpus {name!r} is not in the cache ({corpus_dir(name)}); fetch it with: "
        f"hwsim fetch --corpus {name}   (or scripts/setup.sh)")


@lru_cache(maxsize=2)
def _austen_db(path: str):
    from hwsim.eval.rdata import LazyLoadDB

    return LazyLoadDB(Path(path) / "Rdata")


def austen_novels(names: tuple[str, ...] | None = None) -> dict[str, str]:
    """Novels of janeaustenr by R object name (``emma``, ``prideprejudice``, ...): lines joined
    by ``"\\n"`` (empty lines mark paragraphs, as in the package)."""
    d = corpus_dir("austen")
    if not (d / "Rdata.rdx").is_file() or not (d / "Rdata.rdb").is_file():
        raise _missing("austen")
    db = _austen_db(str(d))
    names = tuple(db.names()) if names is None else names
    out = {}
    for n in names:
        lines = db.get(n)
        out[n] = "\n".join("" if x is None else x for x in lines)
    return out


_TAG_TOKEN = re.compile(r"\S+")
_SPACE_BEFORE = re.compile(r" ([,.;:!?%)\]])")
_SPACE_AFTER = re.compile(r"([($\[]) ")


def detokenize_brown(sentence: str) -> str:
    """Plain-text spacing for one tag-stripped Brown sentence: the ```` `` ```` / ``''`` quote
    tokens become ``"`` attached to the quoted words, no space before closing punctuation
    (``, . ; : ! ? % ) ]``) or after opening brackets and ``$``."""
    s = sentence.replace("`` ", '"').replace(" ''", '"').replace("``", '"').replace("''", '"')
    s = _SPACE_BEFORE.sub(r"\1", s)
    return _SPACE_AFTER.sub(r"\1", s)


def strip_brown_tags(tagged: str, detokenize: bool = True) -> str:
    """Drop the ``/tag`` suffix of every ``word/tag`` token (the tag follows the *last* slash).

    Returns one sentence per line (the corpus has one per line, paragraphs start with a tab);
    tokens are joined by single spaces, then ``detokenize_brown`` fixes quotes and punctuation
    spacing unless ``detokenize=False``.
    """
    lines = []
    for line in tagged.splitlines():
        toks = [t.rsplit("/", 1)[0] if "/" in t else t for t in _TAG_TOKEN.findall(line)]
        if toks:
            sent = " ".join(toks)
            lines.append(detokenize_brown(sent) if detokenize else sent)
    return "\n".join(lines)


def brown_texts() -> dict[str, str]:
    """All 500 Brown texts by file id (``ca01`` ... ``cr09``), tags stripped."""
    d = corpus_dir("brown")
    if not (d / "ca01").is_file():
        raise _missing("brown")
    return dict(_brown_texts(str(d)))


@lru_cache(maxsize=1)
def _brown_texts(d: str) -> tuple[tuple[str, str], ...]:
    files = sorted(p for p in Path(d).iterdir() if re.fullmatch(r"c[a-r]\d\d", p.name))
    return tuple((p.name, strip_brown_tags(p.read_text(encoding="utf-8", errors="replace")))
                 for p in files)


def _brown(split: str) -> str:
    texts = brown_texts()
    keep = [t for fid, t in texts.items()
            if (fid[1] == BROWN_EVAL_CATEGORY) == (split == "eval")]
    return "\n\n".join(keep)


def _wikitext2(split: str) -> str:
    try:
        import datasets
    except ImportError as exc:
        raise MissingResourceError("corpus 'wikitext2' needs the `datasets` package and a cached "
                                   "or reachable Hugging Face hub: pip install datasets; "
                                   "hwsim fetch --corpus wikitext2") from exc
    hf_split = "train" if split == "calib" else "test"
    try:
        ds = datasets.load_dataset("wikitext", "wikitext-2-raw-v1", split=hf_split)
    except Exception as exc:  # hub unreachable and not cached
        raise MissingResourceError(f"corpus 'wikitext2' could not be loaded ({exc}); "
                                   "fetch it with: hwsim fetch --corpus wikitext2") from exc
    return "\n\n".join(ds["text"])


def _file(path: str, split: str) -> str:
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"corpus='file:{path}': {p} is not a file")
    text = p.read_text(encoding="utf-8", errors="replace")
    cut = int(len(text) * 0.9)
    nl = text.find("\n", cut)
    cut = nl + 1 if nl != -1 else cut
    return text[:cut] if split == "calib" else text[cut:]


def check_corpus(name: str) -> str:
    """Return ``name`` if it is a valid corpus name (not necessarily fetched); ValueError else."""
    if isinstance(name, str) and (name in ("austen", "brown", "wikitext2")
                                  or (name.startswith("file:") and len(name) > 5)):
        return name
    raise ValueError(f"corpus={name!r} is not valid; valid: {', '.join(CORPORA)}")


def load(name: str = DEFAULT_CORPUS, split: str = "eval") -> str:
    """Text of corpus ``name`` for ``split`` ("calib" or "eval"); see the module docstring.

    Raises ``MissingResourceError`` (a ``FileNotFoundError``) naming the fetch command when the
    corpus is not in the cache.
    """
    split = normalize_split(split)
    check_corpus(name)
    if name == "austen":
        novels = austen_novels(AUSTEN_SPLITS[split])
        return "\n\n".join(novels[n] for n in AUSTEN_SPLITS[split])
    if name == "brown":
        return _brown(split)
    if name == "wikitext2":
        return _wikitext2(split)
    if name.startswith("file:") and len(name) > 5:
        return _file(name[5:], split)
    raise ValueError(f"corpus={name!r} is not valid; valid: {', '.join(CORPORA)}")


def tokenize(tokenizer: Any, text: str, max_tokens: int | None = None) -> list[int]:
    """Token ids of ``text`` without special tokens; with ``max_tokens`` only a prefix of the
    text is tokenized (grown until it yields more than ``max_tokens`` ids), then cut."""
    if max_tokens is None:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    n_chars = max(4096, 8 * max_tokens)
    while True:
        # +1 token of slack: the last token of a prefix may be cut mid-word
        ids = list(tokenizer(text[:n_chars], add_special_tokens=False)["input_ids"])
        if n_chars >= len(text) or len(ids) > max_tokens + 1:
            if n_chars < len(text):
                ids = ids[:-1]
            return ids[:max_tokens]
        n_chars *= 2


def _tokenizer_fingerprint(tokenizer: Any) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        blob = backend.to_str()
    else:
        blob = json.dumps(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha1(f"{type(tokenizer).__name__}\n{blob}".encode()).hexdigest()[:16]


_TOKEN_MEMO: dict[tuple[str, str], Any] = {}


def tokenize_split(tokenizer: Any, corpus: str, split: str):
    """All token ids of a corpus split (LongTensor [n]), no special tokens.

    Cached in memory and on disk (``$HWSIM_CACHE/tokens/<tokenizer>-<text sha1>.npy``, written
    atomically), keyed by the tokenizer's full definition and the text, so a changed corpus or
    tokenizer never reuses stale ids.
    """
    import numpy as np
    import torch

    text = load(corpus, normalize_split(split))
    key = (_tokenizer_fingerprint(tokenizer), hashlib.sha1(text.encode()).hexdigest()[:16])
    if key in _TOKEN_MEMO:
        return _TOKEN_MEMO[key]
    path = cache_dir("tokens", f"{key[0]}-{key[1]}.npy")
    arr = None
    if path.is_file():
        try:
            arr = np.load(path)
        except (OSError, ValueError):
            arr = None
    if arr is None:
        arr = np.asarray(tokenize(tokenizer, text), dtype=np.int64)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        with open(tmp, "wb") as f:
            np.save(f, arr)
        os.replace(tmp, path)
    ids = torch.from_numpy(arr)
    if len(_TOKEN_MEMO) > 8:
        _TOKEN_MEMO.clear()
    _TOKEN_MEMO[key] = ids
    return ids


@dataclass(frozen=True)
class CalibrationSet:
    """Unpadded calibration token ids ``tokens`` (LongTensor [n, seq_len]) and provenance.

    ``bos``: every row starts with the tokenizer's BOS followed by ``seq_len - 1`` text tokens.
    Rows are distinct, non-overlapping chunks of the split, drawn with ``seed``.
    """

    tokens: Any
    corpus: str
    split: str
    n: int
    seq_len: int
    seed: int
    bos: bool

    def provenance(self) -> dict:
        return {"corpus": self.corpus, "split": self.split, "n": self.n,
                "seq_len": self.seq_len, "seed": self.seed, "bos": self.bos}


def calibration_set(tokenizer: Any, corpus: str = DEFAULT_CORPUS, *, n: int = 32,
                    seq_len: int = 512, seed: int = 0, split: str = "calib",
                    bos: bool | None = None) -> CalibrationSet:
    """``n`` random non-overlapping chunks of ``seq_len`` tokens from the calibration split.

    The split's text is tokenized, cut into consecutive chunks, and ``n`` distinct chunks are
    drawn with ``torch.Generator().manual_seed(seed)``. ``bos=None`` follows
    ``tokenizer.hwsim_prepend_bos`` (set by ``models.load``), else whether the tokenizer has one.
    """
    import torch

    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n={n!r} must be a positive int")
    if not isinstance(seq_len, int) or seq_len < 2:
        raise ValueError(f"seq_len={seq_len!r} must be an int >= 2")
    split = normalize_split(split)
    if bos is None:
        bos = bool(getattr(tokenizer, "hwsim_prepend_bos",
                           getattr(tokenizer, "bos_token_id", None) is not None))
    if bos and getattr(tokenizer, "bos_token_id", None) is None:
        raise ValueError("bos=True but the tokenizer has no bos_token_id")
    body = seq_len - 1 if bos else seq_len
    ids = tokenize_split(tokenizer, corpus, split)
    n_chunks = ids.numel() // body
    if n_chunks < n:
        raise ValueError(f"n={n}: corpus {corpus!r} split {split!r} has only {n_chunks} chunks of "
                         f"{body} tokens; lower n or seq_len")
    g = torch.Generator().manual_seed(seed)
    pick = torch.randperm(n_chunks, generator=g)[:n].sort().values
    chunks = ids[: n_chunks * body].view(n_chunks, body)[pick]
    if bos:
        bos_col = torch.full((n, 1), tokenizer.bos_token_id, dtype=torch.long)
        chunks = torch.cat([bos_col, chunks], 1)
    return CalibrationSet(tokens=chunks.contiguous(), corpus=corpus, split=split, n=n,
                          seq_len=seq_len, seed=seed, bos=bos)
