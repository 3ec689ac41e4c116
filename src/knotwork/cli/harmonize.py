"""CLI commands for `knotwork harmonize`: fit a harmonizer on reference volumes, apply it to a folder."""

from __future__ import annotations

import enum
from pathlib import Path

import typer

from knotwork.cli._app import emit_json, force_option, group, json_option, out_option, scheduler_option

harmonize_app = group("harmonize", "Intensity harmonization of 3D volumes (histogram matching, Nyul, z-score, clip).")


class Method(str, enum.Enum):
    """Harmonization methods, by their registry names (knotwork.harmonize.HARMONIZERS)."""

    hm = "hm"
    hm_volume = "hm-volume"
    nyul = "nyul"
    zscore = "zscore"
    clip = "clip"


class OutputDtype(str, enum.Enum):
    """Voxel type of the harmonized volumes."""

    float32 = "float32"
    input = "input"


@harmonize_app.command("fit")
def fit(
    ref_dir: Path = typer.Argument(..., help="Folder of reference volumes (the original domain)."),
    method: Method = typer.Option(..., "--method", help="Harmonization method.", case_sensitive=False),
    out: Path = out_option("Where to save the fitted harmonizer (.json, or .npz for large references)."),
    mask_dir: Path | None = typer.Option(None, "--mask-dir", help="Masks/labels with the same file names; "
                                          "non-zero voxels define the statistics."),
    foreground_threshold: float | None = typer.Option(None, "--foreground-threshold",
                                                       help="Use only voxels above this value for statistics."),
    n_levels: int | None = typer.Option(None, "--n-levels", help="Quantile levels K for --method hm (>= 2; "
                                         "default 1000)."),
    scheduler: str | None = scheduler_option(),
    force: bool = force_option(),
    json_out: str | None = json_option(),
) -> None:
    """Fit METHOD on every volume in REF_DIR and save it to --out.

    Volumes are read one at a time; with --scheduler each is read and summarized on a Dask worker (the same
    result as without).
    """
    from knotwork._io import check_output
    from knotwork.harmonize import HarmonizeError, save_harmonizer
    from knotwork.harmonize.batch import fit_folder

    inputs = [ref_dir, *([mask_dir] if mask_dir is not None else [])]
    if out.suffix not in (".json", ".npz"):
        raise HarmonizeError(f"--out {out}: save the harmonizer as .json or .npz")
    check_output(out, inputs=inputs, force=force, folder=False)
    params: dict = {"foreground_threshold": foreground_threshold}
    if method is Method.hm and n_levels is not None:
        params["n_levels"] = n_levels
    elif n_levels is not None:
        raise HarmonizeError(f"--n-levels applies to --method hm only, not to --method {method.value}")
    h, paths = fit_folder(ref_dir, method.value, mask_dir=mask_dir, scheduler=scheduler, **params)
    save_harmonizer(h, out, overwrite=force, inputs=inputs)
    emit_json({"method": method.value, "params": h.get_params(), "volumes": [str(p) for p in paths], "out": str(out)},
              json_out, inputs=[*inputs, out], force=force)
    if json_out != "-":
        typer.echo(f"fitted {h!r} on {len(paths)} volumes from {ref_dir}; saved to {out}")


@harmonize_app.command("apply")
def apply(
    model: Path = typer.Argument(..., help="A harmonizer saved by `knotwork harmonize fit`."),
    in_dir: Path = typer.Argument(..., help="Folder of volumes to harmonize."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Output folder: new, empty, or a previous (killed) run's, "
                                 "resumed."),
    mask_dir: Path | None = typer.Option(None, "--mask-dir", help="Statistics masks with the same file names."),
    workers: int = typer.Option(1, "--workers", help="Local worker processes (ignored with --scheduler)."),
    scheduler: str | None = scheduler_option(),
    dtype: OutputDtype = typer.Option(OutputDtype.float32, "--dtype", help="Output voxel type: float32, or the "
                                      "input's type (rounded)."),
    plot: bool = typer.Option(False, "--plot", help="Save before/after histograms to <--out>/plots/."),
    force: bool = typer.Option(False, "--force", help="Redo every volume of a previous run in OUT_DIR (also with "
                               "another model or --dtype); never touches anything else."),
    json_out: str | None = json_option(),
) -> None:
    """Harmonize every volume in IN_DIR into OUT_DIR, resuming a killed run.

    Every input is checked before anything is written; bad input exits 2 naming the file. A volume that fails
    while being written is reported and the others go on; the exit status is then 1 and a rerun redoes it.
    """
    from knotwork._errors import RunError
    from knotwork._progress import progress_enabled
    from knotwork.harmonize.resume import apply_folder

    results = apply_folder(model, in_dir, out_dir, mask_dir=mask_dir, workers=workers, scheduler=scheduler,
                           dtype=dtype.value, plot=plot, force=force, progress=progress_enabled())
    by = {s: [r for r in results if r.status == s] for s in ("done", "skipped", "failed")}
    emit_json({"out_dir": str(out_dir), "done": [str(r.dst) for r in by["done"]],
               "skipped": [str(r.dst) for r in by["skipped"]],
               "failed": [{"file": str(r.src), "error": r.error} for r in by["failed"]]},
              json_out, inputs=[model, in_dir, out_dir, *([mask_dir] if mask_dir is not None else [])], force=force)
    if json_out != "-":
        typer.echo(f"{len(by['done'])} harmonized, {len(by['skipped'])} skipped (complete from an earlier run), "
                   f"{len(by['failed'])} failed; output in {out_dir}")
    if by["failed"]:
        more = f" ({len(by['failed']) - 1} more failed; rerun to retry them)" if len(by["failed"]) > 1 else ""
        raise RunError(f"{by['failed'][0].error}{more}")
