"""benchmarks/_common.py: result records, the fingerprint line of a page, and the scoped fingerprint of the code that
computed a unit (so records made in different sessions can be compared)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def common(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import _common

    return _common


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_scoped_fingerprint_covers_exactly_its_parts(tmp_path, monkeypatch, common):
    import knotwork._provenance as prov

    pkg = _tree(tmp_path / "knotwork", {"_io.py": "a", "lora/train.py": "b", "lora/demo.py": "c",
                                        "merge/api.py": "d", "cli/app.py": "e"})
    monkeypatch.setattr(prov, "PACKAGE_DIR", pkg)
    script = _tree(tmp_path, {"study.py": "s"}) / "study.py"
    parts = ("merge", "_*.py", "lora/train.py")
    first = common.scoped_fingerprint(parts, script)
    (pkg / "lora" / "demo.py").write_text("changed")   # outside the parts
    (pkg / "cli" / "app.py").write_text("changed")
    assert common.scoped_fingerprint(parts, script) == first
    for rel in ("merge/api.py", "_io.py", "lora/train.py"):  # inside: every part counts
        old = (pkg / rel).read_text()
        (pkg / rel).write_text(old + "!")
        assert common.scoped_fingerprint(parts, script) != first, rel
        (pkg / rel).write_text(old)
    assert common.scoped_fingerprint(parts, script) == first
    script.write_text("s2")
    assert common.scoped_fingerprint(parts, script) != first


def test_fingerprint_line_explains_a_difference_outside_the_code_used(tmp_path, common):
    script = ROOT / "benchmarks" / "knots_text.py"
    for unit in ("a", "b"):
        common.write_record("study", unit, {"x": 1}, script=script, root=tmp_path, code_used="c0de")
    records = common.load_records("study", root=tmp_path)
    assert set(records) == {"a", "b"} and records["a"]["code_used"] == "c0de"
    assert "all 2 records share" in common.fingerprint_line(records, script=script)
    records["b"]["fingerprint"] = "0" * 16  # made before an unrelated change elsewhere in src/
    line = common.fingerprint_line(records, script=script)
    assert "records differ" in line and "one hash in all records, `c0de`" in line
    records["b"]["code_used"] = "other"
    assert "2 different hashes" in common.fingerprint_line(records, script=script)
    del records["b"]["code_used"]  # an old record without the field: no claim either way
    line = common.fingerprint_line(records, script=script)
    assert "records differ" in line and "code_used" not in line


def test_fingerprint_line_says_whether_the_numbers_code_is_unchanged(tmp_path, common):
    script = ROOT / "benchmarks" / "knots_text.py"
    for unit in ("a", "b"):
        common.write_record("study", unit, {"x": 1}, script=script, root=tmp_path, code_used="c0de")
    records = {u: common.load_records("study", root=tmp_path)[u] for u in ("a", "b")}
    for rec in records.values():
        rec["fingerprint"] = "0" * 16  # both made before a change of the page's wording
    line = common.fingerprint_line(records, script=script, code_used_now="c0de")
    assert "not the current code" in line and "`c0de`) is unchanged" in line
    line = common.fingerprint_line(records, script=script, code_used_now="beef")
    assert "changed since (records' `code_used` `c0de`, now `beef`)" in line
    assert "code_used" not in common.fingerprint_line(records, script=script)  # no claim without today's hash
    records["b"]["fingerprint"] = "1" * 16
    assert "(also the current code's)" in common.fingerprint_line(records, script=script, code_used_now="c0de")
    assert "current code's" not in common.fingerprint_line(records, script=script, code_used_now="beef")


def test_holm_matches_hand_worked_cases(common):
    # sorted 0.01, 0.03, 0.04 -> 3 * 0.01 = 0.03, 2 * 0.03 = 0.06, max(0.06, 1 * 0.04) = 0.06
    assert common.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert common.holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])  # 0.01*3, max(0.03, 0.02*2), 0.04
    assert common.holm([0.03, 0.02]) == pytest.approx([0.04, 0.04])  # monotone: max(2 * 0.02, 0.03)
    assert common.holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1, then monotone
    assert common.holm([0.02]) == pytest.approx([0.02])  # one test: unchanged
    adj = common.holm([float("nan"), 0.02])  # a NaN counts as p = 1 for the others and stays NaN
    assert adj[0] != adj[0] and adj[1] == pytest.approx(0.04)
