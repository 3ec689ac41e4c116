"""The data-side commands: validate, convert, find-issues."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from knotwork.cli import app
from knotwork.relations import find_label_issues, load_tacred
from knotwork.relations.io import load_opennre
from tests.relations.conftest import make_example


def test_validate_and_convert(tacred_file, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["relations", "validate", str(tacred_file), "--labels", "tacred"])
    assert result.exit_code == 0 and "4 valid examples, 3 relations" in result.output
    out = tmp_path / "x.jsonl"
    result = runner.invoke(app, ["relations", "convert", str(tacred_file), "--out", str(out), "--to", "opennre"])
    assert result.exit_code == 0, result.output
    assert load_opennre(out) == load_tacred(tacred_file)
    assert json.loads(out.read_text().splitlines()[0])["h"]["pos"] == [0, 2]
    result = runner.invoke(app, ["relations", "convert", str(tacred_file), "--out", str(out), "--to", "opennre"])
    assert result.exit_code == 2 and "exists; pass --force" in result.output
    # --force replaces knotwork's own output: converting back and forth gives the same file
    result = runner.invoke(app, ["relations", "convert", str(out), "--out", str(out.with_suffix(".json")), "--to", "tacred"])
    assert result.exit_code == 0 and load_tacred(out.with_suffix(".json")) == load_tacred(tacred_file)
    result = runner.invoke(app, ["relations", "convert", str(tacred_file), "--out", str(out), "--to", "opennre", "--force"])
    assert result.exit_code == 0, result.output


def test_validate_names_bad_example(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([make_example("61b3a65fb9ffffffffff", obj_end=99)]))
    result = CliRunner().invoke(app, ["relations", "validate", str(path)])
    assert result.exit_code == 2
    assert "example 61b3a65fb9ffffffffff: field 'obj_start'/'obj_end' = 3/99" in result.output


@pytest.fixture
def issue_inputs(tmp_path):
    """A label file and out-of-fold probabilities for the 4 examples of `tacred_file`.

    The 4th example is labelled no_relation but looks exactly like the per:employee_of one.
    """
    labels = ["no_relation", "org:founded_by", "per:employee_of"]
    (tmp_path / "labels.txt").write_text("\n".join(labels) + "\n")
    probs = np.array([[0.1, 0.8, 0.1], [0.9, 0.05, 0.05], [0.05, 0.05, 0.9], [0.05, 0.05, 0.9]])
    np.save(tmp_path / "p.npy", probs)
    return probs


def test_find_issues_cli_matches_library(tacred_file, tmp_path, issue_inputs):
    probs = issue_inputs
    out = tmp_path / "issues.csv"
    result = CliRunner().invoke(
        app, ["relations", "find-issues", str(tacred_file), str(tmp_path / "p.npy"), "--out", str(out),
              "--label-file", str(tmp_path / "labels.txt")]
    )
    assert result.exit_code == 0, result.output
    y = np.array([1, 0, 2, 0])
    expected = find_label_issues(y, probs)
    lines = out.read_text().splitlines()
    assert len(lines) - 1 == expected.sum() == 1
    assert lines[1].startswith("61b3a65fb90000000003,no_relation,per:employee_of,")
    np.save(tmp_path / "bad.npy", probs[:, :2] / probs[:, :2].sum(1, keepdims=True))
    result = CliRunner().invoke(
        app, ["relations", "find-issues", str(tacred_file), str(tmp_path / "bad.npy"), "--out", str(tmp_path / "o2.csv"),
              "--label-file", str(tmp_path / "labels.txt")]
    )
    assert result.exit_code == 2 and "bad.npy: shape (4, 2), expected (4, 3)" in result.output


def test_find_issues_cli_filter_and_ranking(tacred_file, tmp_path, issue_inputs):
    probs = issue_inputs
    out = tmp_path / "issues.csv"
    result = CliRunner().invoke(
        app, ["relations", "find-issues", str(tacred_file), str(tmp_path / "p.npy"), "--out", str(out),
              "--label-file", str(tmp_path / "labels.txt"), "--filter-by", "predicted_neq_given",
              "--ranked-by", "normalized_margin", "--all"]
    )
    assert result.exit_code == 0, result.output
    y = np.array([1, 0, 2, 0])
    rows = out.read_text().splitlines()[1:]
    expected = find_label_issues(y, probs, filter_by="predicted_neq_given")
    assert [r.split(",")[-1] == "True" for r in rows].count(True) == expected.sum() == 1
    # ranked by normalized margin: (p_given - max other + 1) / 2, lowest first
    assert rows[0].startswith("61b3a65fb90000000003,no_relation,per:employee_of,0.0750")
