"""The Re-TACRED study on SemEval-2010 Task 8 (TACRED format): noise, detection, re-annotation, patch, retraining.

For each seed:
1. inject 20% realistic label noise into train + test (flips shaped by a model's confusions, half of each
   positive class's flips to/from no_relation);
2. detect it by confident learning on 5-fold out-of-fold probabilities over train + test;
3. run a simulated Re-TACRED re-annotation with the paper's protocol (``run_protocol``: hidden gold 1 in 5 from
   the dev split, 2 workers, then one more per round for sentences without agreement, up to 5; workers screened
   at > 80% gold accuracy; candidates = the cluster's relations + no_relation + wrong_type; ambiguous and
   wrong-type sentences removed) either on the flagged sentences only ("cl") or on every sentence ("all"), with
   40 workers of mixed accuracy;
4. apply the resulting patches and train / evaluate the simple RE model on noisy, cleaned and true labels;
5. re-evaluate five models of different strength on the noisy and the cleaned test labels.

The study exercises the re-annotation tools end to end; it cannot test the paper's findings: the noise is injected,
so relabelling raises F1 by construction, and random noise does not reorder models (the ranking finding is tested
on real TACRED models by benchmarks/retacred_models.py). The page says so.

Run:  python benchmarks/retacred_study.py --seeds 0 1 2 3 4
Each seed's result is one record in benchmarks/results/retacred_study/ (benchmarks/_common.write_record), so a
rerun resumes; the page docs/results/retacred.md is rendered from the records (``--render-only`` renders without
running). ``--max-examples``, ``--steps``, ``--folds`` and ``--bootstrap`` shrink the budget (the smoke test runs
it in seconds with ``--out`` and ``--records`` in a temporary folder).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
from _common import ROOT, header, load_records, write_atomic, write_record  # noqa: E402
from retacred_model import FEATURE_SETS, fit_predict_proba, out_of_fold_probs  # noqa: E402

from knotwork.relations import (  # noqa: E402
    apply_patch,
    detection_quality,
    find_label_issues,
    label_quality_scores,
    load_tacred,
    reevaluate,
    score,
    with_relations,
)
from knotwork.relations.annotation import round_to_patch, run_protocol  # noqa: E402
from knotwork.relations.crowd import DawidSkene, MajorityVote, fleiss_kappa, pairwise_agreement, rating_table  # noqa: E402
from knotwork.relations.scorer import confusion_matrix  # noqa: E402
from knotwork.relations.simulate import confusion_noise_weights, inject_label_noise, simulate_task_answers  # noqa: E402

log = logging.getLogger("retacred_study")
STUDY = "retacred_study"
DATA = ROOT.parent / "shared" / "data" / "re" / "semeval2010"
OUT = ROOT / "docs" / "results" / "retacred.md"
#: The full budget; the page's command names any option that differs from it.
BUDGET = {"max_examples": 0, "steps": 200, "folds": 5, "bootstrap": 300}
NOISE_RATE = 0.20
N_WORKERS = (24, 10, 6)  # good, mediocre, poor
ACCURACY_RANGES = ((0.85, 0.97), (0.60, 0.80), (0.30, 0.50))
BLOCK_AFTER = 5  # gold answers before a failing worker gets no more tasks
#: Records made under another annotation protocol are recomputed (2: supplement §E's up to 5 annotators, candidate
#: subsets, wrong_type re-asked; records without this key used 2-4 annotators and the relations seen in the data).
PROTOCOL = 2
#: SemEval-2010 Task 8's fixed inventory: 9 relations (direction folded into the argument order) + no_relation. The
#: candidates of the re-annotation come from it, not from the labels a (shrunk) split happens to carry.
RELATIONS = ("no_relation", "Cause-Effect", "Component-Whole", "Content-Container", "Entity-Destination",
             "Entity-Origin", "Instrument-Agency", "Member-Collection", "Message-Topic", "Product-Producer")


def load(max_examples: int = 0):
    """Train, dev and test splits and the label list; ``max_examples`` > 0 keeps that many train examples (and a
    quarter as many test and dev examples) for a tiny run."""
    train, dev, test = (load_tacred(DATA / f"{s}.json") for s in ("train", "dev", "test"))
    if max_examples:
        train, dev, test = train[:max_examples], dev[: max(max_examples // 4, 5)], test[: max(max_examples // 4, 5)]
    unknown = {ex.relation for ex in [*train, *dev, *test]} - set(RELATIONS)
    if unknown:
        raise SystemExit(f"{DATA}: relations {sorted(unknown)} are not SemEval-2010 Task 8 relations")
    return train, dev, test, list(RELATIONS)


def cached_record(unit: str, budget: dict, *, protocol: bool = False):
    """The data of ``unit``'s record when one exists for this budget (and, with ``protocol``, this annotation
    protocol), else None."""
    rec = load_records(STUDY).get(unit)
    if rec is None or rec["data"].get("budget") != budget:
        return None
    return None if protocol and rec["data"].get("protocol") != PROTOCOL else rec["data"]


def noise_weights(train, labels, budget: dict) -> np.ndarray:
    """Flip weights from out-of-fold confusions of the clean training labels (computed once, kept as a record)."""
    cached = cached_record("noise_weights", budget)
    if cached is not None:
        return np.asarray(cached["weights"])
    idx = {lab: i for i, lab in enumerate(labels)}
    y = np.array([idx[ex.relation] for ex in train])
    probs = out_of_fold_probs(train, y, len(labels), folds=budget["folds"], steps=budget["steps"], seed=1234)
    conf = confusion_matrix([labels[i] for i in y], [labels[i] for i in probs.argmax(1)], labels)
    w = confusion_noise_weights(conf, negative_index=0, negative_share=0.5)
    write_record(STUDY, "noise_weights", {"budget": budget, "labels": labels, "weights": w.tolist()}, script=__file__)
    return w


def workers(rng: np.random.Generator) -> pd.Series:
    acc, names = [], []
    for tier, (n, (lo, hi)) in enumerate(zip(N_WORKERS, ACCURACY_RANGES, strict=True)):
        acc += list(rng.uniform(lo, hi, n))
        names += [f"w{tier}{i:02d}" for i in range(n)]
    return pd.Series(acc, index=names)


def run_rounds(pending_examples, gold_examples, truth, pool: pd.Series, confusable, rng):
    """The paper's protocol (``run_protocol``) with simulated workers as the platform; blocked workers leave the pool."""

    def ask(tasks, *, n_workers, exclude, blocked):
        return simulate_task_answers(tasks, truth, pool.drop(index=list(blocked)), n_workers=n_workers, exclude=exclude,
                                     confusable=confusable, seed=rng)

    run = run_protocol(pending_examples, gold_examples, ask, relations=RELATIONS, block_after=BLOCK_AFTER, seed=rng)
    for rnd, h in run.history.groupby("round"):
        log.info("round %d: %d sentences asked, %s", rnd, len(h), h["status"].value_counts().to_dict())
    return run.answers, run.labels, run.screening


def aggregation_quality(answers: pd.DataFrame, res: pd.DataFrame, truth: dict, gold_ids: set) -> dict:
    items = answers[~answers["task"].isin(gold_ids)]
    ids = sorted(set(items["task"]))
    true = pd.Series({i: truth[i] for i in ids})
    resolved = res[res["status"].isin(["agreed", "majority"])]
    out = {
        "policy_accuracy": float((resolved["label"] == true.loc[resolved.index]).mean()),
        "policy_removed": float(res["status"].isin(["ambiguous", "wrong_type"]).mean()),
        "policy_wrong_type": float((res["status"] == "wrong_type").mean()),
        "max_answers": int(res["n_asked"].max()),
        "mv_accuracy": float((MajorityVote().fit_predict(items).loc[ids] == true).mean()),
        "ds_accuracy": float((DawidSkene().fit_predict(items).loc[ids] == true).mean()),
    }
    gold_answers = answers[answers["task"].isin(gold_ids)]
    gold_truth = pd.Series({i: truth[i] for i in set(gold_answers["task"])})
    ds_gold = DawidSkene().fit_predict(answers, true_labels=gold_truth)
    out["ds_gold_accuracy"] = float((ds_gold.loc[ids] == true).mean())
    first = items.groupby("task", sort=False).head(2)
    out["fleiss_kappa_round1"] = fleiss_kappa(rating_table(first, n_raters=2).to_numpy())
    out["pairwise_agreement_round1"] = pairwise_agreement(first)
    out["answers_per_sentence"] = len(items) / len(ids)
    out["gold_answers"] = int(len(gold_answers))
    out["n_sentences"] = len(ids)
    return out


def run_seed(seed: int, train, dev, test, labels, weights, budget: dict) -> dict:
    rng = np.random.default_rng(seed)
    idx = {lab: i for i, lab in enumerate(labels)}
    data = [*train, *test]
    y_true = np.array([idx[ex.relation] for ex in data])
    y_noisy, flipped = inject_label_noise(y_true, rate=NOISE_RATE, weights=weights, seed=rng)
    noisy = with_relations(data, [labels[i] for i in y_noisy])
    truth = {ex.id: ex.relation for ex in [*data, *dev]}

    t0 = time.time()
    probs = out_of_fold_probs(noisy, y_noisy, len(labels), folds=budget["folds"], steps=budget["steps"], seed=seed)
    mask = find_label_issues(y_noisy, probs)
    quality = label_quality_scores(y_noisy, probs)
    det = detection_quality(flipped, flagged=mask, scores=quality, at=(100, 500, 1000))
    log.info("seed %d: detection done in %.0fs (%d flagged)", seed, time.time() - t0, mask.sum())

    # Annotators confuse a relation with its two most frequent model confusions.
    confusable = {labels[i]: [labels[j] for j in np.argsort(-weights[i])[:2]] for i in range(len(labels))}
    pool = workers(rng)
    result: dict = {"seed": seed, "budget": budget, "protocol": PROTOCOL, "n_examples": len(data),
                    "n_flipped": int(flipped.sum()),
                    "detection": vars(det)}
    patched: dict[str, list] = {}
    for condition, chosen in (("cl", [noisy[i] for i in np.flatnonzero(mask)]), ("all", noisy)):
        answers, res, screening = run_rounds(chosen, dev, truth, pool, confusable, rng)
        agg = aggregation_quality(answers, res, truth, {ex.id for ex in dev})
        resolved = res[res["status"].isin(["agreed", "majority"])]
        removed = res.index[res["status"].isin(["ambiguous", "wrong_type"])]
        patch = round_to_patch(noisy, resolved["label"].to_dict(), remove=removed)
        cleaned = apply_patch(noisy, patch)
        kept = {ex.id for ex in cleaned}
        clean_map = {ex.id: ex.relation for ex in cleaned}
        still_wrong = sum(clean_map[i] != truth[i] for i in kept)
        agg.update(
            n_patched=len(patch.labels), patch_drops=patch.drop_missing, n_removed=len(data) - len(cleaned),
            label_error_rate_after=still_wrong / len(kept),
            workers_rejected=int((~screening["accepted"]).sum()),
        )
        result[f"annotation_{condition}"] = agg
        patched[condition] = cleaned
        log.info("seed %d: annotation %s: %s", seed, condition, agg)

    # Train on each label version (train split) and evaluate on each (test split, kept ids only).
    versions = {"noisy": noisy, "cleaned_cl": patched["cl"], "cleaned_all": patched["all"], "true": data}
    train_ids = {ex.id for ex in train}
    test_ids = [ex.id for ex in test]
    test_by_id = {ex.id: ex for ex in test}
    preds: dict[str, dict[str, str]] = {}
    for name, version_ in versions.items():
        tr = [ex for ex in version_ if ex.id in train_ids]
        p = fit_predict_proba(tr, np.array([idx[ex.relation] for ex in tr]), test, len(labels), steps=budget["steps"],
                              seed=seed)
        preds[name] = {i: labels[k] for i, k in zip(test_ids, p.argmax(1), strict=True)}
    f1 = {}
    for tr_name in versions:
        for ev_name, version_ in versions.items():
            gold = {ex.id: ex.relation for ex in version_ if ex.id in test_by_id}
            ids = sorted(gold)
            f1[f"{tr_name}->{ev_name}"] = score([gold[i] for i in ids], [preds[tr_name][i] for i in ids]).f1
    result["f1"] = f1
    result["train_sizes"] = {k: sum(ex.id in train_ids for ex in v) for k, v in versions.items()}
    result["test_sizes"] = {k: sum(ex.id in test_by_id for ex in v) for k, v in versions.items()}

    # Re-evaluation: the same predictions of five models (trained on noisy labels), noisy vs cleaned test labels.
    models = {}
    tr = [ex for ex in noisy if ex.id in train_ids]
    y_tr = np.array([idx[ex.relation] for ex in tr])
    for fs in FEATURE_SETS:
        p = preds["noisy"] if fs == "full" else None
        if p is None:
            probs_fs = fit_predict_proba(tr, y_tr, test, len(labels), feature_set=fs, steps=budget["steps"], seed=seed)
            p = {i: labels[k] for i, k in zip(test_ids, probs_fs.argmax(1), strict=True)}
        models[fs] = p
    before = {ex.id: ex.relation for ex in noisy if ex.id in test_by_id}
    reev = {}
    for after_name in ("cleaned_all", "true"):
        after = {ex.id: ex.relation for ex in versions[after_name] if ex.id in test_by_id}
        r = reevaluate(models, before, after, n_bootstrap=budget["bootstrap"], seed=seed)
        reev[after_name] = {
            "kendall_tau": r.kendall_tau,
            "n_flips": r.n_flips,
            "models": [vars(m) for m in r.models],
            "per_relation": {rel: v["full"] for rel, v in r.per_relation.items()},
        }
    result["reevaluation"] = reev
    return json.loads(json.dumps(result, default=float))  # as stored in a record: string keys, plain floats


def mean_sd(values) -> str:
    v = np.asarray(values, dtype=float)
    return f"{100 * v.mean():.1f} ± {100 * v.std(ddof=1):.1f}" if len(v) > 1 else f"{100 * v.mean():.1f}"


def p_at(det: list[dict], k: int) -> str:
    """Mean ± sd of precision@k over seeds ("–" when the run had fewer than k examples)."""
    values = [d["precision_at"].get(str(k)) for d in det]
    return "–" if None in values else mean_sd(values)


def ranking_sentence(results: list[dict]) -> str:
    """What the re-evaluation says about the paper's ranking finding, in plain words."""
    taus = [r["reevaluation"]["cleaned_all"]["kendall_tau"] for r in results]
    flips = sum(r["reevaluation"]["cleaned_all"]["n_flips"] for r in results)
    if flips == 0:
        ties = "" if min(taus) == 1.0 else "; below 1 only through tied scores"
        return (
            f"No pair of the five models changes order between noisy and cleaned test labels in any of "
            f"{len(taus)} seed(s) (Kendall τ = {np.mean(taus):.2f}{ties}). That is a **miss** of the paper's finding "
            "on this synthetic setup, not evidence that rankings are stable: noise injected at random lowers every "
            "model's score alike, so it leaves their order alone."
        )
    return (
        f"Kendall τ between the five models' rankings on noisy and cleaned test labels is {np.mean(taus):.2f} "
        f"(per seed {', '.join(f'{t:.2f}' for t in taus)}; {flips} pairwise flips in all). With random noise such "
        "flips come from models of nearly equal F1 trading places, not from the systematic relabelling the paper "
        "describes, so they do not reproduce its finding either."
    )


def render(results: list[dict], records: dict, command: str, sizes: dict, *, elapsed: float | None = None,
           missing=()) -> str:
    seeds = [r["seed"] for r in results]
    budget = results[0]["budget"]
    wall = f"wall time of this run {elapsed / 60:.1f} min" if elapsed is not None else "rendered from the records"
    data = (
        f"`../shared/data/re/semeval2010/` (SemEval-2010 Task 8 in TACRED format; train {sizes['train']:,}, dev "
        f"{sizes['dev']:,}, test {sizes['test']:,}; {sizes['labels']} labels). Train + test get the noise and the "
        "cleaning; dev is the pool of hidden gold sentences."
    )
    extra = [
        f"- Seeds: {seeds} (noise, folds, workers, task packing, model initialisation all derive from the seed); "
        f"{wall} (not a benchmark of speed).",
        "- Numbers are mean ± standard deviation over seeds, in percent.",
        *([f"- **PARTIAL:** seeds {list(missing)} did not finish; rerun `{command}` to resume (finished seeds are "
           "kept as records)."] if missing else []),
    ]
    lines = [
        header("Re-TACRED study on SemEval-2010 Task 8: noisy labels, detection, re-annotation, patch, retraining",
               command=command, script=__file__, records=records, data=data, extra=extra),
        "## What this study can and cannot show",
        "",
        "It is the end-to-end exercise of the re-annotation tools on real sentences at a realistic scale: detection, "
        "task building, a simulated platform, gold screening, the adaptive rounds, the patch, retraining and "
        "re-evaluation. Because the true labels are known, it can measure how well each step works: how many injected "
        "errors confident learning finds, how accurate the protocol's labels are, what they cost in answers per "
        "sentence, and how much label noise a patch leaves.",
        "",
        "It cannot test the paper's two findings:",
        "",
        f"- **\"Relabelling raises F1\" holds by construction.** The {NOISE_RATE:.0%} noise is injected into labels "
        "that were right, and the simulated workers are mostly right, so cleaned labels are closer to the truth and "
        "every model scores higher on them (§3, §4). The Re-TACRED gains (+13 to +16 F1) come from real "
        "annotation errors and definition changes; this study reproduces the mechanism, not the evidence.",
        "- **The ranking finding is not reproduced.** "
        f"{ranking_sentence(results)} The paper's second finding, that model rankings change across label versions, "
        "is tested on real relabelling in [retacred-models.md](retacred-models.md): there Kendall τ between the "
        "TACRED and Re-TACRED rankings of published TACRED models is 0.70 (the 49 TACREV models) and 0.73 (all 52), "
        "and no bootstrap interval reaches 1.",
        "",
        "## Setup (what is simulated, and what is reduced)",
        "",
        f"- **Noise:** exactly {NOISE_RATE:.0%} of train + test labels flipped. Flip targets follow out-of-fold "
        "confusions of the model on the clean train labels (+1 smoothing); for a positive relation half of its "
        "flips go to `no_relation`, `no_relation` flips to positives in proportion to the confusions. This mimics "
        "TACRED's error profile (swaps between confusable relations, and to/from no_relation) but not its "
        "definition change (`per:identity`), which no detector trained on the old labels can see.",
        f"- **Detector:** `find_label_issues` (confident learning, prune_by_noise_rate) on {budget['folds']}-fold out-of-fold "
        "probabilities of the model over train + test; AUC and precision@k rank by self-confidence.",
        "- **Model:** softmax regression over sparse binary features (sentence words, entity heads, words and "
        f"bigrams between the entities, entity order), {budget['steps']} full-batch Adam steps, L2 1e-4; a deliberately cheap "
        "stand-in for PA-LSTM/C-GCN/SpanBERT so the whole study runs in minutes on 2 shared cores.",
        f"- **Workers:** {sum(N_WORKERS)} simulated annotators: {N_WORKERS[0]} with accuracy U{ACCURACY_RANGES[0]}, "
        f"{N_WORKERS[1]} U{ACCURACY_RANGES[1]}, {N_WORKERS[2]} U{ACCURACY_RANGES[2]}; a wrong answer goes to one of "
        "the true relation's two most confusable relations with probability 0.7, else to any other choice.",
        "- **Protocol (paper §3.1–3.2, supplement §E; `run_protocol`):** tasks of 5 sentences of one type cluster, "
        "1 of them a hidden gold sentence from dev. Candidates = the type-compatible relations of the sentence's "
        "cluster + `no_relation` + `wrong_type`, at most 9 relations per question. SemEval has no entity types (every "
        "argument is `ENTITY`), so every sentence is in one cluster whose candidates are the task's fixed inventory "
        "of 9 relations: one question, one candidate subset. Round 1 asks 2 workers; a sentence without agreement "
        "gets a 3rd worker in round 2 and one more in each of rounds 3 and 4 (at most 5 answers); resolved = the "
        "top label has ≥ 2 votes and strictly more than any other (2–0, 2–1, 2–1–1, 2–1–1–1); no agreement after "
        "5 answers = ambiguous, removed as Re-TACRED v1.1 pruned such sentences. A sentence resolved to "
        "`wrong_type` is asked again with its cluster's next candidate subset; SemEval's cluster has one subset, so "
        "such a sentence (only ever a workers' mistake here: the true relation is always offered) is removed. "
        f"Workers are screened per cluster on gold: answers count while gold accuracy is above 80%; after "
        f"{BLOCK_AFTER} gold answers a worker at or below 80% gets no more tasks.",
        "- **Reductions vs the paper:** a different, smaller data set (SemEval, 10 labels) instead of licensed "
        "TACRED; simulated instead of real workers; no qualification test; a linear model instead of neural ones.",
        "",
    ]
    det = [r["detection"] for r in results]
    lines += [
        "## 1. Label-error detection (confident learning)",
        "",
        "| flipped labels | flagged | precision | recall | F1 | ROC AUC | P@100 | P@500 | P@1000 |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| {np.mean([r['n_flipped'] for r in results]):.0f} of {results[0]['n_examples']} "
        f"| {np.mean([d['n_flagged'] for d in det]):.0f} | {mean_sd([d['precision'] for d in det])} "
        f"| {mean_sd([d['recall'] for d in det])} | {mean_sd([d['f1'] for d in det])} | {mean_sd([d['auc'] for d in det])} "
        f"| {p_at(det, 100)} | {p_at(det, 500)} | {p_at(det, 1000)} |",
        "",
        "For comparison, the method note's crude detector on real TACRED (share of 49 models disagreeing with the "
        "gold) ranks Re-TACRED's changes with AUC 0.55–0.60 and P@500 ≈ 0.70; real TACRED errors are harder "
        "than injected ones, largely because half of them are the new `per:identity` definition.",
        "",
        "## 2. Simulated re-annotation and aggregation",
        "",
        "Accuracy of the final labels against the true labels on the re-annotated sentences (gold sentences excluded). "
        "*policy* = the adaptive protocol with gold screening (accuracy on the sentences it resolved; the rest are "
        "removed); MV / DS = majority vote / Dawid-Skene over all raw answers, no screening; DS+gold = Dawid-Skene "
        "with gold posteriors clamped.",
        "",
        "| sentences re-annotated | sentences | answers / sentence | round-1 Fleiss κ | round-1 agreement | policy acc. | removed | MV acc. | DS acc. | DS+gold acc. | label errors after patch |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for cond, title in (("cl", "flagged by CL"), ("all", "all (Re-TACRED)")):
        a = [r[f"annotation_{cond}"] for r in results]
        lines.append(
            f"| {title} | {np.mean([x['n_sentences'] for x in a]):.0f} | {np.mean([x['answers_per_sentence'] for x in a]):.2f} "
            f"| {np.mean([x['fleiss_kappa_round1'] for x in a]):.3f} | {mean_sd([x['pairwise_agreement_round1'] for x in a])} "
            f"| {mean_sd([x['policy_accuracy'] for x in a])} | {mean_sd([x['policy_removed'] for x in a])} "
            f"| {mean_sd([x['mv_accuracy'] for x in a])} | {mean_sd([x['ds_accuracy'] for x in a])} "
            f"| {mean_sd([x['ds_gold_accuracy'] for x in a])} | {mean_sd([x['label_error_rate_after'] for x in a])} |"
        )
    lines += [
        "",
        f"*removed* = ambiguous after 5 answers, or resolved to `wrong_type` "
        f"({mean_sd([r['annotation_all'].get('policy_wrong_type', 0.0) for r in results])}% of all sentences in the "
        "*all* condition). "
        f"Label error rate before any patch: {NOISE_RATE:.0%} (by construction). Paper: Fleiss κ 0.77 on Re-TACRED "
        "(0.54 on TACRED), mean agreement 82.3%, 2.2–2.5 annotations per sentence (note's estimate).",
        "",
        "## 3. Training and evaluating the RE model on each label version",
        "",
        "Micro F1 (official TACRED scorer, no_relation excluded) on the test split; rows = training labels, columns = "
        "test labels (patched versions evaluate on the sentences they kept).",
        "",
        "| train \\ test | noisy | cleaned (CL flagged) | cleaned (all) | true |",
        "|---|---|---|---|---|",
    ]
    names = ("noisy", "cleaned_cl", "cleaned_all", "true")
    pretty = {"noisy": "noisy", "cleaned_cl": "cleaned (CL flagged)", "cleaned_all": "cleaned (all)", "true": "true"}
    for tr in names:
        cells = [mean_sd([r["f1"][f"{tr}->{ev}"] for r in results]) for ev in names]
        lines.append(f"| {pretty[tr]} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Paper (real TACRED → Re-TACRED, models retrained on each): +13.2 (PA-LSTM), +14.0 (C-GCN), +15.6 (SpanBERT) F1. "
        "Our diagonal (train and test on the same version) plays that role here, but its gain is guaranteed: the "
        "noise was injected, so any reasonable cleaning raises F1. What the table can show is how much of the "
        "injected damage a patch repairs (cleaned vs true), not whether relabelling real data raises F1.",
        "",
        "## 4. Re-evaluation: the same five models on noisy vs cleaned test labels",
        "",
        "Five feature sets, all trained on the noisy train labels; the same predictions are scored on the noisy "
        "test labels and on the cleaned (all) labels. 95% paired-bootstrap intervals "
        f"({budget['bootstrap']} resamples) of one seed "
        f"(seed {results[0]['seed']}); τ and flips are mean over seeds.",
        "",
        "| model | F1 noisy | F1 cleaned (all) | Δ F1 | 95% CI of Δ |",
        "|---|---|---|---|---|",
    ]
    for i, m in enumerate(results[0]["reevaluation"]["cleaned_all"]["models"]):
        per_seed = [r["reevaluation"]["cleaned_all"]["models"][i] for r in results]
        lo, hi = m["ci_delta"]
        lines.append(
            f"| {m['model']} | {mean_sd([x['f1_before'] for x in per_seed])} | {mean_sd([x['f1_after'] for x in per_seed])} "
            f"| {mean_sd([x['delta'] for x in per_seed])} | [{100 * lo:.1f}, {100 * hi:.1f}] |"
        )
    for after in ("cleaned_all", "true"):
        taus = [r["reevaluation"][after]["kendall_tau"] for r in results]
        flips = [r["reevaluation"][after]["n_flips"] for r in results]
        lines.append("")
        lines.append(
            f"Kendall τ between the rankings on noisy and {after.replace('_', ' ')} test labels: "
            f"{np.mean(taus):.2f} (per seed {', '.join(f'{t:.2f}' for t in taus)}); pairwise rank flips: "
            f"{', '.join(str(f) for f in flips)} of 10."
        )
    rels = sorted(results[0]["reevaluation"]["cleaned_all"]["per_relation"])
    lines += [
        "",
        "Per-relation F1 of the `full` model, noisy → cleaned (all) test labels (mean over seeds):",
        "",
        "| relation | noisy | cleaned | Δ |",
        "|---|---|---|---|",
    ]
    for rel in rels:
        b = np.mean([r["reevaluation"]["cleaned_all"]["per_relation"][rel][0] for r in results])
        a = np.mean([r["reevaluation"]["cleaned_all"]["per_relation"][rel][1] for r in results])
        lines.append(f"| {rel} | {100 * b:.1f} | {100 * a:.1f} | {100 * (a - b):+.1f} |")
    lines += [
        "",
        f"{ranking_sentence(results)} The paper's ranking argument (PA-LSTM beats C-GCN on TACRED PER:PER, C-GCN "
        "wins every category on Re-TACRED) is about real relabelling, which is systematic (`per:identity`, the "
        "location refinements) and interacts with what each model learned; noise injected at random lowers every "
        "model's score alike. The finding is tested on real models in [retacred-models.md](retacred-models.md).",
        "",
    ]
    return "\n".join(lines)


def command_line(args: argparse.Namespace) -> str:
    """The command that makes this page: the seeds, and every budget option that differs from the full budget."""
    parts = ["python benchmarks/retacred_study.py --seeds", *map(str, args.seeds)]
    for key, full in BUDGET.items():
        if getattr(args, key) != full:
            parts += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    return " ".join(parts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--out", type=Path, default=OUT, help="The results page.")
    parser.add_argument("--records", type=Path, default=_common.RESULTS, help="Folder of the per-seed records.")
    parser.add_argument("--render-only", action="store_true", help="Write the page from the records; run nothing.")
    for key, full in BUDGET.items():
        parser.add_argument(f"--{key.replace('_', '-')}", type=int, default=full,
                            help=f"Budget (default {full}{', all' if key == 'max_examples' else ''}).")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)
    if not DATA.is_dir():
        raise SystemExit(f"data not found at {DATA}; see shared/data/README.md")
    _common.RESULTS = args.records  # write_record and load_records read it: a tiny run writes elsewhere
    budget = {key: getattr(args, key) for key in BUDGET}
    command = command_line(args)
    start = time.time()
    train, dev, test, labels = load(args.max_examples)
    sizes = {"train": len(train), "dev": len(dev), "test": len(test), "labels": len(labels)}
    results, missing = [], []
    weights = None
    for seed in args.seeds:
        res = cached_record(f"seed{seed}", budget, protocol=True)
        if res is None and not args.render_only:
            weights = noise_weights(train, labels, budget) if weights is None else weights
            res = run_seed(seed, train, dev, test, labels, weights, budget)
            write_record(STUDY, f"seed{seed}", res, script=__file__)
            log.info("seed %d written", seed)
        if res is None:
            missing.append(seed)
            continue
        results.append(res)
    if not results:
        raise SystemExit(f"no record of seeds {args.seeds} with this budget under {args.records / STUDY}")
    units = {f"seed{r['seed']}" for r in results}
    records = {u: rec for u, rec in load_records(STUDY).items() if u in units}
    elapsed = None if args.render_only else time.time() - start
    write_atomic(args.out, render(results, records, command, sizes, elapsed=elapsed, missing=missing))


if __name__ == "__main__":
    main()
