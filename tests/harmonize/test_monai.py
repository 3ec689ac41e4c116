"""knotwork.harmonize.monai with the real MONAI: MetaTensor metadata kept, values the harmonizer's."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

monai = pytest.importorskip("monai")
torch = pytest.importorskip("torch")

from monai.data import MetaTensor  # noqa: E402
from monai.transforms import Compose, MapTransform, Transform  # noqa: E402

from knotwork.harmonize import NyulStandardizer, QuantileMatcher  # noqa: E402
from knotwork.harmonize.monai import Harmonize, Harmonized  # noqa: E402

AFFINE = torch.tensor([[0, -1.2, 0, 10], [1.1, 0, 0, -5], [0, 0, 3, 2], [0, 0, 0, 1]], dtype=torch.float64)


def _harmonizer():
    rng = np.random.default_rng(0)
    return QuantileMatcher(n_levels=30).fit([rng.gamma(2.0, 10.0, (8, 8, 8)) for _ in range(2)])


def _image(dtype=np.float32, seed=1):
    x = np.random.default_rng(seed).normal(100, 20, (1, 6, 7, 5)).astype(dtype)
    return MetaTensor(torch.from_numpy(x), affine=AFFINE, meta={"filename_or_obj": "/data/a.nii.gz", "site": 3})


def test_dict_transform_in_compose_keeps_meta():
    h = _harmonizer()
    image = _image()
    label = MetaTensor(torch.ones(1, 6, 7, 5, dtype=torch.int8), affine=AFFINE)
    t = Harmonized(keys="image", harmonizer=h)
    assert isinstance(t, MapTransform)
    out = Compose([t])({"image": image, "label": label, "id": "a"})
    assert isinstance(out["image"], MetaTensor)
    np.testing.assert_array_equal(out["image"].numpy(), h.transform(image.numpy()))
    assert out["image"].dtype == torch.float32
    torch.testing.assert_close(out["image"].affine, AFFINE)
    assert out["image"].meta["filename_or_obj"] == "/data/a.nii.gz" and out["image"].meta["site"] == 3
    assert out["label"] is label and out["id"] == "a"
    np.testing.assert_array_equal(image.numpy(), _image().numpy())  # the input is not modified


def test_missing_keys():
    h = _harmonizer()
    with pytest.raises(KeyError):
        Harmonized(["image", "t2"], h)({"image": _image()})
    out = Harmonized(["image", "t2"], h, allow_missing_keys=True)({"image": _image()})
    assert set(out) == {"image"}


@pytest.mark.parametrize("dtype", [np.float32, np.int16])
def test_array_transform_keeps_meta_and_dtype_policy(dtype):
    h = NyulStandardizer(standard_range=None).fit([np.random.default_rng(2).gamma(2.0, 10.0, (8, 8, 8))])
    image = _image(dtype)
    t = Harmonize(h)
    assert isinstance(t, Transform)
    out = Compose([t])(image)
    expected = h.transform(image.numpy())
    assert isinstance(out, MetaTensor) and out.dtype == torch.from_numpy(expected).dtype
    np.testing.assert_array_equal(out.numpy(), expected)
    torch.testing.assert_close(out.affine, AFFINE)
    assert out.meta["filename_or_obj"] == "/data/a.nii.gz"
    plain = t(torch.from_numpy(image.numpy()))
    assert type(plain) is torch.Tensor
    np.testing.assert_array_equal(plain.numpy(), expected)
    np.testing.assert_array_equal(t(image.numpy()), expected)


def test_repr_pickle_and_unfitted():
    h = _harmonizer()
    t = Harmonized("image", h)
    assert repr(t) == f"Harmonized(keys=['image'], harmonizer={h!r}, allow_missing_keys=False)"
    assert repr(Harmonize(h)) == f"Harmonize({h!r})"
    image = _image()
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(t))({"image": image})["image"], t({"image": image})["image"])
    with pytest.raises(ValueError, match="QuantileMatcher instance is not fitted"):
        Harmonized("image", QuantileMatcher())


def test_after_loadimaged_from_nifti(tmp_path):
    nib = pytest.importorskip("nibabel")
    from monai.transforms import EnsureChannelFirstd, LoadImaged

    x = np.random.default_rng(3).normal(100, 20, (6, 7, 5)).astype(np.float32)
    nib.save(nib.Nifti1Image(x, np.diag([0.7, 0.8, 2.5, 1.0])), str(tmp_path / "a.nii.gz"))
    h = _harmonizer()
    out = Compose([LoadImaged("image"), EnsureChannelFirstd("image"), Harmonized("image", h)])(
        {"image": str(tmp_path / "a.nii.gz")})
    loaded = Compose([LoadImaged("image"), EnsureChannelFirstd("image")])({"image": str(tmp_path / "a.nii.gz")})
    np.testing.assert_array_equal(out["image"].numpy(), h.transform(loaded["image"].numpy()))
    torch.testing.assert_close(out["image"].affine, loaded["image"].affine)
    assert out["image"].meta["filename_or_obj"] == str(tmp_path / "a.nii.gz")
