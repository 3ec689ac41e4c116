"""The lora CLI end to end on a tiny model: `lora train` (atomic adapter folders, reruns keep finished ones),
`lora eval` (table and --json), and `demo` (a knotwork output folder that --force replaces, and only that)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from knotwork._io import MARKER, is_knotwork_output
from knotwork.cli import app
from knotwork.lora.demo import make_demo_tasks
from tests.lora.conftest import make_tiny_bert

runner = CliRunner()


@pytest.fixture
def tiny_encoder(monkeypatch, minilm_tokenizer):
    import knotwork.lora.model as model_mod

    calls = []

    def loader():
        calls.append(1)
        return make_tiny_bert(), minilm_tokenizer, "tiny"

    monkeypatch.setattr(model_mod, "load_base_encoder", loader)
    return calls


def _write_task(root, labels, rows):
    root.mkdir(parents=True)
    (root / "labels.json").write_text(json.dumps(labels))
    for split in ("train", "val", "test"):
        (root / f"{split}.jsonl").write_text("\n".join(json.dumps({"text": t, "label": y}) for t, y in rows))
    return root


def _two_tasks(root):
    sent = [(f"{w} film {i}", y) for i in range(8) for w, y in (("awful", 0), ("great", 1))]
    ques = [(f"{w} is thing {i} ?", y) for i in range(8) for w, y in (("where", 0), ("who", 1))]
    return (_write_task(root / "s", ["negative", "positive"], sent),
            _write_task(root / "q", ["location", "human"], ques))


def test_demo_tasks_are_deterministic_and_distinct():
    a, b = make_demo_tasks(seed=1), make_demo_tasks(seed=1)
    assert [t.splits["test"].texts for t in a] == [t.splits["test"].texts for t in b]
    names = [n for t in a for n in t.label_names]
    assert len(names) == len(set(names)) == 8
    with pytest.raises(ValueError, match="n_train >= 8"):
        make_demo_tasks(n_train=2)


def test_lora_train_writes_adapters_and_a_rerun_keeps_finished_ones(tmp_path, tiny_encoder):
    merge = pytest.importorskip("knotwork.merge")
    s, q = _two_tasks(tmp_path / "data")
    out = tmp_path / "adapters"
    args = ["lora", "train", str(s), str(q), "--out", str(out), "--steps", "2", "--batch-size", "4", "--r", "2",
            "--max-length", "16"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert len(tiny_encoder) == 2
    for name in ("s", "q"):
        assert is_knotwork_output(out / name)
        log = json.loads((out / name / "train.json").read_text())
        assert log["task"] == name and log["config"]["steps"] == 2 and len(log["losses"]) == 2
        assert len(merge.load_adapter(out / name).modules) == 2 * 4  # tiny BERT: 2 layers x q, k, v, out
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and again.output.count("already trained") == 2
    assert len(tiny_encoder) == 2  # nothing trained
    changed = runner.invoke(app, [*args[:-2], "--max-length", "12"])
    assert changed.exit_code == 2 and "pass --force" in changed.stderr
    forced = runner.invoke(app, [*args[:-2], "--max-length", "12", "--force"])
    assert forced.exit_code == 0, forced.output
    assert json.loads((out / "s" / "train.json").read_text())["config"]["max_length"] == 12
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temp leftovers


def test_lora_eval_scores_an_adapter_and_writes_json(tmp_path, tiny_encoder):
    pytest.importorskip("knotwork.merge")
    from knotwork.lora.io import save_peft_adapter
    from knotwork.lora.model import LoraSpec, inject_lora, lora_state_dict

    s = _write_task(tmp_path / "s", ["negative", "positive"], [("awful film", 0), ("great film", 1), ("bad", 0)])
    m = make_tiny_bert()
    inject_lora(m, LoraSpec(r=2, alpha=2.0))
    save_peft_adapter(lora_state_dict(m), LoraSpec(r=2, alpha=2.0), tmp_path / "ad")
    res = runner.invoke(app, ["lora", "eval", str(s), "--adapter", str(tmp_path / "ad"),
                              "--json", str(tmp_path / "r.json")])
    assert res.exit_code == 0, res.output
    scores = json.loads((tmp_path / "r.json").read_text())
    assert scores["n"] == {"s": 3} and set(scores["joint_hits"]) == {"1", "3", "5"}
    assert scores["split"] == "test" and "knotwork" in scores
    assert "accuracy" in res.stdout and "Hits@1" in res.stdout
    # A fresh LoRA (B = 0) is the base model: its scores equal the zero-shot scores.
    base = runner.invoke(app, ["lora", "eval", str(s), "--json", "-"])
    assert base.exit_code == 0, base.output
    printed = json.loads(base.stdout)  # stdout carries only the JSON; the table went to stderr
    assert printed["accuracy"] == scores["accuracy"] and printed["adapter"] is None
    assert "Hits@1" in base.stderr
    again = runner.invoke(app, ["lora", "eval", str(s), "--json", str(tmp_path / "r.json")])
    assert again.exit_code == 2 and "pass --force" in again.stderr
    forced = runner.invoke(app, ["lora", "eval", str(s), "--split", "VAL", "--json", str(tmp_path / "r.json"),
                                 "--force"])
    assert forced.exit_code == 0, forced.output
    assert json.loads((tmp_path / "r.json").read_text())["split"] == "val"


def test_demo_end_to_end_and_force_replaces_only_its_own_folder(tmp_path, monkeypatch, tiny_encoder):
    merge = pytest.importorskip("knotwork.merge")
    import knotwork.lora.search as search_mod

    monkeypatch.setattr(search_mod, "SCALE_GRID", (0.5, 1.0))  # two λ values keep the test short
    out = tmp_path / "demo"
    res = runner.invoke(app, ["demo", "--out", str(out), "--steps", "2"])
    assert res.exit_code == 0, res.output
    table = (out / "results.md").read_text()
    for row in ("zero-shot", "fine-tuned", "TA", "TIES", "DARE-TIES", "KnOTS-TIES", "KnOTS-DARE-TIES"):
        assert f"| {row}" in table
    data = json.loads((out / "results.json").read_text())
    assert set(data["merges"]) == {"ta", "ties", "dare-ties", "knots-ties", "knots-dare-ties"}
    assert (out / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (out / "adapters").iterdir()) == ["question", "sentiment", "topic"]
    assert merge.load_adapter(out / "adapters" / "topic").modules
    marker = json.loads((out / MARKER).read_text())
    assert "adapters/topic/adapter_model.safetensors" in marker["files"]
    again = runner.invoke(app, ["demo", "--out", str(out), "--steps", "2"])
    assert again.exit_code == 2 and "pass --force" in again.stderr
    forced = runner.invoke(app, ["demo", "--out", str(out), "--steps", "2", "--force"])
    assert forced.exit_code == 0, forced.output
    assert (out / "results.md").is_file()
    (out / "notes.txt").write_text("mine")  # a file knotwork did not write: --force now refuses
    refused = runner.invoke(app, ["demo", "--out", str(out), "--steps", "2", "--force"])
    assert refused.exit_code == 2 and "notes.txt" in refused.stderr
    assert (out / "notes.txt").read_text() == "mine"
