"""`knotwork relations score|reevaluate|find-issues`: score predictions, compare label versions, find label errors."""

from __future__ import annotations

import enum
from collections.abc import Iterable
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
    files: list[Path] = typer.Argument(
        ..., exists=True, dir_okay=False, metavar="FILES",
        help="Either BEFORE.json AFTER.json PRED... (two TACRED JSON label versions, predictions one label per line "
        "in BEFORE's order), or label-only predictions PRED... (.jsonl/.jsonl.gz with id, label_true, label_pred; "
        ".txt one label per line in the --order). The model is the file name without .gz/.jsonl/.txt.",
    ),
    patch: list[str] = typer.Option(
        [], "--patch", metavar="NAME=PATCH",
        help="Label-only predictions: a label version made by a patch applied to the original labels (label_true): "
        "a Re-TACRED {id: label} patch keeps only its ids, a TACREV [{id, relation}] patch relabels. Repeatable.",
    ),
    label_map: list[str] = typer.Option(
        [], "--label-map", metavar="NAME=MAP",
        help="Map predictions (and the original labels a version keeps) into version NAME's label set before "
        "scoring: MAP is 'retacred' (TACRED -> Re-TACRED renames and merges) or a JSON file {label: new label}.",
    ),
    drop_label: list[str] = typer.Option(
        [], "--drop-label", metavar="NAME=LABEL[,LABEL]",
        help="Also score version NAME without LABEL: gold and predicted LABEL count as no_relation, so the relation "
        "leaves the micro average (its examples stay, as negatives). Adds the version 'NAME without LABEL'.",
    ),
    order: Path | None = typer.Option(
        None, exists=True, dir_okay=False,
        help="Id order of .txt predictions: ids one per line, or a .jsonl(.gz) prediction file [default: the first "
        ".jsonl prediction file].",
    ),
    base: str = typer.Option("original", help="Name of the version with the original labels (label_true)."),
    labels: LabelSet | None = labels_option(LabelSet.auto, "Labels gold and predictions may use (as in score; "
                                            "a version with a --label-map uses auto over its gold labels and the map's targets).",
                                            "the version's gold labels"),
    label_file: Path | None = label_file_option(),
    n_bootstrap: int = typer.Option(1000, "--bootstrap", "--n-bootstrap",
                                    help="Paired bootstrap resamples for the intervals (0 = none)."),
    seed: int = typer.Option(0, help="Bootstrap seed."),
    top: int = typer.Option(5, help="Label-only predictions: list the models whose rank moves most (this many)."),
    json_out: str | None = json_option(),
    force: bool = force_option(),
) -> None:
    """Score models on several label versions: F1 with paired bootstrap CIs, mean shifts, Kendall's tau, rank moves."""
    inputs = paths(files, order, label_file, [Path(v.split("=", 1)[1]) for v in (*patch, *label_map) if "=" in v])
    check_json_out(json_out, inputs=inputs, force=force)
    check_positive_int(n_bootstrap, "--bootstrap/--n-bootstrap", minimum=0, error=RelationsError)
    check_positive_int(top, "--top", minimum=0, error=RelationsError)
    if files[0].suffix.lower() == ".json":
        extra = [name for name, given in (("--patch", patch), ("--label-map", label_map), ("--drop-label", drop_label),
                                          ("--order", order)) if given]
        if extra:
            raise RelationsError(f"{extra[0]} works with label-only predictions (.jsonl, .jsonl.gz, .txt), not with "
                                 f"TACRED JSON label versions ({files[0]})")
        _reevaluate_two(files, labels, label_file, n_bootstrap, seed, json_out, force, inputs)
    else:
        _reevaluate_label_only(files, patch, label_map, drop_label, order, base, labels, label_file, n_bootstrap,
                               seed, top, json_out, force, inputs)


def _reevaluate_two(files: list[Path], labels: LabelSet | None, label_file: Path | None, n_bootstrap: int, seed: int,
                    json_out: str | None, force: bool, inputs: list[Path]) -> None:
    """``reevaluate BEFORE.json AFTER.json PRED...``: two TACRED JSON versions, per-relation and per-category F1."""
    from knotwork._progress import progress_enabled
    from knotwork.relations.data import load_tacred
    from knotwork.relations.io import check_known_labels, load_predictions
    from knotwork.relations.labels import NEGATIVE_LABEL
    from knotwork.relations.reevaluate import reevaluate

    if len(files) < 3:
        raise RelationsError(f"{files[0]}: give BEFORE.json AFTER.json and at least one prediction file")
    before, after, predictions = files[0], files[1], files[2:]
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


def _mapped_label_set(gold: Iterable[str], targets: Iterable[str], negative_label: str) -> list[str]:
    """The labels of a version with a label map: TACRED's or Re-TACRED's when one covers its gold labels and the
    map's targets, else those that cover its gold labels (so a mistyped target is refused where it occurs)."""
    from knotwork.relations.labels import RETACRED_LABELS, TACRED_LABELS, covering_label_set

    gold = list(gold)
    seen = set(gold) | set(targets)
    for fixed in (TACRED_LABELS, RETACRED_LABELS):
        if seen <= set(fixed):
            return list(fixed)
    found = covering_label_set(gold)
    return found if negative_label in found else [negative_label, *found]


def _name_value(option: str, items: list[str]) -> dict[str, str]:
    """``NAME=VALUE`` options as a dict; a malformed or repeated NAME is refused."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise RelationsError(f"{option} {item!r}: expected NAME=VALUE")
        if name in out:
            raise RelationsError(f"{option} {item!r}: version {name!r} given twice")
        out[name] = value
    return out


def _reevaluate_label_only(files: list[Path], patch: list[str], label_map: list[str], drop_label: list[str],
                           order: Path | None, base: str, labels: LabelSet | None, label_file: Path | None,
                           n_bootstrap: int, seed: int, top: int, json_out: str | None, force: bool,
                           inputs: list[Path]) -> None:
    """``reevaluate PRED... --patch NAME=PATCH ...``: label-only predictions on the original and patched labels."""
    from knotwork._progress import progress_enabled
    from knotwork.relations.io import load_patch
    from knotwork.relations.label_files import is_jsonl, load_label_map, load_prediction_set
    from knotwork.relations.labelmaps import map_labels, patched_labels
    from knotwork.relations.labels import NEGATIVE_LABEL
    from knotwork.relations.reevaluate import LabelVersion, reevaluate_versions

    patches = _name_value("--patch", patch)
    maps = _name_value("--label-map", label_map)
    drops = _name_value("--drop-label", drop_label)
    if base in patches:
        raise RelationsError(f"--patch {base}=...: {base!r} names the original labels (--base); choose another name")
    for option, given in (("--label-map", maps), ("--drop-label", drops)):
        unknown = sorted(set(given) - {base, *patches})
        if unknown:
            raise RelationsError(f"{option} {unknown[0]}=...: no version {unknown[0]!r}; the versions are "
                                 f"{[base, *patches]}")
    if not any(is_jsonl(p) for p in files):
        raise RelationsError(f"{files[0]}: label-only re-evaluation needs at least one .jsonl(.gz) prediction file "
                             "(its ids and label_true are the original labels)")
    data = load_prediction_set(files, order=order)
    mappings = {name: load_label_map(spec) for name, spec in maps.items()}
    golds = {base: dict(zip(data.gold, map_labels(list(data.gold.values()), mappings.get(base)), strict=True))}
    sources = {base: str(files[0])}
    for name, path in patches.items():
        golds[name] = patched_labels(data.gold, load_patch(path), label_map=mappings.get(name), source=path)
        sources[name] = path
    versions: dict[str, LabelVersion] = {}
    for name, gold in golds.items():
        mapped = name in mappings
        if mapped and labels is not LabelSet.any:
            label_set = _mapped_label_set(gold.values(), mappings[name].values(), NEGATIVE_LABEL)
        else:
            label_set = _scoring_labels(labels, label_file, list(gold.values()), NEGATIVE_LABEL)
        versions[name] = LabelVersion(gold, mappings.get(name), labels=label_set, source=sources[name])
        if name in drops:
            ignored = frozenset(x.strip() for x in drops[name].split(",") if x.strip())
            versions[f"{name} without {drops[name]}"] = LabelVersion(gold, mappings.get(name), ignored, label_set,
                                                                     sources[name])
    result = reevaluate_versions(data.predictions, versions, n_bootstrap=n_bootstrap, seed=seed, sources=data.sources,
                                 progress=progress_enabled())
    first = result.versions[0]
    moves = {v: [vars(m) for m in result.rank_moves(first, v)[:top]] for v in result.versions[1:]}
    emit_json({**result.to_dict(), "rank_moves": moves}, json_out, inputs=inputs, force=force)
    if json_out == "-":
        return
    _print_versions(result, moves)


def _print_versions(result, moves: dict[str, list[dict]]) -> None:
    """The text summary of a label-only re-evaluation."""
    width = max(len(m) for m in result.models)
    typer.echo(f"{'model':<{width}}  " + "  ".join(f"{v:>24}" for v in result.versions))
    for model in result.models:
        cells = []
        for v in result.versions:
            est = result.f1_interval(model, v)
            cells.append(f"{100 * est.value:6.2f} [{100 * est.low:6.2f}, {100 * est.high:6.2f}]".rjust(24))
        typer.echo(f"{model:<{width}}  " + "  ".join(cells))
    level = f"{100 * result.ci:g}%"
    for v, n, pos in zip(result.versions, result.n_examples, result.n_positive, strict=True):
        est = result.mean_f1(v)
        typer.echo(f"{v}: {n} examples ({pos} positive); mean F1 {100 * est.value:.2f} "
                   f"[{100 * est.low:.2f}, {100 * est.high:.2f}]")
    for i, a in enumerate(result.versions):
        for b in result.versions[i + 1:]:
            shift, tau = result.mean_shift(a, b), result.kendall_tau(a, b)
            typer.echo(f"{a} -> {b}: mean shift {100 * shift.value:+.2f} [{100 * shift.low:+.2f}, {100 * shift.high:+.2f}]"
                       f"; Kendall tau {tau.value:.3f} [{tau.low:.3f}, {tau.high:.3f}]; rank flips {result.n_flips(a, b)}")
    typer.echo(f"(intervals: {level} paired bootstrap, {result.boot_f1.shape[0]} resamples)")
    for v, rows in moves.items():
        if rows:
            text = ", ".join(f"{r['model']} {r['rank_a']}->{r['rank_b']}" for r in rows)
            typer.echo(f"largest rank moves {result.versions[0]} -> {v}: {text}")


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
