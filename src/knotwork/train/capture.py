"""Find the layers DBA can handle and record their inputs and output gradients during one pass.

For a layer computing ``y = W x + b`` at every one of ``L`` positions (``L = 1`` for an ``nn.Linear`` on a
``(batch, features)`` input, the output pixels of an ``nn.Conv2d`` after unfolding), the gradient of sample
``i``'s own loss is ``g_i(W) = sum_l delta_il x_il^T`` and ``g_i(b) = sum_l delta_il``. So the layer inputs
``X`` (unfolded, shape ``(P, L, d_in)``) and the output gradients ``Delta`` (shape ``(P, L, d_out)``) of a
summed loss hold everything about the per-sample gradients; this module collects exactly those two tensors, as
Opacus and BackPACK do with a forward and a backward hook.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from knotwork._errors import TrainError

SUPPORTED_LAYERS = (nn.Linear, nn.Conv2d)


@dataclass
class LayerTrace:
    """The unfolded inputs and output gradients of one layer for a pool of ``P`` samples.

    Attributes
    ----------
    name : str
        The layer's name in ``model.named_modules()``.
    module : nn.Linear or nn.Conv2d
    inputs : Tensor of shape (P, L, d_in)
        Layer inputs; for a Conv2d the ``F.unfold`` patches, ``d_in = C_in * kh * kw``.
    grad_outputs : Tensor of shape (P, L, d_out)
        Gradient of the *summed* pool loss with respect to the layer output, i.e. of each sample's own loss.
    """

    name: str
    module: nn.Module
    inputs: Tensor | None = None
    grad_outputs: Tensor | None = None
    calls: int = field(default=0, repr=False)

    @property
    def has_bias(self) -> bool:
        bias = getattr(self.module, "bias", None)
        return bias is not None and bias.requires_grad


def _conv_padding(name: str, conv: nn.Conv2d) -> tuple[int, int]:
    """The integer padding `F.unfold` needs; string paddings are converted when they are symmetric."""
    if conv.padding == "valid":
        return (0, 0)
    if conv.padding == "same":
        pads = []
        for k, d in zip(conv.kernel_size, conv.dilation, strict=True):
            total = d * (k - 1)
            if total % 2:
                raise TrainError(
                    f"DBA cannot unfold Conv2d '{name}': padding='same' with kernel {conv.kernel_size} and "
                    f"dilation {conv.dilation} pads asymmetrically; use an odd kernel or explicit integer padding."
                )
            pads.append(total // 2)
        return (pads[0], pads[1])
    return tuple(conv.padding)  # type: ignore[return-value]


def find_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Return the trainable layers of ``model`` that DBA handles, checking that nothing else is trainable.

    Parameters
    ----------
    model : nn.Module

    Returns
    -------
    dict of str to nn.Module
        Every ``nn.Linear`` and ``nn.Conv2d`` with a parameter that requires grad, by module name.

    Raises
    ------
    TypeError
        When a module of another type owns a trainable parameter (it would silently never be updated), naming
        the module, its type and its parameters.
    TrainError
        When a Conv2d uses groups, a non-zero padding mode or asymmetric 'same' padding, or when the model has
        no trainable supported layer.
    """
    layers: dict[str, nn.Module] = {}
    for name, module in model.named_modules():
        own = [n for n, p in module.named_parameters(recurse=False) if p.requires_grad]
        if not own:
            continue
        label = name or "<root>"
        if not isinstance(module, SUPPORTED_LAYERS):
            raise TypeError(
                f"DBA computes per-sample gradients for nn.Linear and nn.Conv2d only, but module '{label}' "
                f"({type(module).__name__}) has trainable parameters {own}. Freeze it with requires_grad_(False), "
                "or use knotwork.train.per_sample_gradients (torch.func) to study it."
            )
        extra = sorted(set(own) - {"weight", "bias"})
        if extra:
            raise TypeError(f"module '{label}' ({type(module).__name__}) has extra trainable parameters {extra}.")
        if isinstance(module, nn.Conv2d):
            if module.groups != 1:
                raise TrainError(f"DBA does not support grouped convolutions: Conv2d '{label}' has groups={module.groups}.")
            if module.padding_mode != "zeros":
                raise TrainError(
                    f"DBA supports zero padding only: Conv2d '{label}' has padding_mode='{module.padding_mode}'."
                )
            _conv_padding(label, module)
        layers[name] = module
    if not layers:
        raise TrainError("the model has no trainable nn.Linear or nn.Conv2d layer for DBA to adapt.")
    return layers


def _unfold_input(trace: LayerTrace, x: Tensor) -> Tensor:
    module = trace.module
    if isinstance(module, nn.Conv2d):
        if x.dim() != 4:
            raise TrainError(f"Conv2d '{trace.name}' got an input of shape {tuple(x.shape)}; DBA needs (batch, C, H, W).")
        cols = F.unfold(
            x, module.kernel_size, dilation=module.dilation, padding=_conv_padding(trace.name, module), stride=module.stride
        )
        return cols.transpose(1, 2)  # (P, L, C_in*kh*kw), channel-major like weight.view(C_out, -1)
    if x.dim() < 2:
        raise TrainError(f"Linear '{trace.name}' got an input of shape {tuple(x.shape)}; DBA needs a batch dimension.")
    return x.reshape(x.shape[0], -1, x.shape[-1])  # (P, L, d_in): extra dims are positions sharing W


def _unfold_grad(trace: LayerTrace, g: Tensor) -> Tensor:
    if isinstance(trace.module, nn.Conv2d):
        return g.flatten(2).transpose(1, 2)  # (P, L, C_out)
    return g.reshape(g.shape[0], -1, g.shape[-1])


@contextmanager
def capture(layers: dict[str, nn.Module]) -> Iterator[dict[str, LayerTrace]]:
    """Record inputs and output gradients of ``layers`` while the block runs a forward and a backward pass.

    A forward hook records each layer's input and registers a gradient hook on its output tensor, which the
    backward pass calls with the gradient of the loss with respect to that output (the value before any
    in-place operation that follows, such as ``nn.ReLU(inplace=True)``). Module hooks are removed on exit,
    also after an error. Each layer must run exactly once per forward pass: a layer applied twice (shared
    weights) would need a sum over calls, which DBA does not implement.
    """
    traces = {name: LayerTrace(name, module) for name, module in layers.items()}
    handles = []

    def forward_hook(trace: LayerTrace):
        def record_grad(grad: Tensor) -> None:
            trace.grad_outputs = _unfold_grad(trace, grad.detach())

        def hook(module, args, output):
            trace.calls += 1
            if trace.calls > 1:
                raise TrainError(
                    f"layer '{trace.name}' ran {trace.calls} times in one forward pass; DBA needs each layer "
                    "to run once (shared weights are not supported)."
                )
            trace.inputs = _unfold_input(trace, args[0].detach())
            if output.requires_grad:
                output.register_hook(record_grad)

        return hook

    try:
        for trace in traces.values():
            handles.append(trace.module.register_forward_hook(forward_hook(trace)))
        yield traces
    finally:
        for handle in handles:
            handle.remove()


def check_traces(traces: dict[str, LayerTrace], pool_size: int) -> None:
    """Raise if a layer did not run, got no gradient, or saw a different number of samples than the loss."""
    for trace in traces.values():
        if trace.inputs is None:
            raise TrainError(
                f"layer '{trace.name}' did not run in the forward pass (its module's forward was bypassed?); "
                "freeze it or remove it from the model."
            )
        if trace.grad_outputs is None:
            # The loss does not depend on this layer; its per-sample gradients are all zero.
            shape = (*trace.inputs.shape[:2], _out_features(trace.module))
            trace.grad_outputs = torch.zeros(shape, dtype=trace.inputs.dtype, device=trace.inputs.device)
        if trace.inputs.shape[0] != pool_size:
            raise TrainError(
                f"layer '{trace.name}' saw a batch of {trace.inputs.shape[0]} samples but the closure returned "
                f"{pool_size} per-sample losses; the batch dimension must come first and match."
            )


def _out_features(module: nn.Module) -> int:
    return module.out_channels if isinstance(module, nn.Conv2d) else module.out_features
