"""Tests of streaming model I/O against safetensors' own loader and hand-built folders and hub caches."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from knotwork._errors import MergeError, OutputError
from knotwork._io import MARKER
from knotwork.merge.model_io import BaseModel, resolve_model_dir, write_merged_model

SHARDS = {
    "model-00001-of-00002.safetensors": {"embeddings.weight": (10, 6), "encoder.layer.0.query.weight": (8, 6),
                                         "encoder.layer.0.query.bias": (8,)},
    "model-00002-of-00002.safetensors": {"encoder.layer.1.query.weight": (8, 6), "pooler.dense.weight": (6, 6)},
}
OTHER_FILES = {  # copied byte for byte
    "config.json": b'{"model_type": "bert", "hidden_size": 6}\n',
    "tokenizer.json": b'{"version": "1.0", "model": {"vocab": {"a": 0}}}\n',
    "1_Pooling/config.json": b'{"word_embedding_dimension": 6, "pooling_mode_mean_tokens": true}\n',
}
STALE = {"pytorch_model.bin": b"stale base weights", "onnx/model.onnx": b"stale export"}  # not copied


def make_base(path: Path, dtype: torch.dtype = torch.float32, *, seed: int = 0) -> Path:
    """Two shards + index, a sentence-transformers subfolder with its own weights, tokenizer and config."""
    g = torch.Generator().manual_seed(seed)
    weight_map, total = {}, 0
    path.mkdir(parents=True)
    for shard, shapes in SHARDS.items():
        tensors = {k: torch.randn(s, generator=g).to(dtype) for k, s in shapes.items()}
        save_file(tensors, str(path / shard), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(tensors, shard))
        total += sum(t.numel() * t.element_size() for t in tensors.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (path / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    (path / "2_Dense").mkdir()
    save_file({"linear.weight": torch.randn(3, 6, generator=g)}, str(path / "2_Dense/model.safetensors"))
    for rel, data in {**OTHER_FILES, **STALE}.items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_bytes(data)
    return path


def files_under(path: Path) -> set[str]:
    return {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()}


def no_output(out: Path) -> bool:
    """Nothing at ``out`` and no temp entry beside it."""
    return not out.exists() and not list(out.parent.glob(f".{out.name}.*"))


def random_delta(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_merged_model_keeps_layout_and_adds_deltas(
    tmp_path: Path, dtype: torch.dtype, caplog: pytest.LogCaptureFixture
) -> None:
    base_dir = make_base(tmp_path / "base", dtype)
    d0, d1 = random_delta((8, 6), 1), random_delta((8, 6), 2)
    calls = []

    def lazy_d1() -> torch.Tensor:
        calls.append("layer1")
        return d1

    # An exact name, and one with a wrapper prefix (a PEFT/sentence-transformers adapter) the base lacks.
    deltas = {"encoder.layer.0.query": d0, "0.auto_model.encoder.layer.1.query": lazy_d1}
    out = write_merged_model(tmp_path / "out", BaseModel(base_dir), deltas, report={"method": "test"})

    assert calls == ["layer1"]
    assert "not copied to the merged model (base weights in another format): onnx/, pytorch_model.bin" in caplog.text
    assert files_under(out) == files_under(base_dir) - set(STALE) | {MARKER}
    for rel in [*OTHER_FILES, "model.safetensors.index.json", "2_Dense/model.safetensors"]:
        assert (out / rel).read_bytes() == (base_dir / rel).read_bytes(), rel
    assert json.loads((out / MARKER).read_text())["report"] == {"method": "test"}
    expected_delta = {"encoder.layer.0.query.weight": d0, "encoder.layer.1.query.weight": d1}
    for shard in SHARDS:
        before, after = load_file(base_dir / shard), load_file(out / shard)
        assert list(after) == list(before)
        for key, weight in before.items():
            assert after[key].dtype == dtype, key
            want = weight if key not in expected_delta else (weight.float() + expected_delta[key]).to(dtype)
            assert torch.equal(after[key], want), key
    # The loader's view agrees: the index's weight_map names the shard of every written tensor.
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert {k: s for s in SHARDS for k in load_file(out / s)} == index["weight_map"]
    total = sum(t.numel() * t.element_size() for s in SHARDS for t in load_file(out / s).values())
    assert index["metadata"]["total_size"] == total


def test_fan_in_fan_out_transposes_the_update(tmp_path: Path) -> None:
    base_dir = make_base(tmp_path / "base")
    delta = random_delta((6, 8), 3)  # (d_out, d_in) of a layer stored as (d_in, d_out) = (8, 6)
    out = write_merged_model(tmp_path / "out", BaseModel(base_dir), {"encoder.layer.0.query": delta},
                             fan_in_fan_out=True)
    shard = "model-00001-of-00002.safetensors"
    key = "encoder.layer.0.query.weight"
    assert torch.equal(load_file(out / shard)[key], load_file(base_dir / shard)[key] + delta.T)


def test_single_file_base(tmp_path: Path) -> None:
    base_dir = tmp_path / "base"
    base_dir.mkdir()
    weight = random_delta((4, 3), 4)
    save_file({"fc.weight": weight}, str(base_dir / "model.safetensors"))  # no metadata at all
    delta = random_delta((4, 3), 5)
    out = write_merged_model(tmp_path / "out", BaseModel(base_dir), {"fc": lambda: delta})
    assert files_under(out) == {"model.safetensors", MARKER}
    assert torch.equal(load_file(out / "model.safetensors")["fc.weight"], weight + delta)


def test_missing_module_is_refused_before_writing(tmp_path: Path) -> None:
    base = BaseModel(make_base(tmp_path / "base"))

    def never() -> torch.Tensor:
        raise AssertionError("computed a delta before the checks")

    with pytest.raises(MergeError, match=r"module 'decoder\.out': no weight for it in the base model .*base"):
        write_merged_model(tmp_path / "out", base, {"encoder.layer.0.query": never, "decoder.out": never})
    assert no_output(tmp_path / "out")


@pytest.mark.parametrize("how", ["tensor", "shapes", "fan_in_fan_out"])
def test_shape_mismatch_is_refused_before_writing(tmp_path: Path, how: str) -> None:
    base = BaseModel(make_base(tmp_path / "base"))
    if how == "tensor":
        kwargs, deltas = {}, {"encoder.layer.1.query": random_delta((8, 5), 6)}
        got = r"\(8, 5\)"
    elif how == "shapes":
        kwargs, deltas = {"shapes": {"encoder.layer.1.query": (8, 5)}}, {"encoder.layer.1.query": lambda: 1 / 0}
        got = r"\(8, 5\)"
    else:
        kwargs, deltas = {"fan_in_fan_out": True}, {"encoder.layer.1.query": random_delta((8, 6), 6)}
        got = r"transposed for fan_in_fan_out, has \(6, 8\)"
    with pytest.raises(MergeError, match=rf"module 'encoder\.layer\.1\.query': base weight "
                                         rf"'encoder\.layer\.1\.query\.weight' .* has shape \(8, 6\), the update.*{got}"):
        write_merged_model(tmp_path / "out", base, deltas, **kwargs)
    assert no_output(tmp_path / "out")


def test_shape_found_wrong_when_computed_leaves_no_output(tmp_path: Path) -> None:
    base = BaseModel(make_base(tmp_path / "base"))
    deltas = {"encoder.layer.0.query": random_delta((8, 6), 7), "pooler.dense": lambda: random_delta((6, 5), 8)}
    with pytest.raises(MergeError, match=r"'pooler\.dense\.weight' .* \(6, 6\), the update has \(6, 5\)"):
        write_merged_model(tmp_path / "out", base, deltas)
    assert no_output(tmp_path / "out")


def test_output_inside_the_base_is_refused(tmp_path: Path) -> None:
    base = BaseModel(make_base(tmp_path / "base"))
    for out in (base.path, base.path / "merged"):
        with pytest.raises(OutputError, match="input"):
            write_merged_model(out, base, {"pooler.dense": random_delta((6, 6), 9)})
    assert files_under(base.path) == files_under(make_base(tmp_path / "fresh"))


def test_find_weight_key(tmp_path: Path) -> None:
    base_dir = tmp_path / "base"
    base_dir.mkdir()
    keys = ["bert.encoder.layer.0.query.weight", "bert.encoder.layer.1.query.weight", "head.weight"]
    save_file({k: torch.zeros(2, 2) for k in keys}, str(base_dir / "weights.safetensors"))
    base = BaseModel(base_dir)
    assert base.find_weight_key("head") == "head.weight"  # exact
    assert base.find_weight_key("encoder.layer.0.query") == keys[0]  # the base carries a prefix
    assert base.find_weight_key("base_model.model.layer.1.query") == keys[1]  # the adapter carries one
    with pytest.raises(MergeError, match=r"module 'x\.query': matches 2 weights .*name it in full"):
        base.find_weight_key("x.query")
    with pytest.raises(MergeError, match=rf"module 'value': no weight for it in the base model {base_dir}"):
        base.find_weight_key("value")


def test_bad_bases_are_refused(tmp_path: Path) -> None:
    only_bin = tmp_path / "bin"
    only_bin.mkdir()
    torch.save({"w": torch.zeros(1)}, only_bin / "pytorch_model.bin")
    with pytest.raises(MergeError, match=r"only pytorch_model\.bin; merging a base streams safetensors"):
        BaseModel(only_bin)
    base_dir = make_base(tmp_path / "base")
    index = json.loads((base_dir / "model.safetensors.index.json").read_text())
    index["weight_map"]["pooler.dense.weight"] = "model-00001-of-00002.safetensors"
    (base_dir / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(MergeError, match=r"names 'pooler\.dense\.weight' in model-00001-of-00002"):
        BaseModel(base_dir)


def make_hub_cache(cache: Path, repo_id: str, sha: str = "0123abcd" * 5) -> Path:
    """The hub cache layout: files as links into blobs/, the snapshot named by refs/main."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    model = make_base(cache.parent / "hub-src")
    snapshot = repo / "snapshots" / sha
    (repo / "blobs").mkdir(parents=True)
    for i, rel in enumerate(sorted(files_under(model))):
        blob = repo / "blobs" / f"blob{i}"
        os.replace(model / rel, blob)
        (snapshot / rel).parent.mkdir(parents=True, exist_ok=True)
        (snapshot / rel).symlink_to(os.path.relpath(blob, (snapshot / rel).parent))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(sha)
    return snapshot


def test_model_id_resolves_offline_from_the_hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    snapshot = make_hub_cache(tmp_path / "hub", "org/tiny-model")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_model_dir("org/tiny-model") == snapshot
    assert resolve_model_dir(snapshot) == snapshot  # a folder is taken as it is
    out = write_merged_model(tmp_path / "out", BaseModel(resolve_model_dir("org/tiny-model")),
                             {"pooler.dense": random_delta((6, 6), 10)})
    for rel in OTHER_FILES:  # real files, not links into the cache
        assert not (out / rel).is_symlink() and (out / rel).read_bytes() == OTHER_FILES[rel]


def test_unknown_model_id_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in ("org/not-cached", str(tmp_path / "no" / "such" / "folder")):
        with pytest.raises(MergeError, match="neither a folder nor a model id .* knotwork never downloads"):
            resolve_model_dir(name)
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(MergeError, match="is a file"):
        resolve_model_dir(tmp_path / "file.txt")
