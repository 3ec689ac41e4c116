"""The run of ``knotwork dba train``: a class-balanced draw, a 784-hidden-10 MLP (or a small CNN), full-batch
training with or without DBA, accuracies at checkpoints; :class:`Trainer` steps one such run at a time.

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
#: Networks a run can train: the paper's one-hidden-layer MLP, or a small CNN (:func:`make_cnn`).
ARCHS = ("mlp", "cnn")


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
        Width of the single hidden layer (784 -> hidden -> 10, ReLU); unused by the CNN.
    steps : int
        Full-batch steps.
    eval_every : int
        Accuracy is recorded every this many steps (and at the last one), so the step count can be tuned.
    arch : {"mlp", "cnn"}
        The network (:func:`make_model`).
    """

    optimizer: str
    lr: float
    momentum: float = 0.0
    dba: dict | None = field(default=None)
    min_frac: float = 0.0
    hidden: int = 256
    steps: int = 200
    eval_every: int = 25
    arch: str = "mlp"

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise TrainError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {self.optimizer!r}")
        if self.arch not in ARCHS:
            raise TrainError(f"arch must be one of {', '.join(ARCHS)}; got {self.arch!r}")
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
        parts += ["cnn" if self.arch == "cnn" else f"h{self.hidden}", f"s{self.steps}"]
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
    _default_init(model, seed)
    return model


def make_cnn(seed: int) -> nn.Sequential:
    """A small LeNet-style CNN on flat 784-pixel inputs: conv 5x5 (16) -> pool -> conv 5x5 (32) -> pool -> 10.

    Every trainable layer is an ``nn.Linear`` or ``nn.Conv2d``, so DBA adapts all of them; initialised like
    :func:`make_mlp`, from a local generator.
    """
    model = nn.Sequential(
        nn.Unflatten(1, (1, 28, 28)),
        nn.Conv2d(1, 16, 5), nn.ReLU(), nn.MaxPool2d(2),  # 28 -> 24 -> 12
        nn.Conv2d(16, 32, 5), nn.ReLU(), nn.MaxPool2d(2),  # 12 -> 8 -> 4
        nn.Flatten(), nn.Linear(32 * 4 * 4, N_CLASSES),
    )
    _default_init(model, seed)
    return model


def _default_init(model: nn.Module, seed: int) -> None:
    """PyTorch's default Linear/Conv2d init (kaiming_uniform with a=sqrt(5) => U(-1/sqrt(fan_in), 1/sqrt(fan_in)))."""
    gen = torch.Generator().manual_seed(seed)
    for layer in model.modules():
        if isinstance(layer, nn.Linear | nn.Conv2d):
            bound = 1.0 / (layer.weight[0].numel()) ** 0.5
            with torch.no_grad():
                layer.weight.uniform_(-bound, bound, generator=gen)
                layer.bias.uniform_(-bound, bound, generator=gen)


def make_model(spec: RunSpec, seed: int) -> nn.Sequential:
    """The network of ``spec`` (``spec.arch``), initialised from ``seed``."""
    return make_cnn(seed) if spec.arch == "cnn" else make_mlp(spec.hidden, seed)


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
    run = Trainer(spec, x_train, y_train, seed=seed, device=device)
    evals = {name: (x.to(device), y.to(device)) for name, (x, y) in evals.items()}
    checkpoints, acc, train_acc = [], {name: [] for name in evals}, []
    start = time.perf_counter()
    loss = float("nan")
    for step in range(1, spec.steps + 1):
        loss = run.step()
        if run.diverged_at is not None:  # the remaining checkpoints keep the last recorded accuracies out of selection
            break
        if callback is not None:
            callback(step, loss)
        if step % spec.eval_every == 0 or step == spec.steps:
            checkpoints.append(step)
            train_acc.append(run.accuracy(run.x_train, run.y_train))
            for name, (x, y) in evals.items():
                acc[name].append(run.accuracy(x, y))
    result = {
        "spec": spec.to_dict(),
        "key": spec.key(),
        "seed": seed,
        "checkpoints": checkpoints,
        "acc": acc,
        "train_acc": train_acc,
        "final_loss": loss,
        "diverged_at": run.diverged_at,
        "seconds": time.perf_counter() - start,
    }
    if run.dba is not None:
        sizes = run.dba.subset_sizes()
        result["sizes"] = {k: v.tolist() for k, v in sizes.items()}
        result["mean_sizes"] = {k: float(v.mean()) if len(v) else float("nan") for k, v in sizes.items()}
    return result


class Trainer:
    """One network of ``spec`` stepped full-batch on a fixed training set, with or without DBA.

    :func:`train_mlp` drives it for a fixed number of steps; a study can step several trainers in lockstep and
    stop on a validation criterion. Inputs are not checked here (:func:`train_mlp` checks them).

    Attributes
    ----------
    model : nn.Module
    dba : DBA or None
    steps_done : int
    diverged_at : int or None
        The step whose loss was not finite; :meth:`step` refuses to go on after it.
    """

    def __init__(self, spec: RunSpec, x_train: Tensor, y_train: Tensor, *, seed: int,
                 device: str | torch.device = "cpu") -> None:
        self.spec = spec
        self.model = make_model(spec, seed).to(device)
        self.x_train, self.y_train = x_train.to(device), y_train.to(device)
        params = self.model.parameters()
        if spec.optimizer == "sgd":
            self.opt: torch.optim.Optimizer = torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum)
        else:
            self.opt = torch.optim.Adam(params, lr=spec.lr)
        self.dba = None
        if spec.dba is not None:
            kwargs = dict(spec.dba)
            if spec.min_frac:
                kwargs["min_size"] = max(1, round(spec.min_frac * len(y_train)))
            self.dba = DBA(self.model, self.opt, seed=seed, **kwargs)
        self.steps_done = 0
        self.diverged_at: int | None = None

    def step(self) -> float:
        """One full-batch step; returns the mean training loss before it (non-finite marks divergence)."""
        if self.diverged_at is not None:
            raise TrainError(f"the run diverged at step {self.diverged_at}; it cannot step further")
        model, x, y = self.model, self.x_train, self.y_train
        if self.dba is not None:
            loss = float(self.dba.step(lambda: F.cross_entropy(model(x), y, reduction="none")))
        else:
            self.opt.zero_grad(set_to_none=True)
            out = F.cross_entropy(model(x), y)
            out.backward()
            self.opt.step()
            loss = float(out.detach())
        self.steps_done += 1
        if not math.isfinite(loss):
            self.diverged_at = self.steps_done
        return loss

    def accuracy(self, x: Tensor, y: Tensor) -> float:
        """Fraction of ``x`` classified as ``y`` (tensors on the run's device)."""
        return _accuracy(self.model, x, y)

    def loss(self, x: Tensor, y: Tensor) -> float:
        """Mean cross-entropy on ``(x, y)``."""
        with torch.no_grad():
            return float(F.cross_entropy(self.model(x), y))
