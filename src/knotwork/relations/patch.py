"""Label patches over TACRED-format data: Re-TACRED style (filter and relabel) and TACREV style (relabel only)."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from knotwork._errors import RelationsError
from knotwork.relations.data import RelationExample


class PatchFormatError(RelationsError):
    """A patch file is malformed; the message names the entry."""


class UnknownPatchIdError(RelationsError, KeyError):
    """A patch names ids that the data set does not contain (also a KeyError: a lookup by id that failed)."""


@dataclass(frozen=True)
class Patch:
    """A label patch: ``labels[id]`` is the new relation of example ``id``.

    Attributes
    ----------
    labels : mapping of str to str
    drop_missing : bool
        True for Re-TACRED-style patches: examples whose id is not in ``labels`` are removed. False for
        TACREV-style patches: they keep their label.
    """

    labels: Mapping[str, str] = field(default_factory=dict)
    drop_missing: bool = True


def patch_from_json(raw: Any) -> Patch:
    """Build a :class:`Patch` from parsed JSON: a dict is Re-TACRED style, a list of ``{"id", "relation"}`` TACREV.

    Raises
    ------
    PatchFormatError
        For any other shape, a non-string id/label, or an id given twice.
    """
    if isinstance(raw, dict):
        for key, value in raw.items():
            if not isinstance(value, str) or not value:
                raise PatchFormatError(f"patch id {key!r}: relation must be a non-empty string, got {value!r}")
        return Patch(labels=dict(raw), drop_missing=True)
    if isinstance(raw, list):
        labels: dict[str, str] = {}
        for i, entry in enumerate(raw):
            if not isinstance(entry, dict) or "id" not in entry or "relation" not in entry:
                raise PatchFormatError(f"patch entry {i}: expected an object with 'id' and 'relation', got {entry!r}")
            ident, rel = entry["id"], entry["relation"]
            if not isinstance(ident, str) or not isinstance(rel, str) or not rel:
                raise PatchFormatError(f"patch entry {i} (id {ident!r}): 'id' and 'relation' must be strings")
            if ident in labels:
                raise PatchFormatError(f"patch entry {i}: id {ident!r} appears twice")
            labels[ident] = rel
        return Patch(labels=labels, drop_missing=False)
    raise PatchFormatError(f"expected a JSON object {{id: relation}} or a list of {{'id', 'relation'}}, got {type(raw).__name__}")


def apply_patch(
    dataset: Sequence[RelationExample],
    patch: Patch | Mapping[str, str],
    *,
    drop_missing: bool | None = None,
    labels: Collection[str] | None = None,
) -> list[RelationExample]:
    """Return a new data set with the patch applied; the input is not modified.

    Follows Re-TACRED's ``apply_patch.py`` (keep only patched ids, overwrite ``relation``) when ``drop_missing``
    is true, and TACREV's ``apply_tacred_patch.py`` (relabel, keep everything) when false. Like tacrev's script,
    every patch id must exist in the data set; unlike it, this is checked before anything changes.

    Parameters
    ----------
    dataset : sequence of RelationExample
    patch : Patch or mapping of id to relation
        A bare mapping is treated as a Re-TACRED patch unless ``drop_missing`` says otherwise.
    drop_missing : bool, optional
        Overrides ``patch.drop_missing``.
    labels : collection of str, optional
        When given, a patched relation outside it is an error.

    Returns
    -------
    list of RelationExample
        In the data set's order.

    Raises
    ------
    UnknownPatchIdError
        When patch ids are absent from the data set (the message names up to five of them).
    RelationsError
        When a patched relation is not in ``labels``.

    Examples
    --------
    >>> ex = RelationExample("a", ("x", "y"), "no_relation", 0, 0, 1, 1, "PERSON", "PERSON")
    >>> [e.relation for e in apply_patch([ex], {"a": "per:spouse"})]
    ['per:spouse']
    """
    if not isinstance(patch, Patch):
        patch = Patch(labels=dict(patch), drop_missing=True)
    drop = patch.drop_missing if drop_missing is None else drop_missing
    ids = {ex.id for ex in dataset}
    missing = [i for i in patch.labels if i not in ids]
    if missing:
        raise UnknownPatchIdError(
            f"{len(missing)} patch id(s) not in the data set, e.g. {missing[:5]}; is this the patch for another split?"
        )
    if labels is not None:
        allowed = frozenset(labels)
        for ident, rel in patch.labels.items():
            if rel not in allowed:
                raise RelationsError(f"patch id {ident!r}: relation {rel!r} is not in the label set")
    out = []
    for ex in dataset:
        new = patch.labels.get(ex.id)
        if new is None:
            if not drop:
                out.append(ex)
        else:
            out.append(replace(ex, relation=new))
    return out


def diff_patch(before: Sequence[RelationExample], after: Sequence[RelationExample], *, drop_missing: bool = True) -> Patch:
    """The patch that turns ``before`` into ``after`` (ids present in ``after`` keep or change their label).

    With ``drop_missing=False`` only the changed ids are listed (TACREV style).
    """
    old = {ex.id: ex.relation for ex in before}
    unknown = [ex.id for ex in after if ex.id not in old]
    if unknown:
        raise UnknownPatchIdError(f"{len(unknown)} id(s) of 'after' are not in 'before', e.g. {unknown[:5]}")
    if drop_missing:
        return Patch({ex.id: ex.relation for ex in after}, drop_missing=True)
    return Patch({ex.id: ex.relation for ex in after if old[ex.id] != ex.relation}, drop_missing=False)
