"""The harmonization studies' commands still run: each at a tiny budget, writing its records and page into
tmp_path (never docs/), and each results page names a command the script accepts."""

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
DATA = ROOT.parent / "shared" / "data" / "med" / "hippocampus"
PAGES = {"harmonize.md": "harmonize_study.py", "harmonize_speed.md": "harmonize_speed.py"}


def _run(script: str, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *map(str, args)], env=env,
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def _command(page: Path) -> str:
    match = re.search(r"^- Command: `([^`]+)`", page.read_text(encoding="utf-8"), flags=re.M)
    assert match, f"{page} names no command in its header"
    return match.group(1)


@pytest.mark.parametrize("page", sorted(PAGES))
def test_results_page_names_a_command_its_script_accepts(page):
    import importlib

    cmd = shlex.split(_command(ROOT / "docs" / "results" / page))
    assert cmd[:2] == ["python", f"benchmarks/{PAGES[page]}"], cmd
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        module = importlib.import_module(PAGES[page].removesuffix(".py"))
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    module.parser().parse_args(cmd[2:])  # exits (a SystemExit failure) on an option the script does not have


def test_harmonize_study_smoke(tmp_path, capsys):
    if not (DATA / "imagesTr").is_dir():
        pytest.skip(f"real data not found at {DATA}; see shared/data/README.md")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import harmonize_study
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))

    def run(*args) -> tuple[str, str]:  # in this process (one torch import); units in 2 spawned workers
        assert harmonize_study.main([str(a) for a in args]) == 0
        res = capsys.readouterr()
        return res.out, res.err

    out = tmp_path / "page" / "harmonize.md"
    common = ["--iters", 2, "--width", 2, "--cases", 2, 2, 2, "--records", tmp_path / "records"]
    args = ["--seeds", 0, 1, "--conditions", "no-D1", "hm", *common, "--out", out]
    _, err = run(*args, "--jobs", 2)
    folder = tmp_path / "records" / "harmonize-strong-w2-i2-c2-2-2"
    units = sorted(p.stem for p in folder.glob("*.json"))
    assert units == ["hm-seed0", "hm-seed1", "no-D1-seed0", "no-D1-seed1"]
    assert "4 units to run, 0 done" in err and "4 units queued on 2 workers" in err
    rec = json.loads((folder / "hm-seed1.json").read_text())
    data = rec["data"]
    assert data["budget"]["iterations"] == 2 and data["budget"]["width"] == 2 and rec["code_used"] == data["code_used"]
    assert len(data["dice"]) == 2 and len(data["dice"][0]) == 2 and len(data["test_volumes"]) == 2
    assert [p["iteration"] for p in data["curve"]] == [1, 2] and data["cpu_seconds"]["total"] > 0
    assert data["w1"] is not None and json.loads((folder / "no-D1-seed0.json").read_text())["data"]["w1"] is None
    assert _command(out) == ("python benchmarks/harmonize_study.py --seeds 0 1 --conditions no-D1 hm --width 2 "
                             "--iters 2 --cases 2 2 2")
    text = out.read_text()
    assert "| `hm` − `no-D1` | 2 |" in text and "Unfinished" not in text and "all 4 records share" in text
    assert (out.parent / "harmonize_study.png").read_bytes()[:4] == b"\x89PNG"
    before = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.json")}
    _, err = run(*args)  # every unit has a record: nothing is trained again
    assert "0 units to run, 4 done" in err and "start" not in err
    assert before == {p.name: p.stat().st_mtime_ns for p in folder.glob("*.json")}
    # more seeds than records: the page marks the unfinished units; the pilot trains only the no-D1 units
    run("--seeds", 0, 1, 2, "--conditions", "no-D1", "hm", *common, "--out", out, "--page-only")
    assert "**Unfinished units (2):** no-D1-seed2, hm-seed2" in out.read_text()
    pilot, err = run("--pilot", "--seeds", 0, 2, *common)
    assert "1 units to run, 1 done" in err and "start no-D1-seed2" in err
    assert "pilot harmonize-strong-w2-i2-c2-2-2" in pilot and "seed 2: Dice" in pilot
    assert not (folder / "hm-seed2.json").exists()


def test_harmonize_speed_smoke(tmp_path):
    n_hippo = 8 if (DATA / "imagesTr").is_dir() else 0  # synthetic volumes only without the real data
    out = tmp_path / "page" / "harmonize_speed.md"
    args = ["--repeats", "1", "--shape", "6", "8", "8", "--hippocampus", n_hippo, "--records", tmp_path / "records",
            "--out", out]
    _run("harmonize_speed.py", *args)
    records = sorted(p.stem for p in (tmp_path / "records" / "harmonize_speed").glob("*.json"))
    hippo = ["hippocampus-float32", "hippocampus-uint8"] if n_hippo else []
    assert records == sorted(["ct-float32", "ct-int16", *hippo])
    rec = json.loads((tmp_path / "records" / "harmonize_speed" / "ct-int16.json").read_text())
    methods = rec["data"]["methods"]
    assert sorted(methods) == ["floor float32", "floor float64", "knotwork float32", "knotwork float64",
                               "scikit-image"]
    assert methods["knotwork float64"]["identical"] and methods["knotwork float32"]["identical"]
    text = out.read_text()
    assert "| CT 8x8x6 int16 | knotwork float64 |" in text and "| CT 8x8x6 float32 | scikit-image |" in text
    assert "## Targets (issue 14)" in text and "int16 CT, float32 output" in text
    assert _command(out).startswith("python benchmarks/harmonize_speed.py --repeats 1 --shape 6 8 8")
    again = _run("harmonize_speed.py", *args)  # every case has a record of this budget: nothing is timed again
    assert "best" not in again.stdout
