"""Provenance from one place: package version, git commit and whether the code was clean, machine, command,
and the code fingerprint that makes result records from different sessions comparable.

"Dirty" has one meaning everywhere: tracked files under ``src/`` or ``benchmarks/`` (results records excluded)
differ from the commit, or untracked, non-ignored files exist there. Outputs of the run itself never count.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

#: The checkout this package was imported from (``<root>/src/knotwork``), when it is one.
PACKAGE_DIR = Path(__file__).resolve().parent
SOURCE_ROOT = PACKAGE_DIR.parent.parent
_CODE_PATHS = ("src", "benchmarks", ":(exclude)benchmarks/results")


def _git(*args: str, root: Path = SOURCE_ROOT) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


@functools.lru_cache(maxsize=4)
def git_state(root: Path = SOURCE_ROOT) -> dict[str, Any]:
    """``{"commit": full sha or None, "dirty": bool or None}`` for the checkout at ``root``.

    ``commit`` is None outside a git checkout (an installed wheel); ``dirty`` follows the module's one meaning.
    Cached per process: a run's code does not change while it runs.
    """
    if not (root / ".git").exists():
        return {"commit": None, "dirty": None}
    commit = _git("rev-parse", "HEAD", root=root)
    status = _git("status", "--porcelain", "--", *_CODE_PATHS, root=root)
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def commit_label(root: Path = SOURCE_ROOT) -> str:
    """A short commit for a results page: ``abc1234``, ``abc1234+dirty``, or ``unknown``."""
    state = git_state(root)
    if not state["commit"]:
        return "unknown"
    return state["commit"][:12] + ("+dirty" if state["dirty"] else "")


def machine() -> dict[str, Any]:
    """The machine a result was measured on: platform, processor, cores, memory, Python and torch versions."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": _cpu_model(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        info["memory_gib"] = round(pages * size / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    torch = sys.modules.get("torch")
    if torch is not None:
        info["torch"] = torch.__version__
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance(*, command: Iterable[str] | None = None) -> dict[str, Any]:
    """Version, commit, clean or not, machine, command line and time, for every report and result record."""
    from knotwork import __version__

    argv = list(command) if command is not None else [Path(sys.argv[0]).name, *sys.argv[1:]]
    return {
        "version": __version__,
        **git_state(),
        "machine": machine(),
        "command": shlex.join(argv),
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def code_fingerprint(*scripts: str | os.PathLike[str], package_dir: Path = PACKAGE_DIR) -> str:
    """A short sha256 over the library's source (every ``*.py`` under ``src/knotwork``) and the given scripts.

    Content-based, so records made in different sessions, on different machines, or outside git compare equal
    exactly when the code that made them was the same.
    """
    digest = hashlib.sha256()
    files = sorted(package_dir.rglob("*.py"))
    for path in files:
        digest.update(path.relative_to(package_dir).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
    for script in scripts:
        path = Path(script)
        digest.update(b"script:" + path.name.encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]
