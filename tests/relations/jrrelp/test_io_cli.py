"""Saving and loading runs, and `knotwork relations train` end to end on tiny data."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest
import torch
from typer.testing import CliRunner

from knotwork.cli import app
from knotwork.relations.jrrelp import TrainConfig, predict, train
from knotwork.relations.jrrelp.io import load_run, save_run

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
    with pytest.raises(FileExistsError, match="already holds a run"):
        save_run(res, tmp_path / "run")
    with pytest.raises(FileNotFoundError, match="config.json is missing; is .* a run folder"):
        load_run(tmp_path)


def test_cli_train_writes_a_run_and_refuses_to_overwrite(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    _write(data, "train.json", synthetic_examples(48, seed=0))
    _write(data, "dev.json", synthetic_examples(16, seed=1))
    _write(data, "test.json", synthetic_examples(16, seed=2))
    out = tmp_path / "run"
    args = ["relations", "train", "--data", str(data), "--out", str(out), "--jrrelp", "--epochs", "1",
            "--hidden-dim", "20", "--embedding-dim", "20", "--optimizer", "adam"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) >= {"dev", "test", "best_epoch"}
    config = json.loads((out / "config.json").read_text())["config"]
    assert config["lambda_kglp"] == 1.0 == config["lambda_coupling"]  # the paper's λ for PA-LSTM
    again = CliRunner().invoke(app, args)
    assert again.exit_code != 0 and "already holds a run" in _flat(again.output)


def test_cli_checks_inputs_before_work(tmp_path):
    result = CliRunner().invoke(app, ["relations", "train", "--data", str(tmp_path), "--out", str(tmp_path / "r")])
    assert result.exit_code != 0 and "train.json does not exist" in _flat(result.output)
    (tmp_path / "train.json").write_text("[]")
    (tmp_path / "dev.json").write_text("[]")
    result = CliRunner().invoke(app, ["relations", "train", "--data", str(tmp_path), "--out", str(tmp_path / "r"),
                                      "--lambda", "0.5"])
    assert result.exit_code != 0 and "need --jrrelp" in _flat(result.output)


def test_cli_cgcn_is_skipped_with_a_reason(tmp_path):
    _write(tmp_path, "train.json", synthetic_examples(2, seed=0))
    _write(tmp_path, "dev.json", synthetic_examples(2, seed=1))
    result = CliRunner().invoke(app, ["relations", "train", "--data", str(tmp_path), "--out", str(tmp_path / "r"),
                                      "--encoder", "cgcn"])
    assert result.exit_code == 2
    assert "C-GCN skipped" in _flat(result.output) and "has no dependency parses" in _flat(result.output)


def test_config_round_trip():
    cfg = TrainConfig.jrrelp("transformer")
    assert cfg.lambda_kglp == 0.01 and TrainConfig.from_dict(asdict(cfg)) == cfg
    with pytest.raises(KeyError, match="unknown TrainConfig keys: \\['bogus'\\]"):
        TrainConfig.from_dict({"bogus": 1})
