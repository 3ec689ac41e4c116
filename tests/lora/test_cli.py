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


def _write_task(root, labels, rows):
    root.mkdir(parents=True)
    (root / "labels.json").write_text(json.dumps(labels))
    for split in ("train", "val", "test"):
        (root / f"{split}.jsonl").write_text("\n".join(json.dumps({"text": t, "label": y}) for t, y in rows))


def test_bench_knots_text_end_to_end_on_a_tiny_model(tmp_path, monkeypatch, minilm_tokenizer):
    pytest.importorskip("knotwork.merge")
    import knotwork.lora.experiment as exp_mod
    import knotwork.lora.search as search_mod

    loader = lambda: (make_tiny_bert(), minilm_tokenizer, "tiny")  # noqa: E731
    monkeypatch.setattr(exp_mod, "load_base_encoder", loader)
    monkeypatch.setattr(exp_mod, "SCALE_GRID", (0.5, 1.0))
    monkeypatch.setattr(exp_mod, "TOPK_GRID", (20.0, 100.0))
    monkeypatch.setattr(exp_mod, "DROP_GRID", (0.5, 0.1))
    monkeypatch.setattr(search_mod, "SCALE_GRID", (0.5, 1.0))
    sent = [(f"{w} film {i}", y) for i in range(8) for w, y in (("awful", 0), ("great", 1))]
    ques = [(f"{w} is thing {i} ?", y) for i in range(8) for w, y in (("where", 0), ("who", 1))]
    _write_task(tmp_path / "data" / "text" / "s", ["negative", "positive"], sent)
    _write_task(tmp_path / "data" / "text" / "q", ["location", "human"], ques)
    out = tmp_path / "docs" / "k.md"
    args = ["bench", "knots-text", "--data", str(tmp_path / "data"), "--task", "s", "--task", "q", "--out", str(out),
            "--cache", str(tmp_path / "cache"), "--steps", "2", "--batch-size", "4", "--r", "2",
            "--val-limit", "4", "--test-limit", "6", "--dare-seeds", "2", "--max-length", "16"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    doc = out.read_text()
    for row in ("| fine-tuned", "| zero-shot base", "| TA |", "| TIES |", "| KnOTS-TIES |", "| DARE-TIES (2 seeds)",
                "| KnOTS-DARE-TIES (2 seeds)"):
        assert row in doc, row
    assert "k-cka.png" in doc and (out.parent / "k-cka.png").is_file()
    data = json.loads(out.with_suffix(".json").read_text())
    assert data["tasks"] == ["s", "q"] and len(data["test"]["pertask/dare-ties"]) == 2
    # Adapters and evaluations are cached: a second run trains nothing and evaluates nothing new.
    def evals_now():
        return [p.read_text() for p in sorted((tmp_path / "cache" / "r2").glob("evals-*.json"))]

    evals = evals_now()
    assert len(evals) == 6  # base rows + one file per merge method
    res2 = CliRunner().invoke(app, [*args, "--force"])
    assert res2.exit_code == 0, res2.output
    assert evals_now() == evals
    # A partial run (one method) fills the cache only and leaves the page alone.
    page = out.read_text()
    res3 = CliRunner().invoke(app, [*args, "--method", "ta", "--no-page"])
    assert res3.exit_code == 0 and "no page written" in res3.output and out.read_text() == page
    # --cached-only computes nothing: without TIES's evaluations the page is marked partial and omits TIES.
    (tmp_path / "cache" / "r2" / "evals-ties.json").unlink()
    res4 = CliRunner().invoke(app, [*args, "--cached-only", "--force"])
    assert res4.exit_code == 0, res4.output
    doc = out.read_text()
    assert "**Partial results.**" in doc and "`pertask/ties`" in doc and "| TIES |" not in doc
    assert "| KnOTS-TIES |" in doc and not (tmp_path / "cache" / "r2" / "evals-ties.json").exists()


def test_lora_eval_scores_an_adapter_and_names_a_bad_one(tmp_path, monkeypatch, minilm_tokenizer):
    pytest.importorskip("knotwork.merge")
    import knotwork.lora.model as model_mod
    from knotwork.lora.io import save_peft_adapter
    from knotwork.lora.model import LoraSpec, inject_lora, lora_state_dict

    monkeypatch.setattr(model_mod, "load_base_encoder", lambda: (make_tiny_bert(), minilm_tokenizer, "tiny"))
    _write_task(tmp_path / "s", ["negative", "positive"], [("awful film", 0), ("great film", 1), ("bad", 0)])
    m = make_tiny_bert()
    inject_lora(m, LoraSpec(r=2, alpha=2.0))
    save_peft_adapter(lora_state_dict(m), LoraSpec(r=2, alpha=2.0), tmp_path / "ad")
    res = CliRunner().invoke(app, ["lora-eval", str(tmp_path / "s"), "--adapter", str(tmp_path / "ad"),
                                   "--json", str(tmp_path / "r.json")])
    assert res.exit_code == 0, res.output
    scores = json.loads((tmp_path / "r.json").read_text())
    assert scores["n"] == {"s": 3} and set(scores["joint_hits"]) == {"1", "3", "5"}
    assert "accuracy" in res.output and "Hits@1" in res.output
    bad = CliRunner().invoke(app, ["lora-eval", str(tmp_path / "s"), "--adapter", str(tmp_path / "nope")])
    assert bad.exit_code == 2 and "nope" in bad.output
