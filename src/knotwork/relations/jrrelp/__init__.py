"""JRRELP: relation extraction trained jointly with ConvE link prediction over a KG built from training labels.

Stoica, Platanios and Póczos, "Improving Relation Extraction by Leveraging Knowledge Graph Link Prediction",
arXiv 2012.04812 (2020).
"""

from knotwork.relations.jrrelp.batching import Batch, bucket_batches, iterate_batches
from knotwork.relations.jrrelp.config import DEFAULT_LAMBDA, TrainConfig
from knotwork.relations.jrrelp.conve import ConvEInteraction, filtered_ranks, rank_metrics
from knotwork.relations.jrrelp.encoders import MarkerTransformerEncoder, PALSTMEncoder
from knotwork.relations.jrrelp.entity_types import cluster_types, retype
from knotwork.relations.jrrelp.kg import UNKNOWN_NODE, RelationKG, build_kg, head_word, node_key_function
from knotwork.relations.jrrelp.model import JRRELPModel, JRRELPOutput, LossTerms, jrrelp_loss
from knotwork.relations.jrrelp.train import TrainResult, build_model, evaluate, predict, train

__all__ = [
    "DEFAULT_LAMBDA",
    "UNKNOWN_NODE",
    "Batch",
    "ConvEInteraction",
    "JRRELPModel",
    "JRRELPOutput",
    "LossTerms",
    "MarkerTransformerEncoder",
    "PALSTMEncoder",
    "RelationKG",
    "TrainConfig",
    "TrainResult",
    "bucket_batches",
    "build_kg",
    "build_model",
    "cluster_types",
    "evaluate",
    "filtered_ranks",
    "head_word",
    "iterate_batches",
    "jrrelp_loss",
    "node_key_function",
    "predict",
    "rank_metrics",
    "retype",
    "train",
]
