"""Harmonize a folder into a resumable output folder: every input checked first, each volume written
atomically and recorded, and a rerun that redoes exactly what a killed run left unfinished.

The output folder is a knotwork output filled volume by volume (:func:`knotwork._io.resumable_dir`). After
each volume, its marker (``.knotwork.json``) records the file's size and sha256 with the model and options
that made it. A rerun skips a volume only when its file matches that record; anything else (no file, a
0-byte file from a killed run, a file written but not yet recorded, one made with another model) is redone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from knotwork._errors import OutputError, check_positive_int
from knotwork._io import (
    MARKER,
    check_inputs,
    check_output,
    clean_leftovers,
    fault_point,
    read_marker,
    resumable_dir,
    sha256_file,
    write_marker,
)
from knotwork._progress import as_callback
from knotwork.harmonize._checks import HarmonizeError
from knotwork.harmonize.batch import (
    DTYPES,
    ApplyJob,
    ApplyResult,
    apply_one,
    check_one,
    dask_client,
    plan_apply,
    plot_name,
    run_map,
)
from knotwork.harmonize.io import harmonizer_to_dict, load_harmonizer

logger = logging.getLogger(__name__)

COMMAND = "harmonize apply"


def _previous_volumes(out_dir: Path, inputs: list[Path], settings: dict[str, Any], *, force: bool) -> dict[str, Any]:
    """The per-volume records of a previous run in ``out_dir`` ({} when there is none to resume).

    Raises
    ------
    OutputError
        When ``out_dir`` is, contains or lies inside an input; is not a folder; is a non-empty folder knotwork
        did not make; is another command's output; or was made with another model or --dtype (without force).
    """
    if not out_dir.is_dir() or out_dir.is_symlink():
        check_output(out_dir, inputs=inputs, force=False, folder=True)  # refuses a file, a link, an input
        return {}
    check_inputs(out_dir, inputs)
    marker = read_marker(out_dir)
    if marker is None:
        if any(out_dir.iterdir()):
            raise OutputError(
                f"{out_dir}: exists, is not empty and is not a knotwork output folder (no {MARKER} inside); "
                "harmonize apply fills a new or empty folder or resumes its own, so choose another folder"
            )
        return {}
    report = marker.get("report") if isinstance(marker.get("report"), dict) else {}
    if report.get("command") != COMMAND:
        raise OutputError(f"{out_dir}: is the output of another knotwork command ({report.get('command')!r}), "
                          "not of harmonize apply; choose another folder")
    for key, label in (("model_sha256", "model (another sha256)"), ("dtype", "--dtype")):
        if report.get(key) != settings[key] and not force:
            raise OutputError(f"{out_dir}: was made with another {label} ({report.get(key)!r}); pass --force to "
                              "redo every volume with this one, or choose another folder")
    volumes = report.get("volumes")
    return {} if force or not isinstance(volumes, dict) else volumes


def _complete(job: ApplyJob, record: Any, *, plot: bool) -> bool:
    """True when ``job``'s output is the file the record describes (size, then sha256); mere existence is not."""
    if not isinstance(record, dict):
        return False
    try:
        size = job.dst.stat().st_size
    except OSError:
        return False
    if not job.dst.is_file() or size != record.get("size"):
        return False
    if plot and not (isinstance(record.get("plot"), str) and (job.dst.parent / record["plot"]).is_file()):
        return False
    return sha256_file(job.dst) == record.get("sha256")


def _refuse_bad_inputs(jobs: list[ApplyJob], model: dict[str, Any], *, workers: int, client: Any) -> None:
    """Read every volume still to do and refuse the batch, naming the first bad file, before anything is written."""
    bad = {}
    for i, reason in run_map(check_one, jobs, model, workers=workers, client=client):
        if isinstance(reason, BaseException):
            reason = f"{jobs[i].src}: {type(reason).__name__}: {reason}"
        if reason is not None:
            bad[i] = reason
            logger.info("%s", reason)
    if bad:
        first, *rest = (bad[i] for i in sorted(bad))
        others = [jobs[i].src.name for i in sorted(bad)][1:]
        more = f" ({len(rest)} more bad: {', '.join(others[:3])}{', ...' if len(others) > 3 else ''})" if rest else ""
        raise HarmonizeError(f"{first}{more}; nothing was written")


def apply_folder(
    model: Path,
    in_dir: Path,
    out_dir: Path,
    *,
    mask_dir: Path | None = None,
    workers: int = 1,
    scheduler: str | None = None,
    dtype: str = "float32",
    plot: bool = False,
    force: bool = False,
    connect_timeout: float = 5.0,
    progress: bool | Callable[[int], Any] | None = None,
) -> list[ApplyResult]:
    """Harmonize every volume in ``in_dir`` with the harmonizer saved at ``model`` into ``out_dir``.

    Parameters
    ----------
    model : Path
        A harmonizer saved by :func:`knotwork.harmonize.save_harmonizer`.
    in_dir, out_dir : Path
        Input folder, and the output folder: new, empty, or the output of an earlier (perhaps killed) run with
        the same model and ``dtype``, which is resumed. Never an input, inside one, or holding one.
    mask_dir : Path, optional
        Statistics masks with the volumes' file names.
    workers : int, default 1
        Local worker processes; ignored with ``scheduler``.
    scheduler : str, optional
        A Dask scheduler address (``tcp://host:8786``) or ``local:N``; refused within ``connect_timeout``
        seconds when it cannot be reached.
    dtype : {"float32", "input"}
    plot : bool
        Also draw before/after histograms into ``out_dir/plots/``.
    force : bool
        Redo every volume, also those a previous run finished (and allow another model or dtype).
    progress : bool or callable, optional
        A progress bar (True) or a callback with the number of finished volumes.

    Returns
    -------
    list of ApplyResult, one per input volume in name order: "skipped" (complete from an earlier run),
    "done", or "failed" (an error met while writing; its volume is not recorded and a rerun redoes it).

    Raises
    ------
    HarmonizeError
        Before anything is written: a bad model, folder, option or scheduler, or any input volume or mask that
        cannot be used (the first one named).
    knotwork._errors.OutputError
        When ``out_dir`` may not be written or resumed.
    """
    model, in_dir, out_dir = Path(model), Path(in_dir), Path(out_dir)
    check_positive_int(workers, "--workers", error=HarmonizeError)
    if dtype not in DTYPES:
        raise HarmonizeError(f"--dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    state = harmonizer_to_dict(load_harmonizer(model))
    jobs = plan_apply(in_dir, out_dir, mask_dir=mask_dir)
    inputs = [model, in_dir, *([Path(mask_dir)] if mask_dir is not None else [])]
    settings = {"model_sha256": sha256_file(model), "dtype": dtype}
    previous = _previous_volumes(out_dir, inputs, settings, force=force)
    if out_dir.is_dir():
        for entry in [out_dir / MARKER, *(j.dst for j in jobs), *(out_dir / plot_name(j) for j in jobs)]:
            clean_leftovers(entry)  # temp files of a killed run (only those whose process is gone)
    records = {j.dst.name: previous[j.dst.name] for j in jobs if _complete(j, previous.get(j.dst.name), plot=plot)}
    todo = [j for j in jobs if j.dst.name not in records]
    results = {j.dst.name: ApplyResult(j.src, j.dst, "skipped") for j in jobs if j.dst.name in records}
    if not todo:
        return [results[j.dst.name] for j in jobs]

    with dask_client(scheduler, timeout=connect_timeout) as client:
        _refuse_bad_inputs(todo, state, workers=workers, client=client)
        report = {"command": COMMAND, "model": str(model), **settings,
                  "mask_dir": None if mask_dir is None else str(mask_dir)}
        resumable_dir(out_dir, inputs=inputs, report={**report, "volumes": records})
        files = set((read_marker(out_dir) or {}).get("files", []))
        write_marker(out_dir, {**report, "volumes": records}, files=sorted(files))  # this run's model and options
        update, close = as_callback(progress, total=len(todo), desc="harmonize", unit="vol")
        finished = 0
        try:
            for i, res in run_map(apply_one, todo, state, workers=workers, client=client, dtype=dtype, plot=plot):
                job = todo[i]
                if isinstance(res, BaseException):  # a lost worker or a crashed process
                    res = ApplyResult(job.src, job.dst, "failed", f"{job.src}: {type(res).__name__}: {res}")
                results[job.dst.name] = res
                if res.status == "done":
                    records[job.dst.name] = {"size": res.size, "sha256": res.sha256, "source": str(job.src),
                                             **({"plot": res.plot} if res.plot else {})}
                    files |= {job.dst.name, *([res.plot] if res.plot else [])}
                    write_marker(out_dir, {**report, "volumes": records}, files=sorted(files))
                    finished += 1
                    fault_point(f"harmonize:after-volume-{finished}")
                else:
                    logger.info("%s", res.error)
                update(1)
        finally:
            close()
    return [results[j.dst.name] for j in jobs]
