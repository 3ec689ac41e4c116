"""`knotwork lora search`: choose a merge's λ and top-K (or DARE p) on the validation splits of the user's tasks.

A thin layer over :func:`knotwork.lora.search_merge.search_merge`; heavy imports happen inside the command.
Adapters and task folders are matched by order: adapter i is the one fine-tuned on the i-th ``--tasks`` folder.
"""

from __future__ import annotations

import enum
import json
from pathlib import Path

import typer

from knotwork._errors import MergeError, OutputError, check_positive_int
from knotwork.cli._app import emit_json, force_option, json_option, out_option
from knotwork.cli.lora import _say, _unique_names, lora_app
from knotwork.cli.merge import Method, _rank

SEARCH_TABLE, SEARCH_JSON = "search.md", "search.json"


class Criterion(str, enum.Enum):
    """What the search maximises on the validation split."""

    pertask = "pertask"
    joint = "joint"


def _grid(text: str | None, name: str, label: str) -> tuple[float, ...] | None:
    """A comma-separated grid, checked against the range of its MergeConfig field."""
    from knotwork.lora.search import check_grid

    if text is None:
        return None
    items = [item.strip() for item in text.split(",")] if text.strip() else []
    values = []
    for i, item in enumerate(items, start=1):
        try:
            values.append(float(item))
        except ValueError:
            raise MergeError(f"{label}: item {i} ({item!r}) is not a number") from None
    return check_grid(name, values, label=label)


def _check_order(adapters: list[Path], task_names: list[str]) -> None:
    """Refuse an adapter folder named like a task at another position (``lora train`` names them so)."""
    for i, path in enumerate(adapters):
        name = path.resolve().name
        if name in task_names and task_names.index(name) != i:
            raise MergeError(f"{path}: adapter {i + 1} is named like task {task_names.index(name) + 1} '{name}'; "
                             "adapters and --tasks are matched by order, so list them in the same order")


@lora_app.command("search")
def search(
    ctx: typer.Context,
    adapters: list[Path] = typer.Argument(..., help="PEFT LoRA adapters of MiniLM, one per task, in --tasks order."),
    tasks: list[Path] = typer.Option(
        ..., "--tasks", "-t", help="A task folder (labels.json + val.jsonl); repeat once per adapter, in the same order."
    ),
    out: Path = out_option("New folder: the best merge as a PEFT adapter with merge_report.json, search.md and "
                           "search.json."),
    method: Method = typer.Option(Method("knots-ties"), "--method", help="Merge method; knots-* align first."),
    criterion: Criterion = typer.Option(
        Criterion.pertask, "--criterion", case_sensitive=False,
        help="pertask: average normalized accuracy (>= continues a walk); joint: Hits@3 over all tasks' labels "
        "pooled (> continues).",
    ),
    scale_grid: str | None = typer.Option(None, "--scale-grid", metavar="V,V,...",
                                          help="λ values in walk order (default 0.1,0.2,...,1.0)."),
    topk_grid: str | None = typer.Option(None, "--topk-grid", metavar="K,K,...",
                                         help="TIES top-K % kept, in (0, 100] (default 10,20,...,100)."),
    drop_grid: str | None = typer.Option(None, "--drop-grid", metavar="P,P,...",
                                         help="DARE drop rates, in [0, 1) (default 0.99,0.9,...,0.1)."),
    seed: int = typer.Option(0, "--seed", help="Seed of DARE's masks (fixed during the search)."),
    rank: str | None = typer.Option(
        None, "--rank", metavar="K|full",
        help="Rank of the adapter written, as in knotwork merge: required for ties/dare/dare-ties.",
    ),
    limit: int = typer.Option(0, help="First N validation examples per task (0 = all)."),
    max_length: int = typer.Option(48, help="Tokens per input after truncation."),
    json_out: str | None = json_option(),
    force: bool = force_option(),
) -> None:
    """Search a merge's λ, then top-K or DARE p, on the tasks' validation splits (the KnOTS paper's coordinate
    search), aligning the adapters once; write the best merge and a table of every point tried.

    Each walk starts at the first grid value and stops at the first value that does not improve the score.
    Adapter i must be the one fine-tuned on the i-th --tasks folder.
    """
    import os

    from knotwork._io import check_output
    from knotwork.lora.search import method_grids
    from knotwork.merge.save import check_rank_policy

    method_name = method.value
    check_positive_int(limit, "--limit", minimum=0, error=MergeError)
    check_positive_int(max_length, "--max-length", error=MergeError)
    the_rank = _rank(rank)
    check_rank_policy(method_name, the_rank, base=False)
    given = {"scale": _grid(scale_grid, "scale", "--scale-grid"), "topk": _grid(topk_grid, "topk", "--topk-grid"),
             "drop_rate": _grid(drop_grid, "drop_rate", "--drop-grid")}
    order, _ = method_grids(method_name)
    searched = [name for name, _ in order]
    for name, label in (("topk", "--topk-grid"), ("drop_rate", "--drop-grid")):
        if given[name] is not None and name not in searched:
            raise MergeError(f"{label}: --method {method_name} does not search {name} (it searches "
                             f"{', then '.join(searched)})")
    grids = {k: v for k, v in given.items() if v is not None}
    if len(adapters) != len(tasks):
        raise MergeError(f"{len(adapters)} adapters for {len(tasks)} task folders: adapters and --tasks are matched "
                         "by order, one task folder per adapter (repeat --tasks for each)")
    inputs = [*adapters, *tasks]
    check_output(out, inputs=inputs, force=force, folder=True)
    if json_out not in (None, "-"):
        target = Path(json_out)
        if Path(os.path.abspath(out)) in Path(os.path.abspath(target)).parents:
            raise OutputError(f"{target}: --json may not be written inside --out {out}; choose another path")
        check_output(target, inputs=inputs, force=force, folder=False)

    import torch

    from knotwork.lora.model import added_deltas, load_base_encoder
    from knotwork.lora.search_merge import PARAM_LABELS, search_merge, search_table
    from knotwork.lora.tasks import build_joint_labels, load_text_task
    from knotwork.merge import adapter_factors, load_adapter
    from knotwork.merge.save import save_merged_adapter
    from knotwork.merge.spec import MergeSpec

    loaded_tasks = [load_text_task(d, splits=("val",)) for d in tasks]
    _unique_names(loaded_tasks, tasks)
    names = [t.name for t in loaded_tasks]
    build_joint_labels(loaded_tasks)
    _check_order(adapters, names)
    loaded = [load_adapter(p) for p in adapters]
    factors = adapter_factors(loaded)
    torch.set_num_threads(1)
    model, tok, _ = load_base_encoder()
    zeros = {m: torch.zeros(pairs[0][0].shape[0], pairs[0][1].shape[1]) for m, pairs in factors.items()}
    try:
        with added_deltas(model, zeros):
            pass
    except MergeError as exc:
        raise MergeError(f"{adapters[0]}: does not fit the MiniLM encoder ({exc})") from None

    from knotwork.lora.evaluate import TaskEvaluator

    evaluator = TaskEvaluator(model, tok, loaded_tasks, split="val", limit=limit or None, max_length=max_length)
    _say(ctx, f"searching {method_name} on {len(names)} tasks ({', '.join(names)}), criterion {criterion.value}")
    found = search_merge(factors, evaluator, method_name, criterion=criterion.value, grids=grids, seed=seed,
                         log=lambda line: _say(ctx, line))
    body = {"adapters": [str(p) for p in adapters], "tasks": [str(d) for d in tasks], "split": "val",
            "limit": limit or None, "max_length": max_length, "rank": the_rank, **found.to_dict()}
    table = search_table(found)
    chosen = ", ".join(f"{PARAM_LABELS[k]} = {v:g}" for k, v in found.params.items() if k in searched)
    examples = f"first {limit} val examples each" if limit else "all val examples"
    md = "\n".join([
        f"# knotwork lora search: {found.method}, {body['score_name']} on val", "",
        f"Adapters (in task order): {', '.join(body['adapters'])}. Tasks: {', '.join(body['tasks'])}; {examples}.",
        "",
        f"Chosen: {chosen} ({body['score_name']} {100 * found.score:.2f} %, bold below), after "
        f"{found.evaluations} evaluations. Each walk stops at the first value that does not improve "
        f"({'>=' if criterion.value == 'pertask' else '>'}); scores and accuracies in %.", "",
        table, ""])
    spec = MergeSpec(adapters=tuple(str(p) for p in adapters), out=str(out), method=method_name,
                     parameters=dict(found.params), rank=the_rank)
    save_merged_adapter(
        found.result(), out, base_config=loaded[0].config, adapters=loaded, rank=the_rank, force=force,
        report_extra={"search": {"criterion": found.criterion, "score": found.score, "split": "val",
                                 "points": len(found.points), "table": SEARCH_TABLE},
                      "config": spec.to_mapping()},
        extra_files={SEARCH_TABLE: md, SEARCH_JSON: json.dumps(body, indent=1) + "\n"},
    )
    emit_json({"out": str(out), **body}, json_out, inputs=[*inputs, out], force=force)
    typer.echo(f"{found.method}: chose {chosen} ({body['score_name']} {100 * found.score:.2f} % on val) after "
               f"{found.evaluations} evaluations; wrote {out}", err=json_out == "-")
