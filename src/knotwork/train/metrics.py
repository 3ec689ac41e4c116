"""Subset metrics of per-sample gradients, each a function of a few sums over the Gram matrix.

For a subset ``S`` of a pool ``P`` with per-sample gradients ``g_i`` and Gram matrix ``K[i, j] = <g_i, g_j>``:
``n = |S|``, ``total = 1^T K_SS 1 = ||sum_S g_i||^2``, ``trace = tr K_SS = sum_S ||g_i||^2``,
``full_dot = sum_{i in S} (K 1)_i = <sum_S g_i, sum_P g_j>`` and ``full_total = 1^T K 1``. The mean gradient is
``m_S = sum_S g_i / n``, so ``||m_S||^2 = total / n^2``. Every metric below is computed from these sums, which
lets a search score all one-sample changes of ``S`` at once (vectorised over candidate arrays).

The paper (Simionescu et al., arXiv 2208.00815) names only "gradient variance" and says "metrics such as";
which metrics it used is unpublished, so these are reconstructions (see docs/dba.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from knotwork._errors import TrainError


class SubsetStats(NamedTuple):
    """Sums over a subset's Gram block; every field may be a scalar or an array of candidates.

    A named tuple (immutable, and cheap to build once per step of a search).
    """

    n: np.ndarray | float
    total: np.ndarray | float
    trace: np.ndarray | float
    full_dot: np.ndarray | float
    full_total: np.ndarray | float


#: ``into(n, total, trace, full_dot, full_total, out)`` of :class:`Metric`.
Kernel = Callable[..., None]


@dataclass(frozen=True)
class Metric:
    """A registered subset metric: its function of :class:`SubsetStats` and whether larger is better.

    ``into``, when given, is the form a search's inner loop calls once per removed or added sample:
    ``into(n, total, trace, full_dot, full_total, out)`` writes the signed metric (``fn``, negated when it is
    minimised; a NaN may stay NaN) of candidate arrays into the preallocated ``out`` with exactly ``fn``'s
    arithmetic, bit for bit, but without building a :class:`SubsetStats` or temporary arrays. When
    ``uses_full_dot`` is False a search may pass ``full_dot=None`` (and skip computing it).
    """

    name: str
    fn: Callable[[SubsetStats], np.ndarray]
    maximize: bool
    into: Kernel | None = None
    uses_full_dot: bool = True

    def value(self, stats: SubsetStats) -> np.ndarray:
        """The metric itself (e.g. a variance)."""
        return self.fn(stats)

    def utility(self, stats: SubsetStats) -> np.ndarray:
        """The metric signed so that larger is always better; NaN becomes -inf so a search never picks it."""
        v = np.array(self.fn(stats), dtype=np.float64, ndmin=1)
        u = v if self.maximize else -v
        u[np.isnan(u)] = -np.inf
        return u

    def utility_into(self) -> Kernel:
        """``into``, or for a metric without one the same function built on :meth:`utility`.

        Its caller treats NaN as -inf; since ``argmax`` returns the first NaN when there is one, checking the
        entry ``argmax`` returns is enough.
        """
        if self.into is not None:
            return self.into

        def generic(n, total, trace, full_dot, full_total, out: np.ndarray) -> None:
            out[...] = self.utility(SubsetStats(n, total, trace, full_dot, full_total))

        return generic


METRICS: dict[str, Metric] = {}


def register_metric(name: str, *, maximize: bool, into: Kernel | None = None, uses_full_dot: bool = True):
    """Decorator adding a metric function to :data:`METRICS` under ``name``.

    ``into`` and ``uses_full_dot`` are optional and only make searches faster (see :class:`Metric`).
    """

    def wrap(fn: Callable[[SubsetStats], np.ndarray]):
        METRICS[name] = Metric(name, fn, maximize, into, uses_full_dot or into is None)  # fn alone may read full_dot
        return fn

    return wrap


def _safe_div(num, den, fill: float) -> np.ndarray:
    """``num / den`` where ``den > 0``, else ``fill``; without ``np.errstate``, which is slow in search loops."""
    den = np.asarray(den, dtype=np.float64)
    out = np.full_like(den, fill)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _variance(s: SubsetStats) -> np.ndarray:
    # Clip tiny negative values from cancellation: a trace of a covariance is never negative.
    return np.maximum(np.asarray(s.trace) / s.n - np.asarray(s.total) / np.square(s.n), 0.0)


# In-place forms of the metrics below for the search loops (``Metric.into``): each repeats its metric's
# operations in the same order on the same operands, so every value is identical bit for bit. Where a metric
# divides only where the denominator is positive, the plain division is used when all denominators are (the
# values are the same; the masked form is the fallback).


def _variance_into(n, total, trace, out: np.ndarray) -> None:
    np.divide(trace, n, out=out)
    np.subtract(out, total / np.square(n), out=out)
    np.maximum(out, 0.0, out=out)


def _neg_variance_into(n, total, trace, full_dot, full_total, out: np.ndarray) -> None:
    _variance_into(n, total, trace, out)
    np.negative(out, out=out)


def _neg_var_of_mean_into(n, total, trace, full_dot, full_total, out: np.ndarray) -> None:
    _variance_into(n, total, trace, out)
    np.divide(out, n, out=out)
    np.negative(out, out=out)


def _divide_where_positive_into(num, out: np.ndarray, fill: float) -> None:
    """``out = num / out`` where ``out > 0``, else ``fill`` (as :func:`_safe_div` with the denominator in ``out``)."""
    if out.flat[out.argmin()] > 0:  # the smallest, or the first NaN (then False); argmin is cheaper than min
        np.divide(num, out, out=out)
    else:
        den = out.copy()
        out.fill(fill)
        np.divide(num, den, out=out, where=den > 0)


def _snr_into(n, total, trace, full_dot, full_total, out: np.ndarray) -> None:
    np.divide(total, n, out=out)
    np.subtract(trace, out, out=out)
    _divide_where_positive_into(total, out, np.inf)


def _cos_to_full_into(n, total, trace, full_dot, full_total, out: np.ndarray) -> None:
    np.maximum(total, 0.0, out=out)
    np.multiply(out, np.maximum(full_total, 0.0), out=out)
    np.sqrt(out, out=out)
    _divide_where_positive_into(full_dot, out, 0.0)


@register_metric("variance", maximize=False, into=_neg_variance_into, uses_full_dot=False)
def variance(s: SubsetStats) -> np.ndarray:
    """Gradient variance ``tr Sigma_S = (1/n) sum_S ||g_i||^2 - ||m_S||^2`` (biased covariance), minimised.

    Literally the abstract's "gradient variance". Alone it is degenerate: one sample, or identical
    gradients, give 0, so a search needs a minimum subset size.
    """
    return _variance(s)


@register_metric("var_of_mean", maximize=False, into=_neg_var_of_mean_into, uses_full_dot=False)
def var_of_mean(s: SubsetStats) -> np.ndarray:
    """Variance of the mean-gradient estimate ``tr Sigma_S / n``, minimised.

    The quantity the batch-size/learning-rate argument is about: dropping an outlier lowers it, dropping a
    typical sample raises it through ``1/n``.
    """
    return _variance(s) / s.n


@register_metric("snr", maximize=True, into=_snr_into, uses_full_dot=False)
def snr(s: SubsetStats) -> np.ndarray:
    """Gradient signal-to-noise ratio ``||m_S||^2 / (tr Sigma_S / n)``, maximised (+inf when the variance is 0).

    The inverse of the norm test of Byrd et al. (2012) and close to ``1 / B_noise`` of McCandlish et al. (2018).
    """
    # ||m||^2 / (tr Sigma / n) = total / (n * tr Sigma) = total / (trace - total / n): fewer array operations.
    return _safe_div(s.total, np.asarray(s.trace) - np.asarray(s.total) / s.n, np.inf)


@register_metric("cos_to_full", maximize=True, into=_cos_to_full_into)
def cos_to_full(s: SubsetStats) -> np.ndarray:
    """Cosine between the subset's mean gradient and the whole pool's, ``full_dot / sqrt(total * full_total)``.

    Maximised; 0 when either gradient is zero.
    """
    denom = np.sqrt(np.maximum(np.asarray(s.total), 0.0) * np.maximum(s.full_total, 0.0))
    return _safe_div(s.full_dot, denom, 0.0)


def subsets_stats(gram: np.ndarray, masks: np.ndarray) -> SubsetStats:
    """Sums of :class:`SubsetStats` for several subsets of one pool at once, each an indicator row of ``masks``
    (shape (k, P), 1.0 for a member, 0.0 otherwise); every field but ``full_total`` has shape (k,)."""
    gram = np.asarray(gram, dtype=np.float64)
    masks = np.asarray(masks, dtype=np.float64)
    row_full = gram.sum(1)
    # einsum's own loops rather than matrix products, whose BLAS (NumPy's) may start threads beside torch's.
    row_in = np.stack([row_full if m.all() else np.einsum("ij,j->i", gram, m) for m in masks])
    return SubsetStats(
        n=masks.sum(1),
        total=np.einsum("kp,kp->k", row_in, masks),
        trace=np.einsum("p,kp->k", np.diagonal(gram), masks),
        full_dot=np.einsum("p,kp->k", row_full, masks),
        full_total=float(row_full.sum()),
    )


def subset_stats(gram: np.ndarray, subset: np.ndarray) -> SubsetStats:
    """Sums of :class:`SubsetStats` for one subset (array of indices into the pool)."""
    mask = np.zeros((1, np.shape(gram)[0]))
    mask[0, np.asarray(subset, dtype=np.int64)] = 1.0
    stats = subsets_stats(gram, mask)
    return SubsetStats(*(float(np.asarray(v).reshape(-1)[0]) for v in stats))


def get_metric(name: str) -> Metric:
    """Look up a metric by name, with an error listing the known ones."""
    try:
        return METRICS[name]
    except KeyError:
        raise TrainError(f"unknown DBA metric '{name}'; choose one of {sorted(METRICS)}.") from None


def subset_score(gram: np.ndarray, subset: np.ndarray, metric: str) -> float:
    """Value of ``metric`` for ``subset`` of a pool with Gram matrix ``gram`` (shape (P, P))."""
    return float(get_metric(metric).value(subset_stats(gram, subset)))
