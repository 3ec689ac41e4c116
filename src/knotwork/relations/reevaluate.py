"""Re-evaluating models on two label versions: score deltas, bootstrap intervals and ranking stability."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
from scipy.stats import kendalltau

from knotwork._errors import RelationsError, check_positive_int
from knotwork._progress import as_callback
from knotwork.relations.labels import NEGATIVE_LABEL, relation_category
from knotwork.relations.scorer import score


@dataclass(frozen=True)
class ModelDelta:
    """One model's micro F1 on both label versions, with paired bootstrap intervals (level ``ci``)."""

    model: str
    f1_before: float
    f1_after: float
    delta: float
    ci_before: tuple[float, float]
    ci_after: tuple[float, float]
    ci_delta: tuple[float, float]


@dataclass(frozen=True)
class Reevaluation:
    """Result of :func:`reevaluate`.

    Attributes
    ----------
    models : tuple of ModelDelta
        In the order given.
    per_relation : dict of str to dict of model to (f1_before, f1_after)
    per_category : dict of str to dict of model to (f1_before, f1_after)
    kendall_tau : float
        Between the models' F1 rankings on the two versions (tau-b; NaN with fewer than 2 models).
    n_flips : int
        Model pairs whose order changes.
    """

    models: tuple[ModelDelta, ...]
    per_relation: dict[str, dict[str, tuple[float, float]]]
    per_category: dict[str, dict[str, tuple[float, float]]]
    kendall_tau: float
    n_flips: int


def _f1_restricted(gold: list[str], pred: list[str], keep: set[str], negative: str) -> float:
    """Micro F1 counting only relations in ``keep`` as positives (everything else becomes the negative label)."""
    g = [x if x in keep else negative for x in gold]
    p = [x if x in keep else negative for x in pred]
    return score(g, p, negative_label=negative).f1


def reevaluate(
    predictions: Mapping[str, Mapping[str, str]],
    gold_before: Mapping[str, str],
    gold_after: Mapping[str, str],
    *,
    category_of: Callable[[str], str] | Mapping[str, str] = relation_category,
    negative_label: str = NEGATIVE_LABEL,
    n_bootstrap: int = 1000,
    ci: float = 0.95,
    seed: int | np.random.Generator | None = None,
    progress: bool = False,
) -> Reevaluation:
    """Score several models on two label versions of the same test set and compare.

    The "before" version is scored on its ids and the "after" version on its ids (Re-TACRED removes examples, so
    these may differ). Intervals come from a paired bootstrap over the union of ids: each resample scores every
    model on both versions, so the delta's interval accounts for the shared examples.

    Parameters
    ----------
    predictions : mapping of model name to {id: label}
        Every model must predict every id of both versions.
    gold_before, gold_after : mapping of id to label
    category_of : callable or mapping, default :func:`~knotwork.relations.labels.relation_category`
        Groups positive relations into categories; a category's F1 counts only its relations as positives.
    n_bootstrap : int, default 1000
        0 disables intervals (they are then NaN).
    ci : float, default 0.95
    seed : int or numpy Generator
    progress : bool or callable, default False
        Report the bootstrap resamples (the slow part with many models and large test sets): True draws a bar on
        stderr, a callable is called with the number of resamples just finished.

    Raises
    ------
    RelationsError
        When no model is given, or a model lacks a prediction for some id (naming the model and the id).
    """
    if not predictions:
        raise RelationsError("predictions is empty; give at least one model")
    check_positive_int(n_bootstrap, "n_bootstrap", minimum=0, error=RelationsError)
    if not 0 < ci < 1:
        raise RelationsError(f"ci must be in (0, 1), got {ci}")
    ids = sorted(set(gold_before) | set(gold_after))
    for model, pred in predictions.items():
        missing = [i for i in ids if i not in pred]
        if missing:
            raise RelationsError(f"model {model!r} has no prediction for {len(missing)} id(s), e.g. {missing[:3]}")
    cat = category_of.get if isinstance(category_of, Mapping) else category_of
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)

    ids_b, ids_a = [i for i in ids if i in gold_before], [i for i in ids if i in gold_after]
    gb, ga = [gold_before[i] for i in ids_b], [gold_after[i] for i in ids_a]
    preds_b = {m: [p[i] for i in ids_b] for m, p in predictions.items()}
    preds_a = {m: [p[i] for i in ids_a] for m, p in predictions.items()}
    in_b = np.array([i in gold_before for i in ids])
    in_a = np.array([i in gold_after for i in ids])
    pos_b = np.cumsum(in_b) - 1  # position of each union id inside ids_b
    pos_a = np.cumsum(in_a) - 1

    boot: dict[str, np.ndarray] = {m: np.full((n_bootstrap, 2), np.nan) for m in predictions}
    update, close = as_callback(progress, total=n_bootstrap, desc="bootstrap")
    for r in range(n_bootstrap):
        sample = rng.integers(len(ids), size=len(ids))
        sb, sa = pos_b[sample[in_b[sample]]], pos_a[sample[in_a[sample]]]
        for m in predictions:
            boot[m][r, 0] = score([gb[j] for j in sb], [preds_b[m][j] for j in sb], negative_label=negative_label).f1
            boot[m][r, 1] = score([ga[j] for j in sa], [preds_a[m][j] for j in sa], negative_label=negative_label).f1
        update(1)
    close()
    lo, hi = (1 - ci) / 2 * 100, (1 + ci) / 2 * 100

    def interval(x: np.ndarray) -> tuple[float, float]:
        return (float("nan"), float("nan")) if n_bootstrap == 0 else (float(np.percentile(x, lo)), float(np.percentile(x, hi)))

    models = []
    for m in predictions:
        fb = score(gb, preds_b[m], negative_label=negative_label).f1
        fa = score(ga, preds_a[m], negative_label=negative_label).f1
        b = boot[m]
        models.append(ModelDelta(m, fb, fa, fa - fb, interval(b[:, 0]), interval(b[:, 1]), interval(b[:, 1] - b[:, 0])))

    relations = sorted((set(gb) | set(ga)) - {negative_label})
    per_relation = {
        rel: {m: (_f1_restricted(gb, preds_b[m], {rel}, negative_label), _f1_restricted(ga, preds_a[m], {rel}, negative_label)) for m in predictions}
        for rel in relations
    }
    categories: dict[str, set[str]] = {}
    for rel in relations:
        c = cat(rel)
        if c is not None:
            categories.setdefault(c, set()).add(rel)
    per_category = {
        c: {m: (_f1_restricted(gb, preds_b[m], rels, negative_label), _f1_restricted(ga, preds_a[m], rels, negative_label)) for m in predictions}
        for c, rels in sorted(categories.items())
    }
    before = np.array([d.f1_before for d in models])
    after = np.array([d.f1_after for d in models])
    tau = float(kendalltau(before, after).statistic) if len(models) > 1 else float("nan")
    flips = sum(
        1
        for i in range(len(models))
        for j in range(i + 1, len(models))
        if (before[i] - before[j]) * (after[i] - after[j]) < 0
    )
    return Reevaluation(tuple(models), per_relation, per_category, tau, flips)
