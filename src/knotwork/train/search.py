"""Subset searches over a pool's Gram matrix: greedy backward, greedy forward, top-k prefix scan, all.

An exact search over ``2^P`` subsets is out of reach, so each strategy is a heuristic that evaluates every
one-sample change of the current subset in one vectorised pass over the sums of :mod:`.metrics`
(``O(P)`` per change, ``O(P^2)`` for a full sweep). Each takes the Gram matrix (float64, shape (P, P)), a
:class:`~knotwork.train.metrics.Metric` and size bounds, and returns sorted pool indices.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

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
    """
    P = gram.shape[0]
    max_size = P if max_size is None else max_size
    diag = np.diag(gram).copy()
    row_full = gram.sum(1)
    full_total = float(row_full.sum())
    alive = np.ones(P, dtype=bool)
    row_in = row_full.copy()  # row_in[i] = sum_{j in S} K[i, j]
    n, total, trace, full_dot = P, full_total, float(diag.sum()), full_total
    current = float(metric.utility(SubsetStats(n, total, trace, full_dot, full_total))[0])
    while n > min_size:
        # Removing i: total loses 2 * row_in[i] - K[i, i], trace loses K[i, i], full_dot loses row_full[i].
        cand_total = total - 2.0 * row_in + diag
        cand = SubsetStats(n - 1, cand_total, trace - diag, full_dot - row_full, full_total)
        util = metric.utility(cand)
        util[~alive] = -np.inf
        i = int(np.argmax(util))
        if util[i] <= current and n <= max_size:
            break
        alive[i] = False
        n -= 1
        total, trace, full_dot = float(cand_total[i]), trace - diag[i], full_dot - row_full[i]
        row_in -= gram[i]  # rows, not columns: K is symmetric and rows are contiguous
        current = float(util[i])
    return np.flatnonzero(alive)


@register_search("forward")
def forward_selection(gram: np.ndarray, metric: Metric, *, min_size: int = 1, max_size: int | None = None) -> np.ndarray:
    """Greedy forward selection: start from the sample best aligned with the pool gradient and add samples.

    Adds the sample that helps most while that strictly improves the metric, and regardless while the subset
    has fewer than ``min_size`` samples; never grows past ``max_size``. The start is the sample with the
    largest cosine to the pool's summed gradient, because every metric based on a subset's own variance is
    undefined or extreme for a single sample.
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
    row_in = gram[:, first].copy()
    n, total, trace, full_dot = 1, float(diag[first]), float(diag[first]), float(row_full[first])
    current = float(metric.utility(SubsetStats(n, total, trace, full_dot, full_total))[0])
    while n < max_size:
        cand_total = total + 2.0 * row_in + diag
        cand = SubsetStats(n + 1, cand_total, trace + diag, full_dot + row_full, full_total)
        util = metric.utility(cand)
        util[chosen] = -np.inf
        i = int(np.argmax(util))
        if util[i] <= current and n >= min_size:
            break
        chosen[i] = True
        n += 1
        total, trace, full_dot = float(cand_total[i]), trace + diag[i], full_dot + row_full[i]
        row_in += gram[i]
        current = float(util[i])
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
        raise ValueError(f"unknown DBA search '{name}'; choose one of {sorted(SEARCHES)}.") from None
