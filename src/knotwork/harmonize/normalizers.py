"""Nyul-Udupa piecewise-linear standardization, and the z-score and clip-and-rescale baselines."""

from __future__ import annotations

import numpy as np

from knotwork.harmonize._checks import check_not_constant
from knotwork.harmonize._mapping import merge_ties, piecewise_linear
from knotwork.harmonize.base import THRESHOLD_CONSTRAINT, Harmonizer, register
from knotwork.harmonize.functional import output_dtype, volume_quantiles


def _pair(v) -> bool:
    a, b = (float(t) for t in v)
    return len(v) == 2 and np.isfinite(a) and np.isfinite(b) and a < b


def _pct_pair(v) -> bool:
    return _pair(v) and 0.0 <= float(v[0]) and float(v[1]) <= 100.0


def _stats(x, m):
    v = x.reshape(-1) if m is None else x[m]
    return float(v.mean(dtype=np.float64)), float(v.std(dtype=np.float64)), v.size


@register
class NyulStandardizer(Harmonizer):
    """Nyul-Udupa histogram standardization with percentile landmarks (``--method nyul``).

    Landmarks are the percentiles ``[cutoff_lo, step, 2*step, ..., cutoff_hi]`` (default
    1, 10, 20, ..., 90, 99: 11 landmarks). ``fit`` maps each reference's landmarks linearly so its
    ``cutoff_lo`` percentile goes to ``standard_range[0]`` and its ``cutoff_hi`` percentile to
    ``standard_range[1]`` and averages them; ``transform`` maps a volume's own landmarks onto those by
    a piecewise-linear function, continuing the end segments beyond them (as TorchIO and
    intensity-normalization do). With ``standard_range=None`` the landmarks are averaged in the
    references' own units, so the output is on the reference scale (used by the study, where only
    the additional data is transformed).

    Parameters
    ----------
    cutoffs : (float, float), default (1.0, 99.0)
        Lowest and highest landmark percentiles.
    step : float, default 10.0
        Spacing of the inner landmark percentiles.
    standard_range : (float, float) or None, default (0.0, 100.0)
    max_samples, seed, foreground_threshold
        As in :class:`QuantileMatcher`.

    Attributes
    ----------
    percentiles_ : ndarray of shape (n_landmarks,)
    landmarks_ : ndarray of shape (n_landmarks,)

    References
    ----------
    Nyul, Udupa, Zhang. New variants of a method of MRI scale standardization. IEEE TMI 19(2):143-150, 2000.
    """

    name = "nyul"
    reference = "Nyul, Udupa, Zhang. IEEE Trans. Med. Imaging 19(2):143-150, 2000."
    _parameter_constraints = {
        "cutoffs": (_pct_pair, "a pair of percentiles 0 <= lo < hi <= 100"),
        "step": (lambda v: 0 < float(v) < 100, "a float in (0, 100)"),
        "standard_range": (lambda v: v is None or _pair(v), "None or a pair (lo, hi) with lo < hi"),
        "max_samples": (lambda v: v is None or (int(v) == v and v >= 1), "None or a positive int"),
        "seed": (lambda v: int(v) == v, "an int"),
        "foreground_threshold": THRESHOLD_CONSTRAINT,
    }
    _fitted = ("percentiles_", "landmarks_")
    _state_shapes = {"percentiles_": ("n_landmarks",), "landmarks_": ("n_landmarks",)}

    def __init__(self, *, cutoffs=(1.0, 99.0), step: float = 10.0, standard_range=(0.0, 100.0),
                 max_samples: int | None = 2_000_000, seed: int = 0, foreground_threshold: float | None = None):
        self.cutoffs = cutoffs
        self.step = step
        self.standard_range = standard_range
        self.max_samples = max_samples
        self.seed = seed
        self.foreground_threshold = foreground_threshold

    def _percentiles(self):
        lo, hi = (float(c) for c in self.cutoffs)
        inner = np.arange(float(self.step), 100.0, float(self.step))
        return np.concatenate([[lo], inner[(inner > lo) & (inner < hi)], [hi]])

    def _landmarks(self, x, m, name, percentiles):
        lm = volume_quantiles(x, percentiles / 100.0, mask=m, max_samples=self.max_samples, seed=self.seed)
        check_not_constant(lm[0], lm[-1], name=name)
        return lm

    def _volume_statistics(self, x, m, name):
        return {"landmarks": self._landmarks(x, m, name, self._percentiles())}

    def _fit_from_statistics(self, stats, reference):
        self.percentiles_ = self._percentiles()
        lms = []
        for s in stats:
            lm = np.asarray(s["landmarks"], dtype=np.float64)
            if self.standard_range is not None:
                s1, s2 = (float(t) for t in self.standard_range)
                lm = s1 + (lm - lm[0]) / (lm[-1] - lm[0]) * (s2 - s1)
            lms.append(lm)
        self.landmarks_ = np.mean(lms, axis=0)

    def _transform(self, x, mask):
        xp, fp = merge_ties(self._landmarks(x, mask, "volume", self.percentiles_), self.landmarks_)
        return piecewise_linear(x, xp, fp, extrapolate="end-segments", dtype=output_dtype(x.dtype))


@register
class ZScoreNormalizer(Harmonizer):
    """Per-volume z-score, optionally re-expressed in the reference's units (``--method zscore``).

    ``transform`` computes ``(x - mean_x) / std_x`` over the volume's statistics voxels; with
    ``to_reference=True`` (default) it then multiplies by the pooled standard deviation and adds the
    pooled mean of the fitted references, so the output sits on the reference scale. This is the
    "simple normalization" baseline of the paper (its exact recipe is not published).

    Attributes
    ----------
    mean_, std_ : ndarray of shape ()
        Pooled mean and standard deviation of the references' statistics voxels.
    """

    name = "zscore"
    reference = "Baseline ('simple normalization') of arXiv:2309.02001."
    _parameter_constraints = {
        "to_reference": (lambda v: isinstance(v, bool), "a bool"),
        "foreground_threshold": THRESHOLD_CONSTRAINT,
    }
    _fitted = ("mean_", "std_")
    _state_shapes = {"mean_": (), "std_": ()}

    def __init__(self, *, to_reference: bool = True, foreground_threshold: float | None = None):
        self.to_reference = to_reference
        self.foreground_threshold = foreground_threshold

    def _volume_statistics(self, x, m, name):
        mean, std, n = _stats(x, m)
        return {"mean": np.asarray(mean), "std": np.asarray(std), "n": np.asarray(n)}

    def _fit_from_statistics(self, stats, reference):
        n = np.array([float(s["n"]) for s in stats], dtype=np.float64)
        means = np.array([float(s["mean"]) for s in stats])
        second = np.array([float(s["std"]) ** 2 + float(s["mean"]) ** 2 for s in stats])
        mean = float((n * means).sum() / n.sum())
        # Pooled variance from per-volume moments: E[x^2] - E[x]^2 over all statistics voxels.
        std = float(np.sqrt(max((n * second).sum() / n.sum() - mean**2, 0.0)))
        check_not_constant(0.0, std, name="the reference volumes")
        self.mean_, self.std_ = np.asarray(mean), np.asarray(std)

    def _transform(self, x, mask):
        mean, std, _ = _stats(x, mask)
        check_not_constant(0.0, std, name="volume")
        scale, shift = (float(self.std_), float(self.mean_)) if self.to_reference else (1.0, 0.0)
        return ((x - mean) * (scale / std) + shift).astype(output_dtype(x.dtype), copy=False)


@register
class ClipRescaleNormalizer(Harmonizer):
    """Clip to the volume's own percentiles and rescale linearly (``--method clip``).

    ``transform`` clips to the volume's ``percentiles`` (default 0.5 and 99.5, as nnU-Net) and maps
    that interval linearly onto ``out_range``, or, when ``out_range`` is None, onto the mean of the
    references' percentile values (``reference_range_``), i.e. onto the reference scale.

    Attributes
    ----------
    reference_range_ : ndarray of shape (2,)
    """

    name = "clip"
    reference = "Baseline ('simple normalization') of arXiv:2309.02001; TorchIO RescaleIntensity."
    _parameter_constraints = {
        "percentiles": (_pct_pair, "a pair of percentiles 0 <= lo < hi <= 100"),
        "out_range": (lambda v: v is None or _pair(v), "None or a pair (lo, hi) with lo < hi"),
        "foreground_threshold": THRESHOLD_CONSTRAINT,
    }
    _fitted = ("reference_range_",)
    _state_shapes = {"reference_range_": (2,)}

    def __init__(self, *, percentiles=(0.5, 99.5), out_range=None, foreground_threshold: float | None = None):
        self.percentiles = percentiles
        self.out_range = out_range
        self.foreground_threshold = foreground_threshold

    def _bounds(self, x, m, name):
        lo, hi = volume_quantiles(x, np.asarray(self.percentiles, dtype=np.float64) / 100.0, mask=m)
        check_not_constant(lo, hi, name=name)
        return lo, hi

    def _volume_statistics(self, x, m, name):
        if self.out_range is not None:  # the references' percentiles are not used
            return {}
        return {"bounds": np.asarray(self._bounds(x, m, name), dtype=np.float64)}

    def _fit_from_statistics(self, stats, reference):
        if self.out_range is not None:
            self.reference_range_ = np.asarray(self.out_range, dtype=np.float64)
            return
        self.reference_range_ = np.mean([s["bounds"] for s in stats], axis=0)

    def _transform(self, x, mask):
        lo, hi = self._bounds(x, mask, "volume")
        a, b = (float(t) for t in self.reference_range_)
        y = (np.clip(x, lo, hi) - lo) * ((b - a) / (hi - lo)) + a
        return y.astype(output_dtype(x.dtype), copy=False)
