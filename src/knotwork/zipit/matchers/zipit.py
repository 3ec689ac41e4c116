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
    clusters = _greedy(_working_copy(corr), list(sizes), alpha, beta)
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


def _working_copy(corr: torch.Tensor) -> np.ndarray:
    """A float64 copy of ``corr`` with NaN as 0 and ±inf as the largest finite values (``numpy.nan_to_num``)."""
    sim = np.array(corr.detach().to(torch.float64).cpu().numpy(), dtype=np.float64, copy=True)
    if not np.isfinite(sim).all():  # one cheap pass; nan_to_num's own passes only when there is something to fix
        np.nan_to_num(sim, copy=False)
    return sim


def _greedy(sim: np.ndarray, sizes: list[int], alpha: float, beta: float) -> list[list[int]]:
    """The greedy loop of :func:`zipit_match_naive` on ``sim`` (modified in place), with the same choices.

    The naive loop takes the first maximum of the whole O×O matrix in row-major order at every step (O² work).
    Here every row keeps its maximum and the first column holding it; the first maximum of the matrix is then
    the first row whose maximum is largest, and that row's column: the same pair, ties included, for O work.
    A step changes rows and columns ``i`` and ``j`` only, so only row ``i``, the rows whose best column was
    ``i`` or ``j``, and the rows of a model whose within-model budget just ran out are scanned again; every
    other row compares its best with its new value in column ``i`` (ties go to the lower column, as in
    row-major order). Merged-away features are masked with -inf rather than deleted (the reference's
    ``torch.cat`` copies the O×O matrix at each of the O/2 steps).
    """
    o, n_models = sum(sizes), len(sizes)
    to_remove = o - sizes[0]
    np.fill_diagonal(sim, -np.inf)
    origin = np.repeat(np.arange(n_models), sizes)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    budget = [int((to_remove // n_models) * beta)] * n_models
    for m in range(n_models):
        if budget[m] <= 0:
            sim[starts[m] : starts[m + 1], starts[m] : starts[m + 1]] = -np.inf
    members = [[k] for k in range(o)]
    dead = np.zeros(o, dtype=bool)  # merged-away features, whose columns are never written (see below)
    mask = np.zeros(o)  # 0, or -inf for a dead feature: added to a row, it masks the dead columns for a scan
    rowarg = sim.argmax(1)
    rowmax = sim[np.arange(o), rowarg]

    def rescan(rows: np.ndarray) -> None:
        """Recompute the best column of ``rows``, with the dead columns masked (64 rows at a time: a large fresh
        array costs page faults)."""
        for start in range(0, len(rows), 64):
            part = rows[start : start + 64]
            values = sim[part]
            values += mask
            best = values.argmax(1)
            rowarg[part] = best
            rowmax[part] = values[np.arange(len(part)), best]

    for step in range(to_remove):
        r = int(rowmax.argmax())
        if rowmax[r] == -np.inf:
            raise ZipitError(f"no admissible pair left after {step} merges (alpha={alpha}, beta={beta}); "
                             "raise alpha or beta")
        i, j = sorted((r, int(rowarg[r])))
        members[i] += members[j]
        members[j] = []
        dead[j] = True
        mask[j] = -np.inf
        if alpha == 0.0:
            new = np.full(o, -np.inf)
        else:
            new = np.minimum(sim[i], sim[j])
            new[new > 0] *= alpha
            new[dead] = -np.inf
            new[i] = -np.inf
        # Column j is not written (a strided write costs as much as the rest of the step): every row read below
        # masks the dead columns instead. Row i and column i hold the merged feature, row j nothing.
        sim[i] = new
        sim[:, i] = new
        sim[j] = -np.inf
        stale = (rowarg == i) | (rowarg == j)
        stale[i] = True
        m = origin[i]
        if m == origin[j]:
            budget[m] -= 1
            if budget[m] <= 0:
                block = slice(starts[m], starts[m + 1])
                sim[block, block] = -np.inf
                stale[block] = True
        # Any other row keeps its best column, or takes column i when that is larger (or equal, at a lower index).
        take = (new > rowmax) | ((new == rowmax) & (rowarg > i))
        rowmax[take] = new[take]
        rowarg[take] = i
        rescan(np.flatnonzero(stale))
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
