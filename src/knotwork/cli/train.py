"""CLI for Dynamic Batch Adaptation: `knotwork dba train` and `knotwork bench dba`.

Heavy modules (torch, numpy, matplotlib) are imported inside the commands so `knotwork --help` stays instant.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from knotwork.cli._app import app, bench_app

dba_app = typer.Typer(help="Dynamic Batch Adaptation (DBA): per-layer sample selection around any optimizer.", no_args_is_help=True)
app.add_typer(dba_app, name="dba")

DEFAULT_MNIST = Path("../shared/data/vision/mnist.npz")

# Static text for the results page; every number on that page comes from the runs themselves.
DISCUSSION = [
    "## Reading these numbers",
    "",
    "- Only the paper's abstract is public. Its metric, search, aggregation, subset-size limits, network width, "
    "training length and tuning protocol are unknown; the settings here are documented reconstructions "
    "(docs/dba.md), so a gap to the abstract may come from any of them, and no claim of the paper is refuted by it.",
    "- The abstract's accuracies (97.44% from 100 images, 97.79% from 600) are far above what plain training of "
    "a one-hidden-layer MLP reaches from so few MNIST images in our runs; its implied baselines (≈ 78.5% and "
    "≈ 87.9%) are the numbers to compare our baselines with.",
    "- The random-subset ablation keeps DBA's subset sizes and draws the samples at random: if it matches or "
    "beats DBA, the benefit (or harm) comes from the step size and noise, not from which samples were chosen; "
    "Balles et al. (arXiv 2312.05021) report the same for gradient-matching selection.",
    "- The validation split of the 10-per-class setting has only 20 images (2 per class), so the tuned step "
    "counts and learning rates are noisy; the last column, after the full training length, shows how much that "
    "choice matters.",
    "- Full-batch training with the whole training subset as DBA's pool; with a fixed pool the first layer's "
    "input Gram matrix is cached. Step time and memory: see dba_step_cost.md.",
    "",
]


def _refuse_existing(path: Path, force: bool) -> None:
    if path.exists() and not force:
        raise typer.BadParameter(f"{path} exists; pass --force to overwrite it.", param_hint="--out")


def _require_file(path: Path, hint: str) -> None:
    if not path.is_file():
        raise typer.BadParameter(f"MNIST file not found: {path}", param_hint=hint)


def _prepare(data: dict, per_class: int, seed: int, val_frac: float, role: str):
    """Tensors for one (training-set size, seed): the subset, minus validation when tuning."""
    import numpy as np
    import torch

    from knotwork.train.experiment import balanced_subset, carve_validation
    from knotwork.train.io import to_features

    rng = np.random.default_rng([seed, per_class])
    idx = balanced_subset(data["y_train"], per_class, rng)
    labels = data["y_train"]
    if role == "tune":
        train, val = carve_validation(idx, labels, max(1, round(val_frac * per_class)), rng)
        evals = {"val": (torch.from_numpy(to_features(data["x_train"][val])), torch.from_numpy(labels[val].astype(np.int64)))}
    else:
        train = idx
        evals = {"test": (torch.from_numpy(to_features(data["x_test"])), torch.from_numpy(data["y_test"].astype(np.int64)))}
    # Only the chosen rows are converted: the whole train split as float32 would be 188 MB per run.
    return torch.from_numpy(to_features(data["x_train"][train])), torch.from_numpy(labels[train].astype(np.int64)), evals


@dba_app.command("train")
def train(
    data: Path = typer.Argument(..., help="MNIST-format .npz (x_train, y_train, x_test, y_test)."),
    out: Path = typer.Option(..., "--out", help="JSON file for the run's accuracies and chosen subset sizes."),
    per_class: int = typer.Option(10, help="Training images per class (class-balanced draw from x_train)."),
    seed: int = typer.Option(0, help="Seed of the subset draw, the initialisation and DBA's randomness."),
    optimizer: str = typer.Option("adam", help="sgd or adam."),
    lr: float = typer.Option(1e-3, help="Learning rate."),
    momentum: float = typer.Option(0.0, help="SGD momentum."),
    steps: int = typer.Option(200, help="Full-batch steps."),
    hidden: int = typer.Option(256, help="Hidden width of the 784-hidden-10 MLP."),
    dba: bool = typer.Option(True, "--dba/--no-dba", help="Wrap the optimizer in DBA, or train plainly."),
    metric: str = typer.Option("snr", help="DBA metric: variance, var_of_mean, snr, cos_to_full."),
    search: str = typer.Option("backward", help="DBA search: backward, forward, topk, all."),
    aggregate: str = typer.Option("mean", help="mean or sum."),
    per_layer: bool = typer.Option(True, "--per-layer/--global", help="A subset per layer, or one for the network."),
    min_size: int = typer.Option(1, help="Smallest subset DBA may choose."),
    random_composition: bool = typer.Option(False, help="Ablation: random samples, the size DBA chose."),
    force: bool = typer.Option(False, "--force", help="Overwrite --out."),
) -> None:
    """Train the one-hidden-layer MLP on a class-balanced MNIST subset, with or without DBA, and test it."""
    _refuse_existing(out, force)
    _require_file(data, "DATA")
    import torch
    from tqdm import tqdm

    from knotwork.train.experiment import RunSpec, train_mlp
    from knotwork.train.io import load_mnist, write_json
    from knotwork.train.metrics import get_metric
    from knotwork.train.search import get_search

    torch.set_num_threads(1)
    if dba:
        # Check the names before loading data or training (the errors list the valid choices).
        get_metric(metric), get_search(search)
        options = {"metric": metric, "search": search, "aggregate": aggregate, "per_layer": per_layer, "min_size": min_size}
        if random_composition:
            options["random_composition"] = True
    spec = RunSpec(optimizer, lr, momentum=momentum, dba=options if dba else None, hidden=hidden, steps=steps, eval_every=steps)
    arrays = load_mnist(data)
    x, y, evals = _prepare(arrays, per_class, seed, 0.0, "final")
    with tqdm(total=steps, desc="dba train", unit="step") as bar:
        result = train_mlp(spec, x, y, evals, seed=seed, callback=lambda step, loss: (bar.update(1), bar.set_postfix(loss=f"{loss:.3g}")))
    result.update({"data": str(data), "per_class": per_class})
    write_json(out, result)
    acc = result["acc"]["test"][-1] if result["acc"]["test"] else float("nan")
    sizes = result.get("mean_sizes")
    sizes_text = ", ".join(f"layer {k}: {v:.1f}" for k, v in sizes.items()) if sizes else ""
    typer.echo(f"test accuracy {100 * acc:.2f}% after {result['checkpoints'][-1] if result['checkpoints'] else 0} steps"
               + (f"; mean subset size {sizes_text}" if sizes else "") + f"; wrote {out}")


@bench_app.command("dba")
def bench_dba(
    data: Path = typer.Option(DEFAULT_MNIST, help="MNIST-format .npz."),
    per_class: list[int] = typer.Option([10, 60], "--per-class", help="Training images per class; repeat the option."),
    seeds: int = typer.Option(5, help="Seeds 0..seeds-1 for the final runs."),
    tune_seeds: int = typer.Option(2, help="Seeds 0..tune_seeds-1 whose validation accuracy picks the settings."),
    steps: int = typer.Option(100, help="Full-batch steps per run."),
    val_frac: float = typer.Option(0.2, help="Fraction of each class held out for validation when tuning."),
    cache: Path = typer.Option(Path(".knotwork-cache/dba"), help="Folder for per-run JSON results (resumable)."),
    out: Path = typer.Option(Path("docs/results/dba.md"), "--out", help="Results page to write."),
    force: bool = typer.Option(False, "--force", help="Overwrite --out."),
) -> None:
    """Reproduce the paper's MNIST experiment (baselines, DBA, ablations) and write docs/results/dba.md."""
    _refuse_existing(out, force)
    _require_file(data, "--data")
    import datetime
    import hashlib
    import platform
    import subprocess
    import sys

    import torch
    from tqdm import tqdm

    import knotwork
    from knotwork.train import protocol
    from knotwork.train.experiment import train_mlp
    from knotwork.train.io import load_mnist, write_atomic, write_json
    from knotwork.train.report import render

    torch.set_num_threads(1)
    arrays = load_mnist(data)
    total_seconds = 0.0
    bar = tqdm(desc="dba runs", unit="run")

    def run(spec, role, seed, pc):
        nonlocal total_seconds
        path = cache / f"pc{pc}" / role / spec.key() / f"seed{seed}.json"
        if path.exists():
            result = json.loads(path.read_text())
        else:
            x, y, evals = _prepare(arrays, pc, seed, val_frac, role)
            result = train_mlp(spec, x, y, evals, seed=seed)
            write_json(path, result)
        total_seconds += result["seconds"]
        bar.update(1)
        bar.set_postfix_str(f"{pc}/class {role} {spec.key()} seed{seed}")
        return result

    results, figures = {}, {}
    for pc in per_class:
        results[pc] = protocol.run_protocol(
            lambda spec, role, seed, pc=pc: run(spec, role, seed, pc),
            seeds=list(range(seeds)),
            tune_seeds=list(range(tune_seeds)),
            steps=steps,
        )
        figures[pc] = _plot_sizes(results[pc], out.parent / f"dba_sizes_{pc}.png", pc)
    bar.close()

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"], capture_output=True, text=True).stdout.strip()
    command = "knotwork bench dba " + " ".join(f"--per-class {pc}" for pc in per_class)
    command += f" --seeds {seeds} --tune-seeds {tune_seeds} --steps {steps} --val-frac {val_frac:g} --force"
    meta = {
        "status": "complete",
        "command": command,
        "data": str(data),
        "sha256": hashlib.sha256(Path(data).read_bytes()).hexdigest(),
        "seeds": list(range(seeds)),
        "tune_seeds": list(range(tune_seeds)),
        "machine": f"{platform.machine()} CPU, 2 cores shared with about seven other jobs (timings are noisy); "
        f"one torch thread per process; Python {sys.version.split()[0]}",
        "version": knotwork.__version__ if hasattr(knotwork, "__version__") else "0.1.0",
        "commit": commit + (" (with uncommitted changes in src)" if dirty else ""),
        "torch": torch.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "seconds": total_seconds,
        "steps": steps,
        "eval_every": 25,
        "val_frac": val_frac,
        "sgd_lrs": protocol.SGD_LRS,
        "adam_lrs": protocol.ADAM_LRS,
        "dba_metrics": protocol.DBA_METRICS,
        "dba_min_fracs": protocol.DBA_MIN_FRACS,
        "figures": {pc: f.name for pc, f in figures.items() if f},
        "discussion": DISCUSSION,
    }
    write_atomic(out, render(results, meta))
    write_json(out.with_suffix(".json"), {"meta": meta, "results": {str(k): v for k, v in results.items()}})
    typer.echo(f"wrote {out}")


def _plot_sizes(result: dict, path: Path, per_class: int) -> Path | None:
    """Chosen subset size per layer over the steps, for the best DBA setting (seed 0), as a PNG."""
    runs = result["final"].get(result["best_dba"], [])
    if not runs or "sizes" not in runs[0]:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from knotwork.train.io import write_atomic

    fig, ax = plt.subplots(figsize=(6, 3.2))
    for layer, sizes in runs[0]["sizes"].items():
        ax.plot(range(1, len(sizes) + 1), sizes, label=f"layer {layer} ({'hidden' if layer == '0' else 'output'})")
    ax.axvline(result["chosen"][result["best_dba"]]["step"], color="grey", ls="--", lw=0.8, label="tuned step count")
    ax.set_xlabel("step")
    ax.set_ylabel("chosen subset size |S|")
    ax.set_title(f"{result['best_dba']}, {per_class}/class (pool {per_class * 10}), seed 0")
    ax.legend(fontsize=8)
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    write_atomic(path, buf.getvalue())
    return path
