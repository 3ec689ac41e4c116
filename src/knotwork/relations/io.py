"""Reading and writing relation data: TACRED JSON, OpenNRE JSONL, label files, predictions, patches, crowd answers.

Everything in ``knotwork.relations`` that touches the file system lives here (and in
:func:`~knotwork.relations.data.load_tacred`). Readers validate everything before they return and raise
:class:`~knotwork._errors.RelationsError` subclasses naming the file and the item (line, example id, row, worker,
label). Writers go through :mod:`knotwork._io`: atomic, a report beside the file, an existing file replaced only
with ``force=True`` and only when knotwork wrote it, an input never overwritten. The ``dump_*`` functions give the
text of a file for callers that fill an output folder themselves (:func:`knotwork._io.atomic_dir`).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path

import numpy as np

from knotwork import _io
from knotwork._errors import RelationsError
from knotwork.relations.data import (
    RelationExample,
    TacredFormatError,
    example_to_dict,
    from_opennre,
    load_tacred,
    read_json,
    read_text,
    to_opennre,
)
from knotwork.relations.patch import Patch, PatchFormatError, patch_from_json

__all__ = [
    "check_known_labels",
    "dump_label_lines",
    "dump_opennre",
    "dump_patch",
    "dump_tacred",
    "load_answers",
    "load_gold_key",
    "load_gold_labels",
    "load_label_set",
    "load_opennre",
    "load_patch",
    "load_pred_probs",
    "load_predictions",
    "read_label_lines",
    "save_opennre",
    "save_patch",
    "save_tacred",
    "write_label_lines",
]

PathLike = str | Path


# ------------------------------------------------------------------------------------------------ writing


def dump_tacred(examples: Iterable[RelationExample]) -> str:
    """TACRED JSON text: one list of objects (inclusive spans, extra fields kept)."""
    return json.dumps([example_to_dict(ex) for ex in examples])


def dump_opennre(examples: Iterable[RelationExample]) -> str:
    """OpenNRE JSONL text: one object per line, end-exclusive ``pos``."""
    lines = [json.dumps(to_opennre(ex)) for ex in examples]
    return "\n".join(lines) + ("\n" if lines else "")


def dump_label_lines(labels: Iterable[str]) -> str:
    """One label per line."""
    return "".join(f"{label}\n" for label in labels)


def dump_patch(patch: Patch) -> str:
    """A patch in its own style: ``{id: label}`` when it filters (Re-TACRED), else a TACREV-style list."""
    if patch.drop_missing:
        payload: object = dict(patch.labels)
    else:
        payload = [{"id": i, "relation": lab} for i, lab in patch.labels.items()]
    return json.dumps(payload, indent=0)


def save_tacred(examples: Iterable[RelationExample], path: PathLike, *, inputs: Iterable[PathLike] = (),
                force: bool = False) -> Path:
    """Write examples as one TACRED JSON list, under the output rules of :mod:`knotwork._io`."""
    return _io.write_text(path, dump_tacred(examples), inputs=inputs, force=force)


def save_opennre(examples: Iterable[RelationExample], path: PathLike, *, inputs: Iterable[PathLike] = (),
                 force: bool = False) -> Path:
    """Write examples as OpenNRE JSONL, under the output rules of :mod:`knotwork._io`."""
    return _io.write_text(path, dump_opennre(examples), inputs=inputs, force=force)


def write_label_lines(labels: Sequence[str], path: PathLike, *, inputs: Iterable[PathLike] = (),
                      force: bool = False) -> Path:
    """Write one label per line, under the output rules of :mod:`knotwork._io`."""
    return _io.write_text(path, dump_label_lines(labels), inputs=inputs, force=force)


def save_patch(patch: Patch, path: PathLike, *, inputs: Iterable[PathLike] = (), force: bool = False) -> Path:
    """Write a patch (see :func:`dump_patch`), under the output rules of :mod:`knotwork._io`."""
    return _io.write_text(path, dump_patch(patch), inputs=inputs, force=force)


# ------------------------------------------------------------------------------------------------ examples


def load_opennre(path: PathLike) -> list[RelationExample]:
    """Read OpenNRE JSONL; errors name the file, line and field."""
    path = Path(path)
    out = []
    for lineno, line in enumerate(read_text(path, TacredFormatError).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise TacredFormatError(f"{path}:{lineno}: malformed JSON ({err.msg} at column {err.colno})") from None
        try:
            out.append(from_opennre(obj, index=lineno - 1))
        except TacredFormatError as err:
            raise TacredFormatError(f"{path}:{lineno}: {err}") from None
    return out


# ------------------------------------------------------------------------------------------------ labels


def read_label_lines(path: PathLike) -> list[str]:
    """Read one label per line (the format of prediction files); blank lines are an error, not skipped.

    Raises
    ------
    RelationsError
        Naming the file and line of an empty label.
    """
    path = Path(path)
    lines = read_text(path).split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last line; it does not open an empty one
    labels = [line.strip() for line in lines]
    for i, label in enumerate(labels, start=1):
        if not label:
            raise RelationsError(f"{path}:{i}: empty line; expected one label per line")
    return labels


def load_label_set(path: PathLike) -> list[str]:
    """Read a label set in its id order: a ``.json`` list of labels or ``{label: id}`` map, else one label per line.

    The order matters: it is the column order of predicted probabilities. A ``{label: id}`` map (tacred-relation's
    ``LABEL_TO_ID``) must use the ids 0..K-1 exactly once.

    Raises
    ------
    RelationsError
        Naming the file and what is wrong: malformed JSON, an empty set, a label that is not a non-empty string,
        a label given twice, ids that are not 0..K-1.
    """
    path = Path(path)
    if path.suffix.lower() == ".json":
        raw = read_json(path)
        if isinstance(raw, dict):
            ids = raw.values()
            if not all(type(v) is int for v in ids) or sorted(ids) != list(range(len(raw))):
                raise RelationsError(
                    f"{path}: a {{label: id}} label map needs the integer ids 0..{len(raw) - 1} once each, "
                    f"got {sorted(ids, key=str)[:5]}{'...' if len(raw) > 5 else ''}"
                )
            labels = sorted(raw, key=raw.__getitem__)
        elif isinstance(raw, list):
            labels = raw
        else:
            raise RelationsError(f"{path}: expected a JSON list of labels or a {{label: id}} object, got {type(raw).__name__}")
        bad = next((i for i, lab in enumerate(labels) if not isinstance(lab, str) or not lab.strip()), None)
        if bad is not None:
            raise RelationsError(f"{path}: entry {bad} is {labels[bad]!r}; every label must be a non-empty string")
    else:
        labels = read_label_lines(path)
    if not labels:
        raise RelationsError(f"{path}: the label set is empty")
    first: dict[str, int] = {}
    for i, lab in enumerate(labels):
        if lab in first:
            raise RelationsError(f"{path}: label {lab!r} appears twice (entries {first[lab]} and {i})")
        first[lab] = i
    return list(labels)


def check_known_labels(labels: Sequence[str], allowed: Collection[str], *, source: PathLike,
                       ids: Sequence[str] | None = None, what: str = "label") -> None:
    """Refuse the first label outside ``allowed``, naming ``source`` and its line (or example id when ``ids``).

    The one check that gold labels, predictions (``relations score`` and ``relations reevaluate``) and other
    label files go through.
    """
    allowed = frozenset(allowed)
    for i, label in enumerate(labels):
        if label not in allowed:
            where = f"{source}: example {ids[i]}" if ids is not None else f"{source}:{i + 1}"
            n_bad = len(set(labels) - allowed)
            raise RelationsError(
                f"{where}: {what} {label!r} is not in the label set of {len(allowed)} labels "
                f"({n_bad} unknown label{'s' if n_bad != 1 else ''} in the file)"
            )


def load_gold_labels(path: PathLike) -> tuple[list[str], list[str] | None]:
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


def load_predictions(path: PathLike, n_examples: int, *, labels: Collection[str] | None = None,
                     reference: PathLike = "the gold file") -> list[str]:
    """Read one predicted label per line and check it against the gold file it is scored on.

    Parameters
    ----------
    path : path
        One label per line, in the gold file's order.
    n_examples : int
        How many examples the gold file ``reference`` has; the file must have exactly as many lines.
    labels : collection of str, optional
        The label set; a prediction outside it is refused (with the file and line).

    Raises
    ------
    RelationsError
        For an empty line, a line count that differs from ``n_examples``, or a label outside ``labels``.
    """
    predicted = read_label_lines(path)
    if len(predicted) != n_examples:
        raise RelationsError(f"{path}: {len(predicted)} predictions but {reference} has {n_examples} examples")
    if labels is not None:
        check_known_labels(predicted, labels, source=path, what="predicted label")
    return predicted


# ------------------------------------------------------------------------------------------------ patches


def load_patch(path: PathLike) -> Patch:
    """Read a Re-TACRED (``{id: label}``, filter and relabel) or TACREV (``[{"id", "relation"}]``, relabel-only) patch.

    Raises
    ------
    PatchFormatError
        Naming the file and the bad entry.
    """
    path = Path(path)
    raw = read_json(path, PatchFormatError)
    try:
        return patch_from_json(raw)
    except PatchFormatError as err:
        raise PatchFormatError(f"{path}: {err}") from None


# ------------------------------------------------------------------------------------------------ crowd rounds


def load_gold_key(path: PathLike, *, labels: Collection[str] | None = None) -> dict[str, str]:
    """Read the private gold key of a round (``{sentence id: relation}``, as ``relations annotate`` writes it).

    Raises
    ------
    RelationsError
        For malformed JSON, anything but a JSON object, an empty key (it would silently turn worker screening off),
        a relation that is not a non-empty string, or one outside ``labels``; naming the file and the sentence id.
    """
    raw = read_json(path)
    if not isinstance(raw, dict):
        raise RelationsError(f"{path}: a gold key is a JSON object {{sentence id: relation}}, got {type(raw).__name__}")
    if not raw:
        raise RelationsError(f"{path}: the gold key is empty; worker screening needs at least one gold sentence")
    allowed = None if labels is None else frozenset(labels)
    for ident, rel in raw.items():
        if not isinstance(rel, str) or not rel:
            raise RelationsError(f"{path}: gold sentence {ident}: relation must be a non-empty string, got {rel!r}")
        if allowed is not None and rel not in allowed:
            raise RelationsError(f"{path}: gold sentence {ident}: relation {rel!r} is not in the label set")
    return dict(raw)


def load_answers(path: PathLike, *, labels: Collection[str] | None = None, gold: Iterable[str] = ()):
    """Read a platform's results CSV (MTurk layout or long ``task, worker, label``) as checked long answers.

    Returns
    -------
    pandas.DataFrame
        ``task, worker, label, group, row`` (see :func:`~knotwork.relations.annotation.answers_from_platform`).

    Raises
    ------
    RelationsError
        Naming the file and the row, worker, sentence id or label: an unreadable CSV, a missing answer, an answer
        outside its task's choices or outside ``labels``, a worker answering a sentence twice (gold excepted).
    """
    import pandas as pd

    from knotwork.relations.annotation import answers_from_platform, check_round_answers

    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise RelationsError(f"{path}: not a readable CSV ({' '.join(str(err).split())})") from None
    try:
        answers = answers_from_platform(table)
        check_round_answers(answers, labels=labels, gold=gold)
    except RelationsError as err:
        raise RelationsError(f"{path}: {err}") from None
    return answers


# ------------------------------------------------------------------------------------------------ label issues


def load_pred_probs(path: PathLike, *, n_classes: int, ids: Sequence[str]) -> np.ndarray:
    """Read out-of-fold predicted probabilities from a ``.npy`` file: shape ``(len(ids), n_classes)``, finite,
    non-negative, each row summing to 1.

    Raises
    ------
    RelationsError
        Naming the file and what is wrong: not a numeric ``.npy`` array, the wrong shape, or the first bad row
        (0-based, with its example id).
    """
    from knotwork.relations.issues import first_invalid_row

    try:
        raw = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise RelationsError(f"{path}: not a .npy array ({' '.join(str(err).split())})") from None
    if not isinstance(raw, np.ndarray):
        raise RelationsError(f"{path}: holds several arrays (.npz); save one (n, K) array with numpy.save")
    if raw.dtype.kind not in "biuf":
        raise RelationsError(f"{path}: expected numeric probabilities, got dtype {raw.dtype}")
    if raw.ndim != 2 or raw.shape != (len(ids), n_classes):
        raise RelationsError(
            f"{path}: shape {raw.shape}, expected ({len(ids)}, {n_classes}): one row per example, one column per label"
        )
    probs = raw.astype(float)
    bad = first_invalid_row(probs)
    if bad is not None:
        raise RelationsError(f"{path}: row {bad[0]} (example {ids[bad[0]]}) {bad[1]}")
    return probs
