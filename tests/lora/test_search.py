"""The paper's coordinate search: order, stop at the first non-improvement, >= vs > on ties."""

from __future__ import annotations

import pytest

from knotwork.lora.search import DROP_GRID, SCALE_GRID, TOPK_GRID, coordinate_search


def test_grids_are_the_papers():
    assert SCALE_GRID == (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    assert TOPK_GRID[0] == 10.0 and TOPK_GRID[-1] == 100.0 and len(TOPK_GRID) == 10
    assert DROP_GRID == (0.99, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1)


def test_stops_at_first_non_improvement_even_if_a_later_value_is_better():
    table = {0.1: 1.0, 0.2: 2.0, 0.3: 1.5, 0.4: 9.0}  # greedy walk never reaches 0.4
    res = coordinate_search(lambda p: table[p["scale"]], [("scale", (0.1, 0.2, 0.3, 0.4))], {"scale": 1.0})
    assert res.params == {"scale": 0.2} and res.score == 2.0
    assert [p["scale"] for p, _ in res.trace] == [0.1, 0.2, 0.3]


def test_second_coordinate_uses_first_choice_and_defaults():
    calls = []

    def f(p):
        calls.append(dict(p))
        return -(p["scale"] - 0.3) ** 2 - (p["topk"] - 30) ** 2 / 1e4

    res = coordinate_search(f, [("scale", SCALE_GRID), ("topk", TOPK_GRID)], {"scale": 1.0, "topk": 20.0, "x": 1})
    assert res.params == {"scale": 0.3, "topk": 30.0, "x": 1}
    assert all(c["topk"] == 20.0 for c in calls[:4])      # λ walk with the default top-K
    assert all(c["scale"] == 0.3 for c in calls[4:])      # top-K walk with the chosen λ


def test_ties_continue_with_ge_and_stop_with_gt():
    f = lambda p: 1.0  # noqa: E731 - flat objective
    ge = coordinate_search(f, [("scale", (0.1, 0.2, 0.3))], {"scale": 1.0}, ties_improve=True)
    gt = coordinate_search(f, [("scale", (0.1, 0.2, 0.3))], {"scale": 1.0}, ties_improve=False)
    assert ge.params["scale"] == 0.3 and len(ge.trace) == 3
    assert gt.params["scale"] == 0.1 and len(gt.trace) == 2


def test_empty_grid_is_rejected():
    with pytest.raises(ValueError, match="grid of parameter 'topk' is empty"):
        coordinate_search(lambda p: 0.0, [("scale", (0.1,)), ("topk", ())], {})
