"""TIES-merging: trim to the top-K% magnitudes per task, elect signs, average the agreeing entries."""

from __future__ import annotations

import torch

from knotwork.merge.config import MergeConfig
from knotwork.merge.methods.base import MergeMethod, TaskReps
from knotwork.merge.primitives import disjoint_mean, elect_sign, task_thresholds, trim

DEFAULT_TOPK = 20.0  # the KnOTS paper's KnOTS-TIES choice on ViT-B/32 (its TIES baseline used 30)
REFERENCE = "Yadav et al., TIES-Merging: Resolving Interference When Merging Models, NeurIPS 2023 (arXiv 2306.01708)"


def ties_merge(reps: list[TaskReps], config: MergeConfig, *, topk: float | None = None) -> dict[str, torch.Tensor]:
    """TIES over whole-model statistics, as KnOTS's reference code does.

    1. Trim: keep each task's top ``topk`` percent magnitudes (one cut over all modules, or per module).
    2. Elect: σ = sign(Σ_i trimmed_i); entries where the sum is exactly 0 take the model-wide majority sign.
    3. Disjoint mean of the entries whose sign agrees with σ, times ``scale``.
    """
    if topk is None:
        topk = config.topk if config.topk is not None else DEFAULT_TOPK
    weights = config.task_weights(len(reps))
    cuts = task_thresholds(reps, topk, scope=config.topk_scope)
    names = list(reps[0])

    def trimmed(name: str) -> torch.Tensor:  # (n_tasks, *shape); rebuilt in each pass to hold one module at a time
        return torch.stack([w * trim(task[name], cut[name]) for w, task, cut in zip(weights, reps, cuts, strict=True)])

    signs = {name: elect_sign(trimmed(name)) for name in names}
    majority = torch.sign(sum(s.sum() for s in signs.values()))
    majority = majority if majority != 0 else torch.tensor(1.0)
    out = {}
    for name in names:
        sign = signs.pop(name)
        sign = torch.where(sign == 0, majority, sign)
        out[name] = config.scale * disjoint_mean(trimmed(name), sign)
    return out


TIES = MergeMethod(
    name="ties", reference=REFERENCE, merge=ties_merge, uses=("scale", "topk", "topk_scope", "task_scales")
)
