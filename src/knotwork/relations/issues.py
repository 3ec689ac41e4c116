"""Label-error detection by confident learning on out-of-fold predicted probabilities, and its evaluation.

Confident learning: C. G. Northcutt, L. Jiang, I. L. Chuang, "Confident Learning: Estimating Uncertainty in
Dataset Labels", JAIR 70, 2021 (arXiv 1911.00068). This is an independent implementation of the paper's
confident joint, its calibration and the ``prune_by_noise_rate`` / ``confident_joint`` filters.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from knotwork._errors import RelationsError

_FILTERS = ("prune_by_noise_rate", "confident_joint", "both")
_RANKINGS = ("self_confidence", "normalized_margin")


def _check(labels, pred_probs) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels)
    probs = np.asarray(pred_probs, dtype=float)
    if probs.ndim != 2:
        raise RelationsError(f"pred_probs must have shape (n_examples, n_classes), got {probs.shape}")
    if labels.ndim != 1 or len(labels) != len(probs):
        raise RelationsError(f"labels must have shape ({len(probs)},) to match pred_probs, got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"labels must be integer class ids 0..{probs.shape[1] - 1}, got dtype {labels.dtype}")
    bad = np.flatnonzero((labels < 0) | (labels >= probs.shape[1]))
    if len(bad):
        raise RelationsError(f"label {labels[bad[0]]} of example {bad[0]} is outside 0..{probs.shape[1] - 1}")
    bad_row = first_invalid_row(probs)
    if bad_row is not None:
        raise RelationsError(f"pred_probs row {bad_row[0]} {bad_row[1]}")
    return labels.astype(np.int64), probs


#: How far a row of probabilities may sum from 1: float32 softmax outputs rarely sum to 1 exactly.
ROW_SUM_TOLERANCE = 1e-3


def first_invalid_row(probs: np.ndarray) -> tuple[int, str] | None:
    """The first row (0-based) of a (n, K) float array that is not a probability vector, and what is wrong."""
    finite = np.isfinite(probs)
    if not finite.all():
        row = int(np.flatnonzero(~finite.all(axis=1))[0])
        return row, f"holds a non-finite value ({probs[row][~finite[row]][0]})"
    negative = probs < 0
    if negative.any():
        row = int(np.flatnonzero(negative.any(axis=1))[0])
        return row, f"holds a negative probability ({probs[row].min():.4g})"
    sums = probs.sum(axis=1)
    off = np.flatnonzero(np.abs(sums - 1.0) > ROW_SUM_TOLERANCE)
    if len(off):
        return int(off[0]), f"sums to {sums[off[0]]:.4f}, not 1 (tolerance {ROW_SUM_TOLERANCE:g})"
    return None


def per_class_thresholds(labels, pred_probs) -> np.ndarray:
    """t_j = mean p̂_j(x) over the examples labelled j; shape (n_classes,). Absent classes get threshold 1."""
    labels, probs = _check(labels, pred_probs)
    return _thresholds(labels, probs)


def _thresholds(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    k = probs.shape[1]
    counts = np.bincount(labels, minlength=k)
    sums = np.zeros(k)
    np.add.at(sums, labels, probs[np.arange(len(labels)), labels])
    # A class nobody carries cannot be confidently predicted; threshold 1 keeps it out of the joint.
    return np.where(counts > 0, sums / np.maximum(counts, 1), 1.0)


def confident_joint(labels, pred_probs, *, calibrate: bool = True) -> np.ndarray:
    """The confident joint C[i, j]: examples labelled i whose confident class is j.

    The confident class of x is the argmax of p̂_k(x) over the classes k with p̂_k(x) >= t_k; examples with no
    such class are not counted.

    Parameters
    ----------
    labels : array of int, shape (n,)
    pred_probs : array of float, shape (n, K)
        Out-of-sample probabilities (e.g. from K-fold cross-validation).
    calibrate : bool, default True
        Rescale row i to the number of examples labelled i (the paper's Eq. 3 calibration).

    Returns
    -------
    ndarray of shape (K, K)
    """
    labels, probs = _check(labels, pred_probs)
    return _confident_joint(labels, probs, calibrate=calibrate)[0]


def _confident_joint(labels: np.ndarray, probs: np.ndarray, *, calibrate: bool) -> tuple[np.ndarray, np.ndarray]:
    k = probs.shape[1]
    above = probs >= _thresholds(labels, probs)  # (n, K)
    masked = np.where(above, probs, -np.inf)
    confident = masked.argmax(axis=1)
    has = above.any(axis=1)
    cj = np.bincount(labels[has] * k + confident[has], minlength=k * k).reshape(k, k).astype(float)
    confident = np.where(has, confident, -1)
    if calibrate:
        row = cj.sum(axis=1, keepdims=True)
        counts = np.bincount(labels, minlength=k)[:, None]
        cj = np.divide(cj * counts, row, out=np.zeros_like(cj), where=row > 0)
    return cj, confident


def find_label_issues(
    labels,
    pred_probs,
    *,
    filter_by: str = "prune_by_noise_rate",
    min_examples_per_class: int = 1,
) -> np.ndarray:
    """Flag examples whose given label is probably wrong.

    Parameters
    ----------
    labels : array of int, shape (n,)
        Given (possibly noisy) class ids.
    pred_probs : array of float, shape (n, K)
        Out-of-sample predicted probabilities; in-sample ones make the model agree with its own noise.
    filter_by : {"prune_by_noise_rate", "confident_joint", "both"}, default "prune_by_noise_rate"
        ``confident_joint``: flag the off-diagonal entries of the confident joint. ``prune_by_noise_rate``: for
        each pair i != j flag the round(n · Q[i, j]) examples labelled i with the largest margin p̂_j − p̂_i,
        where Q is the calibrated joint normalised to sum 1. ``both``: the intersection.
    min_examples_per_class : int, default 1
        Never flag so many examples of a class that fewer than this remain.

    Returns
    -------
    ndarray of bool, shape (n,)
        True for likely label errors. As in the paper's reference implementation, an example whose given label
        equals the model's argmax is never flagged.

    Examples
    --------
    >>> p = np.array([[0.9, 0.1], [0.8, 0.2], [0.1, 0.9], [0.2, 0.8], [0.95, 0.05]])
    >>> find_label_issues(np.array([0, 0, 1, 1, 1]), p).tolist()
    [False, False, False, False, True]
    """
    if filter_by not in _FILTERS:
        raise RelationsError(f"The 'filter_by' parameter of find_label_issues must be one of {_FILTERS}. Got {filter_by!r} instead.")
    labels, probs = _check(labels, pred_probs)
    return _find_label_issues(labels, probs, filter_by=filter_by, min_examples_per_class=min_examples_per_class)


def _find_label_issues(labels: np.ndarray, probs: np.ndarray, *, filter_by: str, min_examples_per_class: int) -> np.ndarray:
    n, k = probs.shape
    cj, confident = _confident_joint(labels, probs, calibrate=True)
    cj_mask = (confident >= 0) & (confident != labels)
    prune_mask = np.zeros(n, dtype=bool)
    if filter_by in ("prune_by_noise_rate", "both"):
        joint = cj / max(cj.sum(), 1e-12)
        to_prune = np.rint(n * joint).astype(np.int64)
        np.fill_diagonal(to_prune, 0)
        counts = np.bincount(labels, minlength=k)
        for i in range(k):
            budget = max(int(counts[i]) - min_examples_per_class, 0)
            total = int(to_prune[i].sum())
            if total > budget:  # scale the row down so the class keeps its minimum size
                to_prune[i] = np.floor(to_prune[i] * budget / total).astype(np.int64)
            idx = np.flatnonzero(labels == i)
            for j in np.flatnonzero(to_prune[i]):
                margin = probs[idx, j] - probs[idx, i]
                top = idx[np.argsort(-margin, kind="stable")[: to_prune[i, j]]]
                prune_mask[top] = True
    if filter_by == "confident_joint":
        mask = cj_mask
    elif filter_by == "both":
        mask = prune_mask & cj_mask
    else:
        mask = prune_mask
    return mask & (probs.argmax(axis=1) != labels)


def label_quality_scores(labels, pred_probs, *, method: str = "self_confidence") -> np.ndarray:
    """A score in [0, 1] per example; low means the given label is likely wrong.

    ``self_confidence`` is p̂_ỹ(x); ``normalized_margin`` is (p̂_ỹ − max_{k≠ỹ} p̂_k + 1) / 2.

    Returns
    -------
    ndarray of float, shape (n,)
    """
    if method not in _RANKINGS:
        raise RelationsError(f"The 'method' parameter of label_quality_scores must be one of {_RANKINGS}. Got {method!r} instead.")
    labels, probs = _check(labels, pred_probs)
    given = probs[np.arange(len(labels)), labels]
    if method == "self_confidence":
        return given
    others = probs.copy()
    others[np.arange(len(labels)), labels] = -np.inf
    return (given - others.max(axis=1) + 1.0) / 2.0


def rank_label_issues(labels, pred_probs, *, method: str = "self_confidence", mask: np.ndarray | None = None) -> np.ndarray:
    """Indices of examples ordered from most to least likely mislabelled (only flagged ones if ``mask`` is given)."""
    scores = label_quality_scores(labels, pred_probs, method=method)
    order = np.argsort(scores, kind="stable")
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        order = order[mask[order]]
    return order


@dataclass(frozen=True)
class DetectionQuality:
    """How well flagged examples match the known label errors."""

    n_flagged: int
    n_errors: int
    precision: float
    recall: float
    f1: float
    auc: float
    precision_at: dict[int, float]


def detection_quality(
    is_error, *, flagged=None, scores=None, at: tuple[int, ...] = (100, 500)
) -> DetectionQuality:
    """Precision/recall/F1 of a flag mask and ROC AUC / precision@k of a ranking, against known errors.

    Parameters
    ----------
    is_error : array of bool, shape (n,)
        True where the given label is known to be wrong (e.g. noise we injected).
    flagged : array of bool, shape (n,), optional
        A detector's mask (precision/recall/F1 are NaN without it).
    scores : array of float, shape (n,), optional
        Quality scores, **low = likely error** (AUC and precision@k are NaN without them).
    at : tuple of int
        Cut-offs for precision@k.
    """
    err = np.asarray(is_error, dtype=bool)
    n_err = int(err.sum())
    if flagged is not None:
        flagged = np.asarray(flagged, dtype=bool)
        tp = int((flagged & err).sum())
        prec = tp / flagged.sum() if flagged.sum() else 1.0
        rec = tp / n_err if n_err else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        n_flagged = int(flagged.sum())
    else:
        prec = rec = f1 = float("nan")
        n_flagged = 0
    auc = float("nan")
    p_at: dict[int, float] = {}
    if scores is not None:
        s = -np.asarray(scores, dtype=float)  # higher = more suspicious
        auc = _roc_auc(err, s)
        order = np.argsort(-s, kind="stable")
        p_at = {k: float(err[order[:k]].mean()) for k in at if k <= len(err)}
    return DetectionQuality(n_flagged, n_err, float(prec), float(rec), float(f1), auc, p_at)


def _roc_auc(positive: np.ndarray, score: np.ndarray) -> float:
    """Mann-Whitney AUC with average ranks for ties."""
    from scipy.stats import rankdata

    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
