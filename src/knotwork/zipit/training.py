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
    progress: bool = False,
) -> nn.Module:
    """Train ``model`` (outputs logits over all classes) on the examples of ``classes`` only.

    The loss is cross-entropy over the task's own classes (logits of other classes are dropped), as ZipIt!'s
    ``train_cliphead`` does. SGD with Nesterov momentum, a one-epoch linear warm-up then linear decay to 0.

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
    progress : bool
        Show a tqdm bar over epochs.

    Returns
    -------
    nn.Module
        ``model``, trained, in eval mode.
    """
    classes_t = torch.as_tensor(list(classes), dtype=torch.long)
    if len(classes_t) == 0:
        raise ValueError("classes must name at least one class")
    keep = torch.isin(y, classes_t)
    if not keep.any():
        raise ValueError(f"no example has a class in {classes_t.tolist()}")
    xs, ys = x[keep], y[keep]
    local = torch.full((int(y.max()) + 1,), -1, dtype=torch.long)
    local[classes_t] = torch.arange(len(classes_t))
    ys = local[ys]
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(xs) / batch_size)
    total = epochs * steps_per_epoch
    warm = steps_per_epoch

    def schedule(step: int) -> float:
        return (step + 1) / warm if step < warm else max(0.0, (total - step) / max(1, total - warm))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    epoch_iter = range(epochs)
    if progress:
        from tqdm.auto import tqdm

        epoch_iter = tqdm(epoch_iter, desc="train", unit="epoch")
    model.train()
    for epoch in epoch_iter:
        perm = torch.randperm(len(xs), generator=gen)
        total_loss = 0.0
        for i in range(0, len(xs), batch_size):
            idx = perm[i : i + batch_size]
            xb, yb = xs[idx], ys[idx]
            if augment:
                xb = augment_crop_flip(xb, gen)
            logits = model(xb)[:, classes_t]
            loss = F.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total_loss += loss.item() * len(idx)
        log.info("epoch %d: loss %.4f", epoch, total_loss / len(xs))
    return model.eval()
