"""`knotwork dba train` and the MNIST reader on a tiny MNIST-format file (random pixels, labels 0-9)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from knotwork.cli import app
from knotwork.train.io import load_mnist


@pytest.fixture
def tiny_mnist(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "mnist.npz"
    np.savez(
        path,
        x_train=rng.integers(0, 256, size=(40, 28, 28), dtype=np.uint8),
        y_train=np.repeat(np.arange(10, dtype=np.uint8), 4),
        x_test=rng.integers(0, 256, size=(15, 28, 28), dtype=np.uint8),
        y_test=rng.integers(0, 10, size=15).astype(np.uint8),
    )
    return path


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


def test_refuses_to_overwrite_without_force(tiny_mnist, tmp_path):
    out = tmp_path / "run.json"
    out.write_text("{}")
    result = _train(tiny_mnist, out)
    assert result.exit_code != 0
    assert "exists; pass --force" in result.output
    assert out.read_text() == "{}"
    assert _train(tiny_mnist, out, "--force").exit_code == 0


def test_unknown_metric_fails_before_training(tiny_mnist, tmp_path):
    result = _train(tiny_mnist, tmp_path / "x.json", "--metric", "gns")
    assert isinstance(result.exception, ValueError)
    assert "unknown DBA metric 'gns'" in str(result.exception)
    assert not (tmp_path / "x.json").exists()


def test_load_mnist_names_file_and_key(tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, x_train=np.zeros((2, 28, 28), np.uint8), y_train=np.zeros(2, np.uint8))
    with pytest.raises(ValueError, match=r"bad.npz: missing arrays \['x_test', 'y_test'\]"):
        load_mnist(bad)
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, x_train=np.zeros((2, 27, 28), np.uint8), y_train=np.zeros(2, np.uint8),
             x_test=np.zeros((1, 28, 28), np.uint8), y_test=np.zeros(1, np.uint8))
    with pytest.raises(ValueError, match=r"wrong.npz: 'x_train' must have shape \(n, 28, 28\); got \(2, 27, 28\)"):
        load_mnist(wrong)
    with pytest.raises(FileNotFoundError, match="MNIST file not found"):
        load_mnist(tmp_path / "none.npz")


def test_real_mnist_matches_its_readme(shared_data):
    data = load_mnist(shared_data / "vision" / "mnist.npz")
    assert np.bincount(data["y_test"]).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_missing_data_file_is_named(tmp_path):
    result = _train(tmp_path / "absent.npz", tmp_path / "x.json")
    assert result.exit_code != 0
    assert "MNIST file not found" in result.output and "absent.npz" in result.output
