"""PyKEEN interop: knotwork's link-prediction graph (:class:`TripleSet`) from and to PyKEEN ``TriplesFactory`` objects.

Ids and labels survive both ways: entity ``i`` of a :class:`TripleSet` is ``entities[i]``, exactly PyKEEN's
``entity_to_id[entities[i]] == i`` (the same for relations), and the triples keep their ids and order. PyKEEN is
imported only inside these functions; it is not a dependency of knotwork.

Examples
--------
>>> from pykeen.datasets import Nations                                     # doctest: +SKIP
>>> kg = kg_from_triples_factory(Nations())                                 # doctest: +SKIP
>>> model, history = train_conve(kg, ConvEConfig(epochs=5))                 # doctest: +SKIP
>>> training = to_triples_factory(kg, "train")                              # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from knotwork._errors import JrrelpError
from knotwork.relations.jrrelp.linkpred import TripleSet

__all__ = ["kg_from_triples_factory", "to_triples_factory"]

SPLITS = ("train", "valid", "test")


def _import_pykeen() -> Any:
    try:
        import pykeen.triples
    except ImportError:
        raise ImportError("PyKEEN interop needs pykeen, which is not installed (pip install pykeen)") from None
    return pykeen.triples


def _labels(mapping: Mapping[str, int] | None, count: int, what: str) -> tuple[str, ...]:
    """Labels in id order 0..count-1; a factory without labels (``CoreTriplesFactory``) gets ``str(id)``."""
    if mapping is None:
        return tuple(str(i) for i in range(count))
    if sorted(int(i) for i in mapping.values()) != list(range(count)):
        raise JrrelpError(
            f"the TriplesFactory's {what} ids are not 0..{count - 1} with one label each; build it with compact ids"
        )
    by_id = {int(i): label for label, i in mapping.items()}
    return tuple(by_id[i] for i in range(count))


def _mapping(factory: Any, name: str) -> Mapping[str, int] | None:
    return getattr(factory, name, None)


def kg_from_triples_factory(training: Any, validation: Any = None, testing: Any = None) -> TripleSet:
    """A :class:`TripleSet` (what :func:`train_conve` trains on) from PyKEEN triples factories.

    Parameters
    ----------
    training : pykeen.triples.CoreTriplesFactory or pykeen.datasets.Dataset
        The training triples; a PyKEEN ``Dataset`` supplies all three splits itself.
    validation, testing : pykeen.triples.CoreTriplesFactory, optional
        Must share the training factory's entity and relation ids (as PyKEEN's datasets and
        ``TriplesFactory.from_path(..., entity_to_id=training.entity_to_id, relation_to_id=...)`` do);
        missing splits are empty.

    Returns
    -------
    TripleSet
        ``entities[i]`` is the label PyKEEN gives id ``i`` (``str(i)`` for a factory without labels); the triples
        keep their ids and order. Inverse triples are not copied: :func:`train_conve` adds its own.

    Raises
    ------
    knotwork._errors.JrrelpError
        When a split's ids or labels differ from the training factory's, or its ids are not 0..n-1.
    """
    _import_pykeen()
    if hasattr(training, "training") and hasattr(training, "testing"):  # a pykeen.datasets.Dataset
        if validation is not None or testing is not None:
            raise JrrelpError("pass a PyKEEN Dataset alone, or triples factories for each split, not both")
        training, validation, testing = training.training, training.validation, training.testing
    n_entities, n_relations = int(training.num_entities), int(training.real_num_relations)
    entities = _labels(_mapping(training, "entity_to_id"), n_entities, "entity")
    relations = _labels(_mapping(training, "relation_to_id"), n_relations, "relation")
    tensors = {"train": training.mapped_triples}
    for split, factory in (("valid", validation), ("test", testing)):
        if factory is None:
            tensors[split] = torch.zeros(0, 3, dtype=torch.long)
            continue
        same_size = (int(factory.num_entities), int(factory.real_num_relations)) == (n_entities, n_relations)
        same_labels = all(
            _mapping(factory, name) is None or dict(_mapping(factory, name)) == dict(_mapping(training, name) or {})
            for name in ("entity_to_id", "relation_to_id")
        )
        if not (same_size and same_labels):
            raise JrrelpError(
                f"the {split} TriplesFactory does not share the training factory's entity and relation ids; build it "
                "with entity_to_id=training.entity_to_id and relation_to_id=training.relation_to_id"
            )
        tensors[split] = factory.mapped_triples
    return TripleSet(entities, relations, *(torch.as_tensor(tensors[s], dtype=torch.long).reshape(-1, 3).clone()
                                            for s in SPLITS))


def to_triples_factory(kg: TripleSet, split: str = "train", *, create_inverse_triples: bool = False) -> Any:
    """One split of a :class:`TripleSet` as a PyKEEN ``TriplesFactory`` with the same ids and labels.

    Every split's factory shares one entity and relation mapping, so ``to_triples_factory(kg, "valid")`` and
    ``"test"`` are valid evaluation triples for a model trained on ``to_triples_factory(kg)``.

    Parameters
    ----------
    kg : TripleSet
    split : {"train", "valid", "test"}, default "train"
    create_inverse_triples : bool, default False
        PyKEEN's flag (ConvE in PyKEEN wants True: it predicts heads through inverse relations, as knotwork does).

    Returns
    -------
    pykeen.triples.TriplesFactory
    """
    triples = _import_pykeen()
    if split not in SPLITS:
        raise JrrelpError(f"split must be one of {SPLITS}, got {split!r}")
    return triples.TriplesFactory(
        mapped_triples=getattr(kg, split).clone(),
        entity_to_id={label: i for i, label in enumerate(kg.entities)},
        relation_to_id={label: i for i, label in enumerate(kg.relations)},
        create_inverse_triples=create_inverse_triples,
    )
