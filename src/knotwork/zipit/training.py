"""Train a base model on one task with a frozen class-embedding head (the setting ZipIt! merges).

Pure tensors in, trained model out: no files, no printing (progress goes through ``progress``/``logging``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from knotwork._errors import ZipitError, check_finite, check_positive_int
from knotwork._progress import as_callback
from knotwork._schedule import warmup_linear_decay
from knotwork.zipit.evaluate import check_classes, n_outputs
from knotwork.zipit.stats import Progress

__all__ = ["augment_crop_flip", "train_on_task"]

log = logging.getLogger(__name__)


def augment_crop_flip(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random horizontal flip and random crop with zero padding, per image (the CIFAR recipe).

    Parameters
    ----------
    x : Tensor of shape (B, C, H, W)
    generator : torch.Generator
        Source of randomness; the global RNG is never touched.
    pad : int, default=4
    """
    b, _, h, w = x.shape
    flip = torch.rand(b, generator=generator) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    # Gather with broadcast index tensors: image b reads rows dy[b]..dy[b]+h and columns dx[b]..dx[b]+w.
    rows = (dy[:, None] + torch.arange(h)[None, :])[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w)[None, :])[:, None, None, :]
    return padded[torch.arange(b)[:, None, None, None], torch.arange(x.shape[1])[None, :, None, None], rows, cols]


def train_on_task(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    classes: Sequence[int],
    *,
    epochs: int,
    lr: float = 0.1,
    weight_decay: float = 5e-4,
    batch_size: int = 128,
    augment: bool = False,
    seed: int = 0,
    warmup_epochs: int = 1,
    nesterov: bool = True,
    device: str | torch.device = "cpu",
    progress: Progress = False,
) -> nn.Module:
    """Train ``model`` (outputs logits over all classes) on the examples of ``classes`` only.

    The loss is cross-entropy over the task's own classes (logits of other classes are dropped), as ZipIt!'s
    ``train_cliphead`` does. SGD with momentum 0.9 (Nesterov by default), a linear warm-up (one epoch by default;
    the paper's recipe uses 5 epochs and plain momentum) then linear decay to 0.

    Parameters
    ----------
    model : nn.Module
        Maps ``x`` to logits of shape (B, n_classes_total); trained in place and returned.
    x : Tensor of shape (N, ...)
    y : Tensor of shape (N,)
        Global class ids.
    classes : sequence of int
        The task's classes; examples of other classes are ignored.
    epochs : int
    lr, weight_decay : float
    batch_size : int
    augment : bool, default=False
        Random crop + flip (:func:`augment_crop_flip`) on each batch.
    seed : int
        Seeds the shuffling and augmentation generator (the model's init is the caller's business).
    warmup_epochs : int, default=1
        Epochs of linear learning-rate warm-up (0 to ``epochs``); the rest decays linearly to 0.
    nesterov : bool, default=True
        Nesterov momentum; False gives plain momentum 0.9 (the paper's ``train_cliphead``).
    device : str or torch.device, default="cpu"
        Where the model and each batch are computed. Shuffling and augmentation draw from a CPU generator, so
        the order of examples does not depend on the device.
    progress : bool or callable, default=False
        True for a bar on stderr over epochs, or a callable given the number of epochs just finished.

    Returns
    -------
    nn.Module
        ``model``, trained, in eval mode, back on the CPU (its state dict holds CPU tensors).

    Raises
    ------
    knotwork.zipit.ZipitError
        Before training: ``x`` with NaN or inf values, labels or classes that are not integers in
        ``[0, n_outputs)`` of the model's head (naming the first bad one), no example of ``classes``,
        ``epochs``/``batch_size`` below 1, ``warmup_epochs`` outside ``[0, epochs]``, or an ``lr`` that is not a finite number > 0 or a ``weight_decay``
        that is not a finite number >= 0.
    """
    check_positive_int(epochs, "epochs", error=ZipitError)
    check_positive_int(batch_size, "batch_size", error=ZipitError)
    if isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, int) or not 0 <= warmup_epochs <= epochs:
        raise ZipitError(f"warmup_epochs must be an integer in [0, epochs={epochs}]; got {warmup_epochs!r}")
    if isinstance(lr, bool) or not isinstance(lr, int | float) or not math.isfinite(lr) or lr <= 0:
        raise ZipitError(f"lr must be a finite number > 0; got {lr!r}")
    if (isinstance(weight_decay, bool) or not isinstance(weight_decay, int | float)
            or not math.isfinite(weight_decay) or weight_decay < 0):
        raise ZipitError(f"weight_decay must be a finite number >= 0; got {weight_decay!r}")
    check_finite(x, "x", error=ZipitError)
    if y.ndim != 1 or len(y) != len(x) or y.is_floating_point() or y.is_complex():
        raise ZipitError(f"y must be integer class ids of shape ({len(x)},); got {y.dtype} of shape {tuple(y.shape)}")
    classes_t = torch.as_tensor(list(classes), dtype=torch.long)
    if len(classes_t) == 0:
        raise ZipitError("classes must name at least one class")
    n_out = n_outputs(model, x)
    check_classes(classes_t, n_out, "classes")
    check_classes(y, n_out, "y")
    keep = torch.isin(y, classes_t)
    if not keep.any():
        raise ZipitError(f"no example has a class in {classes_t.tolist()}")
    xs, ys = x[keep], y[keep]
    local = torch.full((n_out,), -1, dtype=torch.long)
    local[classes_t] = torch.arange(len(classes_t))
    ys = local[ys]
    gen = torch.Generator().manual_seed(seed)
    model.to(device)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=bool(nesterov), weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(xs) / batch_size)
    # Linear warm-up over ``warmup_epochs``, then linear decay to 0 at the last step.
    sched = warmup_linear_decay(opt, total_steps=epochs * steps_per_epoch,
                                warmup_steps=warmup_epochs * steps_per_epoch)
    update, close = as_callback(progress, total=epochs, desc="train", unit="epoch")
    model.train()
    try:
        for epoch in range(epochs):
            _epoch(model, opt, sched, xs, ys, classes_t, gen, batch_size=batch_size, augment=augment, epoch=epoch,
                   device=device)
            update(1)
    finally:
        close()
        model.to("cpu")
    return model.eval()


def _epoch(model, opt, sched, xs, ys, classes_t, gen, *, batch_size: int, augment: bool, epoch: int,
           device: str | torch.device = "cpu") -> None:
    """One pass over the task's examples in a random order (``ys`` are task-local class indices)."""
    perm = torch.randperm(len(xs), generator=gen)
    total_loss = 0.0
    on_device = classes_t.to(device)
    for i in range(0, len(xs), batch_size):
        idx = perm[i : i + batch_size]
        xb, yb = xs[idx], ys[idx]
        if augment:
            xb = augment_crop_flip(xb, gen)
        xb, yb = xb.to(device), yb.to(device)
        logits = model(xb)[:, on_device]
        loss = F.cross_entropy(logits, yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        total_loss += loss.item() * len(idx)
    log.info("epoch %d: loss %.4f", epoch, total_loss / len(xs))
