"""Output safety for every command and writer: atomic outputs, ``--force`` that replaces only knotwork's own
outputs, inputs never touched, leftovers of killed runs recognised and cleaned, permissions from the umask.

The rules, in one place:

- An output is assembled under a temporary sibling name (``.<name>.knotwork-tmp-<pid>-<random>``) and renamed
  into place, so a reader never sees half of it and a killed run leaves only a temp entry.
- A knotwork output is recognised by its report: a marker file :data:`MARKER` inside an output folder, listing
  the files knotwork wrote there; a report ``<name>.knotwork.json`` beside a single-file output; or, for a JSON
  output, a top-level ``"knotwork"`` provenance key.
- ``force=True`` replaces a previous knotwork output and nothing else. A folder holding files that knotwork did
  not write there is refused, with the first such file named: the user removes it.
- An output may never be an input, contain an input, or lie inside an input folder, with or without ``force``.
- Leftovers (temp and displaced entries of a run whose process is gone) are removed before a new run; a displaced
  previous output whose replacement never arrived is put back.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from knotwork._errors import OutputError

MARKER = ".knotwork.json"
REPORT_SUFFIX = ".knotwork.json"
_TMP, _OLD = "knotwork-tmp", "knotwork-old"

PathLike = str | os.PathLike[str]


# ------------------------------------------------------------------------------------------------ small helpers


def sha256_file(path: PathLike, *, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def umask_mode(mode: int) -> int:
    """``mode`` less the process umask: the permissions a plain ``open()``/``mkdir()`` would give."""
    umask = os.umask(0)
    os.umask(umask)
    return mode & ~umask


def report_path(path: PathLike) -> Path:
    """The report beside a single-file output: ``<name>.knotwork.json``."""
    path = Path(path)
    return path.with_name(path.name + REPORT_SUFFIX)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # somebody else's live process
        return True
    return True


def _is_within(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def _resolve(path: PathLike) -> Path:
    return Path(os.path.abspath(os.path.realpath(os.fspath(path))))


# --------------------------------------------------------------------------------------------- recognising


def read_marker(folder: PathLike) -> dict[str, Any] | None:
    """The marker of a knotwork output folder, or None when ``folder`` is not one."""
    marker = Path(folder) / MARKER
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_knotwork_output(path: PathLike) -> bool:
    """True when ``path`` is an output knotwork wrote (see the module docstring for how it is recognised)."""
    path = Path(path)
    if path.is_dir():
        return read_marker(path) is not None
    if report_path(path).is_file():
        return True
    if path.suffix == ".json" and path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return isinstance(data, dict) and isinstance(data.get("knotwork"), dict)
    return False


def _foreign_file(folder: Path, marker: Mapping[str, Any]) -> str | None:
    """The first file in ``folder`` that the marker does not list (a file the user put there), or None."""
    listed = set(marker.get("files", []))
    for root, _dirs, files in os.walk(folder):
        for fname in sorted(files):
            rel = os.path.relpath(os.path.join(root, fname), folder)
            if rel != MARKER and rel not in listed:
                return rel
    return None


def _check_inputs(path: Path, inputs: Iterable[PathLike]) -> None:
    target = _resolve(path)
    for inp in inputs:
        if inp is None or str(inp) in ("", "-"):
            continue
        src = _resolve(inp)
        if _is_within(src, target):
            what = "is" if src == target else "contains"
            raise OutputError(f"{path}: the output {what} an input ({inp}); choose another output path")
        if _is_within(target, src) and Path(inp).is_dir():
            raise OutputError(f"{path}: the output lies inside the input folder {inp}; choose another output path")


def check_inputs(path: PathLike, inputs: Iterable[PathLike]) -> None:
    """Refuse an output ``path`` that is, contains or lies inside one of ``inputs`` (the first rule of
    :func:`check_output`, for callers that resume an existing output, such as ``harmonize apply``)."""
    _check_inputs(Path(path), inputs)


def _check_parent(path: Path) -> None:
    """Refuse, before any work, an output whose folder cannot be created or written."""
    parent = Path(os.path.abspath(path)).parent
    while not (parent.exists() or parent == parent.parent):
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"{path}: cannot create the output there: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{path}: the folder {parent} is not writable")


def check_output(path: PathLike, *, inputs: Iterable[PathLike] = (), force: bool = False, folder: bool) -> None:
    """Refuse an output path that knotwork may not write, before any work starts.

    Raises
    ------
    OutputError
        When ``path`` is, contains or lies inside an input; when it exists and ``force`` is not given; when it
        exists, ``force`` is given, but it is not a knotwork output (or a knotwork folder holds foreign files);
        when it exists as a file where a folder is written or the other way round.
    """
    path = Path(path)
    _check_inputs(path, inputs)
    if not (path.exists() or path.is_symlink()):
        _check_parent(path)
        return
    kind = "folder" if path.is_dir() else "file"
    if path.is_symlink():
        raise OutputError(f"{path}: exists as a symbolic link; knotwork writes no output through a link")
    if folder != path.is_dir():
        raise OutputError(f"{path}: exists as a {kind}, but this command writes a {'folder' if folder else 'file'}")
    if not force:
        raise OutputError(f"{path}: output {kind} exists; pass --force to replace a previous knotwork output")
    if not is_knotwork_output(path):
        how = f"no {MARKER} inside" if folder else f"no {report_path(path).name} beside it"
        raise OutputError(
            f"{path}: exists and is not a knotwork output ({how}); --force replaces only knotwork's own outputs, "
            "so remove it yourself or choose another output path"
        )
    if folder:
        foreign = _foreign_file(path, read_marker(path) or {})
        if foreign is not None:
            raise OutputError(
                f"{path}: holds {foreign}, which knotwork did not write; --force will not delete it, so move it "
                "or choose another output path"
            )


def clean_leftovers(path: PathLike) -> list[Path]:
    """Remove the temp entries that killed runs left beside ``path``; put back a displaced previous output.

    Only entries named by this module (``.<name>.knotwork-tmp-<pid>-*``, ``.<name>.knotwork-old-<pid>-*``) whose
    process is gone are touched. Returns what was removed or restored.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        return []
    touched = []
    for entry in sorted(parent.glob(f".{path.name}.knotwork-*")):
        parts = entry.name[len(path.name) + 2 :].split("-")  # knotwork, tmp|old, pid, random
        if len(parts) < 4 or parts[0] != "knotwork" or parts[1] not in ("tmp", "old") or not parts[2].isdigit():
            continue
        if _pid_alive(int(parts[2])):
            continue
        if parts[1] == "old" and not (path.exists() or path.is_symlink()):
            os.replace(entry, path)  # the replacement never arrived: the previous output comes back
        elif entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        touched.append(entry)
    return touched


def _temp_name(path: Path, kind: str) -> str:
    return f".{path.name}.{kind}-{os.getpid()}-"


def _replace(tmp: Path, path: Path) -> None:
    """Rename ``tmp`` onto ``path``; a previous output is moved aside first and deleted only afterwards."""
    if path.exists():
        old = Path(tempfile.mkdtemp(prefix=_temp_name(path, _OLD), dir=path.parent))
        old.rmdir()
        os.replace(path, old)
        os.replace(tmp, path)
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)
    else:
        os.replace(tmp, path)


def _mkparent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{path}: cannot create the output's folder {path.parent} ({err.strerror})") from None
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise OutputError(f"{path}: the folder {path.parent} is not writable")


# ------------------------------------------------------------------------------------------------ writing


@contextmanager
def atomic_dir(
    path: PathLike,
    *,
    inputs: Iterable[PathLike] = (),
    force: bool = False,
    report: Mapping[str, Any] | None = None,
) -> Iterator[Path]:
    """Yield a temporary folder to fill; on success mark it as knotwork's and rename it onto ``path``.

    On any exception (a KeyboardInterrupt included) the temporary folder is removed and ``path`` is untouched.
    ``report`` is stored in the marker next to the list of files written.
    """
    path = Path(path)
    clean_leftovers(path)
    check_output(path, inputs=inputs, force=force, folder=True)
    _mkparent(path)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_name(path, _TMP), dir=path.parent))
    try:
        os.chmod(tmp, umask_mode(0o777))
        yield tmp
        write_marker(tmp, report)
        _fault_point("atomic_dir:before-rename")
        _replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_marker(folder: PathLike, report: Mapping[str, Any] | None = None, *, files: Iterable[str] | None = None) -> None:
    """Write the marker that makes ``folder`` a knotwork output; it lists every file now in the folder."""
    folder = Path(folder)
    if files is None:
        files = sorted(
            rel for r, _d, fs in os.walk(folder) for f in fs
            if (rel := os.path.relpath(os.path.join(r, f), folder)) != MARKER  # nested outputs' markers count
        )
    from knotwork._provenance import provenance

    body = {"knotwork": provenance(), "files": list(files), **({"report": dict(report)} if report else {})}
    _write_tmp_then_rename(folder / MARKER, json.dumps(body, indent=2, default=str).encode("utf-8"))


@contextmanager
def atomic_file(
    path: PathLike,
    *,
    inputs: Iterable[PathLike] = (),
    force: bool = False,
    report: Mapping[str, Any] | None = None,
) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write; on success rename it onto ``path``.

    A report ``<name>.knotwork.json`` is written beside the file (``report`` plus provenance and the file's
    sha256), unless the output is a JSON object file: then it must carry a top-level ``"knotwork"`` key itself
    (see :func:`write_json`), and ``report`` must be None.
    """
    path = Path(path)
    clean_leftovers(path)
    check_output(path, inputs=inputs, force=force, folder=False)
    _mkparent(path)
    fd, name = tempfile.mkstemp(prefix=_temp_name(path, _TMP), dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, umask_mode(0o666))
        if not _self_identifying(tmp, path):
            from knotwork._provenance import provenance

            body = {"knotwork": provenance(), "file": path.name, "sha256": sha256_file(tmp), **(dict(report or {}))}
            _write_tmp_then_rename(report_path(path), json.dumps(body, indent=2, default=str).encode("utf-8"))
        _fault_point("atomic_file:before-rename")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _self_identifying(tmp: Path, path: Path) -> bool:
    if path.suffix != ".json":
        return False
    try:
        data = json.loads(tmp.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and isinstance(data.get("knotwork"), dict)


def _write_tmp_then_rename(path: Path, data: bytes) -> None:
    fd, name = tempfile.mkstemp(prefix=_temp_name(path, _TMP), dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(name, umask_mode(0o666))
        os.replace(name, path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise


def write_bytes(path: PathLike, data: bytes, *, inputs: Iterable[PathLike] = (), force: bool = False,
                report: Mapping[str, Any] | None = None) -> Path:
    """Write ``data`` to ``path`` atomically under the output rules (a report beside it)."""
    with atomic_file(path, inputs=inputs, force=force, report=report) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: PathLike, text: str, *, inputs: Iterable[PathLike] = (), force: bool = False,
               report: Mapping[str, Any] | None = None) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically under the output rules (a report beside it)."""
    return write_bytes(path, text.encode("utf-8"), inputs=inputs, force=force, report=report)


def json_document(obj: Any) -> Any:
    """``obj`` with a top-level ``"knotwork"`` provenance key when it is a mapping (what marks it as ours)."""
    if isinstance(obj, Mapping):
        from knotwork._provenance import provenance

        return {**obj, "knotwork": obj.get("knotwork") or provenance()}
    return obj


def write_json(path: PathLike, obj: Any, *, inputs: Iterable[PathLike] = (), force: bool = False) -> Path:
    """Write ``obj`` as indented JSON, atomically; a mapping gets a ``"knotwork"`` provenance key."""
    text = json.dumps(json_document(obj), indent=2, default=str) + "\n"
    return write_bytes(path, text.encode("utf-8"), inputs=inputs, force=force)


def write_scratch(path: PathLike, data: bytes | str) -> None:
    """Atomically write a file inside a folder the caller already owns (a cache, a resumable output folder).

    No output rules apply: the caller has checked the folder. The file never appears half-written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_tmp_then_rename(path, data.encode("utf-8") if isinstance(data, str) else data)


def resumable_dir(path: PathLike, *, inputs: Iterable[PathLike] = (), report: Mapping[str, Any] | None = None) -> Path:
    """Open an output folder that is filled file by file and may be resumed after a kill (``harmonize apply``).

    A new folder is created with its marker at once, so a rerun recognises it; an existing knotwork output folder
    (or an empty folder) is reused. Files go in with :func:`write_scratch`, each atomically, and
    :func:`write_marker` is called again at the end to list them. Anything else is refused with
    :class:`~knotwork._errors.OutputError`.
    """
    path = Path(path)
    clean_leftovers(path)
    if path.is_dir() and not path.is_symlink() and (read_marker(path) is not None or not any(path.iterdir())):
        _check_inputs(path, inputs)
        if read_marker(path) is None:
            write_marker(path, report, files=[])
        return path
    check_output(path, inputs=inputs, force=False, folder=True)
    _mkparent(path)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_name(path, _TMP), dir=path.parent))
    os.chmod(tmp, umask_mode(0o777))
    write_marker(tmp, report, files=[])
    os.replace(tmp, path)
    return path


# ------------------------------------------------------------------------------------------------ reading


def open_npz(path: PathLike, *, error: type[Exception], expected: str = ""):
    """An .npz archive opened without unpickling (use it as a context manager).

    Refused with ``error`` naming the file when it is unreadable or holds a single .npy array; ``expected`` (e.g.
    "with x_train, y_train") completes that message.
    """
    import zipfile

    import numpy as np

    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        lines = [ln for ln in str(err).splitlines() if ln.strip()]
        reason = f"{type(err).__name__}: {lines[0].strip()}" if lines else type(err).__name__
        if "pickled" in str(err):  # numpy's fallback for a file that is neither .npy nor .npz
            reason = "neither .npz nor .npy data; pickles are never loaded"
        raise error(f"{path}: not a readable .npz archive ({reason})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise error(f"{path}: holds a single .npy array, not an .npz archive{(' ' + expected) if expected else ''}")
    return archive


# ----------------------------------------------------------------------------------------- test-only faults

_FAULT_ENV = "KNOTWORK_TEST_FAULT"


def _fault_point(name: str) -> None:
    """Test hook: when ``KNOTWORK_TEST_FAULT`` names this point, the process dies here as if killed (SIGKILL).

    Used only by the kill tests, which run a command as a subprocess and check that a rerun recovers.
    """
    if os.environ.get(_FAULT_ENV) == name:
        os.kill(os.getpid(), 9)


fault_point = _fault_point
