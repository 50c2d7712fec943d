"""``hwsim study``: run a co-design study (accuracy x hardware design points) and write its report.

    hwsim study studies/default.toml                  # run (resumes: finished points are kept)
    hwsim study studies/default.toml --dry-run        # the expanded points, what is stored, the work left
    hwsim study studies/smoke.toml --jobs 2           # two worker processes
    hwsim study studies/smoke.toml --executor ray     # Ray tasks (pip install 'hwsim[ray]')
    hwsim study export reports/default/study.db --csv points.csv --parquet points.parquet
    hwsim demo                                        # = hwsim study studies/default.toml
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ._args import int_at_least, with_examples

__all__ = ["register", "DEFAULT_STUDY"]

_EXAMPLES = [ln.strip() for ln in __doc__.splitlines() if ln.strip().startswith("hwsim ")]

#: the main job (README): shipped in the repository's studies/ folder
DEFAULT_STUDY = Path(__file__).resolve().parents[2] / "studies" / "default.toml"


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", default=None, help="results database (default: the study's [study].db)")
    p.add_argument("--out", default=None, help="report directory (default: the study's [study].report_dir)")
    p.add_argument("--resume", action="store_true",
                   help="continue a study in its database (the default: finished points are never recomputed)")
    p.add_argument("--fresh", action="store_true", help="move an existing database aside and start over")
    p.add_argument("--retry-failed", action="store_true", help="re-run only the points that failed")
    p.add_argument("--executor", choices=("local", "ray"), default="local", help="where accuracy points run")
    p.add_argument("--jobs", type=int_at_least(1), default=1, help="worker processes / concurrent Ray tasks (default 1)")
    p.add_argument("--ray-address", default=None, help="Ray cluster address ('auto' or host:port; default: local)")
    p.add_argument("--only", default=None, help="only accuracy points whose label matches (glob or substring)")
    p.add_argument("--dry-run", action="store_true", help="print the expanded design points and the work left")
    p.add_argument("--no-report", action="store_true", help="do not write the report at the end")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def register(subparsers) -> None:
    p = subparsers.add_parser("study", help="run a co-design study file (TOML) and write its report",
                              description="Run a co-design study (accuracy x hardware design points) and write its "
                                          "report; finished points are kept, so a second run resumes.",
                              **with_examples(*_EXAMPLES))
    p.add_argument("target", nargs="+", metavar="FILE | export DB",
                   help="a study file, or 'export DB' to export a results database")
    p.add_argument("--csv", default=None, help="export: write the design points as CSV here")
    p.add_argument("--parquet", default=None, help="export: write the design points as Parquet here")
    _add_run_args(p)
    p.set_defaults(func=handler)
    d = subparsers.add_parser("demo", help="the main job: run studies/default.toml and write its report",
                              description="The main job: run studies/default.toml (= hwsim study "
                                          "studies/default.toml) and write its report.",
                              **with_examples("hwsim demo", "hwsim demo --dry-run", "hwsim demo --jobs 2 --quiet"))
    _add_run_args(d)
    d.set_defaults(func=lambda a: _run(str(DEFAULT_STUDY), a))


def handler(args) -> int:
    if args.target[0] == "export":
        if len(args.target) != 2:
            raise ValueError("usage: hwsim study export DB [--csv FILE] [--parquet FILE]")
        return _export(args.target[1], args.csv, args.parquet)
    if len(args.target) != 1:
        raise ValueError(f"expected one study file, got {args.target}")
    return _run(args.target[0], args)


def _export(db: str, csv: str | None, parquet: str | None) -> int:
    from hwsim.dse import load

    if not (csv or parquet):
        raise ValueError("export: give --csv FILE and/or --parquet FILE")
    df = load(db)
    if csv:
        df.to_csv(csv, index=False)
        print(f"wrote {csv} ({len(df)} design points)")
    if parquet:
        df.to_parquet(parquet, index=False)
        print(f"wrote {parquet} ({len(df)} design points)")
    return 0


def _dry_run(study, db: Path, only) -> int:
    from hwsim.dse.runner import plan
    from hwsim.dse.store import ResultStore

    store = ResultStore(db) if db.exists() else None
    if store is None:
        import tempfile

        tmp = tempfile.TemporaryDirectory()
        store = ResultStore(Path(tmp.name) / "empty.db")
    with store:
        pl = plan(study, store, only=only)
        done = store.design_keys()
    acc, hws = pl["accuracy_points"], pl["hardware_points"]
    print(f"study {study.name}: {len(acc)} accuracy points x {len(hws)} hardware points = "
          f"{len(acc) * len(hws)} design points; database {db}")
    print("\naccuracy points (evaluated once each):")
    for i, p in enumerate(acc):
        state = pl["stored"].get(p.key, "todo")
        print(f"  [{i:3d}] {p.key}  {state:6s}  {p.label}  ({p.model}, {p.eval_corpus} {p.n_tokens} tok)")
    print("\nhardware points (every accuracy point is costed on each):")
    for i, h in enumerate(hws):
        print(f"  [{i:3d}] {h.key}  {h.label}  prefill {h.prefill_seq}, decode at context {h.decode_context}, "
              f"batch {h.batch}")
    from hwsim.dse import DesignPoint

    n_stored = sum(DesignPoint(a, h).key in done for a in acc for h in hws)
    print(f"\nstored design points: {n_stored} of {len(acc) * len(hws)}")
    est = pl["estimate"]
    print("work left: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in est.items()))
    return 0


def _run(path: str, args) -> int:
    import time

    from hwsim.dse import Study
    from hwsim.dse.runner import run_study

    study = Study.from_toml(path)
    db = Path(args.db) if args.db else Path(study.db_path)
    if args.dry_run:
        return _dry_run(study, db, args.only)
    if args.fresh and db.exists():
        aside = db.with_name(f"{db.stem}.{time.strftime('%Y%m%d-%H%M%S')}{db.suffix}")
        db.rename(aside)
        for ext in ("-wal", "-shm"):
            side = Path(str(db) + ext)
            if side.exists():
                side.rename(Path(str(aside) + ext))
        print(f"moved the old database to {aside}")
    summary = run_study(study, db, executor=args.executor, jobs=args.jobs, only=args.only,
                        retry_failed=args.retry_failed, progress=not args.quiet, ray_address=args.ray_address)
    print(f"study {study.name}: evaluated {summary['evaluated']} accuracy points ({summary['failed']} failed), "
          f"re-costed {summary['recosted']}; database {summary['db']} holds {summary['design']} design points "
          f"({summary['wall_s']:.1f} s)")
    if not args.no_report:
        from hwsim.report import write_report

        out = Path(args.out) if args.out else Path(study.report_dir)
        html = write_report(db, out)
        print(f"report: {html}")
    return 0
