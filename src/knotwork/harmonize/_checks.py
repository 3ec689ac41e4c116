"""Input checks shared by the harmonizers: volumes, masks and parameters, validated before any work."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from knotwork._errors import HarmonizeError, check_finite

__all__ = ["HarmonizeError", "check_mask", "check_not_constant", "check_volume", "statistics_mask", "validate_params"]


def check_volume(volume: Any, *, name: str = "volume") -> np.ndarray:
    """Return ``volume`` as a numeric array, or raise naming ``name`` when it is unusable.

    Raises
    ------
    HarmonizeError
        If the array is empty, not numeric (bool and complex included), or has NaN/inf voxels.
    """
    x = np.asarray(volume)
    if x.dtype.kind not in "iuf":
        raise HarmonizeError(f"{name} must hold integer or float intensities; got dtype {x.dtype}")
    if x.size == 0:
        raise HarmonizeError(f"{name} is empty (shape {x.shape})")
    check_finite(x, name, error=HarmonizeError)
    return x


def check_mask(mask: Any, shape: tuple[int, ...], *, name: str = "mask") -> np.ndarray | None:
    """Turn a boolean or label mask (non-zero = inside) into a bool array of ``shape``; None stays None.

    Raises
    ------
    HarmonizeError
        If the shape differs from the volume's or the mask selects no voxel.
    """
    if mask is None:
        return None
    m = np.asarray(mask)
    if m.shape != tuple(shape):
        raise HarmonizeError(f"{name} has shape {m.shape} but the volume has shape {tuple(shape)}")
    m = m if m.dtype == bool else m != 0
    if not m.any():
        raise HarmonizeError(f"{name} is empty: it selects no voxel")
    return m


def statistics_mask(
    x: np.ndarray, mask: np.ndarray | None, foreground_threshold: float | None, *, name: str
) -> np.ndarray | None:
    """Combine an explicit mask with an optional ``x > foreground_threshold`` rule (both must hold)."""
    if foreground_threshold is None:
        return mask
    fg = x > foreground_threshold
    m = fg if mask is None else (mask & fg)
    if not m.any():
        raise HarmonizeError(f"{name}: no voxel is above foreground_threshold={foreground_threshold}" + (
            " inside the mask" if mask is not None else ""))
    return m


def check_not_constant(lo: float, hi: float, *, name: str) -> None:
    """Refuse volumes whose statistics voxels hold a single value: no histogram shape to match."""
    if not hi > lo:
        raise HarmonizeError(f"{name} has a constant intensity ({lo!r}) over the voxels used for statistics")


def validate_params(owner: str, params: dict[str, Any], constraints: dict[str, tuple[Callable[[Any], bool], str]]):
    """Check each parameter against its declared constraint; the error names class, parameter and value."""
    for key, (ok, expected) in constraints.items():
        value = params[key]
        try:
            good = bool(ok(value))
        except (TypeError, ValueError):
            good = False
        if not good:
            raise HarmonizeError(f"The '{key}' parameter of {owner} must be {expected}. Got {value!r} instead.")
