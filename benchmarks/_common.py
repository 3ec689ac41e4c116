"""Helpers shared by benchmark scripts: machine description, peak memory of a child process, atomic writes."""

from __future__ import annotations

import multiprocessing as mp
import os
import platform
import resource
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (or platform's guess)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def memory_gib() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


def machine() -> str:
    """CPU model, cores, memory, and versions: what a results page must name."""
    import torch

    return (
        f"{cpu_name()}, {os.cpu_count()} cores, {memory_gib():.0f} GiB RAM; Python {platform.python_version()}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads)"
    )


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True)
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _child(fn: Callable[..., Any], args: tuple, queue: mp.Queue) -> None:
    setup = args[0]() if args and callable(args[0]) else None
    before = _rss_mib()
    start = time.perf_counter()
    value = fn(setup) if setup is not None else fn()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux
    if hasattr(value, "numpy"):  # torch tensors would travel as shared-memory handles that die with this process
        value = value.detach().numpy()
    queue.put((seconds, max(0.0, peak - before), value))


def measure(fn: Callable[..., Any], setup: Callable[[], Any] | None = None) -> tuple[float, float, Any]:
    """Run ``fn(setup())`` in a fresh process: (seconds, peak MiB above the RSS after setup, return value)."""
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(fn, (setup,) if setup else (), queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
