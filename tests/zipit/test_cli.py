"""`knotwork zipit merge` on tiny checkpoints: output equals the library call, safe writes, clear errors."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from knotwork.cli import app
from knotwork.zipit import zip_models
from knotwork.zipit.class_vectors import random_class_vectors
from knotwork.zipit.models import ClassEmbeddingHead, HeadedModel, SmallCNN, build_from_state


def _says(result, needle: str) -> bool:
    """Whether the CLI output contains ``needle``, ignoring Rich's box drawing and line wrapping."""
    def squash(text: str) -> str:
        return re.sub(r"[│╭╮╰╯─\s]+", "", text)

    return squash(needle) in squash(result.output)


@pytest.fixture()
def files(tmp_path):
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = HeadedModel(SmallCNN(8, 6), ClassEmbeddingHead(random_class_vectors(4, 6))).eval()
        path = tmp_path / f"m{seed}.safetensors"
        save_file(model.state_dict(), str(path))
        paths.append(path)
    images = np.random.default_rng(0).integers(0, 256, size=(40, 12, 12), dtype=np.uint8)
    data = tmp_path / "data.npz"
    np.savez(data, x_train=images)
    return paths, data, images


def test_merge_writes_the_zipped_model_and_a_report(files, tmp_path):
    (a, b), data, images = files
    out = tmp_path / "merged.safetensors"
    args = ["zipit", "merge", str(a), str(b), "--data", str(data), "--out", str(out), "--arch", "cnn",
            "--width", "8", "--n-images", "40", "--batch-size", "20", "--beta", "0.5"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    # Oracle: the same merge through the Python API.
    models = [build_from_state("cnn", load_file(p), width=8) for p in (a, b)]
    x = torch.from_numpy(images).float().div(255).unsqueeze(1)
    expected = zip_models(models, [(x[:20],), (x[20:],)], beta=0.5).state_dict()
    got = load_file(out)
    for key, t in expected.items():
        torch.testing.assert_close(got[key], t)
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["method"] == "zipit" and report["beta"] == 0.5 and len(report["inputs"]) == 2
    assert len(report["inputs"][0]["sha256"]) == 64
    # A second run refuses to overwrite without --force.
    again = CliRunner().invoke(app, args)
    assert again.exit_code != 0 and _says(again, "exists; pass --force")


def test_merge_errors_name_the_bad_input(files, tmp_path):
    (a, b), data, _ = files
    out = tmp_path / "o.safetensors"
    runner = CliRunner()
    r = runner.invoke(app, ["zipit", "merge", str(a), str(b), "--data", str(data), "--out", str(out),
                            "--arch", "cnn", "--width", "8", "--key", "images"])
    assert r.exit_code != 0 and _says(r, "has no array 'images'")
    r = runner.invoke(app, ["zipit", "merge", str(a), str(b), "--data", str(data), "--out", str(out),
                            "--arch", "vit"])
    assert r.exit_code != 0 and _says(r, "unknown architecture 'vit'")
    r = runner.invoke(app, ["zipit", "merge", str(a), str(b), "--data", str(data), "--out", str(a), "--arch", "cnn"])
    assert r.exit_code != 0 and _says(r, "is one of the inputs")
    r = runner.invoke(app, ["zipit", "merge", str(a), str(tmp_path / "nope.safetensors"), "--data", str(data),
                            "--out", str(out)])
    assert r.exit_code != 0 and _says(r, "nope.safetensors")
