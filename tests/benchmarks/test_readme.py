"""Every results page names a command listed in benchmarks/README.md, and every listed script exists."""

from __future__ import annotations

import ast
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


def _code_strings(source: str) -> list[str]:
    """String constants of a module that are not docstrings (a docstring may point the reader at a results page)."""
    tree = ast.parse(source)
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    return [n.value for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings]


def test_no_study_or_page_text_in_the_library():
    offenders = [p for p in (ROOT / "src").rglob("*.py")
                 if any("docs/results" in s for s in _code_strings(p.read_text()))]
    assert not offenders, offenders


def test_code_strings_skip_docstrings_only():
    src = '"""See docs/results/x.md."""\nPAGE = "docs/results/x.md"\ndef f():\n    """docs/results/y.md"""\n'
    assert _code_strings(src) == ["docs/results/x.md"]
