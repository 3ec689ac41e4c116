"""Bad input to every `knotwork relations` command is refused before any work: exit 2, one `error:` line naming the
file and the item (example id, line, row, worker, label), inputs untouched, nothing written (tests/cli_contract.py).

Each case builds its bad file in a small world of valid files and names the command line, the expected message,
the inputs that must stay byte-identical and the output that must not appear.
"""

from __future__ import annotations

import gzip
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from tests.cli_contract import invoke, refused
from tests.relations.conftest import make_example

LABELS = ["no_relation", "org:founded_by", "per:employee_of"]
RELATIONS = ["org:founded_by", "no_relation", "per:employee_of", "no_relation"]
PROBS = np.array([[0.1, 0.8, 0.1], [0.9, 0.05, 0.05], [0.05, 0.05, 0.9], [0.05, 0.05, 0.9]])


@pytest.fixture
def w(tmp_path) -> SimpleNamespace:
    """A world of valid inputs, every command succeeding on it (checked in test_the_world_is_valid)."""
    d = SimpleNamespace(root=tmp_path)
    d.data = tmp_path / "data.json"
    d.data.write_text(json.dumps([make_example(f"e{i}", rel) for i, rel in enumerate(RELATIONS)]))
    d.gold = tmp_path / "gold.json"
    d.gold.write_text(json.dumps([make_example("g0", "per:employee_of"), make_example("g1", "no_relation")]))
    d.pred = tmp_path / "pred.txt"
    d.pred.write_text("org:founded_by\nper:employee_of\nper:employee_of\nno_relation\n")
    d.label_file = tmp_path / "labels.txt"
    d.label_file.write_text("\n".join(LABELS) + "\n")
    d.probs = tmp_path / "probs.npy"
    np.save(d.probs, PROBS)
    d.data_dir, d.patch_dir = tmp_path / "tacred", tmp_path / "patches"
    d.data_dir.mkdir()
    d.patch_dir.mkdir()
    shutil.copy(d.data, d.data_dir / "train.json")
    (d.patch_dir / "train_id2label.json").write_text(json.dumps({"e0": "no_relation", "e1": "no_relation"}))
    d.gold_key = tmp_path / "gold_key.json"
    d.gold_key.write_text(json.dumps({"g0": "per:employee_of"}))
    rows = [("e0", "w1", "org:founded_by"), ("e0", "w2", "org:founded_by"), ("e1", "w1", "no_relation"),
            ("e1", "w2", "no_relation"), ("g0", "w1", "per:employee_of"), ("g0", "w2", "per:employee_of")]
    d.answers = tmp_path / "answers.csv"
    pd.DataFrame(rows, columns=["task", "worker", "label"]).to_csv(d.answers, index=False)
    d.after = tmp_path / "after.json"
    d.after.write_text(json.dumps([make_example(f"e{i}", rel) for i, rel in enumerate(RELATIONS) if i != 3]))
    d.jsonl = write(tmp_path / "m_test.jsonl.gz", gz(jsonl_text(PRED_LABELS)))
    d.tacrev = write(tmp_path / "test_patch.json", json.dumps([{"id": "e1", "relation": "per:employee_of"}]))
    d.retacred = write(tmp_path / "test_id2label.json", json.dumps({"e0": "no_relation", "e2": "per:employee_of"}))
    d.out = tmp_path / "out"
    return d


PRED_LABELS = ["org:founded_by", "per:employee_of", "per:employee_of", "no_relation"]


def jsonl_text(preds, ids=None, gold=RELATIONS) -> str:
    """Label-only predictions of the world's 4 examples, one {id, label_true, label_pred} object per line."""
    ids = ids or [f"e{i}" for i in range(len(preds))]
    return "".join(json.dumps({"id": i, "label_true": g, "label_pred": p}) + "\n"
                   for i, g, p in zip(ids, gold, preds, strict=True))


def gz(text: str) -> bytes:
    return gzip.compress(text.encode())


def write(path: Path, content: str | bytes) -> Path:
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    return path


def npy(w, name: str, array) -> Path:
    np.save(w.root / name, np.asarray(array))
    return w.root / name


def with_row(probs: np.ndarray, row: int, values) -> np.ndarray:
    out = probs.copy()
    out[row] = values
    return out


def answers(w, rows, name: str = "bad.csv") -> Path:
    path = w.root / name
    pd.DataFrame(rows, columns=["task", "worker", "label"]).to_csv(path, index=False)
    return path


GOOD_ANSWERS = [("e0", "w1", "org:founded_by"), ("e0", "w2", "org:founded_by"), ("g0", "w1", "per:employee_of")]


@dataclass
class Case:
    """``args(w)`` the command line; ``match`` a regular expression on the error line; ``out`` what must not appear."""

    args: Callable[[SimpleNamespace], list]
    match: str
    out: Callable[[SimpleNamespace], Path | None] = lambda w: w.out
    usage: bool = False


def score(w, pred, *extra):
    return ["relations", "score", w.data, pred, *extra]


def aggregate(w, ans, *extra, key: str | None = None):
    """``relations aggregate`` with the world's gold key, or with a gold key file holding ``key``."""
    gold_key = w.gold_key if key is None else write(w.root / "gold_key.json", key)
    return ["relations", "aggregate", ans, w.data, "--out", w.out, "--gold-key", gold_key, *extra]


def find_issues(w, probs, *extra, labels: str | None = None):
    """``relations find-issues`` with the world's label file, or with a label file holding ``labels``."""
    label_file = w.label_file if labels is None else write(w.root / "l.txt", labels)
    return ["relations", "find-issues", w.data, probs, "--out", w.out, "--label-file", label_file, *extra]


def reevaluate(w, *preds_and_options):
    return ["relations", "reevaluate", w.data, w.after, *preds_and_options, "--n-bootstrap", "0"]


def label_only(w, *preds_and_options, retacred: Path | None = None):
    """``relations reevaluate`` on label-only predictions with the world's TACREV and Re-TACRED-style patches."""
    return ["relations", "reevaluate", *preds_and_options, "--patch", f"tacrev={w.tacrev}", "--patch",
            f"retacred={retacred or w.retacred}", "--bootstrap", "0"]


CASES = {
    # ---- score: predictions, gold labels, label sets, --json
    "score-pred-outside-label-set": Case(
        lambda w: score(w, write(w.root / "p.txt", "org:founded_by\nper:nonsense\nno_relation\nno_relation\n")),
        r"p\.txt:2: predicted label 'per:nonsense' is not in the label set of 42 labels"),
    "score-pred-too-short": Case(
        lambda w: score(w, write(w.root / "p.txt", "no_relation\n")),
        r"p\.txt: 1 predictions but .*data\.json has 4 examples"),
    "score-pred-empty-line": Case(
        lambda w: score(w, write(w.root / "p.txt", "no_relation\n\nno_relation\nno_relation\n")),
        r"p\.txt:2: empty line"),
    "score-gold-outside-label-file": Case(
        lambda w: score(w, w.pred, "--label-file", write(w.root / "l.txt", "no_relation\nper:employee_of\n")),
        r"data\.json: example e0: gold label 'org:founded_by' is not in the label set"),
    "score-labels-and-label-file": Case(
        lambda w: score(w, w.pred, "--labels", "tacred", "--label-file", w.label_file),
        r"--labels tacred and --label-file .*labels\.txt: give one of them, not both"),
    "score-labels-json-malformed": Case(
        lambda w: score(w, w.pred, "--label-file", write(w.root / "labels.json", '["no_relation", ')),
        r"labels\.json: malformed JSON"),
    "score-labels-json-not-strings": Case(
        lambda w: score(w, w.pred, "--label-file", write(w.root / "labels.json", '["no_relation", 3]')),
        r"labels\.json: entry 1 is 3; every label must be a non-empty string"),
    "score-labels-json-bad-ids": Case(
        lambda w: score(w, w.pred, "--label-file", write(w.root / "labels.json", '{"no_relation": 0, "x": 2}')),
        r"labels\.json: a \{label: id\} label map needs the integer ids 0\.\.1 once each"),
    "score-labels-json-not-a-list": Case(
        lambda w: score(w, w.pred, "--label-file", write(w.root / "labels.json", '"no_relation"')),
        r"labels\.json: expected a JSON list of labels or a \{label: id\} object, got str"),
    "score-label-file-duplicate": Case(
        lambda w: score(w, w.pred, "--label-file", write(w.root / "l.txt", "no_relation\nx\nno_relation\n")),
        r"l\.txt: label 'no_relation' appears twice \(entries 0 and 2\)"),
    "score-label-file-empty": Case(
        lambda w: score(w, w.pred, "--label-file", write(w.root / "labels.json", "[]")),
        r"labels\.json: the label set is empty"),
    "score-labels-unknown-choice": Case(
        lambda w: score(w, w.pred, "--labels", "tacrev"), r"tacrev", usage=True),
    "score-json-onto-input": Case(
        lambda w: score(w, w.pred, "--json", w.pred, "--force"), r"pred\.txt: the output is an input",
        out=lambda w: None),
    # ---- validate
    "validate-bad-span": Case(
        lambda w: ["relations", "validate", write(w.root / "v.json", json.dumps([make_example("e9", obj_end=99)]))],
        r"v\.json: example e9: field 'obj_start'/'obj_end' = 3/99 is not an inclusive span"),
    "validate-not-json": Case(
        lambda w: ["relations", "validate", write(w.root / "v.json", "[{")], r"v\.json: malformed JSON"),
    "validate-not-utf8": Case(
        lambda w: ["relations", "validate", write(w.root / "v.json", b"\x89PNG\r\n\x1a\n\xff")],
        r"v\.json: not UTF-8 text"),
    "validate-unknown-relation": Case(
        lambda w: ["relations", "validate", write(w.root / "v.json", json.dumps([make_example("e7", "per:pet")])),
                   "--labels", "tacred"],
        r"v\.json: example e7: field 'relation' = 'per:pet' is not a known relation"),
    # ---- convert
    "convert-onto-its-input": Case(
        lambda w: ["relations", "convert", w.data, "--out", w.data, "--to", "tacred", "--force"],
        r"data\.json: the output is an input", out=lambda w: None),
    "convert-force-over-foreign-file": Case(
        lambda w: ["relations", "convert", w.data, "--out", write(w.root / "mine.jsonl", "keep me\n"), "--to", "opennre",
                   "--force"],
        r"mine\.jsonl: exists and is not a knotwork output", out=lambda w: w.root / "mine.jsonl"),
    "convert-unknown-format": Case(
        lambda w: ["relations", "convert", w.data, "--out", w.out, "--to", "conll"], r"conll", usage=True),
    "convert-bad-jsonl": Case(
        lambda w: ["relations", "convert", write(w.root / "x.jsonl", "{not json\n"), "--out", w.out, "--to", "tacred"],
        r"x\.jsonl:1: malformed JSON"),
    # ---- patch
    "patch-out-is-data-dir": Case(
        lambda w: ["relations", "patch", w.data_dir, w.patch_dir, "--out", w.data_dir, "--force"],
        r"tacred: the output is an input", out=lambda w: None),
    "patch-out-inside-patch-dir": Case(
        lambda w: ["relations", "patch", w.data_dir, w.patch_dir, "--out", w.patch_dir / "patched"],
        r"patched: the output lies inside the input folder .*patches", out=lambda w: w.patch_dir / "patched"),
    "patch-out-contains-inputs": Case(
        lambda w: ["relations", "patch", w.data_dir, w.patch_dir, "--out", w.root, "--force"],
        r"the output contains an input", out=lambda w: None),
    "patch-unknown-id": Case(
        lambda w: ["relations", "patch", w.data_dir,
                   write_patch(w, "train_id2label.json", {"e0": "no_relation", "zz": "no_relation"}), "--out", w.out],
        r"train_id2label\.json: 1 patch id\(s\) not in the data set, e.g. \['zz'\]"),
    "patch-not-json": Case(
        lambda w: ["relations", "patch", w.data_dir, write_patch(w, "train_id2label.json", None), "--out", w.out],
        r"train_id2label\.json: malformed JSON"),
    "patch-label-outside-set": Case(
        lambda w: ["relations", "patch", w.data_dir, write_patch(w, "train_patch.json", [{"id": "e2", "relation": "per:boss"}]),
                   "--out", w.out, "--labels", "tacred"],
        r"train_patch\.json: patch id 'e2': relation 'per:boss' is not in the label set"),
    "patch-without-data": Case(
        lambda w: ["relations", "patch", w.data_dir, write_patch(w, "dev_patch.json", []), "--out", w.out],
        r"dev_patch\.json: no data file .*dev\.json to patch"),
    # ---- annotate
    "annotate-zero-items": Case(
        lambda w: ["relations", "annotate", w.data, w.gold, "--out", w.out, "--items-per-task", "0"],
        r"--items-per-task must be an integer >= 1; got 0"),
    "annotate-negative-stage": Case(
        lambda w: ["relations", "annotate", w.data, w.gold, "--out", w.out, "--stage", "-1"],
        r"--stage must be an integer >= 0; got -1"),
    "annotate-unknown-ids": Case(
        lambda w: ["relations", "annotate", w.data, w.gold, "--out", w.out, "--ids", write(w.root / "ids.txt", "e0\nzz\n")],
        r"ids\.txt: 1 id\(s\) not in .*data\.json, e.g. \['zz'\]"),
    "annotate-no-ids": Case(
        lambda w: ["relations", "annotate", w.data, w.gold, "--out", w.out, "--ids", write(w.root / "ids.txt", "")],
        r"ids\.txt: no ids"),
    # ---- aggregate: the silent wrong results of the issue, each refused
    "aggregate-duplicate-answer": Case(
        lambda w: aggregate(w, answers(w, [*GOOD_ANSWERS, ("e0", "w1", "no_relation")])),
        r"bad\.csv: worker w1 answered sentence e0 2 times \(rows 1, 4\)"),
    "aggregate-answer-outside-label-set": Case(
        lambda w: aggregate(w, answers(w, [*GOOD_ANSWERS, ("e1", "w2", "per:favourite_food")])),
        r"bad\.csv: row 4: worker w2 answered 'per:favourite_food' for sentence e1, which is not in the label set"),
    "aggregate-answer-outside-label-file": Case(
        lambda w: aggregate(w, w.answers, "--label-file", write(w.root / "l.json", '["no_relation", "per:employee_of"]')),
        r"answers\.csv: row 1: worker w1 answered 'org:founded_by' for sentence e0, which is not in the label set of 3"),
    "aggregate-empty-gold-key": Case(
        lambda w: aggregate(w, w.answers, key="{}"),
        r"gold_key\.json: the gold key is empty"),
    "aggregate-gold-key-not-json": Case(
        lambda w: aggregate(w, w.answers, key="g0,per:employee_of\n"),
        r"gold_key\.json: malformed JSON"),
    "aggregate-gold-key-a-list": Case(
        lambda w: aggregate(w, w.answers, key='["g0"]'),
        r"gold_key\.json: a gold key is a JSON object \{sentence id: relation\}, got list"),
    "aggregate-gold-key-empty-relation": Case(
        lambda w: aggregate(w, w.answers, key='{"g0": ""}'),
        r"gold_key\.json: gold sentence g0: relation must be a non-empty string"),
    "aggregate-gold-key-outside-label-set": Case(
        lambda w: aggregate(w, w.answers, "--labels", "tacred", key='{"g0": "per:identity"}'),
        r"gold_key\.json: example g0: gold relation 'per:identity' is not in the label set"),
    "aggregate-unknown-sentence": Case(
        lambda w: aggregate(w, answers(w, [*GOOD_ANSWERS, ("e77", "w1", "no_relation")])),
        r"bad\.csv: 1 answered id\(s\) are neither in .*data\.json nor gold, e.g. \['e77'\]"),
    "aggregate-mturk-missing-answer": Case(
        lambda w: aggregate(w, write(w.root / "mturk.csv", "WorkerId,Input.item_1_id,Answer.item_1,Input.item_2_id,"
                                     "Answer.item_2\nw1,e0,no_relation,g0,\n")),
        r"mturk\.csv: row 1, item 2 \(id 'g0'\): no answer"),
    "aggregate-not-an-answer-table": Case(
        lambda w: aggregate(w, write(w.root / "x.csv", "a,b\n1,2\n")),
        r"x\.csv: answers need either columns task, worker, label or MTurk's WorkerId"),
    "aggregate-min-accuracy-above-1": Case(
        lambda w: aggregate(w, w.answers, "--min-accuracy", "1.5"), r"--min-accuracy must be in \[0, 1\], got 1\.5"),
    "aggregate-one-annotator": Case(
        lambda w: aggregate(w, w.answers, "--max-annotators", "1"), r"--max-annotators must be an integer >= 2; got 1"),
    "aggregate-unknown-method": Case(
        lambda w: aggregate(w, w.answers, "--method", "glad"), r"glad", usage=True),
    # ---- find-issues: probabilities and labels
    "find-issues-nan": Case(
        lambda w: find_issues(w, npy(w, "p.npy", with_row(PROBS, 2, [np.nan, 0.5, 0.5]))),
        r"p\.npy: row 2 \(example e2\) holds a non-finite value \(nan\)"),
    "find-issues-inf": Case(
        lambda w: find_issues(w, npy(w, "p.npy", with_row(PROBS, 1, [np.inf, 0.0, 0.0]))),
        r"p\.npy: row 1 \(example e1\) holds a non-finite value \(inf\)"),
    "find-issues-not-normalised": Case(
        lambda w: find_issues(w, npy(w, "p.npy", with_row(PROBS, 3, [0.2, 0.2, 0.1]))),
        r"p\.npy: row 3 \(example e3\) sums to 0\.5000, not 1"),
    "find-issues-negative": Case(
        lambda w: find_issues(w, npy(w, "p.npy", with_row(PROBS, 0, [-0.5, 1.0, 0.5]))),
        r"p\.npy: row 0 \(example e0\) holds a negative probability"),
    "find-issues-too-few-columns": Case(
        lambda w: find_issues(w, npy(w, "p.npy", PROBS[:, :2] / PROBS[:, :2].sum(1, keepdims=True))),
        r"p\.npy: shape \(4, 2\), expected \(4, 3\)"),
    "find-issues-too-few-rows": Case(
        lambda w: find_issues(w, npy(w, "p.npy", PROBS[:3])), r"p\.npy: shape \(3, 3\), expected \(4, 3\)"),
    "find-issues-one-dimensional": Case(
        lambda w: find_issues(w, npy(w, "p.npy", PROBS[:, 0])), r"p\.npy: shape \(4,\), expected \(4, 3\)"),
    "find-issues-not-npy": Case(
        lambda w: find_issues(w, write(w.root / "p.npy", "0.1,0.9\n")), r"p\.npy: not a \.npy array"),
    "find-issues-label-out-of-range": Case(
        lambda w: find_issues(w, w.probs, labels="no_relation\nper:employee_of\nper:title\n"),
        r"data\.json: example e0: relation 'org:founded_by' is not in the label set of 3 labels"),
    "find-issues-labels-any": Case(
        lambda w: ["relations", "find-issues", w.data, w.probs, "--out", w.out, "--labels", "any"],
        r"--labels any gives no column order for PROBS"),
    "find-issues-unknown-filter": Case(
        lambda w: find_issues(w, w.probs, "--filter-by", "prune"), r"prune", usage=True),
    "find-issues-out-is-input": Case(
        lambda w: ["relations", "find-issues", w.data, w.probs, "--out", w.probs, "--label-file", w.label_file, "--force"],
        r"probs\.npy: the output is an input", out=lambda w: None),
    # ---- reevaluate: predictions validated exactly as in score
    "reevaluate-pred-outside-label-set": Case(
        lambda w: reevaluate(w, write(w.root / "m1.txt", "org:founded_by\nper:nonsense\nno_relation\nno_relation\n")),
        r"m1\.txt:2: predicted label 'per:nonsense' is not in the label set of 42 labels"),
    "reevaluate-pred-too-long": Case(
        lambda w: reevaluate(w, write(w.root / "m1.txt", "no_relation\n" * 5)),
        r"m1\.txt: 5 predictions but .*data\.json has 4 examples"),
    "reevaluate-after-has-new-ids": Case(
        lambda w: ["relations", "reevaluate", w.data, write(w.root / "a.json", json.dumps([make_example("e99")])), w.pred],
        r"a\.json: 1 id\(s\) not in .*data\.json, e.g. \['e99'\]"),
    "reevaluate-negative-bootstrap": Case(
        lambda w: ["relations", "reevaluate", w.data, w.after, w.pred, "--n-bootstrap", "-1"],
        r"--n-bootstrap must be an integer >= 0; got -1"),
    "reevaluate-same-model-twice": Case(
        lambda w: reevaluate(w, w.pred, copy_to(w.pred, w.root / "sub" / "pred.txt")),
        r"pred\.txt: two prediction files name the model 'pred'"),
    # ---- reevaluate on label-only predictions (JSONL, gzip, label per line) and patches keyed by id
    "reevaluate-jsonl-malformed-line": Case(
        lambda w: label_only(w, write(w.root / "x.jsonl", jsonl_text(PRED_LABELS).replace('"e1"', "e1"))),
        r"x\.jsonl:2: malformed JSON"),
    "reevaluate-jsonl-missing-field": Case(
        lambda w: label_only(w, write(w.root / "x.jsonl", '{"id": "e0", "label_true": "no_relation"}\n')),
        r"x\.jsonl:1: field 'label_pred' must be a non-empty string; it is missing"),
    "reevaluate-jsonl-duplicate-id": Case(
        lambda w: label_only(w, write(w.root / "x.jsonl", jsonl_text(PRED_LABELS, ids=["e0", "e1", "e0", "e3"]))),
        r"x\.jsonl:3: id e0 appears twice \(first on line 1\)"),
    "reevaluate-gzip-truncated": Case(
        lambda w: label_only(w, write(w.root / "x.jsonl.gz", gz(jsonl_text(PRED_LABELS))[:-12])),
        r"x\.jsonl\.gz: corrupt gzip data"),
    "reevaluate-gzip-not-gzip": Case(
        lambda w: label_only(w, write(w.root / "x.jsonl.gz", jsonl_text(PRED_LABELS))),
        r"x\.jsonl\.gz: corrupt gzip data \(Not a gzipped file"),
    "reevaluate-patch-id-not-in-predictions": Case(
        lambda w: label_only(w, w.jsonl, retacred=write(w.root / "p.json", json.dumps({"e0": "no_relation", "zz": "per:title"}))),
        r"p\.json: 1 patch id\(s\) not among the 4 ids of the predictions, e.g. \['zz'\]"),
    "reevaluate-unmapped-label-outside-version": Case(
        lambda w: label_only(w, write(w.root / "x.jsonl", jsonl_text(["org:parents", *PRED_LABELS[1:]])),
                             retacred=write(w.root / "p.json", json.dumps({"e0": "org:member_of", "e1": "per:identity"}))),
        r"x\.jsonl: example e0: predicted label 'org:parents' is not in the label set of version 'retacred' "
        r"\(40 labels\)"),
    "reevaluate-mapped-label-outside-version": Case(
        lambda w: [*label_only(w, write(w.root / "x.jsonl", jsonl_text(["org:parents", *PRED_LABELS[1:]])),
                               retacred=write(w.root / "p.json", json.dumps({"e0": "org:member_of", "e1": "per:identity"}))),
                   "--label-map", f"retacred={write(w.root / 'map.json', json.dumps({'org:parents': 'org:boss'}))}"],
        r"x\.jsonl: example e0: predicted label 'org:parents' \(mapped to 'org:boss'\) is not in the label set"),
    "reevaluate-label-map-not-an-object": Case(
        lambda w: [*label_only(w, w.jsonl), "--label-map", f"retacred={write(w.root / 'map.json', '[1]')}"],
        r"map\.json: a label map is a JSON object"),
    "reevaluate-label-true-differs": Case(
        lambda w: label_only(w, w.jsonl, write(w.root / "y.jsonl", jsonl_text(PRED_LABELS, gold=["no_relation"] * 4))),
        r"y\.jsonl: example e0: label_true 'no_relation' differs from 'org:founded_by' in .*m_test\.jsonl\.gz"),
    "reevaluate-jsonl-ids-differ": Case(
        lambda w: label_only(w, w.jsonl, write(w.root / "y.jsonl", jsonl_text(PRED_LABELS[:3], gold=RELATIONS[:3]))),
        r"y\.jsonl: 1 id\(s\) of .*m_test\.jsonl\.gz missing, e.g. \['e3'\]"),
    "reevaluate-txt-wrong-length": Case(
        lambda w: label_only(w, w.jsonl, write(w.root / "t.txt", "no_relation\n" * 3)),
        r"t\.txt: 3 predictions but the id order of .*m_test\.jsonl\.gz has 4 ids"),
    "reevaluate-txt-without-jsonl": Case(
        lambda w: label_only(w, w.pred), r"pred\.txt: label-only re-evaluation needs at least one \.jsonl"),
    "reevaluate-drop-label-unknown-version": Case(
        lambda w: [*label_only(w, w.jsonl), "--drop-label", "retacrev=per:identity"],
        r"--drop-label retacrev=\.\.\.: no version 'retacrev'"),
    "reevaluate-drop-label-not-in-label-set": Case(
        lambda w: [*label_only(w, w.jsonl), "--drop-label", "retacred=per:identiy"],
        r"ignored label 'per:identiy' is not in its label set"),
    "reevaluate-patch-not-name-value": Case(
        lambda w: ["relations", "reevaluate", w.jsonl, "--patch", str(w.tacrev)], r"--patch '.*': expected NAME=VALUE"),
    "reevaluate-patch-with-json-versions": Case(
        lambda w: [*reevaluate(w, w.pred), "--patch", f"tacrev={w.tacrev}"],
        r"--patch works with label-only predictions"),
}


def write_patch(w, name: str, content) -> Path:
    """Replace the world's patches by one file ``name`` (None: a file that is not JSON)."""
    for p in w.patch_dir.iterdir():
        p.unlink()
    return write(w.patch_dir / name, "{'e0': no" if content is None else json.dumps(content)).parent


def copy_to(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(exist_ok=True)
    shutil.copy(src, dst)
    return dst


COMMANDS = ("score", "validate", "convert", "patch", "annotate", "aggregate", "find-issues", "reevaluate")


def test_enough_cases_over_every_command():
    assert len(CASES) >= 30
    assert all(name.startswith(COMMANDS) for name in CASES)
    for command in COMMANDS:
        assert sum(name.startswith(command + "-") for name in CASES) >= 2, command


@pytest.mark.parametrize("name", list(CASES))
def test_refused(w, name):
    case = CASES[name]
    args = [str(a) for a in case.args(w)]
    inputs = [p for p in w.root.iterdir() if p != w.out]  # every file of the world, the bad one included
    refused(args, match=case.match, inputs=inputs, out=case.out(w), usage=case.usage)


def test_the_world_is_valid(w):
    """Every command succeeds on the world's files, so each refusal above is caused by its one bad input."""
    ok = [
        ["relations", "score", w.data, w.pred],
        ["relations", "validate", w.data, "--labels", "tacred"],
        ["relations", "convert", w.data, "--out", w.root / "c.jsonl", "--to", "opennre"],
        ["relations", "patch", w.data_dir, w.patch_dir, "--out", w.root / "patched"],
        ["relations", "annotate", w.data, w.gold, "--out", w.root / "round"],
        ["relations", "aggregate", w.answers, w.data, "--out", w.root / "agg", "--gold-key", w.gold_key],
        ["relations", "find-issues", w.data, w.probs, "--out", w.root / "i.csv", "--label-file", w.label_file],
        ["relations", "reevaluate", w.data, w.after, w.pred, "--n-bootstrap", "0"],
        [*label_only(w, w.jsonl, w.pred), "--label-map", "retacred=retacred", "--drop-label", "retacred=per:identity"],
    ]
    for args in ok:
        res = invoke(args)
        assert res.exit_code == 0, (args[1], res.output)


def test_score_and_reevaluate_refuse_a_prediction_file_alike(w):
    """One validation for both: the same bad file gets the same message from score and from reevaluate."""
    bad = write(w.root / "m.txt", "org:founded_by\nno_relation\nper:boss\nno_relation\n")
    a = invoke(["relations", "score", w.data, bad])
    b = invoke(["relations", "reevaluate", w.data, w.after, bad, "--n-bootstrap", "0"])
    assert a.exit_code == b.exit_code == 2
    assert a.stderr == b.stderr and "m.txt:3: predicted label 'per:boss'" in a.stderr
