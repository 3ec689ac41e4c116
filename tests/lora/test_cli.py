"""The lora CLI end to end on a tiny model: `lora train` (atomic adapter folders, reruns keep finished ones),
`lora eval` (table and --json), and `demo` (a knotwork output folder that --force replaces, and only that)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from knotwork._io import MARKER, is_knotwork_output
from knotwork.cli import app
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


def test_lora_train_writes_adapters_and_a_rerun_keeps_finished_ones(tmp_path, tiny_encoder):
    merge = pytest.importorskip("knotwork.merge")
    s, q = _two_tasks(tmp_path / "data")
    out = tmp_path / "adapters"
    args = ["lora", "train", str(s), str(q), "--out", str(out), "--max-steps", "2", "--batch-size", "4", "--r", "2",
            "--baseline", "majority", "--device", "cpu", "--max-length", "16"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert len(tiny_encoder) == 2
    for name in ("s", "q"):
        assert is_knotwork_output(out / name)
        log = json.loads((out / name / "train.json").read_text())
        assert log["task"] == name and log["config"]["max_steps"] == 2 and len(log["result"]["losses"]) == 2
        assert set(log["data"]) == {"labels.json", "train.jsonl", "val.jsonl"}
        assert [h["step"] for h in log["result"]["history"]] == [0, 2] and log["result"]["best_step"] == 2
        assert set(log["result"]["baselines"]) == {"zero_shot", "majority"}
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
    import knotwork.lora.demo as demo_mod

    monkeypatch.setattr(demo_mod, "DEMO_SCALE_GRID", (1.0, 0.5))  # two λ values keep the test short
    out = tmp_path / "demo"
    res = runner.invoke(app, ["demo", "--out", str(out), "--steps", "2"])
    assert res.exit_code == 0, res.output
    table = (out / "results.md").read_text()
    for row in ("zero-shot", "fine-tuned", "TA", "TIES", "DARE-TIES", "KnOTS-TIES", "KnOTS-DARE-TIES"):
        assert f"| {row}" in table
    assert table.splitlines()[0] == ("| model | sentiment | subjectivity | question | average | avg normalized "
                                     "| joint Hits@1 |")
    assert "Fine-tuned adapters beat zero-shot by" in table and "best merge:" in res.stdout
    data = json.loads((out / "results.json").read_text())
    assert set(data["merges"]) == {"ta", "ties", "dare-ties", "knots-ties", "knots-dare-ties"}
    assert data["n_test"] == {"sentiment": 100, "subjectivity": 100, "question": 100}
    assert {p["scale"] for p in data["params"].values()} <= {1.0, 0.5}
    for which in ("before", "after"):  # task x task CKA, 1 on the diagonal
        cka = data["cka"][which]
        assert len(cka) == 3 and all(abs(cka[i][i] - 1) < 1e-6 for i in range(3))
    for plot in ("accuracy.png", "cka.png"):
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (out / "adapters").iterdir()) == ["question", "sentiment", "subjectivity"]
    assert merge.load_adapter(out / "adapters" / "question").modules
    marker = json.loads((out / MARKER).read_text())
    assert "adapters/question/adapter_model.safetensors" in marker["files"] and "cka.png" in marker["files"]
    again = runner.invoke(app, ["demo", "--out", str(out), "--steps", "2"])
    assert again.exit_code == 2 and "pass --force" in again.stderr
    forced = runner.invoke(app, ["demo", "--out", str(out), "--steps", "2", "--force"])
    assert forced.exit_code == 0, forced.output
    assert (out / "results.md").is_file()
    (out / "notes.txt").write_text("mine")  # a file knotwork did not write: --force now refuses
    refused = runner.invoke(app, ["demo", "--out", str(out), "--steps", "2", "--force"])
    assert refused.exit_code == 2 and "notes.txt" in refused.stderr
    assert (out / "notes.txt").read_text() == "mine"


def test_lora_train_warns_about_an_adapter_that_did_not_learn(tmp_path, tiny_encoder):
    # Labels carry no information (each text: 3 x label 0, 1 x label 1), so no adapter beats the majority (75%).
    rows = [(f"item {w} here", y) for w in ("alpha", "bravo", "charlie", "delta") for y in (0, 0, 0, 1)]
    s = _write_task(tmp_path / "noise", ["negative", "positive"], rows)
    out = tmp_path / "adapters"
    res = runner.invoke(app, ["lora", "train", str(s), "--out", str(out), "--epochs", "2", "--batch-size", "4",
                              "--r", "2", "--max-length", "16"])
    assert res.exit_code == 0, res.output
    warning = [ln for ln in res.stderr.splitlines() if "did not learn" in ln]
    assert len(warning) == 1 and warning[0].startswith("warning: noise: adapter did not learn: val accuracy ")
    assert warning[0].endswith("<= majority 75.0%")
    result = json.loads((out / "noise" / "train.json").read_text())["result"]
    assert result["learned"] is False and result["baselines"]["majority"] == 0.75
    assert result["warnings"][0] == warning[0].removeprefix("warning: ")
    assert is_knotwork_output(out / "noise")  # the adapter is still written; the verdict tells


def test_lora_train_without_val_holds_out_part_of_train(tmp_path, tiny_encoder):
    s = _write_task(tmp_path / "s", ["negative", "positive"],
                    [(f"{w} film {i}", y) for i in range(10) for w, y in (("awful", 0), ("great", 1))])
    (s / "val.jsonl").unlink()
    out = tmp_path / "adapters"
    res = runner.invoke(app, ["lora", "train", str(s), "--out", str(out), "--max-steps", "1", "--batch-size", "4",
                              "--r", "2", "--max-length", "16", "--baseline", "none"])
    assert res.exit_code == 0, res.output
    assert "s: no val.jsonl; validating on a fixed 10% of train.jsonl" in res.stderr
    log = json.loads((out / "s" / "train.json").read_text())
    assert log["result"]["val_source"] == "held out of train (2 of 20, fixed)" and log["result"]["n_val"] == 2
    assert set(log["data"]) == {"labels.json", "train.jsonl"}
    assert "did not learn" not in res.stderr  # no baseline, no verdict


def test_lora_train_defaults_are_the_library_defaults():
    from typer.main import get_command

    from knotwork.lora.train import TrainConfig

    train = get_command(app).commands["lora"].commands["train"]
    got = {p.name: p.default for p in train.params}
    d = TrainConfig()
    assert (got["epochs"], got["patience"]) == (d.epochs, d.patience)
    assert got["max_steps"] == 0 and d.max_steps is None and got["eval_every"] == 0 and d.eval_every is None
    for name in ("batch_size", "lr", "max_length", "logit_scale", "seed"):
        assert got[name] == getattr(d, name), name
    assert (got["r"], got["alpha"], got["dropout"]) == (d.lora.r, d.lora.alpha, d.lora.dropout)
    assert got["baseline"].value == "probe" and got["device"].value == "cpu"
