"""Hits@k, accuracy, normalized accuracy and sample-weighted joint Hits@k on hand-made cases."""

from __future__ import annotations

import pytest
import torch

from knotwork.lora.evaluate import EvalResult, accuracy, hits_at_k, score_embeddings
from knotwork.lora.tasks import TextTask, build_joint_labels


def test_hits_at_k_hand_worked():
    scores = torch.tensor([[0.9, 0.1, 0.5, 0.3],   # gold 2: one class higher -> rank 1
                           [0.2, 0.3, 0.1, 0.0],   # gold 0: one higher -> rank 1
                           [0.1, 0.2, 0.3, 0.4],   # gold 0: three higher -> rank 3
                           [0.5, 0.1, 0.1, 0.1]])  # gold 0: rank 0
    gold = torch.tensor([2, 0, 0, 0])
    assert hits_at_k(scores, gold, ks=(1, 2, 3, 4)) == {1: 1, 2: 3, 3: 3, 4: 4}
    assert accuracy(scores, gold) == pytest.approx(0.25)


def test_hits_at_k_matches_argsort_reference():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(50, 7, generator=g)
    gold = torch.randint(0, 7, (50,), generator=g)
    order = scores.argsort(dim=1, descending=True)
    for k in (1, 3, 5):
        ref = sum(int(gold[i] in order[i, :k]) for i in range(50))
        assert hits_at_k(scores, gold, ks=(k,))[k] == ref


def test_hits_at_k_rejects_bad_shapes_and_ids():
    with pytest.raises(ValueError, match=r"scores \(n, C\) and gold \(n,\)"):
        hits_at_k(torch.zeros(3, 2), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"gold ids must be in 0..1"):
        hits_at_k(torch.zeros(2, 2), torch.tensor([0, 2]))


def test_joint_hits_are_sample_weighted_hand_worked():
    # Joint classes (2-d unit vectors): 0 = neg (1,0), 1 = pos (0,1), 2 = num (-1,0).
    a = TextTask("a", ("negative", "positive"))
    b = TextTask("b", ("negative", "number"))
    joint = build_joint_labels([a, b])
    assert joint.local_to_joint == {"a": (0, 1), "b": (0, 2)}
    jh = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    heads = {"a": jh[[0, 1]], "b": jh[[0, 2]]}
    s = 2 ** -0.5
    emb = {"a": torch.tensor([[1.0, 0.0], [s, s], [0.0, 1.0]]),      # gold neg, pos, pos
           "b": torch.tensor([[0.0, 1.0]])}                           # gold num (local 1)
    gold = {"a": torch.tensor([0, 1, 1]), "b": torch.tensor([1])}
    r = score_embeddings(emb, gold, heads, joint=joint, joint_head=jh, ks=(1, 2))
    # Task a: row 2 ties neg/pos (0.707 each) -> counted as correct (no class strictly higher): acc 3/3.
    # Task b: (0,1) scores neg 0, num 0 -> tie -> correct: acc 1/1.
    assert r.accuracy == {"a": 1.0, "b": 1.0}
    # Joint: a rows -> ranks 0, 0, 0; b row (gold num): pos scores 1 > num 0, neg 0 ties -> rank 1.
    # Hits@1 = 3/4 (sample-weighted, not the mean of per-task 1.0 and 0.0), Hits@2 = 4/4.
    assert r.joint_hits == {1: 0.75, 2: 1.0}
    assert r.n == {"a": 3, "b": 1}


def test_normalized_accuracy():
    r = EvalResult({"a": 0.45, "b": 0.8})
    assert r.normalized({"a": 0.9, "b": 0.8}) == pytest.approx({"a": 0.5, "b": 1.0})
    assert r.avg_normalized({"a": 0.9, "b": 0.8}) == pytest.approx(0.75)
    with pytest.raises(KeyError, match=r"No fine-tuned accuracy for task\(s\) \['b'\]"):
        r.normalized({"a": 0.9})
