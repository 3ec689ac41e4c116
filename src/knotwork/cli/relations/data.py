"""`knotwork relations validate|convert|patch`: check TACRED data, convert it to OpenNRE and back, apply patches."""

from __future__ import annotations

import enum
from pathlib import Path

import typer

from knotwork._errors import RelationsError
from knotwork.cli._app import force_option, out_option
from knotwork.cli.relations import relations_app
from knotwork.cli.relations._options import LabelSet, label_file_option, labels_option, resolve_label_set

SPLITS = ("train", "dev", "test")


class Format(str, enum.Enum):
    """A file format of ``relations convert``."""

    opennre = "opennre"  # JSONL, end-exclusive spans
    tacred = "tacred"  # one JSON list, inclusive spans


@relations_app.command("validate")
def validate_cmd(
    path: Path = typer.Argument(..., exists=True, dir_okay=False, help="TACRED JSON file."),
    labels: LabelSet | None = labels_option(LabelSet.any, "Relations the file may use.", "the file's labels"),
    label_file: Path | None = label_file_option(),
) -> None:
    """Load and validate a TACRED JSON file; print its size and label counts."""
    from collections import Counter

    from knotwork.relations.data import load_tacred

    label_set = resolve_label_set(labels, label_file, default=LabelSet.any)
    examples = load_tacred(path, labels=label_set)
    counts = Counter(ex.relation for ex in examples)
    typer.echo(f"{path}: {len(examples)} valid examples, {len(counts)} relations")
    for rel, n in counts.most_common():
        typer.echo(f"  {rel}: {n}")


@relations_app.command("convert")
def convert_cmd(
    source: Path = typer.Argument(
        ..., exists=True, dir_okay=False, help="TACRED JSON (.json) or OpenNRE JSONL (any other suffix)."
    ),
    out: Path = out_option("The converted file."),
    to: Format = typer.Option(..., "--to", case_sensitive=False, help="Target format."),
    force: bool = force_option(),
) -> None:
    """Convert between TACRED JSON (inclusive spans) and OpenNRE JSONL (end-exclusive spans)."""
    from knotwork._io import check_output
    from knotwork.relations.data import load_tacred
    from knotwork.relations.io import load_opennre, save_opennre, save_tacred

    check_output(out, inputs=[source], force=force, folder=False)
    examples = load_tacred(source) if source.suffix.lower() == ".json" else load_opennre(source)
    (save_opennre if to is Format.opennre else save_tacred)(examples, out, inputs=[source], force=force)
    typer.echo(f"wrote {len(examples)} examples to {out} ({to.value})")


@relations_app.command("patch")
def patch_cmd(
    data_dir: Path = typer.Argument(..., exists=True, file_okay=False, help="Folder with train/dev/test.json."),
    patch_dir: Path = typer.Argument(
        ..., exists=True, file_okay=False,
        help="Folder with {split}_id2label.json (Re-TACRED) or {split}_patch.json (TACREV).",
    ),
    out: Path = out_option("Folder for the patched {split}.json files (written as a whole)."),
    labels: LabelSet | None = labels_option(LabelSet.any, "Relations the patches may assign.", "the data's labels"),
    label_file: Path | None = label_file_option(),
    force: bool = force_option(),
) -> None:
    """Apply Re-TACRED-style (filter and relabel) or TACREV-style (relabel only) patches to every split."""
    from knotwork._io import atomic_dir, check_output
    from knotwork.relations.data import load_tacred
    from knotwork.relations.io import dump_tacred, load_patch
    from knotwork.relations.patch import apply_patch

    inputs = [data_dir, patch_dir, *([label_file] if label_file else [])]
    check_output(out, inputs=inputs, force=force, folder=True)
    label_set = resolve_label_set(labels, label_file, default=LabelSet.any)
    jobs, unpatched = [], []
    for split in SPLITS:
        data_file = data_dir / f"{split}.json"
        candidates = (patch_dir / f"{split}_id2label.json", patch_dir / f"{split}_patch.json")
        found = [p for p in candidates if p.is_file()]
        if len(found) > 1:
            raise RelationsError(f"{patch_dir}: both {found[0].name} and {found[1].name} patch split {split}; keep one")
        if found and not data_file.is_file():
            raise RelationsError(f"{found[0]}: no data file {data_file} to patch")
        if found:
            jobs.append((split, data_file, found[0]))
        elif data_file.is_file():
            unpatched.append(split)
    if not jobs:
        raise RelationsError(f"{patch_dir}: no split has both {data_dir}/<split>.json and a patch file")
    results = []
    for split, data_file, patch_file in jobs:  # load and check everything before writing anything
        examples = load_tacred(data_file)
        patch = load_patch(patch_file)
        try:
            patched = apply_patch(examples, patch, labels=label_set)
        except RelationsError as err:  # the library names the patch id; the file is known here
            raise RelationsError(f"{patch_file}: {err}") from None
        old = {e.id: e.relation for e in examples}
        changed = sum(ex.relation != old[ex.id] for ex in patched)
        results.append((split, patched, len(examples), changed, patch.drop_missing))
    report = {"data_dir": str(data_dir), "patch_dir": str(patch_dir), "splits": [s for s, *_ in jobs]}
    with atomic_dir(out, inputs=inputs, force=force, report=report) as tmp:
        for split, patched, *_ in results:
            (tmp / f"{split}.json").write_text(dump_tacred(patched), encoding="utf-8")
    for split, patched, n_in, changed, drops in results:
        style = "filter+relabel" if drops else "relabel"
        typer.echo(f"{split}: {n_in} -> {len(patched)} examples, {changed} relabelled ({style}) -> {out / f'{split}.json'}")
    for split in unpatched:
        typer.echo(f"{split}: no patch file in {patch_dir}; not written")
