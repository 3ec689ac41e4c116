"""The KnOTS paper's hyperparameter protocol: a coordinate-wise linear search that stops at the first non-gain."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from knotwork._errors import MergeError

# Grids of the paper (§4 of the method note): λ on 0.1..1.0, TIES top-K on 10..100 % kept, DARE drop p on
# 0.99, 0.9 .. 0.1.
SCALE_GRID: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(1, 11))
TOPK_GRID: tuple[float, ...] = tuple(float(10 * i) for i in range(1, 11))
DROP_GRID: tuple[float, ...] = (0.99, *(round(0.1 * i, 1) for i in range(9, 0, -1)))


@dataclass
class SearchResult:
    """The chosen parameters, their score, and every (params, score) visited in order."""

    params: dict[str, Any]
    score: float
    trace: list[tuple[dict[str, Any], float]] = field(default_factory=list)


def coordinate_search(
    objective: Callable[[Mapping[str, Any]], float],
    grids: Sequence[tuple[str, Sequence[Any]]],
    defaults: Mapping[str, Any],
    *,
    ties_improve: bool = True,
) -> SearchResult:
    """Tune parameters one at a time, in the given order, on a validation objective (higher is better).

    For each ``(name, grid)``: walk the grid from its first value with the other parameters fixed (earlier ones
    at their chosen values, later ones at `defaults`), and stop at the first value that does not improve on the
    best so far. This is the reference code's ``run_BIG_function``: ``>=`` counts as an improvement for the
    per-task search (``ties_improve=True``), ``>`` for the joint search.

    Parameters
    ----------
    objective : callable
        ``params -> score``; called once per distinct parameter set (cache inside it if it is expensive).
    grids : sequence of (name, values)
    defaults : mapping
        Starting values of every parameter (also those not searched).

    Examples
    --------
    >>> f = lambda p: -abs(p["scale"] - 0.3)
    >>> coordinate_search(f, [("scale", (0.1, 0.2, 0.3, 0.4, 0.5))], {"scale": 1.0}).params
    {'scale': 0.3}
    """
    if not grids:
        raise MergeError("coordinate_search needs at least one (name, grid) pair.")
    for name, grid in grids:
        if not grid:
            raise MergeError(f"The grid of parameter '{name}' is empty.")
    params = dict(defaults)
    trace: list[tuple[dict[str, Any], float]] = []
    best_score = float("-inf")
    for name, grid in grids:
        best_value, best_here = params.get(name), float("-inf")
        for value in grid:
            trial = {**params, name: value}
            score = float(objective(trial))
            trace.append((trial, score))
            better = score >= best_here if ties_improve else score > best_here
            if not better:
                break
            best_value, best_here = value, score
        params[name] = best_value
        best_score = best_here
    return SearchResult(params, best_score, trace)
