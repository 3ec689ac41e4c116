"""Task arithmetic: λ · Σ_i w_i τ_i (or the mean)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from knotwork.merge.config import MergeConfig
from knotwork.merge.methods.base import MergeMethod, TaskReps

REFERENCE = "Ilharco et al., Editing Models with Task Arithmetic, ICLR 2023 (arXiv 2212.04089)"


def ta_module(reps: Sequence[torch.Tensor], config: MergeConfig) -> torch.Tensor:
    """One module: sum (``reduce="sum"``) or mean of the tasks' representations, times ``scale``."""
    weights = config.task_weights(len(reps))
    total = sum(w * rep for w, rep in zip(weights, reps, strict=True))
    if config.reduce == "mean":
        total = total / len(reps)
    return config.scale * total


def task_arithmetic(reps: list[TaskReps], config: MergeConfig) -> dict[str, torch.Tensor]:
    """Whole model: :func:`ta_module` on every module."""
    return {name: ta_module([task[name] for task in reps], config) for name in reps[0]}


TA = MergeMethod(
    name="ta", reference=REFERENCE, merge=task_arithmetic, combine="ta", uses=("scale", "reduce", "task_scales")
)
