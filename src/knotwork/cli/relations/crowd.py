"""`knotwork relations annotate|aggregate`: a Re-TACRED-style crowd re-annotation round, out and back in."""

from __future__ import annotations

import enum
import json
from pathlib import Path

import typer

from knotwork._errors import RelationsError, check_positive_int
from knotwork.cli._app import force_option, out_option
from knotwork.cli.relations import relations_app
from knotwork.cli.relations._options import (
    LabelSet,
    label_file_option,
    labels_option,
    paths,
    resolve_label_set,
)


class Method(str, enum.Enum):
    """The aggregator for the final labels (keys of ``knotwork.relations.crowd.AGGREGATORS``)."""

    majority_vote = "majority-vote"
    dawid_skene = "dawid-skene"


@relations_app.command("annotate")
def annotate_cmd(
    data: Path = typer.Argument(..., exists=True, dir_okay=False, help="TACRED JSON with the sentences to annotate."),
    gold: Path = typer.Argument(..., exists=True, dir_okay=False, help="TACRED JSON with hand-labelled control sentences."),
    out: Path = out_option("Folder for tasks.csv (platform input) and gold_key.json (kept private)."),
    ids: Path | None = typer.Option(
        None, exists=True, dir_okay=False, help="Only annotate these ids (one per line), e.g. from find-issues."
    ),
    stage: int = typer.Option(
        0, help="Which subset of a group's candidate relations to ask (0 first; sentences aggregate lists in "
        "next_stage.txt, resolved to wrong_type, go to the next)."
    ),
    labels: LabelSet | None = labels_option(
        LabelSet.auto, "The label set the candidate relations come from.", "the labels of DATA and GOLD"
    ),
    label_file: Path | None = label_file_option(),
    items_per_task: int = typer.Option(5, help="Sentences per task, gold included."),
    gold_per_task: int = typer.Option(1, help="Hidden gold sentences per task."),
    max_choices: int = typer.Option(9, help="At most this many relations per question (plus no_relation and wrong_type)."),
    seed: int = typer.Option(0, help="Seed for packing sentences and placing gold."),
    force: bool = force_option(),
) -> None:
    """Build crowd tasks the Re-TACRED way and export them as a platform CSV (one row per task).

    Each question offers the type-compatible relations of the sentence's type cluster (at most --max-choices per
    subset), no_relation and wrong_type.
    """
    import pandas as pd

    from knotwork._io import atomic_dir, check_output
    from knotwork.relations.annotation import build_tasks, tasks_to_rows
    from knotwork.relations.data import load_tacred
    from knotwork.relations.io import read_label_lines

    inputs = paths(data, gold, ids, label_file)
    check_output(out, inputs=inputs, force=force, folder=True)
    check_positive_int(stage, "--stage", minimum=0, error=RelationsError)
    check_positive_int(items_per_task, "--items-per-task", error=RelationsError)
    check_positive_int(gold_per_task, "--gold-per-task", minimum=0, error=RelationsError)
    check_positive_int(max_choices, "--max-choices", error=RelationsError)
    if gold_per_task >= items_per_task:
        raise RelationsError(f"--gold-per-task {gold_per_task} leaves no sentence to annotate in --items-per-task {items_per_task}")
    examples, gold_examples = load_tacred(data), load_tacred(gold)
    relations = resolve_label_set(
        labels, label_file, default=LabelSet.auto, observed=[ex.relation for ex in [*examples, *gold_examples]]
    )
    if relations is None:
        raise RelationsError("--labels any gives no candidate relations; pass a label set (--labels or --label-file)")
    if ids is not None:
        wanted = read_label_lines(ids)
        if not wanted:
            raise RelationsError(f"{ids}: no ids; give at least one sentence id to annotate")
        known = {ex.id for ex in examples}
        unknown = [i for i in wanted if i not in known]
        if unknown:
            raise RelationsError(f"{ids}: {len(unknown)} id(s) not in {data}, e.g. {unknown[:3]}")
        keep = set(wanted)
        examples = [ex for ex in examples if ex.id in keep]
    if not examples:
        raise RelationsError(f"{data}: no sentence to annotate")
    try:
        tasks = build_tasks(
            examples, gold_examples, relations=relations, stage=stage, items_per_task=items_per_task,
            gold_per_task=gold_per_task, max_choices=max_choices, seed=seed,
        )
    except RelationsError as err:  # a group without usable gold, or ids both to annotate and gold: GOLD is at fault
        raise RelationsError(f"{gold}: {err}") from None
    gold_labels = {g.id: g.relation for g in gold_examples}
    key = {it.example_id: gold_labels[it.example_id] for t in tasks for it in t.items if it.is_gold}
    report = {"stage": stage, "items_per_task": items_per_task, "gold_per_task": gold_per_task,
              "max_choices": max_choices, "seed": seed, "n_labels": len(relations)}
    with atomic_dir(out, inputs=inputs, force=force, report=report) as tmp:
        (tmp / "tasks.csv").write_text(pd.DataFrame(tasks_to_rows(tasks)).to_csv(index=False), encoding="utf-8")
        (tmp / "gold_key.json").write_text(json.dumps(key, indent=0), encoding="utf-8")
    typer.echo(f"{len(tasks)} tasks for {len(examples)} sentences ({len(key)} distinct gold sentences) -> {out / 'tasks.csv'}")


@relations_app.command("aggregate")
def aggregate_cmd(
    answers: Path = typer.Argument(
        ..., exists=True, dir_okay=False,
        help="Platform results CSV (MTurk layout) or a long CSV with task, worker, label [, stage]: every round so far.",
    ),
    data: Path = typer.Argument(..., exists=True, dir_okay=False, help="The TACRED JSON the sentences come from."),
    out: Path = out_option("Folder for labels.csv, workers.csv, needs_more.txt, next_stage.txt and patch.json."),
    gold_key: Path | None = typer.Option(
        None, exists=True, dir_okay=False, help="gold_key.json from annotate; enables worker screening."
    ),
    labels: LabelSet | None = labels_option(
        LabelSet.auto, "Answers a worker may give (wrong_type is always allowed), and the candidate relations "
        "(as in annotate).", "the labels of DATA and the gold key"
    ),
    label_file: Path | None = label_file_option(),
    method: Method = typer.Option(Method.majority_vote, case_sensitive=False, help="Aggregator for the final labels."),
    min_accuracy: float = typer.Option(0.8, help="Keep workers whose gold accuracy is above this (in [0, 1])."),
    max_annotators: int = typer.Option(
        5, help="A sentence still without agreement after this many answers in one stage (2 in round 1, one more in "
        "each of rounds 2-4) is ambiguous and removed by the patch."
    ),
    max_choices: int = typer.Option(9, help="As given to annotate: how a group's candidates were split into subsets."),
    force: bool = force_option(),
) -> None:
    """Screen workers on gold, adjudicate (2 annotators, one more per round up to 5), route wrong_type, emit a patch."""
    import math

    from knotwork._io import atomic_dir, check_output
    from knotwork.relations.annotation import (
        WRONG_TYPE,
        adjudicate,
        annotation_group,
        candidate_relations,
        filter_answers,
        round_to_patch,
        screen_workers,
        stage_choices,
    )
    from knotwork.relations.crowd import AGGREGATORS, fleiss_kappa, pairwise_agreement, rating_table
    from knotwork.relations.data import load_tacred
    from knotwork.relations.io import (
        check_known_labels,
        dump_label_lines,
        dump_patch,
        load_answers,
        load_gold_key,
    )
    from knotwork.relations.labels import covering_label_set

    inputs = paths(answers, data, gold_key, label_file)
    check_output(out, inputs=inputs, force=force, folder=True)
    if not (math.isfinite(min_accuracy) and 0.0 <= min_accuracy <= 1.0):
        raise RelationsError(f"--min-accuracy must be in [0, 1], got {min_accuracy}")
    check_positive_int(max_annotators, "--max-annotators", minimum=2, error=RelationsError)
    check_positive_int(max_choices, "--max-choices", error=RelationsError)
    examples = load_tacred(data)
    gold = load_gold_key(gold_key) if gold_key is not None else {}
    observed = [*(ex.relation for ex in examples), *gold.values()]
    label_set = resolve_label_set(labels, label_file, default=LabelSet.auto, observed=observed)
    if label_set is not None and gold_key is not None:
        check_known_labels(list(gold.values()), label_set, source=gold_key, ids=list(gold), what="gold relation")
    allowed = None if label_set is None else [*label_set, WRONG_TYPE]
    long = load_answers(answers, labels=allowed, gold=gold)
    known = {ex.id for ex in examples} | set(gold)
    unknown = sorted(set(long["task"]) - known)
    if unknown:
        raise RelationsError(f"{answers}: {len(unknown)} answered id(s) are neither in {data} nor gold, e.g. {unknown[:3]}")
    if gold:
        screening = screen_workers(long, gold, min_accuracy=min_accuracy)
        kept = filter_answers(long, screening, gold=gold)
    else:
        screening = long.groupby("worker").size().rename("n_answers").to_frame().assign(accepted=True)
        kept = long
    if kept.empty:
        raise RelationsError(f"{answers}: no answers left after screening; check --min-accuracy and the gold key")
    group_of = {ex.id: annotation_group(ex) for ex in examples}
    candidates = candidate_relations(examples, label_set if label_set is not None else covering_label_set(observed))
    n_stages = {g: len(stage_choices(c, max_choices=max_choices)) for g, c in candidates.items()}
    asked = long[~long["task"].isin(gold)]
    try:
        res = adjudicate(kept.assign(group=kept["task"].map(group_of)), n_stages,
                         asked=asked.assign(group=asked["task"].map(group_of)), max_annotators=max_annotators)
    except RelationsError as err:
        raise RelationsError(f"{answers}: {err}") from None
    final = kept[kept["stage"].to_numpy() == res["stage"].reindex(kept["task"]).to_numpy()]
    settled = res["status"].isin(["agreed", "majority"])
    if method is not Method.majority_vote:
        agg = AGGREGATORS[method.value]().fit_predict(final[["task", "worker", "label"]])
        ok = settled & res.index.isin(agg.index)
        res.loc[ok, "label"] = agg.reindex(res.index[ok]).to_numpy()
    resolved = res[settled & (res["label"] != WRONG_TYPE)]
    removed = res.index[res["status"].isin(["ambiguous", "wrong_type"])]
    patch = round_to_patch(examples, resolved["label"].to_dict(), remove=removed)
    needs_more = list(res.index[res["status"] == "needs_more"])
    next_stage = list(res.index[res["status"] == "next_stage"])
    report = {"method": method.value, "min_accuracy": min_accuracy, "max_annotators": max_annotators,
              "max_choices": max_choices, "screened": bool(gold)}
    with atomic_dir(out, inputs=inputs, force=force, report=report) as tmp:
        (tmp / "labels.csv").write_text(res.rename_axis("id").to_csv(), encoding="utf-8")
        (tmp / "workers.csv").write_text(screening.to_csv(), encoding="utf-8")
        (tmp / "needs_more.txt").write_text(dump_label_lines(needs_more), encoding="utf-8")
        (tmp / "next_stage.txt").write_text(dump_label_lines(next_stage), encoding="utf-8")
        (tmp / "patch.json").write_text(dump_patch(patch), encoding="utf-8")
    table = rating_table(final, n_raters=2)
    typer.echo(f"{len(res)} sentences: {res['status'].value_counts().to_dict()}")
    if len(table):
        typer.echo(f"first-two-answers Fleiss' kappa {fleiss_kappa(table.to_numpy()):.3f}, "
                   f"agreement {pairwise_agreement(final):.3f}")
    if not gold:
        typer.echo("no --gold-key: workers were not screened")
    typer.echo(f"{int((~screening['accepted']).sum())} worker(s) rejected; {len(needs_more)} sentence(s) need one more "
               f"annotator (needs_more.txt); {len(next_stage)} answered wrong_type go to the next candidate subset "
               "(next_stage.txt)")
    kind = "filter+relabel" if patch.drop_missing else "relabel"
    typer.echo(f"patch with {len(patch.labels)} entries ({kind}) -> {out / 'patch.json'}")
