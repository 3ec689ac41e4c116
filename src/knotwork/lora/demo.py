"""`knotwork demo`: real sentences shipped with the package (sentiment, subjectivity, question type), one small
LoRA adapter per task, every merge method, per-task and joint scores, CKA before and after KnOTS. Offline.

The sentences (`demo_data/`, 125 kB) are a sample of MR, SUBJ and TREC made by ``scripts/make_demo_data.py``;
``demo_data/SOURCES.md`` cites the corpora. The base model solves none of the three tasks well zero-shot (TREC's
six question types least), so fine-tuning gains about 20 points on average and the merges fall between the two. The command writes only into its own output folder (a table, a JSON, two plots,
the adapters); never results pages.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from knotwork.lora.cka import adapter_cka
from knotwork.lora.tasks import TextTask, load_text_task

logger = logging.getLogger(__name__)

#: The shipped tasks, as folders of ``knotwork/lora/demo_data`` (2 + 2 + 6 = 10 distinct labels).
DEMO_TASKS = ("sentiment", "subjectivity", "question")


def load_demo_tasks() -> list[TextTask]:
    """The three shipped demo tasks with their train (320), val (32) and test (100) sentences each."""
    from importlib.resources import as_file, files

    with as_file(files("knotwork.lora") / "demo_data") as root:
        return [load_text_task(Path(root) / name) for name in DEMO_TASKS]


@dataclass
class DemoResult:
    """Accuracies (test) of the zero-shot base, each fine-tuned adapter and each merge, chosen λ, and CKA."""

    tasks: list[str]
    zeroshot: dict[str, float]
    finetuned: dict[str, float]
    merges: dict[str, dict[str, float]] = field(default_factory=dict)  # method -> task -> acc
    joint: dict[str, dict[int, float]] = field(default_factory=dict)   # method (or "zero-shot") -> k -> hits
    params: dict[str, dict] = field(default_factory=dict)
    n_test: dict[str, int] = field(default_factory=dict)
    cka: dict[str, list[list[float]]] = field(default_factory=dict)    # "before"/"after" -> task x task
    lora: dict[str, dict] = field(default_factory=dict)                # task -> LoRA weights (for saving)


#: λ values the demo searches on val, walked in this order until one does not improve (`coordinate_search`): the
#: paper's range (0.1..1.0) at a coarser step and from the top, where the demo's merges do best, to save time.
DEMO_SCALE_GRID: tuple[float, ...] = (1.0, 0.75, 0.5, 0.25)
DEMO_METHODS = ("ta", "ties", "dare-ties", "knots-ties", "knots-dare-ties")
#: How tables and plots name the merge methods.
METHOD_LABELS = {"ta": "TA", "ties": "TIES", "dare-ties": "DARE-TIES", "knots-ties": "KnOTS-TIES",
                 "knots-dare-ties": "KnOTS-DARE-TIES"}


def demo_train_config(steps: int = 40, seed: int = 0):
    """The demo's training run: `steps` steps of batch 8 (one epoch of 320 sentences at the default 40)."""
    from knotwork.lora.model import LoraSpec
    from knotwork.lora.train import TrainConfig

    # A fixed budget of steps, no validation: the demo must stay within two CPU-minutes.
    return TrainConfig(lora=LoraSpec(), epochs=None, max_steps=steps, validation="none", batch_size=8, lr=2e-3,
                       warmup=0.1, max_length=32, seed=seed)


def run_demo(model_loader, *, steps: int = 40, seed: int = 0, train_config=None,
             progress: Callable[[str], None] | None = None) -> DemoResult:
    """Train one small adapter per demo task, merge with each method (λ searched on val), score on test.

    Parameters
    ----------
    model_loader : callable
        ``() -> (model, tokenizer, name)``: a fresh base encoder per call (training modifies it in place).
    steps : int
        Training steps per task (batch 8).
    seed : int
        LoRA initialisation, batch order, dropout and DARE's drop masks.
    progress : callable, optional
        Receives one short status line per stage.
    """
    from knotwork.lora.evaluate import TaskEvaluator
    from knotwork.lora.io import adapter_deltas
    from knotwork.lora.search import coordinate_search
    from knotwork.lora.train import train_adapter
    from knotwork.merge import merge_modules
    from knotwork.merge.config import MergeConfig

    say = progress or (lambda _m: None)
    cfg = train_config or demo_train_config(steps, seed)
    tasks = load_demo_tasks()
    names = [t.name for t in tasks]
    states = {}
    for task in tasks:
        say(f"training {task.name} ({len(task.splits['train'])} sentences, {cfg.max_steps} steps)")
        model, tok, _ = model_loader()
        states[task.name] = train_adapter(model, tok, task, cfg, baseline="none").lora
    model, tok, _ = model_loader()
    val = TaskEvaluator(model, tok, tasks, split="val", max_length=cfg.max_length)
    test = TaskEvaluator(model, tok, tasks, split="test", max_length=cfg.max_length)
    deltas = {n: adapter_deltas(states[n], cfg.lora) for n in names}
    ft_val = {n: val.evaluate(deltas[n], tasks=[n], joint=False).accuracy[n] for n in names}
    ft_test = {n: test.evaluate(deltas[n], tasks=[n], joint=False).accuracy[n] for n in names}
    zs = test.evaluate()
    res = DemoResult(names, zs.accuracy, ft_test, n_test=zs.n, lora=states)
    res.joint["zero-shot"] = zs.joint_hits
    # Factors (scaling folded into B) in the merge API's form: {module: [(B_i, A_i) per task]}.
    modules = sorted({k.rsplit(".lora_", 1)[0] for k in states[names[0]]})
    factors = {m: [(states[n][f"{m}.lora_B.weight"].double() * cfg.lora.scaling,
                    states[n][f"{m}.lora_A.weight"].double()) for n in names] for m in modules}
    for method in DEMO_METHODS:
        say(f"merging with {method}")
        fixed = {"topk": 20.0} if method.endswith("ties") and "dare" not in method else {}
        if "dare" in method:
            fixed = {"topk": 100.0, "drop_rate": 0.1, "seed": seed}
        # Every method multiplies its merged update by λ last, so one merge at λ = 1 serves the whole search.
        unit = merge_modules(factors, method=method, config=MergeConfig(scale=1.0, **fixed)).deltas

        def objective(p, unit=unit):
            return val.evaluate(_scaled(unit, p["scale"]), joint=False).avg_normalized(ft_val)

        chosen = coordinate_search(objective, [("scale", DEMO_SCALE_GRID)], {"scale": 1.0, **fixed}).params
        r = test.evaluate(_scaled(unit, chosen["scale"]))
        res.merges[method], res.joint[method], res.params[method] = r.accuracy, r.joint_hits, chosen
    say("CKA of the updates before and after KnOTS")
    res.cka = adapter_cka(model, tok, tasks, factors, n_per_task=16, max_length=cfg.max_length)
    return res


def _scaled(deltas: dict[str, torch.Tensor], scale: float) -> dict[str, torch.Tensor]:
    return {m: scale * d for m, d in deltas.items()}


def _mean(acc: dict[str, float], tasks: Sequence[str]) -> float:
    return sum(acc[t] for t in tasks) / len(tasks)


def _normalized(res: DemoResult, acc: dict[str, float]) -> float:
    return sum(acc[t] / res.finetuned[t] for t in res.tasks) / len(res.tasks)


def demo_table(res: DemoResult) -> str:
    """A markdown table: test accuracy per task, its average, average normalized accuracy (accuracy / fine-tuned
    accuracy) and joint Hits@1 (every test sentence against all tasks' labels pooled, no task identity)."""
    head = ["model", *res.tasks, "average", "avg normalized", "joint Hits@1"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def row(name, acc, joint):
        cells = [100 * acc[t] for t in res.tasks] + [100 * _mean(acc, res.tasks), 100 * _normalized(res, acc)]
        return (f"| {name} | " + " | ".join(f"{c:.1f}" for c in cells)
                + f" | {f'{100 * joint[1]:.1f}' if joint else '–'} |")

    rows.append(row("zero-shot", res.zeroshot, res.joint["zero-shot"]))
    rows.append(row("fine-tuned (own adapter)", res.finetuned, None))
    for m, acc in res.merges.items():
        rows.append(row(f"{METHOD_LABELS[m]} (λ={res.params[m]['scale']:g})", acc, res.joint[m]))
    return "\n".join(rows)


def demo_summary(res: DemoResult) -> str:
    """One line reading the table: the fine-tuning gain over zero-shot and the best merge."""
    zs, ft = _mean(res.zeroshot, res.tasks), _mean(res.finetuned, res.tasks)
    line = (f"Fine-tuned adapters beat zero-shot by {100 * (ft - zs):.1f} points on average "
            f"({100 * zs:.1f} -> {100 * ft:.1f})")
    if not res.merges:
        return line + "."
    best = max(res.merges, key=lambda m: (_mean(res.merges[m], res.tasks), res.joint[m][1]))
    joint = max(res.merges, key=lambda m: res.joint[m][1])
    return (f"{line}; best merge: {METHOD_LABELS[best]}, {100 * _mean(res.merges[best], res.tasks):.1f} on average "
            f"({100 * _normalized(res, res.merges[best]):.1f} % of fine-tuned) with one model for all tasks; best "
            f"joint Hits@1: {METHOD_LABELS[joint]} {100 * res.joint[joint][1]:.1f} "
            f"(zero-shot {100 * res.joint['zero-shot'][1]:.1f}).")


def save_demo_plot(res: DemoResult, path: str | Path) -> None:
    """A bar chart of test accuracy per task and model, saved as PNG at ``path`` (a file the caller owns)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = ["zero-shot", "fine-tuned", *[METHOD_LABELS[m] for m in res.merges]]
    accs = [res.zeroshot, res.finetuned, *res.merges.values()]
    x = np.arange(len(res.tasks))
    w = 0.8 / len(models)
    fig, ax = plt.subplots(figsize=(8, 4), constrained_layout=True)
    try:
        for i, (name, acc) in enumerate(zip(models, accs, strict=True)):
            ax.bar(x + i * w - 0.4 + w / 2, [100 * acc[t] for t in res.tasks], w, label=name)
        ax.set_xticks(x, res.tasks)
        ax.set_ylabel("test accuracy (%)")
        ax.set_ylim(0, 100)
        ax.set_title("knotwork demo: MiniLM LoRA adapters and their merges")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: bars reach 100 %
        fig.savefig(path, dpi=110, format="png")
    finally:
        plt.close(fig)
