"""Comparing runs: macro-F1, a paired bootstrap over seeds and test examples, the paired t-test and its power."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from knotwork._errors import JrrelpError
from knotwork.relations.scorer import score


def macro_f1(gold: Sequence[str], predicted: Sequence[str], *, negative_label: str = "no_relation") -> float:
    """Unweighted mean F1 over the positive gold relations (SemEval-2010 Task 8 reports macro-F1)."""
    labels = sorted({g for g in gold if g != negative_label})
    if not labels:
        raise JrrelpError("macro_f1 needs at least one positive gold label")
    f1s = []
    for lab in labels:
        tp = sum(1 for g, p in zip(gold, predicted, strict=True) if g == lab and p == lab)
        n_pred = sum(1 for p in predicted if p == lab)
        n_gold = sum(1 for g in gold if g == lab)
        prec = tp / n_pred if n_pred else 0.0
        rec = tp / n_gold
        f1s.append(2 * prec * rec / (prec + rec) if prec + rec else 0.0)
    return float(np.mean(f1s))


METRICS = ("micro", "macro")


def paired_bootstrap(
    gold: Sequence[str],
    baseline: Sequence[Sequence[str]],
    system: Sequence[Sequence[str]],
    *,
    n_resamples: int = 1000,
    negative_label: str = "no_relation",
    seed: int | np.random.Generator = 0,
    resample_seeds: bool = True,
    metric: str = "micro",
) -> dict[str, float]:
    """Paired bootstrap (Koehn 2004; Berg-Kirkpatrick et al. 2012) of the seed-averaged F1 difference.

    Test examples are resampled with replacement; on each resample the mean F1 over the baseline's runs is
    subtracted from the mean over the system's runs. With ``resample_seeds`` (and as many runs on both sides,
    paired by position, i.e. by training seed) the seed pairs are resampled too, so the interval covers seed
    variance as well as test-set variance; without it, the seeds are held fixed and only test noise is covered.

    Parameters
    ----------
    gold : sequence of str, length N
    baseline, system : sequences of prediction lists, each of length N (one list per seed)
    n_resamples : int, default 1000
    seed : int or numpy Generator
    resample_seeds : bool, default True
        Also resample the (baseline, system) run pairs; needs ``len(baseline) == len(system)``.
    metric : {"micro", "macro"}, default "micro"
        ``"micro"``: the official TACRED scorer's micro-F1 over positive relations; ``"macro"``: :func:`macro_f1`,
        the unweighted mean F1 over the positive relations of ``gold`` (SemEval's metric).

    Returns
    -------
    dict
        ``delta`` (observed mean difference), ``ci_low``/``ci_high`` (95 % percentile interval) and ``p``
        (fraction of resamples where the system is not better: a one-sided p-value).
    """
    if metric not in METRICS:
        raise JrrelpError(f"metric must be one of {METRICS}, got {metric!r}")
    if not baseline or not system:
        raise JrrelpError("paired_bootstrap needs at least one run on each side")
    n = len(gold)
    for runs in (baseline, system):
        for r in runs:
            if len(r) != n:
                raise JrrelpError(f"a prediction list has {len(r)} entries, gold has {n}")
    if resample_seeds and len(baseline) != len(system):
        raise JrrelpError(f"resample_seeds pairs runs by seed but got {len(baseline)} baseline and {len(system)} runs")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    labels = sorted(set(gold).union(*map(set, baseline), *map(set, system)))
    index = {lab: i for i, lab in enumerate(labels)}
    neg = index.get(negative_label, -1)
    g = np.array([index[x] for x in gold])
    positive = np.array(sorted({int(i) for i in g if i != neg}))
    if metric == "macro" and not len(positive):
        raise JrrelpError("macro-F1 needs at least one positive gold label")

    def counts(pred: Sequence[str]) -> np.ndarray:
        """Per example and class (one class for micro): (correct, guessed, gold) — the scorers' counters."""
        p = np.array([index[x] for x in pred])
        if metric == "micro":
            return np.stack([(p == g) & (g != neg), p != neg, g != neg], axis=1).astype(float)[:, None, :]
        pl, gl = p[:, None] == positive[None, :], g[:, None] == positive[None, :]
        return np.stack([pl & gl, pl, gl], axis=2).astype(float)  # (N, n_positive, 3)

    def f1(c: np.ndarray) -> np.ndarray:
        """F1 averaged over classes from summed counters (..., classes, 3) -> (...)."""
        tp, guessed, gold_pos = c[..., 0], c[..., 1], c[..., 2]
        # An empty prediction set has precision 1 in the TACRED scorer, 0 in macro_f1 (SemEval's scorer).
        prec = np.where(guessed > 0, tp / np.maximum(guessed, 1), 1.0 if metric == "micro" else 0.0)
        rec = np.where(gold_pos > 0, tp / np.maximum(gold_pos, 1), 0.0)
        return np.where(prec + rec > 0, 2 * prec * rec / np.maximum(prec + rec, 1e-12), 0.0).mean(-1)

    base = np.stack([counts(r) for r in baseline])  # (S_b, N, classes, 3)
    sys_ = np.stack([counts(r) for r in system])
    observed = float(f1(sys_.sum(1)).mean() - f1(base.sum(1)).mean())
    deltas = np.empty(n_resamples)
    n_runs = len(system)
    for i in range(n_resamples):
        idx = rng.integers(0, n, n)
        runs = rng.integers(0, n_runs, n_runs) if resample_seeds else np.arange(n_runs)
        deltas[i] = f1(sys_[runs][:, idx].sum(1)).mean() - f1(base[runs if resample_seeds else slice(None)][:, idx]
                                                                .sum(1)).mean()
    # The scorers are the oracle for the observed value; the vectorised counts must agree with them.
    if metric == "micro":
        check = np.mean([score(gold, r, negative_label=negative_label).f1 for r in system])
    else:
        check = np.mean([macro_f1(gold, r, negative_label=negative_label) for r in system])
    if not np.isclose(check, f1(sys_.sum(1)).mean()):
        raise RuntimeError("internal error: vectorised F1 disagrees with the scorer")
    return {
        "delta": observed,
        "ci_low": float(np.percentile(deltas, 2.5)),
        "ci_high": float(np.percentile(deltas, 97.5)),
        "p": float(np.mean(deltas <= 0)),
    }


def paired_t_test(baseline: Sequence[float], system: Sequence[float]) -> dict[str, float]:
    """Paired t-test of per-seed scores (``system[i]`` and ``baseline[i]`` trained with the same seed).

    Returns
    -------
    dict
        ``n``, ``mean`` and ``sd`` (sample) of the differences ``system - baseline``, ``t``, the two-sided ``p``
        (``scipy.stats.ttest_rel``) and the 95 % confidence interval ``ci_low``/``ci_high`` of the mean difference.
    """
    from scipy import stats

    a, b = np.asarray(baseline, dtype=float), np.asarray(system, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 2:
        raise JrrelpError(f"paired_t_test needs two equal-length lists of >= 2 scores; got {a.shape} and {b.shape}")
    d = b - a
    sd = float(d.std(ddof=1))
    res = stats.ttest_rel(b, a)
    half = float(stats.t.ppf(0.975, len(d) - 1) * sd / np.sqrt(len(d)))
    return {"n": len(d), "mean": float(d.mean()), "sd": sd, "t": float(res.statistic), "p": float(res.pvalue),
            "ci_low": float(d.mean()) - half, "ci_high": float(d.mean()) + half}


def paired_power(effect: float, sd: float, n: int, *, alpha: float = 0.05) -> float:
    """Power of a two-sided paired t-test at level ``alpha`` to detect a true mean difference ``effect`` with
    ``n`` pairs whose differences have standard deviation ``sd`` (noncentral t; e.g. effect 1, sd 1, n 10: 0.80).
    """
    from scipy import stats

    if n < 2 or sd <= 0:
        raise JrrelpError(f"paired_power needs n >= 2 and sd > 0; got n={n}, sd={sd}")
    df, ncp = n - 1, effect / sd * np.sqrt(n)
    crit = stats.t.ppf(1 - alpha / 2, df)
    return float(stats.nct.sf(crit, df, ncp) + stats.nct.cdf(-crit, df, ncp))


def pairs_for_power(effect: float, sd: float, *, power: float = 0.8, alpha: float = 0.05, limit: int = 10_000) -> int:
    """The smallest number of pairs whose :func:`paired_power` reaches ``power`` (``limit`` if none below it)."""
    for n in range(2, limit):
        if paired_power(effect, sd, n, alpha=alpha) >= power:
            return n
    return limit
