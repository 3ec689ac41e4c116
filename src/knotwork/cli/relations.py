"""CLI commands for `knotwork relations ...` (data, scoring, patches, re-annotation, label errors, re-evaluation).

Each command parses options, calls library functions from :mod:`knotwork.relations`, writes its outputs
atomically (refusing to overwrite without ``--force``) and prints a short summary. Heavy modules are imported
inside the commands so that ``knotwork --help`` stays instant.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from knotwork.cli._app import app, bench_app  # noqa: F401

relations_app = typer.Typer(help="Relation-extraction data quality (Re-TACRED) and JRRELP training.", no_args_is_help=True)
app.add_typer(relations_app, name="relations")

_SPLITS = ("train", "dev", "test")


def _fail(message: str) -> None:
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(code=2)


def _label_set(spec: str, gold: list[str] | None = None) -> list[str] | None:
    """Resolve --labels: tacred, retacred, a file with one label per line, 'any', or 'auto' (a fixed set that covers gold)."""
    from knotwork.relations.io import read_label_lines
    from knotwork.relations.labels import RETACRED_LABELS, TACRED_LABELS

    if spec == "tacred":
        return list(TACRED_LABELS)
    if spec == "retacred":
        return list(RETACRED_LABELS)
    if spec == "any":
        return None
    if spec == "auto":
        seen = set(gold or ())
        for fixed in (TACRED_LABELS, RETACRED_LABELS):
            if seen <= set(fixed):
                return list(fixed)
        return sorted(seen)  # unknown label scheme: predictions must use the gold labels
    path = Path(spec)
    if not path.is_file():
        _fail(f"--labels {spec!r} is neither tacred, retacred, auto, any nor an existing file")
    return read_label_lines(path)


@relations_app.command("score")
def score_cmd(
    gold: Path = typer.Argument(..., exists=True, dir_okay=False, help="TACRED JSON file (.json) or one label per line."),
    pred: Path = typer.Argument(..., exists=True, dir_okay=False, help="Predictions, one label per line, in GOLD's order."),
    labels: str = typer.Option(
        "auto", help="Label set: tacred, retacred, a file with one label per line, any, or auto (TACRED or Re-TACRED if "
        "they cover the gold labels, else the gold labels)."
    ),
    negative_label: str = typer.Option("no_relation", help="The label that never counts as a hit."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON instead of a table."),
    per_relation: bool = typer.Option(True, help="Show the per-relation table."),
) -> None:
    """Score predictions exactly like the official TACRED scorer (micro P/R/F1 over positive relations)."""
    from knotwork.relations.data import TacredFormatError
    from knotwork.relations.io import load_gold_labels, read_label_lines
    from knotwork.relations.scorer import score_report

    try:
        gold_labels, _ = load_gold_labels(gold)
        predicted = read_label_lines(pred)
    except (TacredFormatError, ValueError) as err:
        _fail(str(err))
    if len(gold_labels) != len(predicted):
        _fail(f"{gold} has {len(gold_labels)} labels but {pred} has {len(predicted)} lines")
    label_set = _label_set(labels, gold_labels)
    if label_set is not None and negative_label not in label_set:
        label_set = [negative_label, *label_set]
    try:
        report = score_report(gold_labels, predicted, negative_label=negative_label, labels=label_set)
    except ValueError as err:
        _fail(f"{err} (see --labels)")
    if as_json:
        typer.echo(json.dumps(report.to_dict()))
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


@relations_app.command("validate")
def validate_cmd(
    path: Path = typer.Argument(..., exists=True, dir_okay=False, help="TACRED JSON file."),
    labels: str = typer.Option("any", help="tacred, retacred, a label file, or any."),
) -> None:
    """Load and validate a TACRED JSON file; print its size and label counts."""
    from collections import Counter

    from knotwork.relations.data import TacredFormatError, load_tacred

    label_set = _label_set(labels)
    try:
        examples = load_tacred(path, labels=label_set)
    except TacredFormatError as err:
        _fail(str(err))
    counts = Counter(ex.relation for ex in examples)
    typer.echo(f"{path}: {len(examples)} valid examples, {len(counts)} relations")
    for rel, n in counts.most_common():
        typer.echo(f"  {rel}: {n}")


@relations_app.command("convert")
def convert_cmd(
    source: Path = typer.Argument(..., exists=True, dir_okay=False, help="TACRED JSON (.json) or OpenNRE JSONL (.jsonl/.txt)."),
    output: Path = typer.Argument(..., help="Output file."),
    to: str = typer.Option(..., help="Target format: opennre (JSONL, end-exclusive spans) or tacred (JSON, inclusive)."),
    force: bool = typer.Option(False, help="Replace OUTPUT if it exists."),
) -> None:
    """Convert between TACRED JSON (inclusive spans) and OpenNRE JSONL (end-exclusive spans)."""
    from knotwork.relations.data import TacredFormatError, load_tacred
    from knotwork.relations.io import load_opennre, save_opennre, save_tacred

    if to not in ("opennre", "tacred"):
        _fail(f"--to must be opennre or tacred, got {to!r}")
    if output.resolve() == source.resolve():
        _fail("OUTPUT must differ from SOURCE (inputs are never overwritten)")
    if output.exists() and not force:
        _fail(f"{output} exists; pass --force to replace it")
    try:
        examples = load_tacred(source) if source.suffix.lower() == ".json" else load_opennre(source)
    except TacredFormatError as err:
        _fail(str(err))
    (save_opennre if to == "opennre" else save_tacred)(examples, output, overwrite=force)
    typer.echo(f"wrote {len(examples)} examples to {output} ({to})")


@relations_app.command("patch")
def patch_cmd(
    data_dir: Path = typer.Argument(..., exists=True, file_okay=False, help="Folder with train/dev/test.json."),
    patch_dir: Path = typer.Argument(..., exists=True, file_okay=False, help="Folder with {split}_id2label.json (Re-TACRED) or {split}_patch.json (TACREV)."),
    out_dir: Path = typer.Argument(..., help="Folder for the patched {split}.json files."),
    labels: str = typer.Option("any", help="Check patched relations against: tacred, retacred, a label file, or any."),
    force: bool = typer.Option(False, help="Replace existing output files."),
) -> None:
    """Apply Re-TACRED-style (filter and relabel) or TACREV-style (relabel only) patches to every split."""
    from knotwork.relations.data import TacredFormatError, load_tacred
    from knotwork.relations.io import load_patch, save_tacred
    from knotwork.relations.patch import PatchFormatError, UnknownPatchIdError, apply_patch

    if out_dir.resolve() == data_dir.resolve():
        _fail("OUT_DIR must differ from DATA_DIR (inputs are never overwritten)")
    label_set = _label_set(labels)
    jobs = []
    for split in _SPLITS:
        data_file = data_dir / f"{split}.json"
        patch_file = next((p for p in (patch_dir / f"{split}_id2label.json", patch_dir / f"{split}_patch.json") if p.is_file()), None)
        if data_file.is_file() and patch_file is not None:
            jobs.append((split, data_file, patch_file))
        elif patch_file is not None:
            _fail(f"patch {patch_file} has no data file {data_file}")
    if not jobs:
        _fail(f"no split has both {data_dir}/<split>.json and a patch file in {patch_dir}")
    results = []
    for split, data_file, patch_file in jobs:  # load and check everything before writing anything
        out = out_dir / f"{split}.json"
        if out.exists() and not force:
            _fail(f"{out} exists; pass --force to replace it")
        try:
            examples = load_tacred(data_file)
            patch = load_patch(patch_file)
            patched = apply_patch(examples, patch, labels=label_set)
        except (TacredFormatError, PatchFormatError, ValueError) as err:
            _fail(str(err))
        except UnknownPatchIdError as err:
            _fail(f"{patch_file}: {err}")
        old = {e.id: e.relation for e in examples}
        changed = sum(ex.relation != old[ex.id] for ex in patched)
        results.append((split, out, patched, len(examples), changed, patch.drop_missing))
    for split, out, patched, n_in, changed, drops in results:
        save_tacred(patched, out, overwrite=force)
        style = "filter+relabel" if drops else "relabel"
        typer.echo(f"{split}: {n_in} -> {len(patched)} examples, {changed} relabelled ({style}) -> {out}")


@relations_app.command("annotate")
def annotate_cmd(
    data: Path = typer.Argument(..., exists=True, dir_okay=False, help="TACRED JSON with the sentences to annotate."),
    gold: Path = typer.Argument(..., exists=True, dir_okay=False, help="TACRED JSON with hand-labelled control sentences."),
    out_dir: Path = typer.Argument(..., help="Folder for tasks.csv (platform input) and gold_key.json (kept private)."),
    ids: Path | None = typer.Option(None, exists=True, dir_okay=False, help="Only annotate these ids (one per line), e.g. from find-issues."),
    stage: int = typer.Option(0, help="Which chunk of a group's candidate relations to ask (0 first; wrong_type answers go to the next)."),
    items_per_task: int = typer.Option(5, help="Sentences per task, gold included."),
    gold_per_task: int = typer.Option(1, help="Hidden gold sentences per task."),
    max_choices: int = typer.Option(9, help="At most this many relations per question (plus no_relation and wrong_type)."),
    seed: int = typer.Option(0, help="Seed for packing sentences and placing gold."),
    force: bool = typer.Option(False, help="Replace existing outputs."),
) -> None:
    """Build crowd tasks the Re-TACRED way and export them as a platform CSV (one row per task)."""
    import pandas as pd

    from knotwork.relations.annotation import build_tasks, tasks_to_rows
    from knotwork.relations.data import TacredFormatError, load_tacred
    from knotwork.relations.io import atomic_write_text, read_label_lines

    outputs = (out_dir / "tasks.csv", out_dir / "gold_key.json")
    for out in outputs:
        if out.exists() and not force:
            _fail(f"{out} exists; pass --force to replace it")
    try:
        examples, gold_examples = load_tacred(data), load_tacred(gold)
        if ids is not None:
            wanted = read_label_lines(ids)
            known = {ex.id for ex in examples}
            unknown = [i for i in wanted if i not in known]
            if unknown:
                _fail(f"{ids}: {len(unknown)} id(s) not in {data}, e.g. {unknown[:3]}")
            keep = set(wanted)
            examples = [ex for ex in examples if ex.id in keep]
        tasks = build_tasks(
            examples, gold_examples, stage=stage, items_per_task=items_per_task, gold_per_task=gold_per_task,
            max_choices=max_choices, seed=seed,
        )
    except (TacredFormatError, ValueError) as err:
        _fail(str(err))
    csv = pd.DataFrame(tasks_to_rows(tasks)).to_csv(index=False)
    gold_labels = {g.id: g.relation for g in gold_examples}
    key = {it.example_id: gold_labels[it.example_id] for t in tasks for it in t.items if it.is_gold}
    atomic_write_text(outputs[0], csv, overwrite=force)
    atomic_write_text(outputs[1], json.dumps(key, indent=0), overwrite=force)
    typer.echo(f"{len(tasks)} tasks for {len(examples)} sentences ({len(key)} distinct gold sentences) -> {outputs[0]}")


@relations_app.command("aggregate")
def aggregate_cmd(
    answers: Path = typer.Argument(..., exists=True, dir_okay=False, help="Platform results CSV (MTurk layout) or a long CSV with task, worker, label."),
    data: Path = typer.Argument(..., exists=True, dir_okay=False, help="The TACRED JSON the sentences come from."),
    out_dir: Path = typer.Argument(..., help="Folder for labels.csv, workers.csv, needs_more.txt and patch.json."),
    gold_key: Path | None = typer.Option(None, exists=True, dir_okay=False, help="gold_key.json from annotate; enables worker screening."),
    method: str = typer.Option("majority-vote", help="Aggregator for the final labels: majority-vote or dawid-skene."),
    min_accuracy: float = typer.Option(0.8, help="Keep workers whose gold accuracy is above this."),
    max_annotators: int = typer.Option(4, help="Sentences unresolved with this many answers are ambiguous (removed by the patch)."),
    force: bool = typer.Option(False, help="Replace existing outputs."),
) -> None:
    """Screen workers on gold, adjudicate (2 annotators, a 3rd and 4th on disagreement), aggregate, emit a patch."""
    import pandas as pd

    from knotwork.relations.annotation import (
        answers_from_platform,
        filter_answers,
        resolve,
        round_to_patch,
        screen_workers,
    )
    from knotwork.relations.crowd import AGGREGATORS, fleiss_kappa, pairwise_agreement, rating_table
    from knotwork.relations.data import TacredFormatError, load_tacred
    from knotwork.relations.io import atomic_write_text, save_patch

    if method not in AGGREGATORS:
        _fail(f"--method must be one of {sorted(AGGREGATORS)}, got {method!r}")
    names = ("labels.csv", "workers.csv", "needs_more.txt", "patch.json")
    for name in names:
        if (out_dir / name).exists() and not force:
            _fail(f"{out_dir / name} exists; pass --force to replace it")
    try:
        examples = load_tacred(data)
        long = answers_from_platform(pd.read_csv(answers, dtype=str, keep_default_na=False, na_values=[""]))
        gold = json.loads(gold_key.read_text()) if gold_key else {}
    except (TacredFormatError, ValueError) as err:
        _fail(str(err))
    known = {ex.id for ex in examples} | set(gold)
    unknown = sorted(set(long["task"]) - known)
    if unknown:
        _fail(f"{answers}: {len(unknown)} answered id(s) are neither in {data} nor gold, e.g. {unknown[:3]}")
    if gold:
        screening = screen_workers(long, gold, min_accuracy=min_accuracy)
        kept = filter_answers(long, screening, gold=gold)
    else:
        screening = long.groupby("worker").size().rename("n_answers").to_frame().assign(accepted=True)
        kept = long
    if kept.empty:
        _fail("no answers left after screening; check --min-accuracy and the gold key")
    res = resolve(kept, max_annotators=max_annotators)
    if method != "majority-vote":
        agg = AGGREGATORS[method]().fit_predict(kept[["task", "worker", "label"]])
        res["label"] = agg.loc[res.index]
    resolved = res[res["status"].isin(["agreed", "majority"])]
    patch = round_to_patch(examples, resolved["label"].to_dict(), remove=res.index[res["status"] == "ambiguous"])
    needs_more = list(res.index[res["status"] == "needs_more"])
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "labels.csv", res.rename_axis("id").to_csv(), overwrite=force)
    atomic_write_text(out_dir / "workers.csv", screening.to_csv(), overwrite=force)
    atomic_write_text(out_dir / "needs_more.txt", "".join(f"{i}\n" for i in needs_more), overwrite=force)
    save_patch(patch, out_dir / "patch.json", overwrite=force)
    table = rating_table(kept, n_raters=2)
    typer.echo(f"{len(res)} sentences: {res['status'].value_counts().to_dict()}")
    if len(table):
        typer.echo(f"first-two-answers Fleiss' kappa {fleiss_kappa(table.to_numpy()):.3f}, agreement {pairwise_agreement(kept):.3f}")
    typer.echo(f"{int((~screening['accepted']).sum())} worker(s) rejected; {len(needs_more)} sentence(s) need more annotators")
    typer.echo(f"patch with {len(patch.labels)} entries ({'filter+relabel' if patch.drop_missing else 'relabel'}) -> {out_dir / 'patch.json'}")


@relations_app.command("find-issues")
def find_issues_cmd(
    data: Path = typer.Argument(..., exists=True, dir_okay=False, help="TACRED JSON with the given labels."),
    probs: Path = typer.Argument(..., exists=True, dir_okay=False, help=".npy of out-of-fold probabilities, shape (n, K), rows in DATA's order."),
    output: Path = typer.Argument(..., help="CSV of examples ranked from most to least likely mislabelled."),
    labels: str = typer.Option("auto", help="Column order of PROBS: tacred, retacred, or a file with one label per line."),
    filter_by: str = typer.Option("prune_by_noise_rate", help="prune_by_noise_rate, confident_joint or both."),
    all_examples: bool = typer.Option(False, "--all", help="List every example, not only flagged ones."),
    force: bool = typer.Option(False, help="Replace OUTPUT if it exists."),
) -> None:
    """Find likely label errors by confident learning and rank them (with the model's suggested label)."""
    import numpy as np
    import pandas as pd

    from knotwork.relations.data import TacredFormatError, load_tacred
    from knotwork.relations.io import atomic_write_text
    from knotwork.relations.issues import find_label_issues, label_quality_scores, rank_label_issues

    if output.exists() and not force:
        _fail(f"{output} exists; pass --force to replace it")
    try:
        examples = load_tacred(data)
        p = np.load(probs, allow_pickle=False)
    except (TacredFormatError, ValueError) as err:
        _fail(str(err))
    label_set = _label_set(labels, [ex.relation for ex in examples])
    if label_set is None or len(label_set) != p.shape[-1]:
        _fail(f"{probs} has {p.shape[-1] if p.ndim else 0} columns but the label set has {len(label_set or [])}; see --labels")
    if len(p) != len(examples):
        _fail(f"{probs} has {len(p)} rows but {data} has {len(examples)} examples")
    index = {lab: i for i, lab in enumerate(label_set)}
    bad = next((ex for ex in examples if ex.relation not in index), None)
    if bad is not None:
        _fail(f"example {bad.id}: relation {bad.relation!r} is not in the label set")
    y = np.array([index[ex.relation] for ex in examples])
    try:
        mask = find_label_issues(y, p, filter_by=filter_by)
    except ValueError as err:
        _fail(str(err))
    order = rank_label_issues(y, p, mask=None if all_examples else mask)
    quality = label_quality_scores(y, p)
    table = pd.DataFrame(
        {
            "id": [examples[i].id for i in order],
            "given": [examples[i].relation for i in order],
            "suggested": [label_set[int(p[i].argmax())] for i in order],
            "quality": quality[order],
            "flagged": mask[order],
        }
    )
    atomic_write_text(output, table.to_csv(index=False), overwrite=force)
    typer.echo(f"{int(mask.sum())} of {len(examples)} examples flagged ({100 * mask.mean():.1f}%) -> {output}")


@relations_app.command("reevaluate")
def reevaluate_cmd(
    before: Path = typer.Argument(..., exists=True, dir_okay=False, help="TACRED JSON with the old labels."),
    after: Path = typer.Argument(..., exists=True, dir_okay=False, help="TACRED JSON with the new labels (may keep fewer ids)."),
    predictions: list[Path] = typer.Argument(..., help="One file per model, one label per line in BEFORE's order; the model is the file stem."),
    n_bootstrap: int = typer.Option(1000, help="Paired bootstrap resamples for the intervals (0 = none)."),
    seed: int = typer.Option(0, help="Bootstrap seed."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Score several models on two label versions: F1 deltas with bootstrap CIs and Kendall's tau of the rankings."""
    from knotwork.relations.data import TacredFormatError, load_tacred
    from knotwork.relations.io import read_label_lines
    from knotwork.relations.reevaluate import reevaluate

    try:
        old, new = load_tacred(before), load_tacred(after)
    except TacredFormatError as err:
        _fail(str(err))
    ids = [ex.id for ex in old]
    extra = sorted({ex.id for ex in new} - set(ids))
    if extra:
        _fail(f"{after} has {len(extra)} id(s) not in {before}, e.g. {extra[:3]}")
    preds = {}
    for path in predictions:
        if not path.is_file():
            _fail(f"prediction file {path} does not exist")
        lines = read_label_lines(path)
        if len(lines) != len(ids):
            _fail(f"{path} has {len(lines)} lines but {before} has {len(ids)} examples")
        if path.stem in preds:
            _fail(f"two prediction files are named {path.stem!r}")
        preds[path.stem] = dict(zip(ids, lines, strict=True))
    result = reevaluate(
        preds, {ex.id: ex.relation for ex in old}, {ex.id: ex.relation for ex in new}, n_bootstrap=n_bootstrap, seed=seed,
        progress=not as_json,
    )
    if as_json:
        typer.echo(json.dumps({"models": [vars(m) for m in result.models], "kendall_tau": result.kendall_tau,
                               "n_flips": result.n_flips, "per_category": result.per_category}))
        return
    typer.echo(f"{'model':<20} {'F1 before':>9} {'F1 after':>9} {'delta':>7}  95% CI of delta")
    for m in result.models:
        typer.echo(
            f"{m.model:<20} {100 * m.f1_before:9.2f} {100 * m.f1_after:9.2f} {100 * m.delta:+7.2f}  "
            f"[{100 * m.ci_delta[0]:+.2f}, {100 * m.ci_delta[1]:+.2f}]"
        )
    typer.echo(f"Kendall tau between rankings: {result.kendall_tau:.3f}; pairwise rank flips: {result.n_flips}")
