"""CLI commands for `zipit`: merge checkpoints (`knotwork zipit merge`) and `knotwork bench zipit`."""

from __future__ import annotations

from pathlib import Path

import typer

from knotwork.cli._app import app, bench_app

zipit_app = typer.Typer(help="ZipIt!: merge models trained from different inits on different tasks.",
                        no_args_is_help=True)
app.add_typer(zipit_app, name="zipit")


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _load_images(path: Path, key: str, normalize: str, limit: int):
    """Images from an npz as float (N, C, H, W): uint8 is scaled to [0, 1], HWC moved to CHW, then normalised."""
    import numpy as np
    import torch

    with np.load(path) as z:
        if key not in z:
            raise typer.BadParameter(f"{path} has no array {key!r}; it has {sorted(z.files)}", param_hint="--key")
        x = z[key][:limit]
    t = torch.from_numpy(np.ascontiguousarray(x))
    t = t.float().div(255) if t.dtype == torch.uint8 else t.float()
    if t.ndim == 3:
        t = t.unsqueeze(1)
    elif t.ndim == 4 and t.shape[-1] in (1, 3) and t.shape[1] not in (1, 3):
        t = t.permute(0, 3, 1, 2)
    stats = {"mnist": ([0.1307], [0.3081]), "cifar10": ([0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616])}
    if normalize in stats:
        mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in stats[normalize])
        t = (t - mean) / std
    elif normalize != "none":
        raise typer.BadParameter(f"unknown normalisation {normalize!r}; use none, mnist or cifar10",
                                 param_hint="--normalize")
    return t


@zipit_app.command("merge")
def merge(
    checkpoints: list[Path] = typer.Argument(..., help="Two or more .safetensors checkpoints of one architecture."),
    data: Path = typer.Option(..., "--data", help="An .npz with unlabeled images (uint8 or float)."),
    out: Path = typer.Option(..., "--out", help="Merged .safetensors to write (a .json report goes beside it)."),
    arch: str = typer.Option("resnet20", "--arch", help="Registered architecture: resnet20 or cnn."),
    width: int = typer.Option(1, "--width", help="Width multiplier (resnet20) or channels (cnn) of the checkpoints."),
    key: str = typer.Option("x_train", "--key", help="Array of the npz holding the images."),
    normalize: str = typer.Option("none", "--normalize", help="none, mnist or cifar10 (as the models were trained)."),
    n_images: int = typer.Option(500, "--n-images", help="Images used for statistics and the BatchNorm reset."),
    method: str = typer.Option("zipit", "--method", help="zipit, permute, identity or rebasin."),
    alpha: float = typer.Option(0.3, "--alpha", help="ZipIt! discount on re-merging a merged feature."),
    beta: float = typer.Option(0.125, "--beta", help="ZipIt! fraction of merges allowed within one model."),
    stop_at: str = typer.Option(None, "--stop-at", help="Partial zip: stop after this module/fx node."),
    batch_size: int = typer.Option(100, "--batch-size"),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output."),
) -> None:
    """Zip checkpoints into one model, with feature statistics from --data (labels are never read)."""
    import json
    import os
    import tempfile
    import time

    import torch
    from safetensors.torch import load_file, save_file

    from knotwork.zipit import zip_models
    from knotwork.zipit.models import ARCHITECTURES, build_from_state

    torch.set_num_threads(max(1, min(torch.get_num_threads(), 4)))
    if len(checkpoints) < 2:
        raise typer.BadParameter(f"need at least 2 checkpoints; got {len(checkpoints)}", param_hint="CHECKPOINTS")
    for p in [*checkpoints, data]:
        if not p.is_file():
            raise typer.BadParameter(f"file not found: {p}")
    if arch not in ARCHITECTURES:
        raise typer.BadParameter(f"unknown architecture {arch!r}; registered: {sorted(ARCHITECTURES)}",
                                 param_hint="--arch")
    if out.resolve() in {p.resolve() for p in [*checkpoints, data]}:
        raise typer.BadParameter(f"--out {out} is one of the inputs; refusing to overwrite an input")
    if out.exists() and not force:
        raise typer.BadParameter(f"{out} exists; pass --force to overwrite it", param_hint="--out")
    models = []
    for p in checkpoints:
        try:
            models.append(build_from_state(arch, load_file(p), width=width))
        except (KeyError, RuntimeError) as exc:
            raise typer.BadParameter(f"cannot load {p} as {arch} (width {width}): {exc}") from exc
    x = _load_images(data, key, normalize, n_images)
    loader = [(x[i : i + batch_size],) for i in range(0, len(x), batch_size)]
    extra = {"alpha": alpha, "beta": beta} if method == "zipit" else {}
    t0 = time.perf_counter()
    merged = zip_models(models, loader, method=method, stop_at=stop_at, progress=True, **extra)
    seconds = time.perf_counter() - t0
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=".tmp")
    os.close(fd)
    save_file({k: v.contiguous() for k, v in merged.state_dict().items()}, tmp)
    os.replace(tmp, out)
    report = {"inputs": [{"path": str(p), "sha256": _sha256(p)} for p in checkpoints],
              "data": {"path": str(data), "key": key, "images": len(x), "normalize": normalize},
              "arch": arch, "width": width, "method": method, **extra, "stop_at": stop_at,
              "seconds": round(seconds, 2), "output": str(out)}
    fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(report, f, indent=1)
    os.replace(tmp, out.with_suffix(".json"))
    typer.echo(f"zipped {len(models)} models with {method} in {seconds:.1f}s -> {out}")


@bench_app.command("zipit")
def bench_zipit(
    settings: list[str] = typer.Argument(None, help="Experiments to run: mnist, mnist-w128, cifar10 (default: all three)."),
    force: bool = typer.Option(False, "--force", help="Overwrite docs/results/zipit.md."),
) -> None:
    """Train (cached) base models, merge them with every method, and regenerate docs/results/zipit.md."""
    import runpy
    import sys

    import torch

    torch.set_num_threads(1)
    bench_dir = Path.cwd() / "benchmarks"
    if not (bench_dir / "zipit_experiment.py").is_file():
        raise typer.BadParameter("run this from the repository root: benchmarks/zipit_experiment.py not found")
    names = settings or ["mnist", "mnist-w128", "cifar10"]
    sys.path.insert(0, str(bench_dir))
    train = runpy.run_path(str(bench_dir / "zipit_train.py"))
    for name in names:
        train["train_setting"](name)
    experiment = runpy.run_path(str(bench_dir / "zipit_experiment.py"))
    raise typer.Exit(experiment["main"]([*names, *(["--force"] if force else [])]))
