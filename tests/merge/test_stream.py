"""The streaming engine against the in-memory, whole-model methods (the one-pass reference)."""

from __future__ import annotations

import pytest
import torch

from knotwork.merge import METHODS, MergeConfig, get_method
from knotwork.merge.align import knots_align
from knotwork.merge.primitives import task_thresholds
from knotwork.merge.stream import ModuleMerger, global_cuts, merge_stream
from tests.merge.helpers import random_factors

SHAPES = {"l0.q": (24, 20), "l0.v": (24, 20), "l1.q": (20, 24), "l1.o": (16, 24)}


def _tasks(ranks=(4, 8, 6), seed=0):
    tasks = [random_factors(SHAPES, r, seed=seed + i) for i, r in enumerate(ranks)]
    return {n: [t[n] for t in tasks] for n in sorted(SHAPES)}


def _whole_model(factors, method, config):
    """Today's one-pass route: every module's representation held at once, then spec.merge."""
    spec = get_method(method)
    names = sorted(factors)
    n = len(factors[names[0]])
    reps, bases = [{} for _ in range(n)], {}
    for name in names:
        if spec.aligned:
            al = knots_align(factors[name], rel_tol=config.rel_tol)
            bases[name] = al.basis
            for i, r in enumerate(al.reps):
                reps[i][name] = r
        else:
            bases[name] = None
            for i, (B, A) in enumerate(factors[name]):
                reps[i][name] = B @ A
    merged = spec.merge(reps, config)
    return {m: merged[m] if bases[m] is None else bases[m] @ merged[m] for m in names}, merged


CONFIGS = [
    {"scale": 0.7},
    {"scale": 0.6, "topk": 20},
    {"scale": 0.6, "topk": 35, "topk_scope": "module"},
    {"drop_rate": 0.3, "seed": 5},
    {"drop_rate": 0.3, "seed": 5, "topk": 50},
    {"reduce": "mean", "task_scales": (1.0, 0.5, 2.0)},
]


@pytest.mark.parametrize("name", sorted(METHODS))
@pytest.mark.parametrize("params", CONFIGS, ids=[str(c) for c in CONFIGS])
def test_streaming_equals_whole_model(name, params):
    factors = _tasks()
    config = MergeConfig(**params)
    want, raw = _whole_model(factors, name, config)
    got = {m.name: m for m in merge_stream(sorted(factors), factors.__getitem__, method=name, config=config)}
    assert sorted(got) == sorted(factors)
    for module, mod in got.items():
        if mod.left is None or get_method(name).aligned:
            assert torch.equal(mod.right, raw[module]), module  # bit for bit: same representation of the merge
        torch.testing.assert_close(mod.delta(), want[module], rtol=1e-5, atol=1e-6)


def test_plain_ta_is_an_exact_lora_of_rank_sum_r():
    factors = _tasks()
    (mod,) = [m for m in merge_stream(["l0.q"], factors.__getitem__, method="ta") if m.name == "l0.q"]
    assert not mod.dense and mod.left.shape == (24, 18) and mod.right.shape == (18, 20)
    for name in ("ties", "dare", "dare-ties"):
        (mod,) = list(merge_stream(["l0.q"], factors.__getitem__, method=name))
        assert mod.dense


@pytest.mark.parametrize("topk", [0.5, 10, 20, 63.7, 99.9])
@pytest.mark.parametrize("sample", [7, 64, 1 << 20])
def test_global_cuts_equal_the_full_partition(topk, sample):
    # A tiny sample gives a bracket that often misses: the widened second pass must still find the exact cut.
    g = torch.Generator().manual_seed(3)
    mods = {f"m{i}": [torch.randn(s, generator=g) * (i + 1) for _ in range(2)] for i, s in enumerate((50, 7, 300))}
    mods["m0"][1][:10] = 0.0  # ties at zero
    names = sorted(mods)
    want = task_thresholds([{n: mods[n][t] for n in names} for t in range(2)], topk)
    # Factors (dense, I) reproduce the given vectors exactly as ΔW_i = dense @ I.
    factors = {n: [(v[:, None], torch.eye(1)) for v in mods[n]] for n in names}
    merger = ModuleMerger("ties", MergeConfig(topk=topk), factors.__getitem__)
    got = global_cuts(merger, names, sample=sample)
    assert got == [want[0][names[0]], want[1][names[0]]]


def test_majority_sign_held_back_modules_match_whole_model():
    # Module "a" has an exact cancellation; the model-wide majority comes from module "b", visited after it.
    t1 = {"a": torch.tensor([[2.0, 0.0]]), "b": torch.tensor([[-1.0, -1.0, -1.0]])}
    t2 = {"a": torch.tensor([[-2.0, 0.0]]), "b": torch.tensor([[-1.0, -1.0, -1.0]])}
    config = MergeConfig(topk=100)
    want = get_method("ties").merge([t1, t2], config)
    # Factors with A = I reproduce the given dense updates exactly.
    factors = {n: [(t[n], torch.eye(t[n].shape[1])) for t in (t1, t2)] for n in ("a", "b")}
    got = {m.name: m.right for m in merge_stream(["a", "b"], factors.__getitem__, method="ties", config=config)}
    assert torch.equal(got["a"], want["a"]) and torch.equal(got["b"], want["b"])
    assert torch.equal(got["a"], torch.tensor([[-2.0, 0.0]]))  # the majority is negative


@pytest.mark.parametrize("name", ["ties", "dare", "dare-ties", "knots-dare-ties"])
@pytest.mark.parametrize("params", [{"topk": 20, "drop_rate": 0.3}, {"topk": 40, "topk_scope": "module",
                                                                     "drop_rate": 0.5}])
def test_row_blocks_change_nothing(monkeypatch, name, params):
    """Dense merges run in blocks of rows; with blocks forced small the result is bit for bit the one-pass one."""
    import knotwork.merge.methods.dare as dare_mod
    import knotwork.merge.stream as stream

    factors = _tasks()
    config = MergeConfig(**params)
    whole = {m.name: m.right for m in merge_stream(sorted(factors), factors.__getitem__, method=name, config=config)}
    monkeypatch.setattr(stream, "_BLOCK_ENTRIES", 1)
    monkeypatch.setattr(stream, "MASK_ROWS", 3)
    monkeypatch.setattr(dare_mod, "MASK_ROWS", 3)
    blocked = {m.name: m.right for m in merge_stream(sorted(factors), factors.__getitem__, method=name, config=config)}
    for module, right in whole.items():
        torch.testing.assert_close(blocked[module], right, rtol=1e-6, atol=1e-7)
    _, raw = _whole_model(factors, name, config)
    for module, right in blocked.items():
        torch.testing.assert_close(right, raw[module], rtol=1e-6, atol=1e-7)
