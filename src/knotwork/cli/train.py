"""`knotwork dba`: train the MNIST MLP with or without Dynamic Batch Adaptation.

Heavy modules (torch, numpy) are imported inside the commands so `knotwork --help` stays instant; for the same
reason the choice enums spell out the registry keys (tests/train/test_bad_inputs.py checks they agree).
The study that reproduces the paper is `python benchmarks/dba_study.py`.
"""

from __future__ import annotations

import enum
from pathlib import Path

import typer

from knotwork.cli._app import Device, device_option, emit_json, force_option, group, json_option, out_option

dba_app = group("dba", "Dynamic Batch Adaptation (DBA): per-layer sample selection around any optimizer.")


class Optimizer(str, enum.Enum):
    """The optimizer DBA wraps (or that trains plainly)."""

    sgd = "sgd"
    adam = "adam"


class Metric(str, enum.Enum):
    """Keys of knotwork.train.METRICS."""

    snr = "snr"
    var_of_mean = "var_of_mean"
    variance = "variance"
    cos_to_full = "cos_to_full"


class Search(str, enum.Enum):
    """Keys of knotwork.train.SEARCHES."""

    backward = "backward"
    forward = "forward"
    topk = "topk"
    all = "all"


class Aggregate(str, enum.Enum):
    """knotwork.train.dba.AGGREGATES."""

    mean = "mean"
    sum = "sum"


@dba_app.command("train")
def train(
    data: Path = typer.Argument(..., help="MNIST-format .npz (x_train, y_train, x_test, y_test; labels 0-9)."),
    out: Path = out_option("JSON file for the run: test accuracy per checkpoint and the chosen subset sizes per step."),
    per_class: int = typer.Option(10, "--per-class", help="Training images per class (class-balanced draw from x_train)."),
    seed: int = typer.Option(0, help="Seed of the subset draw, the initialisation and DBA's randomness (>= 0)."),
    optimizer: Optimizer = typer.Option(Optimizer.adam, help="The optimizer that takes the step."),
    lr: float = typer.Option(1e-3, help="Learning rate (> 0)."),
    momentum: float = typer.Option(0.0, help="SGD momentum (>= 0; sgd only)."),
    steps: int = typer.Option(200, help="Full-batch steps."),
    hidden: int = typer.Option(256, help="Hidden width of the 784-hidden-10 MLP."),
    dba: bool = typer.Option(True, "--dba/--no-dba", help="Wrap the optimizer in DBA, or train plainly."),
    metric: Metric = typer.Option(Metric.snr, help="DBA's subset metric."),
    search: Search = typer.Option(Search.backward, help="DBA's subset search."),
    aggregate: Aggregate = typer.Option(Aggregate.mean, help="Divide the subset's summed gradient by |S| or by the pool size."),
    per_layer: bool = typer.Option(True, "--per-layer/--global", help="A subset per layer, or one for the network."),
    min_size: int = typer.Option(1, "--min-size", help="Smallest subset DBA may choose (1 to the pool size)."),
    random_composition: bool = typer.Option(False, "--random-composition", help="Ablation: random samples, of the size DBA chose."),
    threads: int = typer.Option(1, help="Torch CPU threads."),
    device: Device = device_option(),
    json_path: str = json_option(),
    force: bool = force_option(),
) -> None:
    """Train the one-hidden-layer MLP on a class-balanced MNIST subset, with or without DBA, and test it."""
    from knotwork._errors import RunError, TrainError, check_positive_int
    from knotwork._io import check_output

    # Every option, then the outputs, then the data: all refused before a step is taken.
    check_positive_int(per_class, "--per-class", error=TrainError)
    check_positive_int(seed, "--seed", minimum=0, error=TrainError)
    check_positive_int(threads, "--threads", error=TrainError)
    if random_composition and not dba:
        raise TrainError("--random-composition is an ablation of DBA; it cannot go with --no-dba")
    pool = 10 * per_class
    if dba and min_size > pool:
        raise TrainError(f"--min-size {min_size} exceeds the pool of {pool} training images (--per-class {per_class} x 10)")

    import numpy as np
    import torch

    from knotwork._io import sha256_file, write_json
    from knotwork._progress import progress_bar
    from knotwork.cli._app import resolve_device
    from knotwork.train.io import load_mnist, to_tensors
    from knotwork.train.mlp import RunSpec, balanced_subset, train_mlp

    options = None
    if dba:
        options = {"metric": metric.value, "search": search.value, "aggregate": aggregate.value,
                   "per_layer": per_layer, "min_size": min_size}
        if random_composition:
            options["random_composition"] = True
    spec = RunSpec(optimizer.value, lr, momentum=momentum, dba=options, hidden=hidden, steps=steps, eval_every=steps)
    if json_path not in (None, "-") and Path(json_path).resolve() == out.resolve():
        raise TrainError(f"--json {json_path}: the same file as --out; give another path or '-'")
    check_output(out, inputs=[data], force=force, folder=False)
    if json_path not in (None, "-"):
        check_output(json_path, inputs=[data], force=force, folder=False)
    device_name = resolve_device(device)

    arrays = load_mnist(data)
    try:
        idx = balanced_subset(arrays["y_train"], per_class, np.random.default_rng([seed, per_class]))
    except TrainError as err:
        raise TrainError(f"{data}: array 'y_train': {err}; lower --per-class") from None
    x, y = to_tensors(arrays["x_train"][idx], arrays["y_train"][idx])  # only the drawn rows become float32
    evals = {"test": to_tensors(arrays["x_test"], arrays["y_test"])}

    threads_before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with progress_bar(total=steps, desc="dba train", unit="step") as bar:
            result = train_mlp(spec, x, y, evals, seed=seed, device=device_name, callback=lambda step, loss: bar.update(1))
    finally:
        torch.set_num_threads(threads_before)
    if result["diverged_at"] is not None:
        raise RunError(f"training diverged at step {result['diverged_at']} (loss {result['final_loss']}); "
                       "lower --lr, nothing was written")

    result.update({"data": str(data), "data_sha256": sha256_file(data), "per_class": per_class, "device": device_name,
                   "threads": threads})
    write_json(out, result, inputs=[data], force=force)
    acc = result["acc"]["test"][-1]
    summary = {"out": str(out), "test_accuracy": acc, "steps": steps, "final_loss": result["final_loss"],
               "mean_sizes": result.get("mean_sizes")}
    emit_json(summary, json_path, inputs=[data], force=force)
    sizes = result.get("mean_sizes")
    text = f"test accuracy {100 * acc:.2f}% after {steps} steps"
    if sizes:
        text += "; mean subset size " + ", ".join(f"layer {k}: {v:.1f}" for k, v in sizes.items())
    typer.echo(f"{text}; wrote {out}", err=json_path == "-")
