"""Every ZipIt! results page's command runs, at a tiny budget, with all outputs in tmp_path (so none of them rots).

The pages name their command in the header line "- Command: `...`"; each test checks that this command still
parses, then runs the same script as a subprocess with a seconds-long budget.
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

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"


def page_command(page: str) -> list[str]:
    """The argv of the command a results page names in its header."""
    text = (ROOT / "docs" / "results" / page).read_text(encoding="utf-8")
    found = re.search(r"^- Command: `([^`]+)`", text, flags=re.MULTILINE)
    assert found, f"docs/results/{page} names no '- Command: `...`' in its header"
    return shlex.split(found.group(1))


def script_parser(script: str):
    sys.path.insert(0, str(BENCH))
    try:
        module = __import__(Path(script).stem)
    finally:
        sys.path.remove(str(BENCH))
    return module.parser()


def run(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    res = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    return res


@pytest.mark.parametrize("page", ["zipit-small.md", "zipit_timing.md"])
def test_page_commands_name_an_existing_script_and_parse(page):
    argv = page_command(page)
    assert argv[:1] == ["python"] and (ROOT / argv[1]).is_file(), argv
    script_parser(argv[1]).parse_args(argv[2:])  # exits (fails the test) on an option the script lacks


@pytest.mark.slow
def test_experiment_page_at_a_tiny_budget(shared_data, tmp_path):
    if not (shared_data / "vision" / "mnist.npz").is_file():
        pytest.skip(f"{shared_data / 'vision' / 'mnist.npz'} is missing")
    out, records, cache = tmp_path / "zipit.md", tmp_path / "records", tmp_path / "cache"
    args = ["benchmarks/zipit_experiment.py", "smoke", "--ablation", "smoke", "--out", str(out),
            "--records", str(records), "--cache", str(cache), "--merge-images", "100"]
    run(args, tmp_path)
    page = out.read_text(encoding="utf-8")
    assert page.startswith("# ZipIt! results") and f"- Command: `python {shlex.join(args)}`" in page
    assert "| ZipIt!_{4/4} |" in page and "| Ensemble |" in page and "α / β ablation" in page
    units = {p.stem for p in (records / "zipit").glob("*.json")}
    assert len(units) == 9 + 10  # 9 table rows and 10 distinct ablation cells of the one pair
    full = json.loads((records / "zipit" / "smoke-pair0-w16-zipit-full.json").read_text())
    assert full["data"]["method"] == "zipit-full" and 0.0 <= full["data"]["joint"] <= 1.0
    assert sorted(p.name for p in (cache / "smoke").iterdir()) == [
        "pair0_A.safetensors", "pair0_A.safetensors.knotwork.json",
        "pair0_B.safetensors", "pair0_B.safetensors.knotwork.json"]
    # A second run reuses every record (nothing is merged again) and refuses the page without --force.
    again = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, timeout=300)
    assert again.returncode == 2 and "exists; pass --force" in again.stderr
    before = {p.name: p.stat().st_mtime_ns for p in (records / "zipit").iterdir()}
    run([*args, "--force"], tmp_path)
    assert {p.name: p.stat().st_mtime_ns for p in (records / "zipit").iterdir()} == before


def test_timing_page_at_a_tiny_budget(tmp_path):
    out, records = tmp_path / "zipit_timing.md", tmp_path / "records"
    args = ["benchmarks/zipit_timing.py", "--widths", "8", "16", "--reference-max", "16", "--out", str(out),
            "--records", str(records)]
    run(args, tmp_path)
    page = out.read_text(encoding="utf-8")
    assert f"- Command: `python {shlex.join(args)}`" in page
    rows = [line for line in page.splitlines() if re.match(r"^\| (8|16) \|", line)]
    # two tables: same M and U as the naive loop, and same clusters as the reference-style loop
    assert len(rows) == 4 and all(line.endswith("| yes |") for line in rows)
    assert "Target (issue 14) not checked: width 1024 was not measured." in page
    folder = records / "zipit_timing"
    assert sorted(p.name for p in folder.iterdir()) == [
        "matcher-width16.json", "matcher-width8.json", "width16.json", "width8.json"]
    # --only matcher measures the matcher table again, keeps the other records, and the page names the full command
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    run([*args, "--only", "matcher", "--force"], tmp_path)
    after = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert {name for name in after if after[name] != before[name]} == {"matcher-width16.json", "matcher-width8.json"}
    assert f"- Command: `python {shlex.join([*args, '--force'])}`" in out.read_text(encoding="utf-8")
