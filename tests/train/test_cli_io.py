"""`knotwork dba train` and the MNIST reader on a tiny MNIST-format file (random pixels, labels 0-9)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from knotwork._errors import TrainError
from knotwork.cli import app
from knotwork.cli.train import Aggregate, Metric, Optimizer, Search
from knotwork.train import METRICS, SEARCHES
from knotwork.train.dba import AGGREGATES
from knotwork.train.io import load_mnist, to_tensors
from knotwork.train.mlp import OPTIMIZERS, RunSpec, balanced_subset, train_mlp
from tests.cli_contract import refused
from tests.train.conftest import make_mnist


def _train(path, out, *extra):
    args = ["dba", "train", str(path), "--out", str(out), "--per-class", "2", "--steps", "3", "--hidden", "8", *extra]
    return CliRunner().invoke(app, args)


def test_select_all_through_cli_equals_plain_training(tiny_mnist, tmp_path):
    plain = _train(tiny_mnist, tmp_path / "plain.json", "--no-dba", "--optimizer", "sgd", "--lr", "0.5")
    every = _train(tiny_mnist, tmp_path / "all.json", "--search", "all", "--optimizer", "sgd", "--lr", "0.5")
    assert plain.exit_code == 0, plain.output
    assert every.exit_code == 0, every.output
    a, b = json.loads((tmp_path / "plain.json").read_text()), json.loads((tmp_path / "all.json").read_text())
    assert a["acc"]["test"] == b["acc"]["test"]
    np.testing.assert_allclose(a["final_loss"], b["final_loss"], rtol=1e-5)
    assert b["sizes"] == {"0": [20, 20, 20], "2": [20, 20, 20]}


def test_cli_run_equals_library_run(tiny_mnist, tmp_path):
    """The command is a thin shell: the same draw and run through the library give the same numbers."""
    res = _train(tiny_mnist, tmp_path / "run.json", "--seed", "3", "--min-size", "5", "--device", "cpu")
    assert res.exit_code == 0, res.output
    data = load_mnist(tiny_mnist)
    idx = balanced_subset(data["y_train"], 2, np.random.default_rng([3, 2]))
    spec = RunSpec("adam", 1e-3, dba={"metric": "snr", "search": "backward", "aggregate": "mean", "per_layer": True,
                                      "min_size": 5}, hidden=8, steps=3, eval_every=3)
    lib = train_mlp(spec, *to_tensors(data["x_train"][idx], data["y_train"][idx]),
                    {"test": to_tensors(data["x_test"], data["y_test"])}, seed=3)
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["acc"] == lib["acc"] and run["sizes"] == lib["sizes"]
    assert min(min(v) for v in run["sizes"].values()) >= 5
    import hashlib

    assert run["data_sha256"] == hashlib.sha256(tiny_mnist.read_bytes()).hexdigest()


def test_json_summary_matches_the_run_file(tiny_mnist, tmp_path):
    res = _train(tiny_mnist, tmp_path / "run.json", "--json", "-")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    run = json.loads((tmp_path / "run.json").read_text())
    assert summary["test_accuracy"] == run["acc"]["test"][-1]
    assert summary["mean_sizes"] == run["mean_sizes"]
    assert "wrote" in res.stderr  # the human line stays out of the JSON on stdout
    res = _train(tiny_mnist, tmp_path / "run2.json", "--json", str(tmp_path / "summary.json"))
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "summary.json").read_text())["out"] == str(tmp_path / "run2.json")


def test_force_replaces_only_a_previous_run(tiny_mnist, tmp_path):
    out = tmp_path / "run.json"
    assert _train(tiny_mnist, out).exit_code == 0
    first = out.read_text()
    refused(["dba", "train", tiny_mnist, "--out", out, "--per-class", "2", "--steps", "3", "--hidden", "8"],
            match=r"run\.json.*exists.*--force", inputs=[tiny_mnist], out=out)
    res = _train(tiny_mnist, out, "--force", "--seed", "1")
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text())["seed"] == 1 and out.read_text() != first


def test_diverged_run_fails_with_exit_1_and_writes_nothing(tiny_mnist, tmp_path):
    out = tmp_path / "run.json"
    refused(["dba", "train", tiny_mnist, "--out", out, "--per-class", "2", "--steps", "5", "--hidden", "8",
             "--no-dba", "--optimizer", "sgd", "--lr", "1e30"],
            match=r"diverged at step \d+.*--lr", code=1, inputs=[tiny_mnist], out=out)


def test_threads_are_restored_after_the_command(tiny_mnist, tmp_path):
    before = torch.get_num_threads()
    assert _train(tiny_mnist, tmp_path / "run.json", "--threads", "2").exit_code == 0
    assert torch.get_num_threads() == before


def test_choice_enums_are_the_registries():
    """The CLI spells the choices out (so --help needs no torch); they must stay the registry keys."""
    assert {m.value for m in Metric} == set(METRICS)
    assert {s.value for s in Search} == set(SEARCHES)
    assert {a.value for a in Aggregate} == set(AGGREGATES)
    assert {o.value for o in Optimizer} == set(OPTIMIZERS)


def test_load_mnist_names_file_and_key(tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, x_train=np.zeros((2, 28, 28), np.uint8), y_train=np.zeros(2, np.uint8))
    with pytest.raises(TrainError, match=r"bad.npz: missing arrays x_test, y_test"):
        load_mnist(bad)
    wrong = make_mnist(tmp_path / "wrong.npz", x_train=np.zeros((2, 27, 28), np.uint8), y_train=np.zeros(2, np.uint8))
    with pytest.raises(TrainError, match=r"wrong.npz: array 'x_train' must have shape \(n, 28, 28\); got \(2, 27, 28\)"):
        load_mnist(wrong)
    with pytest.raises(TrainError, match="none.npz: no such file"):
        load_mnist(tmp_path / "none.npz")


def test_to_tensors_scales_uint8_only():
    x8 = np.full((1, 28, 28), 255, np.uint8)
    xf = np.full((1, 28, 28), 0.5, np.float32)
    assert float(to_tensors(x8, [3])[0].max()) == 1.0
    assert float(to_tensors(xf, [3])[0].max()) == 0.5
    assert to_tensors(x8, [3])[1].dtype == torch.int64


def test_real_mnist_matches_its_readme(shared_data):
    data = load_mnist(shared_data / "vision" / "mnist.npz")
    assert np.bincount(data["y_test"]).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
