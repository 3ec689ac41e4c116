"""Dynamic Batch Adaptation (DBA, Simionescu et al. 2022): per-layer selection of the samples that step a model.

Public API: :class:`DBA` wraps any ``torch.optim`` optimizer; :data:`METRICS` and :data:`SEARCHES` are the
registered subset metrics and searches; :func:`layer_gram` and :func:`per_sample_gradients` expose the
per-sample gradient machinery. :mod:`knotwork.train.mlp` holds the MNIST MLP run of ``knotwork dba train`` and
:mod:`knotwork.train.io` its checked ``.npz`` reader; the study that compares runs is ``benchmarks/dba_study.py``.
"""

from knotwork.train.capture import SUPPORTED_LAYERS, find_layers
from knotwork.train.dba import DBA, StepRecord
from knotwork.train.gram import layer_gram, subset_gradient
from knotwork.train.metrics import METRICS, Metric, SubsetStats, register_metric, subset_score, subset_stats
from knotwork.train.per_sample import gram_from_gradients, per_sample_gradients
from knotwork.train.search import SEARCHES, register_search

__all__ = [
    "DBA",
    "METRICS",
    "SEARCHES",
    "SUPPORTED_LAYERS",
    "Metric",
    "StepRecord",
    "SubsetStats",
    "find_layers",
    "gram_from_gradients",
    "layer_gram",
    "per_sample_gradients",
    "register_metric",
    "register_search",
    "subset_gradient",
    "subset_score",
    "subset_stats",
]
