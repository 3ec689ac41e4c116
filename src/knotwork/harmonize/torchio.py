"""A TorchIO transform that applies a fitted harmonizer to the intensity images of a ``tio.Subject``.

TorchIO is optional: importing this module without it raises an ``ImportError`` naming the extra.
"""

from __future__ import annotations

import numpy as np

try:
    import torch
    import torchio as tio
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "knotwork.harmonize.torchio needs TorchIO: pip install 'knotwork[torchio]'"
    ) from exc

from knotwork.harmonize.base import Harmonizer


class Harmonize(tio.transforms.preprocessing.intensity.NormalizationTransform):
    """Apply a fitted harmonizer to every ``ScalarImage`` of a subject; label maps are untouched.

    A :class:`torchio.IntensityTransform` (through TorchIO's ``NormalizationTransform``), so it
    composes with ``tio.Compose``, honours ``include``/``exclude``/``copy``/``p``, keeps each image's
    affine, and pickles into ``DataLoader`` workers. The whole image tensor (channels included) is
    one volume for the harmonizer; the output dtype is the harmonizer's (float32 for float16/32
    input, float64 otherwise).

    Parameters
    ----------
    harmonizer : Harmonizer
        A fitted knotwork harmonizer (``transform(volume, mask=None)``).
    masking_method : str, callable or None
        Voxels that define each image's statistics, as in TorchIO's normalization transforms: the
        name of a ``LabelMap`` of the subject, an anatomical side (``'Left'``, ...) or a function of
        the image tensor. None (default) uses every voxel, as ``harmonizer.transform(volume)`` does.
    **kwargs
        TorchIO's ``Transform`` arguments: ``include``, ``exclude``, ``copy``, ``p``, ...

    Examples
    --------
    >>> import numpy as np, torch, torchio as tio
    >>> from knotwork.harmonize import ZScoreNormalizer
    >>> from knotwork.harmonize.torchio import Harmonize
    >>> h = ZScoreNormalizer(to_reference=False).fit([np.arange(8.0)])
    >>> subject = tio.Subject(t1=tio.ScalarImage(tensor=torch.arange(8.0).reshape(1, 2, 2, 2)))
    >>> round(float(tio.Compose([Harmonize(h)])(subject).t1.data.mean()), 6)
    0.0
    """

    def __init__(self, harmonizer: Harmonizer, masking_method=None, **kwargs):
        harmonizer.check_is_fitted()
        super().__init__(masking_method=masking_method, **kwargs)
        self.harmonizer = harmonizer
        self.args_names = ["harmonizer", "masking_method"]

    def apply_normalization(self, subject: tio.Subject, image_name: str, mask: torch.Tensor) -> None:
        """Replace the data of ``subject[image_name]`` by its harmonized values (same affine)."""
        image = subject[image_name]
        data = image.data.detach().cpu().numpy()
        m = None if self.masking_method is None else np.broadcast_to(mask.cpu().numpy().astype(bool), data.shape)
        image.set_data(torch.from_numpy(np.ascontiguousarray(self.harmonizer.transform(data, m))))
