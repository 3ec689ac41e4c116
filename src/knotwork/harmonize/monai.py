"""MONAI transforms that apply a fitted harmonizer: ``Harmonize`` (arrays) and ``Harmonized`` (dictionaries).

MONAI is optional: importing this module without it raises an ``ImportError`` naming the extra.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from copy import deepcopy
from typing import Any

import numpy as np

try:
    import torch
    from monai.data import MetaTensor
    from monai.transforms import MapTransform, Transform
    from monai.utils import TransformBackends
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("knotwork.harmonize.monai needs MONAI: pip install 'knotwork[monai]'") from exc

from knotwork.harmonize.base import Harmonizer


class Harmonize(Transform):
    """Apply a fitted harmonizer to one image: a ``MetaTensor``, a torch tensor or a numpy array.

    The whole array (channels included) is one volume for the harmonizer. The output is the input's
    kind on the input's device; a ``MetaTensor`` keeps its ``meta`` (``affine``,
    ``filename_or_obj``, ...) and applied operations. The dtype is the harmonizer's (float32 for
    float16/32 input, float64 otherwise). The input is not modified.

    Parameters
    ----------
    harmonizer : Harmonizer
        A fitted knotwork harmonizer (``transform(volume, mask=None)``).

    Examples
    --------
    >>> import numpy as np
    >>> from monai.data import MetaTensor
    >>> from knotwork.harmonize import ZScoreNormalizer
    >>> from knotwork.harmonize.monai import Harmonize
    >>> h = ZScoreNormalizer(to_reference=False).fit([np.arange(8.0)])
    >>> out = Harmonize(h)(MetaTensor(np.arange(8.0), meta={"filename_or_obj": "a.nii.gz"}))
    >>> out.meta["filename_or_obj"], abs(float(out.mean())) < 1e-6
    ('a.nii.gz', True)
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, harmonizer: Harmonizer):
        harmonizer.check_is_fitted()
        self.harmonizer = harmonizer

    def __call__(self, img: Any) -> Any:
        if not isinstance(img, torch.Tensor):
            return self.harmonizer.transform(np.asarray(img))
        out = torch.from_numpy(np.ascontiguousarray(self.harmonizer.transform(img.detach().cpu().numpy())))
        out = out.to(img.device)
        if isinstance(img, MetaTensor):
            return MetaTensor(out, meta=deepcopy(img.meta), applied_operations=deepcopy(img.applied_operations))
        return out

    def __repr__(self) -> str:
        return f"Harmonize({self.harmonizer!r})"


class Harmonized(MapTransform):
    """Dictionary twin of :class:`Harmonize`: harmonize the images under ``keys``; other keys are untouched.

    Parameters
    ----------
    keys : str or sequence of str
        The image keys (not the labels).
    harmonizer : Harmonizer
        A fitted knotwork harmonizer.
    allow_missing_keys : bool
        Skip keys absent from a dictionary instead of raising ``KeyError``.

    Examples
    --------
    >>> import numpy as np
    >>> from knotwork.harmonize import ZScoreNormalizer
    >>> from knotwork.harmonize.monai import Harmonized
    >>> h = ZScoreNormalizer(to_reference=False).fit([np.arange(8.0)])
    >>> d = Harmonized("image", h)({"image": np.arange(8.0), "label": np.ones(8)})
    >>> abs(float(d["image"].mean())) < 1e-6, float(d["label"].sum())
    (True, 8.0)
    """

    backend = Harmonize.backend

    def __init__(self, keys: Hashable | Sequence[Hashable], harmonizer: Harmonizer, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.harmonizer = harmonizer
        self.harmonize = Harmonize(harmonizer)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.harmonize(d[key])
        return d

    def __repr__(self) -> str:
        return (f"Harmonized(keys={list(self.keys)!r}, harmonizer={self.harmonizer!r}, "
                f"allow_missing_keys={self.allow_missing_keys})")
