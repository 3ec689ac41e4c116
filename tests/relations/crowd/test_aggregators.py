"""One shared suite for every registered aggregator, plus hand-worked toys, crowd-kit agreement and simulations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from crowdkit.aggregation import DawidSkene as CrowdKitDawidSkene
from crowdkit.aggregation import MajorityVote as CrowdKitMajorityVote

from knotwork.relations.crowd import AGGREGATORS, DawidSkene, MajorityVote, NotFittedError
from knotwork.relations.simulate import simulate_annotations

# crowd-kit 1.4.2 uses pandas keywords that pandas 3 deprecates; its warnings are not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::Warning:crowdkit")

# Hand-worked toy (crowd-kit's tests/aggregation/data_mv.py style): t1 2-1 for x, t2 unanimous y, t3 tie x/y.
TOY = pd.DataFrame(
    {
        "task": ["t1", "t1", "t1", "t2", "t2", "t3", "t3"],
        "worker": ["a", "b", "c", "a", "b", "a", "c"],
        "label": ["x", "x", "y", "y", "y", "y", "x"],
    }
)


def simulated(n_tasks=2000, seed=0, accuracies=(0.95, 0.9, 0.85, 0.55, 0.45, 0.4, 0.35), n_per_task=5):
    rng = np.random.default_rng(seed)
    labels = ["no_relation", "r1", "r2", "r3"]
    truth = pd.Series(rng.choice(labels, n_tasks, p=[0.55, 0.15, 0.15, 0.15]), index=[f"t{i}" for i in range(n_tasks)])
    workers = pd.Series(accuracies, index=[f"w{i}" for i in range(len(accuracies))])
    return simulate_annotations(truth, workers, n_per_task=n_per_task, choices=labels, seed=rng), truth, workers


@pytest.mark.parametrize("name", sorted(AGGREGATORS))
class TestAggregatorProtocol:
    def test_fit_returns_self_and_labels_every_task(self, name):
        model = AGGREGATORS[name]()
        assert model.fit(TOY) is model
        assert list(model.labels_.index) == ["t1", "t2", "t3"]
        np.testing.assert_allclose(model.probas_.sum(axis=1), 1.0)

    def test_nothing_fitted_in_init_and_unfitted_use_raises(self, name):
        model = AGGREGATORS[name]()
        assert not hasattr(model, "labels_")
        with pytest.raises(NotFittedError, match="is not fitted yet"):
            model.predict()

    def test_fit_twice_gives_the_same_result(self, name):
        data, _, _ = simulated(n_tasks=200)
        a = AGGREGATORS[name]().fit_predict(data)
        b = AGGREGATORS[name]().fit(data.sample(frac=1.0, random_state=1)).labels_.loc[a.index]
        pd.testing.assert_series_equal(a, b)

    def test_missing_columns_are_named(self, name):
        with pytest.raises(ValueError, match=r"answers lack column\(s\) \['worker'\]"):
            AGGREGATORS[name]().fit(TOY.drop(columns="worker"))
        with pytest.raises(TypeError, match="must be a pandas DataFrame"):
            AGGREGATORS[name]().fit(TOY.to_numpy())


def test_registry_names_are_tested():
    # A meta test: every registered aggregator must appear in the parametrised protocol suite above.
    assert set(AGGREGATORS) == {"majority-vote", "dawid-skene"}


def test_majority_vote_hand_worked():
    mv = MajorityVote().fit(TOY)
    assert mv.labels_.to_dict() == {"t1": "x", "t2": "y", "t3": "x"}  # tie -> first label in sorted order
    assert mv.ties_.to_dict() == {"t1": False, "t2": False, "t3": True}
    assert mv.probas_.loc["t1", "x"] == pytest.approx(2 / 3)
    assert mv.skills_["c"] == pytest.approx(0.5)  # c: y on t1 (wrong), x on t3 (right)


def test_majority_vote_matches_crowdkit_on_untied_tasks():
    data, _, _ = simulated(n_tasks=300, seed=3)
    ours = MajorityVote().fit(data)
    theirs = CrowdKitMajorityVote().fit_predict(data)
    untied = ours.ties_.index[~ours.ties_]
    pd.testing.assert_series_equal(ours.labels_.loc[untied], theirs.loc[untied], check_names=False)


def test_dawid_skene_matches_crowdkit():
    data, _, _ = simulated(n_tasks=100, seed=1)  # converges in 7 iterations: crowd-kit is slow per iteration
    ours = DawidSkene(n_iter=100).fit(data)
    theirs = CrowdKitDawidSkene(n_iter=100).fit(data)
    assert ours.n_iter_ == len(theirs.loss_history_)
    np.testing.assert_allclose(ours.loss_history_, theirs.loss_history_, rtol=1e-9)
    probas = theirs.probas_.loc[ours.probas_.index, ours.probas_.columns]
    np.testing.assert_allclose(ours.probas_.to_numpy(), probas.to_numpy(), atol=1e-8)
    pd.testing.assert_series_equal(ours.labels_, theirs.labels_.loc[ours.labels_.index], check_names=False)
    np.testing.assert_allclose(ours.priors_.to_numpy(), theirs.priors_.loc[ours.priors_.index].to_numpy(), atol=1e-8)


def test_dawid_skene_beats_majority_vote_with_known_accuracies():
    # 3 good and 4 poor workers per task: majority vote is outvoted by the poor ones; DS learns who is good.
    data, truth, workers = simulated(n_tasks=2000, seed=2)
    ds = DawidSkene().fit(data)
    ds_acc = (ds.labels_ == truth.loc[ds.labels_.index]).mean()
    mv_acc = (MajorityVote().fit_predict(data) == truth.loc[ds.labels_.index]).mean()
    assert ds_acc > mv_acc + 0.05
    # Estimated skills rank the workers as their true accuracies do.
    assert list(ds.skills_.loc[workers.index].sort_values().index) == list(workers.sort_values().index)


def test_dawid_skene_gold_clamps_and_bad_params():
    data, truth, _ = simulated(n_tasks=100, seed=4)
    gold = truth.iloc[:10]
    ds = DawidSkene().fit(data, true_labels=gold)
    assert (ds.labels_.loc[gold.index] == gold).all()
    with pytest.raises(ValueError, match=r"gold task 'nope' has no answers"):
        DawidSkene().fit(data, true_labels=pd.Series({"nope": "r1"}))
    with pytest.raises(ValueError, match=r"The 'n_iter' parameter of DawidSkene must be a positive int. Got 0 instead."):
        DawidSkene(n_iter=0).fit(data)
