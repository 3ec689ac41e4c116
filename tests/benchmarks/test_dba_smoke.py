"""Each DBA results page names its command; run that command at a tiny budget so none of them rots.

The command is read from the page's "- Command:" line, its budget options are replaced by tiny ones, and the
page and records go into tmp_path (never into docs/ or benchmarks/results/).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require_shared

ROOT = Path(__file__).resolve().parents[2]

# page -> options replaced for a run of seconds
PAGES = {
    "dba.md": {"--per-class": ["2"], "--seeds": ["2"], "--tune-seeds": ["1"], "--steps": ["2"], "--max-steps": ["4"],
               "--patience": ["1"], "--eval-every": ["2"]},
    "dba_step_cost.md": {"--steps": ["1"], "--rounds": ["1"], "--pools": ["10"], "--configs": ["snr"],
                         "--kinds": ["reused"]},
}


def page_command(page: str) -> list[str]:
    text = (ROOT / "docs" / "results" / page).read_text(encoding="utf-8")
    found = re.search(r"^- Command: `([^`]+)`$", text, flags=re.M)
    assert found, f"docs/results/{page} has no '- Command: `...`' line"
    return shlex.split(found.group(1))


def override(argv: list[str], options: dict[str, list[str]]) -> list[str]:
    """``argv`` with every occurrence of each option in ``options`` (and its values) replaced by the new values."""
    out, skipping = [], False
    for token in argv:
        if token.startswith("--"):
            skipping = token in options
        if not skipping:
            out.append(token)
    for flag, values in options.items():
        out += [flag, *values]
    return out


def test_override_replaces_repeated_and_multi_value_options():
    argv = ["s.py", "--per-class", "10", "--per-class", "60", "--pools", "100", "600", "--force"]
    assert override(argv, {"--per-class": ["2"], "--pools": ["10"]}) == ["s.py", "--force", "--per-class", "2",
                                                                       "--pools", "10"]


@pytest.mark.slow
@pytest.mark.shared_data
@pytest.mark.parametrize("page", list(PAGES))
def test_page_command_runs_at_a_tiny_budget(page, tmp_path):
    require_shared("vision", "mnist.npz")
    argv = page_command(page)
    assert argv[0] == "python" and argv[1].startswith("benchmarks/"), argv
    assert (ROOT / argv[1]).is_file(), f"docs/results/{page} names {argv[1]}, which does not exist"
    out, records = tmp_path / page, tmp_path / "records"
    args = override(argv[1:], {**PAGES[page], "--out": [str(out)], "--records": [str(records)]})
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text(encoding="utf-8")
    shown = args
    if page == "dba.md":  # the study's page names its command without --force and where the outputs went
        drop = {i for i, a in enumerate(args) if a == "--force"}
        drop |= {j for i, a in enumerate(args) if a in ("--out", "--records") for j in (i, i + 1)}
        shown = [a for i, a in enumerate(args) if i not in drop]
    assert text.startswith("# ") and f"- Command: `python {shlex.join(shown)}`" in text
    assert "| pool |" in text or "| method |" in text
    written = sorted(records.rglob("*.json"))
    assert written, "no result record was written"
    assert "- Code fingerprint: all " in text and f"{len(written)} records" in text
