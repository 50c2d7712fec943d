"""hwsim.report.pareto on hand-made points."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hwsim.report import pareto


def _front(points, **kw) -> list[bool]:
    cols = [f"c{i}" for i in range(len(points[0]))]
    df = pd.DataFrame(points, columns=cols)
    kw = kw or {"minimize": cols}
    return pareto(df, **kw).tolist()


def test_two_objectives():
    #            (area, ppl)
    pts = [(1.0, 30.0), (2.0, 20.0), (3.0, 25.0), (4.0, 10.0), (2.5, 20.0)]
    assert _front(pts) == [True, True, False, True, False]


def test_ties_in_one_objective_are_dominated_when_worse_in_another():
    pts = [(1.0, 5.0), (1.0, 6.0), (2.0, 5.0)]
    assert _front(pts) == [True, False, False]


def test_identical_points_are_all_on_the_front():
    pts = [(1.0, 5.0), (1.0, 5.0), (2.0, 4.0), (2.0, 4.0), (3.0, 4.0)]
    assert _front(pts) == [True, True, True, True, False]


def test_one_objective_is_the_minima():
    df = pd.DataFrame({"ppl": [20.0, 18.5, 19.0, 18.5, np.nan]})
    assert pareto(df, minimize=["ppl"]).tolist() == [False, True, False, True, False]
    assert pareto(df, minimize="ppl").tolist() == [False, True, False, True, False]


def test_three_objectives():
    #      (area, energy, ppl)
    pts = [(1, 1, 9), (1, 2, 8), (2, 1, 8), (2, 2, 8), (3, 3, 7), (3, 3, 9), (1, 1, 9)]
    assert _front(pts) == [True, True, True, False, True, False, True]


def test_nan_rows_never_on_the_front_and_never_dominate():
    pts = [(1.0, np.nan), (np.nan, 1.0), (2.0, 2.0), (0.5, 0.5), (np.inf, 0.1)]
    df = pd.DataFrame(pts, columns=["a", "b"])
    assert pareto(df, minimize=["a", "b"]).tolist() == [False, False, False, True, False]
    assert pareto(df.iloc[:3], minimize=["a", "b"]).tolist() == [False, False, True]


def test_maximize_and_mixed():
    df = pd.DataFrame({"area": [1.0, 2.0, 3.0, 2.0], "acc": [0.5, 0.7, 0.9, 0.6]})
    assert pareto(df, minimize=["area"], maximize=["acc"]).tolist() == [True, True, True, False]
    assert pareto(df, maximize=["acc"]).tolist() == [False, False, True, False]


def test_keeps_index_and_groups_with_by():
    df = pd.DataFrame({"hw": ["a", "a", "b", "b"], "area": [1.0, 2.0, 5.0, 6.0], "ppl": [30.0, 20.0, 40.0, 45.0]},
                      index=[10, 11, 12, 13])
    assert pareto(df, minimize=["area", "ppl"]).to_dict() == {10: True, 11: True, 12: False, 13: False}
    assert pareto(df, minimize=["area", "ppl"], by="hw").to_dict() == {10: True, 11: True, 12: True, 13: False}


def test_empty_frame():
    out = pareto(pd.DataFrame({"a": pd.Series([], dtype=float)}), minimize=["a"])
    assert out.dtype == bool and len(out) == 0


def test_matches_brute_force_beyond_one_block():
    rng = np.random.default_rng(0)
    v = rng.integers(0, 12, size=(600, 3)).astype(float)  # many ties and duplicates
    v[rng.random(600) < 0.05, 1] = np.nan
    df = pd.DataFrame(v, columns=["x", "y", "z"])
    expect = []
    for i in range(len(v)):
        if np.isnan(v[i]).any():
            expect.append(False)
            continue
        others = v[~np.isnan(v).any(axis=1)]
        dom = ((others <= v[i]).all(axis=1) & (others < v[i]).any(axis=1)).any()
        expect.append(not dom)
    assert pareto(df, minimize=["x", "y", "z"]).tolist() == expect


@pytest.mark.parametrize("kw, match", [
    ({}, "at least one column"),
    ({"minimize": ["nope"]}, r"\['nope'\] are not in the DataFrame; columns are \['a', 'b', 's'\]"),
    ({"minimize": ["a"], "maximize": ["a"]}, r"\['a'\] are in both"),
    ({"minimize": ["s"]}, "column 's' is not numeric"),
])
def test_errors_name_the_argument(kw, match):
    df = pd.DataFrame({"a": [1.0], "b": [2.0], "s": ["x"]})
    with pytest.raises(ValueError, match=match):
        pareto(df, **kw)
