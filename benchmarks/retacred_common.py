"""What every relations results page must name: machine, package version, git commit; plus atomic writes.

Reuses the shared benchmark helpers; only the machine line differs (relations pages do not need torch).
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, cpu_name, git_commit, memory_gib, write_atomic  # noqa: E402

__all__ = ["ROOT", "git_commit", "machine", "version", "write_atomic"]


def machine() -> str:
    return (
        f"{cpu_name()}, {os.cpu_count()} cores shared with other jobs (load varied), {memory_gib():.0f} GiB RAM; "
        f"Python {platform.python_version()}"
    )


def version() -> str:
    import knotwork

    return knotwork.__version__
