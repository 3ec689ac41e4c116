"""Text classification tasks on disk (train/val/test JSONL + labels.json) and the label phrases of the frozen head."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from knotwork._errors import MergeError

SPLITS = ("train", "val", "test")
PAIR_SEPARATOR = " [SEP] "

# The frozen classifier represents each label by the base encoder's embedding of a short phrase, as CLIP's text
# heads embed "a photo of a {class}". Chosen once per label *name* (not per task), so that tasks sharing a label
# name (mr, cr, mpqa and sst2 all say "negative"/"positive") share one joint class, as MNIST and SVHN digits do in
# the paper's joint benchmark. A label name not listed here is embedded as written.
LABEL_PHRASES: dict[str, str] = {
    "negative": "a negative opinion",
    "positive": "a positive opinion",
    "subjective": "a subjective opinion",
    "objective": "an objective statement of fact",
    "description": "a question asking for a description or reason",
    "entity": "a question about a thing",
    "abbreviation": "a question about an abbreviation",
    "human": "a question about a person",
    "location": "a question about a place",
    "number": "a question about a number",
}


def label_phrase(name: str) -> str:
    """The phrase whose base-model embedding stands for label `name` (the name itself if none is recorded)."""
    return LABEL_PHRASES.get(name.strip().lower(), name.strip())


@dataclass(frozen=True)
class TextSplit:
    """One split of a task: texts and integer labels, in file order."""

    texts: tuple[str, ...]
    labels: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, n: int | None) -> TextSplit:
        """The first `n` examples (files are already shuffled), or all when `n` is None or larger."""
        if n is None or n >= len(self.texts):
            return self
        return TextSplit(self.texts[:n], self.labels[:n])


@dataclass(frozen=True)
class TextTask:
    """A sentence (or sentence-pair) classification task.

    Attributes
    ----------
    name : str
        Task name (the folder name when loaded from disk).
    label_names : tuple of str
        Label names in label-id order.
    splits : dict
        ``{"train"|"val"|"test": TextSplit}``.
    """

    name: str
    label_names: tuple[str, ...]
    splits: dict[str, TextSplit] = field(default_factory=dict)

    @property
    def phrases(self) -> tuple[str, ...]:
        return tuple(label_phrase(n) for n in self.label_names)

    def __post_init__(self) -> None:
        if len(self.label_names) < 2:
            raise MergeError(f"Task '{self.name}' needs at least 2 labels, got {list(self.label_names)}.")
        if len(set(self.label_names)) != len(self.label_names):
            raise MergeError(f"Task '{self.name}' has duplicate label names: {list(self.label_names)}.")
        for split_name, split in self.splits.items():
            if len(split.texts) != len(split.labels):
                raise MergeError(f"Task '{self.name}' split '{split_name}': {len(split.texts)} texts but "
                                 f"{len(split.labels)} labels.")
            bad = [y for y in split.labels if not 0 <= y < len(self.label_names)]
            if bad:
                raise MergeError(f"Task '{self.name}' split '{split_name}' has label ids {sorted(set(bad))[:5]} "
                                 f"outside 0..{len(self.label_names) - 1}.")


def _read_jsonl(path: Path, n_labels: int) -> TextSplit:
    texts: list[str] = []
    labels: list[int] = []
    try:
        fh = path.open(encoding="utf-8")
    except OSError as exc:
        raise MergeError(f"{path}: cannot be read ({exc.strerror}).") from exc
    with fh:
        try:
            lines = list(fh)
        except UnicodeDecodeError as exc:
            raise MergeError(f"{path}: not UTF-8 text ({exc.reason}).") from exc
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise MergeError(f"{path}:{lineno}: not valid JSON ({exc.msg}).") from exc
        if not isinstance(row, dict) or "label" not in row or ("text" not in row and "texts" not in row):
            raise MergeError(f"{path}:{lineno}: expected an object with 'text' (or 'texts') and 'label'.")
        text = row["text"] if "text" in row else row["texts"]
        if isinstance(text, list) and text and all(isinstance(t, str) for t in text):
            text = PAIR_SEPARATOR.join(text)
        if not isinstance(text, str) or not text.strip():
            raise MergeError(f"{path}:{lineno}: empty or non-string text.")
        label = row["label"]
        if not isinstance(label, int) or isinstance(label, bool):
            raise MergeError(f"{path}:{lineno}: label must be an integer id, got {label!r}.")
        if not 0 <= label < n_labels:
            raise MergeError(f"{path}:{lineno}: label {label} is not in labels.json (ids 0..{n_labels - 1}).")
        texts.append(text)
        labels.append(label)
    if not texts:
        raise MergeError(f"{path}: no examples.")
    return TextSplit(tuple(texts), tuple(labels))


def read_label_names(folder: str | Path) -> tuple[str, ...]:
    """The label names of a task folder (``labels.json``, in id order), checked."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MergeError(f"{folder}: task folder not found.")
    labels_path = folder / "labels.json"
    if not labels_path.is_file():
        raise MergeError(f"{folder}: task folder has no labels.json (a JSON list of label names).")
    try:
        label_names = json.loads(labels_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MergeError(f"{labels_path}: not a readable JSON list of label names ({exc}).") from exc
    if not isinstance(label_names, list) or not all(isinstance(x, str) and x.strip() for x in label_names):
        raise MergeError(f"{labels_path}: expected a JSON list of non-empty label names, got {label_names!r}.")
    if len(label_names) < 2:
        raise MergeError(f"{labels_path}: a task needs at least 2 labels, got {label_names!r}.")
    if len(set(label_names)) != len(label_names):
        raise MergeError(f"{labels_path}: duplicate label names in {label_names!r}.")
    return tuple(label_names)


def load_text_task(folder: str | Path, *, splits: Sequence[str] = SPLITS, name: str | None = None) -> TextTask:
    """Read a task folder: ``labels.json`` (label names in id order) and ``<split>.jsonl`` per split.

    Each JSONL line is ``{"text": str, "label": int}``; a sentence pair may be given as ``"texts": [a, b]``
    and is joined with ``" [SEP] "`` (or be pre-joined in ``text``).

    Raises
    ------
    MergeError
        (a ValueError) when the folder, ``labels.json`` or a requested split is missing (the path is named), on
        malformed lines (file and line number named), label ids outside ``labels.json``, or an empty split.
    """
    folder = Path(folder)
    label_names = read_label_names(folder)
    missing = [s for s in splits if not (folder / f"{s}.jsonl").is_file()]
    if missing:
        raise MergeError(f"{folder}: task folder lacks split file(s): {', '.join(m + '.jsonl' for m in missing)}")
    data = {s: _read_jsonl(folder / f"{s}.jsonl", len(label_names)) for s in splits}
    return TextTask(name or folder.name, label_names, data)


def task_data_sha256(folder: str | Path, *, splits: Sequence[str] = ("train",)) -> dict[str, str]:
    """sha256 of ``labels.json`` and each ``<split>.jsonl`` of a task folder: a cache key that changes with the data."""
    from knotwork._io import sha256_file

    folder = Path(folder)
    return {name: sha256_file(folder / name) for name in ("labels.json", *(f"{s}.jsonl" for s in splits))}


def _norm(phrase: str) -> str:
    return re.sub(r"\s+", " ", phrase.strip().lower())


@dataclass(frozen=True)
class JointLabels:
    """The union of several tasks' labels, deduplicated by phrase.

    Attributes
    ----------
    phrases : tuple of str
        One phrase per joint class, in order of first appearance.
    local_to_joint : dict
        ``{task_name: tuple of joint ids}``, indexed by the task's local label id.
    """

    phrases: tuple[str, ...]
    local_to_joint: dict[str, tuple[int, ...]]


def build_joint_labels(tasks: Sequence[TextTask]) -> JointLabels:
    """Pool all tasks' label phrases and deduplicate them (case and whitespace insensitive).

    Mirrors the paper's joint benchmark, where MNIST's and SVHN's digit classes collapse into one class each:
    here tasks that share a label name share one joint class.

    Examples
    --------
    >>> a = TextTask("a", ("negative", "positive"))
    >>> b = TextTask("b", ("positive", "neutral"))
    >>> j = build_joint_labels([a, b])
    >>> j.local_to_joint
    {'a': (0, 1), 'b': (1, 2)}
    """
    names = [t.name for t in tasks]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise MergeError(f"Task names must be unique for the joint benchmark; repeated: {dup}")
    index: dict[str, int] = {}
    phrases: list[str] = []
    mapping: dict[str, tuple[int, ...]] = {}
    for task in tasks:
        ids = []
        for phrase in task.phrases:
            key = _norm(phrase)
            if key not in index:
                index[key] = len(phrases)
                phrases.append(phrase)
            ids.append(index[key])
        mapping[task.name] = tuple(ids)
    return JointLabels(tuple(phrases), mapping)
