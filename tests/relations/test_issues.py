"""Confident learning against known injected noise, a hand-worked confident joint, and detection metrics."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from knotwork.relations import (
    confident_joint,
    detection_quality,
    find_label_issues,
    label_quality_scores,
    rank_label_issues,
)
from knotwork.relations.simulate import inject_label_noise


def make_data(n=3000, k=4, noise=0.2, seed=0):
    """Well-separated true classes, labels corrupted by a known uniform noise matrix, a calibrated-ish model."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(0, 1, (n, k))
    logits[np.arange(n), y] += 3.0
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    noisy, flipped = inject_label_noise(y, rate=noise, seed=rng)
    return noisy, probs, flipped


def test_hand_worked_confident_joint():
    labels = np.array([0, 0, 1, 1, 1])
    probs = np.array([[0.9, 0.1], [0.7, 0.3], [0.2, 0.8], [0.4, 0.6], [0.8, 0.2]])
    # thresholds: t0 = (0.9 + 0.7) / 2 = 0.8; t1 = (0.8 + 0.6 + 0.2) / 3 = 0.533
    # confident classes: x0 -> 0; x1 -> none (0.7 < 0.8, 0.3 < t1); x2 -> 1; x3 -> 1; x4 -> 0
    np.testing.assert_array_equal(confident_joint(labels, probs, calibrate=False), [[1, 0], [1, 2]])
    mask = find_label_issues(labels, probs, filter_by="confident_learning")
    assert mask.tolist() == [False, False, False, False, True]
    # calibrated: rows scaled to the label counts (2 and 3), total n, rounded keeping row totals
    np.testing.assert_array_equal(confident_joint(labels, probs), [[2, 0], [1, 2]])


def test_finds_injected_noise():
    labels, probs, flipped = make_data()
    mask = find_label_issues(labels, probs)
    q = detection_quality(flipped, flagged=mask, scores=label_quality_scores(labels, probs))
    # Chance precision is the 20% noise rate; the model is good, so confident learning must do far better.
    assert q.precision > 0.85 and q.recall > 0.85
    assert q.auc > 0.95
    # The number flagged estimates the number of errors (prune_by_noise_rate removes n * Q[i, j] per pair).
    assert abs(mask.sum() - flipped.sum()) < 0.15 * flipped.sum()


def test_filters_are_nested_and_never_flag_agreeing_predictions():
    labels, probs, _ = make_data(seed=1)
    both = find_label_issues(labels, probs, filter_by="both")
    prune = find_label_issues(labels, probs, filter_by="prune_by_noise_rate")
    by_class = find_label_issues(labels, probs, filter_by="prune_by_class")
    assert not (both & ~prune).any() and not (both & ~by_class).any()
    assert both.sum() < min(prune.sum(), by_class.sum())
    assert not (prune & (probs.argmax(1) == labels)).any()


def test_ranking_and_auc_against_sklearn():
    labels, probs, flipped = make_data(n=500, seed=2)
    scores = label_quality_scores(labels, probs, method="normalized_margin")
    assert ((scores >= 0) & (scores <= 1)).all()
    q = detection_quality(flipped, scores=scores, at=(50,))
    assert q.auc == pytest.approx(roc_auc_score(flipped, -scores))
    order = rank_label_issues(labels, probs)
    assert q.precision_at[50] <= 1.0 and order[0] == np.argmin(probs[np.arange(500), labels])


def test_input_errors():
    probs = np.full((3, 2), 0.5)
    with pytest.raises(ValueError, match=r"label 2 of example 1 is outside 0..1"):
        find_label_issues(np.array([0, 2, 1]), probs)
    with pytest.raises(ValueError, match=r"pred_probs row 0 sums to 0.6000, not 1"):
        find_label_issues(np.array([0, 1, 1]), np.array([[0.3, 0.3], [0.5, 0.5], [0.5, 0.5]]))
    with pytest.raises(ValueError, match=r"The 'filter_by' parameter of find_label_issues must be one of"):
        find_label_issues(np.array([0, 1, 1]), probs, filter_by="magic")
    with pytest.raises(TypeError, match="must be integer class ids"):
        find_label_issues(np.array([0.0, 1.0, 1.0]), probs)
    with pytest.raises(ValueError, match=r"now called 'confident_learning'"):
        find_label_issues(np.array([0, 1, 1]), probs, filter_by="confident_joint")
    with pytest.raises(ValueError, match=r"filter_by='low_self_confidence' is not supported"):
        find_label_issues(np.array([0, 1, 1]), probs, filter_by="low_self_confidence")
    with pytest.raises(ValueError, match=r"labels hold 3 distinct names but pred_probs has 2 columns"):
        find_label_issues(np.array(["a", "b", "c"]), probs)
    with pytest.raises(ValueError, match=r"label 'c' of example 2 is not in label_names"):
        find_label_issues(np.array(["a", "b", "c"]), probs, label_names=["a", "b"])
    with pytest.raises(ValueError, match=r"return_indices_ranked_by must be None or one of"):
        find_label_issues(np.array([0, 1, 1]), probs, return_indices_ranked_by="entropy")
