"""`knotwork harmonize fit --scheduler`: per-volume statistics on Dask workers give the same fit as in-process.

Also the two-step path every estimator has (``volume_statistics`` per volume, then ``fit_from_statistics``)
equals ``fit(volumes)``, and ``fit_folder`` (one volume at a time) equals ``fit`` on all volumes loaded at once.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from knotwork.cli import app
from knotwork.harmonize import HARMONIZERS, HarmonizeError, get_harmonizer, load_harmonizer
from knotwork.harmonize.batch import fit_folder

distributed = pytest.importorskip("distributed")

# Small parameters keep the quantile work tiny; every registered method is covered.
PARAMS = {"hm": {"n_levels": 32}, "nyul": {"step": 20.0}}


def _volumes(seed=0, n=4):
    rng = np.random.default_rng(seed)
    vols = [rng.gamma(2.0 + i, 30.0, (6, 7, 8)).astype(np.float32) for i in range(n)]
    vols.append(rng.integers(0, 400, (5, 6, 7)).astype(np.int16))  # an integer volume of another shape
    masks = [None if i % 2 else v > np.median(v) for i, v in enumerate(vols)]
    return vols, masks


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    root = tmp_path_factory.mktemp("ref")
    vols, masks = _volumes()
    for i, (v, m) in enumerate(zip(vols, masks, strict=True)):
        (root / "ref").mkdir(exist_ok=True)
        (root / "masks").mkdir(exist_ok=True)
        nib.save(nib.Nifti1Image(v, np.eye(4)), str(root / "ref" / f"r{i}.nii.gz"))
        mask = np.ones(v.shape, np.uint8) if m is None else m.astype(np.uint8)
        nib.save(nib.Nifti1Image(mask, np.eye(4)), str(root / "masks" / f"r{i}.nii.gz"))
    return root


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as c:
        yield c


def _same_state(a, b):
    sa, sb = a.get_state(), b.get_state()
    assert sa.keys() == sb.keys()
    for k in sa:
        np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)


def test_every_registered_method_is_covered():
    assert set(HARMONIZERS) >= {"hm", "hm-volume", "nyul", "zscore", "clip"}


@pytest.mark.parametrize("method", sorted(HARMONIZERS))
def test_two_step_equals_fit(method):
    vols, masks = _volumes()
    whole = get_harmonizer(method, **PARAMS.get(method, {})).fit(vols, masks)
    h = get_harmonizer(method, **PARAMS.get(method, {}))
    stats = [h.volume_statistics(v, m, name=f"v{i}") for i, (v, m) in enumerate(zip(vols, masks, strict=True))]
    h.fit_from_statistics(stats, lambda i: (vols[i], masks[i]))
    _same_state(whole, h)
    x = vols[0] * 1.5 + 3
    np.testing.assert_array_equal(whole.transform(x), h.transform(x))


def test_hm_volume_needs_a_reference_reader():
    vols, _ = _volumes()
    h = get_harmonizer("hm-volume")
    with pytest.raises(HarmonizeError, match="needs reference="):
        h.fit_from_statistics([h.volume_statistics(v) for v in vols])
    with pytest.raises(HarmonizeError, match="at least one reference volume"):
        get_harmonizer("zscore").fit_from_statistics([])


@pytest.mark.parametrize("method", sorted(HARMONIZERS))
def test_dask_fit_equals_local_fit(ref, cluster, method):
    params = PARAMS.get(method, {})
    local, paths = fit_folder(ref / "ref", method, mask_dir=ref / "masks", **params)
    # fit_folder (one volume at a time) equals fit on all volumes at once
    from knotwork.harmonize.io import read_volume

    whole = get_harmonizer(method, **params).fit([read_volume(p).data for p in paths],
                                                 [read_volume(ref / "masks" / p.name).data for p in paths])
    _same_state(local, whole)
    remote, remote_paths = fit_folder(ref / "ref", method, mask_dir=ref / "masks", scheduler=cluster.scheduler_address,
                                      **params)
    assert remote_paths == paths
    _same_state(local, remote)


def test_cli_fit_scheduler_local_2_equals_local_fit(ref, tmp_path):
    runner = CliRunner()
    base = ["harmonize", "fit", str(ref / "ref"), "--method", "nyul", "--mask-dir", str(ref / "masks")]
    r = runner.invoke(app, [*base, "--out", str(tmp_path / "local.json")], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, [*base, "--out", str(tmp_path / "dask.json"), "--scheduler", "local:2"],
                      catch_exceptions=False)
    assert r.exit_code == 0, r.output
    _same_state(load_harmonizer(tmp_path / "local.json"), load_harmonizer(tmp_path / "dask.json"))


def test_cli_fit_unreachable_scheduler_is_one_line(ref, tmp_path):
    out = tmp_path / "m.json"
    r = CliRunner().invoke(app, ["harmonize", "fit", str(ref / "ref"), "--method", "zscore", "--out", str(out),
                                 "--scheduler", "tcp://127.0.0.1:1"])
    text = (r.stderr if r.stderr else r.output).strip()
    assert r.exit_code != 0 and "Traceback" not in text, text
    assert "--scheduler tcp://127.0.0.1:1" in text and len(text.splitlines()) == 1, text
    assert not out.exists()
