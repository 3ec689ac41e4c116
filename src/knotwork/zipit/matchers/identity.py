"""Identity matching: merge feature k of every model with feature k of the others (plain weight averaging)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from knotwork.zipit.matchers._common import check_inputs, from_clusters


def identity_match(corr: torch.Tensor, sizes: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The "W. Avg" baseline: ``M = [I/N … I/N]``, ``U = [I; …; I]``, whatever the correlations.

    Parameters
    ----------
    corr : Tensor of shape (O, O)
        Unused except for its size; kept so every matcher has one signature.
    sizes : sequence of int
        Width of each model's feature space (all equal); ``O = sum(sizes)``.

    Returns
    -------
    merge : Tensor of shape (n, O)
    unmerge : Tensor of shape (O, n)
    """
    check_inputs(corr, sizes)
    n = sizes[0]
    offsets = [sum(sizes[:i]) for i in range(len(sizes))]
    return from_clusters([[off + k for off in offsets] for k in range(n)], sum(sizes))
