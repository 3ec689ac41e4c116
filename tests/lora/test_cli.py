"""The lora CLI: clear errors before work starts, refusal to overwrite, and `demo` end to end (tiny model)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from knotwork.cli import app
from knotwork.lora.demo import make_demo_tasks
from tests.lora.conftest import make_tiny_bert


def test_lora_train_names_missing_folder(tmp_path):
    res = CliRunner().invoke(app, ["lora-train", str(tmp_path / "absent"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
    assert "Task folder not found" in res.output and "absent" in res.output


def test_bench_refuses_to_overwrite(tmp_path):
    out = tmp_path / "r.md"
    out.write_text("old")
    res = CliRunner().invoke(app, ["bench", "knots-text", "--out", str(out)])
    assert res.exit_code == 2 and "pass --force" in res.output
    assert out.read_text() == "old"


def test_demo_tasks_are_deterministic_and_distinct():
    a, b = make_demo_tasks(seed=1), make_demo_tasks(seed=1)
    assert [t.splits["test"].texts for t in a] == [t.splits["test"].texts for t in b]
    names = [n for t in a for n in t.label_names]
    assert len(names) == len(set(names)) == 8
    with pytest.raises(ValueError, match="n_train >= 8"):
        make_demo_tasks(n_train=2)


def test_demo_end_to_end(tmp_path, monkeypatch, minilm_tokenizer):
    pytest.importorskip("knotwork.merge")
    import knotwork.lora.model as model_mod
    import knotwork.lora.search as search_mod

    monkeypatch.setattr(model_mod, "load_base_encoder", lambda: (make_tiny_bert(), minilm_tokenizer, "tiny"))
    monkeypatch.setattr(search_mod, "SCALE_GRID", (0.5, 1.0))  # two λ values keep the test short
    out = tmp_path / "demo"
    res = CliRunner().invoke(app, ["demo", "--out", str(out), "--steps", "2"])
    assert res.exit_code == 0, res.output
    table = (out / "results.md").read_text()
    for row in ("zero-shot", "fine-tuned", "TA", "TIES", "DARE-TIES", "KnOTS-TIES", "KnOTS-DARE-TIES"):
        assert f"| {row}" in table
    data = json.loads((out / "results.json").read_text())
    assert set(data["merges"]) == {"ta", "ties", "dare-ties", "knots-ties", "knots-dare-ties"}
    assert (out / "accuracy.png").stat().st_size > 0
    assert sorted(p.name for p in (out / "adapters").iterdir()) == ["question", "sentiment", "topic"]
    again = CliRunner().invoke(app, ["demo", "--out", str(out), "--steps", "2"])
    assert again.exit_code == 2 and "pass --force" in again.output
