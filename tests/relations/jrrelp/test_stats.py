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
