"""The small tensor operations that TA, TIES and DARE are built from (each a few lines, as in PEFT's merge_utils).

Operations take one task's representation per module, ``{module: Tensor}``; whole-model statistics (the paper's
global top-K) reduce over all modules of a task.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import numpy as np
import torch

Reps = Mapping[str, torch.Tensor]


def topk_threshold(values: torch.Tensor, topk: float) -> float:
    """Magnitude at or above which the top ``topk`` percent of ``values`` lie.

    As the reference ``topk_values_mask``: with D entries the (D - floor(D·K))-th smallest |value| is the cut and
    every entry >= it is kept, so ties at the cut are all kept. ``topk >= 100`` keeps everything (returns 0).
    """
    return _kth_magnitude(_magnitudes([values]), topk)


def _magnitudes(tensors) -> np.ndarray:
    """One float32 array of |values| over all tensors (the only full-size copy a cut needs)."""
    return np.concatenate([t.detach().reshape(-1).abs().float().cpu().numpy() for t in tensors])


def _kth_magnitude(flat: np.ndarray, topk: float) -> float:
    """The cut of :func:`topk_threshold`, selecting in place in ``flat`` (which it reorders)."""
    k = flat.size - int(flat.size * topk / 100.0)
    if topk >= 100 or k < 1:
        return 0.0
    # numpy's introselect is ~3x faster than torch.kthvalue on CPU for the tens of millions of entries of a model.
    flat.partition(k - 1)
    return float(flat[k - 1])


def task_thresholds(reps: list[Reps], topk: float, *, scope: str = "global") -> list[dict[str, float]]:
    """Per task and module, the magnitude cut of TIES's trimming step.

    ``scope="global"`` (the paper) takes one cut per task over all modules concatenated; ``"module"`` one per module.
    """
    out = []
    for task in reps:
        if scope == "global":
            cut = _kth_magnitude(_magnitudes(task.values()), topk) if topk < 100 else 0.0
            out.append(dict.fromkeys(task, cut))
        elif scope == "module":
            out.append({name: topk_threshold(t, topk) for name, t in task.items()})
        else:
            raise ValueError(f"topk_scope must be 'global' or 'module', got {scope!r}")
    return out


def trim(values: torch.Tensor, threshold: float) -> torch.Tensor:
    """Zero the entries whose magnitude is below ``threshold``."""
    return values * (values.abs() >= threshold)


def elect_sign(stacked: torch.Tensor) -> torch.Tensor:
    """TIES sign election by the sum of values: sign(Σ_i x_i) over tasks (dim 0); 0 where the sum is 0."""
    return torch.sign(stacked.sum(dim=0))


def disjoint_mean(stacked: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """Mean over tasks of the entries that agree with ``sign`` (zeros never count); 0 where none agrees."""
    agree = torch.where(sign > 0, stacked > 0, stacked < 0)
    count = agree.sum(dim=0).clamp(min=1)
    return (stacked * agree).sum(dim=0) / count


def derived_generator(*parts: object) -> torch.Generator:
    """A CPU generator seeded from a hash of ``parts`` (e.g. seed, task, module): the draws of one (task, module)
    do not depend on which other modules were visited first, by which worker, or on which device."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return torch.Generator(device="cpu").manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def dare(values: torch.Tensor, drop_rate: float, generator: torch.Generator) -> torch.Tensor:
    """DARE: drop each entry with probability ``drop_rate`` and rescale the survivors by 1 / (1 - drop_rate)."""
    if drop_rate <= 0:
        return values
    keep = torch.rand(values.shape, generator=generator) >= drop_rate
    return values * keep / (1.0 - drop_rate)
