"""The paper's coordinate search: order, stop at the first non-improvement, >= vs > on ties; and the search as a
feature (knotwork.lora.search_merge): the same choice as a brute-force evaluation of the grid, one alignment."""

from __future__ import annotations

import json

import pytest
import torch

from knotwork.lora.evaluate import TaskEvaluator
from knotwork.lora.search import DROP_GRID, SCALE_GRID, TOPK_GRID, coordinate_search, method_grids
from knotwork.lora.tasks import TextSplit, TextTask
from knotwork.merge import METHODS, MergeConfig, merge_modules
from tests.lora.conftest import load_minilm_tokenizer, make_tiny_bert


def test_grids_are_the_papers():
    assert SCALE_GRID == (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    assert TOPK_GRID[0] == 10.0 and TOPK_GRID[-1] == 100.0 and len(TOPK_GRID) == 10
    assert DROP_GRID == (0.99, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1)


def test_stops_at_first_non_improvement_even_if_a_later_value_is_better():
    table = {0.1: 1.0, 0.2: 2.0, 0.3: 1.5, 0.4: 9.0}  # greedy walk never reaches 0.4
    res = coordinate_search(lambda p: table[p["scale"]], [("scale", (0.1, 0.2, 0.3, 0.4))], {"scale": 1.0})
    assert res.params == {"scale": 0.2} and res.score == 2.0
    assert [p["scale"] for p, _ in res.trace] == [0.1, 0.2, 0.3]


def test_second_coordinate_uses_first_choice_and_defaults():
    calls = []

    def f(p):
        calls.append(dict(p))
        return -(p["scale"] - 0.3) ** 2 - (p["topk"] - 30) ** 2 / 1e4

    res = coordinate_search(f, [("scale", SCALE_GRID), ("topk", TOPK_GRID)], {"scale": 1.0, "topk": 20.0, "x": 1})
    assert res.params == {"scale": 0.3, "topk": 30.0, "x": 1}
    assert all(c["topk"] == 20.0 for c in calls[:4])      # λ walk with the default top-K
    assert all(c["scale"] == 0.3 for c in calls[4:])      # top-K walk with the chosen λ
    assert res.walks == ["scale"] * 4 + ["topk"] * (len(calls) - 4)


def test_ties_continue_with_ge_and_stop_with_gt():
    f = lambda p: 1.0  # noqa: E731 - flat objective
    ge = coordinate_search(f, [("scale", (0.1, 0.2, 0.3))], {"scale": 1.0}, ties_improve=True)
    gt = coordinate_search(f, [("scale", (0.1, 0.2, 0.3))], {"scale": 1.0}, ties_improve=False)
    assert ge.params["scale"] == 0.3 and len(ge.trace) == 3
    assert gt.params["scale"] == 0.1 and len(gt.trace) == 2


def test_method_grids_follow_the_paper():
    from knotwork.lora.search import check_grid

    assert method_grids("ta") == ([("scale", SCALE_GRID)], {"scale": 1.0})
    assert method_grids("knots-ties") == ([("scale", SCALE_GRID), ("topk", TOPK_GRID)], {"scale": 1.0, "topk": 20.0})
    assert method_grids("dare-ties") == ([("scale", SCALE_GRID), ("drop_rate", DROP_GRID)],
                                         {"scale": 1.0, "drop_rate": 0.1, "topk": 100.0})
    assert method_grids("knots-dare", {"scale": (0.5,), "topk": (1.0,)}) == (
        [("scale", (0.5,)), ("drop_rate", DROP_GRID)], {"scale": 1.0, "drop_rate": 0.1})
    with pytest.raises(ValueError, match="unknown merge method 'x'"):
        method_grids("x")
    assert check_grid("topk", [10, 100]) == (10.0, 100.0)
    with pytest.raises(ValueError, match=r"--topk-grid: item 2 must be a percentage in \(0, 100\]; got 0"):
        check_grid("topk", [10, 0], label="--topk-grid")


def test_empty_grid_is_rejected():
    with pytest.raises(ValueError, match="grid of parameter 'topk' is empty"):
        coordinate_search(lambda p: 0.0, [("scale", (0.1,)), ("topk", ())], {})


# ------------------------------------------------------------------ the search as a feature: align once, brute force

# The tiny BERT of tests/lora/conftest.py: 2 layers, 32 wide.
MODULES = tuple(f"encoder.layer.{layer}.attention.self.{p}" for layer in (0, 1) for p in ("query", "value"))
TEMPLATES = {
    "s": (("negative", "positive", "objective"),
          ("the film was awful and dull {i}", "a great and moving story {i}", "the film runs {i} minutes")),
    "q": (("location", "human", "number"),
          ("where is the old city {i} ?", "who wrote the book {i} ?", "how many items are in box {i} ?")),
}
GRIDS = {"scale": (0.2, 0.6, 1.0), "topk": (20.0, 60.0, 100.0), "drop_rate": (0.5, 0.1)}


def task_rows(name: str, n: int = 12) -> tuple[tuple[str, ...], list[tuple[str, int]]]:
    """A task's label names and `n` examples per label, labels interleaved (so any prefix is balanced)."""
    labels, templates = TEMPLATES[name]
    return labels, [(t.format(i=i), y) for i in range(n) for y, t in enumerate(templates)]


def text_tasks(n: int = 12) -> list[TextTask]:
    out = []
    for name in TEMPLATES:
        labels, rows = task_rows(name, n)
        out.append(TextTask(name, labels, {"val": TextSplit(tuple(t for t, _ in rows), tuple(y for _, y in rows))}))
    return out


def random_factors(n_tasks: int = 2, r: int = 4, d: int = 32, seed: int = 0, std: float = 0.35):
    """``{module: [(B_i, A_i), ...]}`` for the tiny BERT's query/value modules."""
    g = torch.Generator().manual_seed(seed)
    return {m: [(std * torch.randn(d, r, generator=g), std * torch.randn(r, d, generator=g)) for _ in range(n_tasks)]
            for m in MODULES}


def walk_choice(scores: list[float], ge: bool) -> int:
    """The paper's rule on one walk, by hand: keep going while the next score improves on the previous one."""
    best = 0
    while best + 1 < len(scores) and (scores[best + 1] >= scores[best] if ge else scores[best + 1] > scores[best]):
        best += 1
    return best


def brute_force(factors, evaluator, method, criterion, grids, seed=0):
    """Every point of the full grid, merged by the streaming engine (``knotwork merge``'s code) and scored directly;
    then the coordinate rule applied by hand. Returns (chosen params, chosen score, {params key: score})."""
    order, defaults = method_grids(method, grids)
    if "dare" in method:
        defaults["seed"] = seed
    names = [t.name for t in evaluator.tasks]
    finetuned = {}
    for i, t in enumerate(names):  # adapter i on all tasks; keep its own task's accuracy
        res = evaluator.evaluate({m: p[i][0] @ p[i][1] for m, p in factors.items()})
        finetuned[t] = res.accuracy[t]

    def score(params):
        res = evaluator.evaluate(merge_modules(factors, method=method, config=MergeConfig(**params)).deltas)
        if criterion == "pertask":
            return sum(res.accuracy[t] / finetuned[t] for t in names) / len(names)
        return res.joint_hits[3]

    (p1, g1), rest = order[0], order[1:]
    g2 = rest[0][1] if rest else (None,)
    table = {}
    for v1 in g1:
        for v2 in g2:
            params = {**defaults, p1: v1, **({rest[0][0]: v2} if rest else {})}
            table[json.dumps(sorted(params.items()))] = score(params)
    key = lambda **kw: json.dumps(sorted({**defaults, **kw}.items()))  # noqa: E731
    ge = criterion == "pertask"
    v1 = g1[walk_choice([table[key(**{p1: v})] for v in g1], ge)]
    chosen = {**defaults, p1: v1}
    if rest:
        p2 = rest[0][0]
        walk = [table[key(**{p1: v1, p2: v})] for v in g2]
        chosen[p2] = g2[walk_choice(walk, ge)]
    return chosen, table[key(**chosen)], table


@pytest.fixture(scope="module")
def evaluator():
    return TaskEvaluator(make_tiny_bert(), load_minilm_tokenizer(), text_tasks(), split="val", max_length=16)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_prepared_merge_equals_the_merge_engine(name):
    from knotwork.lora.search_merge import prepare_merge

    factors = random_factors(n_tasks=3, seed=1)
    prepared = prepare_merge(factors, name)
    for params in ({"scale": 0.6, "topk": 20.0}, {"scale": 0.3, "drop_rate": 0.4, "seed": 3}):
        config = MergeConfig(**params)
        want = merge_modules(factors, method=name, config=config).deltas
        got = prepared.deltas(config)
        for m in MODULES:
            torch.testing.assert_close(got[m], want[m], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("method", "criterion"), [("knots-ties", "pertask"), ("ties", "joint"),
                                                   ("knots-dare-ties", "pertask")])
def test_search_finds_the_brute_force_choice(evaluator, method, criterion):
    from knotwork.lora.search_merge import search_merge

    factors = random_factors()
    want, want_score, table = brute_force(factors, evaluator, method, criterion, GRIDS)
    assert len(set(table.values())) > 1  # the scores vary over the grid, so the choice is not trivial
    found = search_merge(factors, evaluator, method, criterion=criterion, grids=GRIDS)
    assert found.params == want
    assert found.score == pytest.approx(want_score)
    for p in found.points:  # every point tried has the score the brute force measured there
        assert p.score == pytest.approx(table[json.dumps(sorted(p.params.items()))])
    assert found.evaluations == len({json.dumps(sorted(p.params.items())) for p in found.points})


def count_alignments(monkeypatch) -> list[int]:
    """Record every KnOTS alignment (its number of tasks), in the search and in the merge engine alike."""
    import knotwork.lora.search_merge as sm
    import knotwork.merge.stream as stream

    calls: list[int] = []
    real = sm.knots_align

    def counting(pairs, **kw):
        calls.append(len(pairs))
        return real(pairs, **kw)

    monkeypatch.setattr(sm, "knots_align", counting)
    monkeypatch.setattr(stream, "knots_align", counting)  # the engine would realign at every point
    return calls


def test_alignment_runs_once_per_module_for_the_whole_search(evaluator, monkeypatch):
    import knotwork.lora.search_merge as sm

    calls = count_alignments(monkeypatch)
    found = sm.search_merge(random_factors(), evaluator, "knots-ties", grids=GRIDS)
    found.result()  # the chosen merge reuses it too
    assert found.evaluations >= 3
    assert calls == [2] * len(MODULES)


def test_pertask_refuses_an_adapter_with_zero_accuracy(evaluator):
    from knotwork._errors import MergeError
    from knotwork.lora.search_merge import search_merge

    with pytest.raises(MergeError, match=r"task 'q': its adapter scores 0 accuracy"):
        search_merge(random_factors(), evaluator, "ta", finetuned={"s": 0.5, "q": 0.0}, grids=GRIDS)
    with pytest.raises(MergeError, match=r"3 adapters for 2 tasks"):
        search_merge(random_factors(n_tasks=3), evaluator, "ta", grids=GRIDS)
