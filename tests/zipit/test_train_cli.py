"""`knotwork zipit train`: a tiny run writes a checkpoint `zipit merge` accepts; seeded runs repeat; bad input is
refused before any work with one line naming the item (tests/cli_contract.refused)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from knotwork._io import report_path
from knotwork.zipit.training import train_on_task
from tests.cli_contract import invoke, refused

MNIST = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "vision" / "mnist.npz"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """300 training and 100 test images (MNIST when present, else seeded synthetic 12x12 images), 10 classes."""
    path = tmp_path_factory.mktemp("train") / "data.npz"
    if MNIST.is_file():
        with np.load(MNIST) as a:
            arrays = {"x_train": a["x_train"][:300], "y_train": a["y_train"][:300],
                      "x_test": a["x_test"][:100], "y_test": a["y_test"][:100]}
    else:
        rng = np.random.default_rng(0)
        arrays = {"x_train": rng.integers(0, 256, (300, 12, 12), dtype=np.uint8), "y_train": np.arange(300) % 10,
                  "x_test": rng.integers(0, 256, (100, 12, 12), dtype=np.uint8), "y_test": np.arange(100) % 10}
    np.savez(path, **arrays)
    return path


def train_args(data, out, *extra, classes="0,1,2,3,4"):
    return ["zipit", "train", str(data), "--arch", "cnn", "--width", "4", "--dim", "8", "--classes", classes,
            "--epochs", "1", "--batch-size", "50", "--lr", "0.05", "--seed", "3", "--out", str(out), *extra]


def _run(args):
    res = invoke(args)
    assert res.exit_code == 0, res.output
    return res


def test_train_writes_a_checkpoint_that_zipit_merge_accepts(data, tmp_path):
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    _run(train_args(data, a, "--json", str(tmp_path / "a.json")))
    _run(train_args(data, b, classes="5,6,7,8,9"))
    report = json.loads(report_path(a).read_text())
    assert report["classes"] == [0, 1, 2, 3, 4] and report["n_classes"] == 10 and report["epochs"] == 1
    assert report["arch"] == "cnn" and report["width"] == 4 and report["device"] == "cpu"
    assert 0.0 <= report["test_accuracy"] <= 1.0 and report["test"]["images"] == 100
    assert json.loads((tmp_path / "a.json").read_text())["output"] == str(a)
    state = load_file(a)
    assert all(t.device.type == "cpu" and torch.isfinite(t).all() for t in state.values())
    merged = tmp_path / "merged.safetensors"
    _run(["zipit", "merge", str(a), str(b), "--data", str(data), "--arch", "cnn", "--width", "4",
          "--n-images", "50", "--batch-size", "25", "--out", str(merged)])
    assert set(load_file(merged)) == set(state)


def test_same_seed_gives_identical_weights_and_cpu_is_the_default(data, tmp_path):
    runs = {"a": (), "b": (), "cpu": ("--device", "cpu")}
    states = {}
    for name, extra in runs.items():
        out = tmp_path / f"{name}.safetensors"
        _run(train_args(data, out, *extra))
        states[name] = load_file(out)
    for other in ("b", "cpu"):
        assert set(states[other]) == set(states["a"])
        for key, t in states["a"].items():
            assert torch.equal(states[other][key], t), key
    _run(train_args(data, tmp_path / "s4.safetensors", "--seed", "4"))
    s4 = load_file(tmp_path / "s4.safetensors")
    assert any(not torch.equal(s4[k], t) for k, t in states["a"].items() if k != "head.class_vectors")


def test_train_on_task_device_argument_returns_a_cpu_model():
    from knotwork.zipit.class_vectors import random_class_vectors
    from knotwork.zipit.models import ClassEmbeddingHead, HeadedModel, SmallCNN

    def once(**kw):
        torch.manual_seed(0)
        model = HeadedModel(SmallCNN(4, 6), ClassEmbeddingHead(random_class_vectors(3, 6)))
        x = torch.rand(30, 1, 8, 8)
        y = torch.arange(30) % 3
        return train_on_task(model, x, y, [0, 1], epochs=1, batch_size=10, seed=1, **kw).state_dict()

    plain, cpu = once(), once(device="cpu")
    for key, t in plain.items():
        assert cpu[key].device.type == "cpu" and torch.equal(cpu[key], t)


def _bad_npz(tmp_path, **arrays):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    return path


CASES = [
    ("unknown-class", {"classes": "0,12"}, (), r"class 12 is not a class of .*data\.npz.*0\.\.9"),
    ("empty-classes", {"classes": ","}, (), r"--classes.*names no class"),
    ("not-a-number", {"classes": "0,x"}, (), r"--classes.*'x' is not a class id"),
    ("negative-class", {"classes": "0,-1"}, (), r"--classes.*-1 is negative"),
    ("repeated-class", {"classes": "1,1"}, (), r"--classes.*class 1 is named twice"),
    ("zero-epochs", {}, ("--epochs", "0"), r"--epochs must be an integer >= 1; got 0"),
    ("zero-batch", {}, ("--batch-size", "0"), r"--batch-size must be an integer >= 1; got 0"),
    ("nan-lr", {}, ("--lr", "nan"), r"--lr must be a finite number > 0; got nan"),
    ("inf-lr", {}, ("--lr", "inf"), r"--lr must be a finite number > 0; got inf"),
    ("negative-lr", {}, ("--lr", "-0.1"), r"--lr must be a finite number > 0"),
    ("zero-width", {}, ("--width", "0"), r"--width must be an integer >= 1"),
    ("missing-labels", {}, ("--labels", "labels"), r"data\.npz: has no array 'labels'"),
    ("normalize-channels", {}, ("--normalize", "cifar10"), r"array 'x_train' has 1 channel.*cifar10"),
]


@pytest.mark.parametrize(("case_id", "kw", "extra", "match"), CASES, ids=[c[0] for c in CASES])
def test_bad_options_are_refused_before_any_work(data, tmp_path, case_id, kw, extra, match):
    out = tmp_path / "m.safetensors"
    refused(train_args(data, out, *extra, **kw), match=match, inputs=[data], out=out)


def test_output_that_is_the_data_file_is_refused(data):
    refused(train_args(data, data), match=r"data\.npz", inputs=[data])


def test_existing_output_needs_force(data, tmp_path):
    out = tmp_path / "m.safetensors"
    out.write_bytes(b"somebody's file")
    refused(train_args(data, out, "--force"), match=r"not a knotwork output", inputs=[data], out=out)


def test_class_without_training_images_is_refused(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (20, 8, 8), dtype=np.uint8)
    path = _bad_npz(tmp_path, x_train=x, y_train=np.arange(20) % 3, x_test=x[:4], y_test=np.array([0, 1, 2, 5]))
    out = tmp_path / "m.safetensors"
    refused(train_args(path, out, classes="0,5"), match=r"class 5 has no training image", inputs=[path], out=out)


def test_bad_labels_are_refused(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (20, 8, 8), dtype=np.uint8)
    out = tmp_path / "m.safetensors"
    neg = _bad_npz(tmp_path, x_train=x, y_train=np.arange(20) - 1)
    refused(train_args(neg, out), match=r"'y_train' label 0 = -1 is negative", inputs=[neg], out=out)
    short = _bad_npz(tmp_path, x_train=x, y_train=np.arange(10))
    refused(train_args(short, out), match=r"'y_train' has 10 labels but 'x_train' has 20 images",
            inputs=[short], out=out)
    frac = _bad_npz(tmp_path, x_train=x, y_train=np.linspace(0, 1, 20))
    refused(train_args(frac, out), match=r"'y_train' label 1 = .* is not an integer", inputs=[frac], out=out)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_device_cuda_is_refused_without_a_gpu(data, tmp_path):
    out = tmp_path / "m.safetensors"
    refused(train_args(data, out, "--device", "cuda"), match=r"--device cuda: no CUDA device", inputs=[data], out=out)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_device_cuda_trains_and_writes_cpu_weights(data, tmp_path):
    out = tmp_path / "gpu.safetensors"
    _run(train_args(data, out, "--device", "cuda"))
    assert json.loads(report_path(out).read_text())["device"] == "cuda"
    assert all(torch.isfinite(t).all() for t in load_file(out).values())
