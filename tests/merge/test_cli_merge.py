"""`knotwork merge` and `knotwork align` end to end on small adapters."""

from __future__ import annotations

import json

import numpy as np
import torch
from typer.testing import CliRunner

from knotwork.cli import app
from knotwork.merge import load_adapter, merge_adapters
from tests.merge.helpers import random_factors, write_peft_dir

SHAPES = {"enc.0.q": (10, 8), "enc.0.v": (10, 8)}


def _adapters(tmp_path):
    return [
        write_peft_dir(tmp_path / f"task{i}", random_factors(SHAPES, r, seed=i), r=r, alpha=2 * r)
        for i, r in enumerate((2, 3, 4))
    ]


def test_merge_command_writes_adapter_and_report(tmp_path):
    dirs = _adapters(tmp_path)
    out = tmp_path / "merged"
    args = ["merge", *map(str, dirs), "--method", "knots-ties", "--scale", "0.6", "--topk", "20", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    expected = merge_adapters([load_adapter(d) for d in dirs], method="knots-ties", scale=0.6, topk=20)
    written = load_adapter(out).deltas()
    for name, delta in expected.deltas.items():
        torch.testing.assert_close(written[name], delta, rtol=1e-5, atol=1e-6)
    report = json.loads((out / "merge_report.json").read_text())
    assert report["parameters"]["scale"] == 0.6 and report["modules"]["enc.0.q"]["input_ranks"] == [2, 3, 4]
    # The report records the parameters knots-ties reads, and not DARE's, which did not affect the result.
    assert set(report["parameters"]) == {"scale", "topk", "topk_scope", "task_scales", "rel_tol"}

    again = CliRunner().invoke(app, args)
    assert again.exit_code == 2 and "output folder exists; pass --force" in again.output
    assert CliRunner().invoke(app, [*args, "--force"]).exit_code == 0
    # The output is marked as knotwork's: the marker lists every file written, the human report among them.
    marker = json.loads((out / ".knotwork.json").read_text())
    assert set(marker["files"]) == {"adapter_config.json", "adapter_model.safetensors", "merge_report.json"}


def test_merge_json_report_to_stdout_and_to_a_file(tmp_path):
    dirs = _adapters(tmp_path)
    args = ["merge", *map(str, dirs[:2]), "--method", "ta", "--scale", "0.5", "--out", str(tmp_path / "m")]
    printed = CliRunner().invoke(app, [*args, "--json", "-"])
    assert printed.exit_code == 0, printed.output
    report = json.loads(printed.stdout)  # stdout holds the JSON only; the summary line goes to stderr
    assert report["method"] == "ta" and report["parameters"]["scale"] == 0.5
    assert [i["path"] for i in report["inputs"]] == [str(d) for d in dirs[:2]]
    assert report["knotwork"]["version"]
    assert report == {**json.loads((tmp_path / "m" / "merge_report.json").read_text()), "out": str(tmp_path / "m"),
                      "knotwork": report["knotwork"], "seconds": report["seconds"]}
    written = CliRunner().invoke(app, [*args, "--force", "--json", str(tmp_path / "r.json")])
    assert written.exit_code == 0, written.output
    assert json.loads((tmp_path / "r.json").read_text())["method"] == "ta"


def test_merge_command_rejects_unknown_method_and_bad_adapter(tmp_path):
    dirs = _adapters(tmp_path)
    bad = CliRunner().invoke(app, ["merge", *map(str, dirs), "--method", "tiez", "--out", str(tmp_path / "o")])
    assert bad.exit_code == 2 and "'tiez' is not one of" in bad.output and "'knots-ties'" in bad.output
    missing = CliRunner().invoke(app, ["merge", str(dirs[0]), str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert missing.exit_code == 2 and "adapter directory not found" in missing.output
    assert not (tmp_path / "o").exists()


def test_align_command_prints_cka_and_saves_heatmap(tmp_path):
    dirs = _adapters(tmp_path)
    inputs = tmp_path / "x.npy"
    np.save(inputs, np.random.default_rng(0).normal(size=(50, 8)))
    png = tmp_path / "cka.png"
    result = CliRunner().invoke(app, ["align", *map(str, dirs), "--inputs", str(inputs), "--heatmap", str(png)])
    assert result.exit_code == 0, result.output
    assert "before KnOTS" in result.output and "after KnOTS" in result.output
    assert png.stat().st_size > 1000

    as_json = CliRunner().invoke(app, ["align", *map(str, dirs), "--inputs", str(inputs), "--json", "-"])
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.stdout)  # the table went to stderr
    assert data["modules"] == 2 and len(data["before"]) == 3
    assert all(abs(data["before"][i][i] - 1) < 1e-12 for i in range(3))  # CKA of a task with itself
    assert "before KnOTS" in as_json.stderr


def test_method_choices_are_the_registry_and_the_cli_starts_without_torch():
    import subprocess
    import sys

    from knotwork.cli.merge import Method
    from knotwork.merge import METHODS, available_methods

    assert sorted(m.value for m in Method) == available_methods() == sorted(METHODS)
    code = "import sys, knotwork.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_merge_with_base_writes_dense_weights(tmp_path):
    from safetensors.torch import load_file, save_file

    dirs = _adapters(tmp_path)[:2]
    base = tmp_path / "base"
    base.mkdir()
    weights = {f"{n}.weight": torch.randn(s, generator=torch.Generator().manual_seed(9)) for n, s in SHAPES.items()}
    save_file(weights, str(base / "model.safetensors"))
    (base / "config.json").write_text('{"model_type": "tiny"}')
    out = tmp_path / "dense"
    result = CliRunner().invoke(app, ["merge", *map(str, dirs), "--method", "ta", "--base", str(base), "--out", str(out)])
    assert result.exit_code == 0, result.output
    expected = merge_adapters([load_adapter(d) for d in dirs], method="ta").deltas
    got = load_file(str(out / "model.safetensors"))
    for name, delta in expected.items():
        torch.testing.assert_close(got[f"{name}.weight"], weights[f"{name}.weight"] + delta, rtol=1e-5, atol=1e-6)
    assert (out / "config.json").read_text() == '{"model_type": "tiny"}'
    assert json.loads((out / "merge_report.json").read_text())["base"] == str(base)
    assert "config.json" in json.loads((out / ".knotwork.json").read_text())["files"]
