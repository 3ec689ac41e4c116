"""Every Re-TACRED results page names a command that still runs: the command is read from the page's header and
run at a tiny budget, writing its page and records into tmp_path (never into docs/ or benchmarks/results/)."""

from __future__ import annotations

import hashlib
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

#: page -> (extra options that shrink the budget, the shared data it needs or None, a module it needs or None)
PAGES = {
    "retacred.md": (
        ["--seeds", "0", "--max-examples", "120", "--steps", "3", "--folds", "2", "--bootstrap", "3"],
        ("re", "semeval2010"),
        None,
    ),
    "retacred-models.md": (["--bootstrap", "5", "--models", "3"], ("re", "tacrev_predictions"), None),
    "retacred_speed.md": (
        ["--repeats", "1", "--n-examples", "200", "--n-predictions", "200", "--n-tasks", "200"],
        None,
        "crowdkit",
    ),
}


def page_command(page: Path) -> list[str]:
    """The command of a results page's header line ``- Command: `...```."""
    match = re.search(r"^- \**Command:?\**:? `([^`]+)`", page.read_text(encoding="utf-8"), flags=re.MULTILINE)
    assert match, f"{page} has no 'Command:' header line"
    return shlex.split(match.group(1))


def test_every_retacred_page_is_covered():
    assert {p.name for p in (ROOT / "docs" / "results").glob("retacred*.md")} == set(PAGES)


@pytest.mark.parametrize("name", list(PAGES))
def test_page_command_runs_at_a_tiny_budget(name, tmp_path):
    tiny, data, module = PAGES[name]
    if data is not None:
        require_shared(*data)
    if module is not None:
        pytest.importorskip(module)
    page = ROOT / "docs" / "results" / name
    before = hashlib.sha256(page.read_bytes()).hexdigest()
    command = page_command(page)
    assert command[0] == "python" and command[1].startswith("benchmarks/retacred_"), command
    script = ROOT / command[1]
    assert script.is_file(), f"{page.name} names {command[1]}, which does not exist"
    out, records = tmp_path / name, tmp_path / "records"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, str(script), *command[2:], *tiny, "--out", str(out), "--records", str(records)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    written = out.read_text(encoding="utf-8")
    # the tiny page has the real page's title, and names the tiny command that made it
    assert written.splitlines()[0] == page.read_text(encoding="utf-8").splitlines()[0]
    assert page_command(out)[:2] == command[:2]
    assert all(opt in page_command(out) for opt in tiny if opt.startswith("--"))
    bodies = [json.loads(p.read_text()) for p in (records / script.stem).glob("*.json")]
    assert bodies and all(b["study"] == script.stem and b["fingerprint"] for b in bodies)
    assert hashlib.sha256(page.read_bytes()).hexdigest() == before, "the smoke run touched the real page"


def test_speed_page_refreshes_only_the_loader(tmp_path):
    """``--only loader`` measures the loading rows (floor, json.load anchors, load_tacred) and still renders the whole
    page under the whole page's command; groups without a record say so instead of failing."""
    out, records = tmp_path / "page.md", tmp_path / "records"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    tiny = ["--repeats", "1", "--n-examples", "300", "--n-predictions", "50", "--n-tasks", "50"]
    proc = subprocess.run(
        [sys.executable, "benchmarks/retacred_speed.py", *tiny, "--only", "loader", "--out", str(out),
         "--records", str(records)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    page = out.read_text(encoding="utf-8")
    assert page_command(out) == ["python", "benchmarks/retacred_speed.py", *tiny]  # no --only: the page's command
    assert sorted(p.name for p in (records / "retacred_speed").iterdir()) == ["loader.json"]
    loader = json.loads((records / "retacred_speed" / "loader.json").read_text())["data"]
    expected = {"tacred_like"} | ({"semeval"} if (ROOT.parent / "shared/data/re/semeval2010").is_dir() else set())
    assert set(loader["rows"]) == expected
    for row in loader["rows"].values():
        assert row["examples"] == 300 and set(row["times"]) == {"floor", "json", "json_paused", "knotwork"}
        assert all(len(t) == 1 and t[0][1] >= 0 for t in row["times"].values())
    assert "| synthetic, TACRED's shape with CoreNLP fields | 300 |" in page
    assert ("Target (issue 14): load + validate within 2×" in page) == ("semeval" in expected)
    assert "| score | not measured yet |" in page
