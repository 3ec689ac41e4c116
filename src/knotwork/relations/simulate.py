"""Simulation for studies and tests: realistic label noise and crowd annotators of known accuracy."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from knotwork._errors import RelationsError


def _rng(seed: int | np.random.Generator | None) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def confusion_noise_weights(confusion: np.ndarray, *, negative_index: int | None = 0, negative_share: float = 0.5) -> np.ndarray:
    """Row-stochastic flip weights W[i, j] (i != j) from a model's confusion matrix.

    Real annotation errors concentrate where models are confused (TACREV, Re-TACRED §5): swaps between similar
    relations and to/from ``no_relation``. Off-diagonal confusion counts (+1 smoothing, so every pair is possible)
    give the shape; then, for every positive class, ``negative_share`` of its flip mass goes to the negative
    class, and the negative class flips to positives in proportion to the confusion.

    Parameters
    ----------
    confusion : array of shape (K, K)
        ``confusion[i, j]`` counts gold i predicted as j (e.g. out-of-fold on the clean data).
    negative_index : int or None, default 0
        Row/column of ``no_relation``; None for a label set without one.
    negative_share : float in [0, 1], default 0.5

    Returns
    -------
    ndarray of shape (K, K), zero diagonal, rows summing to 1
    """
    conf = np.asarray(confusion, dtype=float)
    if conf.ndim != 2 or conf.shape[0] != conf.shape[1]:
        raise RelationsError(f"confusion must be square, got shape {conf.shape}")
    if not 0.0 <= negative_share <= 1.0:
        raise RelationsError(f"negative_share must be in [0, 1], got {negative_share}")
    w = conf + 1.0
    np.fill_diagonal(w, 0.0)
    if negative_index is not None:
        pos = np.ones(len(w), dtype=bool)
        pos[negative_index] = False
        w[pos, negative_index] = 0.0
        w[pos] = w[pos] / w[pos].sum(axis=1, keepdims=True) * (1.0 - negative_share)
        w[pos, negative_index] = negative_share
    return w / w.sum(axis=1, keepdims=True)


def inject_label_noise(
    labels: Sequence[int] | np.ndarray,
    *,
    rate: float,
    weights: np.ndarray | None = None,
    seed: int | np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Flip exactly ``round(rate * n)`` labels, chosen uniformly, to another class drawn from ``weights``.

    Parameters
    ----------
    labels : array of int, shape (n,)
    rate : float in [0, 1)
    weights : array of shape (K, K), optional
        Flip weights per row (see :func:`confusion_noise_weights`); uniform over the other classes by default.
    seed : int or numpy Generator

    Returns
    -------
    noisy : ndarray of int, shape (n,)
    flipped : ndarray of bool, shape (n,)
    """
    y = np.asarray(labels, dtype=np.int64)
    if not 0.0 <= rate < 1.0:
        raise RelationsError(f"rate must be in [0, 1), got {rate}")
    k = int(y.max()) + 1 if weights is None else len(weights)
    if weights is None:
        weights = np.ones((k, k)) - np.eye(k)
    w = np.asarray(weights, dtype=float)
    if (y >= len(w)).any():
        raise RelationsError(f"labels go up to {y.max()} but weights has {len(w)} rows")
    rng = _rng(seed)
    n_flip = int(round(rate * len(y)))
    idx = rng.choice(len(y), size=n_flip, replace=False)
    noisy = y.copy()
    cum = np.cumsum(w / w.sum(axis=1, keepdims=True), axis=1)  # (K, K) per-row CDFs for inverse sampling
    u = rng.random(n_flip)
    noisy[idx] = np.minimum((cum[y[idx]] < u[:, None]).sum(axis=1), k - 1)
    flipped = noisy != y
    return noisy, flipped


def simulate_annotations(
    true_labels: pd.Series,
    worker_accuracy: pd.Series,
    *,
    n_per_task: int = 2,
    choices: Sequence[str] | None = None,
    confusable: dict[str, Sequence[str]] | None = None,
    confusable_share: float = 0.7,
    seed: int | np.random.Generator | None = None,
) -> pd.DataFrame:
    """Answers of simulated workers: each answers correctly with its accuracy, else picks a wrong choice.

    A wrong answer goes, with probability ``confusable_share``, to one of the true label's confusable labels
    (when given), otherwise uniformly to any other choice, mimicking annotators who mix up similar relations.

    Parameters
    ----------
    true_labels : pandas.Series
        True label per task, indexed by task id.
    worker_accuracy : pandas.Series
        Accuracy in [0, 1] per worker id.
    n_per_task : int, default 2
        Distinct workers per task (must not exceed the number of workers).
    choices : sequence of str, optional
        Answer options; the distinct true labels by default.
    seed : int or numpy Generator

    Returns
    -------
    pandas.DataFrame with columns ``task, worker, label``
    """
    rng = _rng(seed)
    if n_per_task > len(worker_accuracy):
        raise RelationsError(f"n_per_task={n_per_task} exceeds the {len(worker_accuracy)} workers")
    choices = list(choices) if choices is not None else sorted(set(true_labels))
    unknown = set(true_labels) - set(choices)
    if unknown:
        raise RelationsError(f"true labels {sorted(unknown)[:5]} are not among the choices")
    workers = worker_accuracy.index.to_numpy()
    acc = worker_accuracy.to_numpy(dtype=float)
    n = len(true_labels)
    # Distinct workers per task: the first n_per_task of a random permutation (argsort of uniform keys).
    picks = np.argsort(rng.random((n, len(workers))), axis=1)[:, :n_per_task]  # (n, n_per_task)
    truth = np.repeat(true_labels.to_numpy(), n_per_task)
    w_idx = picks.ravel()
    correct = rng.random(len(w_idx)) < acc[w_idx]
    answers = truth.astype(object)
    for a in np.flatnonzero(~correct):
        t = truth[a]
        near = [c for c in (confusable or {}).get(t, ()) if c != t and c in choices]
        if near and rng.random() < confusable_share:
            answers[a] = near[rng.integers(len(near))]
        else:
            others = [c for c in choices if c != t]
            answers[a] = others[rng.integers(len(others))]
    return pd.DataFrame(
        {"task": np.repeat(true_labels.index.to_numpy(), n_per_task), "worker": workers[w_idx], "label": answers}
    )


def simulate_task_answers(
    tasks: Sequence,
    true_labels: Mapping[str, str],
    worker_accuracy: pd.Series,
    *,
    n_workers: int = 2,
    exclude: Mapping[str, set] | None = None,
    confusable: Mapping[str, Sequence[str]] | None = None,
    confusable_share: float = 0.7,
    seed: int | np.random.Generator | None = None,
) -> pd.DataFrame:
    """Simulate a platform: ``n_workers`` distinct workers take each task and answer all its sentences.

    A worker is right with its accuracy; the right answer is the true label when it is among the task's
    choices, else ``wrong_type``. Wrong answers go to a confusable choice with probability ``confusable_share``,
    else to a uniformly drawn other choice.

    Parameters
    ----------
    tasks : sequence of AnnotationTask
    true_labels : mapping of sentence id to label
        Must cover every item, gold included.
    worker_accuracy : pandas.Series
        Accuracy per worker id (the pool that may take tasks).
    exclude : mapping of sentence id to set of workers, optional
        Workers that already answered a sentence; they are not given a task containing it again.
    seed : int or numpy Generator

    Returns
    -------
    pandas.DataFrame with columns ``task`` (sentence id), ``worker``, ``label``, ``group``, ``hit``

    Raises
    ------
    RelationsError
        When a task cannot get ``n_workers`` eligible workers (naming the task) or an item has no true label.
    """
    from knotwork.relations.annotation.tasks import WRONG_TYPE

    rng = _rng(seed)
    exclude = exclude or {}
    pool = worker_accuracy.index.to_numpy()
    acc = dict(zip(pool, worker_accuracy.to_numpy(dtype=float), strict=True))
    rows: list[tuple[str, object, str, str, str]] = []
    for task in tasks:
        banned = set().union(*(exclude.get(it.example_id, set()) for it in task.items))
        eligible = [w for w in pool if w not in banned]
        if len(eligible) < n_workers:
            raise RelationsError(f"task {task.task_id}: only {len(eligible)} eligible workers for {n_workers} assignments")
        chosen = rng.choice(len(eligible), size=n_workers, replace=False)
        for c in chosen:
            worker = eligible[c]
            for item in task.items:
                if item.example_id not in true_labels:
                    raise RelationsError(f"task {task.task_id}: sentence {item.example_id!r} has no true label")
                truth = true_labels[item.example_id]
                right = truth if truth in task.choices else WRONG_TYPE
                if rng.random() < acc[worker]:
                    answer = right
                else:
                    near = [x for x in (confusable or {}).get(truth, ()) if x in task.choices and x != right]
                    if near and rng.random() < confusable_share:
                        answer = near[rng.integers(len(near))]
                    else:
                        others = [x for x in task.choices if x != right]
                        answer = others[rng.integers(len(others))]
                rows.append((item.example_id, worker, answer, task.group, task.task_id))
    return pd.DataFrame(rows, columns=["task", "worker", "label", "group", "hit"])
