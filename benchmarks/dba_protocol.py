"""The units of the DBA study (driven by benchmarks/dba_study.py; the page is benchmarks/dba_page.py).

Per setting (``per_class`` images of each digit, a network):

1. **tune** units, one per method and grid point: the tuning seeds train in lockstep on their subsets minus a
   validation carve (``val_frac`` of each class); validation accuracy (and loss) is measured every
   ``eval_every`` steps, for at least ``min_steps`` steps and until the mean validation accuracy over the
   tuning seeds has not improved for ``patience`` checkpoints (hard cap ``max_steps``). The learning rate and
   the step count are chosen together: the checkpoint with the best mean validation accuracy, ties broken by
   the lower mean validation loss. A learning rate whose run diverged on a tuning seed is never chosen.
   SGD (momentum 0.9) and Adam start from three-point grids; DBA, on top of the baseline optimizer that
   validated better, has its own learning rate, tuned on that optimizer's final grid jointly with DBA's metric
   and minimum subset size. Whenever a chosen learning rate sits at the edge of its grid, the grid grows one
   step of the ladder (..., 0.1, 0.3, 1, ...) in that direction, until the choice is interior or reaches a
   hard bound. Ablations (the random-subset one by default) change one thing in the chosen DBA setting and
   get their own step count on validation.
2. **run** units, one per method and seed: the chosen setting retrained on the whole subset, test accuracy
   (the full 10,000-image test split) and training accuracy every ``eval_every`` steps, as long as the tuning
   run lasted; the score is the test accuracy at the validation-chosen step.

:func:`plan` derives every unit that is still needed from the result records alone, so the study resumes
anywhere; a record is reused only when the arguments it was made with equal the unit's (a changed budget or a
changed choice upstream makes it stale). Tuning seeds (1000, 1001, ...) never coincide with the final seeds.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import pairwise
from typing import Any

import numpy as np

from knotwork.train.io import to_tensors
from knotwork.train.mlp import RunSpec, Trainer, balanced_subset

#: Learning rates live on a half-decade ladder: index k -> (1 or 3) x 10^(k // 2), e.g. -3 -> 0.03, -2 -> 0.1.
START = {"sgd": (-3, -2, -1), "adam": (-7, -6, -5)}  # SGD 0.03, 0.1, 0.3; Adam 3e-4, 1e-3, 3e-3
BOUNDS = {"sgd": (-8, 1), "adam": (-10, -2)}  # SGD 1e-4 .. 3; Adam 1e-5 .. 0.1: a grid never grows past these
MOMENTUM = 0.9
#: DBA's own settings tuned with its learning rate: name -> (metric, minimum subset size as a fraction of the pool).
DBA_CONFIGS = {"snr": ("snr", 0.0), "snr_min0.5": ("snr", 0.5), "vom": ("var_of_mean", 0.0),
               "vom_min0.5": ("var_of_mean", 0.5)}
#: Ablations of the chosen DBA setting: name -> the one DBA option it changes (a callable of the options).
ABLATIONS = {
    "random": ("random subset of the same size", lambda d: {**d, "random_composition": True}),
    "global": ("one subset for all layers", lambda d: {**d, "per_layer": False}),
    "sum": ("sum instead of mean over the subset", lambda d: {**d, "aggregate": "sum" if d["aggregate"] == "mean"
                                                              else "mean"}),
}
TUNE_SEED_OFFSET = 1000


def lr_of(k: int) -> float:
    """The learning rate at ladder index ``k``."""
    return float(f"{1 if k % 2 == 0 else 3}e{k // 2}")


def widen(ks: Sequence[int], chosen: int, bounds: tuple[int, int]) -> list[int] | None:
    """The grid grown by one ladder step beyond ``chosen`` when it sits at an edge, else None.

    None also when the edge is a hard bound. A one-point grid grows downwards first.
    """
    lo, hi = bounds
    if chosen == min(ks) and chosen > lo:
        return sorted({*ks, chosen - 1})
    if chosen == max(ks) and chosen < hi:
        return sorted({*ks, chosen + 1})
    return None


def edge_status(ks: Sequence[int], chosen: int, bounds: tuple[int, int]) -> str:
    """"interior", or which hard bound the choice sits on."""
    if min(ks) < chosen < max(ks):
        return "interior"
    return "at the lower hard bound" if chosen == bounds[0] else "at the upper hard bound"


# ------------------------------------------------------------------------------------------------ settings


@dataclass(frozen=True)
class Setting:
    """One training-set size and network."""

    per_class: int
    arch: str = "mlp"
    hidden: int = 256

    @property
    def name(self) -> str:
        if self.arch != "mlp":
            return f"pc{self.per_class}-{self.arch}"
        return f"pc{self.per_class}" + ("" if self.hidden == 256 else f"-h{self.hidden}")

    def describe(self) -> str:
        net = "784 → 256 → 10 MLP" if self.arch == "mlp" else "small CNN"
        if self.arch == "mlp" and self.hidden != 256:
            net = f"784 → {self.hidden} → 10 MLP"
        return f"{self.per_class} images per class ({self.per_class * 10} training images), {net}"


@dataclass(frozen=True)
class Budget:
    """Everything a unit's result depends on besides its own method and seed."""

    seeds: tuple[int, ...]
    tune_seeds: tuple[int, ...]
    val_frac: float = 0.2
    eval_every: int = 25
    min_steps: int = 400
    max_steps: int = 2000
    patience: int = 4
    ablations: tuple[str, ...] = ("random",)
    data_sha: str = ""


@dataclass(frozen=True)
class Unit:
    """A unit the study still needs: its record name, kind ("tune" or "run") and JSON arguments."""

    name: str
    kind: str
    args: dict = field(hash=False)


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value))


def spec_for(setting: Setting, optimizer: str, k: int, budget: Budget, dba: dict | None = None,
             min_frac: float = 0.0) -> RunSpec:
    """The run of ``optimizer`` at ladder index ``k`` (with DBA options, if given) for ``setting``."""
    return RunSpec(optimizer, lr_of(k), momentum=MOMENTUM if optimizer == "sgd" else 0.0, dba=dba,
                   min_frac=min_frac, hidden=setting.hidden, steps=budget.max_steps, eval_every=budget.eval_every,
                   arch=setting.arch)


def dba_options(metric: str) -> dict:
    return {"metric": metric, "search": "backward", "aggregate": "mean", "per_layer": True}


def tune_unit_for(setting: Setting, method: str, spec: RunSpec, budget: Budget) -> Unit:
    args = {"setting": setting.name, "per_class": setting.per_class, "method": method, "spec": spec.to_dict(),
            "seeds": list(budget.tune_seeds), "val_frac": budget.val_frac, "eval_every": budget.eval_every,
            "min_steps": budget.min_steps, "max_steps": budget.max_steps, "patience": budget.patience,
            "data_sha": budget.data_sha}
    return Unit(f"tune-{setting.name}-{method}-lr{spec.lr:g}", "tune", _plain(args))


def run_unit_for(setting: Setting, method: str, choice: Choice, seed: int, budget: Budget) -> Unit:
    args = {"setting": setting.name, "per_class": setting.per_class, "method": method, "spec": choice.spec,
            "seed": seed, "chosen_step": choice.step, "steps": choice.steps_run, "eval_every": budget.eval_every,
            "data_sha": budget.data_sha}
    return Unit(f"run-{setting.name}-{method}-seed{seed}", "run", _plain(args))


# ------------------------------------------------------------------------------------------------ the plan


@dataclass(frozen=True)
class Choice:
    """The validation choice of one method: its tuning unit, learning rate, step and scores."""

    method: str
    unit: str
    spec: dict
    k: int
    step: int
    val_acc: float
    val_loss: float
    steps_run: int
    stopped: str


@dataclass
class Family:
    """The tuning of one method family (SGD, Adam, DBA, an ablation): grid, units, choice."""

    label: str
    optimizer: str
    ks: list[int]
    units: list[str] = field(default_factory=list)
    choice: Choice | None = None
    done: bool = False
    edge: str = ""


@dataclass
class Plan:
    """What the records settle for one setting, and the units still needed."""

    setting: Setting
    families: dict[str, Family] = field(default_factory=dict)
    best_baseline: str | None = None
    runs: dict[str, list[Unit]] = field(default_factory=dict)  # method -> its run units (done or not)
    needed: list[Unit] = field(default_factory=list)
    valid: set[str] = field(default_factory=set)  # names of records that count


def best_checkpoint(data: Mapping[str, Any]) -> tuple[int, float, float] | None:
    """(step, mean val accuracy, mean val loss) at the best checkpoint of a tuning record; None if it diverged."""
    if data["stopped"] == "diverged" or not data["checkpoints"]:
        return None
    i = max(range(len(data["checkpoints"])), key=lambda j: (data["mean_val_acc"][j], -data["mean_val_loss"][j]))
    return data["checkpoints"][i], data["mean_val_acc"][i], data["mean_val_loss"][i]


def _better(a: Choice | None, b: Choice | None) -> bool:
    """Whether ``a`` validates better than ``b`` (accuracy, then lower loss; the earlier one wins ties)."""
    return a is not None and (b is None or (a.val_acc, -a.val_loss) > (b.val_acc, -b.val_loss))


def plan(setting: Setting, budget: Budget, records: Mapping[str, Mapping[str, Any]],
         fresh: set[str] | None = None) -> Plan:
    """Every unit of ``setting`` that is still needed, and every choice the records already settle.

    Parameters
    ----------
    records : mapping of unit name to record (as from ``_common.load_records``)
    fresh : set of str, optional
        With ``--rerun``: only records named here (computed in this invocation) count as present.
    """
    out = Plan(setting)

    def have(unit: Unit) -> dict | None:
        rec = records.get(unit.name)
        if rec is None or rec["data"].get("args") != unit.args or (fresh is not None and unit.name not in fresh):
            return None
        out.valid.add(unit.name)
        return rec["data"]

    def tune(fam: Family, variants: Mapping[str, Any], bounds: tuple[int, int] | None) -> None:
        """Tune ``variants`` (method name -> ``k -> RunSpec``) over ``fam.ks``, growing the grid while needed."""
        while True:
            pending, found = [], []
            for method, make in variants.items():
                for k in fam.ks:
                    unit = tune_unit_for(setting, method, make(k), budget)
                    if unit.name not in fam.units:
                        fam.units.append(unit.name)
                    data = have(unit)
                    if data is None:
                        pending.append(unit)
                    else:
                        found.append((method, k, unit, data))
            if pending:  # fam.choice, if any, is the choice on the grid before it grew
                out.needed.extend(pending)
                return
            fam.choice = None
            for method, k, unit, data in found:
                best = best_checkpoint(data)
                if best is None:
                    continue
                cand = Choice(method, unit.name, unit.args["spec"], k, best[0], best[1], best[2], data["steps_run"],
                              data["stopped"])
                if _better(cand, fam.choice):
                    fam.choice = cand
            if fam.choice is None:
                fam.done = True
                fam.edge = "every run diverged"
                return
            grown = widen(fam.ks, fam.choice.k, bounds) if bounds else None
            if grown is None:
                fam.done = True
                fam.edge = edge_status(fam.ks, fam.choice.k, bounds) if bounds else "fixed (ablation)"
                return
            fam.ks = grown

    def stages() -> None:
        for opt in ("sgd", "adam"):
            fam = out.families[opt] = Family("SGD" if opt == "sgd" else "Adam", opt, list(START[opt]))
            tune(fam, {opt: lambda k, o=opt: spec_for(setting, o, k, budget)}, BOUNDS[opt])
        if not all(f.done for f in out.families.values()):
            return
        base = max(out.families.values(), key=lambda f: (f.choice is not None,) + (
            (f.choice.val_acc, -f.choice.val_loss) if f.choice else ()))
        if base.choice is None:
            return
        out.best_baseline = base.optimizer
        variants = {f"dba_{base.optimizer}_{name}": (lambda k, m=metric, f=frac:
                                                    spec_for(setting, base.optimizer, k, budget, dba_options(m), f))
                    for name, (metric, frac) in DBA_CONFIGS.items()}
        dba = out.families["dba"] = Family(f"DBA + {base.label}", base.optimizer, list(base.ks))
        tune(dba, variants, BOUNDS[base.optimizer])
        if not dba.done or dba.choice is None:
            return
        chosen = RunSpec(**dba.choice.spec)
        for name in budget.ablations:
            spec = replace(chosen, dba=ABLATIONS[name][1](dict(chosen.dba)))
            fam = out.families[f"dba_{name}"] = Family(f"DBA + {base.label}: {ABLATIONS[name][0]}",
                                                       base.optimizer, [dba.choice.k])
            tune(fam, {f"{dba.choice.method}_{name}": lambda k, s=spec: s}, None)

    stages()
    # Scored runs of every method whose tuning is settled, while the later tuning stages may still be running.
    for method, fam in out.families.items():
        if fam.done and fam.choice is not None:
            units = out.runs[method] = [run_unit_for(setting, method, fam.choice, s, budget) for s in budget.seeds]
            out.needed.extend(u for u in units if have(u) is None)
    return out


# ------------------------------------------------------------------------------------------------ the units


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


def prepare(data: dict, per_class: int, seed: int, val_frac: float, role: str):
    """Tensors for one (training-set size, seed): ``(x, y, evals)``, the subset minus validation when tuning.

    The draw is the one ``knotwork dba train --per-class P --seed S`` makes, so a final run can be replayed with
    the command.
    """
    rng = np.random.default_rng([seed, per_class])
    idx = balanced_subset(data["y_train"], per_class, rng)
    if role == "tune":
        train, val = carve_validation(idx, data["y_train"], max(1, round(val_frac * per_class)), rng)
        evals = {"val": to_tensors(data["x_train"][val], data["y_train"][val])}
    else:
        train = idx
        evals = {"test": to_tensors(data["x_test"], data["y_test"])}
    x, y = to_tensors(data["x_train"][train], data["y_train"][train])
    return x, y, evals


def train_lockstep(trainers: Sequence[Trainer], evals: Sequence[tuple], *, eval_every: int, min_steps: int,
                   max_steps: int, patience: int | None) -> dict:
    """Step ``trainers`` together and evaluate each on its own ``evals[i] = (x, y)`` every ``eval_every`` steps.

    Stops at ``max_steps``, at the first non-finite training loss of any trainer ("diverged"), or, with
    ``patience``, once at least ``min_steps`` steps are done and the mean accuracy over the trainers has not
    improved for ``patience`` checkpoints ("patience"; otherwise "max_steps").

    Returns
    -------
    dict
        ``checkpoints``, per trainer ``acc``, ``loss``, ``train_acc``, ``train_loss`` (lists per checkpoint),
        ``mean_acc``, ``mean_loss``, ``stopped``, ``steps_run``.
    """
    n = len(trainers)
    out: dict[str, Any] = {"checkpoints": [], **{k: [[] for _ in range(n)] for k in
                                                  ("acc", "loss", "train_acc", "train_loss")},
                           "mean_acc": [], "mean_loss": [], "stopped": "max_steps", "steps_run": 0}
    best, since = -math.inf, 0
    for step in range(1, max_steps + 1):
        for t in trainers:
            t.step()
        out["steps_run"] = step
        if any(t.diverged_at is not None for t in trainers):
            out["stopped"] = "diverged"
            break
        if step % eval_every and step != max_steps:
            continue
        out["checkpoints"].append(step)
        for i, (t, (x, y)) in enumerate(zip(trainers, evals, strict=True)):
            out["acc"][i].append(t.accuracy(x, y))
            out["loss"][i].append(t.loss(x, y))
            out["train_acc"][i].append(t.accuracy(t.x_train, t.y_train))
            out["train_loss"][i].append(t.loss(t.x_train, t.y_train))
        out["mean_acc"].append(float(np.mean([a[-1] for a in out["acc"]])))
        out["mean_loss"].append(float(np.mean([a[-1] for a in out["loss"]])))
        if out["mean_acc"][-1] > best:
            best, since = out["mean_acc"][-1], 0
        else:
            since += 1
        if patience is not None and step >= min_steps and since >= patience:
            out["stopped"] = "patience"
            break
    return out


_DATA: dict[str, dict] = {}


def _load(path: str) -> dict:
    if path not in _DATA:
        from knotwork.train.io import load_mnist

        _DATA[path] = load_mnist(path)
    return _DATA[path]


def _sizes_per_checkpoint(trainer: Trainer, checkpoints: Sequence[int]) -> dict[str, list[float]]:
    """DBA's mean chosen subset size per layer over each stretch of steps ending at a checkpoint."""
    if trainer.dba is None:
        return {}
    out = {}
    for layer, sizes in trainer.dba.subset_sizes().items():
        out[layer] = [float(np.mean(sizes[a:b])) for a, b in pairwise([0, *checkpoints])]
    return out


def tune_unit(args: Mapping[str, Any], data_path: str) -> dict:
    """Train the tuning seeds of one method and learning rate in lockstep; validation curves and the stop."""
    import torch

    torch.set_num_threads(1)
    start, cpu = time.perf_counter(), time.process_time()
    data, spec = _load(data_path), RunSpec(**args["spec"])
    trainers, evals = [], []
    for seed in args["seeds"]:
        x, y, ev = prepare(data, args["per_class"], seed, args["val_frac"], "tune")
        trainers.append(Trainer(spec, x, y, seed=seed))
        evals.append(ev["val"])
    curves = train_lockstep(trainers, evals, eval_every=args["eval_every"], min_steps=args["min_steps"],
                            max_steps=args["max_steps"], patience=args["patience"])
    return {"args": dict(args), "checkpoints": curves["checkpoints"], "val_acc": curves["acc"],
            "val_loss": curves["loss"], "train_acc": curves["train_acc"], "train_loss": curves["train_loss"],
            "mean_val_acc": curves["mean_acc"], "mean_val_loss": curves["mean_loss"], "stopped": curves["stopped"],
            "steps_run": curves["steps_run"],
            "diverged_seeds": [s for s, t in zip(args["seeds"], trainers, strict=True) if t.diverged_at],
            "sizes": [_sizes_per_checkpoint(t, curves["checkpoints"]) for t in trainers],
            "seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu}


def run_unit(args: Mapping[str, Any], data_path: str) -> dict:
    """Retrain the chosen setting of one method on the whole subset of one seed; test and train curves."""
    import torch

    torch.set_num_threads(1)
    start, cpu = time.perf_counter(), time.process_time()
    x, y, ev = prepare(_load(data_path), args["per_class"], args["seed"], 0.0, "final")
    trainer = Trainer(RunSpec(**args["spec"]), x, y, seed=args["seed"])
    curves = train_lockstep([trainer], [ev["test"]], eval_every=args["eval_every"], min_steps=args["steps"],
                            max_steps=args["steps"], patience=None)
    ckpts = curves["checkpoints"]
    # A run that diverged before the chosen step is scored at its last checkpoint (and marked on the page).
    i = ckpts.index(args["chosen_step"]) if args["chosen_step"] in ckpts else len(ckpts) - 1
    sizes = _sizes_per_checkpoint(trainer, ckpts)
    return {"args": dict(args), "checkpoints": ckpts, "test_acc": curves["acc"][0], "test_loss": curves["loss"][0],
            "train_acc": curves["train_acc"][0], "train_loss": curves["train_loss"][0],
            "score_step": ckpts[i] if ckpts else None,
            "test_at_step": curves["acc"][0][i] if ckpts else float("nan"),
            "train_at_step": curves["train_acc"][0][i] if ckpts else float("nan"),
            "diverged_at": trainer.diverged_at, "sizes": sizes, "n_test": len(ev["test"][1]),
            "mean_sizes": ({k: float(np.mean(v[: ckpts[i]])) for k, v in trainer.dba.subset_sizes().items()}
                           if ckpts and trainer.dba is not None else {}),
            "seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu}


def execute(kind: str, args: Mapping[str, Any], data_path: str) -> dict:
    """Run one unit (in a worker process or in-process)."""
    return (tune_unit if kind == "tune" else run_unit)(args, data_path)


def settings_of(per_class: Sequence[int], archs: Sequence[str], hidden: int = 256) -> list[Setting]:
    return [Setting(pc, arch, hidden) for arch in dict.fromkeys(archs) for pc in dict.fromkeys(per_class)]
