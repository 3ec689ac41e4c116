"""TACRED-format relation-extraction examples: a frozen dataclass and a validating JSON loader."""

from __future__ import annotations

import gc
import json
from collections import deque
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from itertools import chain, repeat
from operator import attrgetter, itemgetter, le, lt
from pathlib import Path
from typing import Any

from knotwork._errors import RelationsError

_REQUIRED = ("id", "token", "relation", "subj_start", "subj_end", "obj_start", "obj_end", "subj_type", "obj_type")
_REQUIRED_SET = frozenset(_REQUIRED)
_STR_TYPES = {str}


class TacredFormatError(RelationsError):
    """A TACRED-format example is malformed; the message names the example id and field."""


@dataclass(frozen=True)
class RelationExample:
    """One sentence with a subject and an object span (inclusive token indices, as in TACRED)."""

    id: str
    tokens: tuple[str, ...]
    relation: str
    subj_start: int
    subj_end: int
    obj_start: int
    obj_end: int
    subj_type: str
    obj_type: str
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def subj_tokens(self) -> tuple[str, ...]:
        """The subject's tokens (the span end is inclusive)."""
        return self.tokens[self.subj_start : self.subj_end + 1]

    @property
    def obj_tokens(self) -> tuple[str, ...]:
        """The object's tokens (the span end is inclusive)."""
        return self.tokens[self.obj_start : self.obj_end + 1]


_FIELDS = tuple(f.name for f in fields(RelationExample))


def example_from_dict(
    obj: Mapping[str, Any], *, index: int = 0, labels: Collection[str] | None = None
) -> RelationExample:
    """Validate one TACRED JSON object and return it as a :class:`RelationExample`.

    Parameters
    ----------
    obj : mapping
        One object of a TACRED JSON list (inclusive span ends, ``token[s:e + 1]``).
    index : int, default 0
        Position in the file, used to name the example when it has no ``id``.
    labels : collection of str, optional
        When given, a ``relation`` outside it is an error (e.g. :data:`~knotwork.relations.labels.TACRED_LABELS`).

    Raises
    ------
    TacredFormatError
        Naming the example id and the bad field.
    """
    ident = obj.get("id", f"<index {index}>") if isinstance(obj, Mapping) else f"<index {index}>"
    if not isinstance(obj, Mapping):
        raise TacredFormatError(f"example {ident}: expected a JSON object, got {type(obj).__name__}")
    if not _REQUIRED_SET <= obj.keys():
        missing = next(key for key in _REQUIRED if key not in obj)
        raise TacredFormatError(f"example {ident}: missing field {missing!r}")
    tokens = obj["token"]
    # set(map(type, ...)) runs in C: the token check is most of the validation time on 100k-example files.
    if not isinstance(tokens, list) or not tokens or set(map(type, tokens)) != _STR_TYPES:
        raise TacredFormatError(f"example {ident}: field 'token' must be a non-empty list of strings")
    if isinstance(obj["id"], bool) or not isinstance(obj["id"], (str, int)) or obj["id"] == "":
        raise TacredFormatError(f"example {ident}: field 'id' must be a non-empty string, got {obj['id']!r}")
    for key in ("relation", "subj_type", "obj_type"):
        if not isinstance(obj[key], str) or not obj[key]:
            raise TacredFormatError(f"example {ident}: field {key!r} must be a non-empty string, got {obj[key]!r}")
    n = len(tokens)
    for side in ("subj", "obj"):
        start, end = obj[f"{side}_start"], obj[f"{side}_end"]
        # `type(v) is int` also rejects bool (an int subclass): a True/False span is a corrupted file, not 1/0.
        if type(start) is not int or type(end) is not int or not (0 <= start <= end < n):
            raise TacredFormatError(
                f"example {ident}: field '{side}_start'/'{side}_end' = {start!r}/{end!r} is not an inclusive span "
                f"inside {n} tokens"
            )
    if labels is not None and obj["relation"] not in labels:
        raise TacredFormatError(f"example {ident}: field 'relation' = {obj['relation']!r} is not a known relation")
    extra = {k: v for k, v in obj.items() if k not in _REQUIRED_SET}
    return RelationExample(
        id=str(obj["id"]),
        tokens=tuple(tokens),
        relation=str(obj["relation"]),
        subj_start=obj["subj_start"],
        subj_end=obj["subj_end"],
        obj_start=obj["obj_start"],
        obj_end=obj["obj_end"],
        subj_type=str(obj["subj_type"]),
        obj_type=str(obj["obj_type"]),
        extra=extra,
    )


def examples_from_list(
    raw: Any, *, source: str = "<data>", labels: Collection[str] | None = None
) -> list[RelationExample]:
    """Validate a parsed TACRED JSON list and return its examples; ids must be unique.

    Raises
    ------
    TacredFormatError
        For a non-list, an invalid example or a duplicate id; the message names ``source``, the id and field.
    """
    if not isinstance(raw, list):
        raise TacredFormatError(f"{source}: expected a JSON list of examples, got {type(raw).__name__}")
    label_set = None if labels is None else frozenset(labels)
    examples = _examples_by_field(raw, label_set)
    if examples is None:  # a bad (or unusual) example: the per-example check finds the first and names it
        try:
            examples = [example_from_dict(obj, index=i, labels=label_set) for i, obj in enumerate(raw)]
        except TacredFormatError as err:
            raise TacredFormatError(f"{source}: {err}") from err
    ids = list(map(attrgetter("id"), examples))
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        for ident in ids:
            if ident in seen:
                raise TacredFormatError(f"{source}: example {ident}: duplicate id")
            seen.add(ident)
    return examples


def _examples_by_field(raw: list, labels: frozenset[str] | None) -> list[RelationExample] | None:
    """The examples of ``raw`` when every one is valid and plain (JSON's own types), else None.

    The checks of :func:`example_from_dict`, run one field at a time over all examples with C-level loops
    (``map``, ``zip``, ``set``, ``all``) instead of one Python call per example; this is what brings a 100k-example
    file close to the time of ``json.load``. It accepts a subset of what :func:`example_from_dict` accepts (exact
    ``dict``/``list``/``str``/``int``) and returns equal examples; for anything else, valid or not, it returns None
    and the per-example path decides, and words any refusal, exactly as before.
    """
    n = len(raw)
    if set(map(type, raw)) != {dict}:
        return None if raw else []
    key_orders = set(map(tuple, raw))
    if len(key_orders) == 1:  # the usual file: every example has the same keys in the same order
        (keys,) = key_orders
        if not _REQUIRED_SET.issubset(keys):
            return None
        column = dict(zip(keys, zip(*map(itemgetter(*keys), raw), strict=True), strict=True))
        extra_keys = [k for k in keys if k not in _REQUIRED_SET]
        extras: Iterable[dict[str, Any]] = (
            map(dict, map(zip, repeat(extra_keys), zip(*map(column.get, extra_keys), strict=True))) if extra_keys
            else map(dict, repeat((), n))
        )
    else:
        if not all(_REQUIRED_SET <= obj.keys() for obj in raw):
            return None
        column = {k: list(map(itemgetter(k), raw)) for k in _REQUIRED}
        extras = ({k: v for k, v in obj.items() if k not in _REQUIRED_SET} for obj in raw)
    ids, tokens, relations, subj_start, subj_end, obj_start, obj_end, subj_type, obj_type = map(column.get, _REQUIRED)
    id_types = set(map(type, ids))
    if not id_types <= {str, int} or ("" in ids if int in id_types else not all(ids)):
        return None
    if set(map(type, tokens)) != {list} or set(map(type, chain.from_iterable(tokens))) != _STR_TYPES:
        return None
    strings = (relations, subj_type, obj_type)
    if set(map(type, chain(*strings))) != _STR_TYPES or not all(chain(*strings)):
        return None
    lengths = list(map(len, tokens))  # an empty token list fails the span check below (0 <= end < 0)
    if set(map(type, chain(subj_start, subj_end, obj_start, obj_end))) != {int}:
        return None
    for start, end in ((subj_start, subj_end), (obj_start, obj_end)):
        if min(start) < 0 or not all(map(le, start, end)) or not all(map(lt, end, lengths)):
            return None
    if labels is not None and not labels.issuperset(relations):
        return None
    if int in id_types:
        ids = list(map(str, ids))
    values = zip(ids, map(tuple, tokens), relations, subj_start, subj_end, obj_start, obj_end, subj_type, obj_type,
                 extras, strict=True)
    # Filled as unpickling fills an instance (its __dict__, in field order): a frozen dataclass's __init__ costs
    # one object.__setattr__ call per field, a third of the validation time on a large file.
    examples = list(map(object.__new__, repeat(RelationExample, n)))
    deque(map(dict.update, map(vars, examples), map(zip, repeat(_FIELDS), values)), maxlen=0)
    return examples


def load_tacred(path: str | Path, *, labels: Collection[str] | None = None) -> list[RelationExample]:
    """Read a TACRED JSON file (one JSON list of objects) and validate every example.

    Parameters
    ----------
    path : str or Path
        A TACRED-format ``train.json``/``dev.json``/``test.json``.
    labels : collection of str, optional
        The allowed relations; by default any string is accepted.

    Returns
    -------
    list of RelationExample
        In file order. Unknown fields (``stanford_*``, ``docid``...) are kept in ``extra``.

    Raises
    ------
    TacredFormatError
        For malformed JSON or an invalid example; the message names the file, example id and field.
    """
    path = Path(path)
    with _no_cycle_collection():
        return examples_from_list(read_json(path, TacredFormatError), source=str(path), labels=labels)


@contextmanager
def _no_cycle_collection() -> Iterator[None]:
    """Pause Python's cycle collector while a large file becomes objects, then restore its state.

    Parsing 100k examples allocates millions of containers; each allocation burst triggers a collection that
    walks every container made so far, about half of ``json.load``'s time on such a file. The parsed data has
    no reference cycles, so nothing is left for the collector to free; reference counting still frees the rest.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def read_text(path: str | Path, error: type[RelationsError] = RelationsError) -> str:
    """The UTF-8 text of ``path``; a binary or wrongly encoded file is ``error`` naming the file and byte offset."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise error(f"{path}: not UTF-8 text (byte {err.start}); is this the right file?") from None


def read_json(path: str | Path, error: type[RelationsError] = RelationsError) -> Any:
    """The parsed JSON of ``path``; malformed JSON is ``error`` naming the file, line and column."""
    try:
        return json.loads(read_text(path, error))
    except json.JSONDecodeError as err:
        raise error(f"{path}: malformed JSON ({err.msg} at line {err.lineno}, column {err.colno})") from None


def example_to_dict(example: RelationExample) -> dict[str, Any]:
    """Return the TACRED JSON object of an example (the inverse of :func:`example_from_dict`)."""
    out: dict[str, Any] = {
        "id": example.id,
        "relation": example.relation,
        "token": list(example.tokens),
        "subj_start": example.subj_start,
        "subj_end": example.subj_end,
        "obj_start": example.obj_start,
        "obj_end": example.obj_end,
        "subj_type": example.subj_type,
        "obj_type": example.obj_type,
    }
    out.update(example.extra)
    return out


def to_opennre(example: RelationExample) -> dict[str, Any]:
    """Convert to OpenNRE's sentence-level JSONL object, whose ``pos`` spans are **end-exclusive**.

    ``{"id", "token", "h": {"name", "pos", "type"}, "t": {...}, "relation"}``; ``h`` is the subject, ``t`` the
    object. The ``id`` and ``type`` keys are extras OpenNRE ignores; they make the round trip lossless.
    """
    return {
        "id": example.id,
        "token": list(example.tokens),
        "h": {"name": " ".join(example.subj_tokens), "pos": [example.subj_start, example.subj_end + 1], "type": example.subj_type},
        "t": {"name": " ".join(example.obj_tokens), "pos": [example.obj_start, example.obj_end + 1], "type": example.obj_type},
        "relation": example.relation,
    }


def from_opennre(obj: Mapping[str, Any], *, index: int = 0) -> RelationExample:
    """Convert one OpenNRE JSONL object back to a :class:`RelationExample` (inclusive spans).

    A missing ``id`` becomes the line index as a string; a missing entity ``type`` becomes ``"ENTITY"`` (as in the
    SemEval conversion, which has no entity types).

    Raises
    ------
    TacredFormatError
        When ``token``, ``h``/``t`` or their ``pos`` are missing or not a ``[start, end)`` pair.
    """
    ident = obj.get("id", str(index)) if isinstance(obj, Mapping) else str(index)
    if not isinstance(obj, Mapping):
        raise TacredFormatError(f"example {ident}: expected a JSON object, got {type(obj).__name__}")
    converted: dict[str, Any] = {"id": str(ident), "token": obj.get("token"), "relation": obj.get("relation")}
    for side, key in (("subj", "h"), ("obj", "t")):
        ent = obj.get(key)
        pos = ent.get("pos") if isinstance(ent, Mapping) else None
        if not (isinstance(pos, Sequence) and len(pos) == 2 and all(isinstance(v, int) for v in pos)):
            raise TacredFormatError(f"example {ident}: field {key!r} must hold 'pos': [start, end) (got {ent!r})")
        converted[f"{side}_start"], converted[f"{side}_end"] = pos[0], pos[1] - 1
        converted[f"{side}_type"] = str(ent.get("type", "ENTITY"))
    return example_from_dict(converted, index=index)


def with_relations(examples: Iterable[RelationExample], relations: Iterable[str]) -> list[RelationExample]:
    """Return copies of ``examples`` with new relation labels (inputs are frozen and stay untouched)."""
    from dataclasses import replace

    examples, relations = list(examples), list(relations)
    if len(examples) != len(relations):
        raise RelationsError(f"got {len(examples)} examples but {len(relations)} relations; they must be equal")
    return [replace(ex, relation=rel) for ex, rel in zip(examples, relations, strict=True)]
