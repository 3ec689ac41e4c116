"""NIfTI round trips keep affine and header; saved harmonizers reload exactly; writes are atomic."""

from __future__ import annotations

import hashlib
import json

import nibabel as nib
import numpy as np
import pytest

from knotwork._errors import OutputError
from knotwork.harmonize import HarmonizeError, NyulStandardizer, QuantileMatcher
from knotwork.harmonize.io import load_harmonizer, read_volume, save_harmonizer, write_volume


def _nifti(path, data, affine=None):
    affine = np.diag([1.5, 1.5, 2.0, 1.0]) if affine is None else affine
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def test_write_keeps_affine_and_chooses_dtype(tmp_path):
    affine = np.array([[0, -1.2, 0, 10], [1.1, 0, 0, -5], [0, 0, 3, 2], [0, 0, 0, 1]], dtype=float)
    src = read_volume(_nifti(tmp_path / "a.nii.gz", np.arange(60, dtype=np.int16).reshape(3, 4, 5), affine))
    out = src.data * 1.5 + 0.25
    write_volume(tmp_path / "b.nii.gz", out, src)
    back = nib.load(str(tmp_path / "b.nii.gz"))
    # NIfTI stores the affine in float32: equal to the input's stored affine, close to the float64 one.
    np.testing.assert_array_equal(back.affine, src.image.affine)
    np.testing.assert_allclose(back.affine, affine, atol=1e-6)
    assert back.get_data_dtype() == np.float32
    np.testing.assert_allclose(np.asanyarray(back.dataobj), out.astype(np.float32))
    write_volume(tmp_path / "c.nii.gz", out, src, dtype="input")
    back = nib.load(str(tmp_path / "c.nii.gz"))
    assert back.get_data_dtype() == np.int16
    np.testing.assert_array_equal(np.asanyarray(back.dataobj), np.rint(out).astype(np.int16))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.nii.gz", "b.nii.gz", "c.nii.gz"]


def test_write_refuses_the_input_path(tmp_path):
    src = read_volume(_nifti(tmp_path / "a.nii", np.ones((2, 2, 2), np.float32)))
    with pytest.raises(HarmonizeError, match="refusing to write over the input volume"):
        write_volume(tmp_path / "a.nii", src.data, src)


def test_unreadable_file_is_named(tmp_path):
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"not a nifti")
    with pytest.raises(HarmonizeError, match=r"broken\.nii\.gz: cannot read volume"):
        read_volume(bad)


@pytest.mark.parametrize("suffix", [".json", ".npz"])
def test_harmonizer_save_load_round_trip(tmp_path, suffix):
    rng = np.random.default_rng(0)
    refs = [rng.gamma(2.0, 10.0, (8, 8, 8)) for _ in range(2)]
    for h in (QuantileMatcher(n_levels=50), NyulStandardizer(standard_range=None)):
        h.fit(refs)
        path = save_harmonizer(h, tmp_path / f"{h.name}{suffix}")
        h2 = load_harmonizer(path)
        assert repr(h2) == repr(h)
        x = rng.normal(5, 2, (6, 6, 6))
        np.testing.assert_array_equal(h2.transform(x), h.transform(x))
        with pytest.raises(OutputError, match="exists; pass --force"):
            save_harmonizer(h, path)
        save_harmonizer(h, path, overwrite=True)  # a knotwork output may be replaced
        assert repr(load_harmonizer(path)) == repr(h)


def test_saved_harmonizer_is_a_knotwork_output(tmp_path):
    h = QuantileMatcher(n_levels=10).fit([np.arange(100.0)])
    saved = json.loads(save_harmonizer(h, tmp_path / "m.json").read_text())
    assert saved["knotwork"]["version"] and saved["format"] == "knotwork.harmonize/1"
    save_harmonizer(h, tmp_path / "m.npz")
    report = json.loads((tmp_path / "m.npz.knotwork.json").read_text())
    assert report["sha256"] == hashlib.sha256((tmp_path / "m.npz").read_bytes()).hexdigest()
    (tmp_path / "other.json").write_text("{}")
    with pytest.raises(OutputError, match="not a knotwork output"):
        save_harmonizer(h, tmp_path / "other.json", overwrite=True)
    assert (tmp_path / "other.json").read_text() == "{}"
    with pytest.raises(HarmonizeError, match=r"m\.txt: save the harmonizer as \.json or \.npz"):
        save_harmonizer(h, tmp_path / "m.txt")


def test_write_volume_leaves_nothing_when_the_writer_dies_half_way(tmp_path, monkeypatch):
    src = read_volume(_nifti(tmp_path / "a.nii", np.ones((2, 2, 2), np.float32)))

    def half_then_fail(img, name):
        assert name.endswith(".nii")  # the temp name keeps the suffix nibabel picks the format by
        with open(name, "wb") as fh:
            fh.write(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(nib, "save", half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        write_volume(tmp_path / "b.nii", src.data, src)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.nii"]


def test_load_rejects_foreign_json(tmp_path):
    p = tmp_path / "x.json"
    p.write_text('{"format": "something-else"}')
    with pytest.raises(HarmonizeError, match="not a knotwork harmonizer file"):
        load_harmonizer(p)


def test_simpleitk_formats_keep_geometry(tmp_path):
    sitk = pytest.importorskip("SimpleITK")
    img = sitk.GetImageFromArray(np.arange(60, dtype=np.int16).reshape(3, 4, 5))
    img.SetSpacing((0.7, 0.8, 2.5))
    img.SetOrigin((1.0, -2.0, 3.0))
    sitk.WriteImage(img, str(tmp_path / "a.nrrd"))
    src = read_volume(tmp_path / "a.nrrd")
    write_volume(tmp_path / "b.mha", src.data * 2.0, src)
    back = sitk.ReadImage(str(tmp_path / "b.mha"))
    assert back.GetSpacing() == pytest.approx((0.7, 0.8, 2.5))
    assert back.GetOrigin() == pytest.approx((1.0, -2.0, 3.0))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), src.data.astype(np.float32) * 2)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_round_trip_keeps_spacing_origin_direction(tmp_path, suffix):
    sitk = pytest.importorskip("SimpleITK")
    c, s = np.cos(0.3), np.sin(0.3)
    direction = (c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0)
    img = sitk.GetImageFromArray(np.arange(60, dtype=np.int16).reshape(3, 4, 5))
    img.SetSpacing((0.7, 0.8, 2.5))
    img.SetOrigin((1.0, -2.0, 3.0))
    img.SetDirection(direction)
    sitk.WriteImage(img, str(tmp_path / f"a{suffix}"))
    src = read_volume(tmp_path / f"a{suffix}")
    h = QuantileMatcher(n_levels=10).fit([np.random.default_rng(0).gamma(2.0, 10.0, (6, 6, 6))])
    out = h.transform(src.data)
    write_volume(tmp_path / f"b{suffix}", out, src)
    back = sitk.ReadImage(str(tmp_path / f"b{suffix}"))
    assert back.GetSpacing() == pytest.approx((0.7, 0.8, 2.5), abs=1e-5)
    assert back.GetOrigin() == pytest.approx((1.0, -2.0, 3.0), abs=1e-5)
    assert back.GetDirection() == pytest.approx(direction, abs=1e-5)
    # SimpleITK as an independent reader (z, y, x order), and knotwork's own reader (nibabel's x, y, z for NIfTI):
    expected = h.transform(sitk.GetArrayFromImage(img)).astype(np.float32)
    np.testing.assert_allclose(sitk.GetArrayFromImage(back), expected, rtol=1e-6)
    np.testing.assert_allclose(read_volume(tmp_path / f"b{suffix}").data, out.astype(np.float32))
