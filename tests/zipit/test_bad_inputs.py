"""Bad input to `knotwork zipit merge` is refused before any work, with one line naming the file and the item.

Every row runs the command in-process and asserts the CLI contract (tests/cli_contract.refused): exit code,
one `error:` line that names the item, no traceback, inputs byte-identical, no output and nothing beside it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from knotwork._errors import ZipitError
from knotwork._io import report_path, sha256_file
from knotwork.zipit import task_accuracy, zip_models
from knotwork.zipit.models import MLP, ClassEmbeddingHead, HeadedModel
from tests.cli_contract import invoke, refused
from tests.zipit.test_cli import make_inputs, merge_args


def _poison(path: Path, key: str, value: float) -> None:
    state = load_file(path)
    state[key] = state[key].clone()
    state[key].view(-1)[1] = value
    save_file(state, str(path))


def _retensor(path: Path, change: Callable[[dict], None]) -> None:
    state = load_file(path)
    change(state)
    save_file(state, str(path))


def _images(path: Path, array: np.ndarray, key: str = "x_train") -> None:
    np.savez(path, **{key: array})


def _nan_images(ctx, value: float) -> None:
    x = np.random.default_rng(1).random((40, 12, 12), dtype=np.float32)
    x[3, 5, 5] = value
    _images(ctx.data, x)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _rgb_inputs(ctx) -> None:
    _images(ctx.data, np.random.default_rng(2).integers(0, 256, size=(40, 12, 12, 3), dtype=np.uint8))


def _wider_b(ctx) -> None:
    """Checkpoint b: the same architecture at width 16 (checkpoint a is width 8)."""
    from knotwork.zipit.class_vectors import random_class_vectors
    from knotwork.zipit.models import SmallCNN

    model = HeadedModel(SmallCNN(16, 6), ClassEmbeddingHead(random_class_vectors(4, 6)))
    save_file(model.state_dict(), str(ctx.b))


@dataclass(frozen=True)
class Case:
    id: str
    match: str
    prepare: Callable[[SimpleNamespace], None] = lambda ctx: None
    extra: tuple[str, ...] = ()
    args: Callable[[SimpleNamespace], list[str]] | None = None  # replaces the default command line
    usage: bool = False
    marks: tuple = field(default_factory=tuple)


CASES = [
    # --- outputs: never an input, never a file knotwork did not write
    Case("out-is-a-checkpoint", r"m0.safetensors: the output is an input",
         args=lambda c: merge_args(c.a, c.b, c.data, c.a)),
    Case("out-is-the-data-file", r"data.npz: the output is an input",
         args=lambda c: merge_args(c.a, c.b, c.data, c.data)),
    Case("out-folder-holds-the-inputs", r"the output contains an input",
         args=lambda c: merge_args(c.a, c.b, c.data, c.tmp)),
    Case("out-exists-without-force", r"merged.safetensors: output file exists; pass --force",
         prepare=lambda c: c.out.write_bytes(b"an earlier file")),
    Case("force-over-a-foreign-file", r"merged.safetensors: exists and is not a knotwork output",
         prepare=lambda c: c.out.write_bytes(b"not ours"), extra=("--force",)),
    Case("json-is-the-output", r"--json .*merged.safetensors: the same path as --out",
         args=lambda c: merge_args(c.a, c.b, c.data, c.out, "--json", str(c.out))),
    Case("json-is-an-input", r"data.npz: the output is an input",
         args=lambda c: merge_args(c.a, c.b, c.data, c.out, "--json", str(c.data))),
    # --- images
    Case("nan-image", r"data.npz: array 'x_train' image 3 holds NaN or inf", prepare=lambda c: _nan_images(c, np.nan)),
    Case("inf-image", r"data.npz: array 'x_train' image 3 holds NaN or inf", prepare=lambda c: _nan_images(c, np.inf)),
    Case("no-such-array", r"data.npz: has no array 'images'; it has \['x_train'\]", extra=("--key", "images")),
    Case("labels-array-as-images", r"data.npz: array 'y' has dtype int64; images must be uint8 or float",
         prepare=lambda c: _images(c.data, np.arange(40), key="y"), extra=("--key", "y")),
    Case("vectors-not-images", r"data.npz: array 'x_train' has shape \(40, 144\)",
         prepare=lambda c: _images(c.data, np.zeros((40, 144), np.float32))),
    Case("no-images", r"data.npz: array 'x_train' holds no images",
         prepare=lambda c: _images(c.data, np.zeros((0, 12, 12), np.uint8))),
    Case("data-not-an-npz", r"data.npz: not a readable .npz archive",
         prepare=lambda c: c.data.write_text("x_train,1,2,3\n")),
    Case("data-missing", r"nope.npz: no such file",
         args=lambda c: merge_args(c.a, c.b, c.tmp / "nope.npz", c.out)),
    Case("channel-mismatch", r"data.npz: array 'x_train' has 3 channel\(s\) but the cnn checkpoints read 1",
         prepare=_rgb_inputs),
    Case("normalisation-for-other-channels", r"data.npz: array 'x_train' has 1 channel\(s\) but --normalize "
         r"cifar10 is for 3", extra=("--normalize", "cifar10")),
    # --- checkpoints
    Case("nan-weight", r"m1.safetensors: tensor 'backbone.bn1.weight' holds 1 non-finite value",
         prepare=lambda c: _poison(c.b, "backbone.bn1.weight", float("nan"))),
    Case("inf-weight", r"m0.safetensors: tensor 'backbone.conv2.weight' holds 1 non-finite value",
         prepare=lambda c: _poison(c.a, "backbone.conv2.weight", float("-inf"))),
    Case("truncated-checkpoint", r"m1.safetensors: not a readable safetensors checkpoint",
         prepare=lambda c: _truncate(c.b)),
    Case("pickle-not-safetensors", r"m0.safetensors: not a readable safetensors checkpoint",
         prepare=lambda c: torch.save({"w": torch.zeros(2)}, c.a)),
    Case("checkpoint-missing", r"nope.safetensors: no such file",
         args=lambda c: merge_args(c.a, c.tmp / "nope.safetensors", c.data, c.out)),
    Case("one-checkpoint", r"need at least 2 checkpoints to merge; got 1",
         args=lambda c: ["zipit", "merge", str(c.a), "--data", str(c.data), "--out", str(c.out), "--arch", "cnn"]),
    Case("wrong-architecture", r"m0.safetensors: missing tensor 'backbone.layer1.0.conv1.weight' \(and \d+ more\): "
         r"not a resnet20 of width 8", extra=("--arch", "resnet20")),
    Case("unexpected-tensor", r"m0.safetensors: unexpected tensor 'backbone.extra': not a cnn of width 8",
         prepare=lambda c: [_retensor(p, lambda s: s.update({"backbone.extra": torch.zeros(3)})) for p in (c.a, c.b)]),
    Case("wrong-width", r"m0.safetensors: tensor 'backbone.conv1.weight' has shape \(4, 1, 3, 3\) but a cnn of "
         r"width 16 needs \(8, 1, 3, 3\)", extra=("--width", "16")),
    Case("checkpoints-of-different-shapes", r"m1.safetensors: tensor 'backbone.bn1.bias' has shape "
         r"\(8,\) but \(4,\) in .*m0.safetensors; the checkpoints must share one architecture", prepare=_wider_b),
    Case("checkpoint-with-a-tensor-the-first-lacks", r"m1.safetensors: has tensor 'extra' that .*m0.safetensors "
         "lacks", prepare=lambda c: _retensor(c.b, lambda s: s.update({"extra": torch.zeros(1)}))),
    Case("checkpoint-without-a-tensor-the-first-has", r"m1.safetensors: has no tensor 'backbone.bn3.bias' that "
         r".*m0.safetensors has", prepare=lambda c: _retensor(c.b, lambda s: s.pop("backbone.bn3.bias"))),
    # --- options
    Case("bad-method", r"Invalid value for '--method':.* 'zip' is not one of 'zipit', 'permute'", extra=("--method", "zip"), usage=True),
    Case("bad-arch", r"Invalid value for '--arch':.* 'vit' is not one of 'resnet20', 'cnn'", extra=("--arch", "vit"), usage=True),
    Case("bad-normalize", r"Invalid value for '--normalize'", extra=("--normalize", "imagenet"), usage=True),
    Case("alpha-above-one", r"alpha must be in \[0, 1\]; got 1.5", extra=("--alpha", "1.5")),
    Case("alpha-nan", r"alpha must be in \[0, 1\]; got nan", extra=("--alpha", "nan")),
    Case("beta-negative", r"beta must be in \[0, 1\]; got -0.1", extra=("--beta", "-0.1")),
    Case("alpha-for-permute", r"--alpha and --beta are ZipIt! options; --method permute does not use them",
         extra=("--method", "permute", "--alpha", "0.5")),
    Case("zero-batch-size", r"--batch-size must be an integer >= 1; got 0", extra=("--batch-size", "0")),
    Case("negative-image-count", r"--n-images must be an integer >= 1; got -5", extra=("--n-images", "-5")),
    Case("zero-width", r"--width must be an integer >= 1; got 0", extra=("--width", "0")),
    Case("stop-at-names-nothing", r"stop_at='backbone.layer9' names no fx node and no module",
         extra=("--stop-at", "backbone.layer9")),
    Case("no-cuda-here", r"--device cuda: no CUDA device is available", extra=("--device", "cuda"),
         marks=(pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA"),)),
]


@pytest.fixture()
def ctx(tmp_path):
    (a, b), data, _ = make_inputs(tmp_path)
    return SimpleNamespace(tmp=tmp_path, a=a, b=b, data=data, out=tmp_path / "merged.safetensors")


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=c.marks) for c in CASES])
def test_bad_input_is_refused(case: Case, ctx):
    case.prepare(ctx)
    args = case.args(ctx) if case.args else merge_args(ctx.a, ctx.b, ctx.data, ctx.out, *case.extra)
    out = ctx.out if not case.args else Path(args[args.index("--out") + 1])
    inputs = [p for p in (ctx.a, ctx.b, ctx.data) if p.exists()]
    refused(args, match=case.match, inputs=inputs, out=out if out not in inputs and out != ctx.tmp else None,
            usage=case.usage)
    assert not report_path(ctx.out).exists()


def test_enough_cases():
    assert len(CASES) >= 25


def test_out_named_json_keeps_the_weights_and_puts_the_report_beside_them(ctx):
    """`--out merged.json` once wrote the report over the weights: now the weights stay, the report goes beside."""
    out = ctx.tmp / "merged.json"
    result = invoke(merge_args(ctx.a, ctx.b, ctx.data, out))
    assert result.exit_code == 0, result.output
    weights = load_file(out)  # still a safetensors file, not a JSON report
    assert "backbone.conv1.weight" in weights
    report = json.loads(report_path(out).read_text())
    assert report_path(out).name == "merged.json.knotwork.json"
    assert report["sha256"] == sha256_file(out) and report["file"] == "merged.json"
    # A rerun refuses without --force, and --force replaces this knotwork output (weights again).
    refused(merge_args(ctx.a, ctx.b, ctx.data, out), match=r"merged.json: output file exists",
            inputs=[ctx.a, ctx.b, ctx.data, out], out=out)
    assert invoke(merge_args(ctx.a, ctx.b, ctx.data, out, "--force")).exit_code == 0
    assert set(load_file(out)) == set(weights)


# --- the same refusals in the library, for callers that do not come through the CLI


def _mlps():
    torch.manual_seed(0)
    return MLP(4, 8, 3), MLP(4, 8, 3)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"max_batches": 0}, r"max_batches must be an integer >= 1; got 0"),
    ({"bn_batches": -1}, r"bn_batches must be an integer >= 1; got -1"),
    ({"alpha": 2.0}, r"alpha must be in \[0, 1\]; got 2.0"),
    ({"stop_at": "nowhere"}, r"stop_at='nowhere' names no fx node"),
])
def test_zip_models_refuses_before_any_data_pass(kwargs, match):
    seen = []

    class Loader:
        def __iter__(self):
            seen.append(1)
            return iter([torch.randn(5, 4)])

    with pytest.raises(ZipitError, match=match):
        zip_models(list(_mlps()), Loader(), **kwargs)
    assert len(seen) <= 1  # at most the tracing example was read; no statistics pass started


def test_zip_models_names_the_model_and_tensor_with_nan_weights():
    a, b = _mlps()
    with torch.no_grad():
        b.hidden[0].weight[2, 1] = float("nan")
    with pytest.raises(ZipitError, match=r"model 1 tensor 'hidden.0.weight' holds 1 non-finite value"):
        zip_models([a, b], [torch.randn(5, 4)])


def test_zip_models_names_the_batch_with_nan_inputs():
    batches = [torch.randn(5, 4), torch.randn(5, 4)]
    batches[1][0, 0] = float("inf")
    with pytest.raises(ZipitError, match=r"loader batch 1 holds 1 non-finite value"):
        zip_models(list(_mlps()), batches)


def test_task_accuracy_refuses_classes_outside_the_head():
    a, _ = _mlps()
    x, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    with pytest.raises(ZipitError, match=r"tasks' classes\[2\] = 3 is not a class of the model's head \(0\.\.2\)"):
        task_accuracy(a, x, y, [[0, 1], [3]])
