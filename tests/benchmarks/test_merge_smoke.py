"""The merge results page's command still runs: benchmarks/knots_speed.py at a tiny budget (seconds), writing into
tmp_path, never into docs/."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import knotwork

ROOT = Path(__file__).resolve().parents[2]
PAGES = {"knots-speed.md": "benchmarks/knots_speed.py"}


def _env() -> dict[str, str]:
    import os

    return {**os.environ, "PYTHONPATH": str(Path(knotwork.__file__).resolve().parents[1])}


def test_page_commands_name_this_script_and_its_options():
    for page, script in PAGES.items():
        text = (ROOT / "docs" / "results" / page).read_text()
        command = re.search(r"Command: `([^`]+)`", text).group(1)
        assert command.split()[:2] == ["python", script], command
        usage = subprocess.run([sys.executable, str(ROOT / script), "--help"], capture_output=True, text=True,
                               env=_env(), check=True).stdout
        for flag in re.findall(r"--[\w-]+", command):
            assert flag in usage, f"{page}: {flag} is not an option of {script}"


def test_knots_speed_runs_at_a_tiny_budget(tmp_path):
    page = tmp_path / "knots-speed.md"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "knots_speed.py"), "--tiny", "--merge-threads", "1", "--out", str(page),
         "--records", str(tmp_path / "records")],
        capture_output=True, text=True, env=_env(), timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = page.read_text()
    assert len(list((tmp_path / "records" / "knots-speed-tiny").glob("*.json"))) == 4  # 1 alignment + 3 merges
    assert "Command: `python benchmarks/knots_speed.py --threads 1 --merge-threads 1 --tiny`" in text
    assert "| tiny | 64x48, n=3, r=4 |" in text
    for method in ("knots-ties", "ties", "dare-ties"):  # each whole merge has its row, split by stage, with its floor
        assert re.search(rf"\| {method} \| `[^`]*` \| [\d.]+ \| [\d.]+ \| [\d.]+ \| [\d.]+ \| [\d.]+ \| [\d.]+ \| \d+ "
                         rf"\| [\d.]+ \| \d+x \|", text), text
