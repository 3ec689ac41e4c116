"""`knotwork harmonize apply` killed (SIGKILL) at a deterministic point, then rerun: the rerun finishes, skips
exactly the volumes the killed run completed and recorded, redoes the rest, and its outputs are byte-identical
to a clean run's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from knotwork._io import MARKER, read_marker

SRC = Path(__file__).resolve().parents[2] / "src"
NAMES = ("v0.nii.gz", "v1.nii.gz", "v2.nii.gz")


def _knotwork(*args, fault: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    env.pop("KNOTWORK_TEST_FAULT", None)
    if fault:
        env["KNOTWORK_TEST_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "knotwork.cli", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("kill")
    rng = np.random.default_rng(0)
    for i, name in enumerate(NAMES):
        for folder, scale in (("ref", 50.0), ("in", 5.0)):
            (tmp / folder).mkdir(exist_ok=True)
            data = rng.gamma(2.0, scale * (1 + i), (9, 10, 11)).astype(np.float32)
            nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp / folder / name))
    model = tmp / "model.json"
    assert _knotwork("harmonize", "fit", tmp / "ref", "--method", "hm", "--n-levels", "32", "--out", model).returncode == 0
    clean = tmp / "clean"
    res = _knotwork("harmonize", "apply", model, tmp / "in", "--out", clean)
    assert res.returncode == 0, res.stderr
    return tmp, model, clean


@pytest.mark.parametrize(("fault", "finished"), [
    ("harmonize:after-volume-1", 1),        # killed right after the first volume was written and recorded
    ("harmonize:after-volume-2", 2),
    ("harmonize:volume-before-rename", 0),  # killed with the first volume complete under its temp name
])
def test_killed_apply_resumes_to_a_clean_runs_bytes(world, tmp_path, fault, finished):
    tmp, model, clean = world
    out = tmp_path / "out"
    killed = _knotwork("harmonize", "apply", model, tmp / "in", "--out", out, fault=fault)
    assert killed.returncode == -9, (killed.returncode, killed.stderr)
    recorded = sorted(read_marker(out)["report"]["volumes"])
    assert recorded == list(NAMES[:finished])
    left = {p.name for p in out.iterdir()}
    assert set(NAMES[:finished]) <= left and not (set(NAMES[finished:]) & left)
    if finished == 0:
        assert any(".knotwork-tmp-" in name for name in left), left  # the killed write's temp file
    done_at = {n: (out / n).stat().st_mtime_ns for n in NAMES[:finished]}

    rerun = _knotwork("harmonize", "apply", model, tmp / "in", "--out", out)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{len(NAMES) - finished} harmonized, {finished} skipped" in rerun.stdout
    assert {n: (out / n).stat().st_mtime_ns for n in NAMES[:finished]} == done_at  # not rewritten
    assert sorted(p.name for p in out.iterdir()) == sorted([*NAMES, MARKER])  # temp files gone
    for name in NAMES:
        assert (out / name).read_bytes() == (clean / name).read_bytes(), name
    assert sorted(read_marker(out)["report"]["volumes"]) == list(NAMES)
