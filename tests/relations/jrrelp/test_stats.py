"""Macro-F1 on a hand-worked example; the paired bootstrap on cases with a known answer."""

from __future__ import annotations

import pytest

from knotwork.relations import score
from knotwork.relations.jrrelp.stats import macro_f1, paired_bootstrap

GOLD = ["A", "A", "B", "no_relation", "B", "no_relation"]


def test_macro_f1_hand_worked():
    pred = ["A", "B", "B", "A", "no_relation", "no_relation"]
    # A: tp 1, predicted 2, gold 2 -> F1 0.5. B: tp 1, predicted 2, gold 2 -> 0.5.
    assert macro_f1(GOLD, pred) == pytest.approx(0.5)


def test_bootstrap_identical_systems_and_a_clear_win():
    good = [list(GOLD)]
    bad = [["no_relation"] * len(GOLD)]
    same = paired_bootstrap(GOLD, good, good, n_resamples=200)
    assert same["delta"] == 0 and same["p"] == 1.0
    win = paired_bootstrap(GOLD, bad, good, n_resamples=200, seed=1)
    assert win["delta"] == pytest.approx(score(GOLD, good[0]).f1 - score(GOLD, bad[0]).f1)
    assert win["ci_low"] > 0 and win["p"] < 0.05


def test_seed_resampling_widens_the_interval_when_seeds_disagree():
    # Two seeds: the system wins big on one and loses on the other; fixed seeds hide that, resampled seeds show it.
    gold = ["A", "B", "A", "B"] * 10
    sys_runs = [list(gold), ["no_relation"] * len(gold)]
    base_runs = [["no_relation"] * len(gold), list(gold)]
    fixed = paired_bootstrap(gold, base_runs, sys_runs, resample_seeds=False, n_resamples=300)
    both = paired_bootstrap(gold, base_runs, sys_runs, n_resamples=300)
    assert fixed["ci_high"] - fixed["ci_low"] == pytest.approx(0.0)  # the average over both seeds is always 0
    assert both["ci_low"] < -0.5 and both["ci_high"] > 0.5
    with pytest.raises(ValueError, match="pairs runs by seed but got 1 baseline and 2"):
        paired_bootstrap(gold, base_runs[:1], sys_runs)


def test_bootstrap_checks_lengths():
    with pytest.raises(ValueError, match="a prediction list has 2 entries, gold has 6"):
        paired_bootstrap(GOLD, [["A", "B"]], [list(GOLD)])


def test_macro_bootstrap_observed_delta_is_the_macro_f1_difference():
    import numpy as np

    rng = np.random.default_rng(0)
    labels = ["A", "B", "C", "no_relation"]
    gold = list(rng.choice(labels, 200))
    runs = [[g if rng.random() < q else str(rng.choice(labels)) for g in gold] for q in (0.5, 0.6, 0.7, 0.8)]
    base, sys_ = runs[:2], runs[2:]
    got = paired_bootstrap(gold, base, sys_, metric="macro", n_resamples=200)
    want = np.mean([macro_f1(gold, r) for r in sys_]) - np.mean([macro_f1(gold, r) for r in base])
    assert got["delta"] == pytest.approx(want) and got["ci_low"] < got["delta"] < got["ci_high"]
    micro = paired_bootstrap(gold, base, sys_, n_resamples=10)
    assert micro["delta"] == pytest.approx(np.mean([score(gold, r).f1 for r in sys_])
                                           - np.mean([score(gold, r).f1 for r in base]))
    with pytest.raises(ValueError, match="metric must be one of"):
        paired_bootstrap(gold, base, sys_, metric="weighted")


def test_paired_t_test_by_hand():
    from knotwork.relations.jrrelp.stats import paired_t_test

    # Differences 1, 2, 3, 6: mean 3, sd sqrt(14/3); t = 3 / (sd / 2) = 2.777 with 3 df, two-sided p = 0.0693.
    got = paired_t_test([10, 10, 10, 10], [11, 12, 13, 16])
    assert (got["n"], got["mean"]) == (4, 3.0)
    assert got["sd"] == pytest.approx((14 / 3) ** 0.5)
    assert got["t"] == pytest.approx(3 / ((14 / 3) ** 0.5 / 2))
    assert got["p"] == pytest.approx(0.0693, abs=5e-4)
    assert got["ci_low"] == pytest.approx(3 - 3.182446 * (14 / 3) ** 0.5 / 2, rel=1e-5)


def test_paired_power_matches_published_values_and_simulation():
    import numpy as np
    from scipy import stats

    from knotwork.relations.jrrelp.stats import paired_power, pairs_for_power

    # G*Power, t test of matched pairs, two-tailed, alpha 0.05: dz = 1, n = 10 -> power 0.8031; dz = 0.5, n = 34
    # -> 0.8078.
    assert paired_power(1.0, 1.0, 10) == pytest.approx(0.8031, abs=5e-4)
    assert paired_power(0.5, 1.0, 34) == pytest.approx(0.8078, abs=5e-4)
    assert pairs_for_power(0.5, 1.0) == 34
    # Monte Carlo: share of simulated 12-pair experiments with p < 0.05 (effect 1 point, sd 2 points).
    rng = np.random.default_rng(0)
    sims = rng.normal(1.0, 2.0, size=(20000, 12))
    hits = np.mean(stats.ttest_1samp(sims, 0.0, axis=1).pvalue < 0.05)
    assert paired_power(1.0, 2.0, 12) == pytest.approx(hits, abs=0.01)
