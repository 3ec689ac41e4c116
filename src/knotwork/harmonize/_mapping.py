"""Monotone piecewise-linear maps from knots, with the two extrapolation rules the harmonizers use."""

from __future__ import annotations

import numpy as np

from knotwork.harmonize.functional import MAX_COUNT_BINS, chunks, lookup, over_parts, value_bins


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
    a thousand quantile segments. An integer volume, or a float one with few distinct values, is
    mapped through a table of its values (each evaluated once, then one lookup per voxel), with the
    same results as evaluating every voxel.
    """
    if extrapolate == "end-segments":
        s_lo = (fp[1] - fp[0]) / (xp[1] - xp[0])
        s_hi = (fp[-1] - fp[-2]) / (xp[-1] - xp[-2])
    else:
        s_lo = s_hi = (fp[-1] - fp[0]) / (xp[-1] - xp[0])

    def evaluate(v: np.ndarray) -> np.ndarray:
        y = np.interp(v, xp, fp)
        lo, hi = v < xp[0], v > xp[-1]
        y[lo] = fp[0] + (v[lo] - xp[0]) * s_lo
        y[hi] = fp[-1] + (v[hi] - xp[-1]) * s_hi
        return y

    flat = x.reshape(-1)
    if x.dtype.kind in "iu":
        lo, hi = int(x.min()), int(x.max())
        if hi - lo + 1 <= min(MAX_COUNT_BINS, 4 * flat.size):
            table = evaluate(np.arange(lo, hi + 1, dtype=np.float64)).astype(dtype, copy=False)
            return lookup(flat, lo, table).reshape(x.shape)
    else:
        binned = value_bins(flat)  # few distinct floats: evaluate each once
        if binned is not None:
            with np.errstate(invalid="ignore"):  # empty bins hold NaN; no voxel reads them
                table = evaluate(binned.values()).astype(dtype, copy=False)
            return binned.apply(table).reshape(x.shape)
    out = np.empty(flat.size, dtype=dtype)

    def work(start, stop):
        for s, e in chunks(start, stop):
            out[s:e] = evaluate(flat[s:e].astype(np.float64))

    over_parts(flat.size, work)
    return out.reshape(x.shape)
