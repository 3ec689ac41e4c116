"""Options shared by the `knotwork relations` commands: the label set (``--labels``, ``--label-file``) and checks
that refuse an output before any work starts."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import typer

from knotwork._errors import RelationsError


class LabelSet(str, enum.Enum):
    """Which labels a command accepts (``--labels``)."""

    auto = "auto"  # TACRED's or Re-TACRED's fixed set when it covers the data's labels, else the data's labels
    tacred = "tacred"
    retacred = "retacred"
    any = "any"  # every label, as the official scorer


def labels_option(default: LabelSet, what: str, observed: str = "the data's labels") -> Any:
    return typer.Option(
        None, "--labels", case_sensitive=False, show_default=False,
        help=f"{what} auto: TACRED's or Re-TACRED's labels if they cover {observed}, else {observed}; "
        f"any: every label. [default: {default.value}]",
    )


def label_file_option() -> Any:
    return typer.Option(
        None, "--label-file", exists=True, dir_okay=False,
        help="The label set from a file, in id order: one label per line, or a .json list of labels or "
        "{label: id} map. Replaces --labels.",
    )


def resolve_label_set(labels: LabelSet | None, label_file: Path | None, *, default: LabelSet,
                      observed: Iterable[str] = ()) -> list[str] | None:
    """The label set of ``--labels``/``--label-file`` (None for ``any``); ``observed`` are the data's labels."""
    from knotwork.relations.io import load_label_set
    from knotwork.relations.labels import RETACRED_LABELS, TACRED_LABELS, covering_label_set

    if label_file is not None:
        if labels is not None:
            raise RelationsError(f"--labels {labels.value} and --label-file {label_file}: give one of them, not both")
        return load_label_set(label_file)
    choice = default if labels is None else labels
    if choice is LabelSet.tacred:
        return list(TACRED_LABELS)
    if choice is LabelSet.retacred:
        return list(RETACRED_LABELS)
    if choice is LabelSet.any:
        return None
    return covering_label_set(observed)


def paths(*items: Path | Iterable[Path] | None) -> list[Path]:
    """The given input paths, flattened, without the options left unset."""
    out: list[Path] = []
    for item in items:
        if item is None:
            continue
        out.extend([item] if isinstance(item, Path) else item)
    return out


def check_json_out(json_out: str | None, *, inputs: Iterable[Path], force: bool) -> None:
    """Refuse a ``--json PATH`` that may not be written (an input, an existing non-knotwork file), before any work."""
    from knotwork._io import check_output

    if json_out not in (None, "-"):
        check_output(json_out, inputs=inputs, force=force, folder=False)
