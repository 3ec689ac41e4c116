"""KG targets stay aligned with their RE examples through shuffling and length bucketing."""

from __future__ import annotations

import numpy as np
import pytest

from knotwork.relations.jrrelp import TrainConfig, bucket_batches, build_model, iterate_batches

from .helpers import TABLE, synthetic_examples


def test_bucket_batches_cover_every_index_once_and_group_lengths():
    lengths = [5, 1, 9, 3, 3, 7, 2, 8, 6, 4]
    batches = bucket_batches(lengths, 3, rng=np.random.default_rng(0))
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(len(lengths)))
    # Batches are contiguous runs of the length-sorted order, whatever their order.
    spans = sorted((min(lengths[i] for i in b), max(lengths[i] for i in b)) for b in batches)
    assert all(spans[k][1] <= spans[k + 1][0] for k in range(len(spans) - 1))
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        bucket_batches(lengths, 0)


def test_targets_follow_their_examples_through_shuffled_buckets():
    examples = synthetic_examples(60, seed=3)
    model, feat, kg = build_model(examples, TrainConfig(vocab_min_count=1, embedding_dim=20, hidden_dim=20,
                                                        conve_width=5))
    feats = [feat(ex) for ex in examples]
    subjects, labels = kg.example_queries(examples)
    # Independent oracle: the object types each example's relation allows, straight from the generator's table.
    seen: dict[tuple[str, str], set[str]] = {}
    for ex in examples:
        seen.setdefault((ex.subj_type, ex.relation), set()).add(ex.obj_type)
    orders = []
    for seed in (0, 1):
        rows = 0
        order = []
        for batch in iterate_batches(feats, labels, feat.collate, batch_size=7, rng=np.random.default_rng(seed),
                                     kg=kg, subject_nodes=subjects):
            for row, i in enumerate(batch.indices):
                ex = examples[int(i)]
                assert batch.labels[row].item() == kg.relation_id(ex.relation)
                assert kg.subjects[batch.subject_nodes[row]] == ex.subj_type
                hot = {kg.objects[j] for j in np.flatnonzero(batch.targets[row].numpy())}
                assert hot == seen[(ex.subj_type, ex.relation)]
                assert hot <= set(TABLE[ex.relation][1])
                n = len(ex.tokens)
                assert batch.inputs["mask"][row].sum().item() == n  # the RE input row is this example too
            rows += len(batch.indices)
            order.extend(batch.indices.tolist())
        assert rows == len(examples)
        orders.append(order)
    assert orders[0] != orders[1]  # the shuffle really changed the order
