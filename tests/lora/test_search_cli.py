"""`knotwork lora search` end to end on two small task folders and two random adapters of a tiny BERT: the choice
equals a brute-force evaluation of the same grid, the alignment runs once per module, and the folder written holds
the chosen merge (equal to `knotwork merge` at those parameters), its report and the table of every point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from knotwork.lora.evaluate import TaskEvaluator
from knotwork.lora.tasks import load_text_task
from knotwork.merge import MergeConfig, load_adapter, merge_modules, write_adapter
from tests.cli_contract import invoke
from tests.lora.conftest import load_minilm_tokenizer, make_tiny_bert
from tests.lora.test_search import (
    MODULES,
    TEMPLATES,
    brute_force,
    count_alignments,
    random_factors,
    task_rows,
)

GRID_ARGS = ["--scale-grid", "0.2,0.6,1.0", "--topk-grid", "20,60,100"]
GRIDS = {"scale": (0.2, 0.6, 1.0), "topk": (20.0, 60.0, 100.0)}
LIMIT = 24


@pytest.fixture(scope="module")
def tokenizer():
    return load_minilm_tokenizer()


@pytest.fixture
def setup(tmp_path, monkeypatch, tokenizer):
    """Two task folders (train/val/test, 36 examples each), two adapters written as PEFT folders named like them,
    and the tiny BERT in place of MiniLM."""
    import knotwork.lora.model as model_mod

    monkeypatch.setattr(model_mod, "load_base_encoder", lambda: (make_tiny_bert(), tokenizer, "tiny"))
    factors = random_factors()
    tasks, adapters = [], []
    for i, name in enumerate(TEMPLATES):
        labels, rows = task_rows(name)
        root = tmp_path / "data" / name
        root.mkdir(parents=True)
        (root / "labels.json").write_text(json.dumps(list(labels)))
        for split in ("train", "val", "test"):
            (root / f"{split}.jsonl").write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows))
        tasks.append(root)
        adapters.append(write_adapter(tmp_path / "adapters" / name, {m: p[i] for m, p in factors.items()},
                                      base_config={"base_model_name_or_path": "tiny"}))
    return tmp_path, factors, tasks, adapters


def _args(adapters, tasks, out, *extra):
    task_args = [a for t in tasks for a in ("--tasks", str(t))]
    return ["lora", "search", *map(str, adapters), *task_args, "--out", str(out), "--limit", str(LIMIT),
            "--max-length", "16", *extra]


def _oracle(factors, tasks, tokenizer, method, criterion):
    ev = TaskEvaluator(make_tiny_bert(), tokenizer, [load_text_task(t, splits=("val",)) for t in tasks], split="val",
                       limit=LIMIT, max_length=16)
    return brute_force(factors, ev, method, criterion, GRIDS)


def _deltas(folder: Path) -> dict[str, torch.Tensor]:
    return load_adapter(folder).deltas()


def test_search_writes_the_brute_force_choice_aligning_once(setup, tokenizer, monkeypatch):
    tmp, factors, tasks, adapters = setup
    calls = count_alignments(monkeypatch)
    out = tmp / "merged"
    res = invoke(_args(adapters, tasks, out, *GRID_ARGS, "--method", "knots-ties", "--json", "-"))
    assert res.exit_code == 0, res.output
    assert calls == [2] * len(MODULES)  # one alignment per module for the whole grid and the written merge
    calls.clear()

    want, want_score, table = _oracle(factors, tasks, tokenizer, "knots-ties", "pertask")
    printed = json.loads(res.stdout)
    body = json.loads((out / "search.json").read_text())
    assert body["chosen"]["params"] == want == printed["chosen"]["params"]
    assert body["chosen"]["score"] == pytest.approx(want_score)
    assert [p["score"] for p in body["points"]] == pytest.approx(
        [table[json.dumps(sorted(p["params"].items()))] for p in body["points"]])
    assert len(body["points"]) >= 4 and body["criterion"] == "pertask" and body["tasks"] == [str(t) for t in tasks]

    # The folder: a PEFT adapter of the chosen merge (= the engine's merge at those parameters), its report,
    # and the table.
    assert {"adapter_config.json", "adapter_model.safetensors", "merge_report.json", "search.md", "search.json",
            ".knotwork.json"} <= {p.name for p in out.iterdir()}
    got = _deltas(out)
    ref = merge_modules(factors, method="knots-ties", config=MergeConfig(**want)).deltas
    for m in MODULES:
        torch.testing.assert_close(got[m], ref[m], rtol=1e-5, atol=1e-6)
    report = json.loads((out / "merge_report.json").read_text())
    assert report["method"] == "knots-ties" and report["parameters"]["scale"] == want["scale"]
    assert report["search"]["criterion"] == "pertask" and report["search"]["points"] == len(body["points"])
    md = (out / "search.md").read_text()
    assert md.count("\n| ") == len(body["points"]) + 1 and "**" in md  # header + one row per point, chosen in bold

    # The report is a config: `knotwork merge --config` redoes the chosen merge.
    again = invoke(["merge", "--config", str(out / "merge_report.json"), "--out", str(tmp / "again")])
    assert again.exit_code == 0, again.output
    for m, d in _deltas(tmp / "again").items():
        torch.testing.assert_close(d, got[m], rtol=1e-5, atol=1e-6)


def test_joint_criterion_and_a_full_rank_method(setup, tokenizer):
    tmp, factors, tasks, adapters = setup
    out = tmp / "ties"
    res = invoke(_args(adapters, tasks, out, *GRID_ARGS, "--method", "ties", "--criterion", "joint", "--rank", "full"))
    assert res.exit_code == 0, res.output
    want, want_score, _ = _oracle(factors, tasks, tokenizer, "ties", "joint")
    body = json.loads((out / "search.json").read_text())
    assert body["chosen"]["params"] == want and body["chosen"]["score"] == pytest.approx(want_score)
    assert "chose λ = " in res.stdout and f"wrote {out}" in res.stdout
    ref = merge_modules(factors, method="ties", config=MergeConfig(**want)).deltas
    for m, d in _deltas(out).items():
        torch.testing.assert_close(d, ref[m], rtol=1e-4, atol=1e-5)
