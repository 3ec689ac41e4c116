"""Saving and loading runs, and `knotwork jrrelp train` / `knotwork jrrelp linkpred` end to end on tiny data."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest
import torch
from typer.testing import CliRunner

from knotwork._errors import JrrelpError, OutputError
from knotwork._io import read_marker
from knotwork.cli import app
from knotwork.relations.jrrelp import TrainConfig, predict, train
from knotwork.relations.jrrelp.io import load_conve_run, load_run, save_run
from knotwork.relations.jrrelp.linkpred import evaluate_link_prediction, index_triples

from .helpers import synthetic_examples

TINY = dict(embedding_dim=20, hidden_dim=20, attention_dim=10, position_dim=5, num_layers=1, conve_width=5,
            conve_channels=4, vocab_min_count=1, optimizer="adam", lr=0.01, batch_size=16, epochs=1)


def _flat(output: str) -> str:
    """Typer boxes and wraps error messages; join the words back together."""
    return " ".join(output.replace("│", " ").split())


def _write(folder, name, examples):
    rows = [{"id": e.id, "token": list(e.tokens), "relation": e.relation, "subj_start": e.subj_start,
             "subj_end": e.subj_end, "obj_start": e.obj_start, "obj_end": e.obj_end, "subj_type": e.subj_type,
             "obj_type": e.obj_type} for e in examples]
    (folder / name).write_text(json.dumps(rows))


def test_save_load_round_trip_gives_identical_predictions(tmp_path):
    tr, dv = synthetic_examples(48, seed=0), synthetic_examples(16, seed=1)
    res = train(tr, dv, TrainConfig.jrrelp("palstm", **TINY))
    save_run(res, tmp_path / "run", metrics={"x": 1})
    model, feat, kg, config = load_run(tmp_path / "run")
    assert config == res.config and kg == res.kg
    for name, tensor in res.model.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], tensor, msg=name)
    assert predict(model, feat, dv, kg.relations) == predict(res.model, res.featurizer, dv, kg.relations)
    with pytest.raises(OutputError, match="output folder exists; pass --force"):
        save_run(res, tmp_path / "run")
    with pytest.raises(JrrelpError, match="config.json is missing; is .* a run folder"):
        load_run(tmp_path)
    assert set(read_marker(tmp_path / "run")["files"]) == {"config.json", "kg.json", "model.safetensors",
                                                          "history.json", "metrics.json"}


def test_a_run_saved_before_relation_coupling_existed_loads_as_joint(tmp_path):
    tr, dv = synthetic_examples(48, seed=0), synthetic_examples(16, seed=1)
    res = train(tr, dv, TrainConfig.jrrelp("palstm", relation_coupling="joint", **TINY))
    save_run(res, tmp_path / "run")
    meta = json.loads((tmp_path / "run" / "config.json").read_text())
    del meta["config"]["relation_coupling"]  # what an older knotwork wrote
    (tmp_path / "run" / "config.json").write_text(json.dumps(meta))
    model, feat, kg, config = load_run(tmp_path / "run")
    assert config.relation_coupling == "joint" and model.relation_embeddings is model.classifier.weight
    assert predict(model, feat, dv, kg.relations) == predict(res.model, res.featurizer, dv, kg.relations)


def test_cli_train_writes_a_run_refuses_to_overwrite_and_force_replaces(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    _write(data, "train.json", synthetic_examples(48, seed=0))
    _write(data, "dev.json", synthetic_examples(16, seed=1))
    _write(data, "test.json", synthetic_examples(16, seed=2))
    out = tmp_path / "run"
    args = ["jrrelp", "train", "--data", str(data), "--out", str(out), "--jrrelp", "--epochs", "1",
            "--hidden-dim", "20", "--embedding-dim", "20", "--optimizer", "adam", "--json", str(tmp_path / "m.json")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) >= {"dev", "test", "best_epoch"}
    reported = json.loads((tmp_path / "m.json").read_text())
    assert reported["test"] == metrics["test"] and "knotwork" in reported
    config = json.loads((out / "config.json").read_text())["config"]
    assert config["lambda_kglp"] == 1.0 == config["lambda_coupling"]  # the paper's λ for PA-LSTM
    assert config["relation_coupling"] == "reference" and metrics["stop_reason"] == "max_epochs"
    # The saved model reproduces the reported test F1 (scored independently by the official scorer).
    from knotwork.relations import load_tacred, score

    model, feat, kg, _ = load_run(out)
    test = load_tacred(data / "test.json")
    pred = predict(model, feat, test, kg.relations)
    assert score([e.relation for e in test], pred).f1 == pytest.approx(metrics["test"]["f1"])
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 2 and "exists; pass --force" in again.stderr
    forced = CliRunner().invoke(app, [*args, "--force", "--seed", "1"])
    assert forced.exit_code == 0, forced.output
    assert json.loads((out / "config.json").read_text())["config"]["seed"] == 1


def test_relations_train_moved_to_jrrelp_and_bench_commands_are_gone():
    runner = CliRunner()
    assert runner.invoke(app, ["relations", "train", "--help"]).exit_code == 2
    for cmd in ("jrrelp", "conve"):
        assert runner.invoke(app, ["bench", cmd, "--help"]).exit_code == 2
    assert runner.invoke(app, ["jrrelp", "train", "--help"]).exit_code == 0
    listing = runner.invoke(app, ["jrrelp", "--help"]).output
    assert "linkpred" in listing and "conve" not in listing  # `jrrelp conve` is hidden; it names its new name


def _triples(folder, train, valid, test, ext=".txt"):
    folder.mkdir()
    for name, rows in (("train", train), ("valid", valid), ("test", test)):
        (folder / f"{name}{ext}").write_text("".join(f"{h}\t{r}\t{t}\n" for h, r, t in rows))


TREE = [(f"n{i}", "parent", f"n{(i - 1) // 2}") for i in range(1, 15)] + [
    (f"n{(i - 1) // 2}", "child", f"n{i}") for i in range(1, 15)
]


def test_cli_linkpred_writes_a_run_whose_model_reproduces_its_metrics(tmp_path):
    _triples(tmp_path / "kg", TREE, [("n3", "parent", "n1")], [("n3", "parent", "n1"), ("n1", "child", "n4")],
             ext=".tsv")
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["jrrelp", "linkpred", "--data", str(tmp_path / "kg"), "--out", str(out),
                                   "--dim", "20", "--width", "5", "--channels", "4", "--epochs", "3",
                                   "--batch-size", "8", "--json", "-"])
    assert res.exit_code == 0, res.output
    reported = json.loads(res.stdout)
    # Distinct (head, relation) queries: 14 "parent" + 7 "child", and as many inverses: 42, i.e. 6 batches of 8.
    assert reported["test"]["n_triples"] == 2 and reported["batches"] == 3 * 6
    model, entities, relations, config = load_conve_run(out)
    assert (config.dim, config.width, config.epochs) == (20, 5, 3)
    triples = index_triples([tuple(t) for t in TREE], [("n3", "parent", "n1")],
                            [("n3", "parent", "n1"), ("n1", "child", "n4")])
    assert (entities, relations) == (triples.entities, triples.relations)
    assert evaluate_link_prediction(model, triples, "test") == pytest.approx(reported["test"])
    assert json.loads((out / "metrics.json").read_text())["test"] == reported["test"]


def test_cli_linkpred_unseen_policies(tmp_path):
    valid = [("n3", "parent", "n1"), ("zz", "parent", "n1")]
    _triples(tmp_path / "kg", TREE, valid, [("n1", "child", "n4")])
    base = ["jrrelp", "linkpred", "--data", str(tmp_path / "kg"), "--dim", "20", "--width", "5", "--channels", "4",
            "--epochs", "1", "--json", "-"]
    dropped = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "a"), "--unseen", "drop"])
    assert dropped.exit_code == 0, dropped.output
    out = json.loads(dropped.stdout)
    assert out["dropped"] == {"valid": 1, "test": 0} and out["valid"]["n_triples"] == 1
    kept = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "b"), "--unseen", "keep"])
    out = json.loads(kept.stdout)
    assert out["valid"]["n_triples"] == 2 and out["n_entities"] == 16  # 15 tree nodes and the unseen 'zz'


def test_config_round_trip():
    cfg = TrainConfig.jrrelp("transformer")
    assert cfg.lambda_kglp == 0.01 and TrainConfig.from_dict(asdict(cfg)) == cfg
    with pytest.raises(KeyError, match="unknown TrainConfig keys: \\['bogus'\\]"):
        TrainConfig.from_dict({"bogus": 1})
    with pytest.raises(JrrelpError, match="'conve_batchnorm' parameter of TrainConfig must be one of"):
        TrainConfig(conve_batchnorm="sync")
