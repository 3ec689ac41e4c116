"""Checking and encoding a crowd answer table ``(task, worker, label)`` once, at the public edge."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from knotwork._errors import NotFittedError, RelationsError

REQUIRED_COLUMNS = ("task", "worker", "label")


@dataclass(frozen=True)
class EncodedAnswers:
    """Integer codes of an answer table; ``tasks[t]``, ``workers[w]``, ``labels[k]`` give the original values."""

    task: np.ndarray  # (n_answers,) int64 codes into `tasks`
    worker: np.ndarray  # (n_answers,)
    label: np.ndarray  # (n_answers,)
    tasks: pd.Index
    workers: pd.Index
    labels: pd.Index


def check_answers(data: pd.DataFrame) -> pd.DataFrame:
    """Return the ``task, worker, label`` columns of ``data`` after checking them.

    Raises
    ------
    TypeError
        When ``data`` is not a DataFrame.
    RelationsError
        Naming missing columns, or the first row with an empty value.
    """
    if not isinstance(data, pd.DataFrame):
        raise TypeError(f"answers must be a pandas DataFrame with columns {REQUIRED_COLUMNS}, got {type(data).__name__}")
    missing = [c for c in REQUIRED_COLUMNS if c not in data.columns]
    if missing:
        raise RelationsError(f"answers lack column(s) {missing}; expected columns {list(REQUIRED_COLUMNS)}")
    out = data.loc[:, list(REQUIRED_COLUMNS)]
    null = out.isna().any(axis=1).to_numpy()
    if null.any():
        row = int(np.flatnonzero(null)[0])
        raise RelationsError(f"answers row {row} has an empty value: {out.iloc[row].to_dict()}")
    return out


def encode_answers(data: pd.DataFrame, labels: pd.Index | None = None) -> EncodedAnswers:
    """Factorize tasks, workers and labels (labels sorted, so ties break the same way as crowd-kit's columns)."""
    task_codes, tasks = pd.factorize(data["task"], sort=False)
    worker_codes, workers = pd.factorize(data["worker"], sort=False)
    if labels is None:
        label_codes, label_index = pd.factorize(data["label"], sort=True)
    else:
        label_index = pd.Index(labels)
        label_codes = label_index.get_indexer(data["label"])
        if (label_codes < 0).any():
            bad = data["label"].to_numpy()[label_codes < 0][0]
            raise RelationsError(f"answer label {bad!r} is not in the given label set")
    return EncodedAnswers(
        task=np.asarray(task_codes, dtype=np.int64),
        worker=np.asarray(worker_codes, dtype=np.int64),
        label=np.asarray(label_codes, dtype=np.int64),
        tasks=pd.Index(tasks, name="task"),
        workers=pd.Index(workers, name="worker"),
        labels=pd.Index(label_index, name="label"),
    )


def vote_counts(enc: EncodedAnswers, weights: np.ndarray | None = None) -> np.ndarray:
    """Votes per task and label, shape (n_tasks, n_labels), optionally weighted per answer."""
    n_t, n_k = len(enc.tasks), len(enc.labels)
    flat = np.bincount(enc.task * n_k + enc.label, weights=weights, minlength=n_t * n_k)
    return flat.reshape(n_t, n_k).astype(float)


def require_fitted(model: object, attr: str) -> None:
    if not hasattr(model, attr):
        raise NotFittedError(f"{type(model).__name__} is not fitted yet; call fit(answers) first")
