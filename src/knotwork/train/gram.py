"""Per-sample gradient Gram matrices and subset gradients of one layer, from its inputs and output gradients."""

from __future__ import annotations

import torch
from torch import Tensor, nn

# Above this many pairwise position products the L > 1 route would need more memory than the per-sample
# gradients themselves; the choice below compares the two sizes directly, this only bounds one chunk.
_CHUNK_ELEMENTS = 2**24


def layer_gram(inputs: Tensor, grad_outputs: Tensor, *, bias: bool, input_gram: Tensor | None = None) -> Tensor:
    """Gram matrix ``K[i, j] = <g_i, g_j>`` of the per-sample gradients of one layer (weight and bias).

    With ``L = 1`` position (a Linear on ``(batch, features)``) the closed form ``K = (D D^T) * (X X^T)``
    (plus ``D D^T`` for the bias) never forms a per-sample gradient. With ``L > 1`` (Conv2d, sequence inputs)
    ``K[i, j] = sum_{l,m} (X_i X_j^T)_{lm} (D_i D_j^T)_{lm}`` needs ``P^2 L^2`` products, which is usually more
    than the ``P * d_out * d_in`` of the per-sample gradients; the cheaper of the two routes is taken.

    Parameters
    ----------
    inputs : Tensor of shape (P, L, d_in)
    grad_outputs : Tensor of shape (P, L, d_out)
        Output gradients of the summed loss, so that row ``i`` belongs to sample ``i``'s own loss.
    bias : bool
        Whether the layer has a trainable bias, whose gradient ``sum_l delta_il`` joins the weight's.
    input_gram : Tensor of shape (P, P), optional
        ``X X^T`` when already known (``L = 1`` only): with a fixed pool the first layer's inputs never
        change, and this product is the largest cost of the closed form.

    Returns
    -------
    Tensor of shape (P, P)
    """
    P, L, d_in = inputs.shape
    d_out = grad_outputs.shape[-1]
    if L == 1:
        dd = self_gram(grad_outputs[:, 0])
        xx = self_gram(inputs[:, 0]) if input_gram is None else input_gram
        gram = dd * xx
        return gram.add_(dd) if bias else gram
    if P * L * L <= d_out * d_in:
        gram = _gram_by_positions(inputs, grad_outputs)
    else:
        g = per_sample_from_trace(inputs, grad_outputs).reshape(P, -1)
        gram = g @ g.T
    if bias:
        b = grad_outputs.sum(1)  # (P, d_out)
        gram = gram + b @ b.T
    return gram


# Row-block size of :func:`self_gram`; pools up to twice this take one product.
_SELF_GRAM_BLOCK = 160


def self_gram(a: Tensor) -> Tensor:
    """``a @ a.T`` for ``a`` of shape (P, d), computing only the blocks on and above the diagonal.

    The product is symmetric, so the blocks below the diagonal are copies: about a quarter fewer
    multiply-adds' worth of time for pools of several hundred (smaller products run less efficiently than one
    large one). The result equals ``a @ a.T`` up to rounding: each block is its own BLAS call, which may sum
    in another order (with MKL in float32 at the shapes of DBA's MNIST MLP the two agree bit for bit, and
    ``tests/train/test_dba_pinned.py`` checks that DBA's selections are unchanged). Pools of at most
    ``2 * _SELF_GRAM_BLOCK`` rows, and other devices than the CPU, take the one product.
    """
    P = a.shape[0]
    if P <= 2 * _SELF_GRAM_BLOCK or a.device.type != "cpu":
        return a @ a.T
    out = a.new_empty(P, P)
    for start in range(0, P, _SELF_GRAM_BLOCK):
        stop = min(P, start + _SELF_GRAM_BLOCK)
        block = a[start:stop] @ a[start:].T  # rows start:stop, columns start: (diagonal block and to its right)
        out[start:stop, start:] = block
        out[stop:, start:stop] = block[:, stop - start :].T
    return out


def _gram_by_positions(inputs: Tensor, grad_outputs: Tensor) -> Tensor:
    P, L, _ = inputs.shape
    gram = inputs.new_empty(P, P)
    rows = max(1, _CHUNK_ELEMENTS // (P * L * L))
    for start in range(0, P, rows):
        stop = min(P, start + rows)
        xx = torch.einsum("ild,jmd->ijlm", inputs[start:stop], inputs)  # (rows, P, L, L)
        dd = torch.einsum("ilo,jmo->ijlm", grad_outputs[start:stop], grad_outputs)
        gram[start:stop] = (xx * dd).sum((2, 3))
    return gram


def per_sample_from_trace(inputs: Tensor, grad_outputs: Tensor) -> Tensor:
    """Explicit per-sample weight gradients ``g_i = sum_l delta_il x_il^T``, shape (P, d_out, d_in)."""
    return torch.einsum("plo,pld->pod", grad_outputs, inputs)


def subset_gradient(
    module: nn.Module, inputs: Tensor, grad_outputs: Tensor, weights: Tensor
) -> tuple[Tensor, Tensor | None]:
    """Weighted sum of per-sample gradients ``sum_i w_i g_i`` for the weight (and bias) of ``module``.

    One matrix product, no per-sample gradient: ``sum_i w_i sum_l delta_il x_il^T`` is ``(w * Delta)^T X`` with
    the samples and positions flattened together. Pass the rows of the chosen samples only (and their
    weights) to skip the others' share of the product.

    Parameters
    ----------
    module : nn.Linear or nn.Conv2d
    inputs, grad_outputs : Tensor of shape (P, L, d_in) and (P, L, d_out)
    weights : Tensor of shape (P,)
        ``1/|S|`` on the selected samples for a mean, zero elsewhere.

    Returns
    -------
    (Tensor, Tensor or None)
        Gradients shaped like ``module.weight`` and ``module.bias`` (None without a trainable bias).
    """
    weights = weights.to(dtype=inputs.dtype, device=inputs.device)
    P, L, d_out = grad_outputs.shape
    scaled = grad_outputs * weights[:, None, None]
    weight_grad = (scaled.reshape(P * L, d_out).T @ inputs.reshape(P * L, -1)).reshape(module.weight.shape)
    bias = getattr(module, "bias", None)
    bias_grad = None
    if bias is not None and bias.requires_grad:
        bias_grad = scaled.sum((0, 1))
    return weight_grad, bias_grad
