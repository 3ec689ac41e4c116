"""ConvE alone on WN18RR and FB15k-237: filtered MRR and Hits@1/10 after the epochs a shared CPU allows.

Training runs in rounds of --steps batches. After each round the study writes one result record per
(data set, round) under benchmarks/results/conve/ (valid-subset MRR, loss, time) and a weights checkpoint under
--cache; a rerun resumes after the last checkpoint. After the last round the full test set is scored (one more
record, `<data set>__test`) and the page is rewritten from the records.

    python benchmarks/conve_linkpred.py --datasets fb15k237 --steps 100 --rounds 19 --out docs/results/jrrelp-conve-fb15k237.md
    python benchmarks/conve_linkpred.py --datasets wn18rr --steps 100 --rounds 9 --out docs/results/jrrelp-conve-wn18rr.md
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
from _common import ROOT, header, load_records, write_atomic, write_record  # noqa: E402

STUDY = "conve"
PAPER = {  # Dettmers et al. 2018, Table 3/4 (filtered, both sides)
    "wn18rr": {"mrr": 0.43, "hits@1": 0.40, "hits@10": 0.52, "epochs": "up to 1000 (early stopping)"},
    "fb15k237": {"mrr": 0.325, "hits@1": 0.237, "hits@10": 0.501, "epochs": "up to 1000 (early stopping)"},
}


def round_unit(name: str, rnd: int) -> str:
    return f"{name}__round{rnd:03d}"


def _checkpoint_round(path: Path) -> int:
    """The round a checkpoint was written after (its safetensors metadata), or 0 when there is none."""
    if not path.is_file():
        return 0
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        return int((fh.metadata() or {}).get("round", 0))


def run_dataset(name: str, data: Path, cache: Path, args: argparse.Namespace, deadline: float, log) -> None:
    """Train `name` round by round from its last checkpoint; one record per round, then one for the test set."""
    from safetensors.torch import load_model, save

    from knotwork._io import write_scratch
    from knotwork.relations.jrrelp.io import load_triples
    from knotwork.relations.jrrelp.linkpred import (
        ConvE,
        ConvEConfig,
        evaluate_link_prediction,
        index_triples,
        train_conve,
    )

    # Entities of valid/test unseen in train are kept (ConvE's protocol: they keep random embeddings).
    triples = index_triples(*(load_triples(data / name / f"{s}.txt") for s in ("train", "valid", "test")))
    config = ConvEConfig(epochs=1, max_steps=args.steps, batch_size=args.batch_size)
    model = ConvE.from_config(triples.n_entities, 2 * triples.n_relations, config)
    checkpoint = cache / name / "model.safetensors"
    done = _checkpoint_round(checkpoint)
    last = load_records(STUDY).get(round_unit(name, done))
    if done and last is None:  # a checkpoint from another records folder: its curve is not here
        log(f"{name}: {checkpoint} has no record of its round {done} here; starting over")
        done = 0
    if done:
        load_model(model, str(checkpoint))
        log(f"{name}: resuming after round {done} ({checkpoint})")
    seen = last["data"]["batches_seen"] if done else 0
    sizes = {"n_entities": triples.n_entities, "n_relations": triples.n_relations, "n_train": len(triples.train),
             "config": config.to_dict(), "valid_subset": args.valid_subset}
    for rnd in range(done + 1, args.rounds + 1):
        if time.time() > deadline:
            log(f"{name}: deadline reached, stopping before round {rnd}")
            break
        # A round is `steps` batches on a fresh shuffle (seed = round) and a fresh Adam state, then a checkpoint.
        model, hist = train_conve(triples, ConvEConfig(epochs=1, max_steps=args.steps, batch_size=args.batch_size,
                                                       seed=rnd), model=model)
        valid = evaluate_link_prediction(model, triples, "valid", max_triples=args.valid_subset, seed=0)
        h = hist[0]
        seen += h["batches"]
        write_record(STUDY, round_unit(name, rnd), {
            "dataset": name, "round": rnd, "batches_seen": seen, "batches_per_epoch": h["batches_per_epoch"],
            "loss": h["loss"], "seconds": h["seconds"], **valid, **sizes,
        }, script=__file__)
        write_scratch(checkpoint, save(dict(model.state_dict()), metadata={"round": str(rnd)}))
        done = rnd
        log(f"{name} round {rnd}: loss {h['loss']:.5f} valid-subset MRR {valid['mrr']:.4f} ({h['seconds']:.0f}s)")
    test = load_records(STUDY).get(f"{name}__test")
    if done and (test is None or test["data"]["rounds"] != done or test["data"]["test_subset"] != args.test_subset):
        t0 = time.perf_counter()
        metrics = evaluate_link_prediction(model, triples, "test", max_triples=args.test_subset, seed=0)
        write_record(STUDY, f"{name}__test", {"dataset": name, "rounds": done, "test_subset": args.test_subset,
                                              "seconds": time.perf_counter() - t0, **metrics, **sizes},
                     script=__file__)


def collect(names: list[str]) -> dict[str, dict]:
    """Per data set: its round records (in order) and its test record, from benchmarks/results/conve/."""
    records = load_records(STUDY)
    out = {}
    for name in names:
        test = records.get(f"{name}__test")
        if test is None:
            continue
        curve = sorted((r["data"] for u, r in records.items() if u.startswith(f"{name}__round")),
                       key=lambda d: d["round"])
        curve = [c for c in curve if c["round"] <= test["data"]["rounds"]]
        units = {u: r for u, r in records.items() if u.startswith(f"{name}__")}
        out[name] = {"curve": curve, "test": test["data"], "records": units}
    return out


def plot_curves(results: dict, path: Path) -> None:
    """Valid-subset MRR against epochs trained, one line per data set, next to the paper's final test MRR."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from knotwork._io import write_scratch

    fig, ax = plt.subplots(figsize=(4.5, 3.0))
    for i, (name, st) in enumerate(results.items()):
        x = [c["batches_seen"] / c["batches_per_epoch"] for c in st["curve"]]
        ax.plot(x, [c["mrr"] for c in st["curve"]], marker="o", color=f"C{i}", label=f"{name} (ours, valid subset)")
        ax.axhline(PAPER[name]["mrr"], color=f"C{i}", ls="--", lw=1, label=f"{name} (paper, test)")
    ax.set_xlabel("epochs trained")
    ax.set_ylabel("filtered MRR")
    ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    write_scratch(path, buf.getvalue())


def _epochs(st: dict) -> float:
    last = st["curve"][-1]
    return last["batches_seen"] / last["batches_per_epoch"]


def report(results: dict, command: str, steps: int, valid_subset: int, plot_name: str) -> str:
    records = {u: r for st in results.values() for u, r in st["records"].items()}
    test_sizes = {st["test"]["n_triples"] for st in results.values()}
    lines = [
        header(
            "ConvE alone on WN18RR and FB15k-237 (the JRRELP link predictor, checked in isolation)",
            command=command, script=__file__, records=records,
            data=f"`../shared/data/kg/{{{','.join(results)}}}` (ConvE repository files; entities indexed over all "
            "splits, valid/test entities unseen in train kept with random embeddings, as in the ConvE code).",
            extra=[
                "- Seed: the round number (round k shuffles with seed k); one torch thread.",
                "- Model: ConvE as in the paper (200-d embeddings as 10x20 images, 32 3x3 filters, dropouts "
                "0.2/0.2/0.3, Adam lr 0.003, batch 128, label smoothing 0.1, 1-N scoring, inverse triples).",
                f"- **Reduction: a few rounds of {steps} batches of 128 queries each, i.e. a fraction of one epoch or "
                "a few epochs at most** (the paper trains for up to 1,000 epochs with early stopping), one seed; the "
                "number of rounds was set by a wall-clock budget. Each round reshuffles and restarts Adam's moment "
                f"estimates (a checkpoint holds only the weights). Learning curve on a random {valid_subset}-triple "
                "subset of valid; the results table is the test set"
                + (" (all of it)" if test_sizes and all(r["test"]["test_subset"] is None for r in results.values())
                   else f" ({', '.join(str(n) for n in sorted(test_sizes))} triples)")
                + ", filtered, both sides (heads via inverse relations), ties counted half.",
            ],
        ),
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
            lines.append(f"| {name} | {c['round']} | {c['batches_seen'] / c['batches_per_epoch']:.2f} | "
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


def _deadline(text: str | None) -> float:
    """UTC HH:MM as a timestamp (a time earlier than now means tomorrow); no deadline when None."""
    if not text:
        return float("inf")
    import datetime as dt

    hh, mm = map(int, text.split(":"))
    now = dt.datetime.now(dt.timezone.utc)
    target = now.replace(hour=hh, minute=mm, second=0, microsecond=0)
    if target < now:
        target += dt.timedelta(days=1)
    return target.timestamp()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "kg")
    parser.add_argument("--datasets", default="wn18rr,fb15k237")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--steps", type=int, default=200, help="batches per round")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--deadline", default=None, help="UTC HH:MM after which no new round starts")
    parser.add_argument("--valid-subset", type=int, default=500)
    parser.add_argument("--test-subset", type=int, default=None, help="score a random subset of test (default: all)")
    parser.add_argument("--cache", type=Path, default=ROOT / ".knotwork-cache" / "conve",
                        help="weights checkpoints (never committed)")
    parser.add_argument("--records", type=Path, default=None,
                        help=f"result records folder (default: {_common.RESULTS / STUDY})")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "jrrelp-conve.md")
    parser.add_argument("--report-only", action="store_true", help="rewrite the page from the records")
    args = parser.parse_args(argv)
    names = args.datasets.split(",")
    for name in names:
        if name not in PAPER:
            parser.error(f"unknown dataset {name!r}; expected one of {sorted(PAPER)}")
        for split in ("train", "valid", "test"):
            if not (args.data / name / f"{split}.txt").is_file():
                parser.error(f"missing {args.data / name / f'{split}.txt'}")
    for opt in ("rounds", "steps", "batch_size", "valid_subset", "test_subset"):
        value = getattr(args, opt)
        if value is not None and value < 1:
            parser.error(f"--{opt.replace('_', '-')} must be >= 1; got {value}")
    if args.records is not None:
        _common.RESULTS = args.records  # records of this run go there (the smoke test), not into the repository
    shown = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--report-only"]
    command = " ".join(["python benchmarks/conve_linkpred.py", *shown])
    import torch

    torch.set_num_threads(1)

    def log(msg: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)

    deadline = _deadline(args.deadline)
    if not args.report_only:
        for name in names:
            run_dataset(name, args.data, args.cache, args, deadline, log)
    results = collect(names)
    if not results:
        log("no data set has a test record yet; nothing to write")
        return
    plot = args.out.with_suffix(".png")
    plot_curves(results, plot)
    write_atomic(args.out, report(results, command, args.steps, args.valid_subset, plot.name))
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
