"""`knotwork zipit train`: a base model on a class subset. `knotwork zipit merge`: zip checkpoints of one
architecture into one model, with statistics from images.

The study that reproduces the paper's tables is not a command: it is ``python benchmarks/zipit_experiment.py``.
"""

from __future__ import annotations

import enum
from pathlib import Path

import typer

from knotwork.cli._app import (
    Device,
    device_option,
    emit_json,
    force_option,
    group,
    json_option,
    out_option,
    resolve_device,
)

zipit_app = group("zipit", "ZipIt!: merge models trained from different inits on different tasks, without training.")


class Method(str, enum.Enum):
    """The merging methods of ``knotwork.zipit.zip_models`` (``knotwork.zipit.METHODS``)."""

    zipit = "zipit"
    permute = "permute"
    identity = "identity"
    rebasin = "rebasin"


class Arch(str, enum.Enum):
    """Architectures a checkpoint is rebuilt as (``knotwork.zipit.models.ARCHITECTURES``)."""

    resnet20 = "resnet20"
    cnn = "cnn"


class Normalize(str, enum.Enum):
    """Per-channel normalisation of the images (``knotwork.zipit.io.NORMALIZATIONS``)."""

    none = "none"
    mnist = "mnist"
    cifar10 = "cifar10"


def _check_outputs(out: Path, json_path: str | None, *, inputs: list[Path], force: bool) -> Path:
    """Refuse --out (its report goes with it) and --json before any work; returns the report's path."""
    from knotwork._errors import ZipitError
    from knotwork._io import check_output, report_path

    report_file = report_path(out)
    check_output(out, inputs=inputs, force=force, folder=False)
    check_output(report_file, inputs=inputs, force=True, folder=False)  # ours or absent: it goes with --out
    if json_path not in (None, "-"):
        if Path(json_path).resolve() in (out.resolve(), report_file.resolve()):
            raise ZipitError(f"--json {json_path}: the same path as --out or its report; choose another")
        check_output(json_path, inputs=inputs, force=force, folder=False)
    return report_file


@zipit_app.command("merge")
def merge(
    checkpoints: list[Path] = typer.Argument(..., help="Two or more .safetensors checkpoints of one architecture."),
    data: Path = typer.Option(..., "--data", help="An .npz with unlabeled images (uint8 or float); labels are never read."),
    out: Path = out_option("Merged .safetensors to write; its report goes beside it as <name>.knotwork.json."),
    arch: Arch = typer.Option(Arch.resnet20, "--arch", help="Architecture of the checkpoints."),
    width: int = typer.Option(1, "--width", help="Width multiplier (resnet20) or channels (cnn) of the checkpoints."),
    key: str = typer.Option("x_train", "--key", help="Array of the npz holding the images."),
    normalize: Normalize = typer.Option(Normalize.none, "--normalize", help="As the models were trained."),
    n_images: int = typer.Option(500, "--n-images", help="Images used for statistics and the BatchNorm reset."),
    method: Method = typer.Option(Method.zipit, "--method", help="zipit, or a baseline: permute, identity "
                                  "(weight averaging), rebasin (Git Re-Basin)."),
    alpha: float | None = typer.Option(None, "--alpha", help="ZipIt! discount on re-merging a merged feature, "
                                       "in [0, 1] (default 0.3; --method zipit only)."),
    beta: float | None = typer.Option(None, "--beta", help="ZipIt! fraction of merges allowed within one model, "
                                      "in [0, 1] (default 0.125; --method zipit only)."),
    stop_at: str | None = typer.Option(None, "--stop-at", help="Partial zip: stop after this module or fx node."),
    batch_size: int = typer.Option(100, "--batch-size", help="Images per batch of the two data passes."),
    device: Device = device_option(),
    json_path: str | None = json_option(),
    force: bool = force_option(),
) -> None:
    """Zip checkpoints into one model, with feature statistics from --data."""
    import time

    import torch
    from safetensors.torch import save_file

    from knotwork._errors import ZipitError, check_positive_int
    from knotwork._io import atomic_file, sha256_file
    from knotwork._progress import progress_enabled
    from knotwork.zipit import zip_models
    from knotwork.zipit.io import load_images, load_models
    from knotwork.zipit.matchers.zipit import check_options

    # Options and outputs first: nothing is read before they are known to be possible.
    if len(checkpoints) < 2:
        raise ZipitError(f"CHECKPOINTS: need at least 2 checkpoints to merge; got {len(checkpoints)}")
    for name, value in (("--width", width), ("--n-images", n_images), ("--batch-size", batch_size)):
        check_positive_int(value, name, error=ZipitError)
    if method is not Method.zipit and (alpha is not None or beta is not None):
        raise ZipitError(f"--alpha and --beta are ZipIt! options; --method {method.value} does not use them")
    extra = {}
    if method is Method.zipit:
        extra = {"alpha": 0.3 if alpha is None else alpha, "beta": 0.125 if beta is None else beta}
        check_options(extra["alpha"], extra["beta"], len(checkpoints))
    dev = resolve_device(device)
    inputs = [*checkpoints, data]
    report_file = _check_outputs(out, json_path, inputs=inputs, force=force)

    # Inputs, each checked whole before any work.
    models = load_models(checkpoints, arch.value, width=width)
    x = load_images(data, key=key, normalize=normalize.value, limit=n_images)
    reads = next(m for m in models[0].modules() if isinstance(m, torch.nn.Conv2d)).in_channels
    if x.shape[1] != reads:
        raise ZipitError(f"{data}: array {key!r} has {x.shape[1]} channel(s) but the {arch.value} checkpoints "
                         f"read {reads}")

    torch.set_num_threads(max(1, min(torch.get_num_threads(), 4)))
    loader = [(x[i : i + batch_size],) for i in range(0, len(x), batch_size)]
    t0 = time.perf_counter()
    merged = zip_models(models, loader, method=method.value, stop_at=stop_at, device=dev,
                        progress=progress_enabled(), **extra)
    seconds = time.perf_counter() - t0
    report = {
        "inputs": [{"path": str(p), "sha256": sha256_file(p)} for p in checkpoints],
        "data": {"path": str(data), "sha256": sha256_file(data), "key": key, "images": len(x),
                 "normalize": normalize.value},
        "arch": arch.value, "width": width, "method": method.value, **extra, "stop_at": stop_at,
        "batch_size": batch_size, "device": dev, "seconds": round(seconds, 2),
    }
    with atomic_file(out, inputs=inputs, force=force, report=report) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in merged.state_dict().items()}, str(tmp))
    emit_json({"output": str(out), "report": str(report_file), **report}, json_path, inputs=[*inputs, out],
              force=force)
    typer.echo(f"zipped {len(models)} models with {method.value} in {seconds:.1f}s -> {out} "
               f"(report {report_file.name})", err=json_path == "-")


def parse_classes(text: str) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]``; refused with one line naming the bad item, an empty list or a repeat."""
    from knotwork._errors import ZipitError

    items = [t.strip() for t in text.split(",")]
    if not any(items):
        raise ZipitError(f"--classes {text!r}: names no class; give class ids such as 0,1,2,3,4")
    ids: list[int] = []
    for item in items:
        if not item.lstrip("-").isdigit():
            raise ZipitError(f"--classes {text!r}: {item!r} is not a class id (a non-negative integer)")
        value = int(item)
        if value < 0:
            raise ZipitError(f"--classes {text!r}: class id {value} is negative; class ids start at 0")
        if value in ids:
            raise ZipitError(f"--classes {text!r}: class {value} is named twice")
        ids.append(value)
    return ids


@zipit_app.command("train")
def train(
    data: Path = typer.Argument(..., help="An .npz with images and labels (as `zipit merge --data` reads)."),
    out: Path = out_option("Trained .safetensors to write; its report goes beside it as <name>.knotwork.json."),
    classes: str = typer.Option(..., "--classes", help="The task: comma-separated class ids, e.g. 0,1,2,3,4."),
    arch: Arch = typer.Option(Arch.resnet20, "--arch", help="Architecture to train."),
    width: int = typer.Option(1, "--width", help="Width multiplier (resnet20) or channels (cnn)."),
    epochs: int = typer.Option(20, "--epochs", help="Passes over the task's training images."),
    batch_size: int = typer.Option(128, "--batch-size", help="Images per SGD step."),
    lr: float = typer.Option(0.1, "--lr", help="Peak learning rate (one-epoch warm-up, then linear decay to 0)."),
    weight_decay: float = typer.Option(5e-4, "--weight-decay", help="SGD weight decay (>= 0)."),
    seed: int = typer.Option(0, "--seed", help="Seeds the initialisation, shuffling and augmentation."),
    augment: bool = typer.Option(False, "--augment", help="Random crop + horizontal flip on each batch."),
    dim: int = typer.Option(64, "--dim", help="Embedding size of the backbone and the frozen class vectors."),
    vector_seed: int = typer.Option(0, "--vector-seed", help="Seed of the frozen random class vectors; models "
                                    "meant to be zipped together must share it (and --dim)."),
    key: str = typer.Option("x_train", "--key", help="Array of the npz holding the training images."),
    labels: str = typer.Option("y_train", "--labels", help="Array of the npz holding the training labels."),
    test_key: str = typer.Option("x_test", "--test-key", help="Test images, evaluated when present."),
    test_labels: str = typer.Option("y_test", "--test-labels", help="Test labels, evaluated when present."),
    normalize: Normalize = typer.Option(Normalize.none, "--normalize", help="Per-channel normalisation."),
    n_images: int | None = typer.Option(None, "--n-images", help="Use only the first N training images."),
    device: Device = device_option(),
    json_path: str | None = json_option(),
    force: bool = force_option(),
) -> None:
    """Train a base model on a class subset of --data, with a frozen class-vector head (ZipIt!'s setting)."""
    import math
    import time

    import torch
    from safetensors.torch import save_file

    from knotwork._errors import ZipitError, check_positive_int
    from knotwork._io import atomic_file, sha256_file
    from knotwork._progress import progress_enabled
    from knotwork.zipit import task_accuracy
    from knotwork.zipit.class_vectors import random_class_vectors
    from knotwork.zipit.io import load_images, load_labels, npz_arrays
    from knotwork.zipit.models import ARCHITECTURES, ClassEmbeddingHead, HeadedModel
    from knotwork.zipit.training import train_on_task

    # Options and outputs first: nothing is read before they are known to be possible.
    task = parse_classes(classes)
    for name, value in (("--width", width), ("--epochs", epochs), ("--batch-size", batch_size), ("--dim", dim)):
        check_positive_int(value, name, error=ZipitError)
    if n_images is not None:
        check_positive_int(n_images, "--n-images", error=ZipitError)
    if not math.isfinite(lr) or lr <= 0:
        raise ZipitError(f"--lr must be a finite number > 0; got {lr!r}")
    if not math.isfinite(weight_decay) or weight_decay < 0:
        raise ZipitError(f"--weight-decay must be a finite number >= 0; got {weight_decay!r}")
    dev = resolve_device(device)
    inputs = [data]
    report_file = _check_outputs(out, json_path, inputs=inputs, force=force)

    # Inputs, each checked whole before any work.
    x = load_images(data, key=key, normalize=normalize.value, limit=n_images)
    y = load_labels(data, key=labels, limit=n_images)
    if len(y) != len(x):
        raise ZipitError(f"{data}: array {labels!r} has {len(y)} labels but {key!r} has {len(x)} images")
    arrays = npz_arrays(data)
    test = None
    if test_key in arrays and test_labels in arrays:
        xt = load_images(data, key=test_key, normalize=normalize.value)
        yt = load_labels(data, key=test_labels)
        if len(yt) != len(xt):
            raise ZipitError(f"{data}: array {test_labels!r} has {len(yt)} labels but {test_key!r} has "
                             f"{len(xt)} images")
        if xt.shape[1:] != x.shape[1:]:
            raise ZipitError(f"{data}: array {test_key!r} holds images of shape {tuple(xt.shape[1:])} but "
                             f"{key!r} holds {tuple(x.shape[1:])}")
        test = (xt, yt)
    n_classes = int(max(int(y.max()), int(test[1].max()) if test else 0)) + 1
    for c in task:
        if c >= n_classes:
            raise ZipitError(f"--classes: class {c} is not a class of {data} (its labels are 0..{n_classes - 1})")
        if not bool((y == c).any()):
            raise ZipitError(f"--classes: class {c} has no training image in {data} array {labels!r}")

    torch.set_num_threads(max(1, min(torch.get_num_threads(), 4)))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        backbone = ARCHITECTURES[arch.value](width, dim, x.shape[1])
    model = HeadedModel(backbone, ClassEmbeddingHead(random_class_vectors(n_classes, dim, seed=vector_seed)))
    t0 = time.perf_counter()
    train_on_task(model, x, y, task, epochs=epochs, lr=lr, weight_decay=weight_decay, batch_size=batch_size,
                  augment=augment, seed=seed, device=dev, progress=progress_enabled())
    seconds = time.perf_counter() - t0
    accuracy = None
    if test is not None and bool(torch.isin(test[1], torch.tensor(task)).any()):
        accuracy = round(float(task_accuracy(model, test[0], test[1], [task]).per_task[0]), 6)
    report = {
        "data": {"path": str(data), "sha256": sha256_file(data), "key": key, "labels": labels,
                 "images": len(x), "normalize": normalize.value},
        "arch": arch.value, "width": width, "classes": task, "n_classes": n_classes, "dim": dim,
        "vector_seed": vector_seed, "epochs": epochs, "batch_size": batch_size, "lr": lr,
        "weight_decay": weight_decay, "seed": seed, "augment": augment, "device": dev,
        "task_images": int(torch.isin(y, torch.tensor(task)).sum()),
        "test_accuracy": accuracy,
        "test": {"key": test_key, "labels": test_labels, "images": len(test[0])} if test is not None else None,
        "seconds": round(seconds, 2),
    }
    with atomic_file(out, inputs=inputs, force=force, report=report) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp))
    emit_json({"output": str(out), "report": str(report_file), **report}, json_path, inputs=[*inputs, out],
              force=force)
    acc = "" if accuracy is None else f", own-task test accuracy {accuracy:.3f}"
    typer.echo(f"trained {arch.value} on classes {task} for {epochs} epoch(s) in {seconds:.1f}s{acc} -> {out} "
               f"(report {report_file.name})", err=json_path == "-")
