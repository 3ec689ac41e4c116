"""DARE: randomly drop a fraction p of each task's entries and rescale by 1/(1-p); then TA or TIES (sign only)."""

from __future__ import annotations

import torch

from knotwork.merge.config import MergeConfig
from knotwork.merge.methods.base import MergeMethod, TaskReps
from knotwork.merge.methods.ta import task_arithmetic
from knotwork.merge.methods.ties import ties_merge
from knotwork.merge.primitives import derived_generator

REFERENCE = "Yu et al., Language Models are Super Mario (DARE), ICML 2024 (arXiv 2311.03099)"


def dare_generator(seed: int, task: int, module: str) -> torch.Generator:
    """The CPU generator of one (task, module) mask, derived from ``seed`` alone.

    Masks do not depend on the order modules are visited, the device, or which worker merges a module, so the
    in-memory, streaming, Dask and GPU routes draw identical masks.
    """
    return derived_generator(int(seed), int(task), module)


MASK_ROWS = 64  # masks are drawn in blocks of this many rows, so a row-blocked merge draws the same numbers


def drop_rows(block: torch.Tensor, drop_rate: float, generator: torch.Generator) -> torch.Tensor:
    """DARE on a block of rows, drawing its mask next from ``generator`` (CPU), MASK_ROWS rows at a time."""
    if drop_rate <= 0:
        return block
    shape = block.shape if block.ndim > 1 else (1, block.numel())
    draws = [torch.rand((min(MASK_ROWS, shape[0] - r),) + tuple(shape[1:]), generator=generator)
             for r in range(0, shape[0], MASK_ROWS)]
    keep = (torch.cat(draws) >= drop_rate).reshape(block.shape).to(block.device)
    return block * keep / (1.0 - drop_rate)


def drop_module(rep: torch.Tensor, config: MergeConfig, task: int, module: str) -> torch.Tensor:
    """DARE on one task's representation of one module; the mask is drawn on the CPU, then moved to ``rep``."""
    return drop_rows(rep, config.drop_rate, dare_generator(config.seed, task, module))


def drop_and_rescale(reps: list[TaskReps], config: MergeConfig) -> list[dict[str, torch.Tensor]]:
    """DARE on every task and module, each mask from :func:`dare_generator`."""
    return [{name: drop_module(t[name], config, i, name) for name in t} for i, t in enumerate(reps)]


def dare_linear(reps: list[TaskReps], config: MergeConfig) -> dict[str, torch.Tensor]:
    """DARE followed by task arithmetic."""
    return task_arithmetic(drop_and_rescale(reps, config), config)


def dare_ties(reps: list[TaskReps], config: MergeConfig) -> dict[str, torch.Tensor]:
    """DARE followed by TIES; as in the KnOTS paper, TIES keeps 100% (sign election and disjoint mean only)
    unless ``topk`` is set explicitly."""
    return ties_merge(drop_and_rescale(reps, config), config, topk=config.topk if config.topk is not None else 100.0)


DARE = MergeMethod(
    name="dare", reference=REFERENCE, merge=dare_linear, combine="ta", drop=True,
    uses=("scale", "drop_rate", "seed", "reduce", "task_scales"),
)
DARE_TIES = MergeMethod(
    name="dare-ties",
    reference=REFERENCE,
    merge=dare_ties,
    combine="ties",
    drop=True,
    default_topk=100.0,
    uses=("scale", "drop_rate", "seed", "topk", "topk_scope", "task_scales"),
)
