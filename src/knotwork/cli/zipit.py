"""`knotwork zipit merge`: zip checkpoints of one architecture into one model, with statistics from images.

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
    from knotwork._io import atomic_file, check_output, report_path, sha256_file
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
    report_file = report_path(out)
    check_output(out, inputs=inputs, force=force, folder=False)
    check_output(report_file, inputs=inputs, force=True, folder=False)  # ours or absent: it goes with --out
    if json_path not in (None, "-"):
        if Path(json_path).resolve() in (out.resolve(), report_file.resolve()):
            raise ZipitError(f"--json {json_path}: the same path as --out or its report; choose another")
        check_output(json_path, inputs=inputs, force=force, folder=False)

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
