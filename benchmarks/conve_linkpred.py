"""ConvE alone on WN18RR and FB15k-237: the learning curve (filtered MRR per epoch) against a relation-frequency
baseline and the paper's figures.

Training runs in rounds: one epoch each (or --steps batches, for smoke tests). After each round the study writes
one result record per (data set, round) under benchmarks/results/conve/ (valid MRR, loss, time) and a checkpoint
under --cache holding the weights *and* Adam's state, so a rerun resumes exactly where it stopped (round k
shuffles and draws dropout with seed k). The weights of the round with the best valid MRR are kept beside it.
After the last round the test set is scored with those best weights (record `<data set>__test`); the
relation-frequency baseline (`knotwork.relations.jrrelp.linkpred.RelationFrequency`: a tail's score is how often
it is a tail of the relation in training) is scored once (record `<data set>__frequency`). The page is rewritten
from the records. One heavy job at a time: data sets run one after the other.

    python benchmarks/conve_linkpred.py --datasets wn18rr --rounds 60 --out docs/results/jrrelp-conve-wn18rr.md
    python benchmarks/conve_linkpred.py --datasets fb15k237 --rounds 60 --out docs/results/jrrelp-conve-fb15k237.md
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
#: The parts of src/knotwork that compute this study's numbers (the records' ``code_used``).
PARTS = ("relations/jrrelp/linkpred.py", "relations/jrrelp/conve.py", "relations/jrrelp/io.py", "_*.py")
PAPER = {  # Dettmers et al. 2018, Table 3/4 (filtered, both sides)
    "wn18rr": {"mrr": 0.43, "hits@1": 0.40, "hits@10": 0.52, "epochs": "up to 1000 (early stopping)"},
    "fb15k237": {"mrr": 0.325, "hits@1": 0.237, "hits@10": 0.501, "epochs": "up to 1000 (early stopping)"},
}


def round_unit(name: str, rnd: int) -> str:
    return f"{name}__round{rnd:03d}"


def best_round(curve: list[dict]) -> tuple[float, int]:
    """(valid MRR, round) of the best round of ``curve``; the earliest round wins a tie, as in training, which
    replaces the kept weights only on a strictly better MRR."""
    mrr = max(c["mrr"] for c in curve)
    return mrr, min(c["round"] for c in curve if c["mrr"] == mrr)


def curve_of(name: str, records: dict) -> list[dict]:
    """The round records of data set ``name``, in round order."""
    return sorted((r["data"] for u, r in records.items() if u.startswith(f"{name}__round")), key=lambda d: d["round"])


def epochs_trained(c: dict) -> float:
    return c["batches_seen"] / c["batches_per_epoch"]


def summary(name: str, records: dict) -> dict | None:
    """What the JRRELP page shows of a data set: its curve, best round (MRR, round), test and baseline records
    (None when not written yet); None when no round has run."""
    curve = curve_of(name, records)
    if not curve:
        return None
    test, freq = records.get(f"{name}__test"), records.get(f"{name}__frequency")
    return {"curve": curve, "best": best_round(curve), "test": test["data"] if test else None,
            "frequency": freq["data"] if freq else None}


def _load_checkpoint(path: Path) -> dict | None:
    """The last round's checkpoint (weights, Adam state, round), or None; loaded with ``weights_only=True``."""
    import torch

    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


def run_dataset(name: str, data: Path, cache: Path, args: argparse.Namespace, deadline: float, log) -> None:
    """Train `name` round by round from its last checkpoint; one record per round, then the baseline and test."""
    import torch

    from knotwork.relations.jrrelp.io import load_triples
    from knotwork.relations.jrrelp.linkpred import (
        ConvE,
        ConvEConfig,
        RelationFrequency,
        evaluate_link_prediction,
        index_triples,
        train_conve,
    )

    # Entities of valid/test unseen in train are kept (ConvE's protocol: they keep random embeddings).
    triples = index_triples(*(load_triples(data / name / f"{s}.txt") for s in ("train", "valid", "test")))
    config = ConvEConfig(epochs=1, max_steps=args.steps, batch_size=args.batch_size)
    sizes = {"n_entities": triples.n_entities, "n_relations": triples.n_relations, "n_train": len(triples.train),
             "config": config.to_dict(), "valid_subset": args.valid_subset, "device": args.device,
             "threads": args.threads}
    code_used = _common.scoped_fingerprint(PARTS, __file__)
    records = load_records(STUDY)
    freq = records.get(f"{name}__frequency")
    if freq is None or any(freq["data"].get(k) != getattr(args, k) for k in ("test_subset", "valid_subset")):
        baseline = RelationFrequency(triples)
        valid = evaluate_link_prediction(baseline, triples, "valid", max_triples=args.valid_subset, seed=0)
        test = evaluate_link_prediction(baseline, triples, "test", max_triples=args.test_subset, seed=0)
        write_record(STUDY, f"{name}__frequency", {"dataset": name, "valid": valid, "test": test,
                                                   "test_subset": args.test_subset, **sizes}, script=__file__,
                     code_used=code_used)
        log(f"{name}: relation-frequency baseline valid MRR {valid['mrr']:.4f}, test MRR {test['mrr']:.4f}")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = ConvE.from_config(triples.n_entities, 2 * triples.n_relations, config).to(args.device)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    checkpoint, best_file = cache / name / "checkpoint.pt", cache / name / "best.pt"
    state = _load_checkpoint(checkpoint)
    done = int(state["round"]) if state else 0
    last = records.get(round_unit(name, done))
    if done and last is None:  # a checkpoint from another records folder: its curve is not here
        log(f"{name}: {checkpoint} has no record of its round {done} here; starting over")
        done, state = 0, None
    if state:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        log(f"{name}: resuming after round {done} ({checkpoint})")
    seen = last["data"]["batches_seen"] if done else 0
    best = best_round([c for c in curve_of(name, records) if c["round"] <= done]) if done else (-1.0, 0)
    for rnd in range(done + 1, args.rounds + 1):
        if time.time() > deadline:
            log(f"{name}: deadline reached, stopping before round {rnd}")
            break
        # Round k: one epoch (or --steps batches) on a shuffle with seed k; Adam's state carries over.
        model, hist = train_conve(triples, ConvEConfig(epochs=1, max_steps=args.steps, batch_size=args.batch_size,
                                                       seed=rnd), model=model, optimizer=opt, device=args.device)
        valid = evaluate_link_prediction(model, triples, "valid", max_triples=args.valid_subset, seed=0)
        h = hist[0]
        seen += h["batches"]
        write_record(STUDY, round_unit(name, rnd), {
            "dataset": name, "round": rnd, "batches_seen": seen, "batches_per_epoch": h["batches_per_epoch"],
            "loss": h["loss"], "seconds": h["seconds"], **valid, **sizes,
        }, script=__file__, code_used=code_used)
        if valid["mrr"] > best[0]:  # strictly: the earliest round keeps a tie (best_round)
            best = (valid["mrr"], rnd)
            _common.save_state(best_file, {"model": model.state_dict(), "round": rnd})
        _common.save_state(checkpoint, {"model": model.state_dict(), "optimizer": opt.state_dict(), "round": rnd})
        done = rnd
        log(f"{name} round {rnd}: loss {h['loss']:.5f} valid MRR {valid['mrr']:.4f} ({h['seconds']:.0f}s)")
    test = load_records(STUDY).get(f"{name}__test")
    want = {"rounds": done, "best_round": best[1], "test_subset": args.test_subset}
    if done and (test is None or any(test["data"].get(k) != v for k, v in want.items())):
        best_state = _load_checkpoint(best_file)
        if best_state is None or int(best_state["round"]) != best[1]:
            raise RuntimeError(f"{best_file} does not hold round {best[1]}, the best valid round; rerun from scratch")
        model.load_state_dict(best_state["model"])
        t0 = time.perf_counter()
        metrics = evaluate_link_prediction(model, triples, "test", max_triples=args.test_subset, seed=0)
        write_record(STUDY, f"{name}__test", {"dataset": name, **want, "seconds": time.perf_counter() - t0,
                                              **metrics, **sizes}, script=__file__, code_used=code_used)


def collect(names: list[str]) -> dict[str, dict]:
    """Per data set: its round records (in order), its test record and its baseline record."""
    records = load_records(STUDY)
    out = {}
    for name in names:
        test = records.get(f"{name}__test")
        if test is None:
            continue
        curve = [c for c in curve_of(name, records) if c["round"] <= test["data"]["rounds"]]
        units = {u: r for u, r in records.items() if u.startswith(f"{name}__")}
        freq = records.get(f"{name}__frequency")
        out[name] = {"curve": curve, "test": test["data"], "records": units,
                     "frequency": freq["data"] if freq else None}
    return out


def plot_curves(results: dict, path: Path) -> None:
    """Valid MRR against epochs trained per data set, with the frequency baseline and the paper's test MRR."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from knotwork._io import write_scratch

    fig, ax = plt.subplots(figsize=(5.0, 3.2))
    for i, (name, st) in enumerate(results.items()):
        x = [c["batches_seen"] / c["batches_per_epoch"] for c in st["curve"]]
        ax.plot(x, [c["mrr"] for c in st["curve"]], marker="o", ms=3, color=f"C{i}", label=f"{name}: ConvE (valid)")
        ax.axhline(PAPER[name]["mrr"], color=f"C{i}", ls="--", lw=1, label=f"{name}: paper (test)")
        if st["frequency"]:
            ax.axhline(st["frequency"]["valid"]["mrr"], color=f"C{i}", ls=":", lw=1,
                       label=f"{name}: relation frequency (valid)")
    ax.set_xlabel("epochs trained")
    ax.set_ylabel("filtered MRR")
    ax.legend(fontsize=6)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    write_scratch(path, buf.getvalue())


def report(results: dict, command: str, args: argparse.Namespace, plot_name: str) -> str:
    records = {u: r for st in results.values() for u, r in st["records"].items()}
    test_sizes = {st["test"]["n_triples"] for st in results.values()}
    full_epochs = args.steps is None
    # Threads and device as the round records state them (not this rendering process's settings).
    ran = sorted({(c.get("threads"), c.get("device")) for st in results.values() for c in st["curve"]}, key=str)
    ran_on = "; ".join(f"{t} torch thread(s), device `{d}`" for t, d in ran)
    lines = [
        header(
            "ConvE alone on WN18RR and FB15k-237 (the JRRELP link predictor, checked in isolation)",
            command=command, script=__file__, records=records,
            data=f"`../shared/data/kg/{{{','.join(results)}}}` (ConvE repository files; entities indexed over all "
            "splits, valid/test entities unseen in train kept with random embeddings, as in the ConvE code).",
            extra=[
                "- Seed: round k shuffles and draws dropout with seed k; initial weights from seed 0; "
                f"rounds run with {ran_on}.",
                "- Model: ConvE as in the paper (200-d embeddings as 10x20 images, 32 3x3 filters, dropouts "
                "0.2/0.2/0.3, Adam lr 0.003, batch 128, label smoothing 0.1, 1-N scoring, inverse triples).",
                ("- Training: one epoch per round, Adam's state carried across rounds through the checkpoint, "
                 if full_epochs else f"- **Reduction: rounds of {args.steps} batches (not full epochs)**, ")
                + f"{args.rounds} rounds at most (the paper: up to 1,000 epochs with early stopping); one seed. "
                f"Learning curve on {'a random ' + str(args.valid_subset) + '-triple subset of' if args.valid_subset else 'all of'}"
                " valid; the test set"
                + (" (all of it)" if all(r["test"]["test_subset"] is None for r in results.values())
                   else f" ({', '.join(str(n) for n in sorted(test_sizes))} triples)")
                + " is scored with the weights of the round with the best valid MRR. Filtered, both sides (heads "
                "via inverse relations), ties counted half.",
                "- Baseline: relation frequency (a tail's score is how often it is a tail of the query's relation in "
                "training; the head is ignored), ranked the same way.",
            ],
        ),
        *status_lines(results, args.rounds),
        "",
        "| data | epochs trained | best epoch (valid) | test MRR | Hits@1 | Hits@10 | MR | relation-frequency test "
        "MRR / Hits@1 / Hits@10 | paper MRR / Hits@1 / Hits@10 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, st in results.items():
        t, p, f = st["test"], PAPER[name], st["frequency"]
        best = next(c for c in st["curve"] if c["round"] == t["best_round"])
        freq = f"{f['test']['mrr']:.3f} / {f['test']['hits@1']:.3f} / {f['test']['hits@10']:.3f}" if f else "–"
        lines.append(
            f"| {name} | {epochs_trained(st['curve'][-1]):.2f} | {epochs_trained(best):.2f} | {t['mrr']:.3f} | {t['hits@1']:.3f} | "
            f"{t['hits@10']:.3f} | {t['mr']:.0f} | {freq} | {p['mrr']} / {p['hits@1']} / {p['hits@10']} |"
        )
    lines += ["", "## Learning curves (valid, filtered)", "", f"![learning curves]({plot_name})", "",
              "| data | round | epochs trained | train loss | MRR | Hits@1 | Hits@10 | seconds/round |",
              "|---|---|---|---|---|---|---|---|"]
    for name, st in results.items():
        for c in st["curve"]:
            lines.append(f"| {name} | {c['round']} | {epochs_trained(c):.2f} | {c['loss']:.5f} | {c['mrr']:.3f} | "
                         f"{c['hits@1']:.3f} | {c['hits@10']:.3f} | {c['seconds']:.0f} |")
    lines += ["", "## Reading", "",
              f"The curve's state compares the mean valid MRR of the last {WINDOW} rounds with that of the {WINDOW} "
              f"before: a change within ±{100 * PLATEAU:g} % of the earlier mean is a plateau.", ""]
    for name, st in results.items():
        t, f, curve = st["test"], st["frequency"], st["curve"]
        line = (f"- {name}: test MRR {t['mrr']:.3f} with the weights of round {t['best_round']}, after "
                f"{len(curve)} rounds ({epochs_trained(curve[-1]):.2f} epochs)"
                + (f", against {f['test']['mrr']:.3f} for the relation-frequency baseline" if f else "")
                + f" and the paper's {PAPER[name]['mrr']} after up to 1,000 epochs. The valid MRR is {trend(curve)}.")
        if f:
            above = above_baseline(curve, f["valid"]["mrr"])
            line += (f" It first exceeded the relation-frequency baseline's valid MRR ({f['valid']['mrr']:.3f}) in "
                     f"round {above['round']} ({epochs_trained(above):.2f} epochs)." if above else
                     f" It never exceeded the relation-frequency baseline's valid MRR ({f['valid']['mrr']:.3f}).")
        lines.append(line)
    return "\n".join(lines) + "\n"


def status_lines(results: dict, planned: int) -> list[str]:
    """One bold status line per data set: complete, or PARTIAL with the rounds run of those planned and the trend."""
    out = []
    for name, st in results.items():
        done = len(st["curve"])
        if done >= planned:
            out.append(f"**{name}: complete, {done} of {planned} planned rounds.**")
        else:
            out.append(f"**{name}: PARTIAL, {done} of {planned} planned rounds** (the run stopped at its deadline; "
                       f"the valid MRR is {trend(st['curve']).split(' (')[0]}). Checkpoints (weights and Adam state) "
                       "stay on the machine that made them, so a session on a new machine starts over from round 1 "
                       "and rewrites the round records.")
    return out


WINDOW, PLATEAU = 5, 0.01  # rounds per window; relative change of the mean valid MRR within which it is a plateau


def trend(curve: list[dict], window: int = WINDOW, tolerance: float = PLATEAU) -> str:
    """Still rising, at a plateau or falling: the mean valid MRR of the last ``window`` rounds against the
    ``window`` before, as words with the numbers."""
    if len(curve) < 2 * window:
        return (f"not judged: {len(curve)} round(s), fewer than the {2 * window} the comparison of the last {window} "
                f"with the {window} before needs")
    last, before = curve[-window:], curve[-2 * window:-window]
    now, then = (sum(c["mrr"] for c in part) / window for part in (last, before))
    change = (now - then) / then if then > 0 else float("inf") if now > 0 else 0.0
    state = "still rising" if change > tolerance else "falling" if change < -tolerance else "at a plateau"
    return (f"{state} (mean {now:.4f} over rounds {last[0]['round']}-{last[-1]['round']} against {then:.4f} over "
            f"rounds {before[0]['round']}-{before[-1]['round']}, {100 * change:+.1f} %)")


def above_baseline(curve: list[dict], baseline: float) -> dict | None:
    """The first round whose valid MRR exceeds the baseline's, or None."""
    return next((c for c in curve if c["mrr"] > baseline), None)


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
    parser.add_argument("--rounds", type=int, default=60, help="rounds (epochs) to train in all, resumable")
    parser.add_argument("--steps", type=int, default=None,
                        help="batches per round (default: a full epoch); a cap for smoke tests")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="cpu", help="cpu, or cuda when one is available")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the records state it)")
    parser.add_argument("--deadline", default=None, help="UTC HH:MM after which no new round starts")
    parser.add_argument("--valid-subset", type=int, default=None,
                        help="score a random subset of valid each round (default: all of it)")
    parser.add_argument("--test-subset", type=int, default=None, help="score a random subset of test (default: all)")
    parser.add_argument("--cache", type=Path, default=ROOT / ".knotwork-cache" / "conve",
                        help="checkpoints (weights and optimizer state; never committed)")
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
    for opt in ("rounds", "steps", "batch_size", "valid_subset", "test_subset", "threads"):
        value = getattr(args, opt)
        if value is not None and value < 1:
            parser.error(f"--{opt.replace('_', '-')} must be >= 1; got {value}")
    from knotwork.cli._app import resolve_device

    try:
        args.device = resolve_device(args.device)
    except Exception as err:  # noqa: BLE001 - a one-line refusal, as the CLI gives
        parser.error(str(err))
    if args.records is not None:
        _common.RESULTS = args.records  # records of this run go there (the smoke test), not into the repository
    shown = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--report-only"]
    command = " ".join(["python benchmarks/conve_linkpred.py", *shown])
    import torch

    torch.set_num_threads(args.threads)

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
    write_atomic(args.out, report(results, command, args, plot.name))
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
