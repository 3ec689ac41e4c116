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
    steps: int = typer.Option(80, help="Optimizer steps per task."),
    batch_size: int = typer.Option(16, help="Examples per step."),
    lr: float = typer.Option(2e-3, help="Peak AdamW learning rate."),
    r: int = typer.Option(16, help="LoRA rank."),
    alpha: float = typer.Option(16.0, help="LoRA alpha (scaling alpha/r)."),
    max_length: int = typer.Option(48, help="Tokens per input after truncation."),
    seed: int = typer.Option(0, help="Seed for LoRA init, batch order and dropout."),
    force: bool = typer.Option(False, "--force", help="Retrain even if a finished adapter exists."),
) -> None:
    """Fine-tune one LoRA adapter of MiniLM per task (frozen label-phrase head); cached and resumable."""
    import torch

    from knotwork.lora.model import load_base_encoder
    from knotwork.lora.runner import train_task_cached
    from knotwork.lora.tasks import load_text_task

    torch.set_num_threads(1)
    try:
        config = _train_config(steps=steps, batch_size=batch_size, lr=lr, r=r, alpha=alpha, max_length=max_length,
                               seed=seed)
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



@app.command("lora-eval")
def lora_eval(
    task_dirs: list[Path] = typer.Argument(..., help="Task folders to score (labels.json + <split>.jsonl)."),
    adapter: Path | None = typer.Option(None, "--adapter", help="PEFT adapter (trained or merged); none = base."),
    split: str = typer.Option("test", help="Split to score."),
    limit: int = typer.Option(0, help="First N examples per task (0 = all)."),
    max_length: int = typer.Option(48, help="Tokens per input after truncation."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the scores here (refuses to overwrite)."),
    force: bool = typer.Option(False, "--force", help="Overwrite --json."),
) -> None:
    """Per-task accuracy and joint Hits@1/3/5 (all tasks' labels pooled) of MiniLM plus an adapter."""
    import json

    import torch

    from knotwork.lora.evaluate import TaskEvaluator
    from knotwork.lora.io import atomic_write_text
    from knotwork.lora.model import load_base_encoder
    from knotwork.lora.tasks import load_text_task

    torch.set_num_threads(1)
    if json_out is not None and json_out.exists() and not force:
        _fail(f"{json_out} exists; pass --force to overwrite it.")
    try:
        tasks = [load_text_task(d, splits=(split,)) for d in task_dirs]
        deltas = {}
        if adapter is not None:
            from knotwork.merge import load_adapter

            deltas = load_adapter(adapter).deltas()
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    model, tok, _ = load_base_encoder()
    ev = TaskEvaluator(model, tok, tasks, split=split, limit=limit or None, max_length=max_length)
    try:
        res = ev.evaluate(deltas, progress=True)
    except (KeyError, ValueError) as exc:
        _fail(f"adapter {adapter} does not fit MiniLM: {exc}")
    for t in res.accuracy:
        typer.echo(f"{t:>12}: accuracy {100 * res.accuracy[t]:.1f}% (n={res.n[t]})")
    typer.echo(f"{'joint':>12}: " + ", ".join(f"Hits@{k} {100 * v:.1f}%" for k, v in res.joint_hits.items())
               + f" over {len(ev.joint.phrases)} pooled labels")
    if json_out is not None:
        atomic_write_text(json_out, json.dumps({"accuracy": res.accuracy, "joint_hits": res.joint_hits, "n": res.n,
                                                "adapter": str(adapter) if adapter else None, "split": split}))


def _train_config(*, steps: int, batch_size: int, lr: float, r: int, alpha: float, max_length: int, seed: int):
    # One place builds the config, so `lora-train` and `bench knots-text` with equal options share the cache.
    from knotwork.lora.model import LoraSpec
    from knotwork.lora.train import TrainConfig

    return TrainConfig(lora=LoraSpec(r=r, alpha=alpha), steps=steps, batch_size=batch_size, lr=lr,
                       max_length=max_length, seed=seed, warmup_steps=min(20, steps // 10))


TEXT_TASKS = ("mr", "subj", "cr", "mpqa", "trec", "sst2")


def _git_commit() -> str:
    import subprocess

    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, check=True)
        # Only code counts: the page's own outputs under docs/ are rewritten by the run that names the commit.
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "src", "benchmarks"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return out.stdout.strip() + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


@bench_app.command("knots-text")
def bench_knots_text(
    data: Path = typer.Option(Path("../shared/data"), help="Folder holding text/<task>/ (see shared/data/README.md)."),
    tasks: list[str] = typer.Option(list(TEXT_TASKS), "--task", help="Task folder names under <data>/text."),
    out: Path = typer.Option(Path("docs/results/knots-text.md"), help="Markdown results page to write."),
    cache: Path = typer.Option(Path(".knotwork-cache/knots-text"), help="Adapters and evaluations are cached here."),
    steps: int = typer.Option(80, help="Training steps per adapter."),
    batch_size: int = typer.Option(16),
    lr: float = typer.Option(2e-3, help="Peak AdamW learning rate."),
    r: int = typer.Option(16, help="LoRA rank (the paper's ablation also uses 4)."),
    alpha: float = typer.Option(16.0),
    max_length: int = typer.Option(48),
    seed: int = typer.Option(0, help="Training seed."),
    val_limit: int = typer.Option(40, help="Val examples per task used by the hyperparameter search."),
    test_limit: int = typer.Option(100, help="Test examples per task (0 = all)."),
    dare_seeds: int = typer.Option(3, help="Number of DARE seeds evaluated on test."),
    method: list[str] = typer.Option([], "--method", help="Only these merge methods (default: all five); "
                                     "'none' for only the zero-shot and fine-tuned rows."),
    page: bool = typer.Option(True, "--page/--no-page", help="Write the results page (--no-page: only fill the "
                              "cache, e.g. from parallel processes, one per method)."),
    criterion: list[str] = typer.Option(["pertask", "joint"], "--criterion", help="Selection criteria to search: "
                                        "pertask (val avg normalized accuracy) and/or joint (val joint Hits@3)."),
    cached_only: bool = typer.Option(False, "--cached-only", help="Compute nothing new: write a page (marked "
                                     "partial) from the evaluations finished so far."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing results page."),
) -> None:
    """Reproduce KnOTS on MiniLM: six LoRA adapters, TA/TIES/DARE-TIES/KnOTS merges, per-task and joint scores."""
    import json
    import platform
    import sys
    import time

    import numpy as np
    import torch

    import knotwork
    from knotwork.lora.experiment import StudyConfig, load_task_dirs, run_study, save_result
    from knotwork.lora.io import atomic_write_text
    from knotwork.lora.report import render_document
    from knotwork.lora.tasks import build_joint_labels, load_text_task
    from knotwork.merge.plots import save_cka_heatmaps

    torch.set_num_threads(1)
    from knotwork.lora.experiment import MERGE_METHODS

    if out.exists() and not force and page:
        _fail(f"{out} exists; pass --force to overwrite it.")
    try:
        unknown = [m for m in method if m not in MERGE_METHODS and m != "none"]
        if unknown:
            raise ValueError(f"Unknown --method {unknown}; choose from {', '.join(MERGE_METHODS)} or 'none'.")
        dirs = load_task_dirs(data / "text", tasks)
        train = _train_config(steps=steps, batch_size=batch_size, lr=lr, r=r, alpha=alpha, max_length=max_length,
                              seed=seed)
        if not criterion or set(criterion) - {"pertask", "joint"}:
            raise ValueError(f"--criterion must be pertask and/or joint, got {criterion}.")
        if dare_seeds < 1:
            raise ValueError(f"--dare-seeds must be >= 1, got {dare_seeds}.")
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    cfg = StudyConfig(task_dirs=dirs, cache_dir=cache, train=train, val_limit=val_limit or None,
                      test_limit=test_limit or None, dare_seeds=tuple(range(dare_seeds)))
    cfg.criteria = tuple(dict.fromkeys(criterion))
    cfg.cached_only = cached_only
    if method:
        cfg.methods = tuple(m for m in method if m != "none")
    if not page:
        cfg.cka_texts_per_task = 0
    t0 = time.perf_counter()
    result = run_study(cfg, progress=True, log=lambda m: typer.echo(m, err=True))
    if not page:
        typer.echo(f"cached evaluations for {list(cfg.methods) or 'the base rows'}; no page written")
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    stem = out.with_suffix("")
    save_result(result, stem.with_suffix(".json"))
    heat = save_cka_heatmaps(np.asarray(result.cka["before"]), np.asarray(result.cka["after"]), result.tasks,
                             stem.parent / f"{stem.name}-cka.png")
    joint = build_joint_labels([load_text_task(d, splits=()) for d in dirs])
    command = "knotwork bench knots-text " + " ".join(sys.argv[3:]) if len(sys.argv) > 3 else "knotwork bench knots-text"
    meta = {
        "version": knotwork.__version__, "commit": _git_commit(),
        "machine": f"{platform.machine()} CPU, 2 cores shared with other jobs (about seven engineers at once), "
                   f"torch {torch.__version__} with 1 thread, Python {platform.python_version()}",
        "data": f"`{data}/text/{{{','.join(tasks)}}}` (train/val/test JSONL, labels.json; see shared/data/README.md)",
        "reductions": "training is a fixed step budget per task (not the paper's epochs); hyperparameter search "
                      "on val subsets and test on test subsets (limits above); one training seed; no rank "
                      "ablation unless a second page is generated with --r 4.",
        "n_joint": len(joint.phrases),
        "notes": "\n".join([
            "## Caveats",
            "",
            f"- Fixed, small budgets: {steps} steps × batch {batch_size} per adapter (a fraction of an epoch), so the "
            "fine-tuned rows are below what longer training reaches; normalized accuracy divides by these rows.",
            f"- Subsets: the search sees {val_limit or 'all'} val and the test rows {test_limit or 'all'} test "
            "examples per task, so one task's accuracy carries a binomial standard error of several points and the "
            "averages over six tasks of about 1-2 points; gaps smaller than that are not resolved here.",
            "- One training seed. The ± on DARE rows is the spread over DARE mask seeds only.",
            "- Four of the six tasks are sentiment polarity with the same two labels, so the task updates overlap "
            "far more than the paper's eight vision tasks do; interference, and with it the room for KnOTS to help, "
            "is smaller.",
            "- The paper's rank ablation (r = 4 vs 16) is available as `--r 4 --out docs/results/knots-text-r4.md` "
            "but was not run for this page (CPU time).",
            "",
            f"Wall time of the invocation that wrote this page: {(time.perf_counter() - t0) / 60:.1f} min "
            "(cached work is not repeated; see Time above for the first run).",
        ]),
    }
    atomic_write_text(out, render_document(result, command=command, meta=meta, heatmap=heat.name))
    typer.echo(f"wrote {out}, {stem.with_suffix('.json')}, {heat}")
    typer.echo(json.dumps({m: result.selections[m]["params"] for m in result.selections}))


def _demo_table(res) -> str:
    from knotwork.lora.report import LABELS

    head = ["model", *res.tasks, "avg norm.", "joint H@1", "joint H@3"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def row(name, acc, joint):
        norm = sum(acc[t] / res.finetuned[t] for t in res.tasks) / len(res.tasks) if res.finetuned else 0.0
        j = [f"{100 * joint[k]:.1f}" if joint else "–" for k in (1, 3)]
        return f"| {name} | " + " | ".join(f"{100 * acc[t]:.1f}" for t in res.tasks) + f" | {100 * norm:.1f} | " \
            + " | ".join(j) + " |"

    rows.append(row("zero-shot", res.zeroshot, res.joint["zero-shot"]))
    rows.append(row("fine-tuned (own adapter)", res.finetuned, None))
    for m, acc in res.merges.items():
        rows.append(row(f"{LABELS[m]} (λ={res.params[m]['scale']:g})", acc, res.joint[m]))
    return "\n".join(rows)


def _demo_plot(res, path: Path) -> None:
    import os

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from knotwork.lora.report import LABELS

    models = ["zero-shot", "fine-tuned", *[LABELS[m] for m in res.merges]]
    accs = [res.zeroshot, res.finetuned, *res.merges.values()]
    x = np.arange(len(res.tasks))
    w = 0.8 / len(models)
    fig, ax = plt.subplots(figsize=(8, 4), constrained_layout=True)
    for i, (name, acc) in enumerate(zip(models, accs, strict=True)):
        ax.bar(x + i * w - 0.4 + w / 2, [100 * acc[t] for t in res.tasks], w, label=name)
    ax.set_xticks(x, res.tasks)
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title("knotwork demo: MiniLM LoRA adapters and their merges")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: bars reach 100 %
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


@app.command("demo")
def demo(
    out: Path = typer.Option(Path("knotwork-demo"), "--out", "-o", help="Folder for the table, plot and adapters."),
    steps: int = typer.Option(30, help="Training steps per demo task."),
    seed: int = typer.Option(0, help="Seed for the generated tasks and training."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output folder."),
) -> None:
    """Offline demo: train 3 tiny LoRA adapters on MiniLM, merge them with every method, print a table and plot."""
    import json
    import shutil
    import tempfile

    import torch

    from knotwork.lora.demo import run_demo
    from knotwork.lora.io import save_peft_adapter
    from knotwork.lora.model import LoraSpec, load_base_encoder

    torch.set_num_threads(1)
    if out.exists() and not force:
        _fail(f"{out} exists; pass --force to overwrite it.")
    if steps < 1:
        _fail(f"--steps must be >= 1, got {steps}.")
    res = run_demo(load_base_encoder, steps=steps, seed=seed, progress=lambda m: typer.echo(m, err=True))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    tmp.chmod(0o755)  # mkdtemp makes a private folder; the demo output is meant to be shared
    try:
        for task, lora in res.lora.items():
            save_peft_adapter(lora, LoraSpec(), tmp / "adapters" / task)
        table = _demo_table(res)
        (tmp / "results.md").write_text(table + "\n")
        (tmp / "results.json").write_text(json.dumps(
            {k: v for k, v in res.__dict__.items() if k != "lora"}, indent=1, default=str))
        _demo_plot(res, tmp / "accuracy.png")
        if out.exists():
            shutil.rmtree(out)
        tmp.replace(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    typer.echo(table)
    typer.echo(f"wrote {out}/results.md, results.json, accuracy.png, adapters/")
