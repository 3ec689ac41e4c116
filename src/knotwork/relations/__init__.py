"""knotwork.relations: relation-extraction data quality (Re-TACRED) and joint RE + link prediction (JRRELP).

Data and scoring live at the top level; crowd aggregation in :mod:`knotwork.relations.crowd`, re-annotation
rounds in :mod:`knotwork.relations.annotation`, file reading and writing in :mod:`knotwork.relations.io`.
"""

from knotwork.relations.data import (
    RelationExample,
    TacredFormatError,
    example_from_dict,
    example_to_dict,
    from_opennre,
    load_tacred,
    to_opennre,
    with_relations,
)
from knotwork.relations.issues import (
    confident_joint,
    detection_quality,
    find_label_issues,
    label_quality_scores,
    rank_label_issues,
)
from knotwork.relations.labels import (
    NEGATIVE_LABEL,
    RETACRED_LABELS,
    TACRED_LABELS,
    TACRED_TO_RETACRED,
    rename_to_retacred,
)
from knotwork.relations.patch import Patch, PatchFormatError, UnknownPatchIdError, apply_patch, diff_patch
from knotwork.relations.reevaluate import Reevaluation, reevaluate, reevaluate_versions
from knotwork.relations.scorer import ScoreReport, Scores, confusion_matrix, score, score_report

__all__ = [
    "NEGATIVE_LABEL",
    "RETACRED_LABELS",
    "TACRED_LABELS",
    "TACRED_TO_RETACRED",
    "Patch",
    "PatchFormatError",
    "Reevaluation",
    "RelationExample",
    "ScoreReport",
    "Scores",
    "TacredFormatError",
    "UnknownPatchIdError",
    "apply_patch",
    "confident_joint",
    "confusion_matrix",
    "detection_quality",
    "diff_patch",
    "example_from_dict",
    "example_to_dict",
    "find_label_issues",
    "from_opennre",
    "label_quality_scores",
    "load_tacred",
    "rank_label_issues",
    "reevaluate",
    "reevaluate_versions",
    "rename_to_retacred",
    "score",
    "score_report",
    "to_opennre",
    "with_relations",
]
