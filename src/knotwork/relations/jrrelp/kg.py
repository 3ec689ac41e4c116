"""The knowledge graph JRRELP builds from training labels: (subject node, relation) -> set of object nodes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from knotwork._errors import JrrelpError
from knotwork.relations.data import RelationExample

UNKNOWN_NODE = "<unk>"
NEGATIVE_POLICIES = ("observed", "all_ones")

NodeKey = Callable[[RelationExample, str], str]


def node_key_function(node_key: str | NodeKey) -> NodeKey:
    """Turn a node-key name into a function ``(example, side) -> node name`` (``side`` is "subj" or "obj").

    ``"type"`` uses ``subj_type``/``obj_type`` (the paper: nodes are NER types). ``"head"`` uses the
    ``subj_head``/``obj_head`` field when the example carries it (our SemEval conversion does), else the
    lower-cased last token of the span. Any other name ``k`` reads ``example.extra[f"{side}_{k}"]``. A callable
    is returned unchanged.

    Raises
    ------
    TypeError
        If ``node_key`` is neither a string nor a callable.
    """
    if callable(node_key):
        return node_key
    if not isinstance(node_key, str):
        raise TypeError(f"node_key must be a string or a callable, got {type(node_key).__name__}")
    if node_key == "type":
        return lambda ex, side: ex.subj_type if side == "subj" else ex.obj_type
    if node_key == "head":
        return head_word

    def _extra(ex: RelationExample, side: str) -> str:
        name = f"{side}_{node_key}"
        if name not in ex.extra:
            raise KeyError(f"example {ex.id}: node_key {node_key!r} needs field {name!r}, which it lacks")
        return str(ex.extra[name])

    return _extra


def head_word(ex: RelationExample, side: str) -> str:
    """The head word of the subject (``side="subj"``) or object: ``subj_head``/``obj_head`` when the example
    carries it (our SemEval conversion does), else the lower-cased last token of the span."""
    head = ex.extra.get(f"{side}_head")
    if head is not None:
        return str(head)
    # TACRED marks no head; the last token of an English noun phrase is its usual head.
    end = ex.subj_end if side == "subj" else ex.obj_end
    return ex.tokens[end].lower()


@dataclass(frozen=True)
class RelationKG:
    """A graph over entity nodes whose edges are relations, built from RE training labels (JRRELP §2.2).

    Nodes seen fewer than ``min_count`` times, and nodes unseen in training, map to :data:`UNKNOWN_NODE`,
    which is always index 0 of both node lists.

    Attributes
    ----------
    relations : tuple of str
        Relation labels in id order (the RE classes, negative label included, as in the paper).
    subjects, objects : tuple of str
        Subject and object node names in id order.
    edges : mapping (subject id, relation id) -> frozenset of object ids
        The observed object set O for each (s, r) query.
    node_key : str
        How nodes were derived from examples (for the record; ``"<callable>"`` for a custom function).
    """

    relations: tuple[str, ...]
    subjects: tuple[str, ...]
    objects: tuple[str, ...]
    edges: Mapping[tuple[int, int], frozenset[int]]
    node_key: str = "type"
    _subject_index: dict[str, int] = field(init=False, repr=False, compare=False)
    _object_index: dict[str, int] = field(init=False, repr=False, compare=False)
    _relation_index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_subject_index", {n: i for i, n in enumerate(self.subjects)})
        object.__setattr__(self, "_object_index", {n: i for i, n in enumerate(self.objects)})
        object.__setattr__(self, "_relation_index", {n: i for i, n in enumerate(self.relations)})

    @property
    def n_objects(self) -> int:
        return len(self.objects)

    def subject_id(self, name: str) -> int:
        """Index of a subject node; unseen names map to the unknown node (0)."""
        return self._subject_index.get(name, 0)

    def object_id(self, name: str) -> int:
        """Index of an object node; unseen names map to the unknown node (0)."""
        return self._object_index.get(name, 0)

    def relation_id(self, relation: str) -> int:
        """Index of a relation label.

        Raises
        ------
        KeyError
            If the label is not one of :attr:`relations`.
        """
        if relation not in self._relation_index:
            raise KeyError(f"unknown relation {relation!r}; known: {list(self.relations)}")
        return self._relation_index[relation]

    def targets(
        self,
        subject_ids: Sequence[int] | torch.Tensor,
        relation_ids: Sequence[int] | torch.Tensor,
        *,
        negative_relation: int | None = None,
        negative_policy: str = "observed",
        label_smoothing: float = 0.0,
    ) -> torch.Tensor:
        """Multi-hot object targets ``O_i`` for a batch of (subject, relation) queries.

        Parameters
        ----------
        subject_ids, relation_ids : sequences of int of length B
        negative_relation : int, optional
            Id of the negative label; used only by ``negative_policy="all_ones"``.
        negative_policy : {"observed", "all_ones"}, default "observed"
            ``"observed"`` treats the negative relation like any other edge (PA-LSTM and C-GCN code);
            ``"all_ones"`` makes every object valid for it (the SpanBERT code).
        label_smoothing : float, default 0.0
            ``(1 - eps) * y + 1 / n_objects``, the C-GCN code's formula (targets may exceed 1 slightly, as there).

        Returns
        -------
        Tensor of shape (B, n_objects), float32
        """
        if negative_policy not in NEGATIVE_POLICIES:
            raise JrrelpError(f"negative_policy must be one of {NEGATIVE_POLICIES}, got {negative_policy!r}")
        if not 0.0 <= label_smoothing < 1.0:
            raise JrrelpError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        subject_ids = [int(s) for s in subject_ids]
        relation_ids = [int(r) for r in relation_ids]
        if len(subject_ids) != len(relation_ids):
            raise JrrelpError(f"{len(subject_ids)} subject ids but {len(relation_ids)} relation ids")
        out = torch.zeros(len(subject_ids), self.n_objects)
        for row, (s, r) in enumerate(zip(subject_ids, relation_ids, strict=True)):
            if negative_policy == "all_ones" and r == negative_relation:
                out[row] = 1.0
                continue
            objs = self.edges.get((s, r))
            if objs:
                out[row, list(objs)] = 1.0
        if label_smoothing:
            out = (1.0 - label_smoothing) * out + 1.0 / self.n_objects
        return out

    def example_queries(self, examples: Iterable[RelationExample]) -> tuple[list[int], list[int]]:
        """Subject ids and relation ids of examples (unknown relations raise, naming the example)."""
        key = node_key_function(self.node_key) if self.node_key != "<callable>" else None
        if key is None:
            raise JrrelpError("this graph was built with a custom node_key callable; map examples yourself")
        subjects, relations = [], []
        for ex in examples:
            if ex.relation not in self._relation_index:
                raise KeyError(f"example {ex.id}: relation {ex.relation!r} is not in the graph's relations")
            subjects.append(self.subject_id(key(ex, "subj")))
            relations.append(self._relation_index[ex.relation])
        return subjects, relations

    def node_report(self, splits: Mapping[str, Sequence[RelationExample]]) -> dict:
        """How many nodes the graph has, and how often examples fall to the unknown node.

        Parameters
        ----------
        splits : mapping of split name -> examples
            E.g. ``{"train": ..., "dev": ..., "test": ...}``; the nodes are those of the graph (built from train).

        Returns
        -------
        dict
            ``subjects`` and ``objects``: node counts without :data:`UNKNOWN_NODE`; ``node_key``; and per split
            ``{"examples": n, "subj_unk": share, "obj_unk": share}``: the share of examples whose subject (object)
            maps to :data:`UNKNOWN_NODE`.

        Examples
        --------
        >>> from knotwork.relations import RelationExample
        >>> ex = RelationExample("1", ("Ann", "met", "Bob"), "per:met", 0, 0, 2, 2, "PERSON", "PERSON")
        >>> other = RelationExample("2", ("Ann", "met", "Acme"), "per:met", 0, 0, 2, 2, "PERSON", "ORG")
        >>> build_kg([ex]).node_report({"test": [ex, other]})["test"]
        {'examples': 2, 'subj_unk': 0.0, 'obj_unk': 0.5}
        """
        key = node_key_function(self.node_key) if self.node_key != "<callable>" else None
        if key is None:
            raise JrrelpError("this graph was built with a custom node_key callable; map examples yourself")
        out: dict = {"subjects": len(self.subjects) - 1, "objects": len(self.objects) - 1, "node_key": self.node_key}
        for name, examples in splits.items():
            n = len(examples)
            subj = sum(self.subject_id(key(ex, "subj")) == 0 for ex in examples)
            obj = sum(self.object_id(key(ex, "obj")) == 0 for ex in examples)
            out[name] = {"examples": n, "subj_unk": subj / n if n else 0.0, "obj_unk": obj / n if n else 0.0}
        return out

    def to_dict(self) -> dict:
        """A JSON-ready description (edges as sorted lists) for saving beside a checkpoint."""
        return {
            "relations": list(self.relations),
            "subjects": list(self.subjects),
            "objects": list(self.objects),
            "node_key": self.node_key,
            "edges": [[s, r, sorted(o)] for (s, r), o in sorted(self.edges.items())],
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> RelationKG:
        edges = {(int(s), int(r)): frozenset(int(x) for x in o) for s, r, o in data["edges"]}
        return cls(tuple(data["relations"]), tuple(data["subjects"]), tuple(data["objects"]), edges, data["node_key"])


def build_kg(
    examples: Sequence[RelationExample],
    *,
    relations: Sequence[str] | None = None,
    node_key: str | NodeKey = "type",
    min_count: int = 1,
) -> RelationKG:
    """Build the (subject node, relation, object node) graph from training examples only.

    This is JRRELP's "knowledge graph": no external KG, one triple per training sentence (paper §2.2). With
    ``node_key="type"`` the nodes are the NER types, exactly as in the paper. Data sets without types (SemEval
    converted to TACRED format has ``ENTITY`` everywhere) make that graph degenerate, so ``node_key="head"`` uses
    the entity head word instead; rare heads collapse into the unknown node.

    Parameters
    ----------
    examples : sequence of RelationExample
        The training split. Never pass dev or test: their labels would leak into training.
    relations : sequence of str, optional
        Relation labels in id order; default: sorted labels of ``examples``.
    node_key : {"type", "head"} or str or callable, default "type"
        See :func:`node_key_function`.
    min_count : int, default 1
        Nodes seen fewer times (per side) map to the unknown node.

    Returns
    -------
    RelationKG

    Examples
    --------
    >>> from knotwork.relations import RelationExample
    >>> ex = RelationExample("1", ("Ann", "met", "Bob"), "per:met", 0, 0, 2, 2, "PERSON", "PERSON")
    >>> kg = build_kg([ex])
    >>> kg.objects, dict(kg.edges)
    (('<unk>', 'PERSON'), {(1, 0): frozenset({1})})
    """
    if not examples:
        raise JrrelpError("build_kg needs at least one training example")
    if min_count < 1:
        raise JrrelpError(f"min_count must be >= 1, got {min_count}")
    key = node_key_function(node_key)
    rels = tuple(relations) if relations is not None else tuple(sorted({ex.relation for ex in examples}))
    rel_index = {r: i for i, r in enumerate(rels)}
    for ex in examples:
        if ex.relation not in rel_index:
            raise KeyError(f"example {ex.id}: relation {ex.relation!r} is not in the given relations")
    pairs = [(key(ex, "subj"), rel_index[ex.relation], key(ex, "obj")) for ex in examples]
    subj_counts = Counter(s for s, _, _ in pairs)
    obj_counts = Counter(o for _, _, o in pairs)
    subjects = (UNKNOWN_NODE, *sorted(n for n, c in subj_counts.items() if c >= min_count and n != UNKNOWN_NODE))
    objects = (UNKNOWN_NODE, *sorted(n for n, c in obj_counts.items() if c >= min_count and n != UNKNOWN_NODE))
    s_index = {n: i for i, n in enumerate(subjects)}
    o_index = {n: i for i, n in enumerate(objects)}
    edges: dict[tuple[int, int], set[int]] = {}
    for s, r, o in pairs:
        edges.setdefault((s_index.get(s, 0), r), set()).add(o_index.get(o, 0))
    name = node_key if isinstance(node_key, str) else "<callable>"
    return RelationKG(rels, subjects, objects, {k: frozenset(v) for k, v in edges.items()}, name)
