"""Task arithmetic: λ · Σ_i w_i τ_i (or the mean)."""

from __future__ import annotations

import torch

from knotwork.merge.config import MergeConfig
from knotwork.merge.methods.base import MergeMethod, TaskReps

REFERENCE = "Ilharco et al., Editing Models with Task Arithmetic, ICLR 2023 (arXiv 2212.04089)"


def task_arithmetic(reps: list[TaskReps], config: MergeConfig) -> dict[str, torch.Tensor]:
    """Sum (``reduce="sum"``) or mean of the per-task representations, times ``scale``."""
    weights = config.task_weights(len(reps))
    out = {}
    for name in reps[0]:
        total = sum(w * task[name] for w, task in zip(weights, reps, strict=True))
        if config.reduce == "mean":
            total = total / len(reps)
        out[name] = config.scale * total
    return out


TA = MergeMethod(name="ta", reference=REFERENCE, merge=task_arithmetic, uses=("scale", "reduce", "task_scales"))
