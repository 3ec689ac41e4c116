"""Fold merge/unmerge matrices into weights: ``W* = Σ_i M_i W_i U_i`` over the N models.

Outputs of a producer take ``M_i`` (rows), inputs of a consumer take ``U_i`` (columns, per kernel position,
``U ⊗ I`` for a flattened map), per-channel parameters take ``M_i p``. BatchNorm variances are averaged the same way (the paper suggests
``M∘M``, exact only for independent features; the average is exact for identical ones, an upper bound otherwise,
and the BatchNorm reset replaces it anyway). Everything on a fixed space, and
every tensor no space claims, is averaged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from knotwork.zipit.matchers import split_blocks
from knotwork.zipit.spaces import Consumer, ZipGraph, module_spaces

__all__ = ["fold_models", "apply_input", "apply_output"]

Transform = tuple[torch.Tensor, torch.Tensor]


def apply_output(t: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """``M @ t`` along dim 0 (output channels), keeping the other dims: (n, O_i) x (O_i, ...) -> (n, ...)."""
    return torch.tensordot(m.to(t.dtype), t, dims=([1], [0]))


def apply_input(w: torch.Tensor, u: torch.Tensor, c: Consumer) -> torch.Tensor:
    """Columns ``[offset, offset+C)`` of a consumer weight times ``U``; ``expand`` columns per channel.

    ``w`` is (out, in, *kernel) for a convolution or (out, in) for a linear layer whose ``in`` is
    ``total * expand`` when a spatial map was flattened into it.
    """
    width = u.shape[0]
    shape = w.shape
    v = w.reshape(shape[0], shape[1] // c.expand, c.expand, *shape[2:])
    part = v[:, c.offset : c.offset + width]
    new_part = torch.einsum("oc...,cn->on...", part, u.to(w.dtype))
    v = torch.cat([v[:, : c.offset], new_part, v[:, c.offset + width :]], dim=1)
    return v.reshape(shape[0], -1, *shape[2:])


def fold_models(
    models: Sequence[nn.Module], graph: ZipGraph, transforms: Mapping[int, Transform]
) -> dict[str, torch.Tensor]:
    """Merged state dict of ``models`` given ``(M, U)`` per space index (spaces without one are averaged).

    Parameters
    ----------
    models : sequence of nn.Module
        Same architecture, N >= 2 (N = 1 applies a single model's transform, e.g. a permutation).
    graph : ZipGraph
    transforms : mapping of int to (Tensor (n, O), Tensor (O, n))
        ``M`` and ``U`` over the concatenated features of all models, as the matchers return them.

    Returns
    -------
    dict of str to Tensor
        A state dict for the architecture of ``models[0]``.
    """
    n_models = len(models)
    out_space, in_spaces = module_spaces(graph)
    blocks = {k: split_blocks(m, u, [graph.spaces[k].width] * n_models) for k, (m, u) in transforms.items()}
    producers = {name for s in graph.spaces for name in s.producers}
    mods = [dict(m.named_modules()) for m in models]
    merged: dict[str, torch.Tensor] = {}
    for name, mod0 in models[0].named_modules():
        local = [n for n, _ in mod0.named_parameters(recurse=False)] + [n for n, _ in mod0.named_buffers(recurse=False)]
        for pname in local:
            key = f"{name}.{pname}" if name else pname
            tensors = [getattr(mods[i][name], pname) for i in range(n_models)]
            if tensors[0] is None:
                continue
            if not tensors[0].is_floating_point():
                merged[key] = tensors[0].clone()  # e.g. num_batches_tracked
                continue
            acc = None
            for i, t in enumerate(tensors):
                t = t.detach()
                k_out = out_space.get(name)
                m_i = blocks[k_out][i][0] if k_out in blocks else None
                is_channel_param = k_out is not None and (
                    name in producers and pname in ("weight", "bias") or name not in producers
                )
                if is_channel_param and t.ndim >= 1 and t.shape[0] == graph.spaces[k_out].width:
                    if m_i is None:
                        t = t / n_models
                    else:
                        t = apply_output(t, m_i)
                else:
                    t = t / n_models
                if pname == "weight" and name in in_spaces:
                    for k_in, cons in in_spaces.get(name, []):
                        if k_in in blocks:
                            t = apply_input(t, blocks[k_in][i][1], cons)
                acc = t if acc is None else acc + t
            merged[key] = acc.to(tensors[0].dtype)
    return merged
