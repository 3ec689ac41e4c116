"""The shared core: output safety (knotwork._io), errors, provenance, the root CLI convention."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

from knotwork import _io
from knotwork._errors import (
    HarmonizeError,
    InputError,
    KnotworkError,
    MergeError,
    NotFittedError,
    OutputError,
    RunError,
    check_finite,
    check_positive_int,
)
from knotwork._provenance import code_fingerprint, provenance
from knotwork.cli._app import _hoist_global_flags, error_line
from tests.cli_contract import invoke


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ------------------------------------------------------------------------------------------ atomic outputs


def test_atomic_dir_marks_output_and_lists_files(tmp_path):
    out = tmp_path / "run"
    with _io.atomic_dir(out, report={"method": "x"}) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".run.knotwork-tmp-")
        (tmp / "a.txt").write_text("a")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "b.txt").write_text("b")
    marker = json.loads((out / _io.MARKER).read_text())
    assert sorted(marker["files"]) == ["a.txt", "sub/b.txt"]
    assert marker["report"] == {"method": "x"} and marker["knotwork"]["version"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_atomic_dir_failure_leaves_nothing(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(RuntimeError), _io.atomic_dir(out) as tmp:
        (tmp / "half").write_text("x")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_permissions_follow_umask(tmp_path):
    old = os.umask(0o027)
    try:
        with _io.atomic_dir(tmp_path / "d") as tmp:
            (tmp / "f").write_text("x")
        _io.write_text(tmp_path / "f.txt", "y")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o750
    assert stat.S_IMODE((tmp_path / "f.txt").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "f.txt.knotwork.json").stat().st_mode) == 0o640


@pytest.mark.parametrize(
    "layout, match",
    [
        ("out_is_input", "the output is an input"),
        ("out_contains_input", "the output contains an input"),
        ("out_inside_input_dir", "inside the input folder"),
    ],
)
def test_output_never_touches_inputs_even_with_force(tmp_path, layout, match):
    inp = tmp_path / "inputs" / "a"
    inp.mkdir(parents=True)
    (inp / "w.bin").write_bytes(b"123")
    out = {"out_is_input": inp, "out_contains_input": tmp_path / "inputs", "out_inside_input_dir": inp / "o"}[layout]
    with pytest.raises(OutputError, match=match), _io.atomic_dir(out, inputs=[inp], force=True):
        pass
    assert (inp / "w.bin").read_bytes() == b"123" and sorted(os.listdir(inp)) == ["w.bin"]


def test_force_replaces_only_knotwork_outputs(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    with pytest.raises(OutputError, match="not a knotwork output"), _io.atomic_dir(foreign, force=True):
        pass
    assert (foreign / "notes.txt").read_text() == "keep"

    out = tmp_path / "run"
    with _io.atomic_dir(out) as tmp:
        (tmp / "v1").write_text("1")
    with pytest.raises(OutputError, match="pass --force"), _io.atomic_dir(out):
        pass
    with _io.atomic_dir(out, force=True) as tmp:
        (tmp / "v2").write_text("2")
    assert sorted(os.listdir(out)) == [_io.MARKER, "v2"]
    # A file the user added to a knotwork output is never deleted.
    (out / "user.txt").write_text("mine")
    with pytest.raises(OutputError, match="user.txt, which knotwork did not write"), _io.atomic_dir(out, force=True):
        pass
    assert (out / "user.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "run"]


def test_single_file_output_report_beside_and_json_self_identifying(tmp_path):
    out = tmp_path / "m.safetensors"
    _io.write_bytes(out, b"weights", report={"method": "zipit"})
    rep = json.loads(_io.report_path(out).read_text())
    assert rep["file"] == "m.safetensors" and rep["sha256"] == _io.sha256_file(out) and rep["method"] == "zipit"
    with pytest.raises(OutputError, match="exists"):
        _io.write_bytes(out, b"again")
    _io.write_bytes(out, b"again", force=True)
    assert out.read_bytes() == b"again"

    js = tmp_path / "r.json"
    _io.write_json(js, {"f1": 0.5})
    assert json.loads(js.read_text())["knotwork"]["version"] and not _io.report_path(js).exists()
    _io.write_json(js, {"f1": 0.6}, force=True)
    plain = tmp_path / "plain.json"
    plain.write_text('{"user": 1}')
    with pytest.raises(OutputError, match="not a knotwork output"):
        _io.write_json(plain, {"f1": 1}, force=True)
    assert plain.read_text() == '{"user": 1}'


def test_file_where_folder_expected_and_symlink_refused(tmp_path):
    f = tmp_path / "x"
    f.write_text("x")
    with pytest.raises(OutputError, match="exists as a file"), _io.atomic_dir(f, force=True):
        pass
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(OutputError, match="symbolic link"):
        _io.write_text(link, "x", force=True)


def test_output_under_a_file_is_one_clear_error(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        _io.write_text(f / "sub" / "out.txt", "y")


def test_leftovers_of_dead_runs_are_cleaned_and_live_ones_kept(tmp_path):
    out = tmp_path / "run"
    dead, alive = _dead_pid(), os.getpid()
    (tmp_path / f".run.knotwork-tmp-{dead}-abc").mkdir()
    (tmp_path / f".run.knotwork-tmp-{alive}-abc").mkdir()
    (tmp_path / ".run.other").mkdir()  # not ours: never touched
    removed = _io.clean_leftovers(out)
    assert [p.name for p in removed] == [f".run.knotwork-tmp-{dead}-abc"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".run.knotwork-tmp-{alive}-abc", ".run.other"]


def test_displaced_previous_output_is_restored(tmp_path):
    out = tmp_path / "run"
    old = tmp_path / f".run.knotwork-old-{_dead_pid()}-xyz"
    old.mkdir()
    (old / "v1").write_text("1")
    _io.clean_leftovers(out)
    assert (out / "v1").read_text() == "1" and not old.exists()


def test_resumable_dir(tmp_path):
    out = tmp_path / "vols"
    assert _io.resumable_dir(out) == out and _io.read_marker(out) is not None
    _io.write_scratch(out / "a.nii", b"1")
    assert _io.resumable_dir(out) == out and (out / "a.nii").read_bytes() == b"1"
    empty = tmp_path / "empty"
    empty.mkdir()
    _io.resumable_dir(empty)
    assert _io.read_marker(empty) is not None
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "x").write_text("x")
    with pytest.raises(OutputError, match="exists"):
        _io.resumable_dir(foreign)


# ------------------------------------------------------------------------------------------ errors


def test_error_hierarchy_and_one_line():
    assert issubclass(MergeError, InputError) and issubclass(HarmonizeError, ValueError)
    assert issubclass(NotFittedError, ValueError) and issubclass(NotFittedError, AttributeError)
    assert InputError.exit_code == 2 and RunError.exit_code == 1
    assert str(KnotworkError("a\n  b")) == "a b"
    assert error_line(KeyError("module 'q' missing")) == ("module 'q' missing", 2)
    assert error_line(FileNotFoundError(2, "No such file or directory", "x.json")) == (
        "x.json: No such file or directory", 2)
    line, code = error_line(ZeroDivisionError("division by zero"))
    assert code == 1 and "internal error" in line and "--debug" in line


def test_checks():
    assert check_positive_int(3, "--rank") == 3
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(InputError, match="--rank must be an integer >= 1"):
            check_positive_int(bad, "--rank")
    import numpy as np
    import torch

    check_finite(np.arange(3), "x")
    with pytest.raises(InputError, match="images holds 2 non-finite values"):
        check_finite(np.array([1.0, np.nan, np.inf]), "images")
    with pytest.raises(InputError, match="w holds 1 non-finite value "):
        check_finite(torch.tensor([0.0, float("nan")]), "w")


# ------------------------------------------------------------------------------------------ provenance


def test_provenance_and_fingerprint(tmp_path):
    p = provenance(command=["knotwork", "merge", "a b"])
    assert p["command"] == "knotwork merge 'a b'" and p["machine"]["cpus"] >= 1 and "dirty" in p
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "m.py").write_text("x = 1\n")
    script = tmp_path / "study.py"
    script.write_text("print(1)\n")
    a = code_fingerprint(script, package_dir=pkg)
    assert a == code_fingerprint(script, package_dir=pkg)
    (pkg / "m.py").write_text("x = 2\n")
    b = code_fingerprint(script, package_dir=pkg)
    script.write_text("print(2)\n")
    assert len({a, b, code_fingerprint(script, package_dir=pkg)}) == 3


# ------------------------------------------------------------------------------------------ root CLI


def test_version_and_global_flags_anywhere():
    from knotwork import __version__

    res = invoke(["--version"])
    assert res.exit_code == 0 and res.stdout.strip() == f"knotwork {__version__}"
    assert _hoist_global_flags(["merge", "a", "-v", "--out", "o", "--", "-q"]) == ["-v", "merge", "a", "--out", "o",
                                                                                    "--", "-q"]
    for args in (["-q", "merge", "/nonexistent-adapter", "--out", "o"], ["merge", "/nonexistent-adapter", "-q",
                                                                         "--out", "o"]):
        res = invoke(args)
        assert res.exit_code == 2 and "nonexistent-adapter" in res.stderr and res.stderr.count("\n") == 1
    res = invoke(["-v", "-q", "merge", "x", "--out", "o"])
    assert res.exit_code == 2 and "contradict" in res.stderr


def _toy_app():
    import typer

    from knotwork.cli._app import KnotworkGroup, _root

    toy = typer.Typer(cls=KnotworkGroup)
    toy.callback()(_root)

    @toy.command("boom")
    def boom(kind: str) -> None:
        raise {"input": MergeError("adapter a: module 'q' has NaN"), "run": RunError("diverged at step 3"),
               "bug": ZeroDivisionError("division by zero")}[kind]

    return toy


@pytest.mark.parametrize("kind, code, text", [("input", 2, "error: adapter a: module 'q' has NaN"),
                                              ("run", 1, "error: diverged at step 3"),
                                              ("bug", 1, "error: internal error (ZeroDivisionError")])
def test_errors_become_one_line_and_exit_code(kind, code, text):
    from typer.testing import CliRunner

    res = CliRunner().invoke(_toy_app(), ["boom", kind])
    assert res.exit_code == code and res.stderr.startswith(text) and res.stderr.count("\n") == 1
    assert "Traceback" not in res.output


def test_debug_shows_the_traceback():
    from typer.testing import CliRunner

    res = CliRunner().invoke(_toy_app(), ["boom", "bug", "--debug"])
    assert isinstance(res.exception, ZeroDivisionError)
