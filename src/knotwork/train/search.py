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
    """
    return backward_elimination_many(gram[None], metric, min_size=min_size, max_size=max_size)[0]


def backward_elimination_many(
    grams: np.ndarray, metric: Metric, *, min_size: int = 1, max_size: int | None = None
) -> list[np.ndarray]:
    """:func:`backward_elimination` on several Gram matrices of one pool at once, shape (L, P, P).

    Each matrix gets exactly the result it would get alone (the same arithmetic, row by row); running the
    layers side by side shares the Python-level loop, which dominates the cost for pools of a few hundred.
    """
    L, P, _ = grams.shape
    max_size = P if max_size is None else max_size
    rows = np.arange(L)
    diag = np.diagonal(grams, axis1=1, axis2=2).copy()  # (L, P)
    row_full = grams.sum(2)  # (L, P)
    full_total = row_full.sum(1)  # (L,)
    removed = np.zeros((L, P), dtype=bool)
    row_in = row_full.copy()  # row_in[l, i] = sum_{j in S_l} K_l[i, j]
    n = np.full(L, P, dtype=np.int64)
    total, trace, full_dot = full_total.copy(), diag.sum(1), full_total.copy()
    current = metric.utility(SubsetStats(n, total, trace, full_dot, full_total))  # (L,)
    active = n > min_size
    col_total = full_total[:, None]
    while active.any():
        # Removing i: total loses 2 * row_in[i] - K[i, i], trace loses K[i, i], full_dot loses row_full[i].
        cand_total = total[:, None] - 2.0 * row_in + diag
        cand = SubsetStats((n - 1)[:, None], cand_total, trace[:, None] - diag, full_dot[:, None] - row_full, col_total)
        util = metric.utility(cand)
        util[removed] = -np.inf
        best_i = np.argmax(util, axis=1)
        best = util[rows, best_i]
        active &= ~((best <= current) & (n <= max_size))
        go = np.flatnonzero(active)
        if len(go) == 0:
            break
        i = best_i[go]
        removed[go, i] = True
        n[go] -= 1
        total[go] = cand_total[go, i]
        trace[go] -= diag[go, i]
        full_dot[go] -= row_full[go, i]
        row_in[go] -= grams[go, i]  # rows, not columns: K is symmetric and rows are contiguous
        current[go] = best[go]
        active &= n > min_size
    return [np.flatnonzero(~removed[k]) for k in range(L)]


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
        raise TrainError(f"unknown DBA search '{name}'; choose one of {sorted(SEARCHES)}.") from None
