"""Label-error detection by confident learning on out-of-fold predicted probabilities, and its evaluation.

Confident learning: C. G. Northcutt, L. Jiang, I. L. Chuang, "Confident Learning: Estimating Uncertainty in
Dataset Labels", JAIR 70, 2021 (arXiv 1911.00068). This is an independent implementation whose parameters and
outputs follow cleanlab 2.x (``cleanlab.filter.find_label_issues``, ``cleanlab.count.compute_confident_joint``,
``cleanlab.rank``): on the same inputs it flags the same examples and ranks them in the same order; the tests
compare the two on data with a known noise matrix.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from knotwork._errors import RelationsError

_FILTERS = ("prune_by_noise_rate", "prune_by_class", "both", "confident_learning", "predicted_neq_given")
_REFUSED_FILTERS = ("low_normalized_margin", "low_self_confidence")
_RANKINGS = ("self_confidence", "normalized_margin", "confidence_weighted_entropy")

#: Fuzzy-equality tolerance of probability comparisons (cleanlab's ``FLOATING_POINT_COMPARISON``).
_EPS = 1e-6
#: Lower bound of a per-class threshold, above ``_EPS`` so a threshold is never met by a probability of 0.
_MIN_THRESHOLD = 2 * _EPS
#: Threshold of a class no example carries: no probability reaches it.
_ABSENT_THRESHOLD = 2.0
_TINY = 1e-100


def encode_labels(labels, n_classes: int, *, label_names: Sequence | None = None) -> np.ndarray:
    """Class ids 0..K-1 for integer or string labels.

    With ``label_names``, label ``label_names[j]`` becomes ``j`` (the column order of ``pred_probs``). Without it,
    integer labels are used as they are, and other labels (e.g. strings) are replaced by their position among the
    sorted unique labels, which then must number exactly K: a class missing from ``labels`` would shift the
    columns, so pass ``label_names`` in that case.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise RelationsError(f"labels must be one-dimensional, got shape {labels.shape}")
    if label_names is not None:
        names = list(label_names)
        if len(names) != n_classes:
            raise RelationsError(f"label_names has {len(names)} names but pred_probs has {n_classes} columns")
        if len(set(names)) != len(names):
            raise RelationsError("label_names holds a name twice")
        index = {name: j for j, name in enumerate(names)}
        out = np.empty(len(labels), dtype=np.int64)
        for row, lab in enumerate(labels.tolist()):
            if lab not in index:
                raise RelationsError(f"label {lab!r} of example {row} is not in label_names")
            out[row] = index[lab]
        return out
    if np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool:
        return labels.astype(np.int64)
    if np.issubdtype(labels.dtype, np.floating):
        raise TypeError(f"labels must be integer class ids 0..{n_classes - 1} or strings, got dtype {labels.dtype}")
    names, codes = np.unique(labels, return_inverse=True)
    if len(names) != n_classes:
        raise RelationsError(
            f"labels hold {len(names)} distinct names but pred_probs has {n_classes} columns; "
            "pass label_names to give the column order"
        )
    return codes.astype(np.int64)


def _check(labels, pred_probs, label_names: Sequence | None = None) -> tuple[np.ndarray, np.ndarray]:
    probs = np.asarray(pred_probs, dtype=float)
    if probs.ndim != 2:
        raise RelationsError(f"pred_probs must have shape (n_examples, n_classes), got {probs.shape}")
    raw = np.asarray(labels)
    if raw.ndim != 1 or len(raw) != len(probs):
        raise RelationsError(f"labels must have shape ({len(probs)},) to match pred_probs, got {raw.shape}")
    labels = encode_labels(raw, probs.shape[1], label_names=label_names)
    bad = np.flatnonzero((labels < 0) | (labels >= probs.shape[1]))
    if len(bad):
        raise RelationsError(f"label {labels[bad[0]]} of example {bad[0]} is outside 0..{probs.shape[1] - 1}")
    bad_row = first_invalid_row(probs)
    if bad_row is not None:
        raise RelationsError(f"pred_probs row {bad_row[0]} {bad_row[1]}")
    return labels, probs


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


def per_class_thresholds(labels, pred_probs, *, label_names: Sequence | None = None) -> np.ndarray:
    """t_j = mean p̂_j(x) over the examples labelled j, at least 2e-6; shape (n_classes,).

    A class no example carries gets threshold 2, which no probability reaches (as cleanlab's
    ``get_confident_thresholds``).
    """
    labels, probs = _check(labels, pred_probs, label_names)
    return _thresholds(labels, probs)


def _thresholds(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    k = probs.shape[1]
    counts = np.bincount(labels, minlength=k)
    t = np.full(k, _ABSENT_THRESHOLD)
    for j in np.flatnonzero(counts):
        t[j] = np.mean(probs[labels == j, j])
    return np.maximum(t, _MIN_THRESHOLD)


def confident_joint(labels, pred_probs, *, calibrate: bool = True, label_names: Sequence | None = None) -> np.ndarray:
    """The confident joint C[i, j]: examples labelled i whose confident class is j (cleanlab's
    ``compute_confident_joint``).

    Class j is confident for x when p̂_j(x) >= t_j − 1e-6. The confident class of x is that class if there is
    one, the argmax of p̂(x) over all classes if there are several; examples with none are not counted. The
    diagonal is raised to at least 1.

    Parameters
    ----------
    labels : array of int or str, shape (n,)
        Encoded as in :func:`encode_labels`.
    pred_probs : array of float, shape (n, K)
        Out-of-sample probabilities (e.g. from K-fold cross-validation).
    calibrate : bool, default True
        Rescale row i to the number of examples labelled i and the whole to n (the paper's Eq. 3), then round to
        integers keeping each row's total.
    label_names : sequence, optional
        The class of each column of ``pred_probs``.

    Returns
    -------
    ndarray of int, shape (K, K)
    """
    labels, probs = _check(labels, pred_probs, label_names)
    return _confident_joint(labels, probs, calibrate=calibrate)[0]


def _confident_joint(labels: np.ndarray, probs: np.ndarray, *, calibrate: bool) -> tuple[np.ndarray, np.ndarray]:
    """The (calibrated) confident joint and the indices, ascending, of examples whose confident class is not their label."""
    k = probs.shape[1]
    confident = probs >= _thresholds(labels, probs) - _EPS
    n_confident = confident.sum(axis=1)
    guess = np.where(n_confident > 1, probs.argmax(axis=1), confident.argmax(axis=1))
    has = n_confident > 0
    cj = np.bincount(labels[has] * k + guess[has], minlength=k * k).reshape(k, k)
    np.fill_diagonal(cj, np.maximum(cj.diagonal(), 1))
    if calibrate:
        cj = _calibrate(cj, labels)
    off_diagonal = np.flatnonzero(has & (guess != labels))
    return cj, off_diagonal


def _calibrate(cj: np.ndarray, labels: np.ndarray) -> np.ndarray:
    counts = np.bincount(labels, minlength=len(cj))
    rows = cj / np.maximum(cj.sum(axis=1), _TINY)[:, None] * counts[:, None]
    rows = rows / max(float(rows.sum()), _TINY) * counts.sum()
    return _round_rows(rows)


def _round_keeping_sum(values: np.ndarray) -> np.ndarray:
    """Round to integers (half to even) so that the total equals the rounded total of ``values``.

    The missing (or surplus) units go to the entries that rounding moved furthest down (or up).
    """
    values = np.asarray(values, dtype=float)
    out = np.round(values)
    target = np.round(values.sum())
    while abs(out.sum() - target) > _EPS:
        short = np.round(target - out.sum())
        step = 1 if short > 0 else -1
        n = min(int(abs(short)), len(values))
        by_residual = np.argsort(values - out)  # ascending: the most rounded-up first
        chosen = by_residual[::-1][:n] if step > 0 else by_residual[:n]
        out[chosen] += step
    return out


def _round_rows(matrix: np.ndarray) -> np.ndarray:
    return np.array([_round_keeping_sum(row) for row in np.asarray(matrix, dtype=float)]).astype(int)


def _prune_counts(cj: np.ndarray, min_examples_per_class: int, frac_noise: float) -> np.ndarray:
    """How many examples to remove per (true class row, given label column): the transposed joint with
    each column's diagonal raised to ``min_examples_per_class`` (the raise taken evenly from the column's
    non-zero off-diagonal entries) and the off-diagonal scaled by ``frac_noise``; whole counts (truncated)."""
    m = np.asarray(cj, dtype=float).T
    diag = m.diagonal().copy()
    raised = np.maximum(diag, min_examples_per_class)
    nonzero = np.maximum(np.count_nonzero(m, axis=0) - 1.0, 1.0)
    m = m - (raised - diag) / nonzero  # per column
    m[m < 0] = 0
    np.fill_diagonal(m, raised)
    scaled = m * frac_noise
    np.fill_diagonal(scaled, 0.0)
    off = m.copy()
    np.fill_diagonal(off, 0.0)
    np.fill_diagonal(scaled, raised + (off - scaled).sum(axis=0))
    return _round_rows(scaled.astype(int))


def _fixed_removals(prune: np.ndarray, num_to_remove_per_class, label_counts: np.ndarray) -> np.ndarray:
    """Rescale the prune counts so that class k loses ``num_to_remove_per_class[k]`` examples (as cleanlab)."""
    num = np.asarray(num_to_remove_per_class, dtype=float)
    # cleanlab divides entry (i, j) by the total of row j (numpy broadcasting); kept as is to match it.
    share = prune / np.sum(prune, axis=1)
    noise = share.sum(axis=1) - share.diagonal()
    scaled = share * num[:, None] / noise[:, None]
    np.fill_diagonal(scaled, label_counts - num)
    return _round_rows(scaled)


def find_label_issues(
    labels,
    pred_probs,
    *,
    filter_by: str = "prune_by_noise_rate",
    return_indices_ranked_by: str | None = None,
    rank_by_kwargs: dict | None = None,
    frac_noise: float = 1.0,
    num_to_remove_per_class: Sequence[int] | None = None,
    min_examples_per_class: int = 1,
    confident_joint: np.ndarray | None = None,
    label_names: Sequence | None = None,
    n_jobs: int | None = None,
) -> np.ndarray:
    """Flag examples whose given label is probably wrong; cleanlab's ``filter.find_label_issues`` for one label
    per example, same parameters and same result.

    Parameters
    ----------
    labels : array of int or str, shape (n,)
        Given (possibly noisy) labels. Integers are class ids 0..K-1 (the columns of ``pred_probs``). Other labels
        (e.g. strings) are encoded as their position in ``label_names`` if given, else among the sorted unique
        labels (which must then number K); the result is that of the integer encoding.
    pred_probs : array of float, shape (n, K)
        Out-of-sample predicted probabilities; in-sample ones make the model agree with its own noise.
    filter_by : str, default "prune_by_noise_rate"
        Per given class k, with counts from the calibrated confident joint C (see :func:`confident_joint`):

        - ``prune_by_noise_rate``: for each true class j != k, flag the C[k, j] examples labelled k with the
          largest margin p̂_j − p̂_k.
        - ``prune_by_class``: flag the n_k − C[k, k] examples labelled k with the lowest p̂_k.
        - ``both``: flagged by both of the above.
        - ``confident_learning``: the off-diagonal of the confident joint (the example's confident class is not
          its label); ignores ``confident_joint``.
        - ``predicted_neq_given``: argmax p̂ differs from the label.

        cleanlab's ``low_normalized_margin`` and ``low_self_confidence`` are not offered.
    return_indices_ranked_by : {None, "self_confidence", "normalized_margin", "confidence_weighted_entropy"}
        None returns the boolean mask; otherwise the indices of the flagged examples, lowest label quality score
        (:func:`label_quality_scores`) first.
    rank_by_kwargs : dict, optional
        Passed to :func:`label_quality_scores` (``adjust_pred_probs``).
    frac_noise : float, default 1.0
        Keep only this fraction of the off-diagonal counts (the "top" issues) for the three ``prune`` filters.
    num_to_remove_per_class : sequence of int, shape (K,), optional
        Flag this many examples per given class (``prune`` filters only).
    min_examples_per_class : int, default 1
        Raise the kept count of every class to at least this; classes with at most this many examples are not
        pruned.
    confident_joint : array, shape (K, K), optional
        A precomputed (calibrated) confident joint for the ``prune`` filters, used as given.
    label_names : sequence, shape (K,), optional
        The label of each column of ``pred_probs``.
    n_jobs : int, optional
        Accepted for cleanlab compatibility; the result never depends on it and the work runs in one process.

    Returns
    -------
    ndarray of bool, shape (n,), or ndarray of int (indices of flagged examples, ranked)
        An example whose label is the argmax of its probabilities (within 1e-6) is never flagged.

    Examples
    --------
    >>> p = np.array([[0.9, 0.1], [0.8, 0.2], [0.1, 0.9], [0.2, 0.8], [0.95, 0.05]])
    >>> find_label_issues(np.array([0, 0, 1, 1, 1]), p).tolist()
    [False, False, False, False, True]
    """
    del n_jobs
    if filter_by in _REFUSED_FILTERS:
        raise RelationsError(f"filter_by={filter_by!r} is not supported; use one of {_FILTERS}")
    if filter_by not in _FILTERS:
        hint = " ('confident_joint' is now called 'confident_learning', as in cleanlab)" if filter_by == "confident_joint" else ""
        raise RelationsError(f"The 'filter_by' parameter of find_label_issues must be one of {_FILTERS}. Got {filter_by!r} instead{hint}.")
    if return_indices_ranked_by is not None and return_indices_ranked_by not in _RANKINGS:
        raise RelationsError(f"return_indices_ranked_by must be None or one of {_RANKINGS}, got {return_indices_ranked_by!r}")
    labels, probs = _check(labels, pred_probs, label_names)
    k = probs.shape[1]
    if confident_joint is not None:
        confident_joint = np.asarray(confident_joint)
        if confident_joint.shape != (k, k):
            raise RelationsError(f"confident_joint must have shape ({k}, {k}), got {confident_joint.shape}")
    if num_to_remove_per_class is not None:
        if filter_by in ("confident_learning", "predicted_neq_given"):
            raise RelationsError(f"num_to_remove_per_class is not supported with filter_by={filter_by!r}")
        if len(num_to_remove_per_class) != k:
            raise RelationsError(f"num_to_remove_per_class must have {k} entries, got {len(num_to_remove_per_class)}")
    if filter_by in ("confident_learning", "predicted_neq_given") and frac_noise != 1.0:
        warnings.warn(f"frac_noise is ignored with filter_by={filter_by!r}", stacklevel=2)
    mask = _find_label_issues(
        labels, probs, filter_by=filter_by, frac_noise=frac_noise, num_to_remove_per_class=num_to_remove_per_class,
        min_examples_per_class=min_examples_per_class, cj=confident_joint,
    )
    if return_indices_ranked_by is None:
        return mask
    scores = _scores(labels, probs, return_indices_ranked_by, **(rank_by_kwargs or {}))
    return _rank(scores, mask)


def _find_label_issues(
    labels: np.ndarray, probs: np.ndarray, *, filter_by: str, frac_noise: float = 1.0,
    num_to_remove_per_class=None, min_examples_per_class: int = 1, cj: np.ndarray | None = None,
) -> np.ndarray:
    n, k = probs.shape
    mask = np.zeros(n, dtype=bool)
    if filter_by == "predicted_neq_given":
        mask = probs.argmax(axis=1) != labels
    elif filter_by == "confident_learning":
        mask[_confident_joint(labels, probs, calibrate=True)[1]] = True
    if filter_by in ("prune_by_noise_rate", "prune_by_class", "both"):
        if cj is None:
            cj = _confident_joint(labels, probs, calibrate=True)[0]
        counts = np.bincount(labels, minlength=k)
        prune = _prune_counts(cj, min_examples_per_class, frac_noise)
        if num_to_remove_per_class is not None:
            prune = _fixed_removals(prune, num_to_remove_per_class, counts)
        by_class = np.ones(n, dtype=bool)
        by_noise = np.ones(n, dtype=bool)
        if filter_by in ("prune_by_class", "both"):
            by_class = _prune_per_class(labels, probs, prune, min_examples_per_class, _lowest_given_prob)
        if filter_by in ("prune_by_noise_rate", "both"):
            by_noise = _prune_per_class(labels, probs, prune, min_examples_per_class, _largest_margins)
        mask = by_class & by_noise
    # never flag an example whose label is the argmax (a tie within 1e-6 counts for the label)
    nudged = probs.copy()
    nudged[np.arange(n), labels] += _EPS
    mask &= nudged.argmax(axis=1) != labels
    return mask


def _lowest_given_prob(p: np.ndarray, k: int, prune: np.ndarray) -> np.ndarray:
    """Flag the n_k - prune[k, k] examples (labelled k) with the lowest p̂_k."""
    flags = np.zeros(len(p), dtype=bool)
    n_issues = len(p) - prune[k, k]
    if n_issues >= 1:
        flags[np.argsort(p[:, k])[:n_issues]] = True
    return flags


def _largest_margins(p: np.ndarray, k: int, prune: np.ndarray) -> np.ndarray:
    """For each j != k, flag the prune[j, k] examples (labelled k) with the largest p̂_j - p̂_k."""
    flags = np.zeros(len(p), dtype=bool)
    for j in range(p.shape[1]):
        if j != k and prune[j, k] > 0:
            flags[np.argsort(-(p[:, j] - p[:, k]))[: prune[j, k]]] = True
    return flags


def _prune_per_class(labels, probs, prune, min_examples_per_class, flag) -> np.ndarray:
    mask = np.zeros(len(labels), dtype=bool)
    for k in range(probs.shape[1]):
        members = np.flatnonzero(labels == k)
        # cleanlab leaves classes of fewer than two examples unflagged whatever min_examples_per_class says
        if len(members) <= min_examples_per_class or len(members) < 2:
            if 0 < len(members) <= min_examples_per_class:
                warnings.warn(f"May not flag all label issues in class {k}: it has only {len(members)} example(s) "
                              f"(min_examples_per_class={min_examples_per_class})", stacklevel=3)
            continue
        mask[members] = flag(probs[members], k, prune)
    return mask


def label_quality_scores(
    labels, pred_probs, *, method: str = "self_confidence", adjust_pred_probs: bool = False,
    label_names: Sequence | None = None,
) -> np.ndarray:
    """A score per example; low means the given label is likely wrong (cleanlab's ``rank.get_label_quality_scores``).

    ``self_confidence`` is p̂_ỹ(x); ``normalized_margin`` is (p̂_ỹ − max_{k≠ỹ} p̂_k + 1) / 2;
    ``confidence_weighted_entropy`` is log(1 + r) / max(r, 1e-6) with r = H(p̂) / log K / max(p̂_ỹ, 1e-6).
    ``adjust_pred_probs`` first subtracts the per-class thresholds from p̂, shifts by the largest threshold and
    renormalises each row (not for ``confidence_weighted_entropy``).

    Returns
    -------
    ndarray of float, shape (n,)
    """
    if method not in _RANKINGS:
        raise RelationsError(f"The 'method' parameter of label_quality_scores must be one of {_RANKINGS}. Got {method!r} instead.")
    labels, probs = _check(labels, pred_probs, label_names)
    return _scores(labels, probs, method, adjust_pred_probs=adjust_pred_probs)


def _scores(labels: np.ndarray, probs: np.ndarray, method: str, *, adjust_pred_probs: bool = False) -> np.ndarray:
    if method not in _RANKINGS:
        raise RelationsError(f"The 'method' parameter of label_quality_scores must be one of {_RANKINGS}. Got {method!r} instead.")
    if adjust_pred_probs:
        if method == "confidence_weighted_entropy":
            raise RelationsError("adjust_pred_probs is not supported with method='confidence_weighted_entropy'")
        t = _thresholds(labels, probs)
        probs = probs - t + t.max()
        probs = probs / probs.sum(axis=1, keepdims=True)
    rows = np.arange(len(labels))
    given = probs[rows, labels]
    if method == "self_confidence":
        return given
    if method == "normalized_margin":
        others = probs.copy()
        others[rows, labels] = -np.inf
        return (given - others.max(axis=1) + 1.0) / 2.0
    from scipy.special import xlogy

    if probs.max(initial=0.0) > 1:
        raise RelationsError("confidence_weighted_entropy needs probabilities in [0, 1]")
    entropy = -np.sum(xlogy(probs, probs), axis=1) / np.log(probs.shape[1])
    ratio = entropy / np.maximum(given, _EPS)
    return np.log(ratio + 1) / np.maximum(ratio, _EPS)


def _rank(scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Indices of the flagged examples, lowest score first (ties in numpy's default sort order, as cleanlab)."""
    flagged = np.flatnonzero(mask)
    return flagged[np.argsort(scores[flagged])]


def rank_label_issues(
    labels, pred_probs, *, method: str = "self_confidence", mask: np.ndarray | None = None,
    label_names: Sequence | None = None,
) -> np.ndarray:
    """Indices of examples ordered from most to least likely mislabelled (only flagged ones if ``mask`` is given);
    with a mask, cleanlab's ``rank.order_label_issues``."""
    labels, probs = _check(labels, pred_probs, label_names)
    scores = _scores(labels, probs, method)
    mask = np.ones(len(labels), dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    return _rank(scores, mask)


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
