"""Crowd label aggregation (one aggregator per file) and agreement statistics; answers are ``(task, worker, label)``."""

from knotwork._errors import NotFittedError
from knotwork.relations.crowd.agreement import cohen_kappa, fleiss_kappa, pairwise_agreement, rating_table
from knotwork.relations.crowd.dawid_skene import DawidSkene
from knotwork.relations.crowd.majority_vote import MajorityVote

#: Registry keys as spelled on the command line (``--method``).
AGGREGATORS = {"majority-vote": MajorityVote, "dawid-skene": DawidSkene}

__all__ = [
    "AGGREGATORS",
    "DawidSkene",
    "MajorityVote",
    "NotFittedError",
    "cohen_kappa",
    "fleiss_kappa",
    "pairwise_agreement",
    "rating_table",
]
