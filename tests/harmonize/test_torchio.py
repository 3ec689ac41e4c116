"""knotwork.harmonize.torchio.Harmonize with the real TorchIO: Compose, include, labels, DataLoader workers."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

tio = pytest.importorskip("torchio")
torch = pytest.importorskip("torch")

from knotwork.harmonize import HarmonizeTransform, QuantileMatcher, ZScoreNormalizer  # noqa: E402
from knotwork.harmonize.torchio import Harmonize  # noqa: E402

AFFINE = np.array([[0, -1.2, 0, 10], [1.1, 0, 0, -5], [0, 0, 3, 2], [0, 0, 0, 1]], dtype=float)


def _harmonizer():
    rng = np.random.default_rng(0)
    return QuantileMatcher(n_levels=30).fit([rng.gamma(2.0, 10.0, (8, 8, 8)) for _ in range(2)])


def _subject(seed=1):
    rng = np.random.default_rng(seed)
    t1 = rng.normal(100, 20, (1, 6, 7, 5)).astype(np.float32)
    t2 = rng.normal(50, 5, (1, 6, 7, 5)).astype(np.float32)
    seg = (t1 > 100).astype(np.int16)
    return tio.Subject(
        t1=tio.ScalarImage(tensor=torch.from_numpy(t1), affine=AFFINE),
        t2=tio.ScalarImage(tensor=torch.from_numpy(t2), affine=AFFINE),
        seg=tio.LabelMap(tensor=torch.from_numpy(seg), affine=AFFINE),
    )


def test_in_compose_images_harmonized_labels_and_affine_kept():
    h = _harmonizer()
    subject = _subject()
    t = Harmonize(h)
    assert isinstance(t, tio.IntensityTransform)
    out = tio.Compose([t])(subject)
    for name in ("t1", "t2"):
        expected = h.transform(subject[name].data.numpy())  # copy=True: the input subject is untouched
        np.testing.assert_array_equal(out[name].data.numpy(), expected)
        np.testing.assert_array_equal(out[name].affine, AFFINE)
    np.testing.assert_array_equal(out.seg.data, subject.seg.data)
    assert out.seg.data.dtype == torch.int16
    np.testing.assert_array_equal(out.seg.affine, AFFINE)


def test_include_and_exclude_are_honoured():
    h = _harmonizer()
    subject = _subject()
    out = Harmonize(h, include=["t1"])(subject)
    np.testing.assert_array_equal(out.t1.data.numpy(), h.transform(subject.t1.data.numpy()))
    np.testing.assert_array_equal(out.t2.data, subject.t2.data)
    out = Harmonize(h, exclude=["t1"])(subject)
    np.testing.assert_array_equal(out.t1.data, subject.t1.data)
    np.testing.assert_array_equal(out.t2.data.numpy(), h.transform(subject.t2.data.numpy()))


def test_masking_method_names_a_label_map():
    h = ZScoreNormalizer(to_reference=False).fit([np.arange(10.0)])
    subject = _subject()
    out = Harmonize(h, masking_method="seg", include=["t1"])(subject)
    x, m = subject.t1.data.numpy(), subject.seg.data.numpy().astype(bool)
    np.testing.assert_array_equal(out.t1.data.numpy(), h.transform(x, m))
    assert abs(float(out.t1.data.numpy()[m].mean())) < 1e-4


def test_repr_pickle_and_unfitted():
    h = _harmonizer()
    t = Harmonize(h, include=["t1"])
    assert repr(t) == f"Harmonize(harmonizer={h!r}, masking_method=None)"
    t2 = pickle.loads(pickle.dumps(t))
    subject = _subject()
    np.testing.assert_array_equal(t2(subject).t1.data, t(subject).t1.data)
    with pytest.raises(ValueError, match="QuantileMatcher instance is not fitted"):
        Harmonize(QuantileMatcher())


def test_dataloader_with_two_workers():
    h = _harmonizer()
    subjects = [_subject(seed) for seed in range(4)]
    dataset = tio.SubjectsDataset(subjects, transform=tio.Compose([Harmonize(h)]))
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=2)
    batches = list(loader)
    got = torch.cat([b["t1"][tio.DATA] for b in batches]).numpy()
    expected = np.stack([h.transform(s.t1.data.numpy()) for s in subjects])
    np.testing.assert_array_equal(got, expected)


def test_harmonize_transform_inside_compose():
    """The plain callable used to fail inside tio.Compose ('Subject' object has no attribute 'detach')."""
    h = _harmonizer()
    subject = _subject()
    out = tio.Compose([HarmonizeTransform(h)])(subject)
    np.testing.assert_array_equal(out.t1.data.numpy(), h.transform(subject.t1.data.numpy()))
    np.testing.assert_array_equal(out.seg.data, subject.seg.data)
    x = torch.from_numpy(subject.t1.data.numpy().astype(np.float64))
    assert HarmonizeTransform(h)(x).dtype == torch.float32
