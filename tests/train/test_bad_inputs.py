"""Every bad input of `knotwork dba train` is refused before training: exit 2, one line naming the file and the
array or the option, inputs untouched, no output (tests/cli_contract.refused)."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.cli_contract import refused
from tests.train.conftest import make_mnist

TINY = ["--per-class", "2", "--steps", "2", "--hidden", "4"]


@pytest.fixture(autouse=True)
def no_training(monkeypatch):
    """Refusals come before any work: a call to the trainer fails the case (as an internal error, exit 1)."""

    def trained(*args, **kwargs):
        raise AssertionError("train_mlp ran for an input that should have been refused")

    monkeypatch.setattr("knotwork.train.mlp.train_mlp", trained)


def _nan_images(split: str, value: float, row: int = 3) -> dict:
    x = np.random.default_rng(1).random((40 if split == "train" else 15, 28, 28)).astype(np.float32)
    x[row, 5, 7] = value
    return {f"x_{split}": x}


def _write_text(path: Path) -> None:
    path.write_text("x_train,y_train\n1,2\n")


def _write_npy(path: Path) -> None:
    with open(path, "wb") as fh:  # a bare .npy under an .npz name
        np.save(fh, np.zeros((4, 28, 28), np.uint8))


def _write_truncated(path: Path) -> None:
    make_mnist(path)
    path.write_bytes(path.read_bytes()[:300])


def _write_pickled(path: Path) -> None:
    x = np.empty(40, dtype=object)
    x[:] = [np.zeros((28, 28)) for _ in range(40)]
    make_mnist(path, x_train=x)


def _write_pickle(path: Path) -> None:
    path.write_bytes(pickle.dumps({"x_train": np.zeros((4, 28, 28))}))


def _write_empty(path: Path) -> None:
    path.write_bytes(b"")


def _write_bad_member(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as zf:  # a zip whose member is not a .npy
        zf.writestr("x_train.npy", b"not an array")
        for k in ("y_train", "x_test", "y_test"):
            zf.writestr(f"{k}.npy", b"")  # never read: x_train is refused first


# id: (data: overrides for make_mnist | a writer | None for a missing file, extra args, match, usage)
CASES = {
    # the data file and its arrays
    "missing file": (None, [], r"absent\.npz: no such file", False),
    "text file": (_write_text, [], r"data\.npz: not a readable \.npz archive", False),
    "empty file": (_write_empty, [], r"data\.npz: not a readable \.npz archive", False),
    "pickle file": (_write_pickle, [], r"data\.npz: not a readable \.npz archive.*pickles are never loaded", False),
    "bare npy": (_write_npy, [], r"data\.npz: holds a single \.npy array", False),
    "truncated npz": (_write_truncated, [], r"data\.npz: .*(not a readable|cannot be read)", False),
    "corrupt member": (_write_bad_member, [], r"data\.npz: array 'x_train' cannot be read", False),
    "pickled array": (_write_pickled, [], r"data\.npz: array 'x_train' holds Python objects.*allow_pickle=False", False),
    "missing arrays": ({"x_test": None, "y_test": None}, [], r"data\.npz: missing arrays x_test, y_test", False),
    "NaN train images": (_nan_images("train", np.nan), [], r"data\.npz: array 'x_train' holds 1 non-finite value", False),
    "inf test images": (_nan_images("test", np.inf), [], r"data\.npz: array 'x_test' holds 1 non-finite value", False),
    "label 10": ({"y_train": np.r_[np.repeat(np.arange(10), 4)[:-1], 10]}, [],
                 r"data\.npz: array 'y_train' holds label 10 at row 39, outside 0-9", False),
    "negative label": ({"y_test": np.r_[-1, np.zeros(14, int)]}, [],
                       r"data\.npz: array 'y_test' holds label -1 at row 0", False),
    "float labels": ({"y_train": np.repeat(np.arange(10), 4) + 0.5}, [],
                     r"data\.npz: array 'y_train' has dtype float64; expected integer labels", False),
    "label count": ({"y_train": np.repeat(np.arange(10), 4)[:39]}, [],
                    r"data\.npz: array 'y_train' has 39 labels but 'x_train' has 40 images", False),
    "image shape": ({"x_test": np.zeros((15, 28, 27), np.uint8)}, [],
                    r"data\.npz: array 'x_test' must have shape \(n, 28, 28\); got \(15, 28, 27\)", False),
    "string images": ({"x_test": np.full((15, 28, 28), "a")}, [], r"data\.npz: array 'x_test' has dtype <U1", False),
    "empty test split": ({"x_test": np.zeros((0, 28, 28), np.uint8), "y_test": np.zeros(0, np.uint8)}, [],
                         r"data\.npz: array 'x_test' is empty", False),
    "per class above available": ({}, ["--per-class", "5"],
                                  r"data\.npz: array 'y_train': class 0 has only 4 examples.*--per-class", False),
    "class absent": ({"y_train": np.repeat(np.arange(10), 4) % 9}, [],
                     r"data\.npz: array 'y_train': class 9 has only 0 examples", False),
    # options
    "per class 0": ({}, ["--per-class", "0"], r"--per-class must be an integer >= 1; got 0", False),
    "steps 0": ({}, ["--steps", "0"], r"steps must be an integer >= 1; got 0", False),
    "steps negative": ({}, ["--steps", "-3"], r"steps must be an integer >= 1; got -3", False),
    "hidden 0": ({}, ["--hidden", "0"], r"hidden must be an integer >= 1; got 0", False),
    "lr 0": ({}, ["--lr", "0"], r"lr must be a finite number > 0; got 0", False),
    "lr negative": ({}, ["--lr", "-0.1"], r"lr must be a finite number > 0; got -0\.1", False),
    "lr nan": ({}, ["--lr", "nan"], r"lr must be a finite number > 0; got nan", False),
    "lr inf": ({}, ["--lr", "inf"], r"lr must be a finite number > 0; got inf", False),
    "momentum negative": ({}, ["--optimizer", "sgd", "--momentum", "-0.5"], r"momentum must be a finite number >= 0", False),
    "momentum with adam": ({}, ["--momentum", "0.9"], r"momentum applies to the sgd optimizer only", False),
    "min size 0": ({}, ["--min-size", "0"], r"'min_size' parameter of DBA must be an int >= 1\. Got 0", False),
    "min size above pool": ({}, ["--min-size", "21"], r"--min-size 21 exceeds the pool of 20 training images", False),
    "threads 0": ({}, ["--threads", "0"], r"--threads must be an integer >= 1; got 0", False),
    "seed negative": ({}, ["--seed", "-1"], r"--seed must be an integer >= 0; got -1", False),
    "random composition without dba": ({}, ["--no-dba", "--random-composition"],
                                       r"--random-composition .* cannot go with --no-dba", False),
    "unknown metric": ({}, ["--metric", "gns"], r"'gns' is not one of", True),
    "unknown search": ({}, ["--search", "beam"], r"'beam' is not one of", True),
    "unknown optimizer": ({}, ["--optimizer", "rmsprop"], r"'rmsprop' is not one of", True),
    "unknown aggregate": ({}, ["--aggregate", "median"], r"'median' is not one of", True),
    "unknown device": ({}, ["--device", "tpu"], r"'tpu' is not one of", True),
    "steps not a number": ({}, ["--steps", "many"], r"--steps.*valid integer", True),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_bad_input_is_refused(tmp_path, case):
    data_spec, extra, match, usage = CASES[case]
    data = tmp_path / ("absent.npz" if data_spec is None else "data.npz")
    if isinstance(data_spec, dict):
        make_mnist(data, **data_spec)
    elif callable(data_spec):
        data_spec(data)
    out = tmp_path / "out" / "run.json"
    refused(["dba", "train", data, "--out", out, *TINY, *extra], match=match, usage=usage,
            inputs=[data] if data.exists() else [], out=out)


# Output paths: never over the input, never over a file knotwork did not write, never a folder.
def _out_is_the_data(tmp_path, data):
    return data, ["--force"], r"data\.npz: the output is an input"


def _out_exists(tmp_path, data):
    out = tmp_path / "run.json"
    out.write_text("{}")
    return out, [], r"run\.json: output file exists; pass --force"


def _out_foreign_with_force(tmp_path, data):
    out = tmp_path / "run.json"
    out.write_text('{"mine": 1}')
    return out, ["--force"], r"run\.json: exists and is not a knotwork output"


def _out_is_a_folder(tmp_path, data):
    out = tmp_path / "run.json"
    out.mkdir()
    return out, ["--force"], r"run\.json: exists as a folder, but this command writes a file"


def _json_is_the_data(tmp_path, data):
    return tmp_path / "run.json", ["--json", str(data), "--force"], r"data\.npz: the output is an input"


def _json_is_the_out(tmp_path, data):
    out = tmp_path / "run.json"
    return out, ["--json", str(out)], r"--json .*run\.json: the same file as --out"


OUTPUT_CASES = [_out_is_the_data, _out_exists, _out_foreign_with_force, _out_is_a_folder, _json_is_the_data,
                _json_is_the_out]


@pytest.mark.parametrize("make", OUTPUT_CASES, ids=[f.__name__.strip("_") for f in OUTPUT_CASES])
def test_bad_output_is_refused(tmp_path, make):
    data = make_mnist(tmp_path / "data.npz")
    out, extra, match = make(tmp_path, data)
    refused(["dba", "train", data, "--out", out, *TINY, *extra], match=match, inputs=[data], out=out)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_unavailable_device_is_refused(tmp_path):
    data = make_mnist(tmp_path / "data.npz")
    out = tmp_path / "run.json"
    refused(["dba", "train", data, "--out", out, *TINY, "--device", "cuda"],
            match=r"--device cuda: no CUDA device", inputs=[data], out=out)

