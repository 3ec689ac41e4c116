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


@register_search("backward")
def backward_elimination(gram: np.ndarray, metric: Metric, *, min_size: int = 1, max_size: int | None = None) -> np.ndarray:
    """Greedy backward elimination: start from the whole pool, drop the sample whose removal helps most.

    Stops when no removal strictly improves the metric (ties keep the larger subset) or the subset has
    ``min_size`` samples; while it is larger than ``max_size`` it keeps removing even without improvement.
    Without ``max_size`` the result is never worse than the whole pool, since that is where it starts.

    Each removal costs a handful of in-place NumPy operations on length-``P`` buffers (the candidates' sums,
    :meth:`~knotwork.train.metrics.Metric.utility_into`, one ``argmax``) and scalar bookkeeping; for pools of
    a few hundred the per-call overhead of those operations, not their arithmetic, sets the cost.
    """
    P = gram.shape[0]
    max_size = P if max_size is None else max_size
    diag = np.diagonal(gram).copy()
    row_full = gram.sum(1)
    full_total = row_full.sum()
    n, total, trace, full_dot = P, full_total, diag.sum(), full_total
    removed = np.zeros(P, dtype=bool)
    if n <= min_size:
        return np.arange(P)
    current = metric.utility(SubsetStats(n, total, trace, full_dot, full_total))[0]
    # Removing i: total loses 2 * row_in[i] - K[i, i], trace loses K[i, i], full_dot loses row_full[i], where
    # row_in[i] = sum_{j in S} K[i, j], kept doubled (row2 = 2 * row_in, updated by 2 * K[i]; doubling is exact).
    # One subtraction forms the candidate arrays, scalars (total, trace[, full_dot]) minus rows (row2, diag
    # [, row_full]); the candidate totals then add diag, so each equals ``total - 2.0 * row_in[i] + K[i, i]``.
    gram2 = 2.0 * gram
    rows = np.stack([2.0 * row_full, diag, row_full][: 3 if metric.uses_full_dot else 2])
    row2 = rows[0]
    scalars = np.empty((len(rows), 1))
    cand = np.empty(rows.shape)
    cand_total, cand_trace = cand[0], cand[1]
    cand_dot = cand[2] if metric.uses_full_dot else None
    util = np.empty(P)
    utility_into = metric.utility_into()
    while True:
        scalars[0, 0], scalars[1, 0] = total, trace
        if cand_dot is not None:
            scalars[2, 0] = full_dot
        np.subtract(scalars, rows, out=cand)
        np.add(cand_total, diag, out=cand_total)
        utility_into(n - 1, cand_total, cand_trace, cand_dot, full_total, util)
        np.copyto(util, -np.inf, where=removed)
        i = int(util.argmax())
        best = util[i]
        if best != best:  # argmax returns the first NaN; NaN counts as -inf
            np.copyto(util, -np.inf, where=np.isnan(util))
            i = int(util.argmax())
            best = util[i]
        if best <= current and n <= max_size:
            break
        removed[i] = True
        n -= 1
        total, trace = cand_total[i], cand_trace[i]
        if cand_dot is not None:
            full_dot = cand_dot[i]
        np.subtract(row2, gram2[i], out=row2)  # a row, not a column: K is symmetric and rows are contiguous
        current = best
        if n <= min_size:
            break
    return np.flatnonzero(~removed)


@register_search("forward")
def forward_selection(gram: np.ndarray, metric: Metric, *, min_size: int = 1, max_size: int | None = None) -> np.ndarray:
    """Greedy forward selection: start from the sample best aligned with the pool gradient and add samples.

    Adds the sample that helps most while that strictly improves the metric, and regardless while the subset
    has fewer than ``min_size`` samples; never grows past ``max_size``. The start is the sample with the
    largest cosine to the pool's summed gradient, because every metric based on a subset's own variance is
    undefined or extreme for a single sample. The loop is that of :func:`backward_elimination`, adding.
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
    gram2 = 2.0 * gram
    rows = np.stack([2.0 * gram[first], diag, row_full][: 3 if metric.uses_full_dot else 2])  # 2 * row_in, constants
    row2 = rows[0]
    scalars = np.empty((len(rows), 1))
    cand = np.empty(rows.shape)
    cand_total, cand_trace = cand[0], cand[1]
    cand_dot = cand[2] if metric.uses_full_dot else None
    util = np.empty(P)
    utility_into = metric.utility_into()
    while n < max_size:
        scalars[0, 0], scalars[1, 0] = total, trace
        if cand_dot is not None:
            scalars[2, 0] = full_dot
        np.add(scalars, rows, out=cand)
        np.add(cand_total, diag, out=cand_total)
        utility_into(n + 1, cand_total, cand_trace, cand_dot, full_total, util)
        np.copyto(util, -np.inf, where=chosen)
        i = int(util.argmax())
        if util[i] != util[i]:  # argmax returns the first NaN; NaN counts as -inf
            np.copyto(util, -np.inf, where=np.isnan(util))
            i = int(util.argmax())
        if util[i] <= current and n >= min_size:
            break
        chosen[i] = True
        n += 1
        total, trace = cand_total[i], cand_trace[i]
        if cand_dot is not None:
            full_dot = cand_dot[i]
        np.add(row2, gram2[i], out=row2)
        current = util[i]
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
