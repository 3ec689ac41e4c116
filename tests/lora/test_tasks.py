"""Task loading (errors name the bad file/line) and the joint label set's deduplication."""

from __future__ import annotations

import json

import pytest

from knotwork._errors import MergeError
from knotwork.lora.tasks import (
    LABEL_PHRASES,
    TextSplit,
    TextTask,
    build_joint_labels,
    label_phrase,
    load_text_task,
    task_data_sha256,
)


def _write_task(root, labels, rows_by_split):
    root.mkdir(parents=True, exist_ok=True)
    (root / "labels.json").write_text(json.dumps(labels))
    for split, rows in rows_by_split.items():
        (root / f"{split}.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return root


def test_load_task_reads_splits_and_joins_pairs(tmp_path):
    rows = [{"text": "good", "label": 1}, {"texts": ["a premise", "a hypothesis"], "label": 0}]
    folder = _write_task(tmp_path / "nli", ["no", "yes"], {"train": rows, "val": rows[:1], "test": rows[1:]})
    task = load_text_task(folder)
    assert task.name == "nli" and task.label_names == ("no", "yes")
    assert task.splits["train"].texts == ("good", "a premise [SEP] a hypothesis")
    assert task.splits["train"].labels == (1, 0)
    assert len(task.splits["test"]) == 1


def test_load_task_errors_name_the_bad_item(tmp_path):
    with pytest.raises(MergeError, match="nope: task folder not found"):
        load_text_task(tmp_path / "nope")
    folder = _write_task(tmp_path / "t", ["a", "b"], {"train": [{"text": "x", "label": 1}]})
    with pytest.raises(MergeError, match=r"lacks split file\(s\): val.jsonl, test.jsonl"):
        load_text_task(folder)
    (folder / "val.jsonl").write_text('{"text": "x", "label": 1}\n{"text": "y"}\n')
    with pytest.raises(ValueError, match=r"val.jsonl:2: expected an object"):
        load_text_task(folder, splits=("val",))
    (folder / "val.jsonl").write_text('{"text": "x", "label": 1}\n{"text": "x", "label": 5}\n')
    with pytest.raises(ValueError, match=r"val.jsonl:2: label 5 is not in labels.json \(ids 0..1\)"):
        load_text_task(folder, splits=("val",))
    with pytest.raises(ValueError, match=r"Task 't' split 'val' has label ids \[5\] outside 0..1"):
        TextTask("t", ("a", "b"), {"val": TextSplit(("x",), (5,))})
    (folder / "labels.json").write_text('["a", "a"]')
    with pytest.raises(ValueError, match="labels.json: duplicate label names"):
        load_text_task(folder, splits=())
    with pytest.raises(ValueError, match="Task 't' has duplicate label names"):
        TextTask("t", ("a", "a"))


def test_task_data_sha256_follows_the_files(tmp_path):
    import hashlib

    folder = _write_task(tmp_path / "t", ["a", "b"], {"train": [{"text": "x", "label": 1}]})
    want = {n: hashlib.sha256((folder / n).read_bytes()).hexdigest() for n in ("labels.json", "train.jsonl")}
    assert task_data_sha256(folder) == want
    (folder / "train.jsonl").write_text('{"text": "y", "label": 1}\n')
    assert task_data_sha256(folder)["train.jsonl"] != want["train.jsonl"]


def test_label_phrase_is_recorded_or_the_name():
    assert label_phrase("negative") == LABEL_PHRASES["negative"]
    assert label_phrase(" Positive ") == LABEL_PHRASES["positive"]
    assert label_phrase("sarcastic") == "sarcastic"


def test_joint_labels_deduplicate_shared_names_hand_worked():
    # mr and cr share both names, trec has its own; subj shares nothing. Worked by hand:
    # joint = [negative, positive, subjective, objective, number, human] (first appearance order).
    mr = TextTask("mr", ("negative", "positive"))
    subj = TextTask("subj", ("subjective", "objective"))
    cr = TextTask("cr", ("Negative", "positive"))  # case differs: still the same class
    q = TextTask("q", ("number", "human"))
    j = build_joint_labels([mr, subj, cr, q])
    assert len(j.phrases) == 6
    assert j.local_to_joint == {"mr": (0, 1), "subj": (2, 3), "cr": (0, 1), "q": (4, 5)}
    assert j.phrases[0] == LABEL_PHRASES["negative"]


def test_joint_labels_reject_repeated_task_names():
    t = TextTask("mr", ("negative", "positive"))
    with pytest.raises(ValueError, match=r"repeated: \['mr'\]"):
        build_joint_labels([t, t])


def test_six_shared_tasks_give_ten_joint_classes(shared_data):
    tasks = [load_text_task(shared_data / "text" / n, splits=()) for n in ("mr", "subj", "cr", "mpqa", "trec", "sst2")]
    j = build_joint_labels(tasks)
    # 2 + 2 + 2 + 2 + 6 + 2 = 16 raw labels; the four sentiment tasks collapse onto one negative/positive pair.
    assert len(j.phrases) == 10
    assert j.local_to_joint["mr"] == j.local_to_joint["cr"] == j.local_to_joint["mpqa"] == j.local_to_joint["sst2"]
