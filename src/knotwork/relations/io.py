"""Reading and writing relation data: TACRED JSON, OpenNRE JSONL, label-per-line files and patch files.

Everything that touches the file system in ``knotwork.relations`` lives here; writes are atomic (a temp file in
the same folder, then ``os.replace``) and refuse to replace an existing file unless ``overwrite=True``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from knotwork.relations.data import (
    RelationExample,
    TacredFormatError,
    example_to_dict,
    from_opennre,
    load_tacred,
    to_opennre,
)
from knotwork.relations.patch import Patch, PatchFormatError, patch_from_json

__all__ = [
    "atomic_write_text",
    "load_gold_labels",
    "load_opennre",
    "load_patch",
    "read_label_lines",
    "save_opennre",
    "save_patch",
    "save_tacred",
    "write_label_lines",
]


def atomic_write_text(path: str | Path, text: str, *, overwrite: bool = False) -> Path:
    """Write ``text`` to ``path`` through a temp file in the same folder and ``os.replace``.

    Raises
    ------
    FileExistsError
        When ``path`` exists and ``overwrite`` is false.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True (--force on the command line) to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_tacred(examples: Iterable[RelationExample], path: str | Path, *, overwrite: bool = False) -> Path:
    """Write examples as one TACRED JSON list (inclusive spans, extra fields kept)."""
    return atomic_write_text(path, json.dumps([example_to_dict(ex) for ex in examples]), overwrite=overwrite)


def save_opennre(examples: Iterable[RelationExample], path: str | Path, *, overwrite: bool = False) -> Path:
    """Write examples as OpenNRE JSONL (one object per line, end-exclusive ``pos``)."""
    lines = [json.dumps(to_opennre(ex)) for ex in examples]
    return atomic_write_text(path, "\n".join(lines) + ("\n" if lines else ""), overwrite=overwrite)


def load_opennre(path: str | Path) -> list[RelationExample]:
    """Read OpenNRE JSONL; errors name the file, line and field."""
    path = Path(path)
    out = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise TacredFormatError(f"{path}:{lineno}: malformed JSON ({err})") from err
            try:
                out.append(from_opennre(obj, index=lineno - 1))
            except TacredFormatError as err:
                raise TacredFormatError(f"{path}:{lineno}: {err}") from err
    return out


def read_label_lines(path: str | Path) -> list[str]:
    """Read one label per line (the format of prediction files); blank lines are an error, not skipped.

    Raises
    ------
    ValueError
        Naming the file and line of an empty label.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last line; it does not open an empty one
    labels = [line.strip() for line in lines]
    for i, label in enumerate(labels, start=1):
        if not label:
            raise ValueError(f"{path}:{i}: empty line; expected one label per line")
    return labels


def write_label_lines(labels: Sequence[str], path: str | Path, *, overwrite: bool = False) -> Path:
    """Write one label per line, atomically."""
    return atomic_write_text(path, "".join(f"{label}\n" for label in labels), overwrite=overwrite)


def load_gold_labels(path: str | Path) -> tuple[list[str], list[str] | None]:
    """Read gold labels from a TACRED JSON file (``.json``) or a label-per-line file.

    Returns
    -------
    labels : list of str
    ids : list of str or None
        The example ids for a TACRED file, else None.
    """
    path = Path(path)
    if path.suffix.lower() == ".json":
        examples = load_tacred(path)
        return [ex.relation for ex in examples], [ex.id for ex in examples]
    return read_label_lines(path), None


def load_patch(path: str | Path) -> Patch:
    """Read a Re-TACRED (``{id: label}``, filter and relabel) or TACREV (``[{"id", "relation"}]``, relabel-only) patch.

    Raises
    ------
    PatchFormatError
        Naming the file and the bad entry.
    """
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise PatchFormatError(f"{path}: malformed JSON ({err})") from err
    try:
        return patch_from_json(raw)
    except PatchFormatError as err:
        raise PatchFormatError(f"{path}: {err}") from err


def save_patch(patch: Patch, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write a patch in its own style: ``{id: label}`` when it filters, else a TACREV-style list."""
    if patch.drop_missing:
        payload: object = dict(patch.labels)
    else:
        payload = [{"id": i, "relation": lab} for i, lab in patch.labels.items()]
    return atomic_write_text(path, json.dumps(payload, indent=0), overwrite=overwrite)
