"""A TorchIO-style callable that applies a fitted harmonizer inside a training pipeline."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from knotwork.harmonize.base import Harmonizer


class HarmonizeTransform:
    """Apply a fitted harmonizer to an intensity array or tensor; labels are never passed to it.

    Accepts a numpy array or a torch tensor (any leading channel axes are treated as part of the
    volume) and returns the same kind, on the same device and in float32. The input is never
    modified: the harmonizers always allocate a new output. Given a TorchIO ``Subject`` or image
    (inside ``tio.Compose``) it applies :class:`knotwork.harmonize.torchio.Harmonize`.

    Parameters
    ----------
    harmonizer : Harmonizer
        A fitted harmonizer.

    Examples
    --------
    >>> import numpy as np
    >>> from knotwork.harmonize import HarmonizeTransform, ZScoreNormalizer
    >>> t = HarmonizeTransform(ZScoreNormalizer(to_reference=False).fit([np.arange(8.0)]))
    >>> round(float(t(np.arange(4.0)).mean()), 6)
    0.0
    """

    def __init__(self, harmonizer: Harmonizer):
        harmonizer.check_is_fitted()
        self.harmonizer = harmonizer

    def __call__(self, image: Any, mask: Any = None) -> Any:
        torch, tio = sys.modules.get("torch"), sys.modules.get("torchio")
        if tio is not None and isinstance(image, tio.Subject | tio.Image):  # e.g. inside tio.Compose
            from knotwork.harmonize.torchio import Harmonize

            return Harmonize(self.harmonizer)(image)
        if torch is not None and isinstance(image, torch.Tensor):
            arr = image.detach().cpu().numpy()
            m = None if mask is None else np.asarray(mask.detach().cpu().numpy() if hasattr(mask, "detach") else mask)
            out = self.harmonizer.transform(arr, m).astype(np.float32)
            return torch.from_numpy(out).to(image.device)
        return self.harmonizer.transform(np.asarray(image), mask).astype(np.float32, copy=False)

    def __repr__(self) -> str:
        return f"HarmonizeTransform({self.harmonizer!r})"
