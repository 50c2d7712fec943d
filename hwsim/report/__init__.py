"""Accuracy-vs-hardware report of a design-space study (reads results; never loads models or torch).

``write_report(source, out_dir)`` writes ``report.html`` (self-contained), ``points.csv``,
``points.parquet`` and ``figures/*.{png,svg}``; ``pareto(df, minimize=[...])`` marks the front.
"""

from hwsim.report.html import write_report
from hwsim.report.pareto import pareto

__all__ = ["pareto", "write_report"]
