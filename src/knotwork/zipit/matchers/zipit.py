"""ZipIt!'s greedy matcher: merge the most correlated pairs of features, within or across models."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from knotwork._errors import ZipitError
from knotwork.zipit.matchers._common import check_inputs, from_clusters
from knotwork.zipit.matchers.permute import permute_match


def zipit_match(
    corr: torch.Tensor, sizes: Sequence[int], *, alpha: float = 0.3, beta: float = 0.125
) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy "zip" of ``O = Σ n_i`` features down to ``n`` (Stoica et al., ICLR 2024, §4.1 and App. C).

    Repeatedly take the most correlated pair of current features and merge them, until ``n`` remain. A pair
    may come from the same model; each model may take part in at most ``⌊⌊(O - n)/N⌋·β⌋`` such within-model
    merges, after which its features may only merge across models. A merged feature's correlation to every
    other feature becomes the minimum of its members' correlations, multiplied by ``α`` (a discount on merging
    it again).

    Parameters
    ----------
    corr : Tensor of shape (O, O)
        Correlation of the concatenated features ``[f_0 ‖ … ‖ f_{N-1}]``.
    sizes : sequence of int
        Width of each model's space (equal).
    alpha : float, default=0.3
        In [0, 1]. Discount on already merged features (0: a merged feature is never merged again). The
        reference code multiplies negative correlations by ``α`` too, which *raises* them towards 0; here only
        positive correlations are discounted, so a discount never makes a pair more attractive.
    beta : float, default=0.125
        In [0, 1]. Fraction of the merges allowed within one model. ``β = 0`` allows none; the problem is then
        the assignment problem of Permute, which this function solves exactly by calling
        :func:`permute_match` (the reference's greedy loop lets one within-model merge slip through at
        ``b = 0`` and solves the assignment greedily).
        Defaults follow the reference implementation (``a=0.3, b=0.125``).

    Returns
    -------
    merge : Tensor of shape (n, O)
        Rows average the members of each merged feature.
    unmerge : Tensor of shape (O, n)
        0/1: each original feature reads back its merged feature.
    """
    check_inputs(corr, sizes)
    check_options(alpha, beta, len(sizes))
    if beta == 0.0:
        return permute_match(corr, sizes)
    clusters = _greedy(corr.detach().to(torch.float64).cpu().numpy(), list(sizes), alpha, beta)
    return from_clusters(clusters, sum(sizes))


def check_options(alpha: float, beta: float, n_models: int) -> None:
    """Refuse ``alpha``/``beta`` outside [0, 1] (NaN included), and ``alpha = 0`` for more than two models."""
    for name, value in (("alpha", alpha), ("beta", beta)):
        if not 0.0 <= value <= 1.0:
            raise ZipitError(f"{name} must be in [0, 1]; got {value}")
    if alpha == 0.0 and n_models > 2:
        raise ZipitError(f"alpha=0 forbids merging a merged feature again, so {n_models} models cannot be "
                         "zipped down to one model's width; use alpha > 0")


def _discount(sim: np.ndarray, alpha: float) -> np.ndarray:
    if alpha == 0.0:
        return np.full_like(sim, -np.inf)
    return np.where(sim > 0, sim * alpha, sim)


def _greedy(corr: np.ndarray, sizes: list[int], alpha: float, beta: float) -> list[list[int]]:
    """The greedy loop with a cached row maximum: each step costs O(O·k) instead of a full O² argmax.

    Merged-away features are masked with -inf instead of deleting rows and columns (the reference's
    ``torch.cat`` copies the O×O matrix at each of the O/2 steps).
    """
    o, n_models = sum(sizes), len(sizes)
    target = sizes[0]
    sim = np.nan_to_num(corr, nan=0.0).copy()
    np.fill_diagonal(sim, -np.inf)
    origin = np.repeat(np.arange(n_models), sizes)
    to_remove = o - target
    budget = np.full(n_models, int((to_remove // n_models) * beta))
    for m in range(n_models):
        if budget[m] <= 0:
            block = origin == m
            sim[np.ix_(block, block)] = -np.inf
    members = [[k] for k in range(o)]
    rowmax = sim.max(1)
    rowarg = sim.argmax(1)
    for _ in range(to_remove):
        i = int(np.argmax(rowmax))
        j = int(rowarg[i])
        if not np.isfinite(rowmax[i]):
            raise ZipitError(f"no admissible pair left after {len(sizes) * sizes[0] - sum(map(bool, members))} "
                             f"merges (alpha={alpha}, beta={beta}); raise alpha or beta")
        i, j = min(i, j), max(i, j)
        members[i] += members[j]
        members[j] = []
        new = _discount(np.minimum(sim[i], sim[j]), alpha)
        new[i] = -np.inf
        new[j] = -np.inf
        sim[i, :] = new
        sim[:, i] = new
        sim[j, :] = -np.inf
        sim[:, j] = -np.inf
        stale = (rowarg == i) | (rowarg == j)
        stale[i] = True
        if origin[i] == origin[j]:
            m = origin[i]
            budget[m] -= 1
            if budget[m] <= 0:
                block = origin == m
                sim[np.ix_(block, block)] = -np.inf
                stale |= block
        stale_idx = np.flatnonzero(stale)
        rowmax[stale_idx] = sim[stale_idx].max(1)
        rowarg[stale_idx] = sim[stale_idx].argmax(1)
        col = sim[:, i]
        better = col > rowmax
        rowmax[better] = col[better]
        rowarg[better] = i
        rowmax[j] = -np.inf
    return [mem for mem in members if mem]


def zipit_match_naive(corr: torch.Tensor, sizes: Sequence[int], *, alpha: float = 0.3, beta: float = 0.125
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """The same greedy rule with a full argmax per step (O(O³)); the oracle for tests and the benchmark."""
    check_inputs(corr, sizes)
    if beta == 0.0:
        return permute_match(corr, sizes)
    sim = np.nan_to_num(corr.detach().to(torch.float64).cpu().numpy(), nan=0.0).copy()
    o, n_models = sum(sizes), len(sizes)
    np.fill_diagonal(sim, -np.inf)
    origin = np.repeat(np.arange(n_models), sizes)
    budget = np.full(n_models, int(((o - sizes[0]) // n_models) * beta))
    for m in range(n_models):
        if budget[m] <= 0:
            sim[np.ix_(origin == m, origin == m)] = -np.inf
    members = [[k] for k in range(o)]
    for _ in range(o - sizes[0]):
        i, j = sorted(np.unravel_index(int(np.argmax(sim)), sim.shape))
        members[i] += members[j]
        members[j] = []
        new = _discount(np.minimum(sim[i], sim[j]), alpha)
        new[[i, j]] = -np.inf
        sim[i, :], sim[:, i] = new, new
        sim[j, :], sim[:, j] = -np.inf, -np.inf
        if origin[i] == origin[j]:
            budget[origin[i]] -= 1
            if budget[origin[i]] <= 0:
                sim[np.ix_(origin == origin[i], origin == origin[i])] = -np.inf
    return from_clusters([mem for mem in members if mem], o)
