"""Inter-annotator agreement: Fleiss' kappa, Cohen's kappa and raw pairwise agreement."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from knotwork._errors import RelationsError
from knotwork.relations.crowd._base import check_answers, encode_answers, vote_counts


def fleiss_kappa(counts: np.ndarray) -> float:
    """Fleiss' kappa of an items × categories table of rating counts.

    Fleiss, "Measuring nominal scale agreement among many raters", *Psychological Bulletin* 76(5), 1971.

    Parameters
    ----------
    counts : array-like of shape (n_items, n_categories)
        ``counts[i, j]`` raters put item ``i`` in category ``j``; every row must sum to the same number of
        raters n >= 2 (Fleiss' kappa assumes a fixed number of raters per item).

    Returns
    -------
    float
        ``(P_bar - P_e) / (1 - P_e)``; 1.0 when ``P_e == 1`` (every rating in one category).

    Raises
    ------
    RelationsError
        For a non-2D table, negative counts, or rows with different totals (naming the first such row).
    """
    table = np.asarray(counts, dtype=float)
    if table.ndim != 2 or table.shape[0] == 0:
        raise RelationsError(f"counts must be a non-empty 2-D items × categories table, got shape {table.shape}")
    if (table < 0).any():
        raise RelationsError("counts must be non-negative")
    n_raters = table.sum(axis=1)
    if not np.allclose(n_raters, n_raters[0]):
        row = int(np.flatnonzero(~np.isclose(n_raters, n_raters[0]))[0])
        raise RelationsError(
            f"every item needs the same number of ratings: item 0 has {n_raters[0]:g}, item {row} has {n_raters[row]:g}"
        )
    n = n_raters[0]
    if n < 2:
        raise RelationsError(f"Fleiss' kappa needs at least 2 ratings per item, got {n:g}")
    p_j = table.sum(axis=0) / table.sum()
    p_i = ((table * table).sum(axis=1) - n) / (n * (n - 1))
    p_bar, p_e = p_i.mean(), float((p_j * p_j).sum())
    if np.isclose(p_e, 1.0):
        return 1.0
    return float((p_bar - p_e) / (1.0 - p_e))


def cohen_kappa(a: Sequence, b: Sequence) -> float:
    """Cohen's kappa between two raters' labels on the same items.

    Returns 1.0 when both raters use one and the same label throughout (chance agreement 1).

    Raises
    ------
    RelationsError
        For sequences of different or zero length.
    """
    a, b = list(a), list(b)
    if len(a) != len(b) or not a:
        raise RelationsError(f"cohen_kappa needs two equally long, non-empty label lists, got {len(a)} and {len(b)}")
    codes, uniques = pd.factorize(pd.Series(a + b))
    k = len(uniques)
    ca, cb = codes[: len(a)], codes[len(a) :]
    conf = np.bincount(ca * k + cb, minlength=k * k).reshape(k, k) / len(a)
    p_o = np.trace(conf)
    p_e = float(conf.sum(axis=1) @ conf.sum(axis=0))
    if np.isclose(p_e, 1.0):
        return 1.0
    return float((p_o - p_e) / (1.0 - p_e))


def rating_table(data: pd.DataFrame, *, n_raters: int = 2) -> pd.DataFrame:
    """Items × labels counts from the first ``n_raters`` answers of each task (tasks with fewer are left out).

    With adaptive rounds (2 annotators, then a 3rd and 4th on disagreement) only the first-round answers have a
    fixed count per item, so kappa is computed on them, as the Re-TACRED note recommends.
    """
    data = check_answers(data)
    first = data[data.groupby("task", sort=False).cumcount() < n_raters]
    full = first.groupby("task", sort=False)["worker"].transform("size") == n_raters
    enc = encode_answers(first[full.to_numpy()])
    return pd.DataFrame(vote_counts(enc), index=enc.tasks, columns=enc.labels)


def pairwise_agreement(data: pd.DataFrame) -> float:
    """Share of agreeing answer pairs within tasks, over all tasks with >= 2 answers (the paper's "mean agreement")."""
    enc = encode_answers(check_answers(data))
    counts = vote_counts(enc)
    n = counts.sum(axis=1)
    keep = n >= 2
    agree = (counts[keep] * (counts[keep] - 1)).sum()
    pairs = (n[keep] * (n[keep] - 1)).sum()
    if pairs == 0:
        raise RelationsError("no task has two or more answers; agreement is undefined")
    return float(agree / pairs)
