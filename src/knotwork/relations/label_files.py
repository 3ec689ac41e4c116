"""Reading label-only files: model predictions without example text, id orders and label maps.

TACREV publishes the test predictions of published TACRED models as JSONL, one ``{"id", "label_true",
"label_pred"}`` object per line (gzipped here), and a few as one label per line in the TACRED test order. With the
TACREV and Re-TACRED patches (keyed by id) they can be re-scored on three label versions without the LDC text.

Every reader checks everything before it returns and raises :class:`~knotwork._errors.RelationsError` naming the
file and the line or example id: malformed JSON, a missing field, a repeated id, corrupt gzip data, a line count or
an id set that does not match the other files.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from knotwork._errors import RelationsError
from knotwork.relations.data import read_json
from knotwork.relations.io import read_label_lines
from knotwork.relations.labelmaps import BUILTIN_LABEL_MAPS, builtin_label_map, check_label_map

PathLike = str | Path

#: Suffixes stripped from a prediction file's name to give the model's name.
_SUFFIXES = (".gz", ".jsonl", ".txt")
_FIELDS = ("id", "label_true", "label_pred")


@dataclass(frozen=True)
class LabelPredictions:
    """The lines of one label-only prediction file, in file order."""

    ids: tuple[str, ...]
    gold: tuple[str, ...]
    predicted: tuple[str, ...]


@dataclass(frozen=True)
class PredictionSet:
    """Several models' label-only predictions over one set of ids.

    Attributes
    ----------
    ids : tuple of str
        The reference id order (of the first JSONL file, or of ``order``).
    gold : dict of id to label
        The original gold labels (``label_true``), identical in every JSONL file; empty when no file carries them.
    predictions : dict of model to {id: label}
    sources : dict of model to str
        The file each model came from (for error messages).
    """

    ids: tuple[str, ...]
    gold: dict[str, str]
    predictions: dict[str, dict[str, str]]
    sources: dict[str, str]


def model_name(path: PathLike) -> str:
    """A prediction file's model name: its file name without ``.gz``, ``.jsonl`` and ``.txt``.

    Examples
    --------
    >>> model_name("results/cnn_test.jsonl.gz"), model_name("spanbert_tacred_test.txt")
    ('cnn_test', 'spanbert_tacred_test')
    """
    name = Path(path).name
    for suffix in _SUFFIXES:
        name = name.removesuffix(suffix)
    return name


def is_jsonl(path: PathLike) -> bool:
    """True for ``.jsonl`` and ``.jsonl.gz`` files."""
    name = Path(path).name.lower()
    return name.endswith((".jsonl", ".jsonl.gz"))


def _lines(path: Path):
    """(line number, text) of a text or gzipped text file; corrupt gzip data and bad UTF-8 are refused."""
    lineno = 0
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8", newline="\n") as fh:
            for lineno, line in enumerate(fh, start=1):  # noqa: B007 - lineno names the failing line below
                yield lineno, line
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        after = f" after line {lineno}" if lineno else ""
        raise RelationsError(f"{path}: corrupt gzip data{after} ({' '.join(str(err).split()) or type(err).__name__})") from None
    except UnicodeDecodeError as err:
        raise RelationsError(f"{path}:{lineno + 1}: not UTF-8 text (byte {err.start} of the line)") from None


def read_label_predictions(path: PathLike) -> LabelPredictions:
    """Read a ``.jsonl`` or ``.jsonl.gz`` file of ``{"id", "label_true", "label_pred"}`` objects, one per line.

    Blank lines are skipped; other keys are ignored.

    Raises
    ------
    RelationsError
        Naming the file and line: malformed JSON, not an object, a missing or non-string field, an id given twice
        (with the line of its first occurrence), corrupt gzip data, bad UTF-8, or no line at all.
    """
    path = Path(path)
    rows = [(lineno, line) for lineno, line in _lines(path) if line.strip()]
    try:  # one parse for the whole file; the slow line-by-line parse only runs to name a bad line
        objs = json.loads("[" + ",".join(line for _, line in rows) + "]")
    except json.JSONDecodeError:
        objs = None
    if objs is None or len(objs) != len(rows):
        objs = []
        for lineno, line in rows:
            try:
                objs.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise RelationsError(f"{path}:{lineno}: malformed JSON ({err.msg} at column {err.colno})") from None
    ids: list[str] = []
    gold: list[str] = []
    pred: list[str] = []
    first: dict[str, int] = {}
    for (lineno, _), obj in zip(rows, objs, strict=True):
        if not isinstance(obj, dict):
            raise RelationsError(f"{path}:{lineno}: expected a JSON object with {', '.join(_FIELDS)}, "
                                 f"got {type(obj).__name__}")
        ident, true, predicted = obj.get("id"), obj.get("label_true"), obj.get("label_pred")
        if not (type(ident) is str and type(true) is str and type(predicted) is str and ident and true and predicted):
            key = next(k for k in _FIELDS if not isinstance(obj.get(k), str) or not obj[k])
            got = "it is missing" if key not in obj else f"got {obj[key]!r}"
            raise RelationsError(f"{path}:{lineno}: field {key!r} must be a non-empty string; {got}")
        if ident in first:
            raise RelationsError(f"{path}:{lineno}: id {ident} appears twice (first on line {first[ident]})")
        first[ident] = lineno
        ids.append(ident)
        gold.append(true)
        pred.append(predicted)
    if not ids:
        raise RelationsError(f"{path}: no predictions (the file has no JSON line)")
    return LabelPredictions(tuple(ids), tuple(gold), tuple(pred))


def read_id_order(path: PathLike) -> tuple[str, ...]:
    """The id order of a label-per-line prediction file: the ids of a ``.jsonl(.gz)`` file, or one id per line.

    Raises
    ------
    RelationsError
        For any error of :func:`read_label_predictions` or :func:`~knotwork.relations.io.read_label_lines`, or
        an id given twice (naming its lines).
    """
    if is_jsonl(path):
        return read_label_predictions(path).ids
    ids = read_label_lines(path)
    first: dict[str, int] = {}
    for lineno, ident in enumerate(ids, start=1):
        if ident in first:
            raise RelationsError(f"{path}:{lineno}: id {ident} appears twice (first on line {first[ident]})")
        first[ident] = lineno
    return tuple(ids)


def load_prediction_set(paths: Sequence[PathLike], *, order: PathLike | None = None) -> PredictionSet:
    """Read several models' label-only predictions and check that they cover the same ids.

    ``.jsonl``/``.jsonl.gz`` files carry their ids and the original gold label; every such file must hold the same
    ids with the same ``label_true``. A label-per-line file (any other suffix) follows a reference id order:
    ``order`` (see :func:`read_id_order`), else the first JSONL file's order, and must have one line per id.

    Raises
    ------
    RelationsError
        Naming the file and line or id: a reader error; two files giving one model name; a JSONL file whose ids
        or ``label_true`` differ from the first; a label-per-line file without an id order or with another
        number of lines.
    """
    if not paths:
        raise RelationsError("no prediction file given")
    sources: dict[str, str] = {}
    for path in paths:
        name = model_name(path)
        if name in sources:
            raise RelationsError(f"{path}: two prediction files name the model {name!r} (also {sources[name]})")
        sources[name] = str(path)
    predictions: dict[str, dict[str, str]] = {}
    gold: dict[str, str] = {}
    ids: tuple[str, ...] = ()
    first: str | None = None  # the first JSONL file: the reference for ids and label_true
    for path in [p for p in paths if is_jsonl(p)]:
        read = read_label_predictions(path)
        if first is None:
            first, ids, gold = str(path), read.ids, dict(zip(read.ids, read.gold, strict=True))
        else:
            _check_same_ids(path, read.ids, gold, reference=first)
            for ident, label in zip(read.ids, read.gold, strict=True):
                if gold[ident] != label:
                    raise RelationsError(f"{path}: example {ident}: label_true {label!r} differs from {gold[ident]!r} "
                                         f"in {first}")
        predictions[model_name(path)] = dict(zip(read.ids, read.predicted, strict=True))
    reference = first
    if order is not None:
        ids, reference = read_id_order(order), str(order)
        if first is not None:
            _check_same_ids(order, ids, gold, reference=first)
    for path in [p for p in paths if not is_jsonl(p)]:
        if reference is None:
            raise RelationsError(f"{path}: a label-per-line file needs an id order; give --order FILE (ids, one per "
                                 "line, or a .jsonl prediction file) or a .jsonl prediction file")
        labels = read_label_lines(path)
        if len(labels) != len(ids):
            raise RelationsError(f"{path}: {len(labels)} predictions but the id order of {reference} has {len(ids)} ids")
        predictions[model_name(path)] = dict(zip(ids, labels, strict=True))
    ordered = {model_name(p): predictions[model_name(p)] for p in paths}
    return PredictionSet(tuple(ids), gold, ordered, sources)


def _check_same_ids(path: PathLike, ids: Sequence[str], gold: dict[str, str], *, reference: str) -> None:
    if len(ids) == len(gold) and all(i in gold for i in ids):
        return
    extra = [i for i in ids if i not in gold]
    if extra:
        raise RelationsError(f"{path}: {len(extra)} id(s) not in {reference}, e.g. {extra[:3]}")
    present = set(ids)
    missing = [i for i in gold if i not in present]
    raise RelationsError(f"{path}: {len(missing)} id(s) of {reference} missing, e.g. {missing[:3]}")


def load_label_map(spec: str) -> dict[str, str]:
    """A label map by name (``retacred``) or from a JSON file ``{label: new label}``.

    Raises
    ------
    RelationsError
        For a name that is neither built in nor a file, or a malformed map (naming the file and entry).
    """
    if spec in BUILTIN_LABEL_MAPS:
        return builtin_label_map(spec)
    path = Path(spec)
    if not path.is_file():
        raise RelationsError(f"label map {spec!r} is neither built in ({', '.join(sorted(BUILTIN_LABEL_MAPS))}) "
                             "nor a file")
    return check_label_map(read_json(path), source=str(path))
