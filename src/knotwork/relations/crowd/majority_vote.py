"""Majority vote over crowd answers, the adjudication rule of the Re-TACRED rounds."""

from __future__ import annotations

import numpy as np
import pandas as pd

from knotwork.relations.crowd._base import check_answers, encode_answers, require_fitted, vote_counts


class MajorityVote:
    """Majority vote: each task gets the label most workers chose.

    Ties go to the first label in sorted order (as crowd-kit's column order) and are reported in ``ties_`` so
    that a caller can send tied tasks to another annotator, as the Re-TACRED protocol does.

    Attributes
    ----------
    labels_ : pandas.Series
        Aggregated label, indexed by ``task``.
    probas_ : pandas.DataFrame
        Vote shares, tasks × labels (rows sum to 1).
    ties_ : pandas.Series of bool
        True where the top label was tied.
    skills_ : pandas.Series
        Each worker's agreement with the aggregated labels.

    Examples
    --------
    >>> df = pd.DataFrame({"task": [1, 1, 1], "worker": ["a", "b", "c"], "label": ["x", "y", "x"]})
    >>> MajorityVote().fit_predict(df).tolist()
    ['x']
    """

    def fit(self, data: pd.DataFrame) -> MajorityVote:
        """Aggregate ``data`` (columns ``task, worker, label``) and return ``self``."""
        data = check_answers(data)
        enc = encode_answers(data)
        counts = vote_counts(enc)  # (n_tasks, n_labels)
        top = counts.argmax(axis=1)
        n_top = (counts == counts.max(axis=1, keepdims=True)).sum(axis=1)
        self.probas_ = pd.DataFrame(counts / counts.sum(axis=1, keepdims=True), index=enc.tasks, columns=enc.labels)
        self.labels_ = pd.Series(enc.labels.to_numpy()[top], index=enc.tasks, name="agg_label")
        self.ties_ = pd.Series(n_top > 1, index=enc.tasks, name="tie")
        hit = top[enc.task] == enc.label
        n_w = len(enc.workers)
        skills = np.bincount(enc.worker, weights=hit, minlength=n_w) / np.bincount(enc.worker, minlength=n_w)
        self.skills_ = pd.Series(skills, index=enc.workers, name="skill")
        return self

    def fit_predict(self, data: pd.DataFrame) -> pd.Series:
        """Fit and return ``labels_``."""
        return self.fit(data).labels_

    def predict(self) -> pd.Series:
        require_fitted(self, "labels_")
        return self.labels_
