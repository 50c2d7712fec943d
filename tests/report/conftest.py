"""Fixtures of the report tests: a synthetic study (tests/report/synthetic.py) and its rendered report."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from synthetic import study_info, synthetic_results  # noqa: E402

#: where the browser test leaves its screenshot (ignored by git)
ARTIFACTS = Path(__file__).parent / "artifacts"


@pytest.fixture(scope="session")
def results():
    """24 design points (12 accuracy x 2 hardware), the last one failed."""
    return synthetic_results()


@pytest.fixture(scope="session")
def report_dir(results, tmp_path_factory):
    """A report of the finished synthetic study, written once per session."""
    from hwsim.report import write_report

    out = tmp_path_factory.mktemp("report")
    write_report(results, out, info=study_info(results))
    return out
