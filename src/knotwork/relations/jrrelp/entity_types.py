"""Coarse entity types for data without NER types: k-means clusters of the entity head words' vectors.

JRRELP's graph has entity *types* as nodes (TACRED: 2 subject and 17 object NER types), and the PA-LSTM masks each
mention by its type (``SUBJ-PERSON``). SemEval-2010 Task 8 has no types. :func:`cluster_types` gives every head
word a type from word vectors the caller supplies (the study uses a sentence encoder applied to each head word
alone): k-means over the distinct training heads, every word typed by its nearest centroid, so a head unseen in
training still gets a type and no example falls to ``<unk>``. :func:`retype` writes the types into examples'
``subj_type``/``obj_type``, after which ``node_key="type"`` and ``entity_masking="type"`` work as on TACRED.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np

from knotwork._errors import JrrelpError
from knotwork.relations.data import RelationExample
from knotwork.relations.jrrelp.kg import head_word


def _sq_distances(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances (N, K), without the (N, K, D) intermediate."""
    d = (x * x).sum(1)[:, None] - 2.0 * x @ centres.T + (centres * centres).sum(1)[None, :]
    return np.maximum(d, 0.0)


def _plus_plus(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding (Arthur and Vassilvitskii 2007): each next centre drawn with probability ∝ D²."""
    centres = [x[rng.integers(len(x))]]
    for _ in range(1, k):
        d = _sq_distances(x, np.stack(centres)).min(1)
        total = d.sum()
        centres.append(x[rng.choice(len(x), p=d / total)] if total > 0 else x[rng.integers(len(x))])
    return np.stack(centres)


def kmeans(
    x: np.ndarray, k: int, *, seed: int = 0, n_init: int = 4, max_iter: int = 300
) -> tuple[np.ndarray, np.ndarray, float]:
    """Lloyd's k-means with k-means++ seeding; the best of ``n_init`` starts (lowest within-cluster sum of squares).

    An empty cluster is moved to the point farthest from its centre. Deterministic for a ``seed``.

    Returns
    -------
    (centres (k, D), labels (N,), inertia)
    """
    x = np.asarray(x, dtype=np.float64)
    if not 1 <= k <= len(x):
        raise JrrelpError(f"k-means needs 1 <= k <= {len(x)} points; got k={k}")
    rng = np.random.default_rng(seed)
    best: tuple[np.ndarray, np.ndarray, float] | None = None
    for _ in range(n_init):
        centres = _plus_plus(x, k, rng)
        labels = np.full(len(x), -1)
        for _ in range(max_iter):
            d = _sq_distances(x, centres)
            new = d.argmin(1)
            if np.array_equal(new, labels):
                break
            labels = new
            for j in range(k):
                members = labels == j
                if members.any():
                    centres[j] = x[members].mean(0)
                else:
                    far = int(d[np.arange(len(x)), labels].argmax())
                    centres[j], labels[far] = x[far], j
        d = _sq_distances(x, centres)
        labels = d.argmin(1)
        inertia = float(d[np.arange(len(x)), labels].sum())
        if best is None or inertia < best[2]:
            best = (centres.copy(), labels, inertia)
    assert best is not None
    return best


def cluster_types(
    train_heads: Sequence[str],
    vectors: Mapping[str, Sequence[float]],
    k: int,
    *,
    seed: int = 0,
    n_init: int = 4,
    prefix: str = "C",
) -> dict[str, str]:
    """Type every word of ``vectors`` by the nearest of ``k`` k-means centres fitted on the training heads.

    Vectors are scaled to unit length first (clusters by cosine similarity). Types are named ``C00``, ``C01``,
    ... in decreasing order of how many distinct training heads they hold (ties: by their first word).

    Parameters
    ----------
    train_heads : sequence of str
        The head words of the training examples (repeats allowed; the centres are fitted on distinct words).
    vectors : mapping word -> vector
        One vector per word to type: every training head, plus any other word (dev/test heads) to type.
    k : int
        Number of types.
    seed, n_init : int
        k-means seeding (:func:`kmeans`).
    prefix : str, default "C"

    Returns
    -------
    dict word -> type name, for every word of ``vectors``.

    Raises
    ------
    knotwork._errors.JrrelpError
        When a training head has no vector (naming it), vectors differ in size, or ``k`` exceeds the distinct heads.
    """
    heads = sorted(set(train_heads))
    if not heads:
        raise JrrelpError("cluster_types needs at least one training head word")
    missing = [h for h in heads if h not in vectors]
    if missing:
        raise JrrelpError(f"{len(missing)} training head word(s) have no vector (first: {missing[0]!r})")
    words = sorted(vectors)
    try:
        matrix = np.asarray([np.asarray(vectors[w], dtype=np.float64) for w in words])
    except ValueError:
        raise JrrelpError("the word vectors differ in size") from None
    if matrix.ndim != 2:
        raise JrrelpError("the word vectors differ in size")
    matrix /= np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
    row = {w: i for i, w in enumerate(words)}
    train = matrix[[row[h] for h in heads]]
    if k > len(heads):
        raise JrrelpError(f"k={k} types need at least {k} distinct training heads; got {len(heads)}")
    centres, labels, _ = kmeans(train, k, seed=seed, n_init=n_init)
    members = {j: [h for h, lab in zip(heads, labels, strict=True) if lab == j] for j in range(k)}
    order = sorted(range(k), key=lambda j: (-len(members[j]), members[j][0] if members[j] else "\uffff"))
    name = {j: f"{prefix}{rank:02d}" for rank, j in enumerate(order)}
    nearest = _sq_distances(matrix, centres).argmin(1)
    out = {w: name[int(nearest[i])] for i, w in enumerate(words)}
    for h, lab in zip(heads, labels, strict=True):  # a training head keeps its own cluster (ties in distance)
        out[h] = name[int(lab)]
    return out


def retype(
    examples: Sequence[RelationExample], types: Mapping[str, str], *, default: str | None = None
) -> list[RelationExample]:
    """Copies of ``examples`` whose ``subj_type``/``obj_type`` are the types of their head words.

    Head words are :func:`knotwork.relations.jrrelp.kg.head_word`. A head without a type gets ``default``;
    with ``default=None`` it is an error naming the example and the word.
    """
    out = []
    for ex in examples:
        found = {}
        for side in ("subj", "obj"):
            head = head_word(ex, side)
            t = types.get(head, default)
            if t is None:
                raise JrrelpError(f"example {ex.id}: the {side} head word {head!r} has no type")
            found[side] = t
        out.append(replace(ex, subj_type=found["subj"], obj_type=found["obj"]))
    return out


def type_members(types: Mapping[str, str], counts: Mapping[str, int], top: int = 8) -> dict[str, list[str]]:
    """Per type, its ``top`` most frequent words by ``counts`` (e.g. training head counts): a readable label."""
    out: dict[str, list[str]] = {}
    for word, t in types.items():
        if counts.get(word, 0) > 0:
            out.setdefault(t, []).append(word)
    return {t: sorted(ws, key=lambda w: (-counts[w], w))[:top] for t, ws in sorted(out.items())}
