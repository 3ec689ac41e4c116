"""The run of ``knotwork dba train``: a class-balanced draw, a 784-hidden-10 MLP, full-batch training with or
without DBA, accuracies at checkpoints.

Pure functions over arrays and tensors; ``knotwork.train.io`` reads the files. The pool DBA selects from is the
whole training subset at every step (full-batch training), the natural reading of the paper's data-scarce
setting. The study that tunes and compares these runs lives in ``benchmarks/dba_study.py``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from knotwork._errors import TrainError, check_finite, check_positive_int
from knotwork.train.dba import DBA, check_options
from knotwork.train.io import N_CLASSES

OPTIMIZERS = ("sgd", "adam")


@dataclass(frozen=True)
class RunSpec:
    """One training run; every field is checked on construction (:class:`~knotwork._errors.TrainError`).

    Attributes
    ----------
    optimizer : {"sgd", "adam"}
    lr : float
        Learning rate, finite and > 0.
    momentum : float
        SGD only; finite and >= 0.
    dba : dict, optional
        Keyword arguments of :class:`~knotwork.train.DBA` (``metric``, ``search``, ...; see
        :data:`~knotwork.train.dba.OPTIONS`); None trains plainly on the full-batch mean loss.
    min_frac : float
        DBA's ``min_size`` as a fraction of the pool in [0, 1], so one setting serves pools of 100 and 600;
        0 keeps ``dba["min_size"]`` (default 1).
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
            raise TrainError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {self.optimizer!r}")
        if not (isinstance(self.lr, int | float) and math.isfinite(self.lr) and self.lr > 0):
            raise TrainError(f"lr must be a finite number > 0; got {self.lr!r}")
        if not (isinstance(self.momentum, int | float) and math.isfinite(self.momentum) and self.momentum >= 0):
            raise TrainError(f"momentum must be a finite number >= 0; got {self.momentum!r}")
        if self.momentum and self.optimizer != "sgd":
            raise TrainError(f"momentum applies to the sgd optimizer only; got momentum={self.momentum:g} with adam")
        if not (isinstance(self.min_frac, int | float) and 0 <= self.min_frac <= 1):
            raise TrainError(f"min_frac must be a number in [0, 1]; got {self.min_frac!r}")
        for name in ("hidden", "steps", "eval_every"):
            check_positive_int(getattr(self, name), name, error=TrainError)
        if self.dba is not None:
            check_options(self.dba)

    def key(self) -> str:
        """A stable, readable identifier (the name of a result record)."""
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
    """Indices of ``per_class`` examples of every class 0-9, drawn without replacement, sorted.

    Raises
    ------
    TrainError
        When a class has fewer than ``per_class`` examples, naming the class and its count.
    """
    counts = np.bincount(labels, minlength=N_CLASSES)
    short = np.flatnonzero(counts < per_class)
    if short.size:
        c = int(short[0])
        raise TrainError(f"class {c} has only {counts[c]} examples; cannot draw {per_class} per class")
    chosen = [rng.choice(np.flatnonzero(labels == c), size=per_class, replace=False) for c in range(N_CLASSES)]
    return np.sort(np.concatenate(chosen))


def make_mlp(hidden: int, seed: int) -> nn.Sequential:
    """784 -> hidden -> 10 MLP with ReLU, initialised from a local generator (no global seeding)."""
    model = nn.Sequential(nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, N_CLASSES))
    gen = torch.Generator().manual_seed(seed)
    for layer in (model[0], model[2]):
        # PyTorch's default Linear init (kaiming_uniform with a=sqrt(5) => U(-1/sqrt(fan_in), 1/sqrt(fan_in))).
        bound = 1.0 / layer.in_features**0.5
        with torch.no_grad():
            layer.weight.uniform_(-bound, bound, generator=gen)
            layer.bias.uniform_(-bound, bound, generator=gen)
    return model


def _check_xy(x: Tensor, y: Tensor, name: str) -> None:
    if x.dim() != 2 or x.shape[1] != 784 or y.shape != (x.shape[0],) or x.shape[0] == 0:
        raise TrainError(f"{name}: expected images (n, 784) and labels (n,) with n >= 1; got {tuple(x.shape)} "
                         f"and {tuple(y.shape)}")
    check_finite(x, f"{name} images", error=TrainError)
    if bool(((y < 0) | (y >= N_CLASSES)).any()):
        raise TrainError(f"{name}: labels must lie in 0-{N_CLASSES - 1}")


def _accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def train_mlp(
    spec: RunSpec,
    x_train: Tensor,
    y_train: Tensor,
    evals: dict[str, tuple[Tensor, Tensor]],
    *,
    seed: int,
    device: str | torch.device = "cpu",
    callback: Callable[[int, float], None] | None = None,
) -> dict:
    """Train one MLP full-batch and record accuracies on ``evals`` every ``spec.eval_every`` steps.

    Parameters
    ----------
    spec : RunSpec
    x_train : Tensor of shape (P, 784)
        Float pixels (already scaled).
    y_train : Tensor of shape (P,)
        Labels 0-9.
    evals : dict of str to (Tensor, Tensor)
        Named evaluation sets, e.g. ``{"val": ...}`` or ``{"test": ...}``.
    seed : int
        Initialisation and DBA randomness.
    device : str or torch.device, default "cpu"
        Where the model and the tensors live; the model is initialised on the CPU first, so a seed gives the
        same initial weights on every device.
    callback : callable ``(step, loss)``, optional
        Called after every step (progress reporting).

    Returns
    -------
    dict
        ``spec``, ``key``, ``seed``, ``checkpoints`` (steps), ``acc`` (name -> list per checkpoint),
        ``train_acc``, ``final_loss``, ``diverged_at`` (the step whose loss was not finite, else None; training
        stops there), ``seconds``, and for DBA ``mean_sizes`` (layer -> mean chosen subset size) and ``sizes``
        (layer -> size per step).

    Raises
    ------
    TrainError
        When an image is not finite, a label lies outside 0-9, or shapes disagree.
    """
    _check_xy(x_train, y_train, "training set")
    for name, (x, y) in evals.items():
        _check_xy(x, y, f"evaluation set {name!r}")
    model = make_mlp(spec.hidden, seed).to(device)
    x_train, y_train = x_train.to(device), y_train.to(device)
    evals = {name: (x.to(device), y.to(device)) for name, (x, y) in evals.items()}
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
    loss, diverged_at = float("nan"), None
    for step in range(1, spec.steps + 1):
        if dba is not None:
            loss = float(dba.step(lambda: F.cross_entropy(model(x_train), y_train, reduction="none")))
        else:
            opt.zero_grad(set_to_none=True)
            out = F.cross_entropy(model(x_train), y_train)
            out.backward()
            opt.step()
            loss = float(out.detach())
        if not math.isfinite(loss):
            diverged_at = step  # the remaining checkpoints keep the last recorded accuracies out of selection
            break
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
        "diverged_at": diverged_at,
        "seconds": time.perf_counter() - start,
    }
    if dba is not None:
        sizes = dba.subset_sizes()
        result["sizes"] = {k: v.tolist() for k, v in sizes.items()}
        result["mean_sizes"] = {k: float(v.mean()) if len(v) else float("nan") for k, v in sizes.items()}
    return result
