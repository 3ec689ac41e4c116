"""`knotwork harmonize fit/apply` end to end on tiny NIfTI folders, with every kind of bad input."""

from __future__ import annotations

import re

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from knotwork.cli import app
from knotwork.harmonize import load_harmonizer
from knotwork.harmonize.io import read_volume


def _save(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))


def _invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def folders(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(3):
        _save(tmp_path / "ref" / f"r{i}.nii.gz", rng.gamma(2.0, 50.0, (8, 9, 10)).astype(np.float32))
    good = {f"good{i}.nii.gz": (rng.gamma(2.0, 5.0, (8, 9, 10)) ** 0.5).astype(np.float32) for i in range(3)}
    for name, data in good.items():
        _save(tmp_path / "in" / name, data)
        _save(tmp_path / "masks" / name, (data > np.median(data)).astype(np.uint8))
    nan = good["good0.nii.gz"].copy()
    nan[1, 2, 3] = np.nan
    _save(tmp_path / "in" / "nan.nii.gz", nan)
    _save(tmp_path / "in" / "flat.nii.gz", np.full((8, 9, 10), 4.0, np.float32))
    (tmp_path / "in" / "broken.nii.gz").write_bytes(b"garbage")
    _save(tmp_path / "in" / "wrongmask.nii.gz", good["good1.nii.gz"])
    _save(tmp_path / "masks" / "wrongmask.nii.gz", np.ones((8, 9, 9), np.uint8))
    _save(tmp_path / "in" / "emptymask.nii.gz", good["good2.nii.gz"])
    _save(tmp_path / "masks" / "emptymask.nii.gz", np.zeros((8, 9, 10), np.uint8))
    for name in ("nan.nii.gz", "flat.nii.gz", "broken.nii.gz"):
        _save(tmp_path / "masks" / name, np.ones((8, 9, 10), np.uint8))
    return tmp_path


EXPECTED_ERRORS = {
    "nan.nii.gz": "contains 1 non-finite voxels",
    "flat.nii.gz": "has a constant intensity",
    "broken.nii.gz": "cannot read volume",
    "wrongmask.nii.gz": r"has shape \(8, 9, 9\) but the volume has \(8, 9, 10\)",
    "emptymask.nii.gz": "is empty: it selects no voxel",
}


def _check_run(result, out_dir, n_done, n_skipped):
    assert result.exit_code == 1, result.output
    assert f"{n_done} harmonized, {n_skipped} skipped (output existed), 5 failed" in result.output
    for name, pattern in EXPECTED_ERRORS.items():
        assert re.search(rf"FAILED \S*{re.escape(name)}: .*{pattern}", result.output), (name, result.output)
    # Only the good volumes were written; no partial file is left behind.
    written = sorted(p.name for p in out_dir.iterdir() if p.is_file())
    assert written == ["good0.nii.gz", "good1.nii.gz", "good2.nii.gz"]


def test_fit_apply_resume_and_failures(folders):
    model = folders / "model.json"
    r = _invoke("harmonize", "fit", folders / "ref", "--method", "hm", "--out", model, "--n-levels", "64")
    assert r.exit_code == 0, r.output
    r = _invoke("harmonize", "fit", folders / "ref", "--method", "hm", "--out", model)
    assert r.exit_code == 1 and "exists; pass --force" in r.output

    out = folders / "out"
    r = _invoke("harmonize", "apply", model, folders / "in", out, "--mask-dir", folders / "masks")
    _check_run(r, out, 3, 0)
    # The output equals the library applied to the same volume and mask.
    h = load_harmonizer(model)
    src = read_volume(folders / "in" / "good1.nii.gz").data
    mask = read_volume(folders / "masks" / "good1.nii.gz").data
    np.testing.assert_allclose(read_volume(out / "good1.nii.gz").data, h.transform(src, mask), rtol=1e-6)

    mtime = (out / "good0.nii.gz").stat().st_mtime_ns
    r = _invoke("harmonize", "apply", model, folders / "in", out, "--mask-dir", folders / "masks")
    _check_run(r, out, 0, 3)
    assert (out / "good0.nii.gz").stat().st_mtime_ns == mtime


def test_fit_names_the_bad_reference(folders):
    ref = folders / "ref"
    _save(ref / "zz_bad.nii.gz", np.full((4, 4, 4), 1.0, np.float32))
    r = _invoke("harmonize", "fit", ref, "--method", "nyul", "--out", folders / "m.json")
    assert r.exit_code == 1
    assert "zz_bad.nii.gz has a constant intensity" in r.output
    assert not (folders / "m.json").exists()


def test_apply_on_a_local_dask_cluster(folders):
    distributed = pytest.importorskip("dask.distributed")
    model = folders / "model.json"
    assert _invoke("harmonize", "fit", folders / "ref", "--method", "zscore", "--out", model).exit_code == 0
    out = folders / "out_dask"
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:
        r = _invoke("harmonize", "apply", model, folders / "in", out, "--mask-dir", folders / "masks",
                    "--scheduler", cluster.scheduler_address)
        _check_run(r, out, 3, 0)
        r = _invoke("harmonize", "apply", model, folders / "in", out, "--mask-dir", folders / "masks",
                    "--scheduler", cluster.scheduler_address)
        _check_run(r, out, 0, 3)


def test_apply_with_worker_processes_matches_serial(folders):
    model = folders / "model.json"
    assert _invoke("harmonize", "fit", folders / "ref", "--method", "hm-volume", "--out", model).exit_code == 0
    r1 = _invoke("harmonize", "apply", model, folders / "in", folders / "o1", "--mask-dir", folders / "masks")
    r2 = _invoke("harmonize", "apply", model, folders / "in", folders / "o2", "--mask-dir", folders / "masks",
                 "--workers", "2")
    _check_run(r1, folders / "o1", 3, 0)
    _check_run(r2, folders / "o2", 3, 0)
    for name in ("good0.nii.gz", "good2.nii.gz"):
        np.testing.assert_array_equal(read_volume(folders / "o1" / name).data, read_volume(folders / "o2" / name).data)


def test_plot_saves_before_after_histograms(folders):
    model = folders / "model.json"
    assert _invoke("harmonize", "fit", folders / "ref", "--method", "clip", "--out", model).exit_code == 0
    one = folders / "one"
    one.mkdir()
    (one / "good0.nii.gz").write_bytes((folders / "in" / "good0.nii.gz").read_bytes())
    r = _invoke("harmonize", "apply", model, one, folders / "o", "--plot")
    assert r.exit_code == 0, r.output
    png = folders / "o" / "plots" / "good0.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in png.parent.iterdir()] == ["good0.png"]
