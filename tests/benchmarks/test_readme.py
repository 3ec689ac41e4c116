"""Every results page names a command listed in benchmarks/README.md, and every listed script exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _table() -> dict[str, str]:
    rows = re.findall(r"^\| (docs/results/\S+\.md) \| `([^`]+)` \|$", (ROOT / "benchmarks/README.md").read_text(), re.M)
    return dict(rows)


def test_every_page_is_listed_with_the_command_it_names():
    table = _table()
    pages = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs/results").glob("*.md"))
    assert sorted(table) == pages
    for page, command in table.items():
        text = (ROOT / page).read_text()
        named = re.search(r"Command:\**\s*`([^`]+)`", text)
        assert named, f"{page} names no command"
        assert named.group(1) == command, f"{page} names {named.group(1)!r}, README lists {command!r}"
        script = command.split()[1]
        assert command.startswith("python benchmarks/") and (ROOT / script).is_file(), command


def test_no_study_or_page_text_in_the_library():
    offenders = [p for p in (ROOT / "src").rglob("*.py") if "docs/results" in p.read_text()]
    assert not offenders, offenders
