"""CLI commands for LoRA on MiniLM: `lora-train`, `lora-eval`, `demo` and `bench knots-text`.

Heavy imports (torch, transformers) happen inside the commands so `knotwork --help` stays instant.
"""

from __future__ import annotations

from pathlib import Path

import typer

from knotwork.cli._app import app, bench_app


def _fail(msg: str) -> None:
    typer.secho(f"Error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


@app.command("lora-train")
def lora_train(
    task_dirs: list[Path] = typer.Argument(..., help="Task folders: train/val/test JSONL + labels.json."),
    out: Path = typer.Option(Path("adapters"), "--out", "-o", help="One adapter folder per task under here."),
    steps: int = typer.Option(200, help="Optimizer steps per task."),
    batch_size: int = typer.Option(16, help="Examples per step."),
    lr: float = typer.Option(1e-3, help="Peak AdamW learning rate."),
    r: int = typer.Option(16, help="LoRA rank."),
    alpha: float = typer.Option(16.0, help="LoRA alpha (scaling alpha/r)."),
    max_length: int = typer.Option(48, help="Tokens per input after truncation."),
    seed: int = typer.Option(0, help="Seed for LoRA init, batch order and dropout."),
    force: bool = typer.Option(False, "--force", help="Retrain even if a finished adapter exists."),
) -> None:
    """Fine-tune one LoRA adapter of MiniLM per task (frozen label-phrase head); cached and resumable."""
    import torch

    from knotwork.lora.model import LoraSpec, load_base_encoder
    from knotwork.lora.runner import train_task_cached
    from knotwork.lora.tasks import load_text_task
    from knotwork.lora.train import TrainConfig

    torch.set_num_threads(1)
    try:
        config = TrainConfig(lora=LoraSpec(r=r, alpha=alpha), steps=steps, batch_size=batch_size, lr=lr,
                             max_length=max_length, seed=seed, warmup_steps=min(20, steps // 10))
        tasks = [load_text_task(d, splits=("train",)) for d in task_dirs]  # validate all before any work
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    for task in tasks:
        try:
            res = train_task_cached(load_base_encoder, task, config, out / task.name, force=force, progress=True)
        except FileExistsError as exc:
            _fail(str(exc))
        how = "cached" if res.cached else f"trained in {res.seconds:.0f}s"
        typer.echo(f"{task.name}: {how}, loss {res.final_loss:.3f} -> {res.adapter_dir}")
