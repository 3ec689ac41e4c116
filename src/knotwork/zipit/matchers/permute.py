"""Permute: align every model to model 0 by linear assignment on feature correlations, then average."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from knotwork.zipit.matchers._common import check_inputs, from_clusters


def permute_match(corr: torch.Tensor, sizes: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's "Permute" baseline (Eq. 2), i.e. REPAIR's correlation alignment without REPAIR.

    For each model ``i > 0`` solve ``max_P Σ_k corr[k, P(k)]`` between model 0's features and model i's (a linear
    assignment, Hungarian / Jonker-Volgenant), then merge each model-0 feature with its partners by averaging.

    Parameters
    ----------
    corr : Tensor of shape (O, O)
        Correlation of the concatenated features ``[f_0 ‖ … ‖ f_{N-1}]``.
    sizes : sequence of int
        Width of each model's space (equal); ``O = sum(sizes)``.

    Returns
    -------
    merge : Tensor of shape (n, O)
    unmerge : Tensor of shape (O, n)
    """
    check_inputs(corr, sizes)
    c = corr.detach().to(torch.float64).cpu().numpy()
    n = sizes[0]
    clusters = [[k] for k in range(n)]
    start = n
    for s in sizes[1:]:
        rows, cols = linear_sum_assignment(np.nan_to_num(c[:n, start : start + s]), maximize=True)
        for r, col in zip(rows, cols, strict=True):
            clusters[r].append(start + int(col))
        start += s
    return from_clusters(clusters, sum(sizes))
