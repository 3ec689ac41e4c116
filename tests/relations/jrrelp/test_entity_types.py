"""Head-word typing by k-means: sklearn's partition on separated blobs, hand-made words, masking by the new types."""

from __future__ import annotations

import numpy as np
import pytest

from knotwork._errors import JrrelpError
from knotwork.relations import RelationExample
from knotwork.relations.jrrelp.entity_types import cluster_types, kmeans, retype, type_members
from knotwork.relations.jrrelp.features import PALSTMFeaturizer, build_vocab, entity_token
from knotwork.relations.jrrelp.kg import build_kg


def _blobs(seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0, 5.0], [5.0, 0.0, 0.0], [0.0, 5.0, 0.0], [5.0, 5.0, 5.0]])
    labels = np.repeat(np.arange(4), [30, 20, 12, 8])
    return centres[labels] + rng.normal(scale=0.3, size=(len(labels), 3)), labels


def _same_partition(a, b) -> bool:
    pairs = set(zip(a.tolist(), b.tolist(), strict=True))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def test_kmeans_finds_sklearns_partition_and_inertia():
    cluster = pytest.importorskip("sklearn.cluster")
    x, truth = _blobs()
    centres, labels, inertia = kmeans(x, 4, seed=3)
    ref = cluster.KMeans(4, n_init=10, random_state=0).fit(x)
    assert _same_partition(labels, ref.labels_) and _same_partition(labels, truth)
    assert inertia == pytest.approx(ref.inertia_, rel=1e-9)
    # Deterministic for a seed.
    assert np.array_equal(kmeans(x, 4, seed=3)[1], labels)


def test_kmeans_on_overlapping_data_is_no_worse_than_sklearn():
    cluster = pytest.importorskip("sklearn.cluster")
    x = np.random.default_rng(1).normal(size=(200, 5))
    _, _, inertia = kmeans(x, 6, seed=0, n_init=8)
    ref = cluster.KMeans(6, n_init=8, random_state=0).fit(x)
    assert inertia <= ref.inertia_ * 1.02


# Hand-made 2-D "word vectors": containers point along x, people along y.
VECTORS = {"cup": [1.0, 0.1], "jar": [0.9, 0.0], "box": [2.0, 0.3],
           "man": [0.1, 1.0], "woman": [0.0, 0.8],
           "bottle": [3.0, 0.2], "girl": [0.05, 0.5]}  # the last two never occur in training


def test_cluster_types_names_by_size_and_types_unseen_words():
    train_heads = ["cup", "jar", "box", "cup", "man", "woman"]
    types = cluster_types(train_heads, VECTORS, 2, seed=0)
    assert types == {"cup": "C00", "jar": "C00", "box": "C00", "bottle": "C00",
                     "man": "C01", "woman": "C01", "girl": "C01"}
    counts = {"cup": 2, "jar": 1, "box": 1, "man": 1, "woman": 1}
    assert type_members(types, counts, top=2) == {"C00": ["cup", "box"], "C01": ["man", "woman"]}


def test_cluster_types_refusals():
    with pytest.raises(JrrelpError, match="1 training head word\\(s\\) have no vector \\(first: 'dog'\\)"):
        cluster_types(["cup", "dog"], VECTORS, 1)
    with pytest.raises(JrrelpError, match="k=3 types need at least 3 distinct training heads; got 2"):
        cluster_types(["cup", "man", "cup"], VECTORS, 3)


def _ex(i, tokens, s, o, rel="Content-Container"):
    return RelationExample(str(i), tuple(tokens), rel, s, s, o, o, "ENTITY", "ENTITY")


def test_retype_then_mask_and_build_a_type_graph():
    exs = [_ex(1, ["the", "man", "held", "a", "cup"], 1, 4, "Instrument-Agency"),
           _ex(2, ["a", "jar", "of", "jam", "box"], 4, 1)]
    types = {"man": "C01", "cup": "C00", "box": "C00", "jar": "C00"}
    typed = retype(exs, types)
    assert [(e.subj_type, e.obj_type) for e in typed] == [("C01", "C00"), ("C00", "C00")]
    assert typed[0].tokens == exs[0].tokens and typed[0].relation == exs[0].relation
    vocab = build_vocab(typed, min_count=1, entity_masking="type")
    feat = PALSTMFeaturizer(vocab, entity_masking="type")
    words = [vocab.words[i] for i in feat(typed[0])["input_ids"]]
    assert words == ["the", "SUBJ-C01", "held", "a", "OBJ-C00"]
    kg = build_kg(typed)
    assert kg.subjects == ("<unk>", "C00", "C01") and kg.objects == ("<unk>", "C00")
    with pytest.raises(JrrelpError, match="example 2: the subj head word 'box' has no type"):
        retype(exs, {"man": "C01", "cup": "C00", "jar": "C00"})
    assert retype(exs[1:], {}, default="X")[0].subj_type == "X"


def test_untyped_mask_is_subj_and_obj():
    assert entity_token("subj", "") == "SUBJ" and entity_token("obj", None) == "OBJ"
    assert entity_token("obj", "C03") == "OBJ-C03"
