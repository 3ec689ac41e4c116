"""Fit on a folder of reference volumes; harmonize one volume of a batch; run a batch locally or on Dask.

This is the I/O layer behind ``knotwork harmonize fit`` and ``apply``; the algorithms stay in the estimators.
Every function that reads a file names it in its errors. :mod:`knotwork.harmonize.resume` drives a whole
output folder (checks first, resumable, atomic).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from knotwork._io import sha256_file
from knotwork.harmonize._checks import HarmonizeError
from knotwork.harmonize.base import Harmonizer, get_harmonizer
from knotwork.harmonize.io import (
    Volume,
    harmonizer_from_dict,
    list_volumes,
    read_volume,
    volume_suffix,
    write_volume,
)

logger = logging.getLogger(__name__)

#: Output voxel types of ``harmonize apply --dtype``.
DTYPES = ("float32", "input")


@dataclass(frozen=True)
class ApplyJob:
    """One volume to harmonize: input, output and optional statistics mask."""

    src: Path
    dst: Path
    mask: Path | None = None


@dataclass(frozen=True)
class ApplyResult:
    """What happened to one job: ``status`` is "done", "skipped" (complete output existed) or "failed".

    For "done": ``size`` and ``sha256`` of the written volume and ``plot``, the histogram file's name
    relative to the output folder when one was drawn.
    """

    src: Path
    dst: Path
    status: str
    error: str | None = None
    seconds: float = 0.0
    size: int | None = None
    sha256: str | None = None
    plot: str | None = None


def plan_apply(in_dir: Path, out_dir: Path, *, mask_dir: Path | None = None) -> list[ApplyJob]:
    """One job per volume in ``in_dir``; masks are looked up by the same file name in ``mask_dir``.

    Raises
    ------
    HarmonizeError
        When ``in_dir`` or ``mask_dir`` is not a folder, or ``in_dir`` holds no volume.
    """
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    srcs = list_volumes(in_dir)
    if not srcs:
        raise HarmonizeError(f"{in_dir} holds no volume files (.nii, .nii.gz, .nrrd, .nhdr, .mha, .mhd)")
    if mask_dir is not None and not Path(mask_dir).is_dir():
        raise HarmonizeError(f"{mask_dir}: the mask folder is not a folder")
    return [ApplyJob(s, out_dir / s.name, None if mask_dir is None else Path(mask_dir) / s.name) for s in srcs]


def read_checked(src: Path, mask_path: Path | None, harmonizer: Harmonizer) -> tuple[Volume, np.ndarray | None]:
    """Read a volume and its mask and check that ``harmonizer`` can use them (see ``Harmonizer.validate``).

    Raises
    ------
    HarmonizeError
        Naming the volume or the mask file and what is wrong with it.
    """
    vol = read_volume(src)
    mask = None
    if mask_path is not None:
        if not Path(mask_path).is_file():
            raise HarmonizeError(f"{mask_path}: the mask of {Path(src).name} does not exist")
        mask = read_volume(mask_path).data
        if mask.shape != vol.data.shape:
            raise HarmonizeError(f"{mask_path}: the mask has shape {mask.shape} but the volume {src} has shape "
                                 f"{vol.data.shape}")
    harmonizer.validate(vol.data, mask, name=str(src))
    return vol, mask


def _failure(src: Path, exc: BaseException) -> str:
    msg = str(exc) if isinstance(exc, HarmonizeError) else f"{type(exc).__name__}: {exc}"
    return msg if str(src) in msg else f"{src}: {msg}"  # every report names the input once


def check_one(job: ApplyJob, model: dict[str, Any]) -> str | None:
    """The reason ``job`` cannot be harmonized, or None; reads the volume but writes nothing. Never raises."""
    try:
        read_checked(job.src, job.mask, harmonizer_from_dict(model))
    except Exception as exc:  # noqa: BLE001 - reported per file, the batch checks the others
        return _failure(job.src, exc)
    return None


def plot_name(job: ApplyJob) -> str:
    """Where ``--plot`` draws a job's histograms, relative to the output folder."""
    return f"plots/{job.src.name[: -len(volume_suffix(job.src) or '')]}.png"


def apply_one(job: ApplyJob, model: dict[str, Any], *, dtype: str = "float32", plot: bool = False) -> ApplyResult:
    """Read, check, transform and atomically write one volume; never raises, reports instead.

    ``model`` is the dict form of a fitted harmonizer (see ``io.harmonizer_to_dict``), small and
    picklable, so it can travel to worker processes and Dask workers.
    """
    t0 = time.perf_counter()
    try:
        harmonizer = harmonizer_from_dict(model)
        vol, mask = read_checked(job.src, job.mask, harmonizer)
        out = harmonizer.transform(vol.data, mask)
        write_volume(job.dst, out, vol, dtype=dtype)
        drawn = None
        if plot:
            from knotwork.harmonize.plots import save_before_after

            drawn = plot_name(job)
            save_before_after(vol.data, out, job.dst.parent / drawn, title=job.src.name)
        size, digest = job.dst.stat().st_size, sha256_file(job.dst)
    except Exception as exc:  # noqa: BLE001 - reported per file; the batch goes on
        return ApplyResult(job.src, job.dst, "failed", _failure(job.src, exc), time.perf_counter() - t0)
    return ApplyResult(job.src, job.dst, "done", None, time.perf_counter() - t0, size, digest, drawn)


# ------------------------------------------------------------------------------------------- executors


@contextmanager
def dask_client(scheduler: str | None, *, timeout: float = 5.0) -> Iterator[Any]:
    """:func:`knotwork._scheduler.dask_client` with harmonization's error type."""
    from knotwork._scheduler import dask_client as client_for

    with client_for(scheduler, timeout=timeout, error=HarmonizeError) as client:
        yield client


def run_map(fn: Callable[..., Any], items: Sequence[Any], *args: Any, workers: int = 1, client: Any = None,
            **kwargs: Any) -> Iterator[tuple[int, Any]]:
    """Yield ``(i, fn(items[i], *args, **kwargs))`` as they finish: here, in ``workers`` processes, or on Dask.

    A call that raises (a lost worker, a broken pool) yields the exception as its value.
    """
    if client is not None:
        from distributed import as_completed

        futures = {client.submit(fn, item, *args, pure=False, **kwargs): i for i, item in enumerate(items)}
        for fut in as_completed(futures):
            try:
                yield futures[fut], fut.result()
            except Exception as exc:  # noqa: BLE001 - a lost worker is one item's failure
                yield futures[fut], exc
    elif workers > 1 and len(items) > 1:
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(fn, item, *args, **kwargs): i for i, item in enumerate(items)}
            for fut in as_completed(futures):
                try:
                    yield futures[fut], fut.result()
                except Exception as exc:  # noqa: BLE001 - a crashed process is one item's failure
                    yield futures[fut], exc
    else:
        for i, item in enumerate(items):
            yield i, fn(item, *args, **kwargs)


# ------------------------------------------------------------------------------------------------- fit


def load_references(
    paths: Sequence[Path], mask_paths: Sequence[Path | None], harmonizer: Harmonizer
) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
    """Read and check reference volumes and masks for ``fit``; the first unusable file raises, named.

    This holds every volume at once; ``fit_folder`` reads them one at a time instead.
    """
    vols, masks = [], []
    for p, mp in zip(paths, mask_paths, strict=True):
        vol, mask = read_checked(p, mp, harmonizer)
        vols.append(vol.data)
        masks.append(mask)
    return vols, masks


def _volume_statistics_task(path: Path, mask_path: Path | None, method: str, params: dict[str, Any]
                            ) -> dict[str, np.ndarray]:
    """Read and check one reference volume and return its small statistics (runs on a Dask worker)."""
    harmonizer = get_harmonizer(method, **params)
    vol, mask = read_checked(path, mask_path, harmonizer)
    return harmonizer.volume_statistics(vol.data, mask, name=str(path))


def _statistics_job(job: tuple[Path, Path | None], *, model: tuple[str, dict[str, Any]]) -> dict[str, np.ndarray]:
    return _volume_statistics_task(*job, *model)


def _read_reference_task(path: Path, mask_path: Path | None, method: str, params: dict[str, Any]
                         ) -> tuple[np.ndarray, np.ndarray | None]:
    """Read and check one reference volume and return it with its mask (runs on a Dask worker)."""
    vol, mask = read_checked(path, mask_path, get_harmonizer(method, **params))
    return vol.data, mask


def fit_folder(ref_dir: Path, method: str, *, mask_dir: Path | None = None, scheduler: str | None = None,
               **params: Any) -> tuple[Harmonizer, list[Path]]:
    """Fit ``method`` on every volume in ``ref_dir`` (statistics inside the same-named masks in ``mask_dir``).

    The fit is two-step (``Harmonizer.volume_statistics`` per volume, then ``fit_from_statistics``), so only one
    reference volume is held at a time. With ``scheduler`` (a Dask scheduler address, or ``local:N`` for a local
    cluster of N workers) each volume is read and summarized on a Dask worker, from its path (remote workers need
    the same files at the same paths); the result equals the in-process fit. Parameters are checked before any
    volume is read.

    Returns
    -------
    (harmonizer, paths): the fitted harmonizer and the reference files it saw.

    Raises
    ------
    HarmonizeError
        Naming the parameter, folder, volume or mask that cannot be used.
    RunError
        When the scheduler cannot be reached.
    """
    harmonizer = get_harmonizer(method, **params)
    paths = list_volumes(ref_dir)
    if not paths:
        raise HarmonizeError(f"{ref_dir} holds no volume files (.nii, .nii.gz, .nrrd, .nhdr, .mha, .mhd)")
    if mask_dir is not None and not Path(mask_dir).is_dir():
        raise HarmonizeError(f"{mask_dir}: the mask folder is not a folder")
    masks = [None if mask_dir is None else Path(mask_dir) / p.name for p in paths]
    model = (method, harmonizer.get_params())
    try:
        if scheduler is None:
            stats = [_volume_statistics_task(p, mp, *model) for p, mp in zip(paths, masks, strict=True)]
            harmonizer.fit_from_statistics(stats, lambda i: _read_reference_task(paths[i], masks[i], *model))
        else:
            from knotwork._scheduler import ordered_map

            with dask_client(scheduler) as client:
                jobs = [(p.absolute(), None if mp is None else mp.absolute()) for p, mp in zip(paths, masks, strict=True)]
                stats = list(ordered_map(client)(partial(_statistics_job, model=model), jobs))
                harmonizer.fit_from_statistics(
                    stats, lambda i: client.submit(_read_reference_task, *jobs[i], *model, pure=False).result())
    except HarmonizeError as exc:  # map "volumes[i]" back to the file name
        msg = str(exc)
        for i in reversed(range(len(paths))):  # volumes[12] before volumes[1]
            msg = msg.replace(f"volumes[{i}]", str(paths[i]))
        raise HarmonizeError(msg) from None
    return harmonizer, paths
