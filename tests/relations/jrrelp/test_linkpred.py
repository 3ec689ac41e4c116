"""ConvE trained alone: it fits a tiny graph, and its evaluation matches a brute-force filtered ranking."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from knotwork.relations.jrrelp.io import load_triples
from knotwork.relations.jrrelp.linkpred import (
    ConvEConfig,
    evaluate_link_prediction,
    index_triples,
    train_conve,
    with_inverses,
)

# A tiny graph: "parent" edges of a binary tree over 15 nodes, and their "child" mirror.
TRAIN = [(f"n{i}", "parent", f"n{(i - 1) // 2}") for i in range(1, 15)] + [
    (f"n{(i - 1) // 2}", "child", f"n{i}") for i in range(1, 15)
]
TEST = [("n3", "parent", "n1"), ("n1", "child", "n4")]


def test_evaluation_matches_brute_force_filtered_ranking():
    triples = index_triples(TRAIN, [], TEST)
    torch.manual_seed(0)
    model, _ = train_conve(triples, ConvEConfig(dim=20, width=5, channels=4, epochs=2, batch_size=8))
    got = evaluate_link_prediction(model, triples, "test")
    # Brute force: for each test triple and each side, count unfiltered competitors scoring higher (ties half).
    known = {tuple(t) for t in with_inverses(torch.cat([triples.train, triples.test]), triples.n_relations).tolist()}
    ranks = []
    with torch.no_grad():
        for h, r, t in with_inverses(triples.test, triples.n_relations).tolist():
            s = model(torch.tensor([h]), torch.tensor([r]))[0].tolist()
            comp = [e for e in range(triples.n_entities) if e != t and (h, r, e) not in known]
            ranks.append(1 + sum(s[e] > s[t] for e in comp) + 0.5 * sum(s[e] == s[t] for e in comp))
    assert got["mrr"] == pytest.approx(float(np.mean([1 / x for x in ranks])))
    assert got["hits@10"] == pytest.approx(float(np.mean([x <= 10 for x in ranks])))
    assert got["n_triples"] == 2


def test_conve_fits_a_tiny_graph():
    triples = index_triples(TRAIN, [], TEST)
    model, hist = train_conve(triples, ConvEConfig(dim=20, width=5, channels=4, epochs=40, batch_size=8,
                                                   label_smoothing=0.0, seed=0))
    assert hist[-1]["loss"] < hist[0]["loss"]
    # Ranking the *training* triples: a model that learned them puts them near the top (random MRR ~ 0.2).
    fitted = type(triples)(triples.entities, triples.relations, triples.train, triples.train[:0], triples.train)
    assert evaluate_link_prediction(model, fitted, "test")["mrr"] > 0.6


def test_max_steps_stops_inside_an_epoch():
    triples = index_triples(TRAIN)
    _, hist = train_conve(triples, ConvEConfig(dim=20, width=5, channels=4, epochs=5, batch_size=4, max_steps=3))
    assert [h["batches"] for h in hist] == [3]


def test_load_triples_names_the_bad_line(tmp_path):
    f = tmp_path / "train.txt"
    f.write_text("a\tr\tb\nbroken line\n")
    with pytest.raises(ValueError, match=r"train.txt:2: expected 'head<TAB>relation<TAB>tail'"):
        load_triples(f)


def test_progress_callback_and_config_checks():
    from knotwork._errors import JrrelpError

    seen = []
    _, hist = train_conve(index_triples(TRAIN), ConvEConfig(dim=20, width=5, channels=4, epochs=2, batch_size=8),
                          progress=seen.append)
    assert sum(seen) == sum(h["batches"] for h in hist) == 2 * 6  # 42 distinct queries with inverses
    with pytest.raises(JrrelpError, match="dim=21 must be a multiple of width=5"):
        ConvEConfig(dim=21, width=5)
    with pytest.raises(JrrelpError, match="smaller than ConvE's 3x3 kernel"):
        ConvEConfig(dim=2, width=2)
    with pytest.raises(JrrelpError, match="lr must be finite"):
        ConvEConfig(lr=float("nan"))


def test_unseen_in_train_names_triples_with_new_entities_or_relations():
    from knotwork.relations.jrrelp.linkpred import unseen_in_train

    split = [("n1", "parent", "n0"), ("x", "parent", "n0"), ("n1", "cousin", "n2"), ("n2", "child", "y")]
    assert unseen_in_train(TRAIN, split) == split[1:]


def test_relation_frequency_baseline_by_hand():
    from knotwork.relations.jrrelp.linkpred import RelationFrequency

    train = [("a", "r", "b"), ("c", "r", "b"), ("a", "r", "d")]
    triples = index_triples(train, [], [("a", "r", "c")])
    got = evaluate_link_prediction(RelationFrequency(triples), triples, "test")
    # Tail side (a, r, ?): tails of r counted b 2, d 1, a 0, c 0; b and d are known tails of (a, r) and filtered;
    # the true c (0) ties with a (0): rank 1.5. Head side (c, r^-1, ?): heads of r counted a 2, c 1; the true a is
    # first: rank 1. MRR = (1/1.5 + 1) / 2.
    assert got["mrr"] == pytest.approx((1 / 1.5 + 1) / 2)
    assert got["hits@1"] == pytest.approx(0.5)
    assert not any(p.requires_grad for p in RelationFrequency(triples).parameters())


def test_train_conve_steps_a_given_optimizer():
    triples = index_triples(TRAIN)
    config = ConvEConfig(dim=20, width=5, channels=4, epochs=1, batch_size=8, seed=3)
    torch.manual_seed(0)
    from knotwork.relations.jrrelp.linkpred import ConvE

    model = ConvE.from_config(triples.n_entities, 2 * triples.n_relations, config)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    train_conve(triples, config, model=model, optimizer=opt)
    assert all(s["step"] == 6 for s in opt.state.values())  # 42 queries in batches of 8: Adam's state advanced
