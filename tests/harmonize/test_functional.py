"""match_histograms against scikit-image, exact identities, and the quantile helper against numpy."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.exposure import match_histograms as sk_match_histograms

from knotwork.harmonize import HarmonizeError, clip_rescale, match_histograms, volume_quantiles, zscore
from knotwork.harmonize import functional as F


def _volume(rng, dtype, shape):
    if np.dtype(dtype).kind == "u":
        return rng.integers(0, 200, shape).astype(dtype)
    if np.dtype(dtype).kind == "i":
        return rng.normal(0, 400, shape).astype(dtype)  # signed CT-like values
    return rng.gamma(2.0, 30.0, shape).astype(dtype)


@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.uint16, np.int32, np.float32, np.float64])
def test_equals_skimage_on_random_volumes(dtype):
    rng = np.random.default_rng(1)
    src, ref = _volume(rng, dtype, (17, 19, 23)), _volume(rng, dtype, (11, 13, 7))
    ours, theirs = match_histograms(src, ref), sk_match_histograms(src, ref)
    assert ours.dtype == theirs.dtype
    np.testing.assert_array_equal(ours, theirs)


def test_wide_integer_range_falls_back_to_sorting_and_still_matches(monkeypatch):
    monkeypatch.setattr(F, "MAX_COUNT_BINS", 16)
    rng = np.random.default_rng(2)
    src, ref = _volume(rng, np.int16, (9, 9, 9)), _volume(rng, np.int16, (8, 8, 8))
    np.testing.assert_array_equal(match_histograms(src, ref), sk_match_histograms(src, ref))


def test_chunked_counting_matches_single_pass(monkeypatch):
    rng = np.random.default_rng(3)
    src, ref = _volume(rng, np.int16, (20, 20, 20)), _volume(rng, np.int16, (10, 10, 10))
    whole = match_histograms(src, ref)
    monkeypatch.setattr(F, "CHUNK", 1000)  # 8 chunks instead of one
    monkeypatch.setattr(F, "SMALL", 0)
    np.testing.assert_array_equal(match_histograms(src, ref), whole)


@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_matching_a_volume_to_itself_is_identity(dtype):
    x = _volume(np.random.default_rng(4), dtype, (15, 16, 17))
    np.testing.assert_array_equal(match_histograms(x, x), x.astype(np.float64))


def test_strictly_increasing_distortion_is_undone():
    # f is strictly increasing and non-linear, so f(x) has x's tie structure: matching recovers x exactly.
    x = np.random.default_rng(5).integers(-1000, 2000, (20, 20, 20)).astype(np.int16)
    fx = (np.exp((x + 1000) / 1500.0) * 100.0).astype(np.float64)
    np.testing.assert_array_equal(match_histograms(fx, x), x.astype(np.float64))


def test_mapping_is_monotone():
    rng = np.random.default_rng(6)
    src, ref = rng.normal(0, 1, 5000).astype(np.float32), rng.gamma(1.5, 2.0, 4000).astype(np.float32)
    out = match_histograms(src, ref)
    order = np.argsort(src, kind="stable")
    assert np.all(np.diff(out[order]) >= 0)


def test_masks_equal_skimage_on_the_masked_voxels():
    # The documented workaround for skimage's missing mask: match the masked 1-D arrays.
    rng = np.random.default_rng(7)
    src, ref = _volume(rng, np.int16, (14, 15, 16)), _volume(rng, np.int16, (12, 12, 12))
    m, rm = src > -200, ref > 0
    out = match_histograms(src, ref, m, reference_mask=rm)
    np.testing.assert_array_equal(out[m], sk_match_histograms(src[m], ref[rm]))
    # Voxels outside the mask are mapped too, keeping their order (here all lie below the masked range).
    order = np.argsort(src.ravel(), kind="stable")
    assert np.all(np.diff(out.ravel()[order]) >= 0)
    assert out[~m].max() <= out[m].min()


def test_volume_quantiles_equal_numpy_for_int_float_and_mask():
    rng = np.random.default_rng(8)
    lv = np.linspace(0, 1, 37)
    xi = _volume(rng, np.int16, (13, 14, 15))
    xf = _volume(rng, np.float32, (13, 14, 15))
    m = rng.random(xi.shape) > 0.3
    np.testing.assert_allclose(volume_quantiles(xi, lv), np.quantile(xi, lv), rtol=0, atol=1e-9)
    np.testing.assert_allclose(volume_quantiles(xi, lv, mask=m), np.quantile(xi[m], lv), rtol=0, atol=1e-9)
    np.testing.assert_allclose(volume_quantiles(xf, lv, mask=m), np.quantile(xf[m], lv), rtol=1e-12)


def test_subsampled_quantiles_are_seeded_and_close():
    x = np.random.default_rng(9).normal(0, 1, (60, 60, 60)).astype(np.float32)
    lv = np.array([0.1, 0.5, 0.9])
    a = volume_quantiles(x, lv, max_samples=20_000, seed=3)
    np.testing.assert_array_equal(a, volume_quantiles(x, lv, max_samples=20_000, seed=3))
    # 20k samples: the standard error of a normal quantile is about 0.01-0.015.
    np.testing.assert_allclose(a, np.quantile(x, lv), atol=0.06)


def test_zscore_and_clip_rescale_match_hand_computation():
    x = np.arange(1000, dtype=np.float64).reshape(10, 10, 10)
    np.testing.assert_allclose(zscore(x), (x - x.mean()) / x.std())
    y = clip_rescale(x, percentiles=(10, 90), out_range=(0, 1))
    lo, hi = np.percentile(x, [10, 90])
    np.testing.assert_allclose(y, (np.clip(x, lo, hi) - lo) / (hi - lo))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mask": np.ones((3, 3, 2), bool)}, r"mask has shape \(3, 3, 2\) but the volume has shape \(3, 3, 3\)"),
        ({"mask": np.zeros((3, 3, 3), bool)}, "mask is empty: it selects no voxel"),
    ],
)
def test_bad_masks_are_named(kwargs, match):
    x = np.arange(27, dtype=np.float32).reshape(3, 3, 3)
    with pytest.raises(HarmonizeError, match=match):
        match_histograms(x, x, **kwargs)


def test_non_finite_and_constant_volumes_are_refused():
    x = np.arange(27, dtype=np.float32).reshape(3, 3, 3)
    bad = x.copy()
    bad[0, 0, 0] = np.nan
    bad[1, 1, 1] = np.inf
    with pytest.raises(HarmonizeError, match="source holds 2 non-finite values"):
        match_histograms(bad, x)
    with pytest.raises(HarmonizeError, match="reference has a constant intensity"):
        match_histograms(x, np.full((3, 3, 3), 7.0))
    with pytest.raises(HarmonizeError, match="source has a constant intensity"):
        match_histograms(np.zeros((3, 3, 3)), x)
    with pytest.raises(HarmonizeError, match="must hold integer or float intensities; got dtype bool"):
        match_histograms(x > 3, x)


def test_real_hippocampus_volumes_equal_skimage():
    import nibabel as nib

    from tests.conftest import require_shared

    folder = require_shared("med", "hippocampus", "imagesTr")
    vols = [np.asanyarray(nib.load(str(f)).dataobj) for f in sorted(folder.glob("*.nii.gz"))[:30]]
    # scikit-image cannot mix a uint source with a float reference, so compare within each dtype.
    for kind in ("u", "f"):
        same = [v for v in vols if v.dtype.kind == kind][:3]
        assert len(same) == 3
        for src, ref in ((same[0], same[1]), (same[2], same[0])):
            np.testing.assert_array_equal(match_histograms(src, ref), sk_match_histograms(src, ref))
