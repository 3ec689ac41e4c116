"""Apply a saved harmonizer to a folder of volumes: resumable, parallel (processes or Dask), per-file errors.

This is the I/O layer behind ``knotwork harmonize apply``; the algorithms stay in the estimators.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from knotwork.harmonize._checks import HarmonizeError
from knotwork.harmonize.io import (
    harmonizer_from_dict,
    list_volumes,
    read_volume,
    volume_suffix,
    write_volume,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ApplyJob:
    """One volume to harmonize: input, output and optional statistics mask."""

    src: Path
    dst: Path
    mask: Path | None = None


@dataclass(frozen=True)
class ApplyResult:
    """What happened to one job: ``status`` is "done", "skipped" (output existed) or "failed"."""

    src: Path
    dst: Path
    status: str
    error: str | None = None
    seconds: float = 0.0


def plan_apply(in_dir: Path, out_dir: Path, *, mask_dir: Path | None = None) -> list[ApplyJob]:
    """One job per volume in ``in_dir``; masks are looked up by the same file name in ``mask_dir``.

    A missing mask is not checked here: the job fails with a message naming it, the others go on.
    """
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    if in_dir.resolve() == out_dir.resolve():
        raise HarmonizeError(f"OUT_DIR {out_dir} is IN_DIR; choose another folder so inputs are never overwritten")
    srcs = list_volumes(in_dir)
    if not srcs:
        raise HarmonizeError(f"{in_dir} holds no volume files (.nii, .nii.gz, .nrrd, .mha, .mhd)")
    return [ApplyJob(s, out_dir / s.name, None if mask_dir is None else Path(mask_dir) / s.name) for s in srcs]


def apply_one(job: ApplyJob, model: dict[str, Any], *, dtype: str = "float32", plot_dir: Path | None = None,
              force: bool = False) -> ApplyResult:
    """Read, check, transform and atomically write one volume; never raises, reports instead.

    ``model`` is the dict form of a fitted harmonizer (see ``io.harmonizer_to_dict``), small and
    picklable, so it can travel to worker processes and Dask workers.
    """
    t0 = time.perf_counter()
    if job.dst.exists() and not force:
        return ApplyResult(job.src, job.dst, "skipped")
    try:
        harmonizer = harmonizer_from_dict(model)
        vol = read_volume(job.src)
        mask = None
        if job.mask is not None:
            if not job.mask.exists():
                raise HarmonizeError(f"mask {job.mask} not found")
            mask = read_volume(job.mask).data
            if mask.shape != vol.data.shape:
                raise HarmonizeError(f"mask {job.mask.name} has shape {mask.shape} but the volume has {vol.data.shape}")
        out = harmonizer.transform(vol.data, mask)
        job.dst.parent.mkdir(parents=True, exist_ok=True)
        write_volume(job.dst, out, vol, dtype=dtype)
        if plot_dir is not None:
            from knotwork.harmonize.plots import save_before_after

            save_before_after(vol.data, out, Path(plot_dir) / (job.src.name[: -len(volume_suffix(job.src))] + ".png"),
                              title=job.src.name)
    except Exception as exc:  # reported per file; the batch goes on
        msg = str(exc) if isinstance(exc, HarmonizeError) else f"{type(exc).__name__}: {exc}"
        if not msg.startswith(str(job.src)):  # every report starts with the input's path, once
            msg = f"{job.src}: {msg}"
        return ApplyResult(job.src, job.dst, "failed", msg, time.perf_counter() - t0)
    return ApplyResult(job.src, job.dst, "done", None, time.perf_counter() - t0)


def run_apply(
    jobs: Iterable[ApplyJob],
    model: dict[str, Any],
    *,
    workers: int = 1,
    scheduler: str | None = None,
    dtype: str = "float32",
    plot_dir: Path | None = None,
    force: bool = False,
    callback: Callable[[ApplyResult], None] | None = None,
) -> list[ApplyResult]:
    """Run ``apply_one`` over ``jobs`` in this process, a process pool, or a Dask cluster.

    Parameters
    ----------
    workers : int, default 1
        Local worker processes (1 runs in this process). Ignored when ``scheduler`` is given.
    scheduler : str, optional
        Address of a Dask distributed scheduler (``tcp://host:8786``); the same jobs are submitted
        there, so resumability and the failure report are identical.
    callback : callable, optional
        Called with each result as it finishes (the CLI advances its progress bar here).

    Returns
    -------
    list of ApplyResult, in job order.
    """
    jobs = list(jobs)
    kwargs = {"dtype": dtype, "plot_dir": plot_dir, "force": force}
    results: dict[int, ApplyResult] = {}

    def done(i: int, r: ApplyResult) -> None:
        results[i] = r
        if r.status == "failed":
            logger.warning("%s", r.error)
        if callback is not None:
            callback(r)

    if scheduler is not None:
        from dask.distributed import Client, as_completed

        with Client(scheduler) as client:
            futures = {client.submit(apply_one, j, model, pure=False, **kwargs): i for i, j in enumerate(jobs)}
            for fut in as_completed(futures):
                done(futures[fut], fut.result())
    elif workers > 1:
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(apply_one, j, model, **kwargs): i for i, j in enumerate(jobs)}
            for fut in as_completed(futures):
                done(futures[fut], fut.result())
    else:
        for i, j in enumerate(jobs):
            done(i, apply_one(j, model, **kwargs))
    return [results[i] for i in range(len(jobs))]


def load_references(paths: list[Path], mask_paths: list[Path | None]) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
    """Read reference volumes and masks for ``fit``; the first unreadable or mismatched file raises."""
    vols, masks = [], []
    for p, mp in zip(paths, mask_paths, strict=True):
        v = read_volume(p).data
        m = None
        if mp is not None:
            if not mp.exists():
                raise HarmonizeError(f"mask {mp} for reference {p.name} not found")
            m = read_volume(mp).data
            if m.shape != v.shape:
                raise HarmonizeError(f"mask {mp.name} has shape {m.shape} but reference {p.name} has {v.shape}")
        vols.append(v)
        masks.append(m)
    return vols, masks
