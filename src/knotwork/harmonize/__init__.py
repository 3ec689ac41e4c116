"""Intensity harmonization of 3D volumes: histogram matching, Nyul standardization, normalization baselines.

Fit a harmonizer on volumes of the original domain, then transform volumes of another scanner or
preprocessing onto that domain's intensity scale (Stoica, Breaban, Barbu, arXiv:2309.02001).
"""

from knotwork._errors import HarmonizeError, NotFittedError
from knotwork.harmonize.base import HARMONIZERS, Harmonizer, get_harmonizer
from knotwork.harmonize.functional import clip_rescale, match_histograms, volume_quantiles, zscore
from knotwork.harmonize.io import load_harmonizer, read_volume, save_harmonizer, write_volume
from knotwork.harmonize.matchers import HistogramMatcher, QuantileMatcher
from knotwork.harmonize.normalizers import ClipRescaleNormalizer, NyulStandardizer, ZScoreNormalizer
from knotwork.harmonize.transforms import HarmonizeTransform

__all__ = [
    "HARMONIZERS",
    "ClipRescaleNormalizer",
    "HarmonizeError",
    "HarmonizeTransform",
    "Harmonizer",
    "HistogramMatcher",
    "NotFittedError",
    "NyulStandardizer",
    "QuantileMatcher",
    "ZScoreNormalizer",
    "clip_rescale",
    "get_harmonizer",
    "load_harmonizer",
    "read_volume",
    "save_harmonizer",
    "write_volume",
    "match_histograms",
    "volume_quantiles",
    "zscore",
]
