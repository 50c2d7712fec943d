"""Pareto fronts of a study's design points: which rows no other row dominates."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

__all__ = ["pareto"]

#: rows compared against all others at once (bounds the (block, n, objectives) temporary)
_BLOCK_ROWS = 256


def pareto(df: pd.DataFrame, minimize: Sequence[str] = (), maximize: Sequence[str] = (), *,
           by: str | Sequence[str] | None = None) -> pd.Series:
    """Boolean Series (index of ``df``): True where no other row dominates the row.

    A row dominates another when it is no worse in every objective and better in at least one.
    Rows with NaN (or inf) in any objective are never on the front and never dominate; identical
    rows do not dominate each other, so duplicates on the front are all on it. With one objective
    the front is the row(s) at the minimum (or maximum). ``by``: column(s) whose groups get their
    own front (e.g. ``"hw_label"``: designs on different nodes are not compared).
    """
    minimize, maximize = _as_list(minimize, "minimize"), _as_list(maximize, "maximize")
    objectives = minimize + maximize
    if not objectives:
        raise ValueError("pareto: give at least one column in minimize=[...] or maximize=[...]")
    both = sorted(set(minimize) & set(maximize))
    if both:
        raise ValueError(f"pareto: columns {both} are in both minimize and maximize")
    missing = [c for c in objectives if c not in df.columns]
    if missing:
        raise ValueError(f"pareto: objective columns {missing} are not in the DataFrame; "
                         f"columns are {list(df.columns)}")
    if by is not None:
        out = pd.Series(False, index=df.index, dtype=bool)
        for _, group in df.groupby(by, sort=False, dropna=False):
            out.loc[group.index] = pareto(group, minimize, maximize).to_numpy()
        return out
    values = np.empty((len(df), len(objectives)), dtype=float)
    for j, col in enumerate(objectives):
        try:
            v = pd.to_numeric(df[col], errors="raise").to_numpy(dtype=float, na_value=np.nan)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"pareto: column {col!r} is not numeric ({df[col].dtype})") from exc
        values[:, j] = -v if col in maximize else v
    return pd.Series(_front_mask(values), index=df.index, dtype=bool)


def _front_mask(values: np.ndarray) -> np.ndarray:
    """(n,) bool of non-dominated rows of ``values`` (n, objectives), all objectives minimized."""
    valid = np.isfinite(values).all(axis=1)
    mask = np.zeros(len(values), dtype=bool)
    pts = values[valid]
    on_front = np.ones(len(pts), dtype=bool)
    for start in range(0, len(pts), _BLOCK_ROWS):
        block = pts[start:start + _BLOCK_ROWS, None, :]          # (b, 1, m)
        no_worse = (pts[None, :, :] <= block).all(axis=2)       # (b, n): other no worse than row
        better = (pts[None, :, :] < block).any(axis=2)          # (b, n): other better somewhere
        on_front[start:start + _BLOCK_ROWS] = ~(no_worse & better).any(axis=1)
    mask[valid] = on_front
    return mask


def _as_list(cols: str | Sequence[str], name: str) -> list[str]:
    if isinstance(cols, str):
        return [cols]
    try:
        return [str(c) for c in cols]
    except TypeError:
        raise ValueError(f"pareto: {name}={cols!r} must be a column name or a list of them") from None
