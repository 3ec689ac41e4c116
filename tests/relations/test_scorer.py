"""The official TACRED scorer semantics: hand-worked cases, edge cases, an independent re-implementation, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix as sk_confusion_matrix
from typer.testing import CliRunner

from knotwork.cli import app
from knotwork.relations import TACRED_LABELS, confusion_matrix, score, score_report

NEG = "no_relation"


def official_loop(key, prediction):
    """A literal transcription of tacred-relation's utils/scorer.py (the method note's §7), as the oracle."""
    correct_by, guessed_by, gold_by = {}, {}, {}
    for row in range(len(key)):
        gold, guess = key[row], prediction[row]
        if gold == NEG and guess == NEG:
            pass
        elif gold == NEG and guess != NEG:
            guessed_by[guess] = guessed_by.get(guess, 0) + 1
        elif gold != NEG and guess == NEG:
            gold_by[gold] = gold_by.get(gold, 0) + 1
        else:
            guessed_by[guess] = guessed_by.get(guess, 0) + 1
            gold_by[gold] = gold_by.get(gold, 0) + 1
            if gold == guess:
                correct_by[guess] = correct_by.get(guess, 0) + 1
    prec = 1.0
    if sum(guessed_by.values()) > 0:
        prec = sum(correct_by.values()) / sum(guessed_by.values())
    recall = 0.0
    if sum(gold_by.values()) > 0:
        recall = sum(correct_by.values()) / sum(gold_by.values())
    f1 = 0.0
    if prec + recall > 0.0:
        f1 = 2.0 * prec * recall / (prec + recall)
    return prec, recall, f1


def test_hand_worked_example():
    gold = ["per:title", "per:title", "org:founded", NEG, NEG, "per:age"]
    pred = ["per:title", "org:founded", "org:founded", "per:age", NEG, NEG]
    # guesses: title, founded, founded, age = 4; gold positives: title, title, founded, age = 4; correct: 2
    s = score(gold, pred)
    assert (s.precision, s.recall) == (0.5, 0.5)
    assert s.f1 == pytest.approx(0.5)


def test_no_positive_guess_gives_precision_one():
    s = score(["per:title", NEG], [NEG, NEG])
    assert (s.precision, s.recall, s.f1) == (1.0, 0.0, 0.0)


def test_all_gold_negative():
    s = score([NEG, NEG, NEG], ["per:title", NEG, NEG])
    assert (s.precision, s.recall, s.f1) == (0.0, 0.0, 0.0)
    s = score([NEG, NEG], [NEG, NEG])
    assert (s.precision, s.recall, s.f1) == (1.0, 0.0, 0.0)


def test_unknown_labels_and_length_mismatch_rejected():
    with pytest.raises(ValueError, match=r"unknown predicted label 'per:favourite_food' at position 1"):
        score([NEG, NEG], [NEG, "per:favourite_food"], labels=TACRED_LABELS)
    with pytest.raises(ValueError, match=r"unknown gold label 'x' at position 0"):
        score(["x"], [NEG], labels=TACRED_LABELS)
    with pytest.raises(ValueError, match=r"gold has 2 labels but predicted has 1"):
        score([NEG, NEG], [NEG])


def test_matches_official_loop_on_random_predictions():
    rng = np.random.default_rng(0)
    labels = np.array(TACRED_LABELS[:8])
    for _ in range(20):
        n = int(rng.integers(1, 300))
        p = np.r_[0.6, np.full(7, 0.4 / 7)]
        gold, pred = list(rng.choice(labels, n, p=p)), list(rng.choice(labels, n, p=p))
        s = score(gold, pred)
        assert (s.precision, s.recall, s.f1) == pytest.approx(official_loop(gold, pred), abs=0, rel=1e-12)


def test_report_per_relation_and_confusion():
    gold = ["per:age", "per:age", NEG, "org:founded"]
    pred = ["per:age", NEG, "per:title", "per:age"]
    r = score_report(gold, pred)
    rows = {x.relation: x for x in r.per_relation}
    assert (rows["per:age"].n_gold, rows["per:age"].n_guessed, rows["per:age"].n_correct) == (2, 2, 1)
    assert rows["per:title"].n_gold == 0 and rows["per:title"].precision == 0.0
    assert rows["org:founded"].precision == 1.0 and rows["org:founded"].recall == 0.0  # no guesses -> 1.0
    assert r.micro == score(gold, pred)
    expected = sk_confusion_matrix(gold, pred, labels=list(r.labels))
    np.testing.assert_array_equal(r.confusion, expected)
    np.testing.assert_array_equal(confusion_matrix(gold, pred, r.labels), expected)


def test_cli_score_json_and_table(tacred_file, tmp_path):
    pred = tmp_path / "pred.txt"
    pred.write_text("org:founded_by\nper:employee_of\nper:employee_of\nno_relation\n")
    result = CliRunner().invoke(app, ["relations", "score", str(tacred_file), str(pred), "--json", "-"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert (out["precision"], out["recall"]) == (2 / 3, 1.0)
    result = CliRunner().invoke(app, ["relations", "score", str(tacred_file), str(pred), "--json", str(tmp_path / "s.json")])
    assert result.exit_code == 0 and "F1 (micro): 80.000%" in result.output
    written = json.loads((tmp_path / "s.json").read_text())
    assert written["f1"] == out["f1"] and "knotwork" in written
    result = CliRunner().invoke(app, ["relations", "score", str(tacred_file), str(pred)])
    assert "F1 (micro): 80.000%" in result.output
    bad = tmp_path / "bad.txt"
    bad.write_text("org:founded_by\nper:nonsense\nno_relation\nno_relation\n")
    result = CliRunner().invoke(app, ["relations", "score", str(tacred_file), str(bad)])
    assert result.exit_code == 2 and "bad.txt:2: predicted label 'per:nonsense' is not in the label set" in result.output
    short = tmp_path / "short.txt"
    short.write_text("no_relation\n")
    result = CliRunner().invoke(app, ["relations", "score", str(tacred_file), str(short)])
    assert result.exit_code == 2 and "short.txt: 1 predictions but" in result.output
