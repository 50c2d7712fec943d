"""``hwsim report DB --out DIR``: the accuracy-vs-hardware report of a study database."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._args import with_examples


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "report", help="write the accuracy-vs-hardware report (HTML, figures, CSV/Parquet) of a study",
        description="Read a study database (written by the design-space runner) and write DIR/report.html "
                    "(self-contained: opens offline), DIR/points.csv, DIR/points.parquet and "
                    "DIR/figures/*.png|svg. Works on an unfinished study: it reports what is there.",
        **with_examples("hwsim report reports/default/study.db --out reports/default",
                        "hwsim report study.db --out /tmp/report --title 'W4 sweep'"))
    p.add_argument("db", metavar="DB", help="the study's SQLite database")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    p.add_argument("--title", default=None, help="page title (default: from the study's name)")
    p.set_defaults(func=_report)


def _report(args: argparse.Namespace) -> int:
    from hwsim.report import write_report

    db = Path(args.db)
    if not db.is_file():
        raise FileNotFoundError(f"report: study database {str(db)!r} does not exist")
    page = write_report(db, args.out, title=args.title)
    print(page)
    return 0
