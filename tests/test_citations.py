"""Citations such as ``docs/spec/formats.md §1.6`` resolve inside the repository (issue 9): the
file exists (a path from the repository root) and has a heading numbered 1.6. Checked for the whole package, its tests, benchmarks, studies and guides."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCOPE = ["hwsim", "tests", "benchmarks", "studies", "scripts", "README.md", "docs/formats.md", "docs/matmul.md",
         "docs/cost_models.md", "docs/quant.md", "docs/quant_algorithms.md", "docs/evaluation.md", "docs/dse.md",
         "docs/report.md"]
SPEC_NAMES = r"(?:formats|matmul|cost_model|algorithms|architecture|evaluation)\.md"
CITE = re.compile(r"(?<![\w.-])(?P<file>(?:[\w./-]*/)?" + SPEC_NAMES + r")(?:,? (?:§|section )(?P<sec>\d+(?:\.\d+)*))?")


def _files():
    for entry in SCOPE:
        p = ROOT / entry
        yield from ([p] if p.is_file() else sorted(q for q in p.rglob("*") if q.suffix in (".py", ".md", ".toml")))


def _sections(path: Path) -> set[str]:
    return set(re.findall(r"^#+\s+(\d+(?:\.\d+)*)\.?\s", path.read_text(), flags=re.M))


def test_spec_citations_resolve():
    bad, n = [], 0
    for f in _files():
        for m in CITE.finditer(f.read_text()):
            n += 1
            target = ROOT / m["file"]
            where = f"{f.relative_to(ROOT)}: {m[0]}"
            if not target.is_file():
                bad.append(where + " (no such file in the repository)")
            elif m["sec"] and m["sec"] not in _sections(target):
                bad.append(where + " (no such section)")
    assert n > 50
    assert not bad, "\n".join(bad)
