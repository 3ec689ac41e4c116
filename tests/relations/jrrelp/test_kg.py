"""The relation KG: multi-hot targets against a hand-built table, node keys, options and errors."""

from __future__ import annotations

import pytest
import torch

from knotwork.relations import RelationExample
from knotwork.relations.jrrelp import UNKNOWN_NODE, build_kg


def ex(i, rel, st, ot, **extra):
    return RelationExample(str(i), ("a", "b", "c"), rel, 0, 0, 2, 2, st, ot, extra=extra)


EXAMPLES = [
    ex(1, "per:employee_of", "PERSON", "ORGANIZATION"),
    ex(2, "per:employee_of", "PERSON", "GPE"),
    ex(3, "org:founded_by", "ORGANIZATION", "PERSON"),
    ex(4, "no_relation", "PERSON", "PERSON"),
    ex(5, "per:employee_of", "PERSON", "ORGANIZATION"),
]


def test_multi_hot_targets_equal_hand_built_table():
    kg = build_kg(EXAMPLES)
    assert kg.relations == ("no_relation", "org:founded_by", "per:employee_of")
    assert kg.subjects == (UNKNOWN_NODE, "ORGANIZATION", "PERSON")
    assert kg.objects == (UNKNOWN_NODE, "GPE", "ORGANIZATION", "PERSON")
    # Worked by hand: (PERSON, employee_of) -> {GPE, ORGANIZATION}; (ORG, founded_by) -> {PERSON};
    # (PERSON, no_relation) -> {PERSON}; everything else is empty.
    expected = {
        ("PERSON", "per:employee_of"): [0, 1, 1, 0],
        ("ORGANIZATION", "org:founded_by"): [0, 0, 0, 1],
        ("PERSON", "no_relation"): [0, 0, 0, 1],
        ("ORGANIZATION", "per:employee_of"): [0, 0, 0, 0],
    }
    subj = [kg.subject_id(s) for s, _ in expected]
    rel = [kg.relation_id(r) for _, r in expected]
    got = kg.targets(subj, rel)
    assert got.tolist() == [[float(v) for v in row] for row in expected.values()]


def test_negative_policy_and_label_smoothing():
    kg = build_kg(EXAMPLES)
    neg = kg.relation_id("no_relation")
    s = kg.subject_id("PERSON")
    ones = kg.targets([s], [neg], negative_relation=neg, negative_policy="all_ones")
    assert ones.tolist() == [[1.0, 1.0, 1.0, 1.0]]
    smooth = kg.targets([s], [kg.relation_id("per:employee_of")], label_smoothing=0.1)
    assert torch.allclose(smooth, torch.tensor([[0.25, 0.9 + 0.25, 0.9 + 0.25, 0.25]]))


def test_head_word_nodes_and_min_count():
    data = [
        ex(1, "r", "ENTITY", "ENTITY", subj_head="cup", obj_head="tea"),
        ex(2, "r", "ENTITY", "ENTITY", subj_head="cup", obj_head="tea"),
        ex(3, "r", "ENTITY", "ENTITY", subj_head="box", obj_head="ink"),
    ]
    kg = build_kg(data, node_key="head", min_count=2)
    assert kg.subjects == (UNKNOWN_NODE, "cup") and kg.objects == (UNKNOWN_NODE, "tea")
    # "box" -> "ink" was seen once, so both ends collapse into the unknown node.
    assert dict(kg.edges) == {(1, 0): frozenset({1}), (0, 0): frozenset({0})}
    assert kg.subject_id("never-seen") == 0


def test_head_falls_back_to_last_span_token():
    data = [RelationExample("1", ("The", "Big", "Cup", "of", "Tea"), "r", 0, 2, 4, 4, "E", "E")]
    kg = build_kg(data, node_key="head")
    assert kg.subjects[1:] == ("cup",) and kg.objects[1:] == ("tea",)


def test_errors_name_the_bad_item():
    with pytest.raises(KeyError, match="example 1: node_key 'lemma' needs field 'subj_lemma'"):
        build_kg([ex(1, "r", "A", "B")], node_key="lemma")
    with pytest.raises(KeyError, match="example 3: relation 'org:founded_by' is not in the given relations"):
        build_kg(EXAMPLES, relations=["no_relation", "per:employee_of"])
    with pytest.raises(ValueError, match="negative_policy must be one of"):
        build_kg(EXAMPLES).targets([1], [0], negative_policy="exclude")
    with pytest.raises(ValueError, match="at least one training example"):
        build_kg([])


def test_round_trip_through_dict():
    kg = build_kg(EXAMPLES)
    from knotwork.relations.jrrelp.kg import RelationKG

    assert RelationKG.from_dict(kg.to_dict()) == kg


def test_node_report_counts_nodes_and_unknown_shares():
    train = [
        ex(1, "r", "E", "E", subj_head="cup", obj_head="tea"),
        ex(2, "r", "E", "E", subj_head="cup", obj_head="tea"),
        ex(3, "r", "E", "E", subj_head="box", obj_head="ink"),
    ]
    test = [
        ex(4, "r", "E", "E", subj_head="cup", obj_head="ink"),  # ink was seen once: <unk> with min_count 2
        ex(5, "r", "E", "E", subj_head="jar", obj_head="tea"),  # jar never seen
        ex(6, "r", "E", "E", subj_head="cup", obj_head="tea"),
        ex(7, "r", "E", "E", subj_head="pot", obj_head="gin"),
    ]
    kg = build_kg(train, node_key="head", min_count=2)
    report = kg.node_report({"train": train, "test": test})
    # By hand: nodes cup | tea; train: box and ink fall to <unk> once of 3; test: subj jar, pot (2 of 4),
    # obj ink, gin (2 of 4).
    assert report == {"subjects": 1, "objects": 1, "node_key": "head",
                      "train": {"examples": 3, "subj_unk": 1 / 3, "obj_unk": 1 / 3},
                      "test": {"examples": 4, "subj_unk": 0.5, "obj_unk": 0.5}}
    typed = build_kg(EXAMPLES).node_report({"train": EXAMPLES})
    assert (typed["subjects"], typed["objects"], typed["train"]["subj_unk"]) == (2, 3, 0.0)
