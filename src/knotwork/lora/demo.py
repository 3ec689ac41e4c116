"""`knotwork demo`: tiny template tasks, small adapters, every merge method, per-task and joint scores. Offline.

The command writes only into its own output folder (a table, a JSON, a plot, the adapters); never results pages.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from knotwork._errors import MergeError
from knotwork.lora.tasks import TextSplit, TextTask

logger = logging.getLogger(__name__)

# Three small tasks whose label names are distinct, so the joint benchmark has 2 + 3 + 3 = 8 classes.
_SENTIMENT = {
    "negative": ["awful", "terrible", "boring", "disappointing", "dreadful", "bad", "dull", "painful"],
    "positive": ["wonderful", "excellent", "delightful", "great", "superb", "lovely", "brilliant", "enjoyable"],
}
_SENT_NOUNS = ["film", "meal", "concert", "book", "trip", "show", "game", "hotel", "class", "album"]
_SENT_TEMPLATES = ["the {n} was {a} .", "what a {a} {n} !", "i found the {n} {a} .", "honestly , a {a} {n} ."]

_TOPICS = {
    "sports": ["the team won the match in extra time", "she scored two goals", "the coach praised the players",
               "the runner finished the marathon", "they lost the final game", "the striker missed a penalty"],
    "food": ["the soup needs more salt", "we baked fresh bread", "the pasta was cooked with garlic",
             "he ordered a spicy curry", "the cake had chocolate icing", "they grilled fish for dinner"],
    "weather": ["heavy rain is expected tomorrow", "the sky cleared after the storm", "it snowed all night",
                "a cold wind blew from the north", "the forecast says sunshine", "thunder rolled over the hills"],
}
_TOPIC_SUFFIX = ["", " today", " again", " last week", " this morning", " , people said"]

_QUESTIONS = {
    "person": ["who wrote {x} ?", "who founded {x} ?", "who discovered {x} ?", "who painted {x} ?"],
    "place": ["where is {x} ?", "where was {x} built ?", "in which city is {x} ?", "where can i find {x} ?"],
    "number": ["how many people visit {x} ?", "how old is {x} ?", "how much does {x} cost ?",
               "how many pages does {x} have ?"],
}
_Q_THINGS = ["the old library", "the red bridge", "the famous novel", "the museum", "the tower", "the theory",
             "the opera", "the castle", "the garden", "the company"]


def _split(rng: np.random.Generator, rows: list[tuple[str, int]], n_train: int, n_eval: int) -> dict[str, TextSplit]:
    idx = rng.permutation(len(rows))
    rows = [rows[i] for i in idx]
    parts = {"train": rows[:n_train], "val": rows[n_train:n_train + n_eval],
             "test": rows[n_train + n_eval:n_train + 2 * n_eval]}
    return {k: TextSplit(tuple(t for t, _ in v), tuple(y for _, y in v)) for k, v in parts.items()}


def make_demo_tasks(*, seed: int = 0, n_train: int = 96, n_eval: int = 32) -> list[TextTask]:
    """Three template-generated tasks (sentiment, topic, question type) with train/val/test splits.

    Examples are drawn with replacement from small templates, so the same sentence can appear in train and test;
    that is fine for a demo whose only job is to show the pipeline end to end in minutes.
    """
    if n_train < 8 or n_eval < 4:
        raise MergeError(f"make_demo_tasks needs n_train >= 8 and n_eval >= 4; got {n_train}, {n_eval}.")
    rng = np.random.default_rng(seed)
    total = n_train + 2 * n_eval
    tasks = []

    labels = list(_SENTIMENT)
    rows = []
    for _ in range(total):
        y = int(rng.integers(len(labels)))
        t = str(rng.choice(_SENT_TEMPLATES)).format(n=rng.choice(_SENT_NOUNS), a=rng.choice(_SENTIMENT[labels[y]]))
        rows.append((t, y))
    tasks.append(TextTask("sentiment", tuple(labels), _split(rng, rows, n_train, n_eval)))

    labels = list(_TOPICS)
    rows = []
    for _ in range(total):
        y = int(rng.integers(len(labels)))
        rows.append((str(rng.choice(_TOPICS[labels[y]])) + str(rng.choice(_TOPIC_SUFFIX)) + " .", y))
    tasks.append(TextTask("topic", tuple(labels), _split(rng, rows, n_train, n_eval)))

    labels = list(_QUESTIONS)
    rows = []
    for _ in range(total):
        y = int(rng.integers(len(labels)))
        rows.append((str(rng.choice(_QUESTIONS[labels[y]])).format(x=rng.choice(_Q_THINGS)), y))
    tasks.append(TextTask("question", tuple(labels), _split(rng, rows, n_train, n_eval)))
    return tasks


@dataclass
class DemoResult:
    """Accuracies (test) of the zero-shot base, each fine-tuned adapter and each merge, plus chosen λ."""

    tasks: list[str]
    zeroshot: dict[str, float]
    finetuned: dict[str, float]
    merges: dict[str, dict[str, float]] = field(default_factory=dict)  # method -> task -> acc
    joint: dict[str, dict[int, float]] = field(default_factory=dict)   # method (or "zero-shot") -> k -> hits
    params: dict[str, dict] = field(default_factory=dict)
    lora: dict[str, dict] = field(default_factory=dict)                # task -> LoRA weights (for saving)


DEMO_METHODS = ("ta", "ties", "dare-ties", "knots-ties", "knots-dare-ties")
#: How tables and plots name the merge methods.
METHOD_LABELS = {"ta": "TA", "ties": "TIES", "dare-ties": "DARE-TIES", "knots-ties": "KnOTS-TIES",
                 "knots-dare-ties": "KnOTS-DARE-TIES"}


def run_demo(model_loader, *, steps: int = 30, seed: int = 0, train_config=None,
             progress: Callable[[str], None] | None = None) -> DemoResult:
    """Train one small adapter per demo task, merge with each method (λ searched on val), score on test.

    Parameters
    ----------
    model_loader : callable
        ``() -> (model, tokenizer, name)``: a fresh base encoder per call (training modifies it in place).
    steps : int
        Training steps per task.
    progress : callable, optional
        Receives one short status line per stage.
    """
    from knotwork.lora.evaluate import TaskEvaluator
    from knotwork.lora.io import adapter_deltas
    from knotwork.lora.model import LoraSpec
    from knotwork.lora.search import SCALE_GRID, coordinate_search
    from knotwork.lora.train import TrainConfig, train_adapter
    from knotwork.merge import merge_modules
    from knotwork.merge.config import MergeConfig

    say = progress or (lambda _m: None)
    # A fixed budget of steps, no validation: the demo is about merging, and must stay seconds long.
    cfg = train_config or TrainConfig(lora=LoraSpec(), epochs=None, max_steps=steps, validation="none",
                                      batch_size=8, lr=2e-3, warmup=min(5, steps // 5) / steps, max_length=24,
                                      seed=seed)
    tasks = make_demo_tasks(seed=seed)
    names = [t.name for t in tasks]
    states = {}
    for task in tasks:
        say(f"training {task.name}")
        model, tok, _ = model_loader()
        states[task.name] = train_adapter(model, tok, task, cfg).lora
    model, tok, _ = model_loader()
    val = TaskEvaluator(model, tok, tasks, split="val", max_length=cfg.max_length)
    test = TaskEvaluator(model, tok, tasks, split="test", max_length=cfg.max_length)
    deltas = {n: adapter_deltas(states[n], cfg.lora) for n in names}
    ft_val = {n: val.evaluate(deltas[n], tasks=[n], joint=False).accuracy[n] for n in names}
    ft_test = {n: test.evaluate(deltas[n], tasks=[n], joint=False).accuracy[n] for n in names}
    zs = test.evaluate()
    res = DemoResult(names, zs.accuracy, ft_test, lora=states)
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

        def objective(p, method=method):
            d = merge_modules(factors, method=method, config=MergeConfig(**p)).deltas
            return val.evaluate(d, joint=False).avg_normalized(ft_val)

        chosen = coordinate_search(objective, [("scale", SCALE_GRID)], {"scale": 1.0, **fixed}).params
        merged = merge_modules(factors, method=method, config=MergeConfig(**chosen)).deltas
        r = test.evaluate(merged)
        res.merges[method], res.joint[method], res.params[method] = r.accuracy, r.joint_hits, chosen
    return res


def demo_table(res: DemoResult) -> str:
    """A markdown table: test accuracy per task, average normalized accuracy and joint Hits@1/3 per model."""
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
        rows.append(row(f"{METHOD_LABELS[m]} (λ={res.params[m]['scale']:g})", acc, res.joint[m]))
    return "\n".join(rows)


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
