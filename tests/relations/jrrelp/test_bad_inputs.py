"""Bad input to `knotwork jrrelp train` and `knotwork jrrelp linkpred` is refused before any work, in one line.

Every row runs the command in-process and asserts the CLI contract (tests/cli_contract.refused): exit code 2,
exactly one `error: ...` line naming the file and the item, no traceback, inputs byte-identical, no output and
no temp entry left beside it.
"""

from __future__ import annotations

import json

import pytest
import torch

from tests.cli_contract import refused

from .helpers import synthetic_examples


def _tacred(examples, **change):
    rows = []
    for e in examples:
        row = {"id": e.id, "token": list(e.tokens), "relation": e.relation, "subj_start": e.subj_start,
               "subj_end": e.subj_end, "obj_start": e.obj_start, "obj_end": e.obj_end, "subj_type": e.subj_type,
               "obj_type": e.obj_type}
        rows.append(row)
    for key, value in change.items():
        rows[1][key] = value
    return json.dumps(rows, indent=1)


@pytest.fixture
def re_data(tmp_path):
    """A valid TACRED folder; cases break one file or pass one bad option."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.json").write_text(_tacred(synthetic_examples(12, seed=0)))
    (data / "dev.json").write_text(_tacred(synthetic_examples(6, seed=1)))
    (data / "test.json").write_text(_tacred(synthetic_examples(6, seed=2)))
    return data


TREE = [(f"n{i}", "parent", f"n{(i - 1) // 2}") for i in range(1, 8)]


@pytest.fixture
def kg_data(tmp_path):
    """A valid triples folder (train/valid/test .txt)."""
    data = tmp_path / "kg"
    data.mkdir()
    (data / "train.txt").write_text("".join(f"{h}\t{r}\t{t}\n" for h, r, t in TREE))
    (data / "valid.txt").write_text("n3\tparent\tn1\n")
    (data / "test.txt").write_text("n4\tparent\tn1\n")
    return data


def _write(path, text):
    path.write_text(text)


# (case id, how to break the data folder, extra options, the error line must match)
TRAIN_CASES = [
    ("missing-folder", lambda d: None, ["--data", "{tmp}/nowhere"], r"nowhere: no such data folder"),
    ("missing-dev", lambda d: (d / "dev.json").unlink(), [], r"dev\.json: missing dev split"),
    ("malformed-json-line", lambda d: _write(d / "train.json", '[{"id": "a",\n  oops}]'), [],
     r"train\.json: malformed JSON .*line 2"),
    ("example-missing-field", lambda d: _write(d / "train.json", json.dumps([{"id": "x1", "token": ["a"]}])), [],
     r"train\.json: example x1: missing field"),
    ("dev-label-outside-set", lambda d: _write(d / "dev.json", _tacred(synthetic_examples(6, seed=1),
                                                                       relation="per:alien")), [],
     r"dev\.json: 1 example have a relation outside the label set of train\.json \(first: example s1-1, "
     r"relation 'per:alien'\)"),
    ("test-label-outside-set", lambda d: _write(d / "test.json", _tacred(synthetic_examples(6, seed=2),
                                                                         relation="org:alien")), [],
     r"test\.json: .*relation 'org:alien'"),
    ("epochs-zero", lambda d: None, ["--epochs", "0"], r"--epochs must be an integer >= 1; got 0"),
    ("batch-size-negative", lambda d: None, ["--batch-size", "-3"], r"--batch-size must be an integer >= 1; got -3"),
    ("patience-zero", lambda d: None, ["--patience", "0"], r"--patience must be an integer >= 1"),
    ("lambda-nan", lambda d: None, ["--jrrelp", "--lambda", "nan"], r"--lambda must be a finite number >= 0; got nan"),
    ("lambda-inf", lambda d: None, ["--jrrelp", "--lambda-coupling", "inf"], r"--lambda-coupling must be a finite"),
    ("lambda-negative", lambda d: None, ["--jrrelp", "--lambda-kglp", "-0.5"], r"--lambda-kglp must be .* got -0\.5"),
    ("lambda-without-jrrelp", lambda d: None, ["--lambda", "0.5"], r"--lambda.* need --jrrelp"),
    ("coupling-without-jrrelp", lambda d: None, ["--relation-coupling", "joint"],
     r"--relation-coupling needs --jrrelp \(the baseline has a plain linear classifier\)"),
    ("lr-zero", lambda d: None, ["--lr", "0"], r"--lr must be a finite number > 0; got 0"),
    ("dims-do-not-factor", lambda d: None, ["--hidden-dim", "25"],
     r"hidden_dim=25 must be a multiple of conve_width=10"),
    ("cgcn-without-parses", lambda d: None, ["--encoder", "cgcn"],
     r"--encoder cgcn: .*train\.json has no dependency parses \(example s0-0 lacks 'stanford_head'"),
    ("node-key-field-missing", lambda d: None, ["--node-key", "lemma"],
     r"train\.json: example s0-0 lacks field 'subj_lemma', which --node-key lemma reads"),
    ("empty-train", lambda d: _write(d / "train.json", "[]"), [], r"train\.json: holds no examples"),
    ("exact-data-parallel-transformer", lambda d: None, ["--encoder", "transformer", "--exact-data-parallel"],
     r"--exact-data-parallel covers --encoder palstm only"),
]


@pytest.mark.parametrize(("case", "breaker", "options", "match"), TRAIN_CASES, ids=[c[0] for c in TRAIN_CASES])
def test_train_refuses(re_data, tmp_path, case, breaker, options, match):
    breaker(re_data)
    out = tmp_path / "run"
    options = [o.replace("{tmp}", str(tmp_path)) for o in options]
    data = [] if "--data" in options else ["--data", str(re_data)]
    refused(["jrrelp", "train", *data, "--out", str(out), "--epochs", "1", *options], match=match,
            inputs=[re_data], out=out)


def test_train_unknown_encoder_is_a_usage_error(re_data, tmp_path):
    refused(["jrrelp", "train", "--data", str(re_data), "--out", str(tmp_path / "run"), "--encoder", "bilstm"],
            match=r"'bilstm' is not one of 'palstm', 'transformer', 'cgcn'", usage=True, inputs=[re_data],
            out=tmp_path / "run")


def test_train_output_may_not_be_its_input(re_data):
    refused(["jrrelp", "train", "--data", str(re_data), "--out", str(re_data)], match=r"the output is an input",
            inputs=[re_data], out=re_data)


def test_train_force_never_replaces_a_foreign_folder(re_data, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    refused(["jrrelp", "train", "--data", str(re_data), "--out", str(out), "--force"],
            match=r"mine: exists and is not a knotwork output", inputs=[re_data, out], out=out)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_train_refuses_an_absent_device(re_data, tmp_path):
    refused(["jrrelp", "train", "--data", str(re_data), "--out", str(tmp_path / "run"), "--device", "cuda"],
            match=r"--device cuda: no CUDA device", inputs=[re_data], out=tmp_path / "run")


LINKPRED_CASES = [
    ("missing-folder", lambda d: None, ["--data", "{tmp}/nowhere"], r"nowhere: no such data folder"),
    ("missing-test-split", lambda d: (d / "test.txt").unlink(), [], r"test\.txt: missing test split"),
    ("wrong-column-count", lambda d: _write(d / "train.txt", "n1\tparent\tn0\nn2\tparent\n"), [],
     r"train\.txt:2: expected 'head<TAB>relation<TAB>tail' \(3 columns\), got 2 columns"),
    ("extra-column", lambda d: _write(d / "valid.txt", "n3\tparent\tn1\t0.9\n"), [],
     r"valid\.txt:1: .*got 4 columns"),
    ("unseen-entities", lambda d: _write(d / "valid.txt", "n3\tparent\tn1\nzz\tparent\tn1\nn1\tparent\tyy\n"), [],
     r"2 valid/test triples have an entity or relation unseen in .*train\.txt \(valid\.txt: 2, test\.txt: 0; "
     r"first: valid\.txt 'zz parent n1'\); pass --unseen keep"),
    ("unseen-relation", lambda d: _write(d / "test.txt", "n4\tcousin\tn1\n"), [],
     r"1 valid/test triples .*first: test\.txt 'n4 cousin n1'"),
    ("empty-split", lambda d: _write(d / "valid.txt", "\n"), [], r"valid\.txt: holds no triples"),
    ("dims-do-not-factor", lambda d: None, ["--dim", "201", "--width", "20"],
     r"dim=201 must be a multiple of width=20"),
    ("image-below-kernel", lambda d: None, ["--dim", "4", "--width", "4"], r"smaller than ConvE's 3x3 kernel"),
    ("epochs-zero", lambda d: None, ["--epochs", "0"], r"--epochs must be an integer >= 1; got 0"),
    ("batch-size-zero", lambda d: None, ["--batch-size", "0"], r"--batch-size must be an integer >= 1; got 0"),
    ("lr-nan", lambda d: None, ["--lr", "nan"], r"lr must be finite and > 0; got nan"),
    ("label-smoothing-one", lambda d: None, ["--label-smoothing", "1"], r"label_smoothing must be in \[0, 1\)"),
    ("empty-column", lambda d: _write(d / "test.txt", "n4\tparent\tn1\nn5\t\tn2\n"), [],
     r"test\.txt:2: the relation column is empty: 'n5\\t\\tn2'"),
    ("split-as-txt-and-tsv", lambda d: _write(d / "valid.tsv", "n3\tparent\tn1\n"), [],
     r"valid\.tsv: valid split given twice, as valid\.txt and valid\.tsv; keep one"),
    ("bad-line-in-a-tsv", lambda d: ((d / "train.txt").unlink(), _write(d / "train.tsv", "n1 parent n0\n")), [],
     r"train\.tsv:1: expected 'head<TAB>relation<TAB>tail' \(3 columns\), got 1 column"),
]


@pytest.mark.parametrize(("case", "breaker", "options", "match"), LINKPRED_CASES, ids=[c[0] for c in LINKPRED_CASES])
def test_linkpred_refuses(kg_data, tmp_path, case, breaker, options, match):
    breaker(kg_data)
    out = tmp_path / "run"
    options = [o.replace("{tmp}", str(tmp_path)) for o in options]
    data = [] if "--data" in options else ["--data", str(kg_data)]
    refused(["jrrelp", "linkpred", *data, "--out", str(out), *options], match=match, inputs=[kg_data], out=out)


def test_former_conve_command_names_its_new_name(kg_data, tmp_path):
    refused(["jrrelp", "conve", "--data", str(kg_data), "--out", str(tmp_path / "run"), "--epochs", "1"],
            match=r"`knotwork jrrelp conve` was renamed: run `knotwork jrrelp linkpred` with the same options",
            inputs=[kg_data], out=tmp_path / "run")


def test_linkpred_refuses_to_run_under_torchrun(kg_data, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    refused(["jrrelp", "linkpred", "--data", str(kg_data), "--out", str(tmp_path / "run")],
            match=r"jrrelp linkpred trains in one process, but runs under torchrun with WORLD_SIZE=2",
            inputs=[kg_data], out=tmp_path / "run")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_linkpred_refuses_an_absent_device(kg_data, tmp_path):
    refused(["jrrelp", "linkpred", "--data", str(kg_data), "--out", str(tmp_path / "run"), "--device", "cuda"],
            match=r"--device cuda: no CUDA device", inputs=[kg_data], out=tmp_path / "run")


def test_linkpred_json_may_not_overwrite_a_foreign_file(kg_data, tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text('{"mine": 1}')
    refused(["jrrelp", "linkpred", "--data", str(kg_data), "--out", str(tmp_path / "run"), "--json", str(target),
             "--force"], match=r"metrics\.json: exists and is not a knotwork output", inputs=[kg_data, target],
            out=tmp_path / "run")


def test_linkpred_unknown_unseen_policy_is_a_usage_error(kg_data, tmp_path):
    refused(["jrrelp", "linkpred", "--data", str(kg_data), "--out", str(tmp_path / "run"), "--unseen", "ignore"],
            match=r"'ignore' is not one of 'refuse', 'keep', 'drop'", usage=True, inputs=[kg_data],
            out=tmp_path / "run")
