"""`knotwork harmonize fit/apply` end to end on tiny NIfTI folders: outputs, resume, workers, Dask, plots.

Bad input (refused with one line, nothing written) is in test_bad_inputs.py; the kill-and-rerun test in
test_kill.py.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from knotwork._io import MARKER, sha256_file
from knotwork.cli import app
from knotwork.harmonize import load_harmonizer
from knotwork.harmonize.io import read_volume

NAMES = ("good0.nii.gz", "good1.nii.gz", "good2.nii.gz")


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
    for name in NAMES:
        data = (rng.gamma(2.0, 5.0, (8, 9, 10)) ** 0.5).astype(np.float32)
        _save(tmp_path / "in" / name, data)
        _save(tmp_path / "masks" / name, (data > np.median(data)).astype(np.uint8))
    return tmp_path


def _fit(folders, method="hm", *extra):
    model = folders / f"{method}.json"
    r = _invoke("harmonize", "fit", folders / "ref", "--method", method, "--out", model, *extra)
    assert r.exit_code == 0, r.output
    return model


def _outputs(out):
    return sorted(p.name for p in out.iterdir() if not p.name.startswith("."))


def test_fit_apply_equals_the_library_and_a_rerun_skips_everything(folders):
    model = _fit(folders, "hm", "--n-levels", "64")
    assert load_harmonizer(model).n_levels == 64
    out = folders / "out"
    r = _invoke("harmonize", "apply", model, folders / "in", "--out", out, "--mask-dir", folders / "masks")
    assert r.exit_code == 0, r.output
    assert "3 harmonized, 0 skipped (complete from an earlier run), 0 failed" in r.output
    assert _outputs(out) == list(NAMES)
    h = load_harmonizer(model)
    for name in NAMES:
        src = read_volume(folders / "in" / name).data
        mask = read_volume(folders / "masks" / name).data
        np.testing.assert_allclose(read_volume(out / name).data, h.transform(src, mask), rtol=1e-6)
    # The marker records every volume with the size and sha256 of the file on disk.
    marker = json.loads((out / MARKER).read_text())
    assert sorted(marker["files"]) == list(NAMES)
    for name in NAMES:
        rec = marker["report"]["volumes"][name]
        assert rec["size"] == (out / name).stat().st_size and rec["sha256"] == sha256_file(out / name)
    assert marker["report"]["model_sha256"] == sha256_file(model)

    mtime = (out / "good0.nii.gz").stat().st_mtime_ns
    r = _invoke("harmonize", "apply", model, folders / "in", "--out", out, "--mask-dir", folders / "masks")
    assert r.exit_code == 0 and "0 harmonized, 3 skipped" in r.output, r.output
    assert (out / "good0.nii.gz").stat().st_mtime_ns == mtime


def test_resume_redoes_a_zero_byte_leftover_and_an_unrecorded_file(folders):
    model = _fit(folders, "zscore")
    out = folders / "out"
    assert _invoke("harmonize", "apply", model, folders / "in", "--out", out).exit_code == 0
    clean = {n: (out / n).read_bytes() for n in NAMES}
    (out / "good1.nii.gz").write_bytes(b"")  # what a killed run used to leave, and an old knotwork took as done
    marker = json.loads((out / MARKER).read_text())
    del marker["report"]["volumes"]["good2.nii.gz"]  # written, but killed before it was recorded
    (out / MARKER).write_text(json.dumps(marker))
    (out / ".good0.nii.gz.knotwork-tmp-999999999-abc.nii.gz").write_bytes(b"temp of a dead run")
    r = _invoke("harmonize", "apply", model, folders / "in", "--out", out)
    assert r.exit_code == 0 and "2 harmonized, 1 skipped" in r.output, r.output
    assert {n: (out / n).read_bytes() for n in NAMES} == clean
    assert sorted(p.name for p in out.iterdir()) == sorted([*NAMES, MARKER])


def test_another_model_is_refused_unless_force_redoes_everything(folders):
    m1, m2 = _fit(folders, "zscore"), _fit(folders, "clip")
    out = folders / "out"
    assert _invoke("harmonize", "apply", m1, folders / "in", "--out", out).exit_code == 0
    r = _invoke("harmonize", "apply", m2, folders / "in", "--out", out)
    assert r.exit_code == 2 and "was made with another model" in r.output, r.output
    r = _invoke("harmonize", "apply", m2, folders / "in", "--out", out, "--force")
    assert r.exit_code == 0 and "3 harmonized, 0 skipped" in r.output, r.output
    h = load_harmonizer(m2)
    np.testing.assert_allclose(read_volume(out / "good1.nii.gz").data,
                               h.transform(read_volume(folders / "in" / "good1.nii.gz").data), rtol=1e-6)


def test_a_volume_failing_after_the_checks_is_reported_and_redone_on_rerun(folders):
    model = _fit(folders, "clip")
    odd = np.zeros((8, 9, 10), np.float32)
    odd[0, 0, 0] = 1.0  # not constant, but its 0.5 and 99.5 percentiles are equal: clip cannot rescale it
    _save(folders / "in" / "odd.nii.gz", odd)
    out = folders / "out"
    r = CliRunner().invoke(app, ["harmonize", "apply", str(model), str(folders / "in"), "--out", str(out)])
    assert r.exit_code == 1, r.output
    assert "3 harmonized, 0 skipped (complete from an earlier run), 1 failed" in r.stdout
    errors = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(errors) == 1 and "odd.nii.gz" in errors[0] and "constant intensity" in errors[0], errors
    assert _outputs(out) == list(NAMES)
    (folders / "in" / "odd.nii.gz").unlink()
    _save(folders / "in" / "odd.nii.gz", np.linspace(0, 1, 720, dtype=np.float32).reshape(8, 9, 10))
    r = _invoke("harmonize", "apply", model, folders / "in", "--out", out)
    assert r.exit_code == 0 and "1 harmonized, 3 skipped" in r.output, r.output


def test_json_result(folders):
    model = folders / "m.json"
    r = _invoke("harmonize", "fit", folders / "ref", "--method", "nyul", "--out", model, "--json", "-")
    assert r.exit_code == 0, r.output
    fitted = json.loads(r.stdout)
    assert fitted["method"] == "nyul" and len(fitted["volumes"]) == 3 and fitted["knotwork"]["version"]
    r = _invoke("harmonize", "apply", model, folders / "in", "--out", folders / "out", "--json", folders / "r.json")
    assert r.exit_code == 0, r.output
    result = json.loads((folders / "r.json").read_text())
    assert sorted(result["done"]) == [str(folders / "out" / n) for n in NAMES] and result["failed"] == []


def test_apply_on_a_dask_cluster_equals_serial(folders):
    distributed = pytest.importorskip("distributed")
    model = _fit(folders, "zscore")
    assert _invoke("harmonize", "apply", model, folders / "in", "--out", folders / "serial").exit_code == 0
    out = folders / "out_dask"
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:
        r = _invoke("harmonize", "apply", model, folders / "in", "--out", out, "--scheduler", cluster.scheduler_address)
        assert r.exit_code == 0 and "3 harmonized" in r.output, r.output
        r = _invoke("harmonize", "apply", model, folders / "in", "--out", out, "--scheduler", cluster.scheduler_address)
        assert r.exit_code == 0 and "0 harmonized, 3 skipped" in r.output, r.output
    for name in NAMES:
        assert (out / name).read_bytes() == (folders / "serial" / name).read_bytes()


def test_apply_with_worker_processes_matches_serial(folders):
    model = _fit(folders, "hm-volume")
    r1 = _invoke("harmonize", "apply", model, folders / "in", "--out", folders / "o1", "--mask-dir", folders / "masks")
    r2 = _invoke("harmonize", "apply", model, folders / "in", "--out", folders / "o2", "--mask-dir", folders / "masks",
                 "--workers", "2")
    assert r1.exit_code == 0 and r2.exit_code == 0, (r1.output, r2.output)
    for name in NAMES:
        assert (folders / "o1" / name).read_bytes() == (folders / "o2" / name).read_bytes()


def test_plot_saves_before_after_histograms_and_resume_draws_missing_ones(folders):
    model = _fit(folders, "clip")
    out = folders / "o"
    assert _invoke("harmonize", "apply", model, folders / "in", "--out", out).exit_code == 0
    r = _invoke("harmonize", "apply", model, folders / "in", "--out", out, "--plot")  # the first run drew no plots
    assert r.exit_code == 0 and "3 harmonized, 0 skipped" in r.output, r.output
    pngs = sorted((out / "plots").iterdir())
    assert [p.name for p in pngs] == ["good0.png", "good1.png", "good2.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert "plots/good0.png" in json.loads((out / MARKER).read_text())["files"]


def test_apply_on_a_local_cluster_started_by_scheduler_local_n(folders):
    pytest.importorskip("distributed")
    model = _fit(folders, "zscore")
    assert _invoke("harmonize", "apply", model, folders / "in", "--out", folders / "serial").exit_code == 0
    r = _invoke("harmonize", "apply", model, folders / "in", "--out", folders / "local", "--scheduler", "local:1")
    assert r.exit_code == 0 and "3 harmonized" in r.output, r.output
    for name in NAMES:
        assert (folders / "local" / name).read_bytes() == (folders / "serial" / name).read_bytes()
