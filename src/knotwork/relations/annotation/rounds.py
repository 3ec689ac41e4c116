"""Running a re-annotation round: ingest answers, screen workers on gold, adjudicate adaptively, emit a patch."""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from knotwork._errors import RelationsError
from knotwork.relations.annotation.tasks import (
    WRONG_TYPE,
    annotation_group,
    build_tasks,
    candidate_relations,
    stage_choices,
)
from knotwork.relations.crowd._base import check_answers
from knotwork.relations.data import RelationExample
from knotwork.relations.labels import covering_label_set
from knotwork.relations.patch import Patch, UnknownPatchIdError

_ITEM = re.compile(r"^Input\.item_(\d+)_id$")


def _stages(results: pd.DataFrame, column: str, rows: np.ndarray) -> np.ndarray:
    """The ``column`` of stages as ints (all 0 without the column); refuses the first row that is not an int >= 0."""
    if column not in results.columns:
        return np.zeros(len(results), dtype=np.int64)
    raw = results[column].astype(str).str.strip()
    ok = raw.str.fullmatch(r"\d+").to_numpy(dtype=bool)
    if not ok.all():
        i = int(np.flatnonzero(~ok)[0])
        raise RelationsError(f"row {rows[i]}: {column} {results[column].iloc[i]!r} is not an integer >= 0")
    return raw.astype(np.int64).to_numpy()


def answers_from_platform(results: pd.DataFrame) -> pd.DataFrame:
    """Turn a platform's wide results table into long answers ``task, worker, label, group, stage, row``.

    Accepts MTurk batch results (``WorkerId``, ``Input.item_{k}_id``, ``Answer.item_{k}``, optional
    ``Input.group``, ``Input.stage`` and ``Input.choices``) or an already long table with ``task, worker, label``
    (optional ``group``, ``stage``). Here ``task`` is the sentence id, since aggregation is per sentence, ``stage``
    the candidate subset the question offered (0 when absent) and ``row`` the 1-based row of ``results`` the
    answer came from (row 1 is the first row after a CSV's header).

    Raises
    ------
    RelationsError
        When neither layout is found, a stage is not an integer >= 0 (naming the row), or an answered item has no
        label or a label that is not one of its task's ``Input.choices`` (naming the row, item and sentence id).
    """
    rows = np.arange(1, len(results) + 1)
    long = {"task", "worker", "label"} <= set(results.columns)
    stage = _stages(results, "stage" if long else "Input.stage", rows)
    if long:
        out = check_answers(results).copy()
        out["group"] = results["group"].to_numpy() if "group" in results.columns else ""
        out["stage"] = stage
        out["row"] = rows
        return out.reset_index(drop=True)
    if "WorkerId" not in results.columns:
        raise RelationsError("answers need either columns task, worker, label or MTurk's WorkerId and Input.item_k_id")
    items = sorted(int(m.group(1)) for c in results.columns if (m := _ITEM.match(c)))
    if not items:
        raise RelationsError("no 'Input.item_{k}_id' columns found in the results table")
    choices = results["Input.choices"].fillna("").astype(str).str.split("|") if "Input.choices" in results else None
    parts = []
    for k in items:
        ans_col = f"Answer.item_{k}"
        if ans_col not in results.columns:
            raise RelationsError(f"column {ans_col!r} is missing for item {k}")
        ids = results[f"Input.item_{k}_id"].fillna("").astype(str)
        has = ids != ""
        labels = results[ans_col]
        missing = has & (labels.isna() | (labels.astype(str) == ""))
        if missing.any():
            row = int(np.flatnonzero(missing.to_numpy())[0])
            raise RelationsError(f"row {row + 1}, item {k} (id {ids.iloc[row]!r}): no answer")
        if choices is not None:
            offered = [lab in opts for lab, opts in zip(labels.astype(str), choices, strict=True)]
            outside = has.to_numpy() & ~np.array(offered, dtype=bool)
            if outside.any():
                row = int(np.flatnonzero(outside)[0])
                raise RelationsError(
                    f"row {row + 1}, item {k} (id {ids.iloc[row]!r}), worker {results['WorkerId'].iloc[row]}: answer "
                    f"{labels.iloc[row]!r} is not one of the task's choices {choices.iloc[row]}"
                )
        parts.append(
            pd.DataFrame(
                {
                    "task": ids[has].to_numpy(),
                    "worker": results.loc[has, "WorkerId"].astype(str).to_numpy(),
                    "label": labels[has].astype(str).to_numpy(),
                    "group": results.loc[has, "Input.group"].astype(str).to_numpy() if "Input.group" in results else "",
                    "stage": stage[has.to_numpy()],
                    "row": rows[has.to_numpy()],
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def check_round_answers(
    answers: pd.DataFrame, *, labels: Collection[str] | None = None, gold: Iterable[str] = ()
) -> None:
    """Refuse answers that would silently skew a round, before any aggregation.

    - The same worker answering the same sentence twice (in one stage, when ``answers`` has a ``stage`` column)
      would count twice in every vote. Gold sentences are exempt: a gold sentence is hidden in many tasks, and one
      worker may meet it more than once. A sentence asked again with the next candidate subset is a new question.
    - An answer outside ``labels`` (the label set plus ``wrong_type``) would be written into the patch.

    Parameters
    ----------
    answers : DataFrame
        ``task, worker, label`` and optionally ``row`` (as from :func:`answers_from_platform`), used in messages.
    labels : collection of str, optional
        The allowed answers; by default every label is accepted.
    gold : iterable of str
        Ids of the hidden gold sentences.

    Raises
    ------
    RelationsError
        Naming the worker, the sentence id, the label and the rows.
    """
    a = check_answers(answers)
    rows = answers["row"].to_numpy() if "row" in answers.columns else np.arange(1, len(a) + 1)
    if labels is not None:
        allowed = frozenset(labels)
        outside = ~a["label"].isin(allowed).to_numpy()
        if outside.any():
            i = int(np.flatnonzero(outside)[0])
            raise RelationsError(
                f"row {rows[i]}: worker {a['worker'].iloc[i]} answered {a['label'].iloc[i]!r} for sentence "
                f"{a['task'].iloc[i]}, which is not in the label set of {len(allowed)} labels"
            )
    a = a.assign(stage=answers["stage"].to_numpy() if "stage" in answers.columns else 0)
    items = ~a["task"].isin(set(gold)).to_numpy()
    twice = a[items].duplicated(["worker", "task", "stage"], keep=False).to_numpy()
    if twice.any():
        first = a[items][twice].iloc[0]
        same = ((a["worker"] == first["worker"]) & (a["task"] == first["task"]) & (a["stage"] == first["stage"])).to_numpy()
        where = ", ".join(str(r) for r in rows[same])
        staged = f" in stage {first['stage']}" if a["stage"].nunique() > 1 else ""
        raise RelationsError(
            f"worker {first['worker']} answered sentence {first['task']}{staged} {int(same.sum())} times "
            f"(rows {where}); each worker may answer a sentence once"
        )


def screen_workers(
    answers: pd.DataFrame, gold: Mapping[str, str], *, min_accuracy: float = 0.8, min_gold: int = 1, by_group: bool = True
) -> pd.DataFrame:
    """Each worker's accuracy on hidden gold sentences, and whether it passes (accuracy **>** ``min_accuracy``).

    Re-TACRED kept only workers above 80% on gold, computed per super-cluster (``by_group``). Workers with fewer
    than ``min_gold`` gold answers in a group are not accepted there.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``worker`` (and ``group``), columns ``n_gold, n_correct, accuracy, accepted``.
    """
    if not 0.0 <= min_accuracy <= 1.0:
        raise RelationsError(f"min_accuracy must be in [0, 1], got {min_accuracy}")
    a = answers.copy()
    if "group" not in a.columns or not by_group:
        a["group"] = ""
    on_gold = a[a["task"].isin(gold.keys())].copy()
    on_gold["correct"] = on_gold["label"].to_numpy() == on_gold["task"].map(gold).to_numpy()
    keys = ["worker", "group"]
    stats = on_gold.groupby(keys)["correct"].agg(n_gold="size", n_correct="sum")
    everyone = a[keys].drop_duplicates().set_index(keys).index
    stats = stats.reindex(everyone, fill_value=0)
    stats["accuracy"] = stats["n_correct"] / stats["n_gold"].where(stats["n_gold"] > 0)
    stats["accepted"] = (stats["n_gold"] >= min_gold) & (stats["accuracy"].fillna(0.0) > min_accuracy)
    return stats if by_group else stats.droplevel("group")


def filter_answers(answers: pd.DataFrame, screening: pd.DataFrame, gold: Iterable[str] = ()) -> pd.DataFrame:
    """Drop answers of rejected workers (per group when ``screening`` is per group) and answers on gold sentences."""
    a = answers.copy()
    if "group" in screening.index.names:
        if "group" not in a.columns:
            a["group"] = ""
        ok = pd.MultiIndex.from_frame(a[["worker", "group"]]).map(screening["accepted"].to_dict()).fillna(False)
    else:
        ok = a["worker"].map(screening["accepted"]).fillna(False)
    ok = np.asarray(ok, dtype=bool) & ~a["task"].isin(set(gold)).to_numpy()
    return a[ok].reset_index(drop=True)


def resolve(
    answers: pd.DataFrame,
    *,
    max_annotators: int = 5,
    min_votes: int = 2,
    n_asked: Mapping[object, int] | pd.Series | None = None,
) -> pd.DataFrame:
    """Adjudicate each sentence of one candidate subset (stage) by the Re-TACRED rule (supplement §E).

    Round 1 asks 2 annotators; a disagreement goes to a 3rd in round 2, and rounds 3 and 4 add one annotator each
    to the sentences still in disagreement, so a sentence has at most 5 answers. A sentence is resolved when its top
    label has at least ``min_votes`` votes and strictly more than any other label: 2-0 is ``agreed``; 2-1, 2-1-1
    and 2-1-1-1 are ``majority``. Under that schedule this is exactly "the new answer repeats an earlier one". A
    sentence that is not resolved ``needs_more`` until ``max_annotators`` answers were collected for it, and is then
    ``ambiguous`` (Re-TACRED v1.1 pruned such sentences).

    Parameters
    ----------
    answers : DataFrame
        ``task, worker, label``: the answers that count (after screening).
    max_annotators : int, default 5
        2 in round 1 plus one in each of rounds 2, 3 and 4.
    min_votes : int, default 2
    n_asked : mapping or Series of task to int, optional
        Answers collected per sentence, including answers later dropped by screening: a rejected worker's answer
        still used up its round, so the cap counts it. Sentences listed here without a counted answer appear with
        ``n_answers`` 0. Default: the number of ``answers`` per sentence.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``task``: ``label`` (the top label, first in sorted order on ties; "" without answers),
        ``n_answers``, ``n_top``, ``n_asked``, ``status`` in {agreed, majority, needs_more, ambiguous}.
    """
    if min_votes < 1 or max_annotators < min_votes:
        raise RelationsError(f"need 1 <= min_votes <= max_annotators, got min_votes={min_votes}, max_annotators={max_annotators}")
    a = check_answers(answers)
    counts = a.groupby(["task", "label"], sort=True).size().rename("n").reset_index()
    counts = counts.sort_values(["task", "n", "label"], ascending=[True, False, True], kind="stable")
    grouped = counts.groupby("task", sort=False)
    top = grouped.head(1).set_index("task")
    n_answers = grouped["n"].sum()
    second = grouped["n"].nth(1)
    second = pd.Series(second.to_numpy(), index=counts.loc[second.index, "task"].to_numpy()).reindex(top.index, fill_value=0)
    out = pd.DataFrame({"label": top["label"], "n_answers": n_answers.reindex(top.index), "n_top": top["n"]})
    resolved = (out["n_top"] >= min_votes) & (out["n_top"] > second)
    if n_asked is not None:
        asked = pd.Series(n_asked, dtype=np.int64)
        extra = asked.index.difference(out.index)
        out = pd.concat([out, pd.DataFrame({"label": "", "n_answers": 0, "n_top": 0}, index=extra)])
        resolved = resolved.reindex(out.index, fill_value=False)
        out["n_asked"] = np.maximum(asked.reindex(out.index).fillna(0).to_numpy(np.int64), out["n_answers"].to_numpy())
    else:
        out["n_asked"] = out["n_answers"]
    out["status"] = np.where(
        resolved,
        np.where(out["n_top"] == out["n_answers"], "agreed", "majority"),
        np.where(out["n_asked"] < max_annotators, "needs_more", "ambiguous"),
    )
    return out.rename_axis("task")


def adjudicate(
    answers: pd.DataFrame,
    n_stages: Mapping[str, int],
    *,
    asked: pd.DataFrame | None = None,
    max_annotators: int = 5,
    min_votes: int = 2,
) -> pd.DataFrame:
    """Each sentence's state in a staged re-annotation: :func:`resolve` at its latest stage, then route wrong_type.

    A sentence resolved to ``wrong_type`` (none of the offered relations fits) goes to the next candidate subset of
    its group (``next_stage``), where the rounds start again with 2 annotators; when its group has no further
    subset it stays ``wrong_type`` and :func:`round_to_patch` removes it (paper §3.2: "until either all of the
    subsets are exhausted, or all of the sentences are annotated with labels other than WRONG_TYPE"; Re-TACRED
    corrects no types).

    Parameters
    ----------
    answers : DataFrame
        The answers that count: ``task, worker, label, group, stage`` (gold sentences already removed).
    n_stages : mapping of group to int
        How many candidate subsets each group has (:func:`~knotwork.relations.annotation.stage_choices`).
    asked : DataFrame, optional
        Every answer collected (``task, group, stage``), screened-out ones included, to count the annotators a
        sentence used up; default ``answers``.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``task``: ``label, group, stage, n_answers, n_top, n_asked, status`` with status in {agreed,
        majority, needs_more, ambiguous, next_stage, wrong_type}.

    Raises
    ------
    RelationsError
        When a group is not in ``n_stages`` or a stage does not exist in its group (naming them).
    """
    asked = answers if asked is None else asked
    for col in ("group", "stage"):
        if col not in asked.columns or col not in answers.columns:
            raise RelationsError(f"answers need a {col!r} column to adjudicate by stage")
    where = asked.groupby("task", sort=True).agg(group=("group", "first"), stage=("stage", "max"))
    unknown = sorted(set(where["group"]) - set(n_stages))
    if unknown:
        raise RelationsError(f"group(s) {unknown[:3]} have no candidate subsets; cannot route their answers")
    limit = where["group"].map(dict(n_stages))
    beyond = where["stage"] >= limit
    if beyond.any():
        t = beyond.idxmax()
        raise RelationsError(
            f"sentence {t}: stage {where.loc[t, 'stage']} does not exist; group {where.loc[t, 'group']!r} has "
            f"{limit[t]} candidate subset(s)"
        )
    latest = where["stage"]
    at_latest = asked["stage"].to_numpy() == latest.reindex(asked["task"]).to_numpy()
    n_asked = asked[at_latest].groupby("task").size()
    counted = answers[answers["stage"].to_numpy() == latest.reindex(answers["task"]).to_numpy()]
    out = resolve(counted, max_annotators=max_annotators, min_votes=min_votes, n_asked=n_asked).reindex(where.index)
    out.insert(1, "group", where["group"])
    out.insert(2, "stage", latest)
    wrong = out["status"].isin(["agreed", "majority"]) & (out["label"] == WRONG_TYPE)
    more = (out["stage"] + 1 < limit).to_numpy()
    out.loc[wrong & more, "status"] = "next_stage"
    out.loc[wrong & ~more, "status"] = "wrong_type"
    return out


#: ``ask(tasks, *, n_workers, exclude, blocked)``: the platform. Each task goes to ``n_workers`` distinct workers,
#: none of ``blocked`` and none that ``exclude[sentence]`` lists for a sentence of the task; returns their answers as
#: a DataFrame ``task`` (sentence id), ``worker``, ``label``. :func:`knotwork.relations.simulate.simulate_task_answers`
#: simulates one.
Ask = Callable[..., pd.DataFrame]


@dataclass(frozen=True)
class ProtocolRun:
    """The outcome of :func:`run_protocol`.

    Attributes
    ----------
    labels : DataFrame
        The final state per sentence (:func:`adjudicate`): status agreed, majority, ambiguous or wrong_type.
    answers : DataFrame
        Every answer collected: ``task, worker, label, group, stage, round`` (gold sentences included).
    screening : DataFrame
        :func:`screen_workers` over all answers (empty without gold).
    history : DataFrame
        One row per sentence asked in a round: ``round, task, stage, n_asked, n_answers, label, status``, the
        sentence's state after that round.
    """

    labels: pd.DataFrame
    answers: pd.DataFrame
    screening: pd.DataFrame
    history: pd.DataFrame


def run_protocol(
    examples: Sequence[RelationExample],
    gold: Sequence[RelationExample],
    ask: Ask,
    *,
    relations: Sequence[str] | None = None,
    candidates: Mapping[str, Sequence[str]] | None = None,
    compatible: Mapping[str, tuple[str, frozenset[str]]] | None = None,
    clusters: Mapping[str, tuple[str, frozenset[str]]] | None = None,
    first_round: int = 2,
    max_annotators: int = 5,
    min_votes: int = 2,
    max_choices: int = 9,
    items_per_task: int = 5,
    gold_per_task: int = 1,
    min_accuracy: float = 0.8,
    block_after: int = 5,
    negative_label: str = "no_relation",
    seed: int | np.random.Generator | None = None,
) -> ProtocolRun:
    """Re-annotate ``examples`` with Re-TACRED's staged, adaptive protocol, ``ask`` standing in for the platform.

    Each round: build tasks (5 sentences of one group, 1 hidden gold) for the sentences that need answers, ask them,
    screen workers on gold (a worker is counted while its gold accuracy per group is above ``min_accuracy``, and no
    longer given tasks once it fails with at least ``block_after`` gold answers), and :func:`adjudicate`. A sentence
    new to a stage gets ``first_round`` (2) annotators; an unresolved one gets 1 more, up to ``max_annotators`` (5:
    rounds 2, 3 and 4 each add one); one resolved to wrong_type starts over with its group's next candidate subset.
    The run ends when every sentence is resolved, ambiguous or wrong_type with no subset left. Screening is redone
    on all answers every round, so a sentence resolved by a worker later rejected is reopened.

    Parameters
    ----------
    examples, gold : sequences of RelationExample
        The sentences to annotate and the hand-labelled control sentences.
    ask : callable
        The platform (see :data:`Ask`).
    relations, candidates, compatible, clusters, max_choices, items_per_task, gold_per_task, negative_label
        As in :func:`~knotwork.relations.annotation.build_tasks`. With ``gold_per_task=0`` or no gold there is no
        screening.
    seed : int or numpy Generator
        For task packing.

    Raises
    ------
    RelationsError
        For bad sizes, a group without usable gold, or a platform that returned no answer for a sentence it was
        asked (naming the sentence).
    """
    if first_round < min_votes or max_annotators < first_round:
        raise RelationsError(f"need min_votes <= first_round <= max_annotators, got {min_votes}, {first_round}, {max_annotators}")
    if not examples:
        raise RelationsError("no sentence to annotate")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    everything = [*examples, *gold]
    if candidates is None:
        relations = covering_label_set(ex.relation for ex in everything) if relations is None else relations
        candidates = candidate_relations(everything, relations, negative_label=negative_label, clusters=clusters,
                                         compatible=compatible)
    n_stages = {g: len(stage_choices(c, max_choices=max_choices, negative_label=negative_label)) for g, c in candidates.items()}
    by_id = {ex.id: ex for ex in examples}
    group_of = {ex.id: annotation_group(ex, clusters) for ex in everything}
    gold_map = {ex.id: ex.relation for ex in gold}
    screened = bool(gold_map) and gold_per_task > 0
    parts: list[pd.DataFrame] = []
    screening = pd.DataFrame()
    blocked: set = set()
    history = []
    state = pd.DataFrame({"stage": 0, "n_asked": 0, "status": "needs_more"}, index=pd.Index(list(by_id), name="task"))
    rnd = 0
    while True:
        todo = state[state["status"].isin(["needs_more", "next_stage"])]
        if todo.empty:
            break
        rnd += 1
        stage = todo["stage"] + (todo["status"] == "next_stage")
        fresh = (todo["status"] == "next_stage") | (todo["n_asked"] == 0)
        for (s, new), ids in stage.groupby([stage, fresh]).groups.items():
            before = [p[(p["stage"] == s).to_numpy()] for p in parts]
            exclude = pd.concat(before).groupby("task")["worker"].agg(set).to_dict() if before else {}
            tasks = build_tasks([by_id[i] for i in ids], gold, candidates=candidates, stage=int(s),
                                items_per_task=items_per_task, gold_per_task=gold_per_task, max_choices=max_choices,
                                negative_label=negative_label, clusters=clusters, seed=rng)
            got = check_answers(ask(tasks, n_workers=first_round if new else 1, exclude=exclude, blocked=set(blocked)))
            parts.append(got.assign(group=got["task"].map(group_of), stage=int(s), round=rnd))
        answers = pd.concat(parts, ignore_index=True)
        silent = sorted(set(todo.index) - set(answers.loc[answers["round"] == rnd, "task"]))
        if silent:
            raise RelationsError(f"round {rnd}: the platform returned no answer for sentence(s) {silent[:3]}")
        items = answers[answers["task"].isin(by_id)]
        if screened:
            screening = screen_workers(answers, gold_map, min_accuracy=min_accuracy)
            failed = screening[~screening["accepted"] & (screening["n_gold"] >= block_after)]
            blocked |= set(failed.index.get_level_values("worker"))
            kept = filter_answers(answers, screening, gold=gold_map)
        else:
            kept = items
        result = adjudicate(kept, n_stages, asked=items, max_annotators=max_annotators, min_votes=min_votes)
        state = result[["stage", "n_asked", "status"]].reindex(state.index)
        history.append(result.loc[todo.index].reset_index().assign(round=rnd))
    hist = pd.concat(history, ignore_index=True)[["round", "task", "stage", "n_asked", "n_answers", "label", "status"]]
    return ProtocolRun(result, answers, screening, hist)


def round_to_patch(
    dataset: Sequence[RelationExample],
    labels: Mapping[str, str],
    *,
    remove: Iterable[str] = (),
) -> Patch:
    """The patch a round produces: new labels for annotated ids, minus removed ones (ambiguous, wrong types).

    Sentences resolved to ``wrong_type`` are removed as well, as Re-TACRED removed them rather than fixing types.
    With nothing to remove the patch is relabel-only (TACREV style: only changed ids); otherwise it is a
    Re-TACRED style patch that lists every kept id.

    Raises
    ------
    UnknownPatchIdError
        When a labelled or removed id is not in ``dataset`` (also a KeyError).
    """
    old = {ex.id: ex.relation for ex in dataset}
    remove = set(remove) | {i for i, lab in labels.items() if lab == WRONG_TYPE}
    unknown = [i for i in [*labels, *remove] if i not in old]
    if unknown:
        raise UnknownPatchIdError(f"{len(unknown)} id(s) are not in the data set, e.g. {unknown[:5]}")
    if not remove:
        return Patch({i: lab for i, lab in labels.items() if old[i] != lab}, drop_missing=False)
    return Patch({i: labels.get(i, rel) for i, rel in old.items() if i not in remove}, drop_missing=True)
