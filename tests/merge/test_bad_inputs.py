"""Every bad input of `knotwork merge` and `knotwork align`, table-driven through tests/cli_contract.refused.

Each case builds tiny adapters in tmp_path, breaks one thing, and asserts the contract: exit code, one
`error: ...` line naming the file and the item, no traceback, inputs byte-identical, nothing half-written.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from knotwork.merge import load_adapter
from tests.cli_contract import invoke, refused
from tests.merge.helpers import random_factors, write_peft_dir

SHAPES = {"enc.0.q": (6, 4), "enc.0.v": (6, 4)}


class Workspace:
    """Two good adapters in runs/a and runs/b, module inputs in x.npy; helpers to break one thing."""

    def __init__(self, root: Path):
        self.root = root
        self.runs = root / "runs"
        self.a = write_peft_dir(self.runs / "a", random_factors(SHAPES, 2, seed=1), r=2, alpha=4)
        self.b = write_peft_dir(self.runs / "b", random_factors(SHAPES, 3, seed=2), r=3, alpha=3)
        self.out = root / "merged"
        self.x = root / "x.npy"
        np.save(self.x, np.random.default_rng(0).normal(size=(20, 4)))
        self.locked: list[Path] = []

    @property
    def inputs(self) -> list[Path]:
        return [self.a, self.b]

    def merge(self, *extra: str, out: Path | None = None, adapters: list[Path] | None = None) -> list[str]:
        return ["merge", *map(str, adapters or self.inputs), "--method", "ta", "--out", str(out or self.out), *extra]

    def align(self, *extra: str, x: Path | None = None, adapters: list[Path] | None = None) -> list[str]:
        return ["align", *map(str, adapters or self.inputs), "--inputs", str(x or self.x), *extra]

    def base(self) -> Path:
        """A tiny base model folder whose weights match SHAPES."""
        base = self.root / "base"
        base.mkdir(exist_ok=True)
        save_file({f"{n}.weight": torch.zeros(s) for n, s in SHAPES.items()}, str(base / "model.safetensors"))
        (base / "config.json").write_text("{}")
        return base

    def config(self, adapter: Path, **changes) -> Path:
        path = adapter / "adapter_config.json"
        config = json.loads(path.read_text())
        config.update(changes)
        path.write_text(json.dumps(config))
        return path

    def adapter(self, name: str, factors, **kw) -> Path:
        return write_peft_dir(self.runs / name, factors, **kw)

    def previous_output(self) -> Path:
        res = invoke(self.merge())
        assert res.exit_code == 0, res.output
        return self.out


@pytest.fixture
def ws(tmp_path):
    w = Workspace(tmp_path)
    yield w
    for path in w.locked:
        os.chmod(path, 0o755)


Case = Callable[[Workspace], dict]
CASES: dict[str, Case] = {}


def case(fn: Case) -> Case:
    CASES[fn.__name__] = fn
    return fn


# ---- outputs: never an input, a folder around an input, or inside one; --force only over knotwork's own --------


@case
def out_contains_the_inputs(w):  # knotwork merge runs/a runs/b --out runs --force
    return dict(args=w.merge("--force", out=w.runs), match=r"runs: the output contains an input", out=w.runs)


@case
def out_is_an_input(w):
    return dict(args=w.merge("--force", out=w.a), match=r"runs/a: the output is an input", out=w.a)


@case
def out_inside_an_input(w):
    out = w.a / "merged"
    return dict(args=w.merge("--force", out=out), match=r"lies inside the input folder .*runs/a", out=out)


@case
def out_is_an_adapter_with_base(w):
    base = w.base()
    return dict(args=w.merge("--base", str(base), "--force", out=w.b), match=r"runs/b: the output is an input",
                out=w.b, extra_inputs=[base])


@case
def out_is_the_base(w):
    base = w.base()
    return dict(args=w.merge("--base", str(base), "--force", out=base), match=r"base: the output is an input",
                out=base, extra_inputs=[base])


@case
def out_inside_the_base(w):
    base = w.base()
    out = base / "merged"
    return dict(args=w.merge("--base", str(base), out=out), match=r"lies inside the input folder .*base",
                out=out, extra_inputs=[base])


@case
def out_not_a_knotwork_output(w):
    mine = w.root / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    return dict(args=w.merge("--force", out=mine), match=r"mine: exists and is not a knotwork output", out=mine)


@case
def out_exists_without_force(w):
    out = w.previous_output()
    return dict(args=w.merge(out=out), match=r"merged: output folder exists; pass --force", out=out)


@case
def force_over_output_holding_a_user_file(w):
    out = w.previous_output()
    (out / "my_notes.txt").write_text("keep me")
    return dict(args=w.merge("--force", out=out), match=r"merged: holds my_notes.txt, which knotwork did not write",
                out=out)


@case
def out_parent_not_writable(w):
    locked = w.root / "locked"
    locked.mkdir()
    os.chmod(locked, 0o500)
    w.locked.append(locked)
    if os.access(locked, os.W_OK):
        pytest.skip("running as root: a 0o500 folder is still writable, so there is nothing to refuse")
    out = locked / "merged"
    return dict(args=w.merge(out=out), match=r"locked/merged: the folder .*locked is not writable", out=out)


@case
def out_under_a_regular_file(w):
    (w.root / "file.txt").write_text("x")
    out = w.root / "file.txt" / "merged"
    return dict(args=w.merge(out=out), match=r"file.txt/merged: .*file.txt is a file, not a folder",
                out=w.root / "file.txt")


@case
def out_is_a_regular_file(w):
    out = w.root / "file.txt"
    out.write_text("x")
    return dict(args=w.merge("--force", out=out), match=r"file.txt: exists as a file, but this command writes a folder",
                out=out)


@case
def json_inside_out(w):
    return dict(args=w.merge("--json", str(w.out / "r.json")), match=r"r.json: --json may not be written inside --out",
                out=w.out)


@case
def json_is_an_input(w):
    cfg = w.a / "adapter_config.json"
    return dict(args=w.merge("--json", str(cfg), "--force"), match=r"adapter_config.json: the output lies inside the input folder .*runs/a",
                out=w.out)


@case
def json_over_a_foreign_file(w):
    mine = w.root / "mine.json"
    mine.write_text("{}")
    return dict(args=w.merge("--json", str(mine), "--force"), match=r"mine.json: exists and is not a knotwork output",
                out=w.out, extra_inputs=[mine])


# ---- impossible options, refused before anything is read --------------------------------------------------------


def _option(args: list[str], match: str) -> Case:
    return lambda w: dict(args=w.merge(*args), match=match, out=w.out)


OPTIONS = {
    "rank_zero": (["--rank", "0"], r"--rank must be an integer >= 1; got 0"),
    "rank_negative": (["--rank", "-2"], r"--rank must be an integer >= 1; got -2"),
    "threads_zero": (["--threads", "0"], r"--threads must be an integer >= 1; got 0"),
    "scale_nan": (["--scale", "nan"], r"--scale must be a finite number; got nan"),
    "scale_inf": (["--scale", "inf"], r"--scale must be a finite number; got inf"),
    "topk_zero": (["--topk", "0"], r"--topk must be a percentage in \(0, 100\]; got 0.0"),
    "topk_over_100": (["--topk", "101"], r"--topk must be a percentage in \(0, 100\]; got 101.0"),
    "drop_rate_one": (["--drop-rate", "1"], r"--drop-rate must be a probability in \[0, 1\); got 1.0"),
    "drop_rate_negative": (["--drop-rate", "-0.1"], r"--drop-rate must be a probability in \[0, 1\); got -0.1"),
    "task_scales_not_a_number": (["--task-scales", "1,x"], r"--task-scales: item 2 \('x'\) is not a number"),
    "task_scales_nan": (["--task-scales", "1,nan"], r"--task-scales: item 2 \('nan'\) is not a finite number"),
    "task_scales_wrong_count": (["--task-scales", "1,2,3"], r"--task-scales has 3 values for 2 adapters"),
}
for _name, (_args, _match) in OPTIONS.items():
    CASES[_name] = _option(_args, _match)


@case
def rank_with_base(w):
    base = w.base()
    return dict(args=w.merge("--rank", "2", "--base", str(base)), match=r"--rank .* no effect with --base",
                out=w.out, extra_inputs=[base])


@case
def unknown_method(w):
    args = w.merge()
    args[args.index("ta")] = "tiez"
    return dict(args=args, match=r"'tiez' is not one of .*'knots-ties'", out=w.out, usage=True)


@case
def unknown_topk_scope(w):
    return dict(args=w.merge("--topk-scope", "layer"), match=r"'layer' is not one of 'global', 'module'", out=w.out,
                usage=True)


# ---- adapters: config fields, files, tensors, compatibility -----------------------------------------------------


def _broken(mutate: Callable[[Workspace], object], match: str) -> Case:
    """A case that breaks one adapter in place and merges the two."""

    def build(w):
        mutate(w)
        return dict(args=w.merge(), out=w.out, match=match)

    return build


def _write(path_of: Callable[[Workspace], Path], text: str) -> Callable[[Workspace], object]:
    return lambda w: path_of(w).write_text(text)


BROKEN = {
    "config_r_not_an_integer": (
        lambda w: w.config(w.b, r="four"),
        r"runs/b/adapter_config.json: field 'r' must be a positive integer; got 'four'$",
    ),
    "config_r_zero": (
        lambda w: w.config(w.b, r=0), r"b/adapter_config.json: field 'r' must be a positive integer; got 0$"
    ),
    "config_alpha_nan": (
        lambda w: w.config(w.a, lora_alpha=float("nan")),
        r"a/adapter_config.json: field 'lora_alpha' must be a finite number",
    ),
    "config_rank_pattern_value": (
        lambda w: w.config(w.a, rank_pattern={"q": "two"}),
        r"a/adapter_config.json: field 'rank_pattern.q' must be a positive integer; got 'two'",
    ),
    "config_rslora_not_bool": (
        lambda w: w.config(w.a, use_rslora="yes"), r"a/adapter_config.json: field 'use_rslora' must be true or false"
    ),
    "config_malformed_json": (
        _write(lambda w: w.a / "adapter_config.json", '{"r": 2,'), r"a/adapter_config.json: malformed JSON"
    ),
    "config_not_an_object": (
        _write(lambda w: w.a / "adapter_config.json", "[2, 4]"), r"a/adapter_config.json: expected a JSON object"
    ),
    "config_missing": (lambda w: (w.a / "adapter_config.json").unlink(), r"runs/a: missing adapter_config.json"),
    "config_not_lora": (lambda w: w.config(w.a, peft_type="IA3"), r"a/adapter_config.json: peft_type is 'IA3'"),
    "config_dora": (lambda w: w.config(w.a, use_dora=True), r"a/adapter_config.json: use_dora is set"),
    "weights_missing": (
        lambda w: (w.b / "adapter_model.safetensors").unlink(), r"runs/b: missing adapter_model.safetensors"
    ),
    "weights_rank_disagrees_with_config": (
        lambda w: w.config(w.a, r=5),
        r"a/adapter_model.safetensors: module 'enc.0.q': config says r=5 but lora_A has rank 2",
    ),
}
for _name, (_mutate, _match) in BROKEN.items():
    CASES[_name] = _broken(_mutate, _match)


@case
def adapter_folder_missing(w):
    return dict(args=w.merge(adapters=[w.a, w.runs / "nope"]), out=w.out, match=r"runs/nope: adapter directory not found")


@case
def weights_truncated(w):
    path = w.b / "adapter_model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return dict(args=w.merge(), out=w.out, match=r"b/adapter_model.safetensors: cannot read adapter weights")


@case
def weights_nan(w):
    factors = random_factors(SHAPES, 2, seed=3)
    factors["enc.0.v"][0][1, 1] = float("nan")
    bad = w.adapter("nan", factors, r=2, alpha=2)
    return dict(args=w.merge(adapters=[w.a, bad]), out=w.out, extra_inputs=[bad],
                match=r"nan/adapter_model.safetensors: module 'enc.0.v': lora_B holds 1 non-finite value")


@case
def weights_inf(w):
    factors = random_factors(SHAPES, 2, seed=3)
    factors["enc.0.q"][1][0, :] = float("inf")
    bad = w.adapter("inf", factors, r=2, alpha=2)
    return dict(args=w.merge(adapters=[w.a, bad]), out=w.out, extra_inputs=[bad],
                match=r"inf/adapter_model.safetensors: module 'enc.0.q': lora_A holds 4 non-finite values")


def _bin_case(w, name: str, state, match: str, **extra) -> dict:
    """Merge runs/a with an adapter whose adapter_model.bin holds ``state`` (what torch.save writes)."""
    bin_dir = w.adapter(name, random_factors(SHAPES, 2, seed=4), r=2, alpha=2, as_bin=True)
    if isinstance(state, bytes):
        (bin_dir / "adapter_model.bin").write_bytes(state)
    else:
        torch.save({**torch.load(bin_dir / "adapter_model.bin", weights_only=True), **state}, bin_dir / "adapter_model.bin")
    return dict(args=w.merge(adapters=[w.a, bin_dir]), out=w.out, extra_inputs=[bin_dir], match=match, **extra)


@case
def weights_pickle_bin(w):
    return _bin_case(w, "pickled", {"training_args": argparse.Namespace(lr=1e-4)}, absent="weights_only=",
                     match=r"pickled/adapter_model.bin: holds pickled Python objects besides tensors, so it cannot")


@case
def weights_corrupt_bin(w):
    return _bin_case(w, "corrupt", b"PK\x03\x04 not really a zip",
                     match=r"corrupt/adapter_model.bin: cannot read adapter weights")


@case
def weights_unsupported_dora_tensor(w):
    path = w.a / "adapter_model.safetensors"
    tensors = load_file(str(path))
    tensors["base_model.model.enc.0.q.lora_magnitude_vector.weight"] = torch.ones(6)
    save_file(tensors, str(path))
    return dict(args=w.merge(), out=w.out, match=r"a/adapter_model.safetensors: tensor .*lora_magnitude_vector.* DoRA")


@case
def adapters_shape_mismatch(w):
    other = w.adapter("wide", random_factors({**SHAPES, "enc.0.v": (6, 5)}, 2, seed=5), r=2, alpha=2)
    return dict(args=w.merge(adapters=[w.a, other]), out=w.out, extra_inputs=[other],
                match=r"module 'enc.0.v' has shape \(6, 4\) in .*runs/a but \(6, 5\) in .*runs/wide")


@case
def adapters_different_modules(w):
    other = w.adapter("more", random_factors({**SHAPES, "enc.1.q": (6, 4)}, 2, seed=5), r=2, alpha=2)
    return dict(args=w.merge(adapters=[w.a, other]), out=w.out, extra_inputs=[other],
                match=r"adapters target different modules: 'enc.1.q' is in only one of .*runs/a and .*runs/more")


@case
def adapters_different_base_models(w):
    other = w.adapter("other", random_factors(SHAPES, 2, seed=5), r=2, alpha=2, base_model="other-base")
    return dict(args=w.merge(adapters=[w.a, other]), out=w.out, extra_inputs=[other],
                match=r"different base models: .*runs/a is for 'tiny-base', .*runs/other is for 'other-base'")


# ---- align ------------------------------------------------------------------------------------------------------


@case
def align_nan_inputs(w):
    x = np.random.default_rng(0).normal(size=(20, 4))
    x[3, 2] = np.nan
    np.save(w.x, x)
    return dict(args=w.align(), match=r"x.npy: inputs holds 1 non-finite value \(NaN or inf\)", extra_inputs=[w.x])


@case
def align_inputs_wrong_shape(w):
    np.save(w.x, np.ones((20, 5)))
    return dict(args=w.align(), extra_inputs=[w.x],
                match=r"x.npy: inputs have shape \(20, 5\); module 'enc.0.q' expects \(n_samples, 4\)")


@case
def align_inputs_missing(w):
    w.x.unlink()
    return dict(args=w.align(), match=r"x.npy: inputs file not found")


@case
def align_inputs_corrupt(w):
    w.x.write_bytes(b"\x93NUMPY garbage")
    return dict(args=w.align(), match=r"x.npy: cannot read inputs", extra_inputs=[w.x])


@case
def align_inputs_one_row(w):
    np.save(w.x, np.ones((1, 4)))
    return dict(args=w.align(), match=r"x.npy: inputs have 1 rows; CKA needs at least 2 samples", extra_inputs=[w.x])


@case
def align_zero_update(w):
    factors = random_factors(SHAPES, 2, seed=6)
    factors["enc.0.v"] = (torch.zeros(6, 2), factors["enc.0.v"][1])
    zero = w.adapter("zero", factors, r=2, alpha=2)
    return dict(args=w.align(adapters=[w.a, zero]), extra_inputs=[w.x, zero],
                match=r"x.npy: module 'enc.0.v': adapter .*runs/zero: the update is zero, so linear CKA is undefined")


@case
def align_constant_inputs(w):
    np.save(w.x, np.tile(np.array([[0.5, -1.0, 2.0, 0.25]]), (20, 1)))
    return dict(args=w.align(), extra_inputs=[w.x],
                match=r"x.npy: module 'enc.0.q': adapter .*runs/a: the update gives the same output for every input "
                      r"row, so linear CKA is undefined")


@case
def align_per_module_inputs_nan(w):
    x = w.root / "x.safetensors"
    bad = torch.randn(10, 4)
    bad[0, 0] = float("inf")
    save_file({"enc.0.q": torch.randn(10, 4), "enc.0.v": bad}, str(x))
    return dict(args=w.align(x=x), extra_inputs=[x],
                match=r"x.safetensors: inputs for module 'enc.0.v' holds 1 non-finite value")


@case
def align_inputs_for_a_module_missing(w):
    x = w.root / "x.safetensors"
    save_file({"enc.0.q": torch.randn(10, 4)}, str(x))
    return dict(args=w.align(x=x), extra_inputs=[x],
                match=r"x.safetensors: no inputs for module 'enc.0.v' \(and no shared 'inputs' tensor\)")


@case
def align_heatmap_is_an_input(w):
    return dict(args=w.align("--heatmap", str(w.x), "--force"), match=r"x.npy: the output is an input", out=w.x)


@case
def align_heatmap_over_a_foreign_file(w):
    png = w.root / "cka.png"
    png.write_bytes(b"not ours")
    return dict(args=w.align("--heatmap", str(png), "--force"), out=png,
                match=r"cka.png: exists and is not a knotwork output \(no cka.png.knotwork.json beside it\)")


@case
def align_heatmap_exists_without_force(w):
    png = w.root / "cka.png"
    res = invoke(w.align("--heatmap", str(png)))
    assert res.exit_code == 0, res.output
    return dict(args=w.align("--heatmap", str(png)), out=png, match=r"cka.png: output file exists; pass --force")


@case
def align_unavailable_device(w):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA, so --device cuda is not refused")
    return dict(args=w.align("--device", "cuda"), match=r"--device cuda: no CUDA device is available")


@case
def align_unknown_device(w):
    return dict(args=w.align("--device", "tpu"), match=r"'tpu' is not one of 'cpu', 'cuda', 'mps'", usage=True)


@pytest.mark.parametrize("name", sorted(CASES))
def test_refused(ws, name):
    spec = CASES[name](ws)
    absent = spec.pop("absent", None)
    extra = spec.pop("extra_inputs", [])
    res = refused(spec.pop("args"), inputs=[*ws.inputs, ws.x, *extra], **spec)
    if absent:
        assert absent not in (res.stderr or ""), res.stderr


def test_the_table_is_big_enough():
    assert len(CASES) >= 35


# ---- what --force may do ----------------------------------------------------------------------------------------


def test_force_replaces_a_previous_knotwork_output(ws):
    out = ws.previous_output()
    first = load_adapter(out).deltas()
    res = invoke([*ws.merge("--force"), "--scale", "0.5"])
    assert res.exit_code == 0, res.output
    second = load_adapter(out).deltas()
    for name, delta in first.items():  # TA is linear in λ: the new output is half the old one
        torch.testing.assert_close(second[name], 0.5 * delta, rtol=1e-5, atol=1e-7)
    assert json.loads((out / "merge_report.json").read_text())["parameters"]["scale"] == 0.5
    assert [p.name for p in ws.root.iterdir() if p.name.startswith(".")] == []  # no temp entries left


def test_force_replaces_a_previous_heatmap(ws):
    png = ws.root / "cka.png"
    assert invoke(ws.align("--heatmap", str(png))).exit_code == 0
    res = invoke(ws.align("--heatmap", str(png), "--force"))
    assert res.exit_code == 0, res.output
    assert png.read_bytes().startswith(b"\x89PNG") and (ws.root / "cka.png.knotwork.json").is_file()


def test_unwritable_output_folder_is_refused_even_where_root_could_write(ws, monkeypatch):
    """The 0o500 case above skips under root; here the folder reports itself unwritable through os.access."""
    import knotwork.cli.merge as cli

    locked = ws.root / "locked"
    locked.mkdir()
    real = os.access
    monkeypatch.setattr(cli.os, "access", lambda p, mode: False if Path(p) == locked else real(p, mode))
    refused(ws.merge(out=locked / "merged"), match=r"the folder .*locked is not writable", inputs=ws.inputs,
            out=locked / "merged")
