"""Subset searches over a pool's Gram matrix: greedy backward, greedy forward, top-k prefix scan, all.

An exact search over ``2^P`` subsets is out of reach, so each strategy is a heuristic that evaluates every
one-sample change of the current subset in one vectorised pass over the sums of :mod:`.metrics`
(``O(P)`` per change, ``O(P^2)`` for a full sweep). Each takes the Gram matrix (float64, shape (P, P)), a
:class:`~knotwork.train.metrics.Metric` and size bounds, and returns sorted pool indices.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from knotwork._errors import TrainError
from knotwork.train.metrics import Metric, SubsetStats

Search = Callable[..., np.ndarray]
SEARCHES: dict[str, Search] = {}


def register_search(name: str):
    """Decorator adding a search to :data:`SEARCHES` under ``name``."""

    def wrap(fn: Search) -> Search:
        SEARCHES[name] = fn
        return fn

    return wrap


def _greedy(gram, row_full, metric: Metric, removing: bool, excluded: np.ndarray, row_in, n: int, total, trace,
            full_dot, current, min_size: int, max_size: int) -> None:
    """The greedy loop of :func:`backward_elimination` (``removing``) and :func:`forward_selection`: change one
    sample per step, marking it in ``excluded`` (the removed, or the chosen, samples), until the stop rule holds.

    Changing sample i changes ``total`` by 2 * row_in[i] (then + K[i, i]), ``trace`` by K[i, i] and
    ``full_dot`` by row_full[i], subtracted when removing, added when adding, where row_in[i] = sum_{j in S}
    K[i, j] is kept doubled (row2 = 2 * row_in, changed by 2 * K[i]; doubling is exact). One operation of the
    scalars (total, trace[, full_dot]) with the rows (row2, diag[, row_full]) forms all candidate arrays; the
    candidate totals then add diag, so each equals ``total -/+ 2.0 * row_in[i] + K[i, i]`` bit for bit. A step
    costs a handful of in-place NumPy calls on length-``P`` buffers (the candidates' sums,
    :meth:`~knotwork.train.metrics.Metric.utility_into`, one ``argmax``); for pools of a few hundred their
    per-call overhead, not their arithmetic, sets the cost, so the loop is written out flat.
    """
    op, dn = (np.subtract, -1) if removing else (np.add, 1)
    full_total = row_full.sum()
    gram2 = 2.0 * gram
    rows = np.stack([2.0 * row_in, np.diagonal(gram), row_full][: 3 if metric.uses_full_dot else 2])
    row2, diag = rows[0], rows[1]
    scalars = np.empty((len(rows), 1))
    cand = np.empty(rows.shape)
    cand_total, cand_trace = cand[0], cand[1]
    cand_dot = cand[2] if metric.uses_full_dot else None
    util = np.empty(gram.shape[0])
    utility_into = metric.utility_into()
    add, copyto, ninf = np.add, np.copyto, -np.inf
    has_dot = cand_dot is not None
    while removing or n < max_size:
        scalars[0, 0] = total
        scalars[1, 0] = trace
        if has_dot:
            scalars[2, 0] = full_dot
        op(scalars, rows, cand)
        add(cand_total, diag, cand_total)
        utility_into(n + dn, cand_total, cand_trace, cand_dot, full_total, util)
        copyto(util, ninf, where=excluded)
        i = util.argmax()
        best = util[i]
        if best != best:  # argmax returns the first NaN; NaN counts as -inf
            copyto(util, ninf, where=np.isnan(util))
            i = util.argmax()
            best = util[i]
        if best <= current and (n <= max_size if removing else n >= min_size):
            break
        excluded[i] = True
        n += dn
        total = cand_total[i]
        trace = cand_trace[i]
        if has_dot:
            full_dot = cand_dot[i]
        op(row2, gram2[i], row2)  # a row, not a column: K is symmetric and rows are contiguous
        current = best
        if removing and n <= min_size:
            break


@register_search("backward")
def backward_elimination(gram: np.ndarray, metric: Metric, *, min_size: int = 1, max_size: int | None = None) -> np.ndarray:
    """Greedy backward elimination: start from the whole pool, drop the sample whose removal helps most.

    Stops when no removal strictly improves the metric (ties keep the larger subset) or the subset has
    ``min_size`` samples; while it is larger than ``max_size`` it keeps removing even without improvement.
    Without ``max_size`` the result is never worse than the whole pool, since that is where it starts.
    Each removal costs a fixed handful of NumPy calls (see :func:`_greedy`).
    """
    P = gram.shape[0]
    max_size = P if max_size is None else max_size
    if P <= min_size:
        return np.arange(P)
    row_full = gram.sum(1)
    full_total = row_full.sum()
    trace = np.diagonal(gram).sum()
    current = metric.utility(SubsetStats(P, full_total, trace, full_total, full_total))[0]
    removed = np.zeros(P, dtype=bool)
    _greedy(gram, row_full, metric, True, removed, row_full, P, full_total, trace, full_total, current, min_size, max_size)
    return np.flatnonzero(~removed)


@register_search("forward")
def forward_selection(gram: np.ndarray, metric: Metric, *, min_size: int = 1, max_size: int | None = None) -> np.ndarray:
    """Greedy forward selection: start from the sample best aligned with the pool gradient and add samples.

    Adds the sample that helps most while that strictly improves the metric, and regardless while the subset
    has fewer than ``min_size`` samples; never grows past ``max_size``. The start is the sample with the
    largest cosine to the pool's summed gradient, because every metric based on a subset's own variance is
    undefined or extreme for a single sample. Each addition costs a fixed handful of NumPy calls (see
    :func:`_greedy`).
    """
    P = gram.shape[0]
    max_size = P if max_size is None else max_size
    diag = np.diag(gram).copy()
    row_full = gram.sum(1)
    full_total = float(row_full.sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        align = np.where(diag > 0, row_full / np.sqrt(np.where(diag > 0, diag, 1.0)), -np.inf)
    first = int(np.argmax(align))
    chosen = np.zeros(P, dtype=bool)
    chosen[first] = True
    n, total, trace, full_dot = 1, float(diag[first]), float(diag[first]), float(row_full[first])
    current = float(metric.utility(SubsetStats(n, total, trace, full_dot, full_total))[0])
    _greedy(gram, row_full, metric, False, chosen, gram[first], n, total, trace, full_dot, current, min_size, max_size)
    return np.flatnonzero(chosen)


@register_search("topk")
def topk_prefix(gram: np.ndarray, metric: Metric, *, min_size: int = 1, max_size: int | None = None) -> np.ndarray:
    """Rank samples by alignment ``<g_i, sum_P g_j>`` and keep the best-scoring prefix.

    The sums of every prefix come from cumulative sums, so all ``P`` subset sizes are scored in one pass;
    among equal scores the longest prefix wins.
    """
    P = gram.shape[0]
    max_size = P if max_size is None else max_size
    row_full = gram.sum(1)
    order = np.argsort(-row_full, kind="stable")
    ranked = gram[np.ix_(order, order)]
    diag = np.diag(ranked)
    # Adding the k-th ranked sample adds 2 * sum_{j<k} K[k, j] + K[k, k] to ||sum g||^2.
    increments = 2.0 * np.tril(ranked, -1).sum(1) + diag
    sizes = np.arange(1, P + 1, dtype=np.float64)
    stats = SubsetStats(sizes, np.cumsum(increments), np.cumsum(diag), np.cumsum(row_full[order]), float(row_full.sum()))
    util = metric.utility(stats)
    util[(sizes < min_size) | (sizes > max_size)] = -np.inf
    k = P - 1 - int(np.argmax(util[::-1]))
    return np.sort(order[: k + 1])


@register_search("all")
def select_all(gram: np.ndarray, metric: Metric, *, min_size: int = 1, max_size: int | None = None) -> np.ndarray:
    """Keep the whole pool: DBA then reproduces the plain optimizer step (a control and a test oracle)."""
    return np.arange(gram.shape[0])


def get_search(name: str) -> Search:
    """Look up a search by name, with an error listing the known ones."""
    try:
        return SEARCHES[name]
    except KeyError:
        raise TrainError(f"unknown DBA search '{name}'; choose one of {sorted(SEARCHES)}.") from None
