"""Every route of exact histogram matching gives scikit-image's bits, or, where scikit-image has no
equivalent (masks, wide integers), those of a dense reference copy of the previous implementation:
counted integers, sorted 32-bit keys, the np.unique fallback, chunks and worker threads.

Bits are compared through a uint8 view, so -0.0 and +0.0 differ (``np.array_equal`` would not see it).
"""

from __future__ import annotations

import numpy as np
import pytest
from skimage.exposure import match_histograms as sk_match_histograms

from knotwork.harmonize import NyulStandardizer, QuantileMatcher, match_histograms, volume_quantiles
from knotwork.harmonize import functional as F
from knotwork.harmonize._mapping import merge_ties


def same_bits(ours: np.ndarray, theirs: np.ndarray) -> None:
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    np.testing.assert_array_equal(ours.view(np.uint8), theirs.view(np.uint8))


def dense_match(source, reference, mask=None, reference_mask=None, dtype=None):
    """The matching rule written densely with np.unique (the implementation before the fast routes)."""
    values, inverse = np.unique(source.reshape(-1), return_inverse=True)
    inverse = inverse.reshape(-1)
    counts = np.bincount(inverse if mask is None else inverse[mask.reshape(-1)], minlength=values.size)
    ref_values, ref_counts = np.unique(reference if reference_mask is None else reference[reference_mask],
                                       return_counts=True)
    lut = np.interp(np.cumsum(counts) / counts.sum(), np.cumsum(ref_counts) / ref_counts.sum(), ref_values)
    if mask is not None:
        present = np.flatnonzero(counts)
        values = values.astype(np.float64)
        lo, hi = values[present[0]], values[present[-1]]
        slope = (float(ref_values[-1]) - float(ref_values[0])) / (hi - lo)
        below, above = values < lo, values > hi
        lut[below] = lut[present[0]] + (values[below] - lo) * slope
        lut[above] = lut[present[-1]] + (values[above] - hi) * slope
    dtype = F.output_dtype(source.dtype) if dtype is None else np.dtype(dtype)
    return lut.astype(dtype)[inverse].reshape(source.shape)


def volume(rng, dtype, shape):
    """Values with ties, negatives (where the dtype has them) and, for floats, both signed zeros."""
    dtype = np.dtype(dtype)
    if dtype.kind == "u":
        return rng.integers(0, 300 if dtype.itemsize > 1 else 256, shape).astype(dtype)
    if dtype.kind == "i":
        return rng.integers(-120 if dtype.itemsize == 1 else -1200, 120 if dtype.itemsize == 1 else 2500,
                            shape).astype(dtype)
    x = np.round(rng.normal(0, 300, shape), 1).astype(dtype)  # one decimal: many ties
    flat = x.reshape(-1)
    flat[::7] = 0.0
    flat[3::11] = -0.0
    return x


@pytest.fixture
def threaded(monkeypatch):
    """Small chunks and three workers from the first voxel, whatever this machine's core count."""
    monkeypatch.setattr(F, "CHUNK", 97)
    monkeypatch.setattr(F, "SMALL", 0)
    monkeypatch.setattr(F, "PARALLEL_MIN", 1)
    monkeypatch.setattr(F, "_cores", lambda: 3)
    assert F._workers(10_000) == 3


# np.uint64 is left out: scikit-image's np.bincount refuses it (its routes are checked against dense_match).
ALL_DTYPES = [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.float16, np.float32,
              np.float64]


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_every_dtype_gives_skimage_bits(dtype):
    rng = np.random.default_rng(11)
    src, ref = volume(rng, dtype, (13, 17, 19)), volume(rng, dtype, (9, 11, 8))
    same_bits(match_histograms(src, ref), sk_match_histograms(src, ref))


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_every_dtype_gives_skimage_bits_in_threads_and_chunks(dtype, threaded):
    rng = np.random.default_rng(12)
    src, ref = volume(rng, dtype, (13, 17, 19)), volume(rng, dtype, (21, 11, 8))
    same_bits(match_histograms(src, ref), sk_match_histograms(src, ref))


@pytest.mark.parametrize(("dtype", "route"), [(np.int16, F._CountedTable), (np.float32, F._SortedTable),
                                              (np.float16, F._SortedTable), (np.float64, F._SortedTable)])
def test_masks_and_float32_output_match_skimage_and_the_dense_rule(dtype, route, threaded):
    rng = np.random.default_rng(13)
    kind = np.float32 if dtype == np.float64 else dtype  # float64 holding float32 values: the sorted route
    src, ref = volume(rng, kind, (14, 15, 16)).astype(dtype), volume(rng, kind, (12, 12, 12)).astype(dtype)
    m, rm = src > -100, ref > 0
    assert isinstance(F._value_table(src, m), route)
    out = match_histograms(src, ref, m, reference_mask=rm)
    same_bits(out[m], sk_match_histograms(src[m], ref[rm]))  # scikit-image's workaround: the masked voxels
    same_bits(out, dense_match(src, ref, m, rm))
    same_bits(match_histograms(src, ref, m, reference_mask=rm, dtype=np.float32),
              dense_match(src, ref, m, rm, dtype=np.float32))
    same_bits(match_histograms(src, ref, dtype=np.float32), sk_match_histograms(src, ref).astype(np.float32))


def test_int16_extremes_do_not_overflow():
    # The previous code shifted int16 values in int16: 32767 - (-32768) wrapped and bincount refused it.
    rng = np.random.default_rng(14)
    src = volume(rng, np.int16, (10, 10, 10))
    src.flat[:2] = [-32768, 32767]
    ref = volume(rng, np.int16, (8, 8, 8))
    ref.flat[:2] = [-32768, 32767]
    same_bits(match_histograms(src, ref), sk_match_histograms(src, ref))


@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.uint32])
def test_integers_too_wide_to_count_are_sorted_by_key(dtype, monkeypatch, threaded):
    monkeypatch.setattr(F, "MAX_COUNT_BINS", 16)
    rng = np.random.default_rng(15)
    src, ref = volume(rng, dtype, (9, 10, 11)), volume(rng, dtype, (8, 8, 8))
    assert isinstance(F._value_table(src, None), F._SortedTable)
    same_bits(match_histograms(src, ref), sk_match_histograms(src, ref))
    m = src > src.min() + 50
    same_bits(match_histograms(src, ref, m), dense_match(src, ref, m))


def test_huge_unsigned_values_and_ranges_beyond_32_bits():
    rng = np.random.default_rng(16)
    base = np.uint64(2**64 - 2**40)
    # Steps of 4096, the float64 spacing there; the range stays below MAX_COUNT_BINS: counted.
    counted = base + np.uint64(4096) * rng.integers(0, 1000, (6, 7, 8)).astype(np.uint64)
    narrow = base + rng.integers(0, 2**31, (6, 7, 8)).astype(np.uint64)  # range < 2**32: sorted by key
    wide = rng.integers(0, 2**63, (6, 7, 8), dtype=np.uint64) * np.uint64(2)  # range > 2**32: np.unique
    ref = rng.normal(0, 1, (5, 5, 5))
    assert isinstance(F._value_table(narrow, None), F._SortedTable)
    assert isinstance(F._value_table(wide, None), F._UniqueTable)
    assert isinstance(F._value_table(counted, None), F._CountedTable)
    for src in (counted, narrow, wide):
        m = src > np.quantile(src, 0.2)
        same_bits(match_histograms(src, ref), dense_match(src, ref))
        same_bits(match_histograms(src, ref, m), dense_match(src, ref, m))
        same_bits(match_histograms(ref, src), dense_match(ref, src))  # as the reference


def test_float64_beyond_float32_falls_back_to_unique_with_skimage_bits(threaded):
    rng = np.random.default_rng(17)
    src, ref = rng.normal(0, 1, (10, 11, 12)), rng.normal(0, 1, (9, 9, 9))
    assert isinstance(F._value_table(src, None), F._UniqueTable)
    same_bits(match_histograms(src, ref), sk_match_histograms(src, ref))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_signed_zeros_keep_skimage_signs(dtype):
    # Matching a volume to itself hits the reference knots exactly, so the reference's zero comes out
    # verbatim: -0.0 when only -0.0 is present, and np.unique's pick when both are.
    only_negative = np.array([-0.0] * 5 + [1.0, 2.0, 2.0, -3.0], dtype=dtype).reshape(3, 3)
    out = match_histograms(only_negative, only_negative)
    assert np.signbit(out[np.asarray(only_negative) == 0]).all()
    same_bits(out, sk_match_histograms(only_negative, only_negative))
    mixed = np.array([0.0, -0.0, -0.0, 0.0, 1.5, -2.5, -0.0, 0.0, 4.0], dtype=dtype).reshape(3, 3)
    same_bits(match_histograms(mixed, mixed), sk_match_histograms(mixed, mixed))
    same_bits(match_histograms(mixed, only_negative), sk_match_histograms(mixed, only_negative))


def test_sorted_keys_follow_numeric_order_across_signs_and_magnitudes():
    values = np.array([-np.finfo(np.float32).max, -1e30, -1.0, -1e-30, -np.finfo(np.float32).tiny, -1e-45, -0.0,
                       0.0, 1e-45, 1e-38, 1.0, 3.0, 1e30, np.finfo(np.float32).max], dtype=np.float32)
    table = F._SortedTable(np.random.default_rng(18).permutation(values), None)
    np.testing.assert_array_equal(table.values(), np.unique(values).astype(np.float64))
    np.testing.assert_array_equal(np.diff(table.cumulative(), prepend=0), [1] * 6 + [2] + [1] * 6)  # one zero


@pytest.mark.parametrize("kind", ["int16", "uint8", "float32", "quantized float32"])
def test_quantile_matcher_and_nyul_are_unchanged_by_the_lookup_table(kind, threaded):
    rng = np.random.default_rng(19)
    make = (lambda shape: quantized(rng, shape)) if kind.startswith("quantized") else (
        lambda shape: volume(rng, kind, shape))
    refs = [make((10, 11, 12)) for _ in range(2)]
    x = make((12, 11, 10))
    dtype = x.dtype
    assert (dtype.kind == "f" and F.value_bins(x.reshape(-1)) is not None) == kind.startswith("quantized")
    for est in (QuantileMatcher(n_levels=50).fit(refs), NyulStandardizer().fit(refs)):
        out = est.transform(x)
        # The per-voxel map, evaluated densely (the previous code): np.interp plus the linear extensions.
        q = est._quantiles(x, None) if isinstance(est, QuantileMatcher) else est._landmarks(
            x, None, "volume", est.percentiles_)
        xp, fp = merge_ties(q, est.reference_quantiles_ if isinstance(est, QuantileMatcher) else est.landmarks_)
        v = x.astype(np.float64)
        y = np.interp(v, xp, fp)
        if isinstance(est, QuantileMatcher):
            s_lo = s_hi = (fp[-1] - fp[0]) / (xp[-1] - xp[0])
        else:
            s_lo, s_hi = (fp[1] - fp[0]) / (xp[1] - xp[0]), (fp[-1] - fp[-2]) / (xp[-1] - xp[-2])
        y[v < xp[0]] = fp[0] + (v[v < xp[0]] - xp[0]) * s_lo
        y[v > xp[-1]] = fp[-1] + (v[v > xp[-1]] - xp[-1]) * s_hi
        if isinstance(est, NyulStandardizer):  # voxels beyond the 1st and 99th percentiles: both extensions
            assert (v < xp[0]).any() and (v > xp[-1]).any()
        same_bits(out, y.astype(F.output_dtype(dtype)))


def test_threaded_quantiles_equal_numpy(threaded):
    rng = np.random.default_rng(20)
    x = volume(rng, np.int16, (13, 14, 15))
    m = rng.random(x.shape) > 0.3
    lv = np.linspace(0, 1, 37)
    np.testing.assert_allclose(volume_quantiles(x, lv, mask=m), np.quantile(x[m], lv), rtol=0, atol=1e-9)


def quantized(rng, shape, dtype=np.float32):
    """Stored integers times a scale, as MR volumes read with their NIfTI scaling: few distinct floats."""
    return (rng.integers(0, 250, shape) * 11.83).astype(dtype)


@pytest.fixture(params=["one chunk", "threads"])
def layout(request, monkeypatch):
    """A small volume's bins come from one sort; a large one's (here: forced) are checked voxel by voxel."""
    if request.param == "threads":
        monkeypatch.setattr(F, "CHUNK", 97)
        monkeypatch.setattr(F, "SMALL", 0)
        monkeypatch.setattr(F, "PARALLEL_MIN", 1)
        monkeypatch.setattr(F, "_cores", lambda: 3)
    return request.param


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_few_distinct_floats_are_binned_with_skimage_bits(dtype, layout):
    rng = np.random.default_rng(21)
    src, ref = quantized(rng, (13, 14, 15), dtype), quantized(rng, (11, 12, 13), dtype)
    assert isinstance(F._value_table(src, None), F._BinnedTable)
    same_bits(match_histograms(src, ref), sk_match_histograms(src, ref))
    m, rm = src > 300, ref < 2500
    assert isinstance(F._value_table(src, m), F._BinnedTable)
    same_bits(match_histograms(src, ref, m, reference_mask=rm), dense_match(src, ref, m, rm))


def test_integral_float64_ct_is_binned_with_skimage_bits():
    # CT read as float64 (nibabel's get_fdata): integers from -1024 to 3071, not sorted but counted in bins.
    rng = np.random.default_rng(22)
    src = rng.integers(-1024, 3072, (16, 17, 18)).astype(np.float64)
    ref = rng.integers(-1024, 3072, (12, 13, 14)).astype(np.float64)
    assert isinstance(F._value_table(src, None), F._BinnedTable)
    same_bits(match_histograms(src, ref), sk_match_histograms(src, ref))


def sampled_binning(flat):
    return F._binning(np.unique(flat[:: max(1, flat.size // F.SAMPLE)]), flat.min(), flat.max(), flat.size)


@pytest.mark.parametrize("workers", [1, 3])
def test_a_value_the_sample_missed_in_a_taken_bin_falls_back_to_sorting(workers, monkeypatch):
    monkeypatch.setattr(F, "SAMPLE", 8)  # a strided sample of ~8 voxels
    monkeypatch.setattr(F, "CHUNK", 97)
    monkeypatch.setattr(F, "SMALL", 0)
    monkeypatch.setattr(F, "PARALLEL_MIN", 1 if workers > 1 else 1 << 40)
    monkeypatch.setattr(F, "_cores", lambda: workers)
    rng = np.random.default_rng(23)
    src, ref = quantized(rng, (10, 10, 10)), quantized(rng, (9, 9, 9))
    far = src.reshape(-1)[src.size - 1]
    src.reshape(-1)[-2] = np.nextafter(far, np.float32(np.inf))  # one float step from a value, off the sample
    flat = src.reshape(-1)
    assert sampled_binning(flat) is not None  # the bins were tried...
    assert F._BinnedTable.checked(flat, None) is None  # ...and the check saw two values in one bin
    assert isinstance(F._value_table(src, None), F._SortedTable)
    same_bits(match_histograms(src, ref), sk_match_histograms(src, ref))
    same_bits(match_histograms(ref, src), sk_match_histograms(ref, src))  # as the reference too


def test_values_too_close_for_bins_are_sorted():
    rng = np.random.default_rng(26)
    src, ref = quantized(rng, (10, 10, 10)), quantized(rng, (9, 9, 9))
    src.reshape(-1)[-2] = np.nextafter(src.reshape(-1)[-1], np.float32(np.inf))
    assert F._BinnedTable.from_sort(src.reshape(-1), None) is None  # one float step apart: too many bins
    assert isinstance(F._value_table(src, None), F._SortedTable)
    same_bits(match_histograms(src, ref), sk_match_histograms(src, ref))


def test_sorted_values_sharing_a_bin_are_refused(monkeypatch):
    monkeypatch.setattr(F, "BIN_SPREAD", 0.3)  # bins wider than the closest values: some must share
    rng = np.random.default_rng(27)
    src, ref = quantized(rng, (10, 10, 10)), quantized(rng, (9, 9, 9))
    assert F._BinnedTable.from_sort(src.reshape(-1), None) is None
    same_bits(match_histograms(src, ref), sk_match_histograms(src, ref))


def test_workers_that_saw_different_values_in_one_bin_fall_back_to_sorting(monkeypatch, threaded):
    monkeypatch.setattr(F, "SAMPLE", 8)
    rng = np.random.default_rng(25)
    src = quantized(rng, (10, 10, 10))
    flat = src.reshape(-1)
    value = np.float32(1183.0)
    flat[np.isclose(flat, value, atol=30)] = 0.0
    flat[10], flat[990] = value, np.nextafter(value, np.float32(np.inf))  # first and last worker's part only
    low, scale, n_bins = sampled_binning(flat)
    first, last = F._BinnedTable.bins_of(flat[[10, 990]], low, scale)
    assert first == last  # one bin, seen by two different workers: only their merge can see the clash
    assert F._BinnedTable.checked(flat, None) is None
    ref = quantized(rng, (9, 9, 9))
    same_bits(match_histograms(src, ref), sk_match_histograms(src, ref))


@pytest.mark.parametrize("zeros", ["negative", "positive", "both"])
def test_binned_reference_zeros_take_numpys_sign(zeros, monkeypatch):
    monkeypatch.setattr(F, "SMALL", 0)  # the reference is binned (a small one is sorted)
    rng = np.random.default_rng(24)
    ref = quantized(rng, (10, 10, 10))
    flat = ref.reshape(-1)
    flat[flat == 0] = 1.0
    flat[:40] = {"negative": -0.0, "positive": 0.0, "both": 0.0}[zeros]
    if zeros == "both":
        flat[:40:3] = -0.0
    assert F.value_bins(flat) is not None
    src = ref[::-1].copy()  # the same histogram: the reference knots are hit exactly, zero included
    out = match_histograms(src, ref)
    same_bits(out, sk_match_histograms(src, ref))
    if zeros != "both":
        assert np.signbit(out[src == 0]).all() == (zeros == "negative")
