"""Re-annotation rounds: task building, platform CSV round trip, screening, adjudication, patches, the CLI."""

from __future__ import annotations

import json
from collections import Counter

import pandas as pd
import pytest
from typer.testing import CliRunner

from knotwork.cli import app
from knotwork.relations import RelationExample, apply_patch, load_tacred
from knotwork.relations.annotation import (
    RETACRED_SUPER_CLUSTERS,
    WRONG_TYPE,
    adjudicate,
    annotation_group,
    answers_from_platform,
    build_tasks,
    candidate_relations,
    check_round_answers,
    filter_answers,
    resolve,
    round_to_patch,
    run_protocol,
    screen_workers,
    stage_choices,
    tasks_to_rows,
)
from knotwork.relations.io import dump_tacred
from knotwork.relations.labels import RETACRED_LABELS, TACRED_LABELS
from knotwork.relations.simulate import simulate_task_answers
from tests.cli_contract import refused
from tests.conftest import require_shared


def ex(ident, rel, subj="PERSON", obj="ORGANIZATION"):
    return RelationExample(ident, ("A", "works", "at", "B"), rel, 0, 0, 3, 3, subj, obj)


def test_groups_follow_retacred_super_clusters():
    assert annotation_group(ex("a", "x", "PERSON", "CITY")) == "per2locmulti"
    assert annotation_group(ex("a", "x", "ORGANIZATION", "URL")) == "org2miscmulti"
    assert annotation_group(ex("a", "x", "ENTITY", "ENTITY")) == "entity2entity"


def test_stage_choices_cap_at_nine_relations():
    cands = [f"r{i}" for i in range(14)]
    stages = stage_choices(cands, max_choices=9)
    assert [len(s) for s in stages] == [9, 9]  # 14 > 9: two subsets of 7, each + no_relation + wrong_type
    assert stages[0][-2:] == ("no_relation", WRONG_TYPE) and stages[1][0] == "r7"
    assert [len(s) for s in stage_choices(cands[:11], max_choices=9)] == [8, 7]  # 6 + 2, 5 + 2
    assert [len(s) for s in stage_choices(cands[:9], max_choices=9)] == [11]  # 9 fit in one question
    assert stage_choices([], max_choices=9) == [("no_relation", WRONG_TYPE)]


def test_build_tasks_places_one_gold_in_every_five():
    items = [ex(f"s{i}", "per:employee_of" if i % 2 else "no_relation") for i in range(22)]
    gold = [ex("g0", "per:employee_of"), ex("g1", "no_relation")]
    tasks = build_tasks(items, gold, seed=0)
    assert len(tasks) == 6  # ceil(22 / 4)
    for t in tasks:
        assert sum(it.is_gold for it in t.items) == 1 and len(t.items) <= 5
        # PERSON -> ORGANIZATION: the type-compatible TACRED relations, not only the one the data carry
        assert t.choices == ("per:employee_of", "per:schools_attended", "no_relation", WRONG_TYPE)
    annotated = Counter(it.example_id for t in tasks for it in t.items if not it.is_gold)
    assert set(annotated) == {f"s{i}" for i in range(22)} and set(annotated.values()) == {1}
    gold_positions = {next(k for k, it in enumerate(t.items) if it.is_gold) for t in tasks}
    assert len(gold_positions) > 1  # gold is not always in the same slot
    rows = tasks_to_rows(tasks)
    assert "is_gold" not in " ".join(rows[0]) and rows[0]["item_1_text"].startswith("[S: A]")


def test_build_tasks_errors_name_the_group():
    items = [ex("s0", "no_relation", "PERSON", "CITY")]
    with pytest.raises(ValueError, match=r"group 'per2locmulti' \(stage 0\) has no gold sentence"):
        build_tasks(items, [ex("g", "no_relation")], seed=0)
    with pytest.raises(ValueError, match=r"1 id\(s\) are both to annotate and gold"):
        build_tasks(items, [ex("s0", "no_relation", "PERSON", "CITY")], seed=0)


def test_mturk_layout_is_read_back():
    results = pd.DataFrame(
        {
            "WorkerId": ["w1", "w2"],
            "Input.group": ["per2org", "per2org"],
            "Input.item_1_id": ["s1", "s1"],
            "Answer.item_1": ["per:employee_of", "no_relation"],
            "Input.item_2_id": ["g1", ""],
            "Answer.item_2": ["no_relation", ""],
        }
    )
    long = answers_from_platform(results)
    assert long[["task", "worker", "label", "row"]].values.tolist() == [
        ["s1", "w1", "per:employee_of", 1], ["s1", "w2", "no_relation", 2], ["g1", "w1", "no_relation", 1]
    ]
    results.loc[0, "Answer.item_2"] = ""
    with pytest.raises(ValueError, match=r"row 1, item 2 \(id 'g1'\): no answer"):
        answers_from_platform(results)
    results.loc[0, "Answer.item_2"] = "per:title"
    results["Input.choices"] = "per:employee_of|no_relation|wrong_type"
    with pytest.raises(ValueError, match=r"row 1, item 2 \(id 'g1'\), worker w1: answer 'per:title' is not one of"):
        answers_from_platform(results)


def test_round_answers_refuse_duplicates_and_unknown_labels():
    answers = pd.DataFrame(
        {"task": ["s1", "g1", "s1", "g1", "s1"], "worker": ["a", "a", "b", "a", "a"], "label": ["x", "x", "y", "x", "y"]}
    )
    # gold g1 met twice by worker a is allowed; sentence s1 answered twice by a (rows 1 and 5) is not
    with pytest.raises(ValueError, match=r"worker a answered sentence s1 2 times \(rows 1, 5\)"):
        check_round_answers(answers, gold={"g1"})
    check_round_answers(answers.iloc[:4], gold={"g1"})
    with pytest.raises(ValueError, match=r"row 3: worker b answered 'y' for sentence s1, which is not in the label set"):
        check_round_answers(answers.iloc[:4], labels={"x"}, gold={"g1"})


def test_screening_and_filtering():
    answers = pd.DataFrame(
        {
            "task": ["g1", "g2", "g1", "g2", "s1", "s1"],
            "worker": ["good", "good", "bad", "bad", "good", "bad"],
            "label": ["x", "y", "x", "x", "x", "y"],
            "group": "g",
        }
    )
    screening = screen_workers(answers, {"g1": "x", "g2": "y"}, min_accuracy=0.8)
    assert screening.loc[("good", "g"), "accepted"] and not screening.loc[("bad", "g"), "accepted"]
    assert screening.loc[("bad", "g"), "accuracy"] == 0.5
    kept = filter_answers(answers, screening, gold=["g1", "g2"])
    assert kept[["task", "worker"]].values.tolist() == [["s1", "good"]]


def test_resolve_follows_the_adaptive_policy():
    # hand-worked: 2 answers, then one more per round up to 5 (supplement §E); resolved = top >= 2 and unique
    table = {
        1: "xx",  # round 1: agreed
        2: "xyx",  # round 2: 2-1 majority
        3: "xyz",  # 1-1-1: needs a 4th
        4: "xyzx",  # round 3: 2-1-1 majority
        5: "xyzw",  # 1-1-1-1: needs a 5th
        6: "xyzwx",  # round 4: 2-1-1-1 majority
        7: "xyzwv",  # 5 different answers: ambiguous
        8: "x",  # one answer left (the other screened out): needs more
        9: "xyxy",  # 2-2 (possible only after screening): a 5th decides
    }
    df = pd.DataFrame([(t, f"w{k}", lab) for t, labs in table.items() for k, lab in enumerate(labs)],
                      columns=["task", "worker", "label"])
    res = resolve(df)
    assert res["status"].to_dict() == {
        1: "agreed", 2: "majority", 3: "needs_more", 4: "majority", 5: "needs_more", 6: "majority",
        7: "ambiguous", 8: "needs_more", 9: "needs_more",
    }
    assert res.loc[[2, 4, 6], "label"].tolist() == ["x", "x", "x"] and res.loc[6, "n_answers"] == 5
    # the cap counts answers screening dropped: sentence 8 used 5 annotators, sentence 10 lost all its answers
    res = resolve(df, n_asked={8: 5, 9: 4, 10: 2})
    assert res.loc[8, "status"] == "ambiguous" and res.loc[9, "status"] == "needs_more"
    assert res.loc[10].to_dict() == {"label": "", "n_answers": 0, "n_top": 0, "n_asked": 2, "status": "needs_more"}
    assert resolve(df, max_annotators=4).loc[[5, 9], "status"].tolist() == ["ambiguous", "ambiguous"]


def test_round_to_patch_styles():
    data = [ex("a", "no_relation"), ex("b", "per:employee_of"), ex("c", "no_relation")]
    relabel = round_to_patch(data, {"a": "per:employee_of", "b": "per:employee_of"})
    assert relabel.drop_missing is False and dict(relabel.labels) == {"a": "per:employee_of"}
    pruned = round_to_patch(data, {"a": "per:employee_of", "c": WRONG_TYPE}, remove=["b"])
    assert pruned.drop_missing and dict(pruned.labels) == {"a": "per:employee_of"}
    assert [(e.id, e.relation) for e in apply_patch(data, pruned)] == [("a", "per:employee_of")]
    with pytest.raises(KeyError, match="not in the data set"):
        round_to_patch(data, {"zz": "x"})


def test_cli_round_on_tacred_sample(tmp_path):
    """annotate -> simulated platform answers -> aggregate -> patch, on the real 60-example sample."""
    sample = require_shared("re", "tacred_sample")
    runner = CliRunner()
    out = tmp_path / "round"
    train_file = sample / "train.json"
    result = runner.invoke(app, ["relations", "annotate", str(train_file), str(sample / "dev.json"), "--out", str(out)])
    # The sample's dev split has no gold sentence for org2locmulti / org2per, and its one per2locmulti gold sentence
    # (per:cities_of_residence) is not a choice of that group's first subset: the error names the group.
    assert result.exit_code == 2 and "(stage 0) has no gold sentence" in result.output
    assert any(f"group '{g}'" in result.output for g in ("org2locmulti", "org2per", "per2locmulti"))
    data = [e for e in load_tacred(train_file) if annotation_group(e) not in {"org2locmulti", "org2per", "per2locmulti"}]
    assert len(data) == 15  # 20 minus 2 + 1 + 2 sentences of those groups
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("".join(f"{e.id}\n" for e in data))
    result = runner.invoke(
        app, ["relations", "annotate", str(train_file), str(sample / "dev.json"), "--out", str(out), "--ids", str(ids_file)]
    )
    assert result.exit_code == 0, result.output
    tasks_csv = pd.read_csv(out / "tasks.csv", dtype=str, keep_default_na=False)
    gold_key = json.loads((out / "gold_key.json").read_text())
    assert not set(tasks_csv.columns) & {"is_gold", "relation"}
    truth = {**{e.id: e.relation for e in data}, **gold_key}
    # Two perfect workers answer every task on the "platform"; rebuild MTurk's results layout from tasks.csv.
    rows = []
    for _, t in tasks_csv.iterrows():
        for worker in ("W1", "W2"):
            row = {"WorkerId": worker, "Input.group": t["group"]}
            k = 1
            while f"item_{k}_id" in t:
                row[f"Input.item_{k}_id"] = t[f"item_{k}_id"]
                row[f"Answer.item_{k}"] = truth.get(t[f"item_{k}_id"], "")
                k += 1
            rows.append(row)
    pd.DataFrame(rows).to_csv(tmp_path / "results.csv", index=False)
    result = runner.invoke(
        app, ["relations", "aggregate", str(tmp_path / "results.csv"), str(train_file), "--out", str(tmp_path / "agg"),
              "--gold-key", str(out / "gold_key.json")]
    )
    assert result.exit_code == 0, result.output
    labels = pd.read_csv(tmp_path / "agg" / "labels.csv", dtype=str).set_index("id")
    assert (labels["status"] == "agreed").all()
    assert labels["label"].to_dict() == {i: truth[i] for i in labels.index}
    patch = json.loads((tmp_path / "agg" / "patch.json").read_text())
    assert patch == []  # perfect answers agree with the current labels: nothing to relabel
    result = runner.invoke(
        app, ["relations", "aggregate", str(tmp_path / "results.csv"), str(train_file), "--out", str(tmp_path / "agg")]
    )
    assert result.exit_code == 2 and "exists; pass --force" in result.output
    result = runner.invoke(  # without the gold key, the gold ids are unknown sentences: refused, not skipped
        app, ["relations", "aggregate", str(tmp_path / "results.csv"), str(train_file), "--out", str(tmp_path / "agg"),
              "--force"]
    )
    assert result.exit_code == 2 and "answered id(s) are neither in" in result.output
    result = runner.invoke(
        app, ["relations", "aggregate", str(tmp_path / "results.csv"), str(train_file), "--out", str(tmp_path / "agg"),
              "--gold-key", str(out / "gold_key.json"), "--method", "dawid-skene", "--force"]
    )
    assert result.exit_code == 0, result.output
    ds_labels = pd.read_csv(tmp_path / "agg" / "labels.csv", dtype=str).set_index("id")["label"]
    assert ds_labels.to_dict() == labels["label"].to_dict()


def test_simulated_round_excludes_previous_workers():
    items = [ex(f"s{i}", "no_relation") for i in range(8)]
    tasks = build_tasks(items, [ex("g", "no_relation")], seed=0)
    truth = {**{e.id: e.relation for e in items}, "g": "no_relation"}
    workers = pd.Series([1.0, 1.0, 1.0], index=["a", "b", "c"])
    ans = simulate_task_answers(tasks, truth, workers, n_workers=1, exclude={"s0": {"a", "b"}}, seed=0)
    assert set(ans.loc[ans["task"] == "s0", "worker"]) == {"c"}
    assert (ans["label"] == "no_relation").all()
    with pytest.raises(ValueError, match="eligible workers"):
        simulate_task_answers(tasks, truth, workers, n_workers=2, exclude={"s0": {"a", "b"}}, seed=0)


# ------------------------------------------------------------------ the paper's protocol (supplement §E, §3.2)

PP, PL = ("PERSON", "PERSON"), ("PERSON", "CITY")


def test_candidates_are_the_type_compatible_relations_of_the_cluster():
    """Candidates come from the fixed label set and the sentence's type cluster, not from the labels the data carry."""
    data = [ex("a", "no_relation", *PP), ex("b", "no_relation", "PERSON", "NATIONALITY"), ex("c", "no_relation")]
    cands = candidate_relations(data, TACRED_LABELS)
    assert cands["per2per"] == ("per:alternate_names", "per:spouse", "per:children", "per:parents", "per:siblings",
                                "per:other_family")
    assert cands["per2org"] == ("per:employee_of", "per:schools_attended")
    # per2locmulti (NATIONALITY, COUNTRY, STATE_OR_PROVINCE, CITY, LOCATION): 11 relations, asked as 6 then 5
    birth_death = [f"per:{p}_of_{e}" for e in ("birth", "death") for p in ("city", "stateorprovince", "country")]
    residence = ["per:cities_of_residence", "per:stateorprovinces_of_residence", "per:countries_of_residence"]
    assert stage_choices(cands["per2locmulti"]) == [
        (*birth_death, "no_relation", WRONG_TYPE), (*residence, "per:origin", "per:employee_of", "no_relation", WRONG_TYPE)
    ]
    assert candidate_relations(data, RETACRED_LABELS)["per2per"][0] == "per:identity"
    # every positive relation of both label sets is offered in some super-cluster
    every_pair = [ex(f"{g}{o}", "no_relation", s, o) for g, (s, objs) in RETACRED_SUPER_CLUSTERS.items() for o in objs]
    for labels in (TACRED_LABELS, RETACRED_LABELS):
        offered = set().union(*candidate_relations(every_pair, labels).values())
        assert offered == set(labels) - {"no_relation"}
    # untyped data (SemEval: every argument ENTITY): one group, the whole inventory, whatever the data carry
    semeval = ["no_relation", "Cause-Effect", "Component-Whole", "Message-Topic"]
    untyped = [ex("u", "no_relation", "ENTITY", "ENTITY")]
    assert candidate_relations(untyped, semeval) == {"entity2entity": ("Cause-Effect", "Component-Whole", "Message-Topic")}


class ScriptedPlatform:
    """A platform whose answers come from a table: ``script[(sentence, stage)]`` lists ``(worker, label)`` in the
    order the rounds ask for them; gold sentences are answered from ``gold[worker]``. Records every call."""

    def __init__(self, script, gold=None):
        self.script = {k: list(v) for k, v in script.items()}
        self.gold = gold or {}
        self.calls = []

    def __call__(self, tasks, *, n_workers, exclude, blocked):
        rows = []
        for t in tasks:
            items = [it for it in t.items if not it.is_gold]
            assert len(items) == 1  # one sentence per task in these tests, so its workers are the task's workers
            sid = items[0].example_id
            given = [self.script[(sid, t.stage)].pop(0) for _ in range(n_workers)]
            self.calls.append((sid, t.stage, n_workers, set(exclude.get(sid, ())), set(blocked)))
            for worker, label in given:
                assert label in t.choices, (sid, t.stage, label, t.choices)
                assert worker not in exclude.get(sid, ()) and worker not in blocked
                rows.append((sid, worker, label))
                rows += [(g.example_id, worker, self.gold[worker]) for g in t.items if g.is_gold]
        return pd.DataFrame(rows, columns=["task", "worker", "label"])


def answers_of(labels, first=0):
    return [(f"w{first + k}", lab) for k, lab in enumerate(labels)]


SP, SI, CH, PA, OF = "per:spouse", "per:siblings", "per:children", "per:parents", "per:other_family"
CITY_BIRTH, CITIES_RES = "per:city_of_birth", "per:cities_of_residence"

#: sentence -> (types, {stage: answers in order}), and the outcome worked out by hand below.
SCRIPT = {
    "s1": (PP, {0: [SP, SP]}),  # round 1: agreed
    "s2": (PP, {0: [SP, SI, SI]}),  # round 2: 2-1
    "s3": (PP, {0: [SP, SI, CH, SI]}),  # round 3: 2-1-1
    "s4": (PP, {0: [SP, SI, CH, PA, SP]}),  # round 4: 2-1-1-1
    "s5": (PP, {0: [SP, SI, CH, PA, OF]}),  # 5 different answers: ambiguous
    "s6": (PP, {0: [WRONG_TYPE, WRONG_TYPE]}),  # per2per has one subset: wrong_type, removed
    "s7": (PL, {0: [WRONG_TYPE, CITY_BIRTH, WRONG_TYPE], 1: [CITIES_RES, CITIES_RES]}),  # wrong_type 2-1 -> subset 2
    "s8": (PL, {0: [WRONG_TYPE, WRONG_TYPE], 1: [WRONG_TYPE, WRONG_TYPE]}),  # subsets exhausted: wrong_type
    "s9": (PL, {0: [CITY_BIRTH, CITY_BIRTH]}),
}

#: (round, sentence) -> (stage, answers collected at that stage, status after the round), worked out by hand.
EXPECTED_HISTORY = {
    (1, "s1"): (0, 2, "agreed"), (1, "s2"): (0, 2, "needs_more"), (1, "s3"): (0, 2, "needs_more"),
    (1, "s4"): (0, 2, "needs_more"), (1, "s5"): (0, 2, "needs_more"), (1, "s6"): (0, 2, "wrong_type"),
    (1, "s7"): (0, 2, "needs_more"), (1, "s8"): (0, 2, "next_stage"), (1, "s9"): (0, 2, "agreed"),
    (2, "s2"): (0, 3, "majority"), (2, "s3"): (0, 3, "needs_more"), (2, "s4"): (0, 3, "needs_more"),
    (2, "s5"): (0, 3, "needs_more"), (2, "s7"): (0, 3, "next_stage"), (2, "s8"): (1, 2, "wrong_type"),
    (3, "s3"): (0, 4, "majority"), (3, "s4"): (0, 4, "needs_more"), (3, "s5"): (0, 4, "needs_more"),
    (3, "s7"): (1, 2, "agreed"),
    (4, "s4"): (0, 5, "majority"), (4, "s5"): (0, 5, "ambiguous"),
}
EXPECTED_FINAL = {
    "s1": (SP, "agreed", 0), "s2": (SI, "majority", 0), "s3": (SI, "majority", 0), "s4": (SP, "majority", 0),
    "s5": (CH, "ambiguous", 0),  # top label of a 1-1-1-1-1 tie: the first in sorted order
    "s6": (WRONG_TYPE, "wrong_type", 0), "s7": (CITIES_RES, "agreed", 1), "s8": (WRONG_TYPE, "wrong_type", 1),
    "s9": (CITY_BIRTH, "agreed", 0),
}


def test_protocol_round_by_round_on_a_hand_worked_table():
    data = [ex(sid, "no_relation", *types) for sid, (types, _) in SCRIPT.items()]
    platform = ScriptedPlatform({(sid, st): answers_of(labs) for sid, (_, by) in SCRIPT.items() for st, labs in by.items()})
    run = run_protocol(data, [], platform, relations=TACRED_LABELS, items_per_task=1, gold_per_task=0, seed=0)
    got = {(r.round, r.task): (r.stage, r.n_asked, r.status) for r in run.history.itertuples()}
    assert got == EXPECTED_HISTORY
    final = {t: (r.label, r.status, r.stage) for t, r in run.labels.iterrows()}
    assert final == EXPECTED_FINAL
    assert all(not left for left in platform.script.values())  # every scripted answer was asked for, no more
    # 2 annotators when a sentence meets a subset, 1 per later round; the workers of the same subset are excluded
    calls = {(sid, stage, len(excl)): n for sid, stage, n, excl, _ in platform.calls}
    assert calls[("s7", 0, 0)] == 2 and calls[("s7", 0, 2)] == 1 and calls[("s7", 1, 0)] == 2
    assert calls[("s5", 0, 4)] == 1 and len([c for c in platform.calls if c[0] == "s5"]) == 4
    assert run.answers.groupby("task").size().to_dict() == {"s1": 2, "s2": 3, "s3": 4, "s4": 5, "s5": 5, "s6": 2,
                                                            "s7": 5, "s8": 4, "s9": 2}
    # the patch relabels the resolved sentences and removes the ambiguous and wrong-type ones
    removed = run.labels.index[run.labels["status"].isin(["ambiguous", "wrong_type"])]
    settled = run.labels[run.labels["status"].isin(["agreed", "majority"])]
    patch = round_to_patch(data, settled["label"].to_dict(), remove=removed)
    assert dict(patch.labels) == {"s1": SP, "s2": SI, "s3": SI, "s4": SP, "s7": CITIES_RES, "s9": CITY_BIRTH}


def test_protocol_drops_and_blocks_a_worker_who_fails_gold():
    """Hand-worked: 'bad' fails its gold answer in round 1, so its answer on s1 no longer counts and it gets no
    more tasks; s1 then needs a 3rd annotator, whose answer agrees with good1's (2-0 among counted answers)."""
    data = [ex("s1", "no_relation", *PP)]
    gold = [ex("g", SP, *PP)]
    platform = ScriptedPlatform({("s1", 0): [("bad", CH), ("good1", SP), ("good2", SP)]},
                                gold={"bad": CH, "good1": SP, "good2": SP})
    run = run_protocol(data, gold, platform, relations=TACRED_LABELS, items_per_task=2, gold_per_task=1,
                       block_after=1, seed=0)
    assert [(c[2], c[4]) for c in platform.calls] == [(2, set()), (1, {"bad"})]
    assert run.labels.loc["s1", ["label", "status", "n_answers", "n_asked"]].tolist() == [SP, "agreed", 2, 3]
    assert run.screening.loc[("bad", "per2per"), "accuracy"] == 0.0
    assert run.screening.loc[("good2", "per2per"), "accepted"]
    # without gold the same answers give good2 the deciding vote in a 2-1 majority
    plain = run_protocol(data, [], ScriptedPlatform({("s1", 0): [("bad", CH), ("good1", SP), ("good2", SP)]}),
                         relations=TACRED_LABELS, items_per_task=1, gold_per_task=0, seed=0)
    assert plain.labels.loc["s1", ["label", "status", "n_answers"]].tolist() == [SP, "majority", 3]


def test_protocol_with_simulated_workers_end_to_end():
    """Perfect simulated workers recover every type-compatible true label, in its subset; a sentence whose true
    relation no subset of its cluster offers (types wrong) is answered wrong_type until the subsets run out."""
    truth = {"p0": SP, "p1": "no_relation", "l0": CITY_BIRTH, "l1": CITIES_RES, "l2": "per:employee_of",
             "bad": "per:title"}
    types = {"p0": PP, "p1": PP, "l0": PL, "l1": PL, "l2": PL, "bad": PP}
    data = [ex(i, "no_relation", *types[i]) for i in truth]
    gold = [ex("gp", "no_relation", *PP), ex("gl", "no_relation", *PL)]
    truth |= {"gp": "no_relation", "gl": "no_relation"}
    pool = pd.Series(1.0, index=[f"w{i}" for i in range(6)])
    run = run_protocol(
        data, gold,
        lambda tasks, *, n_workers, exclude, blocked: simulate_task_answers(
            tasks, truth, pool.drop(list(blocked)), n_workers=n_workers, exclude=exclude, seed=1),
        relations=TACRED_LABELS, seed=0,
    )
    final = run.labels[["label", "status", "stage"]].apply(tuple, axis=1).to_dict()
    assert final == {"p0": (SP, "agreed", 0), "p1": ("no_relation", "agreed", 0), "l0": (CITY_BIRTH, "agreed", 0),
                     "l1": (CITIES_RES, "agreed", 1), "l2": ("per:employee_of", "agreed", 1),
                     "bad": (WRONG_TYPE, "wrong_type", 0)}
    assert run.history["round"].max() == 2  # the second subset is asked in round 2, with 2 fresh annotators
    assert (run.answers[run.answers["task"] == "l1"].groupby("stage").size() == 2).all()


def test_adjudicate_routes_wrong_type_and_refuses_unknown_stages():
    answers = pd.DataFrame({
        "task": ["a", "a", "b", "b", "c", "c"], "worker": ["x", "y"] * 3,
        "label": [WRONG_TYPE, WRONG_TYPE, WRONG_TYPE, WRONG_TYPE, WRONG_TYPE, SP],
        "group": ["per2locmulti", "per2locmulti", "per2per", "per2per", "per2locmulti", "per2locmulti"],
        "stage": [0, 0, 0, 0, 1, 1],
    })
    res = adjudicate(answers, {"per2locmulti": 2, "per2per": 1})
    assert res["status"].to_dict() == {"a": "next_stage", "b": "wrong_type", "c": "needs_more"}
    assert res.loc["c", "stage"] == 1
    with pytest.raises(ValueError, match=r"sentence c: stage 1 does not exist; group 'per2locmulti' has 1"):
        adjudicate(answers, {"per2locmulti": 1, "per2per": 1})
    with pytest.raises(ValueError, match=r"group\(s\) \['per2per'\] have no candidate subsets"):
        adjudicate(answers, {"per2locmulti": 2})


def test_platform_stages_are_read_and_separate_duplicates():
    results = pd.DataFrame({"WorkerId": ["w1", "w1"], "Input.stage": ["0", "1"], "Input.item_1_id": ["s1", "s1"],
                            "Answer.item_1": [WRONG_TYPE, CITIES_RES]})
    long = answers_from_platform(results)
    assert long[["task", "worker", "stage"]].values.tolist() == [["s1", "w1", 0], ["s1", "w1", 1]]
    check_round_answers(long)  # one worker may answer the same sentence once per candidate subset
    with pytest.raises(ValueError, match=r"worker w1 answered sentence s1 in stage 1 2 times \(rows 2, 3\)"):
        check_round_answers(pd.concat([long, long.iloc[[1]].assign(row=3)], ignore_index=True))
    results.loc[1, "Input.stage"] = "first"
    with pytest.raises(ValueError, match=r"row 2: Input.stage 'first' is not an integer >= 0"):
        answers_from_platform(results)


def test_cli_aggregate_routes_stages(tmp_path):
    """aggregate over two stages' answers: next_stage.txt, needs_more.txt and the patch, worked out by hand."""
    data = [ex("s1", "no_relation", *PL), ex("s2", "no_relation", *PL), ex("s3", "per:spouse", *PP),
            ex("s4", "no_relation", *PP)]
    (tmp_path / "data.json").write_text(dump_tacred(data))
    rows = [("s1", "a", WRONG_TYPE, 0), ("s1", "b", WRONG_TYPE, 0),  # -> next subset
            ("s2", "a", WRONG_TYPE, 0), ("s2", "b", WRONG_TYPE, 0),  # stage 1 as well: exhausted -> removed
            ("s2", "a", WRONG_TYPE, 1), ("s2", "c", WRONG_TYPE, 1),
            ("s3", "a", SP, 0), ("s3", "b", SI, 0),  # 1-1 -> one more annotator
            ("s4", "a", CH, 0), ("s4", "b", CH, 0)]  # agreed, relabelled
    pd.DataFrame(rows, columns=["task", "worker", "label", "stage"]).to_csv(tmp_path / "ans.csv", index=False)
    out = tmp_path / "agg"
    result = CliRunner().invoke(app, ["relations", "aggregate", str(tmp_path / "ans.csv"), str(tmp_path / "data.json"),
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    labels = pd.read_csv(out / "labels.csv", dtype={"id": str}).set_index("id")
    assert labels["status"].to_dict() == {"s1": "next_stage", "s2": "wrong_type", "s3": "needs_more", "s4": "agreed"}
    assert (out / "next_stage.txt").read_text() == "s1\n" and (out / "needs_more.txt").read_text() == "s3\n"
    patch = json.loads((out / "patch.json").read_text())
    assert patch == {"s1": "no_relation", "s3": "per:spouse", "s4": CH}  # Re-TACRED style: s2 is dropped
    bad = tmp_path / "bad.csv"
    pd.DataFrame([("s4", "a", CH, 1)], columns=["task", "worker", "label", "stage"]).to_csv(bad, index=False)
    refused(["relations", "aggregate", bad, tmp_path / "data.json", "--out", tmp_path / "agg2"],
            match=r"bad\.csv: sentence s4: stage 1 does not exist; group 'per2per' has 1 candidate subset",
            inputs=[bad], out=tmp_path / "agg2")
    refused(["relations", "annotate", tmp_path / "data.json", tmp_path / "data.json", "--out", tmp_path / "t",
             "--labels", "any"], match=r"--labels any gives no candidate relations", out=tmp_path / "t")
