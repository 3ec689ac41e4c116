"""Length-bucketed, shuffled mini-batches whose KG inputs are gathered with the same indices as the RE inputs."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from knotwork._errors import JrrelpError
from knotwork.relations.jrrelp.kg import RelationKG


def bucket_batches(
    lengths: Sequence[int], batch_size: int, *, rng: np.random.Generator | None = None
) -> list[np.ndarray]:
    """Split example indices into batches of similar length.

    With ``rng`` the order inside equal lengths and the order of batches are random (PA-LSTM and SpanBERT sort by
    length and shuffle batches); without it batches come in length order, for evaluation.

    Returns
    -------
    list of int arrays
        Indices into ``lengths``; every index appears exactly once.
    """
    if batch_size < 1:
        raise JrrelpError(f"batch_size must be >= 1, got {batch_size}")
    lengths = np.asarray(lengths)
    if rng is None:
        order = np.argsort(lengths, kind="stable")
    else:
        order = np.lexsort((rng.random(len(lengths)), lengths))  # by length, ties in random order
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


@dataclass(frozen=True)
class Batch:
    """One mini-batch. Row i of every tensor belongs to example ``indices[i]``."""

    indices: np.ndarray
    inputs: dict[str, torch.Tensor]
    labels: torch.Tensor
    subject_nodes: torch.Tensor | None = None
    targets: torch.Tensor | None = None


def iterate_batches(
    features: Sequence[Mapping[str, list[int]]],
    labels: Sequence[int],
    collate: Callable[[Sequence[Mapping[str, list[int]]]], dict[str, torch.Tensor]],
    *,
    batch_size: int,
    rng: np.random.Generator | None = None,
    kg: RelationKG | None = None,
    subject_nodes: Sequence[int] | None = None,
    target_options: Mapping | None = None,
) -> Iterator[Batch]:
    """Yield :class:`Batch` objects; KG targets are looked up from each example's own (subject, relation).

    Gathering features, labels, subject nodes and targets by the **same** index array is what keeps the KG
    targets aligned with the RE examples; the released PA-LSTM code re-sorted a separate KG batch instead.
    """
    if len(features) != len(labels):
        raise JrrelpError(f"{len(features)} feature rows but {len(labels)} labels")
    labels_t = torch.as_tensor(labels, dtype=torch.long)
    nodes_t = None if subject_nodes is None else torch.as_tensor(subject_nodes, dtype=torch.long)
    lengths = [len(f["input_ids"]) for f in features]
    for idx in bucket_batches(lengths, batch_size, rng=rng):
        idx_t = torch.as_tensor(idx, dtype=torch.long)
        inputs = collate([features[i] for i in idx])
        batch_labels = labels_t[idx_t]
        nodes = targets = None
        if kg is not None and nodes_t is not None:
            nodes = nodes_t[idx_t]
            targets = kg.targets(nodes, batch_labels, **(target_options or {}))
        yield Batch(idx, inputs, batch_labels, nodes, targets)
