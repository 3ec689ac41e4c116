"""The baselines of the training verdict: the majority class (hand-worked) and the logistic-regression probe,
checked against scikit-learn's LogisticRegression on the same features (sklearn is used in tests only)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from knotwork.lora.baselines import fit_logistic_regression, linear_probe_accuracy, majority_accuracy


def _blobs(n=240, d=6, c=3, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, size=n)
    centers = rng.normal(0, 1.2, size=(c, d))
    x = centers[y] + rng.normal(0, 1.0, size=(n, d)) + 3.0  # offset and overlap: a real fit, not separable
    return x, y


def test_majority_is_the_most_frequent_training_label():
    assert majority_accuracy([2, 2, 1, 0], [2, 1, 1, 2, 0]) == 0.4
    assert majority_accuracy([0, 1], [1, 1, 0]) == pytest.approx(1 / 3)  # a tie goes to the lower id
    with pytest.raises(ValueError, match="at least one"):
        majority_accuracy([], [0])


@pytest.mark.parametrize("l2", [1e-3, 1e-1])
def test_logistic_regression_matches_sklearn(l2):
    linear_model = pytest.importorskip("sklearn.linear_model")
    x, y = _blobs()
    w, b = fit_logistic_regression(torch.tensor(x), torch.tensor(y), 3, l2=l2)
    ref = linear_model.LogisticRegression(C=1 / (len(x) * l2), tol=1e-12, max_iter=10_000).fit(x, y)
    # W is unique (penalised); the unpenalised bias only up to a shift common to all classes: compare probabilities.
    torch.testing.assert_close(w.T, torch.tensor(ref.coef_), rtol=1e-4, atol=1e-5)
    probs = torch.softmax(torch.tensor(x) @ w + b, dim=1)
    torch.testing.assert_close(probs, torch.tensor(ref.predict_proba(x)), rtol=1e-4, atol=1e-6)


def test_probe_accuracy_matches_a_standardised_sklearn_pipeline():
    sk = pytest.importorskip("sklearn")
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    assert sk
    x, y = _blobs(n=300, d=10, c=4, seed=1)
    tr, va = slice(0, 200), slice(200, 300)
    l2 = 1e-2
    got = linear_probe_accuracy(torch.tensor(x[tr]), y[tr].tolist(), torch.tensor(x[va]), y[va].tolist(), 4, l2=l2)
    pipe = make_pipeline(StandardScaler(), LogisticRegression(C=1 / (200 * l2), tol=1e-12, max_iter=10_000))
    want = pipe.fit(x[tr], y[tr]).score(x[va], y[va])
    assert got == pytest.approx(want)
    assert 0.4 < got < 1.0  # a probe that learned something, short of perfect


def test_fit_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match=r"x \(n, d\) and y \(n,\)"):
        fit_logistic_regression(torch.zeros(4, 2), torch.zeros(3), 2)
