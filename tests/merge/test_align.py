"""The exact QR/core KnOTS route against the paper's dense fp64 SVD."""

from __future__ import annotations

import torch

from knotwork.merge import MergeConfig, dense_knots_align, get_method, knots_align, merge_modules
from tests.merge.helpers import random_factors

SHAPES = {"layer0.q": (40, 32), "layer0.v": (40, 32), "layer1.o": (24, 56)}


def _tasks(ranks=(3, 6, 2, 5)):
    per_task = [random_factors(SHAPES, r, seed=10 + i) for i, r in enumerate(ranks)]
    return {name: [t[name] for t in per_task] for name in SHAPES}


def _dense_knots_merge(factors, method: str, config: MergeConfig):
    """Reference KnOTS: dense SVD per module, then the inner method on the R_i, then U @ R_merged."""
    inner = get_method(method.removeprefix("knots-"))
    aligned = {n: dense_knots_align([B.double() @ A.double() for B, A in pairs]) for n, pairs in factors.items()}
    reps = [{n: al.reps[i] for n, al in aligned.items()} for i in range(len(next(iter(factors.values()))))]
    merged = inner.merge(reps, config)
    return {n: aligned[n].basis @ merged[n] for n in factors}


def test_qr_route_reconstructs_each_task_exactly():
    for pairs in _tasks().values():
        al = knots_align(pairs, dtype=torch.float64)
        assert al.rank == sum(A.shape[0] for _, A in pairs)  # generic random factors: full rank Σr
        assert torch.allclose(al.basis.T @ al.basis, torch.eye(al.rank, dtype=torch.float64), atol=1e-12)
        for (B, A), rep in zip(pairs, al.reps, strict=True):
            torch.testing.assert_close(al.basis @ rep, B.double() @ A.double(), rtol=0, atol=1e-12)


def test_qr_route_matches_dense_svd_singular_values():
    for pairs in _tasks().values():
        fast = knots_align(pairs, dtype=torch.float64)
        M = torch.cat([B.double() @ A.double() for B, A in pairs], dim=1)
        s = torch.linalg.svdvals(M)[: fast.rank]
        torch.testing.assert_close(fast.singular_values, s, rtol=1e-10, atol=0)


def test_qr_route_gives_the_dense_route_merge_unequal_ranks():
    factors = _tasks()
    for method, config in [
        ("knots-ties", MergeConfig(scale=0.7, topk=20)),
        ("knots-ties", MergeConfig(scale=1.0, topk=60, topk_scope="module")),
        ("knots-dare-ties", MergeConfig(scale=0.5, drop_rate=0.3, seed=3)),
        ("knots-ta", MergeConfig(scale=0.3)),
    ]:
        expected = _dense_knots_merge(factors, method, config)
        got = merge_modules(factors, method=method, config=config).deltas
        for name in factors:
            rel = torch.linalg.norm(got[name].double() - expected[name].double()) / torch.linalg.norm(expected[name])
            assert rel < 1e-6, (method, name, float(rel))


def test_knots_ties_is_invariant_to_component_signs():
    pairs = _tasks()["layer0.q"]
    al = knots_align(pairs)
    flip = torch.tensor([(-1.0) ** j for j in range(al.rank)])
    inner = get_method("ties")
    config = MergeConfig(topk=30)
    plain = inner.merge([{"m": r} for r in al.reps], config)["m"]
    flipped = inner.merge([{"m": flip[:, None] * r} for r in al.reps], config)["m"]
    torch.testing.assert_close(al.basis @ plain, (al.basis * flip) @ flipped)


def test_relative_tolerance_drops_numerically_zero_components():
    B, A = random_factors({"m": (30, 20)}, 4, seed=1)["m"]
    # Two tasks with the same update: the stack has rank 4, not 8.
    al = knots_align([(B, A), (B, A)])
    assert al.rank == 4
