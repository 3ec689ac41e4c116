"""Crowd re-annotation rounds following Re-TACRED: task building, worker screening, adjudication, patches."""

from knotwork.relations.annotation.rounds import (
    answers_from_platform,
    check_round_answers,
    filter_answers,
    resolve,
    round_to_patch,
    screen_workers,
)
from knotwork.relations.annotation.tasks import (
    RETACRED_SUPER_CLUSTERS,
    WRONG_TYPE,
    AnnotationItem,
    AnnotationTask,
    annotation_group,
    build_tasks,
    candidate_relations,
    mark_entities,
    stage_choices,
    tasks_to_rows,
)

__all__ = [
    "RETACRED_SUPER_CLUSTERS",
    "WRONG_TYPE",
    "AnnotationItem",
    "AnnotationTask",
    "annotation_group",
    "answers_from_platform",
    "build_tasks",
    "candidate_relations",
    "check_round_answers",
    "filter_answers",
    "mark_entities",
    "resolve",
    "round_to_patch",
    "screen_workers",
    "stage_choices",
    "tasks_to_rows",
]
