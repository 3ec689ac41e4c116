"""`knotwork zipit merge` on tiny checkpoints: output equals the library call, a report beside it, safe rewrites."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from knotwork._io import report_path, sha256_file
from knotwork.cli.zipit import Arch, Method, Normalize
from knotwork.zipit import METHODS, zip_models
from knotwork.zipit.class_vectors import random_class_vectors
from knotwork.zipit.io import NORMALIZATIONS
from knotwork.zipit.models import ARCHITECTURES, ClassEmbeddingHead, HeadedModel, SmallCNN, build_from_state
from tests.cli_contract import invoke, refused


def make_inputs(tmp_path, *, channels: int = 1, images: np.ndarray | None = None):
    """Two seeded cnn checkpoints (width 8, 4 classes) and 40 uint8 12x12 images in data.npz."""
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = HeadedModel(SmallCNN(8, 6, in_channels=channels), ClassEmbeddingHead(random_class_vectors(4, 6)))
        path = tmp_path / f"m{seed}.safetensors"
        save_file(model.eval().state_dict(), str(path))
        paths.append(path)
    if images is None:
        images = np.random.default_rng(0).integers(0, 256, size=(40, 12, 12), dtype=np.uint8)
    data = tmp_path / "data.npz"
    np.savez(data, x_train=images)
    return paths, data, images


@pytest.fixture()
def files(tmp_path):
    return make_inputs(tmp_path)


def merge_args(a, b, data, out, *extra):
    return ["zipit", "merge", str(a), str(b), "--data", str(data), "--out", str(out), "--arch", "cnn",
            "--width", "8", "--n-images", "40", "--batch-size", "20", *extra]


def test_merge_writes_the_zipped_model_and_a_report_beside_it(files, tmp_path):
    (a, b), data, images = files
    out = tmp_path / "merged.safetensors"
    result = invoke(merge_args(a, b, data, out, "--beta", "0.5"))
    assert result.exit_code == 0, result.output
    # Oracle: the same merge through the Python API.
    models = [build_from_state("cnn", load_file(p), width=8) for p in (a, b)]
    x = torch.from_numpy(images).float().div(255).unsqueeze(1)
    expected = zip_models(models, [(x[:20],), (x[20:],)], beta=0.5).state_dict()
    got = load_file(out)
    assert set(got) == set(expected)
    for key, t in expected.items():
        torch.testing.assert_close(got[key], t)
    report = json.loads(report_path(out).read_text())
    assert report["file"] == "merged.safetensors" and report["sha256"] == sha256_file(out)
    assert report["method"] == "zipit" and report["beta"] == 0.5 and report["alpha"] == 0.3
    assert [i["sha256"] for i in report["inputs"]] == [sha256_file(a), sha256_file(b)]
    assert report["data"]["images"] == 40 and report["knotwork"]["version"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["m0.safetensors", "m1.safetensors", "data.npz", "merged.safetensors", "merged.safetensors.knotwork.json"])


def test_rerun_needs_force_and_force_replaces_only_our_output(files, tmp_path):
    (a, b), data, _ = files
    out = tmp_path / "merged.safetensors"
    assert invoke(merge_args(a, b, data, out)).exit_code == 0
    refused(merge_args(a, b, data, out), match=r"merged.safetensors: output file exists; pass --force",
            inputs=[a, b, data], out=out)
    first = out.read_bytes()
    again = invoke(merge_args(a, b, data, out, "--method", "identity", "--force"))
    assert again.exit_code == 0, again.output
    assert out.read_bytes() != first  # weight averaging, not ZipIt!: another model
    assert json.loads(report_path(out).read_text())["method"] == "identity"
    # A file knotwork did not write is never replaced, even with --force.
    foreign = tmp_path / "theirs.safetensors"
    foreign.write_bytes(b"precious")
    refused(merge_args(a, b, data, foreign, "--force"), match=r"theirs.safetensors: exists and is not a knotwork "
            "output", inputs=[a, b, data], out=foreign)


def test_partial_zip_and_every_method_run_from_the_command_line(files, tmp_path):
    (a, b), data, images = files
    for method in ("permute", "identity", "rebasin"):
        out = tmp_path / f"{method}.safetensors"
        assert invoke(merge_args(a, b, data, out, "--method", method)).exit_code == 0
        assert json.loads(report_path(out).read_text())["method"] == method
    out = tmp_path / "partial.safetensors"
    result = invoke(merge_args(a, b, data, out, "--stop-at", "backbone.conv2"))
    assert result.exit_code == 0, result.output
    # The multi-head model keeps each model's own last layer (its head) untouched.
    got, own_b = load_file(out), load_file(b)
    torch.testing.assert_close(got["heads.1.backbone.linear.weight"], own_b["backbone.linear.weight"])


def test_json_result_goes_to_a_file_or_to_stdout(files, tmp_path):
    (a, b), data, _ = files
    out, result_file = tmp_path / "m.safetensors", tmp_path / "result.json"
    assert invoke(merge_args(a, b, data, out, "--json", str(result_file))).exit_code == 0
    body = json.loads(result_file.read_text())
    assert body["output"] == str(out) and body["report"] == str(report_path(out))
    assert body["inputs"][0]["sha256"] == sha256_file(a) and "knotwork" in body
    printed = invoke(merge_args(a, b, data, tmp_path / "n.safetensors", "--json", "-", "--device", "cpu"))
    assert printed.exit_code == 0, printed.output
    assert json.loads(printed.stdout)["device"] == "cpu"  # stdout holds only the JSON; the summary is on stderr
    assert "zipped 2 models" in printed.stderr


def test_choice_enums_list_exactly_the_library_registries():
    assert [m.value for m in Method] == list(METHODS)
    assert sorted(a.value for a in Arch) == sorted(ARCHITECTURES)
    assert sorted(n.value for n in Normalize) == sorted(NORMALIZATIONS)
    help_text = invoke(["zipit", "merge", "--help"]).output
    for choice in ("zipit", "permute", "identity", "rebasin", "resnet20", "cifar10"):
        assert choice in help_text
