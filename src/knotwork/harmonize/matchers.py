"""Histogram matching to one reference volume (exact) and to a dataset-level quantile barycenter."""

from __future__ import annotations

import numpy as np

from knotwork.harmonize._checks import HarmonizeError, check_not_constant
from knotwork.harmonize._mapping import merge_ties, piecewise_linear
from knotwork.harmonize.base import THRESHOLD_CONSTRAINT, Harmonizer, register
from knotwork.harmonize.functional import _apply_cdf_map, output_dtype, reference_cdf, volume_quantiles

_PAPER = (
    "Stoica, Breaban, Barbu. Analyzing domain shift when using additional data for the MICCAI KiTS23 "
    "Challenge. arXiv:2309.02001, 2023."
)


def _optional_index(v) -> bool:
    return v is None or (int(v) == v and v >= 0)


def _positive_or_none(v) -> bool:
    return v is None or (int(v) == v and v >= 1)


@register
class HistogramMatcher(Harmonizer):
    """Exact histogram matching to one reference volume (``--method hm-volume``).

    ``fit`` keeps the cumulative histogram of one reference volume: the one at ``reference_index``,
    or by default the *medoid*, whose quantile function is closest (L2 over 101 levels, i.e. roughly
    the 2-Wasserstein distance) to the voxel-wise median quantile function of all references. The
    paper does not say which volume it matched to; the medoid is the usual choice (see
    docs/harmonize.md). ``transform`` equals :func:`knotwork.harmonize.match_histograms` with that
    reference, hence scikit-image's ``match_histograms`` when no mask is used.

    Parameters
    ----------
    reference_index : int or None, default None
        Which fitted volume to use; None picks the medoid.
    foreground_threshold : float or None, default None
        Without a mask, use only voxels above this value for the statistics (e.g. -500 for CT body).

    Attributes
    ----------
    reference_values_ : ndarray of shape (n_distinct,)
        Sorted distinct reference intensities.
    reference_quantiles_ : ndarray of shape (n_distinct,)
        Cumulative fraction of reference voxels at or below each value.
    reference_index_ : ndarray of shape ()
        Index of the chosen reference among the fitted volumes.

    References
    ----------
    Stoica, Breaban, Barbu. Analyzing domain shift when using additional data for the MICCAI KiTS23
    Challenge. arXiv:2309.02001, 2023 (histogram matching of the additional training data).
    """

    name = "hm-volume"
    reference = _PAPER
    _parameter_constraints = {
        "reference_index": (_optional_index, "None or a non-negative int"),
        "foreground_threshold": THRESHOLD_CONSTRAINT,
    }
    _fitted = ("reference_values_", "reference_quantiles_", "reference_index_")
    _state_shapes = {"reference_values_": ("n_distinct",), "reference_quantiles_": ("n_distinct",),
                     "reference_index_": ()}

    def __init__(self, *, reference_index: int | None = None, foreground_threshold: float | None = None):
        self.reference_index = reference_index
        self.foreground_threshold = foreground_threshold

    needs_reference = True  # the combine step reads the chosen volume again for its full histogram

    def _volume_statistics(self, x, m, name):
        if self.reference_index is not None:  # no medoid to choose
            return {}
        return {"quantiles": volume_quantiles(x, np.linspace(0.0, 1.0, 101), mask=m)}

    def _fit_from_statistics(self, stats, reference):
        if self.reference_index is not None:
            if self.reference_index >= len(stats):
                raise HarmonizeError(f"The 'reference_index' parameter of HistogramMatcher is {self.reference_index}, "
                                     f"but only {len(stats)} volumes were given")
            idx = self.reference_index
        else:
            qs = np.stack([s["quantiles"] for s in stats])
            idx = int(np.argmin(((qs - np.median(qs, axis=0)) ** 2).sum(axis=1)))
        x, m = self._prepare(*reference(idx), f"volumes[{idx}]")
        values, quantiles = reference_cdf(x, m)
        check_not_constant(values[0], values[-1], name=f"volumes[{idx}]")
        self.reference_values_, self.reference_quantiles_ = values, quantiles
        self.reference_index_ = np.asarray(idx)

    def _transform(self, x, mask):
        return _apply_cdf_map(x, mask, self.reference_values_, self.reference_quantiles_, output_dtype(x.dtype),
                              name="volume")


@register
class QuantileMatcher(Harmonizer):
    """Histogram matching to a dataset-level reference: the mean quantile function (``--method hm``).

    ``fit`` takes each reference volume's quantiles at ``n_levels`` evenly spaced levels in [0, 1]
    and averages them; in one dimension that average is the 2-Wasserstein barycenter of the
    reference histograms, so no single volume's quirks define the target. ``transform`` computes
    the same quantiles of the new volume and maps voxels monotonically between the two quantile
    functions by linear interpolation (tied source quantiles are merged; values beyond the end
    knots continue with the overall slope).

    Parameters
    ----------
    n_levels : int, default 1000
        Number of quantile levels K (the note for the paper suggests 1000).
    max_samples : int or None, default 2_000_000
        Float volumes with more statistics voxels use a seeded subsample for their quantiles;
        integer volumes are always counted exactly.
    seed : int, default 0
        Seed of that subsample.
    foreground_threshold : float or None, default None

    Attributes
    ----------
    levels_ : ndarray of shape (n_levels,)
    reference_quantiles_ : ndarray of shape (n_levels,)

    References
    ----------
    Stoica, Breaban, Barbu, arXiv:2309.02001, 2023. The dataset-level reference is our reading of
    "histogram matching" for many reference volumes; the paper does not publish its recipe.

    Examples
    --------
    >>> import numpy as np
    >>> from knotwork.harmonize import QuantileMatcher
    >>> x = np.arange(101.0)
    >>> m = QuantileMatcher(n_levels=101).fit([x, 2 * x])
    >>> m.transform(np.sqrt(x))[[0, 50, 100]].tolist()
    [0.0, 75.0, 150.0]
    """

    name = "hm"
    reference = _PAPER
    _parameter_constraints = {
        "n_levels": (lambda v: int(v) == v and v >= 2, "an int >= 2"),
        "max_samples": (_positive_or_none, "None or a positive int"),
        "seed": (lambda v: int(v) == v, "an int"),
        "foreground_threshold": THRESHOLD_CONSTRAINT,
    }
    _fitted = ("levels_", "reference_quantiles_")
    _state_shapes = {"levels_": ("n_levels",), "reference_quantiles_": ("n_levels",)}

    def __init__(self, *, n_levels: int = 1000, max_samples: int | None = 2_000_000, seed: int = 0,
                 foreground_threshold: float | None = None):
        self.n_levels = n_levels
        self.max_samples = max_samples
        self.seed = seed
        self.foreground_threshold = foreground_threshold

    def _quantiles(self, x, m, levels=None):
        levels = self.levels_ if levels is None else levels
        return volume_quantiles(x, levels, mask=m, max_samples=self.max_samples, seed=self.seed)

    def _volume_statistics(self, x, m, name):
        q = self._quantiles(x, m, np.linspace(0.0, 1.0, int(self.n_levels)))
        check_not_constant(q[0], q[-1], name=name)
        return {"quantiles": q}

    def _fit_from_statistics(self, stats, reference):
        self.levels_ = np.linspace(0.0, 1.0, int(self.n_levels))
        self.reference_quantiles_ = np.mean([s["quantiles"] for s in stats], axis=0)

    def _transform(self, x, mask):
        q = self._quantiles(x, mask)
        check_not_constant(q[0], q[-1], name="volume")
        xp, fp = merge_ties(q, self.reference_quantiles_)
        return piecewise_linear(x, xp, fp, extrapolate="overall", dtype=output_dtype(x.dtype))
