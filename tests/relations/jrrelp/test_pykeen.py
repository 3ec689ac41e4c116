"""PyKEEN interop, checked against the real library (a test-only dependency).

- TripleSet <-> TriplesFactory round trips keep ids, labels and triples (a labeled array, PyKEEN's own Nations
  data set, and a slice of WN18RR when ../shared/data has it).
- knotwork's filtered ranks equal PyKEEN's ``RankBasedEvaluator`` (realistic ranks, filtered against every
  known triple) on the same scores: random scores full of ties, and a tiny trained ConvE's scores. PyKEEN's own
  ``Evaluator.evaluate`` runs its filtering and ranking on a stub model that returns those scores.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from torch import nn

from knotwork._errors import JrrelpError
from knotwork.relations.jrrelp.linkpred import (
    ConvEConfig,
    TripleSet,
    evaluate_link_prediction,
    index_triples,
    link_prediction_ranks,
    train_conve,
)
from knotwork.relations.jrrelp.pykeen import kg_from_triples_factory, to_triples_factory

from ...conftest import require_shared

pykeen_triples = pytest.importorskip("pykeen.triples")
TriplesFactory = pykeen_triples.TriplesFactory

LABELED = np.array([["ann", "knows", "bob"], ["bob", "knows", "cy"], ["cy", "likes", "ann"], ["dee", "likes", "bob"],
                    ["ann", "likes", "cy"]])


def _same_factory(a, b):
    assert dict(a.entity_to_id) == dict(b.entity_to_id) and dict(a.relation_to_id) == dict(b.relation_to_id)
    assert torch.equal(a.mapped_triples, b.mapped_triples)


def _decoded(kg: TripleSet, split: str) -> list[tuple[str, str, str]]:
    return [(kg.entities[h], kg.relations[r], kg.entities[t]) for h, r, t in getattr(kg, split).tolist()]


def test_round_trip_of_a_labeled_array():
    tf = TriplesFactory.from_labeled_triples(LABELED)
    kg = kg_from_triples_factory(tf)
    # Ids: PyKEEN's labels in id order; triples: the same labeled triples (PyKEEN may reorder them).
    assert kg.entities == ("ann", "bob", "cy", "dee") and kg.relations == ("knows", "likes")
    assert sorted(_decoded(kg, "train")) == sorted(map(tuple, LABELED.tolist()))
    assert len(kg.valid) == len(kg.test) == 0
    _same_factory(to_triples_factory(kg), tf)
    # knotwork's own indexing of the same triples gives the same ids (both sort labels).
    own = index_triples([tuple(t) for t in LABELED.tolist()])
    assert (own.entities, own.relations) == (kg.entities, kg.relations)
    back = kg_from_triples_factory(to_triples_factory(own))
    assert (back.entities, back.relations) == (own.entities, own.relations) and torch.equal(back.train, own.train)


def test_round_trip_of_pykeens_nations_with_its_three_splits():
    from pykeen.datasets import Nations

    ds = Nations()
    kg = kg_from_triples_factory(ds)
    assert (kg.n_entities, kg.n_relations, len(kg.train), len(kg.valid), len(kg.test)) == (14, 55, 1592, 199, 201)
    for split, factory in (("train", ds.training), ("valid", ds.validation), ("test", ds.testing)):
        _same_factory(to_triples_factory(kg, split), factory)
    assert to_triples_factory(kg, create_inverse_triples=True).num_relations == 110


def test_round_trip_of_a_wn18rr_slice():
    folder = require_shared("kg", "wn18rr")
    from knotwork.relations.jrrelp.io import load_triples

    train = np.array(load_triples(folder / "train.txt")[:2000])
    tf = TriplesFactory.from_labeled_triples(train)
    valid_rows = [t for t in load_triples(folder / "valid.txt") if t[0] in tf.entity_to_id
                  and t[2] in tf.entity_to_id and t[1] in tf.relation_to_id][:50]
    assert valid_rows, "no valid triple falls inside the slice"
    valid = TriplesFactory.from_labeled_triples(np.array(valid_rows), entity_to_id=tf.entity_to_id,
                                                relation_to_id=tf.relation_to_id)
    kg = kg_from_triples_factory(tf, valid)
    assert sorted(_decoded(kg, "train")) == sorted(map(tuple, train.tolist()))
    assert sorted(_decoded(kg, "valid")) == sorted(valid_rows)
    _same_factory(to_triples_factory(kg), tf)
    _same_factory(to_triples_factory(kg, "valid"), valid)


def test_refusals():
    tf = TriplesFactory.from_labeled_triples(LABELED)
    other = TriplesFactory.from_labeled_triples(LABELED[:3])
    with pytest.raises(JrrelpError, match="the valid TriplesFactory does not share the training factory's"):
        kg_from_triples_factory(tf, other)
    gappy = TriplesFactory(tf.mapped_triples, {**tf.entity_to_id, "dee": 7}, tf.relation_to_id)  # ids 3-6 unlabeled
    with pytest.raises(JrrelpError, match=r"entity ids are not 0..7 with one label each"):
        kg_from_triples_factory(gappy)
    with pytest.raises(JrrelpError, match="split must be one of"):
        to_triples_factory(kg_from_triples_factory(tf), "dev")
    # An id-only factory gets the ids as labels.
    core = pykeen_triples.CoreTriplesFactory(tf.mapped_triples, num_entities=4, num_relations=2)
    assert kg_from_triples_factory(core).entities == ("0", "1", "2", "3")


def test_a_clear_error_without_pykeen(monkeypatch):
    monkeypatch.setitem(sys.modules, "pykeen", None)
    monkeypatch.setitem(sys.modules, "pykeen.triples", None)
    kg = index_triples([("a", "r", "b")])
    with pytest.raises(ImportError, match=r"^PyKEEN interop needs pykeen, which is not installed \(pip install"):
        to_triples_factory(kg)


# ------------------------------------------------------------------------------ ranks vs PyKEEN's evaluator


class TableModel(nn.Module):
    """knotwork's side: ``model(heads, relations)`` reads a fixed (entity, relation with inverses, entity) table."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = nn.Parameter(table, requires_grad=False)

    def forward(self, heads, relations):
        return self.table[heads, relations]


class PyKEENStub(nn.Module):
    """PyKEEN's side: the ``Model.predict`` interface over a knotwork scorer (heads via inverse relations)."""

    def __init__(self, scorer: nn.Module, n_entities: int, n_relations: int) -> None:
        super().__init__()
        self.scorer, self.num_entities, self.num_relations = scorer, n_entities, n_relations

    @property
    def device(self):
        return torch.device("cpu")

    def predict(self, hrt_batch, target, slice_size=None, mode=None):
        h, r, t = hrt_batch.T
        if target == "tail":
            return self.scorer(h, r).clone()
        assert target == "head"
        return self.scorer(t, r + self.num_relations).clone()


def _pykeen_ranks(scorer, triples: TripleSet, split: str):
    from pykeen.evaluation import RankBasedEvaluator

    others = [getattr(triples, s) for s in ("train", "valid", "test") if s != split]
    evaluator = RankBasedEvaluator(filtered=True, clear_on_finalize=False)
    result = evaluator.evaluate(PyKEENStub(scorer, triples.n_entities, triples.n_relations), getattr(triples, split),
                                batch_size=7, additional_filter_triples=others, use_tqdm=False)
    per_side = {side: np.concatenate(evaluator.ranks[side, "realistic"]) for side in ("tail", "head")}
    return result, np.concatenate([per_side["tail"], per_side["head"]])


def _assert_equal_to_pykeen(scorer, triples: TripleSet, split: str = "test"):
    ranks, _ = link_prediction_ranks(scorer, triples, split, batch_size=5)
    result, expected = _pykeen_ranks(scorer, triples, split)
    np.testing.assert_array_equal(ranks.numpy(), expected)
    ours = evaluate_link_prediction(scorer, triples, split)
    assert ours["mrr"] == pytest.approx(result.get_metric("both.realistic.inverse_harmonic_mean_rank"), rel=1e-6)
    assert ours["mr"] == pytest.approx(result.get_metric("both.realistic.arithmetic_mean_rank"), rel=1e-6)
    for k in (1, 3, 10):
        assert ours[f"hits@{k}"] == pytest.approx(result.get_metric(f"both.realistic.hits_at_{k}"), rel=1e-6)
    return ranks


def _random_graph(seed: int, n_entities: int = 30, n_relations: int = 3, n: int = 120) -> TripleSet:
    rng = np.random.default_rng(seed)
    rows = {tuple(x) for x in zip(rng.integers(n_entities, size=n), rng.integers(n_relations, size=n),
                                  rng.integers(n_entities, size=n), strict=True)}
    rows = torch.tensor(sorted(rows))
    rows = rows[torch.as_tensor(rng.permutation(len(rows)))]
    names = tuple(f"e{i:02d}" for i in range(n_entities))
    rels = tuple(f"r{i}" for i in range(n_relations))
    return TripleSet(names, rels, rows[:80], rows[80:95], rows[95:])


@pytest.mark.parametrize("seed", [0, 1])
def test_ranks_with_ties_equal_pykeens_evaluator(seed):
    triples = _random_graph(seed)
    # Scores from {0, 1, 2, 3}: most true entities tie with several filtered and unfiltered candidates.
    g = torch.Generator().manual_seed(seed)
    table = torch.randint(0, 4, (triples.n_entities, 2 * triples.n_relations, triples.n_entities), generator=g)
    ranks = _assert_equal_to_pykeen(TableModel(table.float()), triples, "test")
    assert (ranks != ranks.round()).any(), "no half rank: the scores made no tie with a true entity"
    _assert_equal_to_pykeen(TableModel(table.float()), triples, "valid")


def test_ranks_of_a_trained_conve_equal_pykeens_evaluator():
    triples = _random_graph(2)
    model, _ = train_conve(triples, ConvEConfig(dim=20, width=5, channels=4, epochs=3, batch_size=16))
    _assert_equal_to_pykeen(model, triples, "test")
