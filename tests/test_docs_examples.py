"""docs/integrations.md cannot rot: every Python example runs, every `knotwork ...` command is a real one.

Each ```python block runs in a fresh namespace with ``tmp_path`` as the working folder (the blocks are
self-contained: tiny synthetic data, no network). A block preceded by a ``<!-- not-executed -->`` line is only
compiled. A block that imports an optional library which is not installed is skipped, naming the library.

Each command line of a ```bash block that starts with ``knotwork`` (or runs ``-m knotwork`` under torchrun) must
name a real command, whose ``--help`` works, and use only options that command has.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from knotwork.cli import app
from tests.cli_commands import PENDING_COMMANDS, PENDING_OPTIONS, is_group, options, resolve

DOC = Path(__file__).resolve().parents[1] / "docs" / "integrations.md"
NOT_EXECUTED = "<!-- not-executed -->"
#: Libraries an example may need that knotwork itself does not require.
OPTIONAL = {"torchio", "monai", "cleanlab", "peft", "transformers", "pykeen", "dask", "distributed", "nibabel"}
#: Global flags every command accepts (docs/cli.md).
GLOBAL_FLAGS = {"-v", "--verbose", "-q", "--quiet", "--debug", "--help"}

def _fenced_blocks(text: str, language: str) -> list[tuple[int, str, bool]]:
    """(first code line number, code, executed?) of every fenced block of ``language``."""
    lines = text.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        if lines[i].strip() == f"```{language}":
            previous = next((ln.strip() for ln in reversed(lines[:i]) if ln.strip()), "")
            start = i + 1
            end = next(j for j in range(start, len(lines)) if lines[j].strip() == "```")
            blocks.append((start + 1, "\n".join(lines[start:end]) + "\n", previous != NOT_EXECUTED))
            i = end
        i += 1
    return blocks


def _commands(text: str) -> list[tuple[int, list[str]]]:
    """(line number, argv after ``knotwork``) of every knotwork command in the ```bash blocks."""
    out = []
    for first, code, _ in _fenced_blocks(text, "bash"):
        lines = code.splitlines()
        k = 0
        while k < len(lines):
            number, line = first + k, lines[k]
            while line.rstrip().endswith("\\") and k + 1 < len(lines):
                k += 1
                line = line.rstrip()[:-1] + " " + lines[k]
            k += 1
            words = shlex.split(line, comments=True)
            if words[:1] == ["knotwork"]:
                out.append((number, words[1:]))
            elif "-m" in words and words[words.index("-m") + 1:words.index("-m") + 2] == ["knotwork"]:
                out.append((number, words[words.index("-m") + 2:]))
    return out


TEXT = DOC.read_text(encoding="utf-8")
PYTHON = _fenced_blocks(TEXT, "python")
COMMANDS = _commands(TEXT)


def _imported_roots(code: str) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_the_page_was_parsed():
    """A parser that finds nothing would make every test below vacuous."""
    assert sum(executed for _, _, executed in PYTHON) >= 7
    assert len(COMMANDS) >= 12
    headings = re.findall(r"^## (.+)$", TEXT, flags=re.M)
    for name in ("TorchIO", "MONAI", "cleanlab", "Dask", "PEFT", "PyKEEN"):
        assert any(name in h for h in headings), name


@pytest.mark.parametrize(("line", "code", "executed"), PYTHON, ids=[f"line{n}" for n, _, _ in PYTHON])
def test_python_example_runs(line, code, executed, tmp_path, monkeypatch):
    compiled = compile(code, f"{DOC}:{line}", "exec")
    if not executed:
        pytest.skip(f"{DOC.name} line {line} is marked {NOT_EXECUTED} (compiled only)")
    for name in sorted(_imported_roots(code) & OPTIONAL):
        if importlib.util.find_spec(name) is None:
            pytest.skip(f"{DOC.name} line {line} needs {name}, which is not installed")
    monkeypatch.chdir(tmp_path)
    exec(compiled, {"__name__": "__docs_example__"})  # noqa: S102 - running the documented example is the test


@pytest.mark.parametrize(("line", "words"), COMMANDS, ids=[f"line{n}" for n, _ in COMMANDS])
def test_documented_command_exists(line, words):
    command, path, rest = resolve(words)
    group = is_group(command)
    name = " ".join(path + rest[:1] if group else path)
    if group:  # stopped at a group: the next word is not one of its commands
        if name in PENDING_COMMANDS:
            pytest.skip(f"`knotwork {name}` does not exist yet: {PENDING_COMMANDS[name]}")
        pytest.fail(f"{DOC.name} line {line}: `knotwork {name}` is not a command (`knotwork {' '.join(path)} --help`)")
    assert name not in PENDING_COMMANDS, f"`knotwork {name}` exists now: remove it from PENDING_COMMANDS"
    res = CliRunner().invoke(app, [*path, "--help"])
    assert res.exit_code == 0, res.output
    known = options(command) | GLOBAL_FLAGS
    for word in rest:
        option = word.split("=", 1)[0]
        if not option.startswith("--"):
            continue
        if (name, option) in PENDING_OPTIONS:
            if option in known:
                pytest.fail(f"`knotwork {name}` has {option} now: remove it from PENDING_OPTIONS")
            continue
        assert option in known, f"{DOC.name} line {line}: `knotwork {name}` has no option {option}"
