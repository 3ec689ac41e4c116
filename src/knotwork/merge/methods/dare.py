"""DARE: randomly drop a fraction p of each task's entries and rescale by 1/(1-p); then TA or TIES (sign only)."""

from __future__ import annotations

import torch

from knotwork.merge.config import MergeConfig
from knotwork.merge.methods.base import MergeMethod, TaskReps
from knotwork.merge.methods.ta import task_arithmetic
from knotwork.merge.methods.ties import ties_merge
from knotwork.merge.primitives import dare

REFERENCE = "Yu et al., Language Models are Super Mario (DARE), ICML 2024 (arXiv 2311.03099)"


def drop_and_rescale(reps: list[TaskReps], config: MergeConfig) -> list[dict[str, torch.Tensor]]:
    """DARE on every task and module, from one generator seeded with ``config.seed`` (modules in sorted order)."""
    generator = torch.Generator().manual_seed(config.seed)
    return [{name: dare(task[name], config.drop_rate, generator) for name in sorted(task)} for task in reps]


def dare_linear(reps: list[TaskReps], config: MergeConfig) -> dict[str, torch.Tensor]:
    """DARE followed by task arithmetic."""
    return task_arithmetic(drop_and_rescale(reps, config), config)


def dare_ties(reps: list[TaskReps], config: MergeConfig) -> dict[str, torch.Tensor]:
    """DARE followed by TIES; as in the KnOTS paper, TIES keeps 100% (sign election and disjoint mean only)
    unless ``topk`` is set explicitly."""
    return ties_merge(drop_and_rescale(reps, config), config, topk=config.topk if config.topk is not None else 100.0)


DARE = MergeMethod(
    name="dare", reference=REFERENCE, merge=dare_linear, uses=("scale", "drop_rate", "seed", "reduce", "task_scales")
)
DARE_TIES = MergeMethod(
    name="dare-ties",
    reference=REFERENCE,
    merge=dare_ties,
    uses=("scale", "drop_rate", "seed", "topk", "topk_scope", "task_scales"),
)
