"""Matchers against independent oracles: brute force, a known shuffle, a hand-worked greedy run, naive loops."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from knotwork._errors import ZipitError
from knotwork.zipit.matchers import (
    MATCHERS,
    from_clusters,
    get_matcher,
    identity_match,
    permute_match,
    zipit_match,
    zipit_match_naive,
)


def _corr(n_models: int, width: int, seed: int, noise: float = 0.5) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Correlation of N models' features, where model i's features are a noisy shuffle of shared signals."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(width, 400, generator=g, dtype=torch.float64)
    feats, perms = [], []
    for _ in range(n_models):
        p = torch.randperm(width, generator=g)
        perms.append(p)
        feats.append(base[p] + noise * torch.randn(width, 400, generator=g, dtype=torch.float64))
    return torch.corrcoef(torch.cat(feats)), perms


def _clusters(unmerge: torch.Tensor) -> set[frozenset[int]]:
    return {frozenset(torch.nonzero(unmerge[:, c]).flatten().tolist()) for c in range(unmerge.shape[1])}


@pytest.mark.parametrize("name", sorted(MATCHERS))
def test_every_matcher_gives_m_u_identity_and_well_formed_unmerge(name):
    corr, _ = _corr(3, 6, seed=1)
    merge, unmerge = get_matcher(name)(corr, [6, 6, 6])
    assert merge.shape == (6, 18) and unmerge.shape == (18, 6)
    torch.testing.assert_close(merge @ unmerge, torch.eye(6, dtype=merge.dtype))  # M U = I on the merged space
    assert torch.equal(unmerge.sum(1), torch.ones(18, dtype=unmerge.dtype))  # every feature reads one merged one
    proj = unmerge @ merge
    torch.testing.assert_close(proj @ proj, proj)  # U M is a projector


def test_permute_recovers_a_known_shuffle_and_matches_brute_force():
    corr, perms = _corr(2, 12, seed=2, noise=0.1)
    _, unmerge = permute_match(corr, [12, 12])
    # Model-0 feature perms[0]^-1... is matched with the model-1 feature carrying the same signal.
    inv0, inv1 = torch.argsort(perms[0]), torch.argsort(perms[1])
    expected = {frozenset({int(inv0[s]), 12 + int(inv1[s])}) for s in range(12)}
    assert _clusters(unmerge) == expected
    # Brute force over all 4! assignments on a noisy 4+4 problem.
    corr, _ = _corr(2, 4, seed=3, noise=2.0)
    c = corr[:4, 4:].numpy()
    best = max(itertools.permutations(range(4)), key=lambda p: sum(c[i, p[i]] for i in range(4)))
    _, unmerge = permute_match(corr, [4, 4])
    assert _clusters(unmerge) == {frozenset({i, 4 + best[i]}) for i in range(4)}


def test_zipit_beta_zero_equals_permute_exactly():
    for n_models in (2, 3):
        corr, _ = _corr(n_models, 10, seed=4, noise=1.5)
        for alpha in (0.1, 0.5, 1.0):
            m1, u1 = zipit_match(corr, [10] * n_models, alpha=alpha, beta=0.0)
            m2, u2 = permute_match(corr, [10] * n_models)
            assert torch.equal(m1, m2) and torch.equal(u1, u2)


def test_identity_is_weight_averaging():
    merge, unmerge = identity_match(torch.eye(6), [3, 3])
    expected = torch.cat([torch.eye(3), torch.eye(3)], 1).double() / 2
    assert torch.equal(merge, expected)
    assert torch.equal(unmerge, torch.cat([torch.eye(3), torch.eye(3)], 0).double())


def test_zipit_hand_worked_example_with_within_model_merge():
    # Features a0, a1 (model A) and b0, b1 (model B). a0~a1 are most alike (0.9), then a0~b0 (0.8)...
    corr = torch.tensor([
        [1.0, 0.9, 0.8, 0.1],
        [0.9, 1.0, 0.7, 0.2],
        [0.8, 0.7, 1.0, 0.3],
        [0.1, 0.2, 0.3, 1.0],
    ], dtype=torch.float64)
    # beta=1: budget = floor(floor(2/2) * 1) = 1 within-model merge per model. Step 1 merges (a0, a1) at 0.9;
    # A's budget is spent, so A-A pairs are masked. The cluster's similarity to b0 becomes min(0.8, 0.7)*0.5 =
    # 0.35, to b1 min(0.1, 0.2)*0.5 = 0.05; b0~b1 is 0.3 (B-B, still allowed). Step 2 takes 0.35: {a0,a1,b0}.
    merge, unmerge = zipit_match(corr, [2, 2], alpha=0.5, beta=1.0)
    assert _clusters(unmerge) == {frozenset({0, 1, 2}), frozenset({3})}
    torch.testing.assert_close(merge[0], torch.tensor([1 / 3, 1 / 3, 1 / 3, 0], dtype=torch.float64))
    # With a tiny beta the budget is 0: only cross-model pairs, so greedy pairs (a0, b0) then (a1, b1).
    _, unmerge = zipit_match(corr, [2, 2], alpha=0.5, beta=0.1)
    assert _clusters(unmerge) == {frozenset({0, 2}), frozenset({1, 3})}


@pytest.mark.parametrize(("n_models", "alpha", "beta"), [(2, 0.3, 0.125), (2, 1.0, 1.0), (3, 0.5, 0.5), (2, 0.0, 0.5)])
def test_cached_greedy_equals_naive_full_argmax_loop(n_models, alpha, beta):
    corr, _ = _corr(n_models, 24, seed=5, noise=1.0)
    fast = zipit_match(corr, [24] * n_models, alpha=alpha, beta=beta)
    naive = zipit_match_naive(corr, [24] * n_models, alpha=alpha, beta=beta)
    assert torch.equal(fast[0], naive[0]) and torch.equal(fast[1], naive[1])


def _random_matrix(o: int, rng: np.random.Generator, kind: str) -> torch.Tensor:
    """Square matrices that stress the greedy's choices: heavy ties, asymmetry (as corrcoef's last bits), -inf/NaN."""
    a = rng.uniform(-1, 1, (o, o))
    if kind == "ties":  # a few distinct values: most steps choose among equal maxima
        a = np.round(a * 2) / 2
        a = np.triu(a) + np.triu(a, 1).T
    elif kind == "asymmetric":  # symmetric up to the last bit, like torch.corrcoef's output
        a = a + a.T
        a = np.where(rng.random((o, o)) < 0.3, np.nextafter(a, rng.choice([-2.0, 2.0], (o, o))), a)
    elif kind == "ties_asymmetric":  # few distinct values, and corr[a, b] != corr[b, a] for many pairs
        a = np.round(a * 2) / 2
    elif kind == "flat":  # everything tied: the order alone decides
        a = np.full((o, o), 0.5)
    elif kind == "nan":
        a = a + a.T
        a[rng.random((o, o)) < 0.05] = np.nan
        a[rng.random((o, o)) < 0.02] = -np.inf
        a[rng.random((o, o)) < 0.01] = np.inf
    return torch.from_numpy(a)


KINDS = ["ties", "asymmetric", "ties_asymmetric", "flat", "nan", "plain"]


@pytest.mark.parametrize("kind", KINDS)
def test_fast_greedy_equals_naive_on_ties_and_odd_matrices(kind):
    rng = np.random.default_rng(KINDS.index(kind))
    cases = 0
    for width, n_models in [(1, 2), (2, 2), (3, 3), (5, 2), (8, 3), (17, 2), (40, 2)]:
        for alpha, beta in [(0.3, 0.125), (1.0, 1.0), (0.5, 0.05), (0.0, 0.6), (0.7, 0.5)]:
            if alpha == 0.0 and n_models > 2:
                continue
            corr = _random_matrix(width * n_models, rng, kind)
            try:
                fast = zipit_match(corr, [width] * n_models, alpha=alpha, beta=beta)
            except ZipitError as err:  # the naive loop has no such check; it would merge a -inf pair
                assert "no admissible pair left" in str(err)
                continue
            naive = zipit_match_naive(corr, [width] * n_models, alpha=alpha, beta=beta)
            assert torch.equal(fast[0], naive[0]) and torch.equal(fast[1], naive[1]), (width, n_models, alpha, beta)
            cases += 1
    assert cases >= 25


def test_ties_go_to_the_first_maximum_in_row_major_order():
    # Every pair ties at 0.5: the naive loop takes (0, 1) first (row-major), then the merged feature 0 (now at
    # 0.5 * alpha) loses to the untouched pair (2, 3), and so on. The fast loop must make the same choices.
    corr = torch.full((6, 6), 0.5, dtype=torch.float64)
    _, unmerge = zipit_match(corr, [3, 3], alpha=0.5, beta=1.0)
    assert _clusters(unmerge) == {frozenset({0, 1}), frozenset({2, 3}), frozenset({4, 5})}
    _, unmerge = zipit_match(corr, [3, 3], alpha=0.5, beta=0.01)  # no within-model merges: (0, 3), (1, 4), (2, 5)
    assert _clusters(unmerge) == {frozenset({0, 3}), frozenset({1, 4}), frozenset({2, 5})}


#: (corr, the clusters the naive loop gives) for the two ways a merge can tie a row's best value.
TIE_CASES = {
    # corr[0, 1] = 0.1 but corr[1, 0] = 0.5 (corrcoef is symmetric only up to rounding; here exaggerated). Step 1
    # merges (1, 4) at 0.9. Row 0's best was column 5 (0.5); its column 1 becomes min(0.5, 0.5) * 1 = 0.5, a tie,
    # and the row-major argmax takes the lower column: step 2 merges (0, 1), not (0, 5). Step 3 (A's within-model
    # budget of 1 is spent) takes the first 0: (0, 3).
    "merged column below the best": (
        [[1.0, 0.1, 0.0, 0.0, 0.0, 0.5],
         [0.5, 1.0, 0.0, 0.0, 0.9, 0.0],
         [0.0, 0.0, 1.0, 0.0, 0.0, 0.0],
         [0.0, 0.0, 0.0, 1.0, 0.0, 0.0],
         [0.5, 0.9, 0.0, 0.0, 1.0, 0.0],
         [0.5, 0.0, 0.0, 0.0, 0.0, 1.0]],
        {frozenset({0, 1, 3, 4}), frozenset({2}), frozenset({5})},
    ),
    # The mirror case: row 0's best (0.5) is at column 1, below the merged column 2 that ties with it after step 1
    # merges (2, 4); the lower column keeps it, so step 2 merges (0, 1), then (0, 3).
    "merged column above the best": (
        [[1.0, 0.5, 0.1, 0.0, 0.0, 0.0],
         [0.5, 1.0, 0.0, 0.0, 0.0, 0.0],
         [0.5, 0.0, 1.0, 0.0, 0.9, 0.0],
         [0.0, 0.0, 0.0, 1.0, 0.0, 0.0],
         [0.5, 0.0, 0.9, 0.0, 1.0, 0.0],
         [0.0, 0.0, 0.0, 0.0, 0.0, 1.0]],
        {frozenset({0, 1, 3}), frozenset({2, 4}), frozenset({5})},
    ),
}


@pytest.mark.parametrize("case", list(TIE_CASES))
def test_a_tie_created_by_a_merge_goes_to_the_lower_column(case):
    rows, expected = TIE_CASES[case]
    corr = torch.tensor(rows, dtype=torch.float64)
    fast = zipit_match(corr, [3, 3], alpha=1.0, beta=1.0)
    naive = zipit_match_naive(corr, [3, 3], alpha=1.0, beta=1.0)
    assert _clusters(naive[1]) == expected
    assert torch.equal(fast[0], naive[0]) and torch.equal(fast[1], naive[1])


def test_from_clusters_matches_its_definition():
    clusters = [[0, 3], [1], [2, 4, 5]]
    merge, unmerge = from_clusters(clusters, 6)
    expected_u = torch.zeros(6, 3, dtype=torch.float64)
    for c, members in enumerate(clusters):
        expected_u[members, c] = 1.0
    assert torch.equal(unmerge, expected_u)
    assert torch.equal(merge, (expected_u / expected_u.sum(0)).T)
    merge, _ = from_clusters([[0], []], 2)  # an empty cluster averages nothing: 0/0
    assert torch.isnan(merge[1]).all() and torch.equal(merge[0], torch.tensor([1.0, 0.0], dtype=torch.float64))


def test_beta_caps_within_model_merges_per_model():
    # Each model's features come in near-duplicate pairs (corr ~0.99) and are unrelated to the other model's:
    # the greedy wants within-model merges, and beta's budget floor(floor(32/2) * beta) per model caps them.
    g = torch.Generator().manual_seed(6)
    signals = torch.randn(2, 16, 500, generator=g, dtype=torch.float64)
    feats = torch.cat([signals[m].repeat_interleave(2, 0) for m in range(2)])
    feats = feats + 0.1 * torch.randn(64, 500, generator=g, dtype=torch.float64)
    corr = torch.corrcoef(feats)

    def within(u):
        return sum(1 for c in _clusters(u) if len({f // 32 for f in c}) < len(c))

    # alpha=0: no cluster grows past a pair, so a same-model cluster is exactly one within-model merge.
    counts = [within(zipit_match(corr, [32, 32], alpha=0.0, beta=b)[1]) for b in (0.01, 0.25, 1.0)]
    assert counts == [0, 2 * 4, 2 * 16]


def test_matcher_input_errors():
    with pytest.raises(ValueError, match=r"corr must have shape \(8, 8\)"):
        zipit_match(torch.eye(6), [4, 4])
    with pytest.raises(ValueError, match="same positive width"):
        permute_match(torch.eye(7), [4, 3])
    with pytest.raises(ValueError, match="at least 2 models"):
        identity_match(torch.eye(4), [4])
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]; got 1.5"):
        zipit_match(torch.eye(4), [2, 2], alpha=1.5)
    with pytest.raises(ValueError, match="alpha=0 forbids"):
        zipit_match(torch.eye(6), [2, 2, 2], alpha=0.0)
    with pytest.raises(ZipitError, match=r"unknown matcher 'zip'; known matchers: \['identity', 'permute', 'zipit'\]"):
        get_matcher("zip")


def test_nan_correlations_are_treated_as_uncorrelated():
    corr = torch.eye(4, dtype=torch.float64)
    corr[0, 2] = corr[2, 0] = float("nan")
    corr[1, 3] = corr[3, 1] = 0.5
    _, unmerge = zipit_match(corr, [2, 2], alpha=0.5, beta=0.1)
    assert _clusters(unmerge) == {frozenset({0, 2}), frozenset({1, 3})}
    assert np.isfinite(unmerge.numpy()).all()
