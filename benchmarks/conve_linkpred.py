"""ConvE alone on WN18RR and FB15k-237: filtered MRR and Hits@1/10 after the epochs a shared CPU allows.

Checkpoints (safetensors) are written after every epoch under --cache; rerunning resumes from the last one.

    python benchmarks/conve_linkpred.py --datasets wn18rr,fb15k237 --steps 200 --deadline 00:20 --out docs/results/jrrelp-conve.md
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
PAPER = {  # Dettmers et al. 2018, Table 3/4 (filtered, both sides)
    "wn18rr": {"mrr": 0.43, "hits@1": 0.40, "hits@10": 0.52, "epochs": "up to 1000 (early stopping)"},
    "fb15k237": {"mrr": 0.325, "hits@1": 0.237, "hits@10": 0.501, "epochs": "up to 1000 (early stopping)"},
}


def git_commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "src"], cwd=ROOT, capture_output=True, text=True)
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def run_dataset(name: str, data: Path, cache: Path, rounds: int, steps: int, valid_subset: int, deadline, log) -> dict:
    from safetensors.torch import load_model, save_model

    from knotwork.relations.jrrelp.io import load_triples, write_atomic
    from knotwork.relations.jrrelp.linkpred import (
        ConvE,
        ConvEConfig,
        evaluate_link_prediction,
        index_triples,
        train_conve,
    )

    triples = index_triples(*(load_triples(data / name / f"{s}.txt") for s in ("train", "valid", "test")))
    config = ConvEConfig(epochs=1, max_steps=steps)
    folder = cache / name
    folder.mkdir(parents=True, exist_ok=True)
    state_path = folder / "state.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {"rounds_done": 0, "curve": []}
    model = ConvE(triples.n_entities, 2 * triples.n_relations, dim=config.dim, width=config.width,
                  channels=config.channels)
    if state["rounds_done"]:
        load_model(model, folder / "model.safetensors")
    for rnd in range(state["rounds_done"] + 1, rounds + 1):
        if time.time() > deadline:
            log(f"{name}: deadline reached, stopping before round {rnd}")
            break
        # A round is `steps` batches on a fresh shuffle (seed = round) and a fresh Adam state, then a checkpoint.
        model, hist = train_conve(triples, ConvEConfig(epochs=1, max_steps=steps, seed=rnd), model=model)
        valid = evaluate_link_prediction(model, triples, "valid", max_triples=valid_subset, seed=0)
        h = hist[0]
        state["batches_per_epoch"] = h["batches_per_epoch"]
        seen = (state["curve"][-1]["batches_seen"] if state["curve"] else 0) + h["batches"]
        state["curve"].append({"round": rnd, "batches_seen": seen, "loss": h["loss"], "seconds": h["seconds"], **valid})
        state["rounds_done"] = rnd
        save_model(model, str(folder / "model.tmp.safetensors"))
        (folder / "model.tmp.safetensors").replace(folder / "model.safetensors")
        write_atomic(state_path, json.dumps(state, indent=2))
        log(f"{name} round {rnd}: loss {h['loss']:.5f} valid-subset MRR {valid['mrr']:.4f} ({h['seconds']:.0f}s)")
    if state["rounds_done"] and ("test" not in state or state.get("test_rounds") != state["rounds_done"]):
        t0 = time.perf_counter()
        state["test"] = evaluate_link_prediction(model, triples, "test")
        state["test_seconds"] = time.perf_counter() - t0
        state["test_rounds"] = state["rounds_done"]
        write_atomic(state_path, json.dumps(state, indent=2))
    state.update(n_entities=triples.n_entities, n_relations=triples.n_relations, n_train=len(triples.train),
                 config=config.to_dict())
    return state


def plot_curves(results: dict, path: Path) -> None:
    """Valid-subset MRR against epochs trained, one line per data set, next to the paper's final test MRR."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 3.0))
    for i, (name, st) in enumerate(results.items()):
        x = [c["batches_seen"] / st["batches_per_epoch"] for c in st["curve"]]
        ax.plot(x, [c["mrr"] for c in st["curve"]], marker="o", color=f"C{i}", label=f"{name} (ours, valid subset)")
        ax.axhline(PAPER[name]["mrr"], color=f"C{i}", ls="--", lw=1, label=f"{name} (paper, test)")
    ax.set_xlabel("epochs trained")
    ax.set_ylabel("filtered MRR")
    ax.legend(fontsize=7)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def _epochs(state: dict) -> float:
    return state["curve"][-1]["batches_seen"] / state["batches_per_epoch"]


def report(results: dict, command: str, steps: int, valid_subset: int, plot_name: str) -> str:
    from knotwork import __version__

    lines = [
        "# ConvE alone on WN18RR and FB15k-237 (the JRRELP link predictor, checked in isolation)",
        "",
        f"- Command: `{command}`",
        "- Data: `../shared/data/kg/{wn18rr,fb15k237}` (ConvE repository files; entities indexed over all splits).",
        f"- Package: knotwork {__version__}, git commit `{git_commit()}`.",
        f"- Machine: {platform.machine()} Linux, 2-core CPU **shared with about seven other jobs**, one torch thread, "
        f"Python {sys.version.split()[0]}. Seed: the round number (round k shuffles with seed k).",
        "- Model: ConvE as in the paper (200-d embeddings as 10x20 images, 32 3x3 filters, dropouts 0.2/0.2/0.3, "
        "Adam lr 0.003, batch 128, label smoothing 0.1, 1-N scoring, inverse triples).",
        f"- **Reduction: a few rounds of {steps} batches of 128 queries each, i.e. a fraction of one epoch or a few "
        "epochs at most** (the paper trains for up to 1,000 epochs with early stopping), one seed; the number of "
        "rounds was set by a wall-clock budget. Each round reshuffles and restarts Adam's moment estimates (a "
        f"checkpoint holds only the weights). Learning curve on a random {valid_subset}-triple subset of valid; the results table is "
        "the full test set, filtered, both sides (heads via inverse relations), ties counted half.",
        "",
        "| data | epochs trained | test MRR | Hits@1 | Hits@10 | MR | paper MRR | paper Hits@1 | paper Hits@10 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, st in results.items():
        t, p = st["test"], PAPER[name]
        lines.append(
            f"| {name} | {_epochs(st):.2f} | {t['mrr']:.3f} | {t['hits@1']:.3f} | {t['hits@10']:.3f} | "
            f"{t['mr']:.0f} | {p['mrr']} | {p['hits@1']} | {p['hits@10']} |"
        )
    lines += ["", "## Learning curves (valid subset, filtered)", "", f"![learning curves]({plot_name})", "",
              "| data | round | epochs trained | train loss | MRR | Hits@1 | Hits@10 | seconds/round |",
              "|---|---|---|---|---|---|---|---|"]
    for name, st in results.items():
        for c in st["curve"]:
            lines.append(f"| {name} | {c['round']} | {c['batches_seen'] / st['batches_per_epoch']:.2f} | "
                         f"{c['loss']:.5f} | {c['mrr']:.3f} | {c['hits@1']:.3f} | {c['hits@10']:.3f} | "
                         f"{c['seconds']:.0f} |")
    lines += ["", "## Reading", ""]
    for name, st in results.items():
        gap = PAPER[name]["mrr"] - st["test"]["mrr"]
        lines.append(
            f"- {name}: MRR {st['test']['mrr']:.3f} after {_epochs(st):.2f} epoch(s) vs the paper's "
            f"{PAPER[name]['mrr']} after full training, {gap:.3f} below it. This is a budget gap, not a claim that "
            "the implementation reaches the paper's figure; the learning curve shows whether it was still rising."
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    torch.set_num_threads(1)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "kg")
    parser.add_argument("--datasets", default="wn18rr,fb15k237")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--steps", type=int, default=200, help="batches per round")
    parser.add_argument("--deadline", default=None, help="UTC HH:MM after which no new round starts")
    parser.add_argument("--valid-subset", type=int, default=500)
    parser.add_argument("--cache", type=Path, default=ROOT / ".knotwork-cache" / "conve")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "jrrelp-conve.md")
    args = parser.parse_args(argv)
    names = args.datasets.split(",")
    for name in names:
        if name not in PAPER:
            parser.error(f"unknown dataset {name!r}; expected one of {sorted(PAPER)}")
        for split in ("train", "valid", "test"):
            if not (args.data / name / f"{split}.txt").is_file():
                parser.error(f"missing {args.data / name / f'{split}.txt'}")
    command = "python benchmarks/conve_linkpred.py " + " ".join(argv if argv is not None else sys.argv[1:])

    def log(msg: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)

    from knotwork.relations.jrrelp.io import write_atomic

    deadline = float("inf")
    if args.deadline:
        import datetime as dt

        hh, mm = map(int, args.deadline.split(":"))
        now = dt.datetime.now(dt.timezone.utc)
        target = now.replace(hour=hh, minute=mm, second=0, microsecond=0)
        if target < now:  # a time earlier than now means tomorrow
            target += dt.timedelta(days=1)
        deadline = target.timestamp()
    results = {}
    for name in names:
        results[name] = run_dataset(name, args.data, args.cache, args.rounds, args.steps, args.valid_subset,
                                    deadline, log)
        if results[name]["rounds_done"]:
            done = {k: v for k, v in results.items() if v["rounds_done"]}
            plot_curves(done, args.out.with_suffix(".png"))
            write_atomic(args.out, report(done, command, args.steps, args.valid_subset, args.out.with_suffix(".png").name))
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
