"""``find_label_issues`` against cleanlab itself: same mask for every filter, same ranked indices for every score.

Data as in cleanlab's ``tests/test_filter_count.py::make_data``: true labels, a known noise matrix that corrupts
them, and predicted probabilities from a model that is good but not perfect.
"""

from __future__ import annotations

import gzip
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

cleanlab_filter = pytest.importorskip("cleanlab.filter")
cleanlab_count = pytest.importorskip("cleanlab.count")

from knotwork.relations import confident_joint, find_label_issues  # noqa: E402

FILTERS = ("prune_by_noise_rate", "prune_by_class", "both", "confident_learning", "predicted_neq_given")
RANKINGS = ("self_confidence", "normalized_margin", "confidence_weighted_entropy")


def noise_matrix(k: int, rng: np.random.Generator, trace: float) -> np.ndarray:
    """Column-stochastic P(given = i | true = j) with the diagonal summing to ``trace``."""
    diag = np.full(k, trace / k)
    m = rng.random((k, k))
    np.fill_diagonal(m, 0)
    m = m / m.sum(axis=0) * (1 - diag)
    np.fill_diagonal(m, diag)
    return m


def make_data(n: int = 2000, k: int = 4, seed: int = 0, trace: float | None = None, sep: float = 2.0):
    """(noisy labels, pred_probs, true labels): Gaussian class scores, labels flipped column-wise by a noise matrix."""
    rng = np.random.default_rng(seed)
    prior = rng.dirichlet(np.full(k, 4.0))
    true = rng.choice(k, size=n, p=prior)
    nm = noise_matrix(k, rng, trace if trace is not None else 0.7 * k)
    noisy = np.array([rng.choice(k, p=nm[:, t]) for t in true])
    logits = rng.normal(0, 1, (n, k))
    logits[np.arange(n), true] += sep
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    return noisy, probs, true


def cleanlab(labels, probs, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cleanlab_filter.find_label_issues(labels, probs, n_jobs=1, **kw)


def ours(labels, probs, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return find_label_issues(labels, probs, **kw)


DATASETS = [
    dict(n=300, k=3, seed=0),
    dict(n=1000, k=4, seed=1),
    dict(n=2500, k=6, seed=2, sep=1.0),
    dict(n=3000, k=10, seed=3, trace=5.0),
]


@pytest.fixture(scope="module", params=range(len(DATASETS)), ids=lambda i: "n{n}-k{k}-seed{seed}".format(**DATASETS[i]))
def data(request):
    return make_data(**DATASETS[request.param])


def test_confident_joint_matches(data):
    labels, probs, _ = data
    np.testing.assert_array_equal(confident_joint(labels, probs), cleanlab_count.compute_confident_joint(labels, probs))
    np.testing.assert_array_equal(
        confident_joint(labels, probs, calibrate=False),
        cleanlab_count.compute_confident_joint(labels, probs, calibrate=False),
    )


@pytest.mark.parametrize("filter_by", FILTERS)
def test_mask_matches(data, filter_by):
    labels, probs, true = data
    mask = ours(labels, probs, filter_by=filter_by)
    np.testing.assert_array_equal(mask, cleanlab(labels, probs, filter_by=filter_by))
    if filter_by != "predicted_neq_given":  # the detector works: well above the chance precision
        assert (labels != true)[mask].mean() > 1.2 * (labels != true).mean()


@pytest.mark.parametrize("filter_by", ("prune_by_noise_rate", "prune_by_class", "both"))
@pytest.mark.parametrize("kw", [dict(frac_noise=0.4), dict(min_examples_per_class=150), dict(min_examples_per_class=0)],
                         ids=["frac_noise", "min_examples", "min_zero"])
def test_prune_options_match(data, filter_by, kw):
    labels, probs, _ = data
    np.testing.assert_array_equal(ours(labels, probs, filter_by=filter_by, **kw),
                                  cleanlab(labels, probs, filter_by=filter_by, **kw))


@pytest.mark.parametrize("filter_by", ("prune_by_noise_rate", "prune_by_class", "both"))
def test_num_to_remove_and_given_joint_match(data, filter_by):
    labels, probs, _ = data
    k = probs.shape[1]
    num = [5 * (j + 1) for j in range(k)]
    np.testing.assert_array_equal(ours(labels, probs, filter_by=filter_by, num_to_remove_per_class=num),
                                  cleanlab(labels, probs, filter_by=filter_by, num_to_remove_per_class=num))
    cj = cleanlab_count.compute_confident_joint(labels, probs, calibrate=False)  # used as given, not recalibrated
    np.testing.assert_array_equal(ours(labels, probs, filter_by=filter_by, confident_joint=cj),
                                  cleanlab(labels, probs, filter_by=filter_by, confident_joint=cj))


@pytest.mark.parametrize("filter_by", FILTERS)
@pytest.mark.parametrize("ranked_by", RANKINGS)
def test_ranked_indices_match(data, filter_by, ranked_by):
    labels, probs, _ = data
    got = ours(labels, probs, filter_by=filter_by, return_indices_ranked_by=ranked_by)
    assert got.dtype.kind == "i"
    np.testing.assert_array_equal(got, cleanlab(labels, probs, filter_by=filter_by, return_indices_ranked_by=ranked_by))


@pytest.mark.parametrize("ranked_by", ("self_confidence", "normalized_margin"))
def test_adjusted_ranking_matches(data, ranked_by):
    labels, probs, _ = data
    kw = dict(return_indices_ranked_by=ranked_by, rank_by_kwargs={"adjust_pred_probs": True})
    np.testing.assert_array_equal(ours(labels, probs, **kw), cleanlab(labels, probs, **kw))


def test_string_labels_give_the_integer_result(data):
    labels, probs, _ = data
    k = probs.shape[1]
    names = np.array([f"rel_{j:02d}" for j in range(k)])  # sorted order == column order
    for filter_by in FILTERS:
        np.testing.assert_array_equal(ours(names[labels], probs, filter_by=filter_by),
                                      ours(labels, probs, filter_by=filter_by))
    # an explicit column order that is not the sorted one
    shuffled = [f"z{j}" if j % 2 else f"a{j}" for j in range(k)]
    as_str = np.array(shuffled)[labels]
    np.testing.assert_array_equal(
        ours(as_str, probs, label_names=shuffled, return_indices_ranked_by="normalized_margin"),
        cleanlab(labels, probs, return_indices_ranked_by="normalized_margin"),
    )


def test_missing_class_and_tiny_class():
    labels, probs, _ = make_data(n=800, k=5, seed=7)
    labels = labels.copy()
    labels[labels == 4] = 0  # class 4 never given
    labels[np.flatnonzero(labels == 3)[1:]] = 1  # class 3 given once
    for filter_by in FILTERS:
        for kw in ({}, {"min_examples_per_class": 0}):
            np.testing.assert_array_equal(ours(labels, probs, filter_by=filter_by, **kw),
                                          cleanlab(labels, probs, filter_by=filter_by, **kw))


def test_ties_from_vote_fractions():
    """Coarse probabilities (vote counts of 10 models) are full of ties: the order must still match."""
    rng = np.random.default_rng(11)
    n, k = 1500, 5
    true = rng.integers(0, k, n)
    votes = np.zeros((n, k))
    for _ in range(10):
        guess = np.where(rng.random(n) < 0.7, true, rng.integers(0, k, n))
        votes[np.arange(n), guess] += 1
    probs = (votes + 0.5) / (votes + 0.5).sum(axis=1, keepdims=True)
    labels = np.where(rng.random(n) < 0.15, rng.integers(0, k, n), true)
    for filter_by in FILTERS:
        np.testing.assert_array_equal(ours(labels, probs, filter_by=filter_by),
                                      cleanlab(labels, probs, filter_by=filter_by))
        for ranked_by in RANKINGS:
            np.testing.assert_array_equal(
                ours(labels, probs, filter_by=filter_by, return_indices_ranked_by=ranked_by),
                cleanlab(labels, probs, filter_by=filter_by, return_indices_ranked_by=ranked_by))


DEV_RESULTS = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "re" / "tacrev_predictions" / "dev_results"


@pytest.mark.shared_data
@pytest.mark.slow
def test_real_tacred_dev_predictions():
    """Real relation labels: TACRED dev gold labels, probabilities from the votes of the published models' predictions.

    ../shared/data/re holds no out-of-fold probabilities, only each model's predicted label; their smoothed vote
    fractions are a real, tie-heavy probability matrix over the 42 relations.
    """
    files = sorted(DEV_RESULTS.glob("*_dev.jsonl.gz")) if DEV_RESULTS.is_dir() else []
    if len(files) < 5:
        pytest.skip("needs ../shared/data/re/tacrev_predictions/dev_results")
    gold: list[str] | None = None
    preds = []
    for f in files:
        with gzip.open(f, "rt") as fh:
            rows = [json.loads(line) for line in fh]
        if gold is None:
            ids, gold = [r["id"] for r in rows], [r["label_true"] for r in rows]
        elif [r["id"] for r in rows] != ids:
            continue
        preds.append([r["label_pred"] for r in rows])
    names = sorted(set(gold).union(*map(set, preds)))
    index = {lab: j for j, lab in enumerate(names)}
    votes = np.full((len(gold), len(names)), 0.1)
    for p in preds:
        votes[np.arange(len(gold)), [index[x] for x in p]] += 1
    probs = votes / votes.sum(axis=1, keepdims=True)
    y = np.array([index[g] for g in gold])
    for filter_by in FILTERS:
        expected = cleanlab(y, probs, filter_by=filter_by)
        np.testing.assert_array_equal(ours(np.array(gold), probs, filter_by=filter_by, label_names=names), expected)
        for ranked_by in RANKINGS:
            np.testing.assert_array_equal(
                ours(y, probs, filter_by=filter_by, return_indices_ranked_by=ranked_by),
                cleanlab(y, probs, filter_by=filter_by, return_indices_ranked_by=ranked_by))
