"""`knotwork relations score|reevaluate|find-issues`: score predictions, compare label versions, find label errors."""

from __future__ import annotations

import enum
from pathlib import Path

import typer

from knotwork._errors import RelationsError, check_positive_int
from knotwork.cli._app import emit_json, force_option, json_option, out_option
from knotwork.cli.relations import relations_app
from knotwork.cli.relations._options import (
    LabelSet,
    check_json_out,
    label_file_option,
    labels_option,
    paths,
    resolve_label_set,
)


class FilterBy(str, enum.Enum):
    """How ``find_label_issues`` flags examples (its ``filter_by`` parameter)."""

    prune_by_noise_rate = "prune_by_noise_rate"
    prune_by_class = "prune_by_class"
    both = "both"
    confident_learning = "confident_learning"
    predicted_neq_given = "predicted_neq_given"


class RankedBy(str, enum.Enum):
    """The label quality score that orders the examples (``find_label_issues``'s ``return_indices_ranked_by``)."""

    self_confidence = "self_confidence"
    normalized_margin = "normalized_margin"
    confidence_weighted_entropy = "confidence_weighted_entropy"


def _scoring_labels(labels: LabelSet | None, label_file: Path | None, observed: list[str],
                    negative_label: str) -> list[str] | None:
    """The label set predictions are checked against (the negative label always belongs to it)."""
    label_set = resolve_label_set(labels, label_file, default=LabelSet.auto, observed=observed)
    if label_set is not None and negative_label not in label_set:
        label_set = [negative_label, *label_set]
    return label_set


@relations_app.command("score")
def score_cmd(
    gold: Path = typer.Argument(..., exists=True, dir_okay=False, help="TACRED JSON file (.json) or one label per line."),
    pred: Path = typer.Argument(..., exists=True, dir_okay=False, help="Predictions, one label per line, in GOLD's order."),
    labels: LabelSet | None = labels_option(LabelSet.auto, "Labels gold and predictions may use.", "the gold labels"),
    label_file: Path | None = label_file_option(),
    negative_label: str = typer.Option("no_relation", help="The label that never counts as a hit."),
    per_relation: bool = typer.Option(True, help="Show the per-relation table."),
    json_out: str | None = json_option(),
    force: bool = force_option(),
) -> None:
    """Score predictions exactly like the official TACRED scorer (micro P/R/F1 over positive relations)."""
    from knotwork.relations.io import check_known_labels, load_gold_labels, load_predictions
    from knotwork.relations.scorer import score_report

    inputs = paths(gold, pred, label_file)
    check_json_out(json_out, inputs=inputs, force=force)
    gold_labels, ids = load_gold_labels(gold)
    label_set = _scoring_labels(labels, label_file, gold_labels, negative_label)
    if label_set is not None:
        check_known_labels(gold_labels, label_set, source=gold, ids=ids, what="gold label")
    predicted = load_predictions(pred, len(gold_labels), labels=label_set, reference=gold)
    report = score_report(gold_labels, predicted, negative_label=negative_label, labels=label_set)
    emit_json(report.to_dict(), json_out, inputs=inputs, force=force)
    if json_out == "-":
        return
    if per_relation:
        width = max((len(r.relation) for r in report.per_relation), default=8)
        typer.echo(f"{'relation':<{width}}  {'P':>6} {'R':>6} {'F1':>6}  {'#gold':>6} {'#guess':>6}")
        for r in report.per_relation:
            if r.n_gold > 0:  # as the official script: only relations with gold examples
                typer.echo(
                    f"{r.relation:<{width}}  {100 * r.precision:6.2f} {100 * r.recall:6.2f} {100 * r.f1:6.2f}  "
                    f"{r.n_gold:6d} {r.n_guessed:6d}"
                )
        typer.echo("")
    m = report.micro
    typer.echo(f"Precision (micro): {100 * m.precision:.3f}%")
    typer.echo(f"   Recall (micro): {100 * m.recall:.3f}%")
    typer.echo(f"       F1 (micro): {100 * m.f1:.3f}%")


@relations_app.command("reevaluate")
def reevaluate_cmd(
    before: Path = typer.Argument(..., exists=True, dir_okay=False, help="TACRED JSON with the old labels."),
    after: Path = typer.Argument(..., exists=True, dir_okay=False, help="TACRED JSON with the new labels (may keep fewer ids)."),
    predictions: list[Path] = typer.Argument(
        ..., exists=True, dir_okay=False,
        help="One file per model, one label per line in BEFORE's order; the model is the file stem.",
    ),
    labels: LabelSet | None = labels_option(LabelSet.auto, "Labels gold and predictions may use (as in score).", "the gold labels"),
    label_file: Path | None = label_file_option(),
    n_bootstrap: int = typer.Option(1000, help="Paired bootstrap resamples for the intervals (0 = none)."),
    seed: int = typer.Option(0, help="Bootstrap seed."),
    json_out: str | None = json_option(),
    force: bool = force_option(),
) -> None:
    """Score several models on two label versions: F1 deltas with bootstrap CIs and Kendall's tau of the rankings."""
    from knotwork._progress import progress_enabled
    from knotwork.relations.data import load_tacred
    from knotwork.relations.io import check_known_labels, load_predictions
    from knotwork.relations.labels import NEGATIVE_LABEL
    from knotwork.relations.reevaluate import reevaluate

    inputs = paths(before, after, predictions, label_file)
    check_json_out(json_out, inputs=inputs, force=force)
    check_positive_int(n_bootstrap, "--n-bootstrap", minimum=0, error=RelationsError)
    stems: dict[str, Path] = {}
    for path in predictions:
        if path.stem in stems:
            raise RelationsError(f"{path}: two prediction files name the model {path.stem!r} (also {stems[path.stem]})")
        stems[path.stem] = path
    old, new = load_tacred(before), load_tacred(after)
    ids = [ex.id for ex in old]
    extra = sorted({ex.id for ex in new} - set(ids))
    if extra:
        raise RelationsError(f"{after}: {len(extra)} id(s) not in {before}, e.g. {extra[:3]}")
    label_set = _scoring_labels(labels, label_file, [ex.relation for ex in (*old, *new)], NEGATIVE_LABEL)
    if label_set is not None:
        for path, version in ((before, old), (after, new)):
            check_known_labels([ex.relation for ex in version], label_set, source=path, ids=[ex.id for ex in version],
                               what="gold label")
    preds = {
        path.stem: dict(zip(ids, load_predictions(path, len(ids), labels=label_set, reference=before), strict=True))
        for path in predictions
    }
    result = reevaluate(
        preds, {ex.id: ex.relation for ex in old}, {ex.id: ex.relation for ex in new}, n_bootstrap=n_bootstrap,
        seed=seed, progress=progress_enabled(),
    )
    emit_json(
        {"models": [vars(m) for m in result.models], "kendall_tau": result.kendall_tau, "n_flips": result.n_flips,
         "per_category": result.per_category, "per_relation": result.per_relation},
        json_out, inputs=inputs, force=force,
    )
    if json_out == "-":
        return
    typer.echo(f"{'model':<20} {'F1 before':>9} {'F1 after':>9} {'delta':>7}  95% CI of delta")
    for m in result.models:
        typer.echo(
            f"{m.model:<20} {100 * m.f1_before:9.2f} {100 * m.f1_after:9.2f} {100 * m.delta:+7.2f}  "
            f"[{100 * m.ci_delta[0]:+.2f}, {100 * m.ci_delta[1]:+.2f}]"
        )
    typer.echo(f"Kendall tau between rankings: {result.kendall_tau:.3f}; pairwise rank flips: {result.n_flips}")


@relations_app.command("find-issues")
def find_issues_cmd(
    data: Path = typer.Argument(..., exists=True, dir_okay=False, help="TACRED JSON with the given labels."),
    probs: Path = typer.Argument(
        ..., exists=True, dir_okay=False, help=".npy of out-of-fold probabilities, shape (n, K), rows in DATA's order."
    ),
    out: Path = out_option("CSV of examples ranked from most to least likely mislabelled."),
    labels: LabelSet | None = labels_option(LabelSet.auto, "Column order of PROBS (any is refused).", "DATA's labels"),
    label_file: Path | None = label_file_option(),
    filter_by: FilterBy = typer.Option(FilterBy.prune_by_noise_rate, case_sensitive=False,
                                       help="Which filter flags examples (cleanlab's filter_by)."),
    ranked_by: RankedBy = typer.Option(RankedBy.self_confidence, case_sensitive=False,
                                       help="The quality score that ranks examples and fills the quality column."),
    all_examples: bool = typer.Option(False, "--all", help="List every example, not only flagged ones."),
    force: bool = force_option(),
) -> None:
    """Find likely label errors by confident learning and rank them (with the model's suggested label)."""
    import numpy as np
    import pandas as pd

    from knotwork._io import check_output, write_text
    from knotwork.relations.data import load_tacred
    from knotwork.relations.io import check_known_labels, load_pred_probs
    from knotwork.relations.issues import find_label_issues, label_quality_scores, rank_label_issues

    inputs = paths(data, probs, label_file)
    check_output(out, inputs=inputs, force=force, folder=False)
    if labels is LabelSet.any:
        raise RelationsError("--labels any gives no column order for PROBS; use auto, tacred, retacred or --label-file")
    examples = load_tacred(data)
    ids = [ex.id for ex in examples]
    label_set = resolve_label_set(labels, label_file, default=LabelSet.auto, observed=[ex.relation for ex in examples])
    check_known_labels([ex.relation for ex in examples], label_set, source=data, ids=ids, what="relation")
    p = load_pred_probs(probs, n_classes=len(label_set), ids=ids)
    index = {lab: i for i, lab in enumerate(label_set)}
    y = np.array([index[ex.relation] for ex in examples], dtype=np.int64)
    mask = find_label_issues(y, p, filter_by=filter_by.value)
    order = rank_label_issues(y, p, method=ranked_by.value, mask=None if all_examples else mask)
    quality = label_quality_scores(y, p, method=ranked_by.value)
    table = pd.DataFrame(
        {
            "id": [ids[i] for i in order],
            "given": [examples[i].relation for i in order],
            "suggested": [label_set[int(p[i].argmax())] for i in order],
            "quality": quality[order],
            "flagged": mask[order],
        }
    )
    write_text(out, table.to_csv(index=False), inputs=inputs, force=force,
               report={"labels": label_set, "filter_by": filter_by.value, "ranked_by": ranked_by.value})
    typer.echo(f"{int(mask.sum())} of {len(examples)} examples flagged ({100 * mask.mean():.1f}%) -> {out}")
