"""The CLI contract every bad-input and fault case asserts (issue 11; docs/cli.md).

A refused command must: exit with the expected code (2 bad input or usage, 1 a failed run); print exactly one
non-empty line, ``error: ...``, that names the item (checked with a regular expression); print no traceback;
leave every input byte-identical; and leave nothing half-written (no new output, no temp entry beside it).

Use :func:`refused` in table-driven tests, one row per case::

    refused(["merge", str(a), "--out", str(tmp_path / "m"), "--rank", "0"],
            match=r"--rank.*>= 1", inputs=[a], out=tmp_path / "m")
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from typer.testing import CliRunner

from knotwork.cli import app

runner = CliRunner()


def snapshot(paths: Iterable[Path]) -> dict[str, tuple[str, int]]:
    """sha256 and mode of every file under ``paths`` (files or folders), keyed by path."""
    out: dict[str, tuple[str, int]] = {}
    for p in paths:
        p = Path(p)
        files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else []
        for f in files:
            out[str(f)] = (hashlib.sha256(f.read_bytes()).hexdigest(), os.stat(f).st_mode)
        if p.is_dir():
            out[str(p) + "/"] = ("dir", len(list(p.rglob("*"))))
    return out


def listing(folder: Path) -> set[str]:
    return {e.name for e in folder.iterdir()} if folder.is_dir() else set()


def invoke(args: Sequence[str], **kwargs):
    return runner.invoke(app, [str(a) for a in args], **kwargs)


def refused(
    args: Sequence[str],
    *,
    match: str,
    code: int = 2,
    inputs: Iterable[Path] = (),
    out: Path | None = None,
    usage: bool = False,
):
    """Run ``knotwork ARGS`` in-process and assert the refusal contract; returns the result.

    ``usage=True`` is for errors the option parser reports itself (an unknown choice, a missing argument):
    click prints its usage block, so only the exit code, ``match`` and the absence of a traceback are checked.
    """
    inputs = [Path(p) for p in inputs]
    before = snapshot(inputs)
    out_existed = out is not None and (out.exists() or out.is_symlink())
    out_before = snapshot([out]) if out_existed else {}
    parent = out.parent if out is not None else None
    parent_before = listing(parent) if parent is not None else set()

    res = invoke(args)
    text = res.stderr if res.stderr else res.output
    assert "Traceback" not in res.output and "Traceback" not in (res.stderr or ""), res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert res.exit_code == code, f"exit {res.exit_code}, expected {code}: {text!r}"
    if usage:
        assert re.search(match, text), f"{match!r} not in {text!r}"
    else:
        lines = [ln for ln in (res.stderr or "").splitlines() if ln.strip()]
        assert len(lines) == 1, f"expected one error line, got {lines!r}"
        assert lines[0].startswith("error: "), lines[0]
        assert re.search(match, lines[0]), f"{match!r} not in {lines[0]!r}"
    assert snapshot(inputs) == before, "an input changed"
    if out is not None:
        if out_existed:
            assert snapshot([out]) == out_before, f"{out} changed"
        else:
            assert not (out.exists() or out.is_symlink()), f"{out} was created by a refused command"
        new = listing(parent) - parent_before
        assert not new, f"left behind beside the output: {sorted(new)}"
    return res
