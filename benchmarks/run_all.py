"""Run every benchmarks/bench_*.py script and print its output (each prints ratios measured in its
own run, plus the command).

    python benchmarks/run_all.py [--quick]     # --quick passes --n 4194304 to bench_formats.py
"""

from __future__ import annotations

import argparse
import pathlib
import subprocess
import sys
import time

QUICK_ARGS = {"bench_formats.py": ["--n", str(4 * 2 ** 20)]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller problem sizes where a script supports it")
    ap.add_argument("only", nargs="*", help="run only these scripts (file names)")
    args = ap.parse_args(argv)
    here = pathlib.Path(__file__).resolve().parent
    scripts = sorted(here.glob("bench_*.py"))
    if args.only:
        scripts = [s for s in scripts if s.name in args.only]
    failed = 0
    for script in scripts:
        extra = QUICK_ARGS.get(script.name, []) if args.quick else []
        print(f"=== {script.name} {' '.join(extra)}".rstrip(), flush=True)
        t = time.perf_counter()
        r = subprocess.run([sys.executable, str(script)] + extra, cwd=here.parent)
        print(f"=== {script.name}: exit {r.returncode}, {time.perf_counter() - t:.1f} s\n", flush=True)
        failed += r.returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
