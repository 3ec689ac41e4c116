"""`knotwork merge` at the CLI, for the rank policy, sharded bases, configs and Dask (issue 12's checks)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from knotwork.merge import METHODS, MergeConfig, load_adapter, merge_modules
from knotwork.merge.api import adapter_factors
from tests.cli_contract import invoke, refused
from tests.merge.helpers import random_factors, write_peft_dir
from tests.merge.test_model_io import OTHER_FILES, SHARDS, files_under, make_base, make_hub_cache

# Modules of the sharded test base (tests/merge/test_model_io.py): one per shard.
SHAPES = {"encoder.layer.0.query": (8, 6), "encoder.layer.1.query": (8, 6), "pooler.dense": (6, 6)}
PARAMS = {"scale": 0.7, "topk": 30, "drop_rate": 0.2, "seed": 3}


def _adapters(tmp_path, shapes=SHAPES):
    return [write_peft_dir(tmp_path / f"t{i}", random_factors(shapes, r, seed=i), r=r, alpha=2 * r, base_model="tiny")
            for i, r in enumerate((2, 3, 2))]


def _flags(method, params=PARAMS):
    args = ["--method", method]
    for k, v in params.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    return args


def _in_memory(dirs, method, params=PARAMS):
    return merge_modules(adapter_factors([load_adapter(d) for d in dirs]), method=method, config=MergeConfig(**params))


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_as_an_adapter_is_exact(tmp_path, method):
    """KnOTS methods and TA are exact without --rank; full-rank methods with --rank full; all to 1e-6 relative."""
    dirs = _adapters(tmp_path)
    full_rank = method in ("ties", "dare", "dare-ties")
    out = tmp_path / "out"
    args = ["merge", *map(str, dirs), "--out", str(out), *_flags(method), *(["--rank", "full"] if full_rank else [])]
    res = invoke(args)
    assert res.exit_code == 0, res.output
    want = _in_memory(dirs, method)
    got = load_adapter(out).deltas()
    for name, delta in want.iter_deltas():
        assert float((got[name] - delta).norm() / delta.norm()) < 1e-6, name
    report = json.loads((out / "merge_report.json").read_text())
    assert report["truncation"]["total"]["rel_error"] < 1e-6
    if full_rank:  # without a rank policy a full-rank merge is refused, before anything is written
        refused(["merge", *map(str, dirs), "--out", str(tmp_path / "o2"), *_flags(method)],
                match=rf"--method {method} gives a full-rank update.*--rank K.*--rank full.*--base",
                inputs=dirs, out=tmp_path / "o2")


def test_rank_k_records_the_true_truncation_error(tmp_path):
    dirs = _adapters(tmp_path, {"m": (40, 30)})
    out = tmp_path / "out"
    res = invoke(["merge", *map(str, dirs), "--out", str(out), *_flags("ties"), "--rank", "4"])
    assert res.exit_code == 0, res.output
    assert "truncated to rank 4: rel. error" in res.stderr + res.stdout
    delta = _in_memory(dirs, "ties").delta("m").double()
    written = load_adapter(out).deltas()["m"].double()
    true = float((written - delta).norm() / delta.norm())
    optimum = float(torch.linalg.svdvals(delta)[4:].pow(2).sum().sqrt() / delta.norm())
    report = json.loads((out / "merge_report.json").read_text())
    assert report["truncation"]["modules"]["m"]["rel_error"] == pytest.approx(true, rel=1e-4)
    assert report["truncation"]["total"]["rel_error"] == pytest.approx(true, rel=1e-4)
    assert true <= 1.01 * optimum and report["modules"]["m"]["merged_rank"] == 4


@pytest.mark.parametrize("method", ["knots-ties", "dare-ties"])
def test_sharded_base_round_trips_with_its_layout(tmp_path, method):
    base = make_base(tmp_path / "base")
    dirs = _adapters(tmp_path)
    out = tmp_path / "merged"
    res = invoke(["merge", *map(str, dirs), "--base", str(base), "--out", str(out), *_flags(method)])
    assert res.exit_code == 0, res.output
    assert set(SHARDS) <= files_under(out) and "1_Pooling/config.json" in files_under(out)
    for rel, data in OTHER_FILES.items():
        assert (out / rel).read_bytes() == data
    assert (out / "model.safetensors.index.json").read_bytes() == (base / "model.safetensors.index.json").read_bytes()
    want = _in_memory(dirs, method)
    for shard in SHARDS:
        before, after = load_file(str(base / shard)), load_file(str(out / shard))
        assert list(after) == list(before)
        for key, weight in before.items():
            module = key.removesuffix(".weight")
            expected = weight + want.delta(module) if module in SHAPES else weight
            torch.testing.assert_close(after[key], expected, rtol=1e-6, atol=1e-6)
    report = json.loads((out / "merge_report.json").read_text())
    assert report["output"] == "model" and report["parameters"]["topk"] == 30


def test_base_from_the_hub_cache_by_model_id(tmp_path, monkeypatch):
    make_hub_cache(tmp_path / "hub", "org/tiny-model")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    dirs = _adapters(tmp_path)
    res = invoke(["merge", *map(str, dirs), "--base", "org/tiny-model", "--out", str(tmp_path / "m"), "--method", "ta"])
    assert res.exit_code == 0, res.output
    refused(["merge", *map(str, dirs), "--base", "org/absent", "--out", str(tmp_path / "m2")],
            match=r"org/absent: base model not found \(neither a folder nor a model id", out=tmp_path / "m2")


def test_config_file_equals_flags_and_the_report_redoes_the_merge(tmp_path):
    dirs = _adapters(tmp_path)
    by_flags = tmp_path / "flags"
    assert invoke(["merge", *map(str, dirs), "--out", str(by_flags), *_flags("dare-ties"), "--rank", "3",
                   "--task-scales", "1,0.5,2"]).exit_code == 0
    cfg = tmp_path / "merge.yaml"
    cfg.write_text("method: dare-ties\nrank: 3\nout: " + str(tmp_path / "by-config") + "\nadapters:\n"
                   + "".join(f"  - path: {d}\n    weight: {w}\n" for d, w in zip(dirs, (1, 0.5, 2), strict=True))
                   + "parameters: {scale: 0.7, topk: 30, drop_rate: 0.2, seed: 3}\n")
    res = invoke(["merge", "--config", str(cfg)])
    assert res.exit_code == 0, res.output
    a = load_file(str(by_flags / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "by-config" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # The report is a config: fed back (with another --out) it writes the same adapter.
    again = invoke(["merge", "--config", str(by_flags / "merge_report.json"), "--out", str(tmp_path / "again")])
    assert again.exit_code == 0, again.output
    c = load_file(str(tmp_path / "again" / "adapter_model.safetensors"))
    assert all(torch.equal(a[k], c[k]) for k in a)
    refused(["merge", "--config", str(tmp_path / "nope.yaml")], match=r"nope.yaml: merge config not found")
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: ties\nadapters: [a]\nout: o\nrnak: 3\n")
    refused(["merge", "--config", str(bad)], match=r"bad.yaml: unknown field 'rnak'", inputs=[bad])


@pytest.mark.slow
def test_scheduler_local_cluster_writes_the_same_merge(tmp_path):
    pytest.importorskip("distributed")
    dirs = _adapters(tmp_path)
    one, many = tmp_path / "one", tmp_path / "many"
    assert invoke(["merge", *map(str, dirs), "--out", str(one), *_flags("ties"), "--rank", "full"]).exit_code == 0
    res = invoke(["merge", *map(str, dirs), "--out", str(many), *_flags("ties"), "--rank", "full",
                  "--scheduler", "local:2"])
    assert res.exit_code == 0, res.output
    a, b = (load_file(str(p / "adapter_model.safetensors")) for p in (one, many))
    assert all(torch.equal(a[k], b[k]) for k in a)
