"""The paper's metrics: joint accuracy over the union of the tasks' classes, per-task accuracy, and FLOPs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from knotwork._errors import ZipitError, check_finite

__all__ = ["TaskAccuracy", "count_macs", "n_outputs", "task_accuracy"]


@dataclass(frozen=True)
class TaskAccuracy:
    """Joint accuracy (no task label), per-task accuracies (task label known) and their mean."""

    joint: float
    per_task: tuple[float, ...]

    @property
    def avg(self) -> float:
        return sum(self.per_task) / len(self.per_task)


def n_outputs(model: nn.Module, example: torch.Tensor) -> int:
    """Number of classes the model scores (its logits' last axis), from one forward pass of ``example[:1]``.

    Run in eval mode under ``no_grad``; the model's mode is restored and nothing else changes.
    """
    mode = model.training
    model.eval()
    try:
        with torch.no_grad():
            return int(model(example[:1]).shape[-1])
    finally:
        model.train(mode)


def check_classes(ids: torch.Tensor, n_classes: int, name: str) -> None:
    """Refuse class ids outside ``[0, n_classes)``, naming the first one: ``name[i] = c``."""
    bad = ((ids < 0) | (ids >= n_classes)).nonzero()
    if len(bad):
        i = int(bad[0])
        raise ZipitError(f"{name}[{i}] = {int(ids[i])} is not a class of the model's head (0..{n_classes - 1})")


def _predict_all(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        outs = [model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    # (B, K) for one head; (H, B, K) for stacked heads: concatenate along the batch axis.
    return torch.cat(outs, dim=-2)


def task_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, tasks: Sequence[Sequence[int]], *,
                  batch_size: int = 500) -> TaskAccuracy:
    """Evaluate as ZipIt!'s ``evaluate_cliphead_alltasks``.

    One output (B, K) over all classes: joint = argmax over all classes; task t = argmax within task t's classes
    (on task t's examples). Stacked outputs (H, B, K), head h for task h: each head takes a softmax over its own
    task's classes, joint = the class of the highest probability across heads; task t uses head t.

    Parameters
    ----------
    model : nn.Module
    x : Tensor of shape (N, ...)
    y : Tensor of shape (N,)
        Global class ids; examples outside every task are ignored.
    tasks : sequence of sequences of int
        Each task's global class ids (disjoint).
    batch_size : int, default=500

    Raises
    ------
    knotwork.zipit.ZipitError
        Before any prediction: an empty task list or task, a class id outside the model's head (naming it),
        or ``x`` with NaN or inf values.
    """
    if len(tasks) < 1 or any(len(t) == 0 for t in tasks):
        raise ZipitError("tasks must be a non-empty list of non-empty class lists")
    check_finite(x, "x", error=ZipitError)
    all_classes = torch.tensor([c for t in tasks for c in t], dtype=torch.long)
    check_classes(all_classes, n_outputs(model, x), "tasks' classes")
    keep = torch.isin(y, all_classes)
    x, y = x[keep], y[keep]
    logits = _predict_all(model, x, batch_size)
    task_ids = [torch.as_tensor(list(t)) for t in tasks]
    if logits.ndim == 3:
        if logits.shape[0] != len(tasks):
            raise ZipitError(f"the model has {logits.shape[0]} heads but there are {len(tasks)} tasks")
        probs = torch.cat([logits[h][:, ids].softmax(-1) for h, ids in enumerate(task_ids)], dim=1)
        joint_pred = all_classes[probs.argmax(1)]
        per_head = [logits[h] for h in range(len(tasks))]
    else:
        joint_pred = logits.argmax(1)
        per_head = [logits] * len(tasks)
    joint = (joint_pred == y).float().mean().item()
    per_task = []
    for h, ids in enumerate(task_ids):
        mask = torch.isin(y, ids)
        pred = ids[per_head[h][mask][:, ids].argmax(1)]
        per_task.append((pred == y[mask]).float().mean().item())
    return TaskAccuracy(joint, tuple(per_task))


def count_macs(model: nn.Module, example: torch.Tensor) -> int:
    """Multiply-accumulates of every Conv/Linear for one input (the first item of ``example``).

    Counted with forward hooks, so trunks, heads and ensembles add up what really runs. Elementwise ops,
    normalisation and pooling are ignored, as in fvcore-style counts.
    """
    total = 0

    def hook(mod, _inp, out):
        nonlocal total
        per_item = out[0].numel() if out.ndim > 1 else out.numel()
        if isinstance(mod, nn.Linear):
            total += per_item * mod.in_features
        else:
            k = 1
            for s in mod.kernel_size:
                k *= s
            total += per_item * (mod.in_channels // mod.groups) * k

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Linear | nn.Conv1d | nn.Conv2d)]
    try:
        model.eval()
        with torch.no_grad():
            model(example[:1])
    finally:
        for h in handles:
            h.remove()
    return total
