"""Building crowd annotation tasks the Re-TACRED way: groups by entity types, capped choices, hidden gold 1 in 5."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from knotwork._errors import RelationsError
from knotwork.relations.data import RelationExample

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


def candidate_relations(
    examples: Sequence[RelationExample],
    *,
    negative_label: str = "no_relation",
    clusters: Mapping[str, tuple[str, frozenset[str]]] | None = None,
) -> dict[str, tuple[str, ...]]:
    """Positive relations observed in each annotation group, most frequent first (the type-compatible set)."""
    seen: dict[str, Counter] = defaultdict(Counter)
    for ex in examples:
        group = annotation_group(ex, clusters)
        seen[group]  # every group gets an entry, even one with only negatives
        if ex.relation != negative_label:
            seen[group][ex.relation] += 1
    return {g: tuple(r for r, _ in sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))) for g, c in seen.items()}


def stage_choices(candidates: Sequence[str], *, max_choices: int = 9, negative_label: str = "no_relation") -> list[tuple[str, ...]]:
    """Split a group's candidates into stages of at most ``max_choices`` relations, each + no_relation + wrong_type.

    Items answered ``wrong_type`` in stage s are asked again with stage s + 1 (paper, supplement §E).
    """
    if max_choices < 1:
        raise RelationsError(f"max_choices must be >= 1, got {max_choices}")
    cands = [c for c in candidates if c != negative_label]
    chunks = [cands[i : i + max_choices] for i in range(0, len(cands), max_choices)] or [[]]
    return [(*chunk, negative_label, WRONG_TYPE) for chunk in chunks]


def build_tasks(
    examples: Sequence[RelationExample],
    gold: Sequence[RelationExample],
    *,
    candidates: Mapping[str, Sequence[str]] | None = None,
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
        Default: :func:`candidate_relations` over ``examples`` and ``gold`` together.
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
        candidates = candidate_relations([*examples, *gold], negative_label=negative_label, clusters=clusters)
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
