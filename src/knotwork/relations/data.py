"""TACRED-format relation-extraction examples: a frozen dataclass and a validating JSON loader."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_REQUIRED = ("id", "token", "relation", "subj_start", "subj_end", "obj_start", "obj_end", "subj_type", "obj_type")


class TacredFormatError(ValueError):
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


def example_from_dict(obj: Mapping[str, Any], *, index: int = 0) -> RelationExample:
    """Validate one TACRED JSON object and return it as a :class:`RelationExample`."""
    ident = obj.get("id", f"<index {index}>") if isinstance(obj, Mapping) else f"<index {index}>"
    if not isinstance(obj, Mapping):
        raise TacredFormatError(f"example {ident}: expected a JSON object, got {type(obj).__name__}")
    for key in _REQUIRED:
        if key not in obj:
            raise TacredFormatError(f"example {ident}: missing field {key!r}")
    tokens = obj["token"]
    if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) for t in tokens):
        raise TacredFormatError(f"example {ident}: field 'token' must be a non-empty list of strings")
    n = len(tokens)
    for side in ("subj", "obj"):
        start, end = obj[f"{side}_start"], obj[f"{side}_end"]
        if not isinstance(start, int) or not isinstance(end, int) or not (0 <= start <= end < n):
            raise TacredFormatError(
                f"example {ident}: field '{side}_start'/'{side}_end' = {start!r}/{end!r} is not an inclusive span "
                f"inside {n} tokens"
            )
    extra = {k: v for k, v in obj.items() if k not in _REQUIRED}
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


def load_tacred(path: str | Path) -> list[RelationExample]:
    """Read a TACRED JSON file (one JSON list of objects) and validate every example.

    Raises
    ------
    TacredFormatError
        For malformed JSON or an invalid example; the message names the file, example id and field.
    """
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise TacredFormatError(f"{path}: malformed JSON ({err})") from err
    if not isinstance(raw, list):
        raise TacredFormatError(f"{path}: expected a JSON list of examples, got {type(raw).__name__}")
    try:
        return [example_from_dict(obj, index=i) for i, obj in enumerate(raw)]
    except TacredFormatError as err:
        raise TacredFormatError(f"{path}: {err}") from err
