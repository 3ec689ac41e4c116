"""What every relations results page must name: machine, package version, git commit; plus atomic writes.

Reuses the shared benchmark helpers; only the machine line differs (relations pages do not need torch).
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, git_commit, write_atomic  # noqa: E402

__all__ = ["ROOT", "git_commit", "machine", "version", "write_atomic"]


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{cpu}, {os.cpu_count()} cores shared with other jobs (load varied), {mem:.0f} GiB RAM; "
        f"Python {platform.python_version()}"
    )


def version() -> str:
    import knotwork

    return knotwork.__version__
