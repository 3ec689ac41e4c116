"""TIES-merging: trim to the top-K% magnitudes per task, elect signs, average the agreeing entries."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from knotwork.merge.config import MergeConfig
from knotwork.merge.methods.base import MergeMethod, TaskReps
from knotwork.merge.primitives import disjoint_mean, elect_sign, task_thresholds, trim

DEFAULT_TOPK = 20.0  # the KnOTS paper's KnOTS-TIES choice on ViT-B/32 (its TIES baseline used 30)
REFERENCE = "Yadav et al., TIES-Merging: Resolving Interference When Merging Models, NeurIPS 2023 (arXiv 2306.01708)"


def ties_trimmed(reps: Sequence[torch.Tensor], cuts: Sequence[float], weights: Sequence[float]) -> torch.Tensor:
    """One module's trimmed, weighted representations, stacked: (n_tasks, *shape)."""
    return torch.stack([w * trim(rep, cut) for w, rep, cut in zip(weights, reps, cuts, strict=True)])


def ties_combine(stacked: torch.Tensor, majority: torch.Tensor, scale: float) -> torch.Tensor:
    """Elect signs (zero sums take ``majority``) and take the disjoint mean, times ``scale``."""
    sign = elect_sign(stacked)
    sign = torch.where(sign == 0, majority, sign)
    return scale * disjoint_mean(stacked, sign)


def majority_sign(sign_total: torch.Tensor | float) -> torch.Tensor:
    """The model-wide majority of elected signs; + when they balance exactly (the reference's rule)."""
    majority = torch.sign(torch.as_tensor(sign_total, dtype=torch.float32))
    return majority if majority != 0 else torch.tensor(1.0)


def has_sign_ties(stacked: torch.Tensor) -> bool:
    """Whether some entry's trimmed values cancel exactly (sum 0, not all 0): only there does the majority matter."""
    return bool(((stacked.sum(dim=0) == 0) & (stacked != 0).any(dim=0)).any())


def ties_block(stacked: torch.Tensor, cuts: Sequence[float], weights: Sequence[float], majority: torch.Tensor,
               scale: float) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """TIES on one block of a module, in place: the same numbers as :func:`ties_trimmed` + :func:`ties_combine`.

    ``stacked`` (n_tasks, *shape) is overwritten. Returns the merged block, the sum of its elected signs, and
    whether some entry's trimmed values cancel exactly (there the model-wide ``majority`` decides). Each step is
    one pass over the block: trim, weight, sum, sign, then the disjoint mean as sign · Σ max(x · sign, 0) / count,
    which equals the mean of the agreeing entries (negation is exact in floating point).
    """
    view = (-1,) + (1,) * (stacked.ndim - 1)
    cut = torch.tensor(list(cuts), dtype=stacked.dtype, device=stacked.device).view(view)
    stacked.masked_fill_(stacked.abs() < cut, 0)
    if any(w != 1 for w in weights):
        stacked.mul_(torch.tensor(list(weights), dtype=stacked.dtype, device=stacked.device).view(view))
    sign = torch.sign(stacked.sum(dim=0))
    signs = sign.sum()
    zero = sign == 0
    tie = bool(((stacked != 0).any(dim=0) & zero).any())
    sign.masked_fill_(zero, float(majority))
    prod = stacked.mul_(sign)
    count = (prod > 0).sum(dim=0).clamp_(min=1)
    merged = prod.clamp_(min=0).sum(dim=0).mul_(sign)
    return scale * (merged / count), signs, tie


def resolve_topk(config: MergeConfig, default: float) -> float:
    return config.topk if config.topk is not None else default


def ties_merge(reps: list[TaskReps], config: MergeConfig, *, topk: float | None = None) -> dict[str, torch.Tensor]:
    """TIES over whole-model statistics, as KnOTS's reference code does (the one-pass, in-memory reference).

    1. Trim: keep each task's top ``topk`` percent magnitudes (one cut over all modules, or per module).
    2. Elect: σ = sign(Σ_i trimmed_i); entries where the sum is exactly 0 take the model-wide majority sign.
    3. Disjoint mean of the entries whose sign agrees with σ, times ``scale``.
    """
    topk = resolve_topk(config, DEFAULT_TOPK) if topk is None else topk
    weights = config.task_weights(len(reps))
    cuts = task_thresholds(reps, topk, scope=config.topk_scope)
    names = list(reps[0])

    def trimmed(name: str) -> torch.Tensor:  # rebuilt in each pass to hold one module at a time
        return ties_trimmed([task[name] for task in reps], [cut[name] for cut in cuts], weights)

    total = sum(elect_sign(trimmed(name)).sum() for name in names)
    majority = majority_sign(total)
    return {name: ties_combine(trimmed(name), majority, config.scale) for name in names}


TIES = MergeMethod(
    name="ties",
    reference=REFERENCE,
    merge=ties_merge,
    combine="ties",
    default_topk=DEFAULT_TOPK,
    uses=("scale", "topk", "topk_scope", "task_scales"),
)
