"""Helpers shared by benchmark scripts: the provenance header of a results page, one result record per unit
(stamped with a code fingerprint, committed under benchmarks/results/<study>/), peak memory of a child process."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from knotwork._io import write_scratch
from knotwork._provenance import code_fingerprint, commit_label
from knotwork._provenance import machine as _machine

ROOT = Path(__file__).resolve().parents[1]


def machine() -> str:
    """CPU model, cores, memory, and versions: what a results page must name."""
    import torch

    m = _machine()
    return (
        f"{m['processor']}, {m['cpus']} cores, {m.get('memory_gib', 0):.0f} GiB RAM; Python {m['python']}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads)"
    )


def git_commit() -> str:
    """The commit for a results page: ``abc1234`` or ``abc1234+dirty`` (knotwork._provenance's one meaning)."""
    return commit_label(ROOT)


def fingerprint(script: str | Path) -> str:
    """The code fingerprint of a study: a hash of ``src/knotwork`` and the study script."""
    return code_fingerprint(script)


# ------------------------------------------------------------------------------ result records (one per unit)

RESULTS = ROOT / "benchmarks" / "results"


def record_path(study: str, unit: str, *, root: Path | None = None) -> Path:
    """``benchmarks/results/<study>/<unit>.json``: one small committed record per unit (seed, pair, method).

    ``root`` replaces ``benchmarks/results`` (a smoke test writes its records into a temporary folder).
    """
    safe = "".join(c if c.isalnum() or c in "-_.=" else "_" for c in unit)
    return (RESULTS if root is None else Path(root)) / study / f"{safe}.json"


def scoped_fingerprint(parts: tuple[str, ...], *scripts: str | Path) -> str:
    """A hash of part of ``src/knotwork`` (sub-packages or glob patterns, e.g. ``("merge", "_*.py", "lora/train.py")``) and
    `scripts`: the code that computes a study's numbers.

    Narrower than :func:`fingerprint`, so records made before and after an unrelated change elsewhere in
    ``src/knotwork`` (another capability, the CLI) or in a page's wording still compare equal.
    """
    import hashlib

    from knotwork._provenance import PACKAGE_DIR

    files: set[Path] = set()
    for part in parts:
        files |= set((PACKAGE_DIR / part).rglob("*.py")) if (PACKAGE_DIR / part).is_dir() else set(
            PACKAGE_DIR.glob(part))
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(path.relative_to(PACKAGE_DIR).as_posix().encode() + b"\0" + path.read_bytes())
    for script in scripts:
        digest.update(b"script:" + Path(script).name.encode() + b"\0" + Path(script).read_bytes())
    return digest.hexdigest()[:16]


def write_record(study: str, unit: str, data: dict[str, Any], *, script: str | Path,
                 root: Path | None = None, code_used: str | None = None) -> Path:
    """Write one unit's result record, stamped with the code fingerprint, commit, machine and time.

    Records hold numbers, never weights. A study skips a unit whose record exists (resumable across sessions).
    """
    path = record_path(study, unit, root=root)
    body = {
        "study": study,
        "unit": unit,
        "fingerprint": fingerprint(script),
        **({"code_used": code_used} if code_used else {}),
        "commit": git_commit(),
        "machine": machine(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "data": data,
    }
    write_scratch(path, json.dumps(body, indent=2, default=str) + "\n")
    return path


def load_records(study: str, *, root: Path | None = None) -> dict[str, dict[str, Any]]:
    """Every record of ``study`` (under ``root``, default ``benchmarks/results``), keyed by unit."""
    folder = (RESULTS if root is None else Path(root)) / study
    out = {}
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        body = json.loads(path.read_text(encoding="utf-8"))
        out[body["unit"]] = body
    return out


def fingerprint_line(records: dict[str, dict[str, Any]], *, script: str | Path,
                     code_used_now: str | None = None) -> str:
    """One line for a results page: do all records share one fingerprint, and is it today's code?

    `code_used_now`: the study's current `scoped_fingerprint` (the code that computes its numbers). When the records'
    fingerprint is not today's, the line says whether their ``code_used`` still equals it, i.e. whether only code
    the numbers do not depend on (a page's wording, another capability) changed since.
    """
    prints: dict[str, list[str]] = {}
    for unit, rec in records.items():
        prints.setdefault(rec["fingerprint"], []).append(unit)
    now = fingerprint(script)
    if not prints:
        return "- Code fingerprint: no records yet."
    # Every record's code_used, or None when some record predates the field (then no claim is made about it).
    used = sorted({rec.get("code_used") for rec in records.values()}) \
        if all(rec.get("code_used") for rec in records.values()) else None
    if len(prints) == 1:
        (fp,) = prints
        same = "the current code" if fp == now else f"not the current code ({now})"
        line = f"- Code fingerprint: all {len(records)} records share `{fp}` ({same})."
        if fp != now and code_used_now is not None and used == [code_used_now]:
            line += (f" The code that computes the numbers (the records' `code_used`, `{code_used_now}`) is "
                     "unchanged, so the difference lies in code these numbers do not depend on.")
        elif fp != now and code_used_now is not None and used is not None:
            line += (f" The code that computes the numbers changed since (records' `code_used` "
                     f"{', '.join(f'`{u}`' for u in used)}, now `{code_used_now}`).")
        return line
    parts = "; ".join(f"`{fp}`: {len(units)} ({', '.join(sorted(units)[:4])}{', ...' if len(units) > 4 else ''})"
                      for fp, units in sorted(prints.items(), key=lambda kv: -len(kv[1])))
    line = f"- Code fingerprint: records differ ({parts}); current code `{now}`."
    if used is not None:
        if len(used) == 1:
            line += (" The code that computed each unit (the record's `code_used`) has one "
                     f"hash in all records, `{used[0]}`"
                     + (" (also the current code's)" if code_used_now == used[0] else "")
                     + ", so the difference lies in code these numbers do not depend on.")
        else:
            line += (f" The code that computed the units (the records' `code_used`) has "
                     f"{len(used)} different hashes: compare the records before comparing their numbers.")
    return line


def header(title: str, *, command: str, script: str | Path, records: dict[str, dict[str, Any]] | None = None,
           data: str = "", extra: list[str] | None = None, code_used_now: str | None = None) -> str:
    """The provenance header every results page opens with: command, data, machine, version, commit, fingerprint."""
    from knotwork import __version__

    lines = [
        f"# {title}",
        "",
        f"- Command: `{command}`",
        *([f"- Data: {data}"] if data else []),
        f"- Machine: {machine()}",
        f"- Package: knotwork {__version__}, commit `{git_commit()}`",
    ]
    if records is not None:
        lines.append(fingerprint_line(records, script=script, code_used_now=code_used_now))
    lines += list(extra or [])
    return "\n".join(lines) + "\n"


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
    """Write a results page or record atomically (benchmarks own docs/results and benchmarks/results)."""
    write_scratch(path, text)


def paired_differences(diffs: Any) -> dict[str, float]:
    """Paired comparison from per-pair differences ``a - b``: n, mean, sample sd, t, the 95 % t interval, the
    two-sided paired-t p (``p_t``) and Wilcoxon signed-rank p (``p_w``), wins / ties / losses.

    Undefined values are NaN: sd below two pairs; t and ``p_t`` when every difference is equal (the interval is
    then the single point ``mean``); ``p_w`` below two pairs or when every difference is zero.
    """
    import numpy as np
    from scipy import stats

    d = np.asarray(diffs, dtype=float)
    n = len(d)
    nan = float("nan")
    out = {"n": n, "mean": float(d.mean()) if n else nan, "sd": nan, "t": nan, "lo": nan, "hi": nan,
           "p_t": nan, "p_w": nan, "wins": int((d > 0).sum()), "ties": int((d == 0).sum()),
           "losses": int((d < 0).sum())}
    if n > 1:
        sd = float(d.std(ddof=1))
        out.update(sd=sd, lo=out["mean"], hi=out["mean"])
        if sd > 0:
            se = sd / float(np.sqrt(n))
            half = float(stats.t.ppf(0.975, n - 1)) * se
            t = out["mean"] / se
            out.update(t=t, lo=out["mean"] - half, hi=out["mean"] + half, p_t=float(2 * stats.t.sf(abs(t), n - 1)))
        if np.any(d != 0):
            out["p_w"] = float(stats.wilcoxon(d).pvalue)
    return out


def holm(pvalues: Any) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given: the i-th smallest of m times (m - i + 1), kept
    non-decreasing in that order and capped at 1. A NaN p counts as 1 for the others and stays NaN."""
    import numpy as np

    raw = [float(x) for x in pvalues]
    p = [1.0 if np.isnan(x) else x for x in raw]
    adjusted, running = [1.0] * len(p), 0.0
    for rank, i in enumerate(np.argsort(p, kind="stable")):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        adjusted[i] = running
    return [float("nan") if np.isnan(x) else a for x, a in zip(raw, adjusted, strict=True)]


def run_main(main: Callable[[], int]) -> None:
    """A study script's entry point: exit with `main()`'s code, or print a KnotworkError as one line and exit with
    its code (never a traceback for bad input)."""
    from knotwork._errors import KnotworkError

    try:
        sys.exit(main())
    except KnotworkError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)


def save_state(path: Path, obj: dict) -> None:
    """``torch.save`` a study's cache state (weights, optimizer, random states) atomically: a killed run leaves the
    previous state, never half of one. Read it back with ``torch.load(path, weights_only=True)``."""
    import io

    import torch

    from knotwork._io import write_scratch

    buf = io.BytesIO()
    torch.save(obj, buf)
    write_scratch(path, buf.getvalue())
