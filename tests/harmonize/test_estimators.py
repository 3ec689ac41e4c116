"""One shared suite for every registered harmonizer, then method-specific oracles."""

from __future__ import annotations

import numpy as np
import pytest

from knotwork.harmonize import (
    HARMONIZERS,
    HarmonizeError,
    HarmonizeTransform,
    HistogramMatcher,
    NotFittedError,
    NyulStandardizer,
    QuantileMatcher,
    ZScoreNormalizer,
    get_harmonizer,
    match_histograms,
)
from knotwork.harmonize.normalizers import ClipRescaleNormalizer

CASES = {
    "hm": {"n_levels": 200},
    "hm-volume": {},
    "nyul": {},
    "zscore": {},
    "clip": {},
}


def test_every_registered_method_has_a_case():
    assert set(CASES) == set(HARMONIZERS)


def test_not_fitted_error_is_the_shared_one():
    import knotwork._errors

    assert NotFittedError is knotwork._errors.NotFittedError
    assert HarmonizeError is knotwork._errors.HarmonizeError
    from knotwork.harmonize._checks import HarmonizeError as old_path

    assert old_path is HarmonizeError


@pytest.mark.parametrize("name", sorted(HARMONIZERS))
def test_every_fitted_attribute_declares_its_shape(name):
    cls = HARMONIZERS[name]
    assert set(cls._state_shapes) == set(cls._fitted)


@pytest.fixture(scope="module")
def refs():
    rng = np.random.default_rng(0)
    return [rng.gamma(2.0, 40.0 * (1 + i), (10, 11, 12)).astype(np.float32) for i in range(3)]


@pytest.mark.parametrize("name", sorted(CASES))
class TestCommon:
    def test_init_stores_only_params_and_unfitted_use_raises(self, name, refs):
        h = get_harmonizer(name, **CASES[name])
        assert not [a for a in vars(h) if a.endswith("_")]
        with pytest.raises(NotFittedError, match=f"This {type(h).__name__} instance is not fitted yet"):
            h.transform(refs[0])

    def test_state_round_trip_and_bad_state_names_the_field(self, name, refs):
        h = get_harmonizer(name, **CASES[name]).fit(refs)
        state = h.get_state()
        h2 = get_harmonizer(name, **CASES[name]).set_state(state)
        np.testing.assert_array_equal(h2.transform(refs[1]), h.transform(refs[1]))
        first = h._fitted[0]
        with pytest.raises(HarmonizeError, match=rf"field 'state\.{first}' is missing"):
            get_harmonizer(name, **CASES[name]).set_state({k: v for k, v in state.items() if k != first})
        bad = {**state, first: np.full_like(state[first], np.nan)}
        with pytest.raises(HarmonizeError, match=rf"field 'state\.{first}' holds non-finite values"):
            get_harmonizer(name, **CASES[name]).set_state(bad)
        wrong = {**state, first: np.zeros(state[first].shape + (2,))}
        with pytest.raises(HarmonizeError, match=rf"field 'state\.{first}' must have {state[first].ndim} dim"):
            get_harmonizer(name, **CASES[name]).set_state(wrong)

    def test_validate_refuses_what_transform_refuses(self, name, refs):
        h = get_harmonizer(name, **CASES[name])  # validate needs no fitted state
        h.validate(refs[0])
        flat = np.full((4, 4, 4), 3.0)
        with pytest.raises(HarmonizeError, match="flat.nii has a constant intensity"):
            h.validate(flat, name="flat.nii")
        with pytest.raises(HarmonizeError, match="has a constant intensity"):
            h.fit(refs).transform(flat)
        with pytest.raises(HarmonizeError, match=r"mask of v\.nii has shape \(2, 2\)"):
            h.validate(refs[0], np.ones((2, 2)), name="v.nii")

    def test_fit_returns_self_and_is_deterministic(self, name, refs):
        h = get_harmonizer(name, **CASES[name])
        assert h.fit(refs) is h
        a = h.transform(refs[1] * 3 + 1)
        b = get_harmonizer(name, **CASES[name]).fit(refs).transform(refs[1] * 3 + 1)
        np.testing.assert_array_equal(a, b)

    def test_output_is_monotone_in_input_and_input_untouched(self, name, refs):
        h = get_harmonizer(name, **CASES[name]).fit(refs)
        x = np.sqrt(refs[2]) + 5
        before = x.copy()
        y = h.transform(x)
        np.testing.assert_array_equal(x, before)
        order = np.argsort(x.ravel(), kind="stable")
        assert np.all(np.diff(y.ravel()[order].astype(np.float64)) >= -1e-4 * np.ptp(y))

    def test_state_round_trip(self, name, refs):
        h = get_harmonizer(name, **CASES[name]).fit(refs)
        h2 = get_harmonizer(name, **CASES[name]).set_state(h.get_state())
        np.testing.assert_array_equal(h.transform(refs[0]), h2.transform(refs[0]))

    def test_bad_inputs_name_the_volume(self, name, refs):
        h = get_harmonizer(name, **CASES[name])
        bad = refs[1].copy()
        bad[0, 0, 0] = np.nan
        with pytest.raises(HarmonizeError, match=r"volumes\[1\] holds 1 non-finite value"):
            h.fit([refs[0], bad])
        with pytest.raises(HarmonizeError, match=r"mask of volumes\[0\] has shape"):
            h.fit(refs[:1], masks=[np.ones((2, 2, 2), bool)])
        with pytest.raises(HarmonizeError, match=r"got 1 masks for 3 volumes"):
            h.fit(refs, masks=[None])
        h.fit(refs)
        with pytest.raises(HarmonizeError, match="volume has a constant intensity"):
            h.transform(np.full((4, 4, 4), 3.0))
        with pytest.raises(HarmonizeError, match="mask of volume is empty"):
            h.transform(refs[0], np.zeros(refs[0].shape, bool))


def test_unknown_method_and_bad_parameter_messages():
    with pytest.raises(HarmonizeError, match=r"unknown harmonization method 'hn'; known: \['clip', 'hm'"):
        get_harmonizer("hn")
    # The factory checks parameters at once (the constructors only store them).
    with pytest.raises(HarmonizeError, match=r"The 'n_levels' parameter of QuantileMatcher must be an int >= 2. Got 0"):
        get_harmonizer("hm", n_levels=0)
    with pytest.raises(HarmonizeError, match=r"ZScoreNormalizer has no parameter 'n_levels'"):
        get_harmonizer("zscore", n_levels=5)
    with pytest.raises(HarmonizeError, match=r"'reference_index' parameter of HistogramMatcher is 5, but only 1"):
        HistogramMatcher(reference_index=5).fit([np.arange(8.0)])
    with pytest.raises(HarmonizeError, match=r"The 'n_levels' parameter of QuantileMatcher must be an int >= 2. Got 1"):
        QuantileMatcher(n_levels=1).fit([np.arange(8.0)])
    with pytest.raises(HarmonizeError, match=r"The 'cutoffs' parameter of NyulStandardizer must be"):
        NyulStandardizer(cutoffs=(99, 1)).fit([np.arange(8.0)])


def test_histogram_matcher_equals_its_function_twin_and_picks_the_medoid():
    rng = np.random.default_rng(1)
    base = rng.gamma(2.0, 10.0, (9, 9, 9))
    refs = [base * 1.0, base * 2.0 + 5, base * 4.0 + 20]  # quantile functions ordered: the middle is the medoid
    h = HistogramMatcher().fit(refs)
    assert int(h.reference_index_) == 1
    src = rng.normal(0, 1, (8, 8, 8))
    np.testing.assert_array_equal(h.transform(src), match_histograms(src, refs[1]))
    h0 = HistogramMatcher(reference_index=2).fit(refs)
    np.testing.assert_array_equal(h0.transform(src), match_histograms(src, refs[2]))


def test_quantile_matcher_reference_is_the_mean_quantile_function_and_undoes_a_distortion():
    x = np.arange(1001, dtype=np.int16).reshape(7, 11, 13)
    h = QuantileMatcher(n_levels=11).fit([x, 3 * x + 100])
    # Quantiles at 0, 0.1, ..., 1 of 0..1000 are 0, 100, ..., 1000; their mean with 3x+100 is 2x+50.
    np.testing.assert_allclose(h.reference_quantiles_, 2 * np.arange(0, 1001, 100) + 50)
    single = QuantileMatcher(n_levels=1001).fit([x])
    fx = np.exp(x / 300.0)  # strictly increasing, non-linear
    np.testing.assert_allclose(single.transform(fx), x, atol=1e-6)


def test_nyul_landmarks_of_hand_made_volumes():
    v = np.arange(1001, dtype=np.float64)  # percentile p of 0..1000 is exactly 10 p
    h = NyulStandardizer().fit([v, 2 * v + 5])
    np.testing.assert_array_equal(h.percentiles_, [1, 10, 20, 30, 40, 50, 60, 70, 80, 90, 99])
    expected = (10 * h.percentiles_ - 10) / 980 * 100  # p1 -> 0, p99 -> 100 for both volumes
    np.testing.assert_allclose(h.landmarks_, expected)
    # An affine copy is standardized to the same scale: x = 3v + 7 maps to (v - 10) / 980 * 100.
    np.testing.assert_allclose(h.transform(3 * v + 7), (v - 10) / 980 * 100, atol=1e-9)
    raw = NyulStandardizer(standard_range=None).fit([v])
    np.testing.assert_allclose(raw.landmarks_, 10 * raw.percentiles_)


def test_zscore_and_clip_use_pooled_reference_statistics():
    rng = np.random.default_rng(2)
    refs = [rng.normal(10, 2, 500), rng.normal(20, 5, 300)]
    pooled = np.concatenate(refs)
    z = ZScoreNormalizer().fit(refs)
    np.testing.assert_allclose([z.mean_, z.std_], [pooled.mean(), pooled.std()])
    y = z.transform(rng.gamma(2.0, 3.0, 400))
    np.testing.assert_allclose([y.mean(), y.std()], [pooled.mean(), pooled.std()])
    c = ClipRescaleNormalizer().fit(refs)
    np.testing.assert_allclose(c.reference_range_, np.mean([np.percentile(r, [0.5, 99.5]) for r in refs], axis=0))


def test_foreground_threshold_restricts_statistics():
    v = np.concatenate([np.zeros(500), np.linspace(100, 200, 500)])
    z = ZScoreNormalizer(foreground_threshold=50).fit([v])
    np.testing.assert_allclose([z.mean_, z.std_], [v[500:].mean(), v[500:].std()])


def test_transform_wrapper_accepts_numpy_and_torch():
    import torch

    h = ZScoreNormalizer(to_reference=False).fit([np.arange(10.0)])
    t = HarmonizeTransform(h)
    x = np.arange(6.0)
    np.testing.assert_allclose(t(x), (x - x.mean()) / x.std(), rtol=1e-6)
    out = t(torch.arange(6.0))
    assert isinstance(out, torch.Tensor)
    np.testing.assert_allclose(out.numpy(), (x - x.mean()) / x.std(), rtol=1e-6)
    assert repr(t).startswith("HarmonizeTransform(ZScoreNormalizer(to_reference=False")
