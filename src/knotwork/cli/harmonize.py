"""CLI commands for `harmonize`: fit a harmonizer on reference volumes, apply it to a folder."""

from __future__ import annotations

from pathlib import Path

import typer

from knotwork.cli._app import app

harmonize_app = typer.Typer(
    help="Intensity harmonization of 3D volumes (histogram matching, Nyul, z-score, clip).", no_args_is_help=True
)
app.add_typer(harmonize_app, name="harmonize")

METHODS = ("hm", "hm-volume", "nyul", "zscore", "clip")


@harmonize_app.command("fit")
def fit(
    ref_dir: Path = typer.Argument(..., help="Folder of reference volumes (the original domain)."),
    method: str = typer.Option(..., "--method", help="One of: " + ", ".join(METHODS) + "."),
    out: Path = typer.Option(..., "--out", help="Where to save the fitted harmonizer (.json or .npz)."),
    mask_dir: Path | None = typer.Option(None, "--mask-dir", help="Masks/labels with the same file names; "
                                          "non-zero voxels define the statistics."),
    foreground_threshold: float | None = typer.Option(None, "--foreground-threshold",
                                                       help="Use only voxels above this value for statistics."),
    n_levels: int = typer.Option(1000, "--n-levels", help="Quantile levels K for --method hm."),
    force: bool = typer.Option(False, "--force", help="Overwrite --out if it exists."),
) -> None:
    """Fit METHOD on every volume in REF_DIR and save it to --out."""
    from knotwork.harmonize import HarmonizeError, get_harmonizer
    from knotwork.harmonize.batch import load_references
    from knotwork.harmonize.io import list_volumes, save_harmonizer

    if method not in METHODS:
        raise typer.BadParameter(f"unknown method {method!r}; choose one of {', '.join(METHODS)}", param_hint="--method")
    if out.exists() and not force:
        typer.echo(f"error: {out} exists; pass --force to overwrite it", err=True)
        raise typer.Exit(1)
    if out.suffix not in (".json", ".npz"):
        raise typer.BadParameter(f"{out}: use a .json or .npz file name", param_hint="--out")
    params: dict = {"foreground_threshold": foreground_threshold}
    if method == "hm":
        params["n_levels"] = n_levels
    try:
        paths = list_volumes(ref_dir)
        if not paths:
            raise HarmonizeError(f"{ref_dir} holds no volume files (.nii, .nii.gz, .nrrd, .mha, .mhd)")
        masks = [None if mask_dir is None else mask_dir / p.name for p in paths]
        vols, mvols = load_references(paths, masks)
        h = get_harmonizer(method, **params)
        try:
            h.fit(vols, mvols)
        except HarmonizeError as exc:  # map "volumes[i]" back to the file name
            msg = str(exc)
            for i, p in enumerate(paths):
                msg = msg.replace(f"volumes[{i}]", p.name)
            raise HarmonizeError(msg) from exc
        save_harmonizer(h, out, overwrite=force)
    except (HarmonizeError, FileExistsError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"fitted {h!r} on {len(paths)} volumes from {ref_dir}; saved to {out}")


@harmonize_app.command("apply")
def apply(
    model: Path = typer.Argument(..., help="A harmonizer saved by `knotwork harmonize fit`."),
    in_dir: Path = typer.Argument(..., help="Folder of volumes to harmonize."),
    out_dir: Path = typer.Argument(..., help="Output folder (created); existing outputs are skipped."),
    mask_dir: Path | None = typer.Option(None, "--mask-dir", help="Statistics masks with the same file names."),
    workers: int = typer.Option(1, "--workers", min=1, help="Local worker processes."),
    scheduler: str | None = typer.Option(None, "--scheduler", help="Dask scheduler address; runs there instead."),
    dtype: str = typer.Option("float32", "--dtype", help="Output voxel type: float32 or input (rounded)."),
    plot: bool = typer.Option(False, "--plot", help="Save before/after histograms to OUT_DIR/plots/."),
    force: bool = typer.Option(False, "--force", help="Recompute outputs that already exist."),
) -> None:
    """Harmonize every volume in IN_DIR into OUT_DIR; exit 1 if any file failed (listed at the end)."""
    from tqdm import tqdm

    from knotwork.harmonize import HarmonizeError
    from knotwork.harmonize.batch import plan_apply, run_apply
    from knotwork.harmonize.io import harmonizer_to_dict, load_harmonizer

    if dtype not in ("float32", "input"):
        raise typer.BadParameter("use float32 or input", param_hint="--dtype")
    try:
        state = harmonizer_to_dict(load_harmonizer(model))
        jobs = plan_apply(in_dir, out_dir, mask_dir=mask_dir)
    except HarmonizeError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    out_dir.mkdir(parents=True, exist_ok=True)
    with tqdm(total=len(jobs), desc="harmonize", unit="vol") as bar:
        results = run_apply(jobs, state, workers=workers, scheduler=scheduler, dtype=dtype, force=force,
                            plot_dir=out_dir / "plots" if plot else None, callback=lambda r: bar.update())
    counts = {s: sum(r.status == s for r in results) for s in ("done", "skipped", "failed")}
    typer.echo(f"{counts['done']} harmonized, {counts['skipped']} skipped (output existed), {counts['failed']} failed")
    failed = [r for r in results if r.status == "failed"]
    for r in failed:
        typer.echo(f"FAILED {r.error}", err=True)
    if failed:
        raise typer.Exit(1)
