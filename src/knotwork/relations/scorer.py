"""The official TACRED scorer's micro precision/recall/F1 over positive relations."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Scores:
    """Micro-averaged scores over positive relations (the negative label is never a hit)."""

    precision: float
    recall: float
    f1: float


def score(gold: Sequence[str], predicted: Sequence[str], *, negative_label: str = "no_relation") -> Scores:
    """Score predictions exactly like the official TACRED scorer (``utils/scorer.py``).

    A guess is any prediction other than ``negative_label``; a gold positive is any gold label other than it.
    Precision is 1.0 when nothing positive was guessed, recall 0.0 when there is no gold positive, as in the
    original script.

    Parameters
    ----------
    gold, predicted : sequences of str of equal length
        Gold and predicted relation labels, one per example.
    negative_label : str, default "no_relation"

    Returns
    -------
    Scores
        ``precision``, ``recall`` and ``f1`` as fractions in [0, 1].

    Raises
    ------
    ValueError
        When the sequences differ in length.

    Examples
    --------
    >>> score(["per:title", "no_relation"], ["per:title", "per:title"])
    Scores(precision=0.5, recall=1.0, f1=0.6666666666666666)
    """
    if len(gold) != len(predicted):
        raise ValueError(f"gold has {len(gold)} labels but predicted has {len(predicted)}; they must be equal.")
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
    n_correct, n_guessed, n_gold = sum(correct.values()), sum(guessed.values()), sum(gold_count.values())
    precision = n_correct / n_guessed if n_guessed > 0 else 1.0
    recall = n_correct / n_gold if n_gold > 0 else 0.0
    f1 = 2.0 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return Scores(precision=precision, recall=recall, f1=f1)
