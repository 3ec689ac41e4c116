"""Git Re-Basin weight matching (Ainsworth, Hayase & Srinivasa, ICLR 2023) over the traced feature spaces.

The paper's "Git Re-Basin‡" baseline: permute model B so that its weights best match model A's, by coordinate
descent over the spaces, each step a linear assignment on ``Σ W_A W_Bᵀ`` over every tensor touching that space
(the other axes of B already permuted), until no permutation improves. Then average, as ZipIt! does for Permute.
Spaces come from :func:`~knotwork.zipit.graph.trace_feature_graph`, so no hand-written permutation spec is needed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from knotwork._errors import ZipitError
from knotwork.zipit.matchers import from_clusters
from knotwork.zipit.spaces import ZipGraph, module_spaces

__all__ = ["weight_matching"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Axis:
    key: str  # state-dict key of the tensor
    dim: int  # 0: output channels; 1: input columns
    space: int
    offset: int = 0
    expand: int = 1


def _axes(model: nn.Module, graph: ZipGraph, spaces: set[int]) -> dict[str, list[_Axis]]:
    """For every tensor that a mergeable space touches, the axes it permutes."""
    out_space, in_spaces = module_spaces(graph)
    producers = {n for s in graph.spaces for n in s.producers}
    axes: dict[str, list[_Axis]] = {}
    for name, mod in model.named_modules():
        for pname, _ in mod.named_parameters(recurse=False):  # weights and biases; BN running stats are reset
            key = f"{name}.{pname}" if name else pname
            k = out_space.get(name)
            if k in spaces and (name not in producers or pname in ("weight", "bias")):
                axes.setdefault(key, []).append(_Axis(key, 0, k))
            if pname == "weight":
                for k_in, c in in_spaces.get(name, []):
                    if k_in in spaces:
                        axes.setdefault(key, []).append(_Axis(key, 1, k_in, c.offset, c.expand))
    return axes


def _as_rows(t: torch.Tensor, ax: _Axis, width: int) -> torch.Tensor:
    """The slice of ``t`` on ``ax`` with that axis first: (width, rest)."""
    if ax.dim == 0:
        return t.reshape(width, -1)
    v = t.reshape(t.shape[0], t.shape[1] // ax.expand, ax.expand, *t.shape[2:])[:, ax.offset : ax.offset + width]
    return v.movedim(1, 0).reshape(width, -1)


def _permute(t: torch.Tensor, ax: _Axis, perm: np.ndarray) -> torch.Tensor:
    """Reorder the channels of ``t`` on ``ax``: new channel k is old channel ``perm[k]``."""
    p = torch.as_tensor(perm)
    if ax.dim == 0:
        return t[p]
    v = t.reshape(t.shape[0], t.shape[1] // ax.expand, ax.expand, *t.shape[2:])
    idx = torch.arange(v.shape[1])
    idx[ax.offset : ax.offset + len(p)] = ax.offset + p
    return v[:, idx].reshape(t.shape)


def _match_pair(sd_a, sd_b, axes, widths, spaces, max_iter, rng) -> dict[int, np.ndarray]:
    perms = {k: np.arange(widths[k]) for k in spaces}
    by_space: dict[int, list[_Axis]] = {k: [] for k in spaces}
    for lst in axes.values():
        for ax in lst:
            by_space[ax.space].append(ax)
    for it in range(max_iter):
        improved = False
        for k in rng.permutation(sorted(spaces)):
            k = int(k)
            cost = torch.zeros(widths[k], widths[k], dtype=torch.float64)
            for ax in by_space[k]:
                wb = sd_b[ax.key]
                for other in axes[ax.key]:
                    if other is not ax:  # every other axis of B takes its current permutation
                        wb = _permute(wb, other, perms[other.space])
                a = _as_rows(sd_a[ax.key].double(), ax, widths[k])
                b = _as_rows(wb.double(), ax, widths[k])
                cost += a @ b.T
            c = cost.numpy()
            _, cols = linear_sum_assignment(c, maximize=True)
            old = c[np.arange(widths[k]), perms[k]].sum()
            new = c[np.arange(widths[k]), cols].sum()
            if new > old + 1e-12 * max(1.0, abs(old)):
                perms[k] = cols
                improved = True
        log.info("weight matching iteration %d: %s", it, "improved" if improved else "converged")
        if not improved:
            break
    return perms


def weight_matching(
    models: Sequence[nn.Module], graph: ZipGraph, *, max_iter: int = 100, seed: int = 0
) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Align models 1..N-1 to model 0 by weight matching; return ``(M, U)`` per mergeable space.

    Parameters
    ----------
    models : sequence of nn.Module
        Same architecture, N >= 2.
    graph : ZipGraph
    max_iter : int, default=100
        Coordinate-descent sweeps (as the reference); it stops earlier when a sweep changes nothing.
    seed : int, default=0
        Order of the spaces within each sweep (the reference visits them in random order).

    Returns
    -------
    dict of int to (Tensor (n, O), Tensor (O, n))
        Permute-and-average merge/unmerge matrices, ready for :func:`~knotwork.zipit.fold.fold_models`.
    """
    if len(models) < 2:
        raise ZipitError(f"weight matching needs at least 2 models; got {len(models)}")
    spaces = set(graph.mergeable)
    widths = {k: graph.spaces[k].width for k in spaces}
    axes = _axes(models[0], graph, spaces)
    sd_a = {k: v.detach() for k, v in models[0].state_dict().items()}
    rng = np.random.default_rng(seed)
    clusters = {k: [[c] for c in range(widths[k])] for k in spaces}
    for i, model in enumerate(models[1:], start=1):
        sd_b = {k: v.detach() for k, v in model.state_dict().items()}
        perms = _match_pair(sd_a, sd_b, axes, widths, spaces, max_iter, rng)
        for k in spaces:
            for c in range(widths[k]):
                clusters[k][c].append(i * widths[k] + int(perms[k][c]))
    n = len(models)
    return {k: from_clusters(clusters[k], n * widths[k]) for k in spaces}
