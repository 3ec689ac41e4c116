"""The fixed label sets of TACRED (42) and Re-TACRED (40), the rename map between them, and label categories.

Label ids come from these constants, never from the labels seen in a file: a split can lack a relation (the
Re-TACRED test split has no ``per:country_of_birth``), and building the map from the data then silently shifts ids.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from knotwork._errors import RelationsError

NEGATIVE_LABEL = "no_relation"

#: TACRED's 42 labels in the order of ``LABEL_TO_ID`` in tacred-relation / C-GCN / JRRELP (``no_relation`` = 0).
TACRED_LABELS: tuple[str, ...] = (
    "no_relation",
    "per:title",
    "org:top_members/employees",
    "per:employee_of",
    "org:alternate_names",
    "org:country_of_headquarters",
    "per:countries_of_residence",
    "org:city_of_headquarters",
    "per:cities_of_residence",
    "per:age",
    "per:stateorprovinces_of_residence",
    "per:origin",
    "org:subsidiaries",
    "org:parents",
    "per:spouse",
    "org:stateorprovince_of_headquarters",
    "per:children",
    "per:other_family",
    "per:alternate_names",
    "org:members",
    "per:siblings",
    "per:schools_attended",
    "per:parents",
    "per:date_of_death",
    "org:member_of",
    "org:founded_by",
    "org:website",
    "per:cause_of_death",
    "org:political/religious_affiliation",
    "org:founded",
    "per:city_of_death",
    "org:shareholders",
    "org:number_of_employees/members",
    "per:date_of_birth",
    "per:city_of_birth",
    "per:charges",
    "per:stateorprovince_of_death",
    "per:religion",
    "per:stateorprovince_of_birth",
    "per:country_of_birth",
    "org:dissolved",
    "per:country_of_death",
)

#: Re-TACRED's 40 labels (``no_relation`` = 0, then by Re-TACRED v1.1 train frequency, most frequent first).
RETACRED_LABELS: tuple[str, ...] = (
    "no_relation",
    "per:identity",
    "per:title",
    "per:employee_of",
    "org:top_members/employees",
    "org:alternate_names",
    "org:country_of_branch",
    "org:city_of_branch",
    "org:members",
    "per:age",
    "org:member_of",
    "org:stateorprovince_of_branch",
    "per:origin",
    "per:children",
    "per:spouse",
    "per:stateorprovinces_of_residence",
    "per:siblings",
    "per:countries_of_residence",
    "org:political/religious_affiliation",
    "per:cities_of_residence",
    "per:parents",
    "per:date_of_death",
    "per:schools_attended",
    "per:city_of_death",
    "org:website",
    "per:cause_of_death",
    "org:founded_by",
    "per:other_family",
    "org:shareholders",
    "per:city_of_birth",
    "per:charges",
    "org:founded",
    "per:religion",
    "per:date_of_birth",
    "per:stateorprovince_of_death",
    "org:number_of_employees/members",
    "per:stateorprovince_of_birth",
    "per:country_of_birth",
    "org:dissolved",
    "per:country_of_death",
)

#: Renames from TACRED to Re-TACRED names (paper §3.3); every other label keeps its name. Refined *definitions*
#: (residence vs. birth, other_family) cannot be mapped by name and are not part of this map.
TACRED_TO_RETACRED: Mapping[str, str] = {
    "per:alternate_names": "per:identity",
    "org:parents": "org:member_of",
    "org:subsidiaries": "org:members",
    "org:city_of_headquarters": "org:city_of_branch",
    "org:country_of_headquarters": "org:country_of_branch",
    "org:stateorprovince_of_headquarters": "org:stateorprovince_of_branch",
}

#: Relation families used by the paper's Table 3 (Re-TACRED names). Chosen here from the §3 definitions because the
#: authors' ``category_maps.py`` is buggy (see docs/relations.md).
REFINED_FAMILIES: Mapping[str, tuple[str, ...]] = {
    "org:members": ("org:members",),
    "org:member_of": ("org:member_of",),
    "per:residence": ("per:cities_of_residence", "per:countries_of_residence", "per:stateorprovinces_of_residence"),
    "per:birth": ("per:city_of_birth", "per:country_of_birth", "per:stateorprovince_of_birth"),
    "per:death": ("per:city_of_death", "per:country_of_death", "per:stateorprovince_of_death"),
    "org:location": ("org:city_of_branch", "org:country_of_branch", "org:stateorprovince_of_branch"),
    "per:identity": ("per:identity",),
}


def rename_to_retacred(labels: Iterable[str]) -> list[str]:
    """Map TACRED label names to Re-TACRED names with :data:`TACRED_TO_RETACRED` (others unchanged).

    Examples
    --------
    >>> rename_to_retacred(["org:parents", "per:title"])
    ['org:member_of', 'per:title']
    """
    return [TACRED_TO_RETACRED.get(label, label) for label in labels]


def label_to_id(labels: Sequence[str]) -> dict[str, int]:
    """Return ``{label: id}`` for a fixed label list, checking that it has no duplicates.

    Raises
    ------
    RelationsError
        When a label appears twice.
    """
    mapping: dict[str, int] = {}
    for i, label in enumerate(labels):
        if label in mapping:
            raise RelationsError(f"label {label!r} appears twice in the label list (positions {mapping[label]} and {i})")
        mapping[label] = i
    return mapping


def relation_category(label: str) -> str:
    """Return a label's coarse category: its prefix (``per``/``org``) in upper case, or the label itself.

    ``no_relation`` maps to itself, and labels without a ``:`` (SemEval style) are their own category.
    """
    if label == NEGATIVE_LABEL or ":" not in label:
        return label
    return label.split(":", 1)[0].upper() + ":*"


def covering_label_set(observed: Iterable[str]) -> list[str]:
    """The label set that ``observed`` labels imply: TACRED's or Re-TACRED's when one covers them, else their sorted set.

    This is what ``--labels auto`` means on the command line: predictions and answers are then checked against the
    fixed set of the scheme the gold labels come from, or against the gold labels themselves.

    Examples
    --------
    >>> len(covering_label_set(["per:title", "no_relation"]))
    42
    >>> covering_label_set(["Cause-Effect(e1,e2)", "Other"])
    ['Cause-Effect(e1,e2)', 'Other']
    """
    seen = set(observed)
    for fixed in (TACRED_LABELS, RETACRED_LABELS):
        if seen <= set(fixed):
            return list(fixed)
    return sorted(seen)
