"""Running a re-annotation round: ingest answers, screen workers on gold, adjudicate adaptively, emit a patch."""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from knotwork._errors import RelationsError
from knotwork.relations.annotation.tasks import WRONG_TYPE
from knotwork.relations.crowd._base import check_answers
from knotwork.relations.data import RelationExample
from knotwork.relations.patch import Patch, UnknownPatchIdError

_ITEM = re.compile(r"^Input\.item_(\d+)_id$")


def answers_from_platform(results: pd.DataFrame) -> pd.DataFrame:
    """Turn a platform's wide results table into long answers ``task, worker, label, group, row``.

    Accepts MTurk batch results (``WorkerId``, ``Input.item_{k}_id``, ``Answer.item_{k}``, optional
    ``Input.group`` and ``Input.choices``) or an already long table with ``task, worker, label``. Here ``task`` is
    the sentence id, since aggregation is per sentence, and ``row`` the 1-based row of ``results`` the answer
    came from (row 1 is the first row after a CSV's header).

    Raises
    ------
    RelationsError
        When neither layout is found, or an answered item has no label or a label that is not one of its task's
        ``Input.choices`` (naming the row, item and sentence id).
    """
    rows = np.arange(1, len(results) + 1)
    if {"task", "worker", "label"} <= set(results.columns):
        out = check_answers(results).copy()
        out["group"] = results["group"].to_numpy() if "group" in results.columns else ""
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
                    "row": rows[has.to_numpy()],
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def check_round_answers(
    answers: pd.DataFrame, *, labels: Collection[str] | None = None, gold: Iterable[str] = ()
) -> None:
    """Refuse answers that would silently skew a round, before any aggregation.

    - The same worker answering the same sentence twice would count twice in every vote. Gold sentences are
      exempt: a gold sentence is hidden in many tasks, and one worker may meet it more than once.
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
    items = ~a["task"].isin(set(gold)).to_numpy()
    twice = a[items].duplicated(["worker", "task"], keep=False).to_numpy()
    if twice.any():
        first = a[items][twice].iloc[0]
        same = (a["worker"] == first["worker"]).to_numpy() & (a["task"] == first["task"]).to_numpy()
        where = ", ".join(str(r) for r in rows[same])
        raise RelationsError(
            f"worker {first['worker']} answered sentence {first['task']} {int(same.sum())} times (rows {where}); "
            "each worker may answer a sentence once"
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


def resolve(answers: pd.DataFrame, *, max_annotators: int = 4, min_votes: int = 2) -> pd.DataFrame:
    """Adjudicate each sentence by the Re-TACRED policy: 2 annotators, a 3rd and 4th on disagreement.

    A sentence is resolved when its top label has at least ``min_votes`` votes and strictly more than any other
    (``agreed`` if every answer agrees, else ``majority``). Otherwise it ``needs_more`` annotators until it has
    ``max_annotators``, and is then ``ambiguous`` (v1.1 pruned such sentences).

    Returns
    -------
    pandas.DataFrame
        Indexed by ``task``: ``label`` (the top label, first in sorted order on ties), ``n_answers``, ``n_top``,
        ``status`` in {agreed, majority, needs_more, ambiguous}.
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
    status = np.where(
        resolved,
        np.where(out["n_top"] == out["n_answers"], "agreed", "majority"),
        np.where(out["n_answers"] < max_annotators, "needs_more", "ambiguous"),
    )
    out["status"] = status
    return out


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
