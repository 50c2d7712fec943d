"""The accumulator table of issue 14: perplexity and cost of SmolLM2 W4A8 for each accumulator width.

Runs ``studies/accumulator.toml`` (RTN, exact mode; mxint4 x mxint8 and int4_ch x int8_tok; fp32 and
saturating fixed:32/24/20/16 with RNE and F = W//2 or F = W - 16) through the study engine and prints one markdown
table: perplexity (brown), the accumulator the cost model sized, area (mm^2), energy per token
(uJ, prefill of 512 tokens and a decode step at context 512) on the study's 32x32 WS array at 45 nm,
and the accumulator events counted over the evaluated tokens (saturations, wraps, share of segment
adds that dropped bits, largest number of bits dropped). Finished points are kept in the study's
database, so a second run only prints.

    OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 .venv/bin/python benchmarks/acc_table.py               # 4,096 tokens
    OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 .venv/bin/python benchmarks/acc_table.py --n-tokens 512
    .venv/bin/python benchmarks/acc_table.py --dry-run      # validate, list the points, evaluate nothing

``--n-tokens N`` overrides ``[protocol] n_tokens`` and keeps its own database
(``reports/accumulator_n<N>/study.db``) unless ``--db`` is given.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sqlite3
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_STUDY = ROOT / "studies" / "accumulator.toml"


def build_study(path: Path, n_tokens: int | None = None, db: str | None = None):
    """The validated Study of ``path``, with ``n_tokens`` (and then its own database) overridden."""
    from hwsim.dse import Study

    raw = tomllib.loads(path.read_text())
    if n_tokens is not None and n_tokens != raw["protocol"].get("n_tokens"):
        raw["protocol"]["n_tokens"] = n_tokens
        raw["study"]["name"] = f"{raw['study']['name']}_n{n_tokens}"
    if db is not None:
        raw["study"]["db"] = db
    return Study.from_dict(raw, source=str(path))


def _costed_as(accumulator: str, hw_acc: str | None) -> str:
    """The accumulator the cost model sized (hwsim.cost_models.workload._record_acc's rule for these
    integer and block datapaths): a fixed-point one measured in exact mode, else the hardware's."""
    from hwsim.matmul.datapath import FixedAcc, parse_accumulator

    return str(parse_accumulator(accumulator)) if isinstance(parse_accumulator(accumulator), FixedAcc) \
        else (hw_acc or "int32")


def _num(v: float, sign: str = "") -> str:
    """4 decimals for perplexities of a working model, 3 significant digits for a collapsed one."""
    return f"{v:{sign}.4f}" if abs(v) < 1e4 else f"{v:{sign}.3g}"


def _events(db: Path) -> dict[str, dict]:
    with sqlite3.connect(db) as con:
        return {k: json.loads(m).get("acc_events") or {}
                for k, m in con.execute("SELECT accuracy_key, metrics_json FROM accuracy")}


def table(study, db: Path) -> str:
    """The markdown table of the study's design points stored in ``db`` (order: the study's)."""
    from hwsim.dse import load

    df = load(db)
    events = _events(db)
    rows = {r["accuracy_key"]: r for _, r in df.iterrows()}
    lines = ["| format pair (W × A) | accumulator | costed as | ppl | Δppl vs fp32 | area mm² | "
             "energy µJ/token prefill | decode | saturations | wraps | adds rounded | max bits lost |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    fp32_ppl: dict[str, float] = {}
    for p in study.accuracy_points():
        r = rows.get(p.key)
        pair = f"{p.w} × {p.x}"
        if r is None:
            lines.append(f"| {pair} | {p.accumulator} | | (not run) | | | | | | | | |")
            continue
        ppl = r.get("ppl")
        if p.accumulator == "fp32" and ppl == ppl:
            fp32_ppl[pair] = ppl
        d = _num(ppl - fp32_ppl[pair], "+") if pair in fp32_ppl and ppl == ppl else ""
        ev = events.get(p.key, {})
        if r["status"] == "ok":
            area, pre, dec = (f"{r['area_mm2']:.4f}", f"{r['energy_per_token_uj']:.3f}",
                              f"{r['decode_energy_per_token_uj']:.3f}")
        else:
            err = str(r.get("error") or "failed")
            m = re.search(r"narrower than the (\d+)-bit", err)
            why = f"narrower than the {m.group(1)}-bit exact segment sum" if m else err.replace("|", "/")[:80]
            area, pre, dec = f"n/a: {why}", "n/a", "n/a"
        rounded = f"{100 * ev['rounded'] / ev['adds']:.1f}%" if ev.get("adds") else "-"
        lines.append(
            f"| {pair} | {p.accumulator} | {_costed_as(p.accumulator, r.get('acc'))} | "
            f"{_num(ppl)} | {d} | {area} | {pre} | {dec} | "
            f"{ev.get('saturations', '-')} | {ev.get('wraps', '-')} | {rounded} | {ev.get('max_bits_lost', '-')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--study", type=Path, default=DEFAULT_STUDY)
    ap.add_argument("--n-tokens", type=int, default=None, help="evaluated tokens (default: the study's, 4096)")
    ap.add_argument("--db", default=None, help="results database (default: the study's, per token count)")
    ap.add_argument("--threads", type=int, default=1, help="torch/numba threads (default 1)")
    ap.add_argument("--dry-run", action="store_true", help="validate and list the points; evaluate nothing")
    ap.add_argument("--no-run", action="store_true", help="print the table of what is stored; evaluate nothing")
    args = ap.parse_args(argv)

    study = build_study(args.study, args.n_tokens, args.db)
    n_tok = study.accuracy_points()[0].n_tokens
    if args.dry_run:
        print(f"study {study.name}: {len(study.accuracy_points())} accuracy x {len(study.hardware_points())} "
              f"hardware points, {n_tok} tokens; database {study.db_path}")
        for p in study.accuracy_points():
            print(f"  {p.key}  {study.setting(p)}: {p.label}")
        return 0
    t0, load0 = time.perf_counter(), os.getloadavg()[0]
    if not args.no_run:
        from hwsim.dse.runner import run_study

        summary = run_study(study, threads=args.threads, progress=sys.stderr.isatty())
        print(f"evaluated {summary['evaluated']} points ({summary['failed']} failed) in "
              f"{summary['wall_s']:.0f} s", file=sys.stderr)
    load = os.getloadavg()
    print(f"SmolLM2-135M, RTN, exact mode, brown, {n_tok} tokens in windows of "
          f"{study.accuracy_points()[0].seq_len}; cost: {study.label(study.hardware_points()[0])}, "
          f"prefill 512 / decode at context 512; {args.threads} thread(s), {os.cpu_count()} cores, "
          f"load average {load0:.1f} at start, {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} at the end; "
          f"{time.perf_counter() - t0:.0f} s\n")
    print(table(study, Path(study.db_path)))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("NUMBA_NUM_THREADS", "1")
    sys.exit(main())
