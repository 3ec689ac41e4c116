"""Re-evaluating models on several label versions of one test set: F1 with paired bootstrap intervals, mean shifts,
Kendall's tau between the versions' rankings, and the models whose rank moves most.

:func:`reevaluate_versions` is the engine: every version is scored on its own ids (Re-TACRED removes examples),
after mapping the predictions into the version's label set, and one paired bootstrap over the union of ids
(the same resamples for every model and version) gives every interval. :func:`reevaluate` is its two-version form
with per-relation and per-category tables.

Cost: the counts of one resample are a weighted sum over examples, so ``B`` resamples of ``n`` examples cost one
``(B, n) @ (n, 2 * models * versions + versions)`` product in float32 (exact: every count stays below 2**24),
done in chunks of resamples; no Python loop runs over models or examples inside the bootstrap.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import kendalltau, rankdata

from knotwork._errors import RelationsError, check_positive_int
from knotwork._progress import as_callback
from knotwork.relations.labels import NEGATIVE_LABEL, relation_category
from knotwork.relations.scorer import score

#: Resamples per matrix product: bounds the weight matrix at CHUNK * n float32 values.
_CHUNK = 64


@dataclass(frozen=True)
class LabelVersion:
    """One label version of a test set.

    Attributes
    ----------
    gold : mapping of id to label
        The version's gold labels; only these ids are scored on it.
    label_map : mapping of str to str, optional
        Applied to the predictions before they are scored on this version (labels not in the map keep their name),
        e.g. :data:`~knotwork.relations.labelmaps.RETACRED_MAP`. Gold labels are taken as they are.
    ignore : frozenset of str
        Relations scored as the negative label, in gold and (mapped) predictions alike: they leave the micro average
        while their examples stay, as negatives.
    labels : collection of str, optional
        The version's label set: a gold label or a mapped prediction outside it is an error.
    source : str, optional
        Names the gold labels in errors (e.g. the patch file).
    """

    gold: Mapping[str, str]
    label_map: Mapping[str, str] | None = None
    ignore: frozenset[str] = frozenset()
    labels: Collection[str] | None = None
    source: str | None = None


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its bootstrap percentile interval (NaN bounds without resamples)."""

    value: float
    low: float
    high: float


@dataclass(frozen=True)
class RankMove:
    """A model's rank (1 = best F1) on two versions; ``move`` > 0 means it ranks higher on the second."""

    model: str
    rank_a: int
    rank_b: int
    move: int


@dataclass(frozen=True)
class VersionScores:
    """Result of :func:`reevaluate_versions`.

    Attributes
    ----------
    models, versions : tuple of str
        Row and column order of the arrays.
    n_examples, n_positive : tuple of int
        Examples scored on each version, and those with a positive gold label (after ``ignore``).
    precision, recall, f1 : ndarray of shape (models, versions)
    boot_f1 : ndarray of shape (n_bootstrap, models, versions)
        F1 of every resample (the same resampled examples for every model and version).
    ci : float
        Level of every interval.
    """

    models: tuple[str, ...]
    versions: tuple[str, ...]
    n_examples: tuple[int, ...]
    n_positive: tuple[int, ...]
    precision: np.ndarray = field(compare=False, repr=False)
    recall: np.ndarray = field(compare=False, repr=False)
    f1: np.ndarray = field(compare=False, repr=False)
    boot_f1: np.ndarray = field(compare=False, repr=False)
    ci: float = 0.95

    # ------------------------------------------------------------------------------------------ helpers

    def _v(self, version: str) -> int:
        if version not in self.versions:
            raise RelationsError(f"unknown version {version!r}; the versions are {list(self.versions)}")
        return self.versions.index(version)

    def _m(self, models: Sequence[str] | None) -> np.ndarray:
        if models is None:
            return np.arange(len(self.models))
        unknown = [m for m in models if m not in self.models]
        if unknown:
            raise RelationsError(f"unknown model(s) {unknown[:3]}; the models are {list(self.models)[:5]}...")
        return np.array([self.models.index(m) for m in models], dtype=np.int64)

    def _estimate(self, point: float, boot: np.ndarray) -> Estimate:
        low, high = percentile_interval(boot, self.ci)
        return Estimate(float(point), low, high)

    # ------------------------------------------------------------------------------------------ summaries

    def f1_interval(self, model: str, version: str) -> Estimate:
        """One model's F1 on one version, with its interval."""
        m, v = self._m([model])[0], self._v(version)
        return self._estimate(self.f1[m, v], self.boot_f1[:, m, v])

    def mean_f1(self, version: str, models: Sequence[str] | None = None) -> Estimate:
        """The models' mean F1 on a version."""
        m, v = self._m(models), self._v(version)
        return self._estimate(self.f1[m, v].mean(), self.boot_f1[:, m, v].mean(axis=1))

    def mean_shift(self, a: str, b: str, models: Sequence[str] | None = None) -> Estimate:
        """Mean over models of F1 on ``b`` minus F1 on ``a`` (paired: one interval from the shared resamples)."""
        m, va, vb = self._m(models), self._v(a), self._v(b)
        return self._estimate((self.f1[m, vb] - self.f1[m, va]).mean(),
                              (self.boot_f1[:, m, vb] - self.boot_f1[:, m, va]).mean(axis=1))

    def kendall_tau(self, a: str, b: str, models: Sequence[str] | None = None) -> Estimate:
        """Kendall's tau-b between the models' F1 on ``a`` and on ``b`` (NaN with fewer than 2 models)."""
        m, va, vb = self._m(models), self._v(a), self._v(b)
        if len(m) < 2:
            return Estimate(float("nan"), float("nan"), float("nan"))
        point = float(kendalltau(self.f1[m, va], self.f1[m, vb]).statistic)
        return self._estimate(point, tau_b(self.boot_f1[:, m, va], self.boot_f1[:, m, vb]))

    def n_flips(self, a: str, b: str, models: Sequence[str] | None = None) -> int:
        """Model pairs whose order on ``a`` is reversed on ``b``."""
        m, va, vb = self._m(models), self._v(a), self._v(b)
        i, j = np.triu_indices(len(m), 1)
        x, y = self.f1[m, va], self.f1[m, vb]
        return int(((x[i] - x[j]) * (y[i] - y[j]) < 0).sum())

    def ranks(self, version: str, models: Sequence[str] | None = None) -> np.ndarray:
        """Rank of each model (1 = best F1; ties share the best rank) among ``models``."""
        m, v = self._m(models), self._v(version)
        return rankdata(-self.f1[m, v], method="min").astype(np.int64)

    def rank_interval(self, version: str, models: Sequence[str] | None = None) -> np.ndarray:
        """Percentile interval of each model's rank over the resamples: shape (models, 2)."""
        m, v = self._m(models), self._v(version)
        if self.boot_f1.shape[0] == 0:
            return np.full((len(m), 2), np.nan)
        boot = rankdata(-self.boot_f1[:, m, v], method="min", axis=1)
        return np.stack([percentile_interval(boot[:, k], self.ci) for k in range(len(m))])

    def rank_moves(self, a: str, b: str, models: Sequence[str] | None = None) -> list[RankMove]:
        """Every model's ranks on ``a`` and ``b``, largest move first (ties by name)."""
        names = [self.models[k] for k in self._m(models)]
        ra, rb = self.ranks(a, models), self.ranks(b, models)
        moves = [RankMove(n, int(x), int(y), int(x - y)) for n, x, y in zip(names, ra, rb, strict=True)]
        return sorted(moves, key=lambda r: (-abs(r.move), r.model))

    def to_dict(self, models: Sequence[str] | None = None) -> dict:
        """A JSON-ready summary: per-model scores and intervals, and for every version pair the mean shift,
        Kendall's tau with its interval and the rank flips (over ``models``, default all)."""
        idx = self._m(models)
        names = [self.models[k] for k in idx]
        rows = []
        for k, name in zip(idx, names, strict=True):
            rows.append({
                "model": name,
                **{v: {"precision": float(self.precision[k, j]), "recall": float(self.recall[k, j]),
                       "f1": float(self.f1[k, j]), "f1_ci": list(percentile_interval(self.boot_f1[:, k, j], self.ci))}
                   for j, v in enumerate(self.versions)},
            })
        for v in self.versions:
            for row, rank in zip(rows, self.ranks(v, names), strict=True):
                row[v]["rank"] = int(rank)
        pairs = []
        for i, a in enumerate(self.versions):
            for b in self.versions[i + 1:]:
                shift, tau = self.mean_shift(a, b, names), self.kendall_tau(a, b, names)
                pairs.append({"a": a, "b": b, "mean_shift": vars(shift), "kendall_tau": vars(tau),
                              "n_flips": self.n_flips(a, b, names)})
        return {
            "versions": [{"name": v, "n_examples": n, "n_positive": p, "mean_f1": vars(self.mean_f1(v, names))}
                         for v, n, p in zip(self.versions, self.n_examples, self.n_positive, strict=True)],
            "n_bootstrap": int(self.boot_f1.shape[0]),
            "ci": self.ci,
            "models": rows,
            "pairs": pairs,
        }


def percentile_interval(samples: np.ndarray, ci: float) -> tuple[float, float]:
    """The central ``ci`` percentile interval of ``samples`` (NaN resamples ignored; NaN when none is left)."""
    samples = np.asarray(samples, dtype=float)
    samples = samples[~np.isnan(samples)]
    if samples.size == 0:
        return float("nan"), float("nan")
    lo, hi = (1 - ci) / 2 * 100, (1 + ci) / 2 * 100
    return float(np.percentile(samples, lo)), float(np.percentile(samples, hi))


def tau_b(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall's tau-b between the rows of ``x`` and ``y`` (shape (..., n)), vectorised over the leading axes.

    tau-b = (concordant - discordant) / sqrt(pairs untied in x * pairs untied in y), as
    :func:`scipy.stats.kendalltau`; NaN when either row is constant.
    """
    i, j = np.triu_indices(x.shape[-1], 1)
    sx, sy = np.sign(x[..., i] - x[..., j]), np.sign(y[..., i] - y[..., j])
    den = np.sqrt(np.count_nonzero(sx, axis=-1) * np.count_nonzero(sy, axis=-1).astype(float))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (sx * sy).sum(axis=-1) / np.where(den > 0, den, 1.0), np.nan)


def micro_f1(correct: np.ndarray, guessed: np.ndarray, gold: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall and F1 from count arrays, exactly as the official TACRED scorer (P = 1 with no guess)."""
    correct, guessed, gold = (np.asarray(a, dtype=np.float64) for a in (correct, guessed, gold))
    precision = np.where(guessed > 0, correct / np.where(guessed > 0, guessed, 1.0), 1.0)
    recall = np.where(gold > 0, correct / np.where(gold > 0, gold, 1.0), 0.0)
    total = precision + recall
    f1 = np.where(total > 0, 2.0 * precision * recall / np.where(total > 0, total, 1.0), 0.0)
    return precision, recall, f1


class _Codes:
    """Integer codes of label strings, growing as labels appear (the negative label is 0)."""

    def __init__(self, negative: str) -> None:
        self.index = {negative: 0}
        self.names = [negative]

    def encode(self, labels: Sequence[str]) -> np.ndarray:
        if len(labels) == 0:
            return np.zeros(0, dtype=np.int64)
        uniq, inverse = np.unique(np.asarray(labels, dtype=str), return_inverse=True)  # sorts in C
        index, names = self.index, self.names
        for lab in uniq.tolist():
            if lab not in index:
                index[lab] = len(names)
                names.append(lab)
        return np.array([index[lab] for lab in uniq.tolist()], dtype=np.int64)[inverse.reshape(-1)]

    def code(self, label: str) -> int:
        return int(self.encode([label])[0])


def _version_codes(name: str, version: LabelVersion, ids: list[str], mask: np.ndarray, codes: _Codes,
                   raw: dict[str, np.ndarray], sources: Mapping[str, str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Gold codes (negative outside the version) and mapped prediction codes of one version, validated."""
    gold = np.zeros(len(ids), dtype=np.int64)
    gold[mask] = codes.encode([version.gold[i] for i, keep in zip(ids, mask, strict=True) if keep])
    mapping = version.label_map or {}
    seen = len(codes.names)  # every raw prediction code is below this
    target = codes.encode([mapping.get(lab, lab) for lab in codes.names[:seen]])
    preds = {model: target[raw_codes] for model, raw_codes in raw.items()}
    ignored_codes = codes.encode(sorted(version.ignore))
    names = codes.names
    if version.labels is not None:
        allowed = frozenset(version.labels)
        bad = sorted(set(version.ignore) - allowed)
        if bad:
            raise RelationsError(f"version {name!r}: ignored label {bad[0]!r} is not in its label set "
                                 f"({len(allowed)} labels)")
        ok = np.array([lab in allowed for lab in names])
        where = np.flatnonzero(mask & ~ok[gold])
        if where.size:
            k = int(where[0])
            raise RelationsError(f"{version.source or f'version {name!r}'}: example {ids[k]}: gold label "
                                 f"{names[gold[k]]!r} is not in the label set of version {name!r} ({len(allowed)} labels)")
        for model, pred in preds.items():
            where = np.flatnonzero(mask & ~ok[pred])
            if where.size:
                k = int(where[0])
                orig, mapped = names[raw[model][k]], names[pred[k]]
                how = f" (mapped to {mapped!r})" if mapped != orig else ""
                raise RelationsError(
                    f"{sources.get(model, f'model {model!r}')}: example {ids[k]}: predicted label {orig!r}{how} is not "
                    f"in the label set of version {name!r} ({len(allowed)} labels)"
                )
    keep = np.arange(len(names))
    keep[ignored_codes] = 0  # an ignored relation is scored as the negative label
    return keep[gold], {m: keep[p] for m, p in preds.items()}


def reevaluate_versions(
    predictions: Mapping[str, Mapping[str, str]],
    versions: Mapping[str, LabelVersion | Mapping[str, str]],
    *,
    negative_label: str = NEGATIVE_LABEL,
    n_bootstrap: int = 1000,
    ci: float = 0.95,
    seed: int | np.random.Generator | None = None,
    sources: Mapping[str, str] | None = None,
    progress: bool | Callable[[int], object] = False,
) -> VersionScores:
    """Score every model on every label version, with one paired bootstrap for all intervals.

    Parameters
    ----------
    predictions : mapping of model name to {id: label}
        Every model must predict every id of every version.
    versions : mapping of version name to LabelVersion (or to a bare {id: gold label})
    negative_label : str, default "no_relation"
    n_bootstrap : int, default 1000
        Resamples of the union of the versions' ids (sorted), drawn with replacement; every model and version is
        scored on the same resamples, each version on the resampled ids it holds. 0: no intervals (NaN).
    ci : float, default 0.95
        Level of the percentile intervals.
    seed : int or numpy Generator
    sources : mapping of model name to str, optional
        Names a model in errors (e.g. its file); default ``model 'NAME'``.
    progress : bool or callable
        True draws a bar on stderr; a callable gets the number of resamples just finished.

    Returns
    -------
    VersionScores

    Raises
    ------
    RelationsError
        No model or no version; a model without a prediction for some id; a gold label or a mapped prediction
        outside its version's label set (naming the model or its source, the example id and the label).
    """
    if not predictions:
        raise RelationsError("predictions is empty; give at least one model")
    if not versions:
        raise RelationsError("versions is empty; give at least one label version")
    check_positive_int(n_bootstrap, "n_bootstrap", minimum=0, error=RelationsError)
    if not 0 < ci < 1:
        raise RelationsError(f"ci must be in (0, 1), got {ci}")
    sources = dict(sources or {})
    specs = {name: v if isinstance(v, LabelVersion) else LabelVersion(gold=v) for name, v in versions.items()}
    ids = sorted(set().union(*(v.gold for v in specs.values())))
    for model, pred in predictions.items():
        missing = [i for i in ids if i not in pred]
        if missing:
            raise RelationsError(f"{sources.get(model, f'model {model!r}')} has no prediction for {len(missing)} "
                                 f"id(s), e.g. {missing[:3]}")
    codes = _Codes(negative_label)
    raw = {m: codes.encode([p[i] for i in ids]) for m, p in predictions.items()}
    models, names = list(predictions), list(specs)
    n, n_m, n_v = len(ids), len(models), len(names)
    correct = np.zeros((n, n_m, n_v), dtype=bool)
    guessed = np.zeros((n, n_m, n_v), dtype=bool)
    positive = np.zeros((n, n_v), dtype=bool)
    n_examples = []
    for j, name in enumerate(names):
        mask = np.array([i in specs[name].gold for i in ids], dtype=bool)
        gold, preds = _version_codes(name, specs[name], ids, mask, codes, raw, sources)
        positive[:, j] = gold != 0  # gold is the negative code outside the version
        for k, model in enumerate(models):
            guessed[:, k, j] = mask & (preds[model] != 0)
            correct[:, k, j] = positive[:, j] & (preds[model] == gold)
        n_examples.append(int(mask.sum()))
    c, q, g = correct.sum(axis=0), guessed.sum(axis=0), positive.sum(axis=0)
    precision, recall, f1 = micro_f1(c, q, np.broadcast_to(g, c.shape))

    # one column per count: correct and guessed for each (model, version), gold positives for each version
    exact = np.float32 if n < 2**24 else np.float64  # float32 sums integers exactly below 2**24
    x = np.concatenate([correct.reshape(n, -1), guessed.reshape(n, -1), positive], axis=1).astype(exact)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    boot = np.empty((n_bootstrap, n_m, n_v))
    update, close = as_callback(progress, total=n_bootstrap, desc="bootstrap", unit="resample")
    for start in range(0, n_bootstrap, _CHUNK):
        size = min(_CHUNK, n_bootstrap - start)
        weights = np.stack([np.bincount(rng.integers(n, size=n), minlength=n) for _ in range(size)]).astype(exact)
        counts = np.rint(weights @ x).astype(np.int64)
        cc = counts[:, : n_m * n_v].reshape(size, n_m, n_v)
        qq = counts[:, n_m * n_v : 2 * n_m * n_v].reshape(size, n_m, n_v)
        gg = np.broadcast_to(counts[:, 2 * n_m * n_v :][:, None, :], cc.shape)
        boot[start : start + size] = micro_f1(cc, qq, gg)[2]
        update(size)
    close()
    return VersionScores(tuple(models), tuple(names), tuple(n_examples), tuple(int(v) for v in g),
                         precision, recall, f1, boot, ci)


# ------------------------------------------------------------------------------------------------ two versions


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
    progress: bool | Callable[[int], object] = False,
) -> Reevaluation:
    """Score several models on two label versions of the same test set and compare.

    The two-version form of :func:`reevaluate_versions`, plus per-relation and per-category F1. The "before"
    version is scored on its ids and the "after" version on its ids (Re-TACRED removes examples, so these may
    differ). Intervals come from a paired bootstrap over the union of ids: each resample scores every model on
    both versions, so the delta's interval accounts for the shared examples.

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
        Report the bootstrap resamples: True draws a bar on stderr, a callable is called with the number of
        resamples just finished.

    Raises
    ------
    RelationsError
        When no model is given, or a model lacks a prediction for some id (naming the model and the id).
    """
    result = reevaluate_versions(predictions, {"before": gold_before, "after": gold_after},
                                 negative_label=negative_label, n_bootstrap=n_bootstrap, ci=ci, seed=seed,
                                 progress=progress)
    cat = category_of.get if isinstance(category_of, Mapping) else category_of
    boot = result.boot_f1
    models = tuple(
        ModelDelta(m, float(result.f1[k, 0]), float(result.f1[k, 1]), float(result.f1[k, 1] - result.f1[k, 0]),
                   percentile_interval(boot[:, k, 0], ci), percentile_interval(boot[:, k, 1], ci),
                   percentile_interval(boot[:, k, 1] - boot[:, k, 0], ci))
        for k, m in enumerate(result.models)
    )
    ids_b, ids_a = sorted(gold_before), sorted(gold_after)
    gb, ga = [gold_before[i] for i in ids_b], [gold_after[i] for i in ids_a]
    preds_b = {m: [p[i] for i in ids_b] for m, p in predictions.items()}
    preds_a = {m: [p[i] for i in ids_a] for m, p in predictions.items()}
    relations = sorted((set(gb) | set(ga)) - {negative_label})

    def both(rels: set[str]) -> dict[str, tuple[float, float]]:
        return {m: (_f1_restricted(gb, preds_b[m], rels, negative_label),
                    _f1_restricted(ga, preds_a[m], rels, negative_label)) for m in predictions}

    categories: dict[str, set[str]] = {}
    for rel in relations:
        c = cat(rel)
        if c is not None:
            categories.setdefault(c, set()).add(rel)
    tau = result.kendall_tau("before", "after").value
    return Reevaluation(models, {rel: both({rel}) for rel in relations},
                        {c: both(rels) for c, rels in sorted(categories.items())}, tau,
                        result.n_flips("before", "after"))
