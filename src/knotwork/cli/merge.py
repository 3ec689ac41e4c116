"""CLI commands `knotwork merge` and `knotwork align` (thin layers over knotwork.merge)."""

from __future__ import annotations

from pathlib import Path

import typer

from knotwork.cli._app import app

_METHOD_HELP = "ta, ties, dare, dare-ties, or knots-{ta,ties,dare,dare-ties}."


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


@app.command("merge")
def merge_cmd(
    adapters: list[Path] = typer.Argument(..., help="PEFT LoRA adapter directories of one base model."),
    out: Path = typer.Option(..., "--out", help="Output directory (a PEFT adapter, or a dense model with --base)."),
    method: str = typer.Option("knots-ties", "--method", help=_METHOD_HELP),
    scale: float = typer.Option(1.0, "--scale", help="λ, multiplies the merged update."),
    topk: float | None = typer.Option(None, "--topk", help="TIES: percent of entries kept per task (default 20; 100 for dare-ties)."),
    topk_scope: str = typer.Option("global", "--topk-scope", help="global (paper: one cut over the whole model) or module."),
    drop_rate: float = typer.Option(0.1, "--drop-rate", help="DARE drop probability p."),
    seed: int = typer.Option(0, "--seed", help="Seed of DARE's masks."),
    reduce: str = typer.Option("sum", "--reduce", help="TA: sum or mean."),
    task_scales: str | None = typer.Option(None, "--task-scales", help="Comma-separated per-task weights (extension)."),
    rank: int | None = typer.Option(None, "--rank", help="Truncate the written adapter to this rank."),
    base: Path | None = typer.Option(None, "--base", help="Base model directory: write dense merged safetensors weights."),
    force: bool = typer.Option(False, "--force", help="Replace an existing output directory."),
    threads: int | None = typer.Option(None, "--threads", help="torch intra-op threads (default: torch's choice)."),
) -> None:
    """Merge LoRA adapters; writes the result and merge_report.json beside it."""
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    from tqdm import tqdm

    from knotwork.merge import (
        AdapterError,
        MergeConfig,
        adapter_factors,
        get_method,
        load_adapter,
        merge_modules,
    )
    from knotwork.merge.save import save_merged_adapter, save_merged_model

    try:
        get_method(method)
        weights = tuple(float(w) for w in task_scales.split(",")) if task_scales else None
        config = MergeConfig(
            scale=scale, topk=topk, topk_scope=topk_scope, drop_rate=drop_rate, seed=seed, reduce=reduce, task_scales=weights
        )
        config.task_weights(len(adapters))
        if out.exists() and not force:
            raise AdapterError(f"{out}: output directory exists; pass --force to replace it")
        loaded = [load_adapter(p) for p in adapters]
        factors = adapter_factors(loaded)
    except (AdapterError, KeyError, ValueError) as err:
        _fail(str(err.args[0]) if isinstance(err, KeyError) else str(err))
    with tqdm(total=len(factors), desc=f"{method}: aligning" if method.startswith("knots") else method, unit="module") as bar:
        result = merge_modules(factors, method=method, config=config, progress=lambda _: bar.update(1))
    del factors  # the scaled float32 copies are not needed for writing; large merges are memory-bound
    dtype = loaded[0].dtype if loaded[0].dtype in (torch.float16, torch.bfloat16, torch.float32) else torch.float32
    try:
        if base is not None:
            save_merged_model(result, out, base_dir=base, adapters=loaded, fan_in_fan_out=loaded[0].fan_in_fan_out, force=force)
        else:
            save_merged_adapter(result, out, base_config=loaded[0].config, adapters=loaded, rank=rank, dtype=dtype, force=force)
    except AdapterError as err:
        _fail(str(err))
    ranks = result.ranks.values()
    typer.echo(
        f"merged {len(loaded)} adapters ({len(result.merged)} modules) with {method} in {result.seconds:.2f}s; "
        f"merged ranks {min(ranks)}..{max(ranks)}; wrote {out}"
    )


@app.command("align")
def align_cmd(
    adapters: list[Path] = typer.Argument(..., help="PEFT LoRA adapter directories of one base model."),
    inputs: Path = typer.Option(
        ..., "--inputs", help="A .safetensors/.npy file of module inputs (n_samples, d_in), shared by all modules, "
        "or a .safetensors file with one tensor per module name."
    ),
    heatmap: Path | None = typer.Option(None, "--heatmap", help="Save a before/after CKA heatmap PNG here."),
) -> None:
    """Print the task x task CKA of the adapters' updates, before and after the KnOTS transform."""
    import numpy as np
    import torch

    from knotwork.merge import AdapterError, adapter_factors, load_adapter
    from knotwork.merge.cka import update_cka

    try:
        loaded = [load_adapter(p) for p in adapters]
        factors = adapter_factors(loaded)
    except AdapterError as err:
        _fail(str(err))
    per_module = _read_inputs(inputs, factors)
    before = torch.zeros(len(loaded), len(loaded), dtype=torch.float64)
    after = torch.zeros_like(before)
    for name, pairs in factors.items():
        b, a = update_cka(per_module(name), pairs)
        before += b / len(factors)
        after += a / len(factors)
    names = [p.name for p in adapters]
    for title, mat in (("before KnOTS", before), ("after KnOTS", after)):
        typer.echo(f"mean linear CKA {title} (off-diagonal mean {_offdiag(mat):.3f}):")
        typer.echo("  " + " ".join(f"{n[:10]:>10}" for n in names))
        for n, row in zip(names, mat.tolist(), strict=True):
            typer.echo(f"{n[:10]:>10} " + " ".join(f"{v:10.3f}" for v in row))
    if heatmap is not None:
        from knotwork.merge.plots import save_cka_heatmaps

        save_cka_heatmaps(np.asarray(before), np.asarray(after), names, heatmap)
        typer.echo(f"wrote {heatmap}")


def _offdiag(mat) -> float:
    n = mat.shape[0]
    return float((mat.sum() - mat.diag().sum()) / max(1, n * n - n))


def _read_inputs(path: Path, factors):
    import numpy as np
    import torch

    if not path.is_file():
        _fail(f"{path}: inputs file not found")
    if path.suffix == ".npy":
        shared = torch.from_numpy(np.load(path, allow_pickle=False))
        table = {}
    else:
        from safetensors.torch import load_file

        table = load_file(str(path))
        shared = table.get("inputs")
    for name, pairs in factors.items():
        x = table.get(name, shared)
        if x is None:
            _fail(f"{path}: no inputs for module {name!r} (and no shared 'inputs' tensor)")
        if x.ndim != 2 or x.shape[1] != pairs[0][1].shape[1]:
            _fail(f"{path}: inputs for module {name!r} have shape {tuple(x.shape)}; expected (n, {pairs[0][1].shape[1]})")
    return lambda name: table.get(name, shared)
