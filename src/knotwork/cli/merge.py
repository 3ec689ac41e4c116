"""CLI commands `knotwork merge` and `knotwork align` (thin layers over knotwork.merge).

Options are checked and the outputs are refused before any adapter is read; errors are raised as
:class:`~knotwork._errors.MergeError` and printed as one line by the root group.
"""

from __future__ import annotations

import enum
import math
import os
from collections.abc import Iterable
from pathlib import Path

import typer

from knotwork._errors import MergeError, OutputError, check_positive_int
from knotwork.cli._app import Device, app, device_option, emit_json, force_option, json_option, out_option
from knotwork.merge.registry import METHOD_NAMES

# The --method choices, built from the registry (names only: no torch import at start-up).
Method = enum.Enum("Method", {name: name for name in METHOD_NAMES}, type=str)


class TopkScope(str, enum.Enum):
    """Where TIES takes its top-K cut."""

    global_ = "global"
    module = "module"


class Reduce(str, enum.Enum):
    """How TA combines the tasks."""

    sum = "sum"
    mean = "mean"


def _check_out(path: Path, *, inputs: Iterable[Path | None], force: bool, folder: bool) -> None:
    """Refuse an output path before any work: the core's rules, plus a folder it could not be created in."""
    from knotwork._io import check_output

    check_output(path, inputs=[p for p in inputs if p is not None], force=force, folder=folder)
    parent = Path(os.path.abspath(path)).parent
    while not (parent.exists() or parent == parent.parent):
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"{path}: cannot create the output there: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{path}: the folder {parent} is not writable")


def _check_json_path(json_path: str | None, *, inputs: list[Path], force: bool, out: Path | None) -> None:
    if json_path is None or json_path == "-":
        return
    target = Path(json_path)
    if out is not None and (Path(os.path.abspath(out)) in Path(os.path.abspath(target)).parents):
        raise OutputError(f"{target}: --json may not be written inside --out {out}; choose another path")
    _check_out(target, inputs=[*inputs, out], force=force, folder=False)


def _task_scales(text: str | None, n_adapters: int) -> tuple[float, ...] | None:
    if text is None:
        return None
    items = text.split(",")
    values = []
    for i, item in enumerate(items, start=1):
        try:
            value = float(item)
        except ValueError:
            raise MergeError(f"--task-scales: item {i} ({item.strip()!r}) is not a number") from None
        if not math.isfinite(value):
            raise MergeError(f"--task-scales: item {i} ({item.strip()!r}) is not a finite number")
        values.append(value)
    if len(values) != n_adapters:
        raise MergeError(f"--task-scales has {len(values)} values for {n_adapters} adapters; give one per adapter")
    return tuple(values)


@app.command("merge")
def merge_cmd(
    adapters: list[Path] = typer.Argument(..., help="PEFT LoRA adapter directories of one base model."),
    out: Path = out_option("Output folder: a PEFT adapter, or a dense model with --base."),
    method: Method = typer.Option(Method("knots-ties"), "--method", help="Merge method; knots-* merge after KnOTS alignment."),
    scale: float = typer.Option(1.0, "--scale", help="λ, multiplies the merged update."),
    topk: float | None = typer.Option(
        None, "--topk", help="TIES: percent of entries kept per task, in (0, 100] (default 20; 100 for dare-ties)."
    ),
    topk_scope: TopkScope = typer.Option(
        TopkScope.global_, "--topk-scope", help="global (the paper: one cut over the whole model) or module."
    ),
    drop_rate: float = typer.Option(0.1, "--drop-rate", help="DARE drop probability p, in [0, 1)."),
    seed: int = typer.Option(0, "--seed", help="Seed of DARE's masks."),
    reduce: Reduce = typer.Option(Reduce.sum, "--reduce", help="TA: sum or mean of the tasks."),
    task_scales: str | None = typer.Option(
        None, "--task-scales", help="Comma-separated per-task weights, one per adapter (extension)."
    ),
    rank: int | None = typer.Option(None, "--rank", help="Truncate the written adapter to this rank (>= 1)."),
    base: Path | None = typer.Option(None, "--base", help="Base model folder: write dense merged safetensors weights."),
    force: bool = force_option(),
    threads: int | None = typer.Option(None, "--threads", help="torch intra-op threads, >= 1 (default: torch's choice)."),
    json_path: str | None = json_option(),
) -> None:
    """Merge LoRA adapters; writes the result with merge_report.json inside."""
    from knotwork.merge.config import check_param

    # Options first, outputs second: nothing is read before both are known to be fine.
    if rank is not None:
        check_positive_int(rank, "--rank", error=MergeError)
        if base is not None:
            raise MergeError("--rank truncates an adapter output; it has no effect with --base (a dense model)")
    if threads is not None:
        check_positive_int(threads, "--threads", error=MergeError)
    check_param("scale", scale, label="--scale")
    check_param("topk", topk, label="--topk")
    check_param("drop_rate", drop_rate, label="--drop-rate")
    weights = _task_scales(task_scales, len(adapters))
    _check_out(out, inputs=[*adapters, base], force=force, folder=True)
    _check_json_path(json_path, inputs=[*adapters, *([base] if base else [])], force=force, out=out)

    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    from knotwork._progress import progress_bar
    from knotwork.merge import MergeConfig, adapter_factors, load_adapter, merge_modules
    from knotwork.merge.save import merge_report, save_merged_adapter, save_merged_model

    config = MergeConfig(
        scale=scale, topk=topk, topk_scope=topk_scope.value, drop_rate=drop_rate, seed=seed, reduce=reduce.value,
        task_scales=weights,
    )
    name = method.value
    loaded = [load_adapter(p) for p in adapters]
    factors = adapter_factors(loaded)
    with progress_bar(total=len(factors), desc=f"{name}: aligning" if name.startswith("knots") else name,
                      unit="module") as bar:
        result = merge_modules(factors, method=name, config=config, progress=lambda _: bar.update(1))
    del factors  # the scaled float32 copies are not needed for writing; large merges are memory-bound
    dtype = loaded[0].dtype if loaded[0].dtype in (torch.float16, torch.bfloat16, torch.float32) else torch.float32
    if base is not None:
        save_merged_model(result, out, base_dir=base, adapters=loaded, fan_in_fan_out=loaded[0].fan_in_fan_out,
                          force=force)
        report = merge_report(result, loaded, base_model_dir=str(base))
    else:
        save_merged_adapter(result, out, base_config=loaded[0].config, adapters=loaded, rank=rank, dtype=dtype,
                            force=force)
        report = merge_report(result, loaded, output_rank=rank)
    emit_json({"out": str(out), **report}, json_path, inputs=[*adapters, out], force=force)
    ranks = result.ranks.values()
    typer.echo(
        f"merged {len(loaded)} adapters ({len(result.merged)} modules) with {name} in {result.seconds:.2f}s; "
        f"merged ranks {min(ranks)}..{max(ranks)}; wrote {out}",
        err=json_path == "-",
    )


@app.command("align")
def align_cmd(
    adapters: list[Path] = typer.Argument(..., help="PEFT LoRA adapter directories of one base model."),
    inputs: Path = typer.Option(
        ..., "--inputs", help="A .safetensors/.npy file of module inputs (n_samples, d_in), shared by all modules, "
        "or a .safetensors file with one tensor per module name."
    ),
    heatmap: Path | None = typer.Option(None, "--heatmap", help="Save a before/after CKA heatmap PNG here."),
    force: bool = force_option(),
    json_path: str | None = json_option(),
    device: Device = device_option(),
) -> None:
    """Print the task x task CKA of the adapters' updates, before and after the KnOTS transform."""
    from knotwork.cli._app import resolve_device

    dev = resolve_device(device)
    to_stderr = json_path == "-"  # with --json -, stdout carries only the JSON
    if heatmap is not None:
        _check_out(heatmap, inputs=[*adapters, inputs], force=force, folder=False)
    _check_json_path(json_path, inputs=[*adapters, inputs], force=force, out=None)
    if json_path not in (None, "-") and heatmap is not None and os.path.abspath(json_path) == os.path.abspath(heatmap):
        raise OutputError(f"{heatmap}: --json and --heatmap name the same file")

    import numpy as np
    import torch

    from knotwork.merge import adapter_factors, load_adapter
    from knotwork.merge.cka import update_cka

    loaded = [load_adapter(p) for p in adapters]
    factors = adapter_factors(loaded)
    per_module = _read_inputs(inputs, factors)
    names = [p.name for p in adapters]
    before = torch.zeros(len(loaded), len(loaded), dtype=torch.float64)
    after = torch.zeros_like(before)
    for module, pairs in factors.items():
        x = per_module(module).to(dev)
        try:
            b, a = update_cka(x, [(B.to(dev), A.to(dev)) for B, A in pairs], strict=True, labels=[str(p) for p in adapters])
        except MergeError as refusal:
            raise MergeError(f"{inputs}: module {module!r}: {refusal}") from None
        if not (torch.isfinite(b).all() and torch.isfinite(a).all()):
            raise MergeError(f"{inputs}: module {module!r}: linear CKA is not finite")
        before += b.cpu() / len(factors)
        after += a.cpu() / len(factors)
    for title, mat in (("before KnOTS", before), ("after KnOTS", after)):
        typer.echo(f"mean linear CKA {title} (off-diagonal mean {_offdiag(mat):.3f}):", err=to_stderr)
        typer.echo("  " + " ".join(f"{n[:10]:>10}" for n in names), err=to_stderr)
        for n, row in zip(names, mat.tolist(), strict=True):
            typer.echo(f"{n[:10]:>10} " + " ".join(f"{v:10.3f}" for v in row), err=to_stderr)
    if heatmap is not None:
        from knotwork.merge.plots import save_cka_heatmaps

        save_cka_heatmaps(np.asarray(before), np.asarray(after), names, heatmap, force=force,
                          inputs=[*adapters, inputs])
        typer.echo(f"wrote {heatmap}", err=to_stderr)
    result = {
        "adapters": [str(p) for p in adapters],
        "inputs": str(inputs),
        "modules": len(factors),
        "before": before.tolist(),
        "after": after.tolist(),
        "offdiag_mean": {"before": _offdiag(before), "after": _offdiag(after)},
    }
    emit_json(result, json_path, inputs=[*adapters, inputs], force=force)


def _offdiag(mat) -> float:
    n = mat.shape[0]
    return float((mat.sum() - mat.diag().sum()) / max(1, n * n - n))


def _read_inputs(path: Path, factors):
    """Check the --inputs file against every module (shape, rows, finiteness); return module -> inputs."""
    import numpy as np
    import torch

    from knotwork._errors import check_finite

    if not path.is_file():
        raise MergeError(f"{path}: inputs file not found")
    try:
        if path.suffix == ".npy":
            shared = torch.from_numpy(np.load(path, allow_pickle=False))
            table = {}
        else:
            from safetensors.torch import load_file

            table = load_file(str(path))
            shared = table.get("inputs")
    except Exception as err:  # corrupt files raise many different types
        lines = str(err).strip().splitlines()
        raise MergeError(f"{path}: cannot read inputs ({type(err).__name__}: {lines[0] if lines else ''})") from None
    checked = set()
    for name, pairs in factors.items():
        x = table.get(name, shared)
        where = f"{path}: inputs for module {name!r}" if name in table else f"{path}: inputs"
        if x is None:
            raise MergeError(f"{path}: no inputs for module {name!r} (and no shared 'inputs' tensor)")
        d_in = pairs[0][1].shape[1]
        if x.ndim != 2 or x.shape[1] != d_in:
            raise MergeError(f"{where} have shape {tuple(x.shape)}; module {name!r} expects (n_samples, {d_in})")
        if x.shape[0] < 2:
            raise MergeError(f"{where} have {x.shape[0]} rows; CKA needs at least 2 samples")
        if x.dtype == torch.bool or x.is_complex():
            raise MergeError(f"{where} have dtype {x.dtype}; expected real numbers")
        if id(x) not in checked:
            check_finite(x, where, error=MergeError)
            checked.add(id(x))
    return lambda name: table.get(name, shared)
