"""Every registered metric, computed from the Gram matrix, equals a direct computation on explicit vectors."""

from __future__ import annotations

import numpy as np
import pytest

from knotwork.train.metrics import METRICS, get_metric, subset_score


def _var(g):
    m = g.mean(0)
    return ((g - m) ** 2).sum(1).mean()


def _cos(a, b):
    return a @ b / np.linalg.norm(a) / np.linalg.norm(b)


# Direct formulas on explicit per-sample vectors g_S (subset) and g_P (pool).
ORACLES = {
    "variance": lambda gs, gp: _var(gs),
    "var_of_mean": lambda gs, gp: _var(gs) / len(gs),
    "snr": lambda gs, gp: (gs.mean(0) @ gs.mean(0)) / (_var(gs) / len(gs)),
    "cos_to_full": lambda gs, gp: _cos(gs.mean(0), gp.mean(0)),
}


def test_every_registered_metric_has_an_oracle():
    assert set(ORACLES) == set(METRICS)


@pytest.mark.parametrize("name", sorted(ORACLES))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metric_matches_explicit_vectors(name, seed):
    rng = np.random.default_rng(seed)
    g = rng.normal(size=(9, 5)) + rng.normal(size=5)  # a shared mean makes the SNR non-trivial
    subset = np.sort(rng.choice(9, size=5, replace=False))
    got = subset_score(g @ g.T, subset, name)
    np.testing.assert_allclose(got, ORACLES[name](g[subset], g), rtol=1e-10)


def test_degenerate_values():
    g = np.array([[1.0, 2.0], [1.0, 2.0]])
    gram = g @ g.T
    assert subset_score(gram, np.array([0, 1]), "variance") == 0.0
    assert subset_score(gram, np.array([0]), "snr") == np.inf  # zero variance: infinitely clean signal
    zero = np.zeros((3, 3))
    assert subset_score(zero, np.array([0, 1]), "cos_to_full") == 0.0


def test_unknown_metric_names_choices():
    with pytest.raises(ValueError, match=r"unknown DBA metric 'gns'; choose one of \['cos_to_full', 'snr'"):
        get_metric("gns")
