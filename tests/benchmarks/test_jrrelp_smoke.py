"""The commands named by docs/results/jrrelp*.md exist and run: each study script at a tiny budget, into tmp_path.

Skipped without ../shared/data. The transformer half of the JRRELP study is left out (loading and running MiniLM
takes a minute on a shared CPU); its training path is covered by tests/relations/jrrelp/test_train.py.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require_shared

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted((ROOT / "docs" / "results").glob("jrrelp*.md"))


def _run(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def _command(page: Path) -> list[str]:
    line = next(ln for ln in page.read_text(encoding="utf-8").splitlines() if ln.startswith("- Command:"))
    return shlex.split(re.search(r"`([^`]+)`", line).group(1))


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_page_names_a_script_that_accepts_its_options(page):
    cmd = _command(page)
    assert cmd[:2] in (["python", "benchmarks/jrrelp_study.py"], ["python", "benchmarks/conve_linkpred.py"]), cmd
    helptext = _run([cmd[1], "--help"])
    assert helptext.returncode == 0, helptext.stderr
    for option in (a for a in cmd[2:] if a.startswith("--")):
        assert re.search(rf"{re.escape(option)}\b", helptext.stdout), f"{page.name}: {option} is not an option"


def test_jrrelp_study_at_a_tiny_budget(tmp_path):
    data = require_shared("re", "semeval2010")
    page, records = tmp_path / "jrrelp.md", tmp_path / "records"
    res = _run(["benchmarks/jrrelp_study.py", "--data", str(data), "--encoders", "palstm", "--seeds", "1",
                "--ablation-seeds", "0", "--epochs", "1", "--train-limit", "60", "--dev-limit", "30",
                "--test-limit", "60", "--workers", "1", "--records", str(records), "--out", str(page)])
    assert res.returncode == 0, res.stderr[-2000:]
    units = sorted(p.name for p in (records / "jrrelp").iterdir())
    assert units == ["palstm__baseline__seed0.json", "palstm__jrrelp__seed0.json"]
    run = json.loads((records / "jrrelp" / units[1]).read_text())["data"]
    assert (run["train_size"], run["dev_size"], run["test_size"]) == (60, 30, 60)
    assert len(run["predictions"].split()) == 60 and run["config"]["lambda_kglp"] == 1.0
    text = page.read_text()
    assert _command(page)[:2] == ["python", "benchmarks/jrrelp_study.py"] and "Code fingerprint: all 2" in text
    assert "| palstm/jrrelp | 1 |" in text and page.with_suffix(".png").is_file()
    # A rerun finds both records and trains nothing.
    again = _run(["benchmarks/jrrelp_study.py", "--data", str(data), "--encoders", "palstm", "--seeds", "1",
                  "--ablation-seeds", "0", "--records", str(records), "--out", str(page), "--workers", "1"])
    assert again.returncode == 0 and "finished" not in again.stdout


def test_conve_study_at_a_tiny_budget_resumes_from_its_checkpoint(tmp_path):
    data = require_shared("kg")
    require_shared("kg", "wn18rr", "train.txt")
    page, records, cache = tmp_path / "conve.md", tmp_path / "records", tmp_path / "cache"
    base = ["benchmarks/conve_linkpred.py", "--data", str(data), "--datasets", "wn18rr", "--steps", "2",
            "--valid-subset", "10", "--test-subset", "10", "--cache", str(cache), "--records", str(records),
            "--out", str(page)]
    first = _run([*base, "--rounds", "1"])
    assert first.returncode == 0, first.stderr[-2000:]
    second = _run([*base, "--rounds", "2"])
    assert second.returncode == 0, second.stderr[-2000:]
    assert "resuming after round 1" in second.stdout
    folder = records / "conve"
    assert sorted(p.name for p in folder.iterdir()) == ["wn18rr__round001.json", "wn18rr__round002.json",
                                                        "wn18rr__test.json"]
    curve = [json.loads((folder / f"wn18rr__round00{r}.json").read_text())["data"] for r in (1, 2)]
    assert [c["batches_seen"] for c in curve] == [2, 4]
    test = json.loads((folder / "wn18rr__test.json").read_text())["data"]
    assert test["rounds"] == 2 and test["n_triples"] == 10
    text = page.read_text()
    assert _command(page)[:2] == ["python", "benchmarks/conve_linkpred.py"] and "| wn18rr | 2 |" in text
