"""CLI commands `knotwork merge` and `knotwork align` (thin layers over knotwork.merge).

Options are checked and the outputs are refused before any adapter is read; errors are raised as
:class:`~knotwork._errors.MergeError` and printed as one line by the root group.
"""

from __future__ import annotations

import enum
import json
import math
import os
from collections.abc import Iterable
from pathlib import Path

import typer

from knotwork._errors import MergeError, OutputError, check_positive_int
from knotwork.cli._app import (
    Device,
    app,
    device_option,
    emit_json,
    force_option,
    json_option,
    scheduler_option,
)
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
    """Refuse an output path before any work (the core's rules, including an unwritable folder)."""
    from knotwork._io import check_output

    check_output(path, inputs=[p for p in inputs if p is not None], force=force, folder=folder)


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


def _resolve(path: str, what: str) -> Path:
    """A local folder, or a Hugging Face cache entry named by model id (resolved offline)."""
    local = Path(path)
    if local.exists():
        return local
    from knotwork.merge.model_io import resolve_model_dir

    try:
        return resolve_model_dir(path)
    except MergeError:
        raise MergeError(f"{path}: {what} not found (neither a folder nor a model id in the Hugging Face cache)") \
            from None


def _rank(text: str | None) -> int | str | None:
    if text is None or text == "full":
        return text
    try:
        value = int(text)
    except ValueError:
        raise MergeError(f"--rank must be an integer >= 1 or 'full'; got {text!r}") from None
    return check_positive_int(value, "--rank", error=MergeError)


def _read_config(path: Path) -> dict:
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
        try:  # JSON first: YAML 1.1 reads JSON's 1e-07 (a merge report's rel_tol) as a string
            data = json.loads(text)
        except ValueError:
            data = yaml.safe_load(text)
    except FileNotFoundError:
        raise MergeError(f"{path}: merge config not found") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        first = " ".join(str(err).split())[:160]
        raise MergeError(f"{path}: not a readable YAML/JSON merge config ({first})") from None
    if not isinstance(data, dict):
        raise MergeError(f"{path}: a merge config is a mapping of fields (method, adapters, out, ...)")
    return data


# CLI parameter -> MergeSpec field (top level) or MergeConfig parameter (under "parameters")
_FIELDS = {"method": "method", "rank": "rank", "base": "base", "out": "out", "device": "device", "threads": "threads",
           "scheduler": "scheduler"}
_PARAMS = {"scale": "scale", "topk": "topk", "topk_scope": "topk_scope", "drop_rate": "drop_rate", "seed": "seed",
           "reduce": "reduce"}


def _value(v):
    return v.value if isinstance(v, enum.Enum) else str(v) if isinstance(v, Path) else v


@app.command("merge")
def merge_cmd(
    ctx: typer.Context,
    adapters: list[str] | None = typer.Argument(
        None, help="PEFT LoRA adapters of one base model: folders or Hugging Face cache ids (or give --config)."
    ),
    out: Path | None = typer.Option(None, "--out", "-o", help="Output folder: a PEFT adapter, or a model with --base."),
    config_path: Path | None = typer.Option(
        None, "--config", help="A YAML/JSON merge config (or a merge_report.json to redo a merge); flags given "
        "on the command line override its fields."
    ),
    method: Method = typer.Option(Method("knots-ties"), "--method", help="Merge method; knots-* merge after KnOTS alignment."),
    scale: float = typer.Option(1.0, "--scale", help="λ, multiplies the merged update."),
    topk: float | None = typer.Option(
        None, "--topk", help="TIES: percent of entries kept per task, in (0, 100] (default 20; 100 for dare-ties)."
    ),
    topk_scope: TopkScope = typer.Option(
        TopkScope.global_, "--topk-scope", help="global (the paper: one cut over the whole model) or module."
    ),
    drop_rate: float = typer.Option(0.1, "--drop-rate", help="DARE drop probability p, in [0, 1)."),
    seed: int = typer.Option(0, "--seed", help="Seed of DARE's masks (drawn per task and module on the CPU)."),
    reduce: Reduce = typer.Option(Reduce.sum, "--reduce", help="TA: sum or mean of the tasks."),
    task_scales: str | None = typer.Option(
        None, "--task-scales", help="Comma-separated per-task weights, one per adapter (extension)."
    ),
    rank: str | None = typer.Option(
        None, "--rank", metavar="K|full",
        help="Adapter output rank: K truncates (error reported per module and in total), 'full' writes a full-rank "
        "merge exactly. Required for ties/dare/dare-ties adapters; KnOTS methods and ta are exact without it.",
    ),
    base: str | None = typer.Option(
        None, "--base", help="Base model (folder or Hugging Face cache id): write base + merged update, sharded as the base."
    ),
    device: Device = device_option(),
    scheduler: str | None = scheduler_option(),
    force: bool = force_option(),
    threads: int | None = typer.Option(None, "--threads", help="torch intra-op threads, >= 1 (default: torch's choice)."),
    json_path: str | None = json_option(),
) -> None:
    """Merge LoRA adapters; writes the result with merge_report.json inside (the report is also a config)."""
    from knotwork.merge.config import check_param
    from knotwork.merge.spec import MergeSpec

    # Flags first, named as typed: nothing is read before every option is known to be fine.
    if threads is not None:
        check_positive_int(threads, "--threads", error=MergeError)
    check_param("scale", scale, label="--scale")
    check_param("topk", topk, label="--topk")
    check_param("drop_rate", drop_rate, label="--drop-rate")
    given = {name for name in ctx.params
             if ctx.get_parameter_source(name) is not None and ctx.get_parameter_source(name).name == "COMMANDLINE"}
    flags = {"method": method, "rank": _rank(rank), "base": base, "out": out, "device": device, "threads": threads,
             "scheduler": scheduler}
    params = {"scale": scale, "topk": topk, "topk_scope": topk_scope, "drop_rate": drop_rate, "seed": seed,
              "reduce": reduce}
    if config_path is not None:
        data = _read_config(config_path)
        data = data.get("config", data) if "adapters" not in data else data
        data = dict(data)
        if adapters:
            data["adapters"] = list(adapters)
        data.setdefault("parameters", {})
        data["parameters"] = dict(data["parameters"] or {})
        for name, key in _FIELDS.items():
            if name in given:
                data[key] = _value(flags[name])
        for name, key in _PARAMS.items():
            if name in given:
                data["parameters"][key] = _value(params[name])
        source = str(config_path)
    else:
        if not adapters:
            raise MergeError("give the adapters to merge (or --config FILE)")
        if out is None:
            raise MergeError("--out is required (or give it in --config FILE)")
        data = {"adapters": list(adapters), **{k: _value(v) for k, v in flags.items()},
                "parameters": {k: _value(v) for k, v in params.items()}}
        source = "options"
    if task_scales is not None:
        data["weights"] = list(_task_scales(task_scales, len(data.get("adapters") or [])))
    spec = MergeSpec.from_mapping(data, source=source)
    run_spec(spec, force=force, json_path=json_path)


def run_spec(spec, *, force: bool, json_path: str | None) -> None:
    """Check every option and output, then read the adapters lazily and stream the merge into the output."""
    from knotwork.cli._app import resolve_device
    from knotwork.merge.save import check_rank_policy

    check_rank_policy(spec.method, spec.rank, base=spec.base is not None)
    dev = resolve_device(spec.device)
    paths = [_resolve(a, "adapter directory") for a in spec.adapters]
    base_dir = _resolve(spec.base, "base model") if spec.base is not None else None
    out = Path(spec.out)
    _check_out(out, inputs=[*paths, base_dir], force=force, folder=True)
    _check_json_path(json_path, inputs=[*paths, *([base_dir] if base_dir else [])], force=force, out=out)

    import contextlib

    import torch

    if spec.threads is not None:
        torch.set_num_threads(spec.threads)
    import time

    from knotwork._progress import progress_bar
    from knotwork._scheduler import dask_client, ordered_map
    from knotwork.merge import load_adapter
    from knotwork.merge.model_io import BaseModel
    from knotwork.merge.save import run_merge

    start = time.perf_counter()
    loaded = [load_adapter(p) for p in paths]
    base_model = BaseModel(base_dir) if base_dir is not None else None
    load_s = time.perf_counter() - start
    config = spec.config()
    cluster = dask_client(spec.scheduler) if spec.scheduler else contextlib.nullcontext()
    with cluster as client, progress_bar(total=len(loaded[0].modules), desc=spec.method, unit="module") as bar:
        report = run_merge(
            loaded, out, method=spec.method, config=config, rank=spec.rank, base=base_model, device=dev,
            map_fn=ordered_map(client) if client is not None else map, force=force,
            progress=lambda _: bar.update(1),
            report_extra={"config": spec.to_mapping(), "seconds_load": round(load_s, 3)},
        )
    emit_json({"out": str(out), **report}, json_path, inputs=[*paths, out], force=force)
    ranks = [m["merged_rank"] for m in report["modules"].values()]
    trunc = report.get("truncation", {}).get("total")
    how = f"; truncated to rank {spec.rank}: rel. error {trunc['rel_error']:.4f}, kept energy " \
          f"{trunc['kept_energy']:.4f}" if trunc and spec.rank not in (None, "full") else ""
    typer.echo(
        f"merged {len(loaded)} adapters ({len(ranks)} modules) with {spec.method} in "
        f"{report['seconds']['total'] + load_s:.2f}s; merged ranks {min(ranks)}..{max(ranks)}{how}; wrote {out}",
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
