"""The data-scarce MNIST protocol: class-balanced subsets, a one-hidden-layer MLP, full-batch training.

Pure functions over arrays; the CLI (``knotwork bench dba``) loads the data, caches runs and writes the
results page. The pool DBA selects from is the whole training subset at every step (full-batch training),
the natural reading of the abstract's data-scarce setting.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from knotwork.train.dba import DBA

OPTIMIZERS = ("sgd", "adam")


@dataclass(frozen=True)
class RunSpec:
    """One training run.

    Attributes
    ----------
    optimizer : {"sgd", "adam"}
    lr : float
    momentum : float
        SGD only.
    dba : dict, optional
        Keyword arguments of :class:`~knotwork.train.DBA` (``metric``, ``search``, ...); None trains plainly
        on the full-batch mean loss.
    min_frac : float
        DBA's ``min_size`` as a fraction of the pool, so one setting serves pools of 100 and 600.
    hidden : int
        Width of the single hidden layer (784 -> hidden -> 10, ReLU).
    steps : int
        Full-batch steps.
    eval_every : int
        Accuracy is recorded every this many steps (and at the last one), so the step count can be tuned.
    """

    optimizer: str
    lr: float
    momentum: float = 0.0
    dba: dict | None = field(default=None)
    min_frac: float = 0.0
    hidden: int = 256
    steps: int = 200
    eval_every: int = 25

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"The 'optimizer' of a RunSpec must be one of {OPTIMIZERS}. Got '{self.optimizer}' instead.")
        if self.steps < 1 or self.eval_every < 1:
            raise ValueError(f"steps and eval_every must be >= 1; got {self.steps} and {self.eval_every}.")

    def key(self) -> str:
        """A stable, readable identifier (used as a cache key)."""
        parts = [self.optimizer, f"lr{self.lr:g}"]
        if self.momentum:
            parts.append(f"m{self.momentum:g}")
        if self.dba:
            parts += [f"{k}={v}" for k, v in sorted(self.dba.items())]
            if self.min_frac:
                parts.append(f"minfrac={self.min_frac:g}")
        parts += [f"h{self.hidden}", f"s{self.steps}"]
        return "_".join(parts)

    def to_dict(self) -> dict:
        return asdict(self)


def balanced_subset(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``per_class`` examples of every class, drawn without replacement.

    Raises
    ------
    ValueError
        When a class has fewer than ``per_class`` examples, naming the class.
    """
    chosen = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) < per_class:
            raise ValueError(f"class {c} has only {len(idx)} examples; cannot draw {per_class} per class.")
        chosen.append(rng.choice(idx, size=per_class, replace=False))
    return np.sort(np.concatenate(chosen))


def carve_validation(
    indices: np.ndarray, labels: np.ndarray, val_per_class: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Split a class-balanced index set into (train, validation) with ``val_per_class`` per class held out."""
    train, val = [], []
    for c in np.unique(labels[indices]):
        idx = rng.permutation(indices[labels[indices] == c])
        val.append(idx[:val_per_class])
        train.append(idx[val_per_class:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def make_mlp(hidden: int, seed: int) -> nn.Sequential:
    """784 -> hidden -> 10 MLP with ReLU, initialised from a local generator (no global seeding)."""
    model = nn.Sequential(nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, 10))
    gen = torch.Generator().manual_seed(seed)
    for layer in (model[0], model[2]):
        # PyTorch's default Linear init (kaiming_uniform with a=sqrt(5) => U(-1/sqrt(fan_in), 1/sqrt(fan_in))).
        bound = 1.0 / layer.in_features**0.5
        with torch.no_grad():
            layer.weight.uniform_(-bound, bound, generator=gen)
            layer.bias.uniform_(-bound, bound, generator=gen)
    return model


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def train_mlp(
    spec: RunSpec,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    evals: dict[str, tuple[torch.Tensor, torch.Tensor]],
    *,
    seed: int,
    callback: Callable[[int, float], None] | None = None,
) -> dict:
    """Train one MLP full-batch and record accuracies on ``evals`` every ``spec.eval_every`` steps.

    Parameters
    ----------
    spec : RunSpec
    x_train : Tensor of shape (P, 784)
        Float pixels (already scaled).
    y_train : Tensor of shape (P,)
    evals : dict of str to (Tensor, Tensor)
        Named evaluation sets, e.g. ``{"val": ...}`` or ``{"test": ...}``.
    seed : int
        Initialisation and DBA randomness.
    callback : callable ``(step, loss)``, optional
        Called after every step (progress reporting).

    Returns
    -------
    dict
        ``spec``, ``seed``, ``checkpoints`` (steps), ``acc`` (name -> list per checkpoint), ``train_acc``,
        ``final_loss``, ``seconds``, and for DBA ``mean_sizes`` (layer -> mean chosen subset size) and
        ``sizes`` (layer -> size per step).
    """
    model = make_mlp(spec.hidden, seed)
    params = model.parameters()
    if spec.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum)
    else:
        opt = torch.optim.Adam(params, lr=spec.lr)
    dba = None
    if spec.dba is not None:
        kwargs = dict(spec.dba)
        if spec.min_frac:
            kwargs["min_size"] = max(1, round(spec.min_frac * len(y_train)))
        dba = DBA(model, opt, seed=seed, **kwargs)
    checkpoints, acc, train_acc = [], {name: [] for name in evals}, []
    start = time.perf_counter()
    loss = float("nan")
    for step in range(1, spec.steps + 1):
        if dba is not None:
            loss = float(dba.step(lambda: F.cross_entropy(model(x_train), y_train, reduction="none")))
        else:
            opt.zero_grad(set_to_none=True)
            out = F.cross_entropy(model(x_train), y_train)
            out.backward()
            opt.step()
            loss = float(out.detach())
        if not np.isfinite(loss):
            break  # diverged: the remaining checkpoints keep the last recorded accuracies out of selection
        if callback is not None:
            callback(step, loss)
        if step % spec.eval_every == 0 or step == spec.steps:
            checkpoints.append(step)
            train_acc.append(_accuracy(model, x_train, y_train))
            for name, (x, y) in evals.items():
                acc[name].append(_accuracy(model, x, y))
    result = {
        "spec": spec.to_dict(),
        "key": spec.key(),
        "seed": seed,
        "checkpoints": checkpoints,
        "acc": acc,
        "train_acc": train_acc,
        "final_loss": loss,
        "seconds": time.perf_counter() - start,
    }
    if dba is not None:
        sizes = dba.subset_sizes()
        result["sizes"] = {k: v.tolist() for k, v in sizes.items()}
        result["mean_sizes"] = {k: float(v.mean()) if len(v) else float("nan") for k, v in sizes.items()}
    return result
