"""The KnOTS paper's hyperparameter protocol: a coordinate-wise linear search that stops at the first non-gain."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from knotwork._errors import MergeError

if TYPE_CHECKING:
    from knotwork.lora.evaluate import EvalResult

# Grids of the paper (§4 of the method note): λ on 0.1..1.0, TIES top-K on 10..100 % kept, DARE drop p on
# 0.99, 0.9 .. 0.1.
SCALE_GRID: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(1, 11))
TOPK_GRID: tuple[float, ...] = tuple(float(10 * i) for i in range(1, 11))
DROP_GRID: tuple[float, ...] = (0.99, *(round(0.1 * i, 1) for i in range(9, 0, -1)))

#: The searched parameters and their default grids (the paper's).
GRIDS: dict[str, tuple[float, ...]] = {"scale": SCALE_GRID, "topk": TOPK_GRID, "drop_rate": DROP_GRID}

#: Selection criteria: what each one maximises on the validation split (the paper's two protocols).
CRITERIA: dict[str, str] = {"pertask": "average normalized accuracy", "joint": "joint Hits@3"}


@dataclass
class SearchResult:
    """The chosen parameters, their score, and every (params, score) visited in order."""

    params: dict[str, Any]
    score: float
    trace: list[tuple[dict[str, Any], float]] = field(default_factory=list)
    walks: list[str] = field(default_factory=list)  # per trace entry, the parameter being walked


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
    walks: list[str] = []
    best_score = float("-inf")
    for name, grid in grids:
        best_value, best_here = params.get(name), float("-inf")
        for value in grid:
            trial = {**params, name: value}
            score = float(objective(trial))
            trace.append((trial, score))
            walks.append(name)
            better = score >= best_here if ties_improve else score > best_here
            if not better:
                break
            best_value, best_here = value, score
        params[name] = best_value
        best_score = best_here
    return SearchResult(params, best_score, trace, walks)


def method_grids(method: str, grids: Mapping[str, Sequence[Any]] | None = None
                 ) -> tuple[list[tuple[str, Sequence[Any]]], dict[str, Any]]:
    """The paper's search order and starting values for a registered merge method.

    λ first; then top-K (TIES) or DARE's drop rate (DARE variants; DARE-TIES keeps top-K at 100 %: sign election
    only). The starting top-K (20 %) and drop rate (0.1) are the paper's chosen ViT-B/32 KnOTS values. `grids`
    replaces some of :data:`GRIDS` (``{"scale": ..., "topk": ..., "drop_rate": ...}``); a grid the method does not
    search is ignored.

    Examples
    --------
    >>> method_grids("knots-ties", {"scale": (0.5, 1.0), "topk": (20.0, 60.0)})
    ([('scale', (0.5, 1.0)), ('topk', (20.0, 60.0))], {'scale': 1.0, 'topk': 20.0})
    """
    from knotwork.merge.registry import get_method

    try:
        spec = get_method(method)
    except KeyError as err:
        raise MergeError(err.args[0]) from None
    g = {**GRIDS, **(grids or {})}
    order: list[tuple[str, Sequence[Any]]] = [("scale", g["scale"])]
    defaults: dict[str, Any] = {"scale": 1.0}
    if spec.drop:
        order.append(("drop_rate", g["drop_rate"]))
        defaults["drop_rate"] = 0.1
        if spec.combine == "ties":
            defaults["topk"] = 100.0
    elif spec.combine == "ties":
        order.append(("topk", g["topk"]))
        defaults["topk"] = 20.0
    return order, defaults


def check_grid(name: str, values: Sequence[Any], *, label: str | None = None) -> tuple[float, ...]:
    """``values`` as floats, or a :class:`MergeError` naming `label` when the grid is empty or a value is out of
    the range of the MergeConfig field `name` (``scale``, ``topk``, ``drop_rate``)."""
    from knotwork.merge.config import check_param

    label = label or name
    if not values:
        raise MergeError(f"{label}: the grid is empty; give at least one value")
    for i, v in enumerate(values, start=1):
        check_param(name, v, label=f"{label}: item {i}")
    return tuple(float(v) for v in values)


def criterion_score(result: EvalResult, criterion: str, finetuned: Mapping[str, float] | None = None) -> float:
    """The validation score a criterion maximises.

    ``"pertask"``: average normalized accuracy (merged / fine-tuned per task, averaged), the paper's per-task
    protocol; needs `finetuned`. ``"joint"``: Hits@3 against the union of all tasks' labels, sample-weighted.
    """
    if criterion == "pertask":
        if finetuned is None:
            raise MergeError("the pertask criterion needs each adapter's fine-tuned accuracy on its task")
        return result.avg_normalized(finetuned)
    if criterion == "joint":
        return result.joint_hits[3]
    raise MergeError(f"unknown criterion {criterion!r}; known: {', '.join(CRITERIA)}")


def ties_improve(criterion: str) -> bool:
    """Whether an equal score counts as an improvement: ``>=`` per task, ``>`` for joint Hits@3 (the paper)."""
    return criterion == "pertask"
