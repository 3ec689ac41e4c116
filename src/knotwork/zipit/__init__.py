"""ZipIt!: merge models trained from different initialisations on different tasks, without training.

Stoica, Bolya, Bjorner, Ramesh, Hearn & Hoffman, "ZipIt! Merging Models from Different Tasks without
Training", ICLR 2024 (arXiv:2305.03053). Feature spaces are found automatically with ``torch.fx``
(:func:`trace_feature_graph`); matchers (``zipit``, ``permute``, ``identity``) and Git Re-Basin weight matching
produce merge/unmerge matrices that :func:`fold_models` folds into the weights.
"""

from knotwork._errors import ZipitError
from knotwork.zipit.api import METHODS, compute_transforms, zip_models
from knotwork.zipit.bn import reset_bn_stats
from knotwork.zipit.evaluate import TaskAccuracy, count_macs, task_accuracy
from knotwork.zipit.fold import fold_models
from knotwork.zipit.graph import (
    Consumer,
    FeatureSpace,
    Tap,
    UnsupportedOperationError,
    ZipGraph,
    trace_feature_graph,
)
from knotwork.zipit.heads import Ensemble, MultiHeadModel
from knotwork.zipit.matchers import MATCHERS, get_matcher, identity_match, permute_match, zipit_match
from knotwork.zipit.rebasin import weight_matching
from knotwork.zipit.stats import FeatureStats, collect_statistics

__all__ = [
    "METHODS", "MATCHERS", "Consumer", "Ensemble", "FeatureSpace", "FeatureStats", "MultiHeadModel", "Tap",
    "TaskAccuracy", "UnsupportedOperationError", "ZipGraph", "ZipitError", "collect_statistics", "compute_transforms",
    "count_macs", "fold_models", "get_matcher", "identity_match", "permute_match", "reset_bn_stats",
    "task_accuracy", "trace_feature_graph", "weight_matching", "zip_models", "zipit_match",
]
