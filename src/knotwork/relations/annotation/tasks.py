"""Building crowd annotation tasks the Re-TACRED way: groups by entity types, capped choices, hidden gold 1 in 5."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from knotwork._errors import RelationsError
from knotwork.relations.data import RelationExample
from knotwork.relations.labels import covering_label_set

#: The extra answer option for "the highlighted entity types are wrong" (paper §3, supplement §E).
WRONG_TYPE = "wrong_type"

_ORG, _PER = "ORGANIZATION", "PERSON"
#: Re-TACRED's 8 super-clusters of (subject type, object types), supplement Table 4.
RETACRED_SUPER_CLUSTERS: Mapping[str, tuple[str, frozenset[str]]] = {
    "org2miscmulti": (_ORG, frozenset({"URL", "DATE", "NUMBER", "RELIGION", "IDEOLOGY", "MISC"})),
    "org2locmulti": (_ORG, frozenset({"CITY", "COUNTRY", "STATE_OR_PROVINCE", "LOCATION"})),
    "org2org": (_ORG, frozenset({_ORG})),
    "org2per": (_ORG, frozenset({_PER})),
    "per2miscmulti": (
        _PER,
        frozenset({"TITLE", "DATE", "CRIMINAL_CHARGE", "RELIGION", "NUMBER", "CAUSE_OF_DEATH", "DURATION", "MISC"}),
    ),
    "per2locmulti": (_PER, frozenset({"NATIONALITY", "COUNTRY", "STATE_OR_PROVINCE", "CITY", "LOCATION"})),
    "per2org": (_PER, frozenset({_ORG})),
    "per2per": (_PER, frozenset({_PER})),
}


_GPE = frozenset({"COUNTRY", "STATE_OR_PROVINCE", "CITY", "LOCATION"})
_CITY = frozenset({"CITY", "LOCATION"})


def _typed(subj: str, *objs: str | frozenset[str]) -> tuple[str, frozenset[str]]:
    return subj, frozenset().union(*({o} if isinstance(o, str) else o for o in objs))


#: The argument types each TACRED and Re-TACRED relation is compatible with: relation -> (subject type, object
#: types), in TACRED's NER types. The paper (§3.1) uses "type-compatible" candidate sets without listing them; these
#: follow the TAC KBP slot definitions (each slot's filler type: a person, an organization, a GPE = country, state
#: or province, city or other location, a date, a number, a title, ...). Re-TACRED's renamed relations take the
#: types of their TACRED sources (``org:member_of`` = member_of + parents, ``org:members`` = members +
#: subsidiaries, ``*_of_branch`` = ``*_of_headquarters``, ``per:identity`` = alternate_names). The order groups
#: relations by meaning; :func:`stage_choices` keeps neighbours in one stage.
TYPE_COMPATIBLE: Mapping[str, tuple[str, frozenset[str]]] = {
    # person -> person
    "per:alternate_names": _typed(_PER, _PER, "MISC"),
    "per:identity": _typed(_PER, _PER, "MISC"),
    "per:spouse": _typed(_PER, _PER),
    "per:children": _typed(_PER, _PER),
    "per:parents": _typed(_PER, _PER),
    "per:siblings": _typed(_PER, _PER),
    "per:other_family": _typed(_PER, _PER),
    # person -> attribute
    "per:title": _typed(_PER, "TITLE"),
    "per:age": _typed(_PER, "NUMBER", "DURATION"),
    "per:date_of_birth": _typed(_PER, "DATE"),
    "per:date_of_death": _typed(_PER, "DATE"),
    "per:cause_of_death": _typed(_PER, "CAUSE_OF_DEATH"),
    "per:charges": _typed(_PER, "CRIMINAL_CHARGE"),
    "per:religion": _typed(_PER, "RELIGION"),
    # person -> place: birth and death events, then residence, origin and employment by a GPE
    "per:city_of_birth": _typed(_PER, _CITY),
    "per:stateorprovince_of_birth": _typed(_PER, "STATE_OR_PROVINCE"),
    "per:country_of_birth": _typed(_PER, "COUNTRY"),
    "per:city_of_death": _typed(_PER, _CITY),
    "per:stateorprovince_of_death": _typed(_PER, "STATE_OR_PROVINCE"),
    "per:country_of_death": _typed(_PER, "COUNTRY"),
    "per:cities_of_residence": _typed(_PER, _CITY),
    "per:stateorprovinces_of_residence": _typed(_PER, "STATE_OR_PROVINCE"),
    "per:countries_of_residence": _typed(_PER, "COUNTRY", "NATIONALITY"),
    "per:origin": _typed(_PER, "NATIONALITY", "COUNTRY", "LOCATION"),
    "per:employee_of": _typed(_PER, _ORG, _GPE),
    "per:schools_attended": _typed(_PER, _ORG),
    # organization -> organization or place
    "org:alternate_names": _typed(_ORG, _ORG, "MISC"),
    "org:member_of": _typed(_ORG, _ORG, _GPE),
    "org:parents": _typed(_ORG, _ORG, _GPE),
    "org:members": _typed(_ORG, _ORG, _GPE),
    "org:subsidiaries": _typed(_ORG, _ORG),
    "org:shareholders": _typed(_ORG, _PER, _ORG),
    "org:founded_by": _typed(_ORG, _PER, _ORG, _GPE),
    "org:top_members/employees": _typed(_ORG, _PER),
    "org:city_of_headquarters": _typed(_ORG, _CITY),
    "org:stateorprovince_of_headquarters": _typed(_ORG, "STATE_OR_PROVINCE"),
    "org:country_of_headquarters": _typed(_ORG, "COUNTRY"),
    "org:city_of_branch": _typed(_ORG, _CITY),
    "org:stateorprovince_of_branch": _typed(_ORG, "STATE_OR_PROVINCE"),
    "org:country_of_branch": _typed(_ORG, "COUNTRY"),
    # organization -> attribute
    "org:political/religious_affiliation": _typed(_ORG, "RELIGION", "IDEOLOGY"),
    "org:number_of_employees/members": _typed(_ORG, "NUMBER"),
    "org:founded": _typed(_ORG, "DATE"),
    "org:dissolved": _typed(_ORG, "DATE"),
    "org:website": _typed(_ORG, "URL"),
}


def annotation_group(example: RelationExample, clusters: Mapping[str, tuple[str, frozenset[str]]] | None = None) -> str:
    """The group an example is annotated in: its super-cluster, or ``"<subj>2<obj>"`` for an unclustered type pair."""
    clusters = RETACRED_SUPER_CLUSTERS if clusters is None else clusters
    for name, (subj, objs) in clusters.items():
        if example.subj_type == subj and example.obj_type in objs:
            return name
    return f"{example.subj_type.lower()}2{example.obj_type.lower()}"


def mark_entities(example: RelationExample) -> str:
    """The sentence with the subject and object highlighted as ``[S: ...]`` and ``[O: ...]``."""
    out = []
    for i, tok in enumerate(example.tokens):
        if i == example.subj_start:
            out.append("[S:")
        if i == example.obj_start:
            out.append("[O:")
        out.append(tok)
        if i == example.subj_end or i == example.obj_end:
            out[-1] += "]"
    return " ".join(out)


@dataclass(frozen=True)
class AnnotationItem:
    """One sentence in a task; ``is_gold`` marks a hidden control sentence (never exported to workers)."""

    example_id: str
    text: str
    is_gold: bool


@dataclass(frozen=True)
class AnnotationTask:
    """One HIT: a few sentences of one group, asked with one list of choices."""

    task_id: str
    group: str
    stage: int
    choices: tuple[str, ...]
    items: tuple[AnnotationItem, ...]


def cluster_type_pairs(
    examples: Sequence[RelationExample], clusters: Mapping[str, tuple[str, frozenset[str]]] | None = None
) -> dict[str, frozenset[tuple[str, str]]]:
    """The (subject type, object type) pairs of each annotation group of ``examples``.

    A super-cluster covers all the pairs of its definition (supplement Table 4), also those no example has; a group
    outside the clusters (``"<subj>2<obj>"``) covers its one pair.
    """
    clusters = RETACRED_SUPER_CLUSTERS if clusters is None else clusters
    out: dict[str, frozenset[tuple[str, str]]] = {}
    for ex in examples:
        group = annotation_group(ex, clusters)
        if group not in out:
            subj_objs = clusters.get(group)
            pairs = {(subj_objs[0], o) for o in subj_objs[1]} if subj_objs else {(ex.subj_type, ex.obj_type)}
            out[group] = frozenset(pairs)
    return out


def candidate_relations(
    examples: Sequence[RelationExample],
    relations: Sequence[str],
    *,
    negative_label: str = "no_relation",
    clusters: Mapping[str, tuple[str, frozenset[str]]] | None = None,
    compatible: Mapping[str, tuple[str, frozenset[str]]] | None = None,
) -> dict[str, tuple[str, ...]]:
    """The candidate relations of each annotation group: the type-compatible relations of its cluster.

    Paper §3.1/§3.2: a group's candidates are the relations whose argument types fit its (subject type, object type)
    pair, and a super-cluster's are the union over its groups. Candidates come from the fixed label set
    ``relations``, never from the labels the data happen to carry, so a relation absent from a split is still
    offered. A relation of ``relations`` that ``compatible`` does not list has no type constraint and is offered in
    every group: with untyped data (SemEval-2010 Task 8, all ``ENTITY``) every sentence falls in one group whose
    candidates are the whole relation inventory.

    Parameters
    ----------
    examples : sequence of RelationExample
        The sentences to annotate (only their types are read).
    relations : sequence of str
        The label set (e.g. ``TACRED_LABELS``); ``negative_label`` in it is skipped.
    compatible : mapping of relation to (subject type, object types), optional
        Default :data:`TYPE_COMPATIBLE` (TACRED and Re-TACRED relations).

    Returns
    -------
    dict of group to relations
        In :func:`stage_choices` order: the order of ``compatible``, then the unconstrained relations in the
        order of ``relations``.
    """
    compatible = TYPE_COMPATIBLE if compatible is None else compatible
    wanted = [r for r in dict.fromkeys(relations) if r != negative_label]
    typed = [r for r in compatible if r in set(wanted)]
    free = [r for r in wanted if r not in compatible]
    out = {}
    for group, pairs in cluster_type_pairs(examples, clusters).items():
        fits = [r for r in typed if any(s == compatible[r][0] and o in compatible[r][1] for s, o in pairs)]
        out[group] = (*fits, *free)
    return out


def stage_choices(candidates: Sequence[str], *, max_choices: int = 9, negative_label: str = "no_relation") -> list[tuple[str, ...]]:
    """Split a group's candidates into the fewest stages of at most ``max_choices`` relations, as even as possible,
    each followed by no_relation and wrong_type.

    Items whose answer is ``wrong_type`` in stage s are asked again with stage s + 1, until the stages run out
    (paper §3.2). Consecutive candidates stay together, so order them by meaning (:data:`TYPE_COMPATIBLE` does).
    """
    if max_choices < 1:
        raise RelationsError(f"max_choices must be >= 1, got {max_choices}")
    cands = [c for c in candidates if c != negative_label]
    n_stages = max(1, -(-len(cands) // max_choices))
    size, extra = divmod(len(cands), n_stages)
    bounds = np.cumsum([0] + [size + (s < extra) for s in range(n_stages)])
    return [(*cands[bounds[s] : bounds[s + 1]], negative_label, WRONG_TYPE) for s in range(n_stages)]


def build_tasks(
    examples: Sequence[RelationExample],
    gold: Sequence[RelationExample],
    *,
    candidates: Mapping[str, Sequence[str]] | None = None,
    relations: Sequence[str] | None = None,
    compatible: Mapping[str, tuple[str, frozenset[str]]] | None = None,
    stage: int = 0,
    items_per_task: int = 5,
    gold_per_task: int = 1,
    max_choices: int = 9,
    negative_label: str = "no_relation",
    clusters: Mapping[str, tuple[str, frozenset[str]]] | None = None,
    seed: int | np.random.Generator | None = None,
) -> list[AnnotationTask]:
    """Group sentences by entity types and pack them into tasks with hidden gold sentences.

    Each task holds ``items_per_task`` sentences of one group, ``gold_per_task`` of them control sentences from
    ``gold`` whose label is among the task's choices, at random positions (Re-TACRED: 1 gold in every 5).

    Parameters
    ----------
    examples : sequence of RelationExample
        Sentences to annotate (their current label is not shown).
    gold : sequence of RelationExample
        Hand-labelled control sentences; each group needs at least one whose label is a choice of ``stage``.
    candidates : mapping of group to relations, optional
        Default: :func:`candidate_relations` of ``relations`` over ``examples`` and ``gold`` together.
    relations : sequence of str, optional
        The label set candidates come from. Default: TACRED's or Re-TACRED's 42/40 labels when one covers the
        labels of ``examples`` and ``gold`` (:func:`~knotwork.relations.labels.covering_label_set`), else those
        labels; pass the data set's fixed inventory for other label schemes.
    compatible : mapping, optional
        Relation argument types (default :data:`TYPE_COMPATIBLE`).
    stage : int, default 0
        Which chunk of a group's candidates to ask (see :func:`stage_choices`).
    seed : int or numpy Generator

    Returns
    -------
    list of AnnotationTask

    Raises
    ------
    RelationsError
        For bad sizes, an id in both ``examples`` and ``gold``, or a group without usable gold (named).
    """
    if items_per_task < 1 or not 0 <= gold_per_task < items_per_task:
        raise RelationsError(
            f"need items_per_task >= 1 and 0 <= gold_per_task < items_per_task, got {items_per_task}, {gold_per_task}"
        )
    if stage < 0:  # a negative stage would silently index the stages from the end
        raise RelationsError(f"stage must be >= 0, got {stage}")
    overlap = {ex.id for ex in examples} & {ex.id for ex in gold}
    if overlap:
        raise RelationsError(f"{len(overlap)} id(s) are both to annotate and gold, e.g. {sorted(overlap)[:3]}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    if candidates is None:
        if relations is None:
            relations = covering_label_set(ex.relation for ex in [*examples, *gold])
        candidates = candidate_relations(
            [*examples, *gold], relations, negative_label=negative_label, clusters=clusters, compatible=compatible
        )
    by_group: dict[str, list[RelationExample]] = defaultdict(list)
    for ex in examples:
        by_group[annotation_group(ex, clusters)].append(ex)
    plans = []
    for group, items in by_group.items():  # check every group before building anything
        if group not in candidates:
            raise RelationsError(f"group {group!r} has no candidate relations")
        stages = stage_choices(candidates[group], max_choices=max_choices, negative_label=negative_label)
        if stage >= len(stages):
            raise RelationsError(f"group {group!r} has only {len(stages)} stage(s); stage {stage} does not exist")
        choices = stages[stage]
        pool = [g for g in gold if annotation_group(g, clusters) == group and g.relation in choices]
        if gold_per_task and not pool:
            raise RelationsError(f"group {group!r} (stage {stage}) has no gold sentence whose label is one of {choices}")
        plans.append((group, items, choices, pool))
    tasks = []
    per = items_per_task - gold_per_task
    for group, items, choices, pool in plans:
        order = rng.permutation(len(items))
        for start in range(0, len(items), per):
            chosen = [AnnotationItem(items[i].id, mark_entities(items[i]), False) for i in order[start : start + per]]
            if gold_per_task:
                picks = rng.choice(len(pool), size=gold_per_task, replace=len(pool) < gold_per_task)
                for p in picks:
                    pos = int(rng.integers(len(chosen) + 1))
                    chosen.insert(pos, AnnotationItem(pool[p].id, mark_entities(pool[p]), True))
            tasks.append(AnnotationTask(f"{group}-s{stage}-{start // per:05d}", group, stage, choices, tuple(chosen)))
    return tasks


def tasks_to_rows(tasks: Sequence[AnnotationTask]) -> list[dict[str, str]]:
    """One flat row per task in the CSV layout crowdsourcing platforms take (MTurk batch input).

    Columns: ``task_id, group, stage, choices`` (``|``-separated), then ``item_{k}_id, item_{k}_text`` for
    k = 1..max items. Which item is gold is not exported: workers must not see it.
    """
    width = max((len(t.items) for t in tasks), default=0)
    rows = []
    for t in tasks:
        row = {"task_id": t.task_id, "group": t.group, "stage": str(t.stage), "choices": "|".join(t.choices)}
        for k in range(width):
            item = t.items[k] if k < len(t.items) else None
            row[f"item_{k + 1}_id"] = item.example_id if item else ""
            row[f"item_{k + 1}_text"] = item.text if item else ""
        rows.append(row)
    return rows
