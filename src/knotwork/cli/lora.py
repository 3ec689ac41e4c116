"""CLI commands for LoRA on MiniLM: `knotwork lora train|eval` and the offline `knotwork demo`.

Heavy imports (torch, transformers) happen inside the commands so `knotwork --help` stays instant. Errors are
raised as :class:`~knotwork._errors.MergeError` (the capability's error); the root group prints the one line.
The KnOTS text study is not a command: ``python benchmarks/knots_text.py``.
"""

from __future__ import annotations

import enum
import json
from pathlib import Path

import typer

from knotwork._errors import MergeError, OutputError, check_positive_int
from knotwork.cli._app import (
    Device,
    app,
    device_option,
    emit_json,
    force_option,
    group,
    json_option,
    out_option,
    resolve_device,
)

lora_app = group("lora", "Fine-tune LoRA adapters of MiniLM on text tasks; score adapters and merges per task "
                 "and on the joint union-of-labels benchmark.")

TRAIN_LOG = "train.json"


class Split(str, enum.Enum):
    """A split of a task folder (``<split>.jsonl``)."""

    train = "train"
    val = "val"
    test = "test"


def _say(ctx: typer.Context, message: str) -> None:
    """A status line on stderr, unless -q."""
    if not (ctx.obj or {}).get("quiet"):
        typer.echo(message, err=True)


def _check_finite_positive(value: float, name: str) -> float:
    import math

    if not math.isfinite(value) or value <= 0:
        raise MergeError(f"{name} must be a finite number > 0; got {value!r}")
    return value


def _unique_names(tasks, dirs) -> None:
    seen: dict[str, Path] = {}
    for task, d in zip(tasks, dirs, strict=True):
        if task.name in seen:
            raise MergeError(f"{d}: a second task named '{task.name}' (first: {seen[task.name]}); task folder names "
                             "must be unique")
        seen[task.name] = d


class Baseline(str, enum.Enum):
    """The baselines measured on val (knotwork.lora.train.BASELINES)."""

    probe = "probe"
    majority = "majority"
    none = "none"


@lora_app.command("train")
def train(
    ctx: typer.Context,
    task_dirs: list[Path] = typer.Argument(..., help="Task folders: labels.json + train.jsonl (+ val.jsonl) "
                                           "(docs/lora.md)."),
    out: Path = out_option("Folder of adapters: one PEFT adapter folder <out>/<task> per task."),
    epochs: int = typer.Option(3, help="Passes over the training split."),
    max_steps: int = typer.Option(0, help="Cap on optimizer steps (0 = no cap)."),
    patience: int = typer.Option(1, help="Stop after this many evaluations without a better val accuracy "
                                 "(0 = never stop early)."),
    eval_every: int = typer.Option(0, help="Evaluate on val every N steps (0 = after every epoch)."),
    batch_size: int = typer.Option(16, help="Examples per step (the global batch under torchrun)."),
    lr: float = typer.Option(1e-3, help="Peak AdamW learning rate."),
    r: int = typer.Option(16, "--rank", "--r", help="LoRA rank (--r is an alias; torchrun takes --r for one of its "
                          "own options, so spell it --rank there)."),
    alpha: float = typer.Option(16.0, help="LoRA alpha (scaling alpha/r)."),
    dropout: float = typer.Option(0.1, help="LoRA dropout (0 for runs that must match exactly across processes)."),
    max_length: int = typer.Option(64, help="Tokens per input (a pair: both parts) after truncation."),
    logit_scale: float = typer.Option(20.0, help="Inverse temperature on the cosine similarities."),
    seed: int = typer.Option(0, help="Seed for LoRA init, batch order and dropout."),
    baseline: Baseline = typer.Option(Baseline.probe, "--baseline", case_sensitive=False,
                                      help="Baselines measured on val: a linear probe and the majority class, "
                                      "the majority class only, or none."),
    device: Device = device_option(),
    force: bool = force_option(),
) -> None:
    """Fine-tune one LoRA adapter of MiniLM per task (frozen label-phrase head), by epochs with early stopping.

    Each epoch ends with an evaluation on val.jsonl (a task without one validates on a fixed 10% of train); the
    best adapter is written atomically to <out>/<task> with a train.json (options, data sha256, history, best
    epoch, baselines, verdict). A task whose adapter does not beat the majority class (or the linear probe) on
    val gets a warning line. An adapter there trained with the same options and data is kept (a rerun continues
    after an interruption); a different one is replaced only with --force. Several processes train data-parallel
    under torchrun (docs/lora.md). Threads follow torch's default (OMP_NUM_THREADS; torchrun sets 1 per process).
    """
    from knotwork import _distributed as D
    from knotwork._progress import progress_enabled
    from knotwork.lora.io import save_peft_adapter
    from knotwork.lora.model import LoraSpec, load_base_encoder
    from knotwork.lora.train import TrainConfig, train_adapter, validation_split

    for name, value in (("--epochs", epochs), ("--batch-size", batch_size), ("--rank", r), ("--max-length", max_length)):
        check_positive_int(value, name, error=MergeError)
    for name, value in (("--max-steps", max_steps), ("--patience", patience), ("--eval-every", eval_every)):
        check_positive_int(value, name, minimum=0, error=MergeError)
    for name, value in (("--lr", lr), ("--alpha", alpha), ("--logit-scale", logit_scale)):
        _check_finite_positive(value, name)
    if not 0 <= dropout < 1:
        raise MergeError(f"--dropout must be in [0, 1); got {dropout!r}")
    dev = resolve_device(device)
    config = TrainConfig(lora=LoraSpec(r=r, alpha=alpha, dropout=dropout), epochs=epochs, max_steps=max_steps or None,
                         patience=patience or None, eval_every=eval_every or None, batch_size=batch_size, lr=lr,
                         max_length=max_length, logit_scale=logit_scale, seed=seed)
    tasks = [_load_train_task(d) for d in task_dirs]  # validate all before any work
    _unique_names(tasks, task_dirs)
    for task, d in zip(tasks, task_dirs, strict=True):
        n = len(validation_split(task, config)[0])
        if n < batch_size:
            held = "" if "val" in task.splits else " after holding 10% out for validation"
            raise MergeError(f"{d / 'train.jsonl'}: {n} examples{held}, fewer than --batch-size {batch_size}")
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists as a file; --out is the folder that holds one adapter folder per task")

    dist = D.context(dev)
    try:
        # Only the main process inspects and writes outputs; the others follow its plan, or its refusal.
        plan = _train_plan(tasks, task_dirs, out, config, force) if dist.is_main else None
        plan = D.broadcast_object(plan, dist)
        if isinstance(plan, str):
            raise OutputError(plan) if dist.is_main else typer.Exit(2)
        say = (lambda m: _say(ctx, m)) if dist.is_main else (lambda m: None)
        echo = typer.echo if dist.is_main else (lambda *a, **k: None)
        for task, (target, want, done) in zip(tasks, plan, strict=True):
            if done:
                echo(f"{task.name}: already trained with these options and data -> {target}")
                continue
            if "val" not in task.splits:
                say(f"{task.name}: no val.jsonl; validating on a fixed 10% of train.jsonl")
            say(f"training {task.name} (up to {config.planned_steps(len(validation_split(task, config)[0]))} "
                f"steps{f' on {dist.world_size} processes' if dist.distributed else ''})")
            model, tok, _ = load_base_encoder()
            res = train_adapter(model, tok, task, config, dist=dist, baseline=baseline.value,
                                progress=progress_enabled())
            for line in res.warnings:
                say(f"warning: {line}")
            if dist.is_main:
                log = {**want, "result": res.to_dict()}
                save_peft_adapter(res.lora, config.lora, target, force=force, inputs=task_dirs,
                                  extra_files={TRAIN_LOG: json.dumps(log, indent=1) + "\n"})
            echo(f"{task.name}: {_summary(res)} -> {target}")
    finally:
        D.shutdown(dist)


def _load_train_task(folder: Path):
    """A task's train split, and its val split when the folder has one."""
    from knotwork.lora.tasks import load_text_task

    has_val = Path(folder, "val.jsonl").is_file()
    return load_text_task(folder, splits=("train", "val") if has_val else ("train",))


def _train_plan(tasks, task_dirs, out: Path, config, force: bool):
    """``[(target, train.json identity, already done)]`` per task, or the refusal's one line."""
    from knotwork._io import check_output, is_knotwork_output
    from knotwork.lora.tasks import task_data_sha256

    plan = []
    try:
        for task, d in zip(tasks, task_dirs, strict=True):
            target = out / task.name
            want = {"task": task.name, "config": config.to_dict(), "data": task_data_sha256(d, splits=tuple(task.splits))}
            if not force and target.is_dir() and is_knotwork_output(target) and _same_training(target, want):
                plan.append((target, want, True))
                continue
            check_output(target, inputs=task_dirs, force=force, folder=True)
            plan.append((target, want, False))
    except OutputError as exc:
        return str(exc)
    return plan


def _summary(res) -> str:
    """One line: the adapter's val accuracy, the baselines, epochs and the verdict."""
    if res.val_accuracy is None:
        return f"{res.steps} steps"
    base = ", ".join(f"{k.replace('_', '-')} {100 * v:.1f}%" for k, v in res.baselines.items())
    return (f"val accuracy {100 * res.val_accuracy:.1f}% (best epoch {res.best_epoch:.2f} of {res.epochs:.2f}"
            f"{', stopped early' if res.stopped_early else ''}; {base})")


def _same_training(folder: Path, want: dict) -> bool:
    try:
        log = json.loads((folder / TRAIN_LOG).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(log, dict) and {k: log.get(k) for k in want} == want


@lora_app.command("eval")
def evaluate(
    task_dirs: list[Path] = typer.Argument(..., help="Task folders to score (labels.json + <split>.jsonl)."),
    adapter: Path | None = typer.Option(None, "--adapter", help="PEFT adapter (trained or merged); none = base."),
    split: Split = typer.Option(Split.test, "--split", case_sensitive=False, help="Split to score."),
    limit: int = typer.Option(0, help="First N examples per task (0 = all)."),
    max_length: int = typer.Option(48, help="Tokens per input after truncation."),
    json_out: str | None = json_option(),
    force: bool = force_option(),
) -> None:
    """Per-task accuracy and joint Hits@1/3/5 (all tasks' labels pooled) of MiniLM plus an adapter."""
    import torch

    from knotwork._io import check_output
    from knotwork._progress import progress_enabled
    from knotwork.lora.evaluate import TaskEvaluator
    from knotwork.lora.model import load_base_encoder
    from knotwork.lora.tasks import build_joint_labels, load_text_task

    check_positive_int(limit, "--limit", minimum=0, error=MergeError)
    check_positive_int(max_length, "--max-length", error=MergeError)
    inputs = [*task_dirs, *([adapter] if adapter is not None else [])]
    if json_out not in (None, "-"):
        check_output(Path(json_out), inputs=inputs, force=force, folder=False)
    tasks = [load_text_task(d, splits=(split.value,)) for d in task_dirs]
    _unique_names(tasks, task_dirs)
    build_joint_labels(tasks)
    deltas = {}
    if adapter is not None:
        from knotwork.merge import load_adapter

        deltas = load_adapter(adapter).deltas()
    torch.set_num_threads(1)
    model, tok, _ = load_base_encoder()
    ev = TaskEvaluator(model, tok, tasks, split=split.value, limit=limit or None, max_length=max_length)
    try:
        res = ev.evaluate(deltas, progress=progress_enabled())
    except MergeError as exc:
        raise MergeError(f"{adapter}: does not fit the MiniLM encoder ({exc})") from exc
    # With --json - stdout carries only the JSON; the table goes to stderr.
    to_err = json_out == "-"
    for t in res.accuracy:
        typer.echo(f"{t:>12}: accuracy {100 * res.accuracy[t]:.1f}% (n={res.n[t]})", err=to_err)
    typer.echo(f"{'joint':>12}: " + ", ".join(f"Hits@{k} {100 * v:.1f}%" for k, v in res.joint_hits.items())
               + f" over {len(ev.joint.phrases)} pooled labels", err=to_err)
    result = {"tasks": [t.name for t in tasks], "split": split.value, "adapter": str(adapter) if adapter else None,
              "limit": limit or None, "accuracy": res.accuracy,
              "joint_hits": {str(k): v for k, v in res.joint_hits.items()}, "n": res.n,
              "joint_labels": list(ev.joint.phrases)}
    emit_json(result, json_out, inputs=inputs, force=force)


def _check_demo_out(out: Path) -> None:
    """The demo output is a folder of its own: never the current folder or a folder holding it."""
    here = Path.cwd().resolve()
    target = out.resolve()
    if target == here or target in here.parents:
        raise OutputError(f"{out}: is the current folder{'' if target == here else ' or holds it'}; the demo writes "
                          "a folder of its own (e.g. --out knotwork-demo) and --force replaces only that folder")


@app.command("demo")
def demo(
    ctx: typer.Context,
    out: Path = typer.Option(Path("knotwork-demo"), "--out", "-o",
                             help="New folder for the table, JSON, plots and adapters (a knotwork output)."),
    steps: int = typer.Option(40, help="Training steps (batch 8) per demo task."),
    seed: int = typer.Option(0, help="Seed of LoRA initialisation, batch order, dropout and DARE."),
    force: bool = force_option(),
) -> None:
    """Offline demo: train LoRA adapters of MiniLM on 3 real sentence tasks, merge them with every method, print a
    table; write it with a JSON, an accuracy plot, a CKA plot and the adapters."""
    import numpy as np
    import torch

    from knotwork._io import atomic_dir, check_output
    from knotwork.lora.demo import demo_summary, demo_table, run_demo, save_demo_plot
    from knotwork.lora.io import write_peft_files
    from knotwork.lora.model import LoraSpec, load_base_encoder
    from knotwork.merge.plots import render_cka_heatmaps

    check_positive_int(steps, "--steps", error=MergeError)
    _check_demo_out(out)
    check_output(out, force=force, folder=True)
    torch.set_num_threads(1)
    res = run_demo(load_base_encoder, steps=steps, seed=seed, progress=lambda m: _say(ctx, m))
    table = demo_table(res) + "\n\n" + demo_summary(res)
    with atomic_dir(out, force=force, report={"demo": {"steps": steps, "seed": seed}}) as tmp:
        for task, lora in res.lora.items():
            write_peft_files(tmp / "adapters" / task, lora, LoraSpec())
        (tmp / "results.md").write_text(table + "\n", encoding="utf-8")
        (tmp / "results.json").write_text(json.dumps(
            {k: v for k, v in res.__dict__.items() if k != "lora"}, indent=1, default=str), encoding="utf-8")
        save_demo_plot(res, tmp / "accuracy.png")
        (tmp / "cka.png").write_bytes(render_cka_heatmaps(np.array(res.cka["before"]), np.array(res.cka["after"]),
                                                          res.tasks))
    typer.echo(table)
    typer.echo(f"wrote {out}/results.md, results.json, accuracy.png, cka.png, adapters/")
