"""Shared pieces of the matchers: input checks and turning clusters of features into (merge, unmerge)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from knotwork._errors import ZipitError


def check_inputs(corr: torch.Tensor, sizes: Sequence[int]) -> None:
    """Validate a matcher's inputs: a square matrix of side ``sum(sizes)``, equal positive widths."""
    if len(sizes) < 2:
        raise ZipitError(f"matching needs at least 2 models; got sizes={list(sizes)}")
    if any(s <= 0 for s in sizes) or len(set(sizes)) != 1:
        raise ZipitError(f"all models must have the same positive width in a feature space; got {list(sizes)}")
    o = sum(sizes)
    if corr.ndim != 2 or corr.shape != (o, o):
        raise ZipitError(f"corr must have shape ({o}, {o}) for sizes {list(sizes)}; got {tuple(corr.shape)}")


def from_clusters(clusters: Sequence[Sequence[int]], total: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge/unmerge matrices from clusters of original features (one cluster per merged feature).

    ``U[f, c] = 1`` when feature ``f`` belongs to cluster ``c`` (each original feature reads its cluster back);
    ``M[c] = U[:, c]ᵀ / |c|`` averages the members, so ``M U = I`` exactly.

    Returns
    -------
    merge : Tensor of shape (len(clusters), total), float64
    unmerge : Tensor of shape (total, len(clusters)), float64
    """
    lengths = [len(members) for members in clusters]
    rows = torch.tensor([f for members in clusters for f in members], dtype=torch.long)
    cols = torch.repeat_interleave(torch.arange(len(clusters)), torch.tensor(lengths, dtype=torch.long))
    unmerge = torch.zeros(total, len(clusters), dtype=torch.float64)
    unmerge[rows, cols] = 1.0  # one scatter for all clusters (a feature listed twice is still one 1)
    counts = unmerge.sum(0)
    merge = torch.zeros(len(clusters), total, dtype=torch.float64)
    merge[cols, rows] = (1.0 / counts)[cols]  # the same quotient as dividing U's column by its sum
    merge[counts == 0] = float("nan")  # an empty cluster: 0/0, as that division gives
    return merge, unmerge


def split_blocks(merge: torch.Tensor, unmerge: torch.Tensor, sizes: Sequence[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per-model pieces ``(M_i, U_i)``: the column block of M and the row block of U that belong to model i."""
    out = []
    start = 0
    for s in sizes:
        out.append((merge[:, start : start + s], unmerge[start : start + s]))
        start += s
    return out
