"""TACRED loading and validation, OpenNRE conversion, label sets."""

from __future__ import annotations

import json

import pytest

from knotwork._errors import OutputError
from knotwork.relations import (
    RETACRED_LABELS,
    TACRED_LABELS,
    TACRED_TO_RETACRED,
    TacredFormatError,
    from_opennre,
    load_tacred,
    rename_to_retacred,
    to_opennre,
)
from knotwork.relations.io import load_opennre, save_opennre, save_tacred
from tests.conftest import require_shared
from tests.relations.conftest import make_example


def test_load_keeps_inclusive_spans_and_extra_fields(tacred_file):
    examples = load_tacred(tacred_file)
    assert [ex.relation for ex in examples] == ["org:founded_by", "no_relation", "per:employee_of", "no_relation"]
    ex = examples[0]
    assert ex.subj_tokens == ("Bill", "Gates") and ex.obj_tokens == ("Microsoft",)
    assert ex.extra["stanford_head"][0] == "2" and examples[2].extra["stanford_head"][0] == 2


def test_load_real_sample():
    path = require_shared("re", "tacred_sample", "sample.json")
    examples = load_tacred(path, labels=TACRED_LABELS)
    assert len(examples) == 60
    assert sum(ex.relation == "no_relation" for ex in examples) == 47  # README of shared/data
    assert sum(ex.relation == "per:title" for ex in examples) == 5


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ({"subj_end": 9}, r"example 61b3a65fb90000000009: field 'subj_start'/'subj_end' = 0/9 is not an inclusive span inside 7 tokens"),
        ({"obj_start": 4, "obj_end": 3}, r"'obj_start'/'obj_end' = 4/3"),
        ({"obj_start": True}, r"'obj_start'/'obj_end'"),
        ({"token": []}, r"field 'token' must be a non-empty list"),
        ({"relation": 3}, r"field 'relation' must be a non-empty string"),
    ],
)
def test_bad_examples_name_file_id_and_field(tmp_path, override, match):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([make_example("61b3a65fb90000000009", **override)]))
    with pytest.raises(TacredFormatError, match=match):
        load_tacred(path)
    with pytest.raises(TacredFormatError, match=str(path).replace("/", "/")):
        load_tacred(path)


def test_missing_field_and_malformed_json(tmp_path):
    obj = make_example("abc")
    del obj["obj_type"]
    path = tmp_path / "missing.json"
    path.write_text(json.dumps([obj]))
    with pytest.raises(TacredFormatError, match=r"example abc: missing field 'obj_type'"):
        load_tacred(path)
    path.write_text('[{"id": "x",')
    with pytest.raises(TacredFormatError, match=r"malformed JSON"):
        load_tacred(path)
    path.write_text('{"id": "x"}')
    with pytest.raises(TacredFormatError, match=r"expected a JSON list of examples, got dict"):
        load_tacred(path)


def test_unknown_relation_and_duplicate_id(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps([make_example("a", "per:favourite_food")]))
    with pytest.raises(TacredFormatError, match=r"example a: field 'relation' = 'per:favourite_food' is not a known relation"):
        load_tacred(path, labels=TACRED_LABELS)
    path.write_text(json.dumps([make_example("a"), make_example("a")]))
    with pytest.raises(TacredFormatError, match=r"example a: duplicate id"):
        load_tacred(path)


def test_opennre_round_trip_uses_end_exclusive_spans(tacred_file, tmp_path):
    examples = load_tacred(tacred_file)
    obj = to_opennre(examples[0])
    assert obj["h"] == {"name": "Bill Gates", "pos": [0, 2], "type": "PERSON"}  # token[0:2], end-exclusive
    assert obj["t"]["pos"] == [3, 4]
    assert from_opennre(obj) == examples[0]
    out = save_opennre(examples, tmp_path / "x.jsonl")
    assert load_opennre(out) == examples
    with pytest.raises(OutputError, match="exists; pass --force"):
        save_opennre(examples, out)
    with pytest.raises(OutputError, match="the output is an input"):
        save_opennre(examples, out, inputs=[out], force=True)
    back = save_tacred(load_opennre(out), tmp_path / "back.json")
    assert load_tacred(back) == examples
    assert load_opennre(save_opennre(examples[:1], out, force=True)) == examples[:1]  # knotwork's own output


def test_opennre_bad_pos(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"id": "q", "token": ["a", "b"], "h": {"pos": [0]}, "t": {"pos": [1, 2]}, "relation": "r"}) + "\n")
    with pytest.raises(TacredFormatError, match=r"bad.jsonl:1: example q: field 'h' must hold 'pos'"):
        load_opennre(path)


def test_label_sets_and_rename_map():
    assert len(TACRED_LABELS) == 42 and len(set(TACRED_LABELS)) == 42
    assert len(RETACRED_LABELS) == 40 and len(set(RETACRED_LABELS)) == 40
    assert TACRED_LABELS[0] == RETACRED_LABELS[0] == "no_relation"
    # Paper §3.3: 41 - 3 merged/renamed-away + 1 identity = 39 positives; renaming all TACRED labels gives Re-TACRED's.
    assert set(rename_to_retacred(TACRED_LABELS)) == set(RETACRED_LABELS)
    assert set(TACRED_TO_RETACRED) <= set(TACRED_LABELS) and set(TACRED_TO_RETACRED.values()) <= set(RETACRED_LABELS)


def test_retacred_patch_labels_are_the_fixed_set():
    path = require_shared("re", "retacred_patch", "test_id2label.json")
    labels = set(json.loads(path.read_text()).values())
    assert labels <= set(RETACRED_LABELS)
    assert set(RETACRED_LABELS) - labels == {"per:country_of_birth"}  # method note: absent from the test split


def test_label_lines_and_gold_loading(tacred_file, tmp_path):
    from knotwork.relations.io import load_gold_labels, read_label_lines, write_label_lines

    path = write_label_lines(["per:title", "no_relation"], tmp_path / "labels.txt")
    assert read_label_lines(path) == ["per:title", "no_relation"]
    assert load_gold_labels(path) == (["per:title", "no_relation"], None)
    labels, ids = load_gold_labels(tacred_file)
    assert labels[0] == "org:founded_by" and ids[0] == "61b3a65fb90000000000"
    (tmp_path / "gap.txt").write_text("per:title\n\nno_relation\n")
    with pytest.raises(ValueError, match=r"gap.txt:2: empty line"):
        read_label_lines(tmp_path / "gap.txt")


def test_label_ids_are_fixed_and_categories():
    from knotwork.relations.labels import REFINED_FAMILIES, label_to_id, relation_category

    ids = label_to_id(TACRED_LABELS)
    assert ids["no_relation"] == 0 and ids["per:title"] == 1 and ids["per:country_of_death"] == 41
    with pytest.raises(ValueError, match=r"label 'a' appears twice in the label list \(positions 0 and 2\)"):
        label_to_id(["a", "b", "a"])
    assert relation_category("per:title") == "PER:*" and relation_category("org:website") == "ORG:*"
    assert relation_category("Cause-Effect") == "Cause-Effect" and relation_category("no_relation") == "no_relation"
    assert {r for rels in REFINED_FAMILIES.values() for r in rels} <= set(RETACRED_LABELS)


def test_label_set_files_keep_their_id_order(tmp_path):
    from knotwork.relations.io import load_label_set
    from knotwork.relations.labels import covering_label_set

    as_map = tmp_path / "labels.json"
    as_map.write_text(json.dumps({"per:title": 1, "no_relation": 0, "org:founded_by": 2}))  # tacred-relation's LABEL_TO_ID
    as_list = tmp_path / "list.json"
    as_list.write_text(json.dumps(["no_relation", "per:title", "org:founded_by"]))
    as_lines = write(tmp_path / "labels.txt", "no_relation\nper:title\norg:founded_by\n")
    assert load_label_set(as_map) == load_label_set(as_list) == load_label_set(as_lines) == [
        "no_relation", "per:title", "org:founded_by"
    ]
    assert covering_label_set(["per:title"]) == list(TACRED_LABELS)
    assert covering_label_set(["per:identity"]) == list(RETACRED_LABELS)
    assert covering_label_set(["b", "a"]) == ["a", "b"]


def write(path, text):
    path.write_text(text)
    return path
