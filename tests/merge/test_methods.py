"""TA / TIES / DARE semantics against hand-worked cases, and the shared suite every registered method runs."""

from __future__ import annotations

import pytest
import torch

from knotwork.merge import METHODS, MergeConfig, get_method, merge_modules
from knotwork.merge.primitives import dare, topk_threshold
from tests.merge.helpers import random_factors

T1 = torch.tensor([[1.0, -2.0, 3.0]])
T2 = torch.tensor([[-3.0, 1.0, 0.5]])


def _merge(method, tasks, **kw):
    return get_method(method).merge([{"m": t} for t in tasks], MergeConfig(**kw))["m"]


def test_ties_hand_worked_no_trim():
    # signs of the sums (-2, -1, 3.5) -> (-, -, +); agreeing entries: -3 | -2 | mean(3, 0.5)
    torch.testing.assert_close(_merge("ties", [T1, T2], topk=100), torch.tensor([[-3.0, -2.0, 1.75]]))
    torch.testing.assert_close(_merge("ties", [T1, T2], topk=100, scale=0.5), torch.tensor([[-1.5, -1.0, 0.875]]))


def test_ties_hand_worked_with_trim():
    # topk 34% of 3 entries: k = 3 - floor(1.02) = 2nd smallest |x| is the cut. T1 -> [0,-2,3]; T2 -> [-3,1,0].
    # sums (-3,-1,3) -> signs (-,-,+); T2's +1 disagrees in entry 1; T2's trimmed 0 never counts in entry 2.
    torch.testing.assert_close(_merge("ties", [T1, T2], topk=34), torch.tensor([[-3.0, -2.0, 3.0]]))


def test_ties_global_cut_spans_modules():
    # One task, two modules, magnitudes 1..6. As the reference's kthvalue rule: k = 6 - floor(6 * 0.5) = 3, so the
    # cut is the 3rd smallest magnitude (3) and {3, 4, 5, 6} survive, wherever they are.
    task = {"a": torch.tensor([[1.0, 5.0, -2.0]]), "b": torch.tensor([[-6.0, 3.0, 4.0]])}
    out = get_method("ties").merge([task], MergeConfig(topk=50))
    torch.testing.assert_close(out["a"], torch.tensor([[0.0, 5.0, 0.0]]))
    torch.testing.assert_close(out["b"], torch.tensor([[-6.0, 3.0, 4.0]]))
    per_module = get_method("ties").merge([task], MergeConfig(topk=50, topk_scope="module"))
    torch.testing.assert_close(per_module["a"], torch.tensor([[0.0, 5.0, -2.0]]))  # cut at the 2nd smallest per module


def test_ties_zero_sum_takes_majority_sign():
    # Entry 0 sums to exactly 0; the model-wide majority of elected signs is + (entries 1, 2), so + wins there.
    t1, t2 = torch.tensor([[2.0, 1.0, 1.0]]), torch.tensor([[-2.0, 1.0, 1.0]])
    torch.testing.assert_close(_merge("ties", [t1, t2], topk=100), torch.tensor([[2.0, 1.0, 1.0]]))


def test_topk_threshold_keeps_ties_at_the_cut():
    assert topk_threshold(torch.tensor([1.0, 2.0, 2.0, 3.0]), 50) == 2.0
    assert topk_threshold(torch.tensor([1.0, 2.0]), 100) == 0.0


def test_ta_sum_and_mean():
    torch.testing.assert_close(_merge("ta", [T1, T2], scale=0.5), 0.5 * (T1 + T2))
    torch.testing.assert_close(_merge("ta", [T1, T2], reduce="mean"), (T1 + T2) / 2)
    torch.testing.assert_close(_merge("ta", [T1, T2], task_scales=(2.0, 0.0)), 2 * T1)


def test_dare_drops_and_rescales():
    x = torch.arange(1.0, 9.0).reshape(2, 4)
    out = dare(x, 0.5, torch.Generator().manual_seed(0))
    kept = out != 0
    torch.testing.assert_close(out[kept], 2 * x[kept])  # survivors are rescaled by 1/(1-p)
    assert 0 < kept.sum() < x.numel()
    # Unbiased: the mean over many independent masks approaches x.
    g = torch.Generator().manual_seed(1)
    mean = torch.stack([dare(x, 0.3, g) for _ in range(4000)]).mean(0)
    torch.testing.assert_close(mean, x, rtol=0.05, atol=0.05)


def test_dare_is_seeded():
    a = _merge("dare-ties", [T1, T2], drop_rate=0.5, seed=4)
    b = _merge("dare-ties", [T1, T2], drop_rate=0.5, seed=4)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(_merge("dare", [T1, T2], drop_rate=0.0), T1 + T2)


def test_knots_ta_equals_ta():
    shapes = {"q": (32, 24), "v": (32, 24)}
    tasks = [random_factors(shapes, r, seed=i) for i, r in enumerate((4, 8, 2))]
    factors = {n: [t[n] for t in tasks] for n in shapes}
    for reduce in ("sum", "mean"):
        config = MergeConfig(scale=0.4, reduce=reduce)
        ta = merge_modules(factors, method="ta", config=config).deltas
        kta = merge_modules(factors, method="knots-ta", config=config).deltas
        for n in shapes:
            torch.testing.assert_close(kta[n], ta[n], rtol=1e-5, atol=1e-6)


# ---- the shared suite: every registered method ---------------------------------------------------------------

IDENTITY_CONFIG = {"ta": {}, "ties": {"topk": 100}, "dare": {"drop_rate": 0.0}, "dare-ties": {"drop_rate": 0.0}}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_returns_one_task_unchanged(name):
    """With one task, λ = 1 and nothing dropped or trimmed, every method returns that task's update."""
    shapes = {"q": (16, 12), "o": (12, 16)}
    factors = {n: [p] for n, p in random_factors(shapes, 3, seed=7).items()}
    kwargs = IDENTITY_CONFIG[name.removeprefix("knots-")]
    result = merge_modules(factors, method=name, config=MergeConfig(scale=1.0, **kwargs))
    for n, ((B, A),) in factors.items():
        torch.testing.assert_close(result.delta(n), B @ A, rtol=1e-5, atol=1e-6)


def test_every_registered_method_is_covered_by_the_suite():
    assert {n.removeprefix("knots-") for n in METHODS} == set(IDENTITY_CONFIG)


def test_unknown_method_lists_known_names():
    with pytest.raises(KeyError, match="unknown merge method 'tiez'; known methods: .*knots-ties"):
        get_method("tiez")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"topk": 0}, "'topk' parameter of MergeConfig must be a percentage"),
        ({"drop_rate": 1.0}, "'drop_rate' parameter"),
        ({"topk_scope": "layer"}, "'topk_scope' parameter"),
        ({"scale": float("nan")}, "'scale' parameter"),
    ],
)
def test_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MergeConfig(**kwargs)
