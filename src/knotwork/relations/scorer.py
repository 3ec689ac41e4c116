"""The official TACRED scorer's micro precision/recall/F1 over positive relations, per-relation table, confusion."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

import numpy as np

from knotwork._errors import RelationsError


@dataclass(frozen=True)
class Scores:
    """Micro-averaged scores over positive relations (the negative label is never a hit)."""

    precision: float
    recall: float
    f1: float


def score(
    gold: Sequence[str],
    predicted: Sequence[str],
    *,
    negative_label: str = "no_relation",
    labels: Collection[str] | None = None,
) -> Scores:
    """Score predictions exactly like the official TACRED scorer (``utils/scorer.py``).

    A guess is any prediction other than ``negative_label``; a gold positive is any gold label other than it.
    Precision is 1.0 when nothing positive was guessed, recall 0.0 when there is no gold positive, as in the
    original script.

    Parameters
    ----------
    gold, predicted : sequences of str of equal length
        Gold and predicted relation labels, one per example.
    negative_label : str, default "no_relation"
    labels : collection of str, optional
        The allowed label set; any gold or predicted label outside it is an error. By default every string is
        accepted, as in the original script.

    Returns
    -------
    Scores
        ``precision``, ``recall`` and ``f1`` as fractions in [0, 1].

    Raises
    ------
    RelationsError
        When the sequences differ in length, or a label is outside ``labels`` (naming the label and position).

    Examples
    --------
    >>> score(["per:title", "no_relation"], ["per:title", "per:title"])
    Scores(precision=0.5, recall=1.0, f1=0.6666666666666666)
    """
    _check(gold, predicted, labels)
    correct, guessed, gold_count = _counts(gold, predicted, negative_label)
    return _micro(correct, guessed, gold_count)


def _check(gold: Sequence[str], predicted: Sequence[str], labels: Collection[str] | None) -> None:
    if len(gold) != len(predicted):
        raise RelationsError(f"gold has {len(gold)} labels but predicted has {len(predicted)}; they must be equal.")
    if labels is None:
        return
    allowed = frozenset(labels)
    for name, seq in (("gold", gold), ("predicted", predicted)):
        unknown = set(seq) - allowed
        if unknown:
            first = next(i for i, lab in enumerate(seq) if lab in unknown)
            raise RelationsError(
                f"unknown {name} label {seq[first]!r} at position {first} ({len(unknown)} unknown label(s): "
                f"{sorted(unknown)[:5]}); expected one of the {len(allowed)} labels of the label set"
            )


def _counts(gold: Sequence[str], predicted: Sequence[str], negative_label: str) -> tuple[Counter, Counter, Counter]:
    correct: Counter[str] = Counter()
    guessed: Counter[str] = Counter()
    gold_count: Counter[str] = Counter()
    for g, p in zip(gold, predicted, strict=True):
        if p != negative_label:
            guessed[p] += 1
        if g != negative_label:
            gold_count[g] += 1
            if g == p:
                correct[p] += 1
    return correct, guessed, gold_count


def _micro(correct: Counter, guessed: Counter, gold_count: Counter) -> Scores:
    n_correct, n_guessed, n_gold = sum(correct.values()), sum(guessed.values()), sum(gold_count.values())
    precision = n_correct / n_guessed if n_guessed > 0 else 1.0
    recall = n_correct / n_gold if n_gold > 0 else 0.0
    f1 = 2.0 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return Scores(precision=precision, recall=recall, f1=f1)


@dataclass(frozen=True)
class RelationScore:
    """One row of the per-relation table, with the official script's defaults (precision 1.0 with no guess)."""

    relation: str
    precision: float
    recall: float
    f1: float
    n_gold: int
    n_guessed: int
    n_correct: int


@dataclass(frozen=True)
class ScoreReport:
    """Micro scores, the per-relation table and the confusion matrix of one prediction set.

    Attributes
    ----------
    micro : Scores
    per_relation : tuple of RelationScore
        One row per positive relation seen in gold or predictions, sorted by name (the official script prints
        only relations with gold > 0; ``n_gold`` tells them apart).
    labels : tuple of str
        Row and column order of ``confusion``.
    confusion : ndarray of shape (n_labels, n_labels)
        ``confusion[i, j]`` counts examples with gold ``labels[i]`` predicted as ``labels[j]``.
    """

    micro: Scores
    per_relation: tuple[RelationScore, ...]
    labels: tuple[str, ...]
    confusion: np.ndarray = field(compare=False, repr=False)

    def to_dict(self) -> dict:
        """A JSON-ready dict (used by ``knotwork relations score --json``)."""
        return {
            "precision": self.micro.precision,
            "recall": self.micro.recall,
            "f1": self.micro.f1,
            "per_relation": [vars(row) for row in self.per_relation],
            "labels": list(self.labels),
            "confusion": self.confusion.tolist(),
        }


def confusion_matrix(gold: Sequence[str], predicted: Sequence[str], labels: Sequence[str]) -> np.ndarray:
    """Count (gold, predicted) pairs over a fixed label order.

    Parameters
    ----------
    gold, predicted : sequences of str of length n
    labels : sequence of str
        Row/column order; every gold and predicted label must be in it.

    Returns
    -------
    ndarray of int64, shape (len(labels), len(labels))

    Raises
    ------
    RelationsError
        For unequal lengths or a label outside ``labels``.
    """
    _check(gold, predicted, labels)
    index = {lab: i for i, lab in enumerate(labels)}
    k = len(labels)
    g = np.fromiter((index[x] for x in gold), dtype=np.int64, count=len(gold))
    p = np.fromiter((index[x] for x in predicted), dtype=np.int64, count=len(predicted))
    return np.bincount(g * k + p, minlength=k * k).reshape(k, k)


def score_report(
    gold: Sequence[str],
    predicted: Sequence[str],
    *,
    negative_label: str = "no_relation",
    labels: Sequence[str] | None = None,
) -> ScoreReport:
    """Score like the official TACRED scorer and add its per-relation table and a confusion matrix.

    Parameters
    ----------
    gold, predicted : sequences of str of equal length
    negative_label : str, default "no_relation"
    labels : sequence of str, optional
        Fixed label set (also the confusion order). Default: ``negative_label`` followed by the sorted positive
        labels seen in gold or predictions.

    Returns
    -------
    ScoreReport

    Examples
    --------
    >>> r = score_report(["per:age", "per:age", "no_relation"], ["per:age", "no_relation", "per:title"])
    >>> round(r.micro.f1, 3), [(x.relation, x.n_correct) for x in r.per_relation]
    (0.5, [('per:age', 1), ('per:title', 0)])
    """
    if labels is None:
        seen = set(gold) | set(predicted)
        seen.discard(negative_label)
        labels = (negative_label, *sorted(seen))
    _check(gold, predicted, labels)
    correct, guessed, gold_count = _counts(gold, predicted, negative_label)
    rows = []
    for rel in sorted(set(gold_count) | set(guessed)):
        ng, nq, nc = gold_count[rel], guessed[rel], correct[rel]
        prec = nc / nq if nq > 0 else 1.0
        rec = nc / ng if ng > 0 else 0.0
        f1 = 2.0 * prec * rec / (prec + rec) if prec + rec > 0 else 0.0
        rows.append(RelationScore(rel, prec, rec, f1, ng, nq, nc))
    return ScoreReport(
        micro=_micro(correct, guessed, gold_count),
        per_relation=tuple(rows),
        labels=tuple(labels),
        confusion=confusion_matrix(gold, predicted, labels),
    )
