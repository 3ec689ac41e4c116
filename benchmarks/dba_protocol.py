"""The MNIST reproduction protocol of DBA (helper of benchmarks/dba_study.py): tune on validation, then evaluate
baselines, DBA and ablations.

No I/O here: :func:`run_protocol` receives a ``run`` function (the study's, which keeps one result record per
run) and returns plain dictionaries that the study turns into docs/results/dba.md.

Protocol, per training-set size (``per_class`` images of each digit) and seed:

1. draw a class-balanced training subset of MNIST's train split; hold out ``val_frac`` of it per class as
   validation (never the test set);
2. tune the SGD (momentum 0.9) and Adam learning rates and the step count on validation accuracy, averaged
   over the tuning seeds;
3. tune DBA's metric and minimum subset size the same way, on top of whichever tuned optimizer validated
   better (one DBA family keeps the grid small enough for a shared 2-core machine);
4. retrain the tuned baselines, DBA and the ablations (random subset of the chosen size, one global subset,
   the other aggregation) on the whole training subset for every seed and report test accuracy at the tuned
   step count on the full 10k test set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from knotwork.train.io import to_tensors
from knotwork.train.mlp import RunSpec, balanced_subset

SGD_LRS = (0.03, 0.1, 0.3)
ADAM_LRS = (3e-4, 1e-3, 3e-3)
DBA_METRICS = ("snr", "var_of_mean")
DBA_MIN_FRACS = (0.0, 0.5)

RunFn = Callable[[RunSpec, str, int], dict]


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


def baseline_grid(steps: int) -> list[RunSpec]:
    """The learning-rate grid of the plain optimizers."""
    sgd = [RunSpec("sgd", lr, momentum=0.9, steps=steps) for lr in SGD_LRS]
    return sgd + [RunSpec("adam", lr, steps=steps) for lr in ADAM_LRS]


def dba_grid(base: RunSpec) -> list[RunSpec]:
    """DBA settings on top of a tuned optimizer: metric x minimum subset fraction (backward search, mean)."""
    return [
        replace(base, dba={"metric": m, "search": "backward", "aggregate": "mean", "per_layer": True}, min_frac=f)
        for m in DBA_METRICS
        for f in DBA_MIN_FRACS
    ]


def select(specs: list[RunSpec], runs: dict[str, list[dict]]) -> tuple[RunSpec, int, float]:
    """The spec and checkpoint with the best validation accuracy averaged over seeds (first wins ties)."""
    best = (specs[0], 0, -1.0)
    for spec in specs:
        results = runs[spec.key()]
        val = np.mean([r["acc"]["val"] for r in results], axis=0)  # (n_checkpoints,)
        i = int(np.argmax(val))
        if val[i] > best[2]:
            best = (spec, results[0]["checkpoints"][i], float(val[i]))
    return best


def ablations(best: RunSpec) -> dict[str, RunSpec]:
    """One change each to the best DBA setting."""
    dba = dict(best.dba)
    other = "sum" if dba["aggregate"] == "mean" else "mean"
    return {
        "random subset, same size": replace(best, dba={**dba, "random_composition": True}),
        "global instead of per-layer": replace(best, dba={**dba, "per_layer": False}),
        f"aggregate={other}": replace(best, dba={**dba, "aggregate": other}),
    }


def run_protocol(run: RunFn, *, seeds: list[int], tune_seeds: list[int], steps: int) -> dict:
    """Run the whole protocol for one training-set size.

    Parameters
    ----------
    run : callable ``(spec, role, seed) -> dict``
        Trains ``spec`` for ``seed``; ``role`` is "tune" (train on the subset minus validation, evaluate
        "val") or "final" (train on the whole subset, evaluate "test"). Results as from
        :func:`knotwork.train.mlp.train_mlp`.
    seeds, tune_seeds : list of int
    steps : int

    Returns
    -------
    dict
        ``tuning`` (spec key -> mean validation accuracy per checkpoint), ``chosen`` (method -> spec, step,
        validation accuracy) and ``final`` (method -> list of test results, one per seed).
    """
    tuning: dict[str, list[dict]] = {}

    def tune(specs: list[RunSpec]) -> None:
        for spec in specs:
            tuning[spec.key()] = [run(spec, "tune", s) for s in tune_seeds]

    grid = baseline_grid(steps)
    tune(grid)
    chosen = {}
    for name, opt in (("SGD", "sgd"), ("Adam", "adam")):
        chosen[name] = select([s for s in grid if s.optimizer == opt], tuning)
    base = max(("SGD", "Adam"), key=lambda n: chosen[n][2])
    specs = dba_grid(chosen[base][0])
    tune(specs)
    best_name = f"DBA + {base}"
    chosen[best_name] = select(specs, tuning)
    best_spec, best_step, _ = chosen[best_name]
    for label, spec in ablations(best_spec).items():
        chosen[f"{best_name}: {label}"] = (spec, best_step, float("nan"))

    final = {name: [run(spec, "final", s) for s in seeds] for name, (spec, _, _) in chosen.items()}
    return {
        "tuning": {k: np.mean([r["acc"]["val"] for r in v], axis=0).tolist() for k, v in tuning.items()},
        "tuning_checkpoints": next(iter(tuning.values()))[0]["checkpoints"],
        "chosen": {name: {"spec": spec.to_dict(), "key": spec.key(), "step": step, "val": val} for name, (spec, step, val) in chosen.items()},
        "final": final,
        "best_dba": best_name,
    }


def accuracy_at_step(result: dict, step: int) -> float:
    """Test accuracy of a final run at the tuned step (the last checkpoint reached if it stopped early)."""
    checkpoints = result["checkpoints"]
    if step in checkpoints:
        return result["acc"]["test"][checkpoints.index(step)]
    return result["acc"]["test"][-1] if checkpoints else float("nan")

