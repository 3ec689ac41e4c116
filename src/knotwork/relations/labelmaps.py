"""Mapping predicted labels into another version's label set, and patching gold labels keyed by id.

Scoring TACRED-trained predictions on Re-TACRED labels needs an explicit map of every TACRED relation to its
Re-TACRED name (paper §3.3): ``per:alternate_names`` becomes ``per:identity``, ``org:parents`` merges into
``org:member_of``, ``org:subsidiaries`` into ``org:members``, and ``org:*_of_headquarters`` become
``org:*_of_branch``; every other label keeps its name. :data:`RETACRED_MAP` spells out all 42 entries.

Nothing here reads a file (the readers live in :mod:`knotwork.relations.label_files`).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from knotwork._errors import RelationsError
from knotwork.relations.labels import TACRED_LABELS, TACRED_TO_RETACRED
from knotwork.relations.patch import Patch, UnknownPatchIdError

#: Every TACRED label (42) and the Re-TACRED label its predictions are scored as (40 targets).
RETACRED_MAP: Mapping[str, str] = MappingProxyType({lab: TACRED_TO_RETACRED.get(lab, lab) for lab in TACRED_LABELS})

#: Label maps known by name (``--label-map VERSION=retacred``).
BUILTIN_LABEL_MAPS: Mapping[str, Mapping[str, str]] = MappingProxyType({"retacred": RETACRED_MAP})


def check_label_map(raw: object, *, source: str = "label map") -> dict[str, str]:
    """Return ``raw`` as a ``{label: new label}`` dict, or refuse it naming ``source`` and the bad entry.

    Raises
    ------
    RelationsError
        When ``raw`` is not a non-empty mapping of non-empty strings to non-empty strings.
    """
    if not isinstance(raw, Mapping):
        raise RelationsError(f"{source}: a label map is a JSON object {{label: new label}}, got {type(raw).__name__}")
    if not raw:
        raise RelationsError(f"{source}: the label map is empty")
    for key, value in raw.items():
        if not isinstance(key, str) or not key or not isinstance(value, str) or not value:
            raise RelationsError(f"{source}: entry {key!r}: {value!r}; labels must be non-empty strings")
    return dict(raw)


def builtin_label_map(name: str) -> dict[str, str]:
    """A built-in label map by name (:data:`BUILTIN_LABEL_MAPS`).

    Raises
    ------
    RelationsError
        For an unknown name, listing the known ones.
    """
    if name not in BUILTIN_LABEL_MAPS:
        raise RelationsError(f"unknown built-in label map {name!r}; known: {', '.join(sorted(BUILTIN_LABEL_MAPS))}")
    return dict(BUILTIN_LABEL_MAPS[name])


def map_labels(labels: list[str], mapping: Mapping[str, str] | None) -> list[str]:
    """``mapping[label]`` for every label in the map, the label itself otherwise.

    Examples
    --------
    >>> map_labels(["org:parents", "per:title", "per:alternate_names"], RETACRED_MAP)
    ['org:member_of', 'per:title', 'per:identity']
    """
    if not mapping:
        return list(labels)
    return [mapping.get(label, label) for label in labels]


def patched_labels(base: Mapping[str, str], patch: Patch, *, label_map: Mapping[str, str] | None = None,
                   source: str = "patch") -> dict[str, str]:
    """Gold labels keyed by id after a patch, without the examples' text.

    A Re-TACRED-style patch (``drop_missing``) keeps only its ids, with its labels. A TACREV-style patch relabels
    its ids and keeps every other id with its ``base`` label, passed through ``label_map`` (the patch's own labels
    are taken as they are: they are already in the new version's label set).

    Parameters
    ----------
    base : mapping of id to label
        The labels the patch applies to, in the order the result keeps.
    patch : Patch
    label_map : mapping, optional
        Applied to the base labels a relabel-only patch keeps.
    source : str
        Names the patch in errors (its file).

    Raises
    ------
    UnknownPatchIdError
        When patch ids are absent from ``base`` (naming up to five).

    Examples
    --------
    >>> patched_labels({"a": "org:parents", "b": "no_relation"}, Patch({"b": "per:title"}, drop_missing=False),
    ...                label_map=RETACRED_MAP)
    {'a': 'org:member_of', 'b': 'per:title'}
    """
    missing = [i for i in patch.labels if i not in base]
    if missing:
        raise UnknownPatchIdError(
            f"{source}: {len(missing)} patch id(s) not among the {len(base)} ids of the predictions, e.g. "
            f"{missing[:5]}; is this the patch for another split?"
        )
    if patch.drop_missing:
        return {i: patch.labels[i] for i in base if i in patch.labels}
    mapping = label_map or {}
    return {i: patch.labels[i] if i in patch.labels else mapping.get(lab, lab) for i, lab in base.items()}
