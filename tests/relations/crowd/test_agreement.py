"""Agreement statistics against a textbook example and scikit-learn."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score

from knotwork.relations.crowd import cohen_kappa, fleiss_kappa, pairwise_agreement, rating_table

# Fleiss (1971)-style worked example from Wikipedia's "Fleiss' kappa": 10 items, 14 raters, 5 categories.
WIKI = np.array(
    [
        [0, 0, 0, 0, 14],
        [0, 2, 6, 4, 2],
        [0, 0, 3, 5, 6],
        [0, 3, 9, 2, 0],
        [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0],
        [3, 2, 6, 3, 0],
        [2, 5, 3, 2, 2],
        [6, 5, 2, 1, 0],
        [0, 2, 2, 3, 7],
    ]
)


def test_fleiss_kappa_textbook():
    # P_bar = 0.378, P_e = 0.213, kappa = 0.210 (worked by hand in the example).
    assert fleiss_kappa(WIKI) == pytest.approx(0.20993, abs=1e-4)


def test_fleiss_kappa_perfect_and_errors():
    assert fleiss_kappa(np.array([[2, 0], [0, 2], [2, 0]])) == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"item 0 has 2, item 1 has 3"):
        fleiss_kappa(np.array([[2, 0], [1, 2]]))
    with pytest.raises(ValueError, match="at least 2 ratings per item"):
        fleiss_kappa(np.array([[1, 0], [0, 1]]))


def test_fleiss_kappa_for_two_raters_equals_scotts_pi():
    # With 2 raters Fleiss' kappa is Scott's pi: (p_o - p_e) / (1 - p_e) with pooled marginals.
    rng = np.random.default_rng(0)
    a = rng.integers(0, 3, 200)
    b = np.where(rng.random(200) < 0.7, a, rng.integers(0, 3, 200))
    counts = np.zeros((200, 3))
    np.add.at(counts, (np.arange(200), a), 1)
    np.add.at(counts, (np.arange(200), b), 1)
    pooled = counts.sum(axis=0) / 400
    p_o = (a == b).mean()
    scott = (p_o - (pooled**2).sum()) / (1 - (pooled**2).sum())
    assert fleiss_kappa(counts) == pytest.approx(scott)


def test_cohen_kappa_matches_sklearn():
    rng = np.random.default_rng(1)
    a = rng.choice(["x", "y", "z"], 300)
    b = np.where(rng.random(300) < 0.6, a, rng.choice(["x", "y", "z"], 300))
    assert cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b))
    with pytest.raises(ValueError, match="equally long"):
        cohen_kappa(["x"], ["x", "y"])


def test_rating_table_uses_first_answers_and_agreement():
    df = pd.DataFrame(
        {"task": [1, 1, 1, 2, 2, 3], "worker": list("abcabc"), "label": ["x", "x", "y", "x", "y", "x"]}
    )
    table = rating_table(df, n_raters=2)
    assert table.to_dict(orient="index") == {1: {"x": 2.0, "y": 0.0}, 2: {"x": 1.0, "y": 1.0}}  # task 3 has 1 answer
    # pairs within tasks: t1 has 3 answers -> 6 ordered pairs, 2 agree; t2 -> 2 pairs, 0 agree
    assert pairwise_agreement(df) == pytest.approx(2 / 8)
