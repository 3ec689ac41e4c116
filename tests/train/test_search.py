"""Searches: guarantees of each strategy, checked against direct re-computation and exhaustive search."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from knotwork.train.metrics import METRICS, subset_score, subset_stats
from knotwork.train.search import SEARCHES, get_search


def _gram(seed, n=14, d=6):
    rng = np.random.default_rng(seed)
    g = rng.normal(size=(n, d)) + 0.7 * rng.normal(size=d)
    g[rng.integers(n)] *= 4.0  # one outlier
    return g @ g.T


def _utility(gram, subset, metric):
    return float(METRICS[metric].utility(subset_stats(gram, subset))[0])


def test_every_registered_search_is_tested():
    assert set(SEARCHES) == {"backward", "forward", "topk", "all"}


@pytest.mark.parametrize("metric", sorted(METRICS))
@pytest.mark.parametrize("seed", range(6))
def test_backward_never_worse_than_full_pool(metric, seed):
    gram = _gram(seed)
    subset = SEARCHES["backward"](gram, METRICS[metric], min_size=2)
    assert _utility(gram, subset, metric) >= _utility(gram, np.arange(len(gram)), metric)


@pytest.mark.parametrize("metric", sorted(METRICS))
@pytest.mark.parametrize("seed", range(3))
def test_backward_and_forward_stop_at_local_optima(metric, seed):
    gram = _gram(seed)
    P = len(gram)
    back = SEARCHES["backward"](gram, METRICS[metric], min_size=3)
    if len(back) > 3:
        best = _utility(gram, back, metric)
        assert all(_utility(gram, np.delete(back, k), metric) <= best for k in range(len(back)))
    fwd = SEARCHES["forward"](gram, METRICS[metric], min_size=3)
    assert len(fwd) >= 3
    if len(fwd) < P:
        best = _utility(gram, fwd, metric)
        rest = np.setdiff1d(np.arange(P), fwd)
        assert all(_utility(gram, np.append(fwd, j), metric) <= best for j in rest)


@pytest.mark.parametrize("metric", sorted(METRICS))
def test_topk_picks_best_prefix_of_alignment_ranking(metric):
    rng = np.random.default_rng(7)
    g = rng.normal(size=(10, 4)) + 0.5
    gram = g @ g.T
    order = np.argsort(-(g @ g.sum(0)), kind="stable")
    scores = [_utility(gram, order[:k], metric) for k in range(2, 11)]
    k = 2 + max(i for i, s in enumerate(scores) if s == max(scores))  # longest best prefix
    np.testing.assert_array_equal(SEARCHES["topk"](gram, METRICS[metric], min_size=2), np.sort(order[:k]))


@pytest.mark.parametrize("name", ["backward", "forward", "topk"])
@pytest.mark.parametrize("metric", sorted(METRICS))
def test_size_bounds(name, metric):
    gram = _gram(3)
    subset = SEARCHES[name](gram, METRICS[metric], min_size=4, max_size=9)
    assert 4 <= len(subset) <= 9
    assert len(np.unique(subset)) == len(subset)


def test_backward_drops_a_hand_made_outlier_like_exhaustive_search():
    # Three identical gradients and one opposing outlier: the variance of the mean is 0 without the outlier.
    g = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [-3.0, 0.5]])
    gram = g @ g.T
    subset = SEARCHES["backward"](gram, METRICS["var_of_mean"], min_size=2)
    np.testing.assert_array_equal(subset, [0, 1, 2])
    exhaustive = min(
        (subset_score(gram, np.array(s), "var_of_mean"), -len(s), s)
        for k in range(2, 5)
        for s in itertools.combinations(range(4), k)
    )
    assert tuple(subset) == exhaustive[2]


def test_select_all_and_unknown_search():
    np.testing.assert_array_equal(SEARCHES["all"](np.eye(5), METRICS["snr"]), np.arange(5))
    with pytest.raises(ValueError, match="unknown DBA search 'beam'"):
        get_search("beam")
