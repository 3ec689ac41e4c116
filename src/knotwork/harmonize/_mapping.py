"""Monotone piecewise-linear maps from knots, with the two extrapolation rules the harmonizers use."""

from __future__ import annotations

import numpy as np

from knotwork.harmonize.functional import CHUNK


def merge_ties(xp: np.ndarray, fp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Collapse equal source knots (e.g. many background zeros at several quantile levels).

    Tied ``xp`` get the mean of their ``fp``: ``np.interp`` needs increasing knots, and the mean keeps
    the map non-decreasing and sends a tied value to the middle of the levels it spans.
    """
    u, inv = np.unique(xp, return_inverse=True)
    return u, np.bincount(inv, weights=fp) / np.bincount(inv)


def piecewise_linear(x: np.ndarray, xp: np.ndarray, fp: np.ndarray, *, extrapolate: str, dtype) -> np.ndarray:
    """``np.interp(x, xp, fp)`` extended linearly beyond the end knots, computed chunk by chunk.

    ``extrapolate="end-segments"`` continues the first and last segments (Nyul/TorchIO);
    ``"overall"`` continues with the slope between the end knots, which is steadier than the last of
    a thousand quantile segments.
    """
    if extrapolate == "end-segments":
        s_lo = (fp[1] - fp[0]) / (xp[1] - xp[0])
        s_hi = (fp[-1] - fp[-2]) / (xp[-1] - xp[-2])
    else:
        s_lo = s_hi = (fp[-1] - fp[0]) / (xp[-1] - xp[0])
    flat = x.reshape(-1)
    out = np.empty(flat.size, dtype=dtype)
    for start in range(0, flat.size, CHUNK):
        v = flat[start : start + CHUNK].astype(np.float64)
        y = np.interp(v, xp, fp)
        lo, hi = v < xp[0], v > xp[-1]
        y[lo] = fp[0] + (v[lo] - xp[0]) * s_lo
        y[hi] = fp[-1] + (v[hi] - xp[-1]) * s_hi
        out[start : start + CHUNK] = y
    return out.reshape(x.shape)
