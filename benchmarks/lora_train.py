"""Does `knotwork lora train` learn with its default settings? SST-2, TREC and SICK against a linear probe.

Regenerates docs/results/lora-train.md:

    python benchmarks/lora_train.py

For each task and seed, one adapter is trained exactly as `knotwork lora train <task> --out ...` does with no
options (the library call with ``TrainConfig()`` and ``baseline="probe"``): epochs with early stopping on the val
split, the best epoch kept. One record per (task, seed) goes to benchmarks/results/lora-train/ (val accuracy of the
adapter, the zero-shot head, the majority class and the linear probe; epochs, best epoch, steps; CPU seconds =
process time and wall seconds of the whole unit, probe included). A rerun skips units whose record exists, so an
interrupted run resumes; the page is rendered from the records. ``--limit-train`` / ``--limit-val`` cut the data
for a smoke run (never for the page).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

STUDY = "lora-train"
TASKS = ("sst2", "trec", "sick")
PAGE = Path("docs/results/lora-train.md")
NAMES = {"sst2": "SST-2", "trec": "TREC", "sick": "SICK"}


def _task_order(task: str) -> tuple[int, str]:
    return (TASKS.index(task) if task in TASKS else len(TASKS), task)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path("../shared/data"),
                   help="Folder holding text/<task>/ (see shared/data/README.md).")
    p.add_argument("--tasks", nargs="+", default=list(TASKS), help="Task folder names under <data>/text.")
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="Training seeds (one unit per task and seed).")
    p.add_argument("--records", type=Path, default=None, help="Folder of the records (default benchmarks/results).")
    p.add_argument("--out", type=Path, default=PAGE, help="The results page.")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads.")
    p.add_argument("--limit-train", type=int, default=0, help="First N training examples per task (smoke only).")
    p.add_argument("--limit-val", type=int, default=0, help="First N val examples per task (smoke only).")
    return p.parse_args(argv)


def _unit(task: str, seed: int) -> str:
    return f"{task}-seed{seed}"


def run_unit(task_dir: Path, seed: int, args: argparse.Namespace) -> dict:
    """Train one adapter with the default settings; the numbers of its record."""
    import torch

    from knotwork.lora.model import load_base_encoder
    from knotwork.lora.tasks import TextTask, load_text_task
    from knotwork.lora.train import TrainConfig, train_adapter

    task = load_text_task(task_dir, splits=("train", "val"))
    if args.limit_train or args.limit_val:
        task = TextTask(task.name, task.label_names, {
            "train": task.splits["train"].subset(args.limit_train or None),
            "val": task.splits["val"].subset(args.limit_val or None)})
    config = TrainConfig(seed=seed)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    model, tokenizer, _ = load_base_encoder()
    res = train_adapter(model, tokenizer, task, config, baseline="probe")
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    del model
    return {"task": task.name, "seed": seed, "n_train": len(task.splits["train"]), "n_val": res.n_val,
            "threads": torch.get_num_threads(), "config": config.to_dict(),
            "limited": bool(args.limit_train or args.limit_val),
            "val_accuracy": res.val_accuracy, "baselines": res.baselines, "learned": res.learned,
            "beats_probe": res.beats_probe, "epochs": res.epochs, "best_epoch": res.best_epoch, "steps": res.steps,
            "best_step": res.best_step, "stopped_early": res.stopped_early,
            "history": res.history, "cpu_seconds": round(cpu, 1), "wall_seconds": round(wall, 1),
            "train_wall_seconds": round(res.seconds, 1)}


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def render(records: dict[str, dict], *, command: str) -> str:
    """The results page from the records."""
    from knotwork.lora.baselines import PROBE_L2
    from knotwork.lora.train import TrainConfig

    rows = sorted((r["data"] for r in records.values()), key=lambda d: (_task_order(d["task"]), d["seed"]))
    d = TrainConfig()
    smoke = any(r["limited"] for r in rows)
    extra = [
        f"- Defaults (`TrainConfig()`, the same as `knotwork lora train` with no options): up to {d.epochs} epochs, "
        f"early stopping with patience {d.patience} (evaluations on val after every epoch), the best epoch kept; "
        f"batch {d.batch_size}, AdamW lr {d.lr:g} (warm-up {d.warmup:.0%}, then linear decay), max length "
        f"{d.max_length} tokens, LoRA r = {d.lora.r}, α = {d.lora.alpha:g}, dropout {d.lora.dropout:g} on q/k/v/out "
        f"of all 6 layers, frozen label-phrase head with logit scale {d.logit_scale:g}.",
        f"- Baselines on the same val split: the majority class of train; a linear probe (multinomial logistic "
        f"regression, L-BFGS, L2 {PROBE_L2:g} per example on standardised features) on the frozen base encoder's "
        "mean-pooled embeddings; the zero-shot head (base model, no adapter).",
        "- Accuracies are on val, which also picks the best epoch (so the adapter's number is a little optimistic; "
        "the probe's L2 was also chosen on val). CPU s = process time of the whole unit (probe included), wall s "
        "likewise.",
    ]
    if smoke:
        extra.insert(0, "- **SMOKE RUN** (data cut with --limit-train/--limit-val): a check, not a result.")
    names = ", ".join(NAMES.get(t, t) for t in sorted({r["task"] for r in rows}, key=_task_order))
    text = _common.header(f"`knotwork lora train` with default settings: {names}", command=command,
                          script=__file__, records=records, data="../shared/data/text/{" + ",".join(
                              sorted({r["task"] for r in rows})) + "} (train, val)", extra=extra)
    lines = [text, "| task | seed | train | val | zero-shot | majority | probe | adapter | best epoch | epochs run "
             "| steps | CPU s | wall s | beats probe |", "|" + "---|" * 14]
    for r in rows:
        b = r["baselines"]
        lines.append(f"| {r['task']} | {r['seed']} | {r['n_train']} | {r['n_val']} | {_pct(b.get('zero_shot'))} | "
                     f"{_pct(b.get('majority'))} | {_pct(b.get('probe'))} | **{_pct(r['val_accuracy'])}** | "
                     f"{r['best_epoch']:.2f} | {r['epochs']:.2f}{' (stopped early)' if r['stopped_early'] else ''} | "
                     f"{r['steps']} | {r['cpu_seconds']:.0f} | {r['wall_seconds']:.0f} | "
                     f"{'yes' if r['beats_probe'] else '**no**'} |")
    lines += ["", "## Verdict per task", ""]
    for task in sorted({r["task"] for r in rows}, key=_task_order):
        mine = [r for r in rows if r["task"] == task]
        won = sum(bool(r["beats_probe"]) for r in mine)
        learned = sum(bool(r["learned"]) for r in mine)
        verdict = "beats probe" if won == len(mine) else f"does not beat the probe ({len(mine) - won} of {len(mine)} seeds)"
        lines.append(f"- **{task}**: {verdict}; beats the majority class in {learned} of {len(mine)} seeds.")
    lines += ["", "## Validation accuracy per evaluation", "",
              "Step 0 is the zero-shot base model; the row's best is bold in the table above.", ""]
    for r in rows:
        hist = ", ".join(f"{h['epoch']:g}: {_pct(h['val_accuracy'])}" for h in r["history"])
        lines.append(f"- {r['task']} seed {r['seed']} (epoch: val %): {hist}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import torch

    from knotwork._errors import check_positive_int

    args = parse_args(argv)
    for name in ("threads",):
        check_positive_int(getattr(args, name), "--" + name)
    for name in ("limit_train", "limit_val"):
        check_positive_int(getattr(args, name), "--" + name.replace("_", "-"), minimum=0)
    torch.set_num_threads(args.threads)
    dirs = {t: args.data / "text" / t for t in args.tasks}
    missing = [str(d) for d in dirs.values() if not d.is_dir()]
    if missing:
        print(f"error: task folder(s) not found: {', '.join(missing)}", file=sys.stderr)
        return 2
    done = _common.load_records(STUDY, root=args.records)
    for task, d in dirs.items():
        for seed in args.seeds:
            unit = _unit(task, seed)
            if unit in done:
                print(f"{unit}: record exists, skipped", file=sys.stderr)
                continue
            print(f"{unit}: training with the default settings", file=sys.stderr, flush=True)
            data = run_unit(d, seed, args)
            _common.write_record(STUDY, unit, data, script=__file__, root=args.records)
            print(f"{unit}: adapter {_pct(data['val_accuracy'])} vs probe {_pct(data['baselines'].get('probe'))} "
                  f"(epochs {data['epochs']:.2f}, {data['cpu_seconds']:.0f} CPU s)", file=sys.stderr, flush=True)
    records = {u: r for u, r in _common.load_records(STUDY, root=args.records).items()
               if r["data"]["task"] in dirs and r["data"]["seed"] in args.seeds}
    command = "python benchmarks/lora_train.py" + "".join(f" {shlex.quote(a)}" for a in (sys.argv[1:] if argv is None else argv))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    _common.write_atomic(args.out, render(records, command=command))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
