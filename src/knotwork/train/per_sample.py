"""The general per-sample gradient path, ``torch.func.vmap(grad(...))``, for any pure model.

DBA itself never needs this (its hooks and closed forms are cheaper); it is the reference for layers DBA
does not support and the independent oracle its tests compare against.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap


def per_sample_gradients(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    inputs: Tensor,
    targets: Tensor,
    *,
    chunk_size: int | None = None,
) -> dict[str, Tensor]:
    """Gradient of every sample's own loss for every trainable parameter, via ``torch.func``.

    Parameters
    ----------
    model : nn.Module
        A model whose forward is pure per sample (no BatchNorm in training mode).
    loss_fn : callable ``(output, target) -> scalar``
        Called on a batch of one sample, e.g. ``torch.nn.functional.cross_entropy``.
    inputs : Tensor of shape (P, ...)
    targets : Tensor of shape (P, ...)
    chunk_size : int, optional
        Passed to ``vmap`` to bound memory.

    Returns
    -------
    dict of str to Tensor of shape (P, *param.shape)
    """
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    frozen = {k: v.detach() for k, v in model.named_parameters() if not v.requires_grad}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def one_loss(p: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        out = functional_call(model, ({**p, **frozen}, buffers), (x.unsqueeze(0),))
        return loss_fn(out, y.unsqueeze(0))

    return vmap(grad(one_loss), in_dims=(None, 0, 0), chunk_size=chunk_size)(params, inputs, targets)


def gram_from_gradients(grads: dict[str, Tensor], names: list[str]) -> Tensor:
    """Gram matrix of the per-sample gradients of the parameters ``names``, concatenated per sample."""
    flat = torch.cat([grads[n].reshape(grads[n].shape[0], -1) for n in names], dim=1)
    return flat @ flat.T
