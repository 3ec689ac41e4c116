"""Plain functions: exact histogram matching, voxel quantiles, z-score and percentile clip-and-rescale.

Exact histogram matching needs, for every voxel, how many voxels hold its value or less. How that is
found decides the speed (measured by ``benchmarks/harmonize_speed.py``); every route gives scikit-image's bits:

- integer volumes (CT in HU, uint8 MR) are *counted*: ``np.bincount`` of ``value - min`` in chunks,
  then one table lookup per voxel: linear time, and no int64 temporary the size of a large volume;
- float volumes with few distinct values (MR stored as scaled integers, CT stored as floats) are
  counted the same way in exact value bins, ``floor((v - min) * scale)`` with a scale that keeps
  every distinct value in a bin of its own (found by one sort of a small volume, checked voxel by
  voxel in a large one);
- other float volumes (and integers too wide to count) are *sorted once*: each voxel's 32-bit order
  key (the float32 bits made monotone, ``-0.0`` merged with ``+0.0``) is packed with its position
  into one uint64, and ``np.sort`` of those (a vectorised sort) replaces the much slower ``argsort``
  inside the ``np.unique(..., return_inverse=True)`` scikit-image calls; float64 values that are not
  all float32 take scikit-image's own route.

Chunks of large volumes are processed by a few threads (numpy releases the GIL in its casts, lookups,
scatters and sorts, and in ``np.bincount``'s counting loop, though not in its min/max pass).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from knotwork.harmonize._checks import (
    check_mask,
    check_not_constant,
    check_volume,
    statistics_mask,
)

# Voxels per chunk: each worker's reused int64 index buffer (256 kB) and the chunk's temporaries stay in cache
# (and, small, are reused by malloc rather than mapped afresh) whatever the volume size.
CHUNK = 1 << 15
# A volume of at most this many voxels is one chunk: fewer calls, and its int64 index (<= 2 MB) is kept.
SMALL = 1 << 18
# Largest integer range counted with bincount; wider ranges (e.g. uint32 data) are sorted instead.
MAX_COUNT_BINS = 1 << 22
# Volumes of at least this many voxels are processed by up to MAX_WORKERS threads, one per core.
PARALLEL_MIN = 1 << 21
MAX_WORKERS = 8
# Float volumes try value bins whose width is chosen on a sample of this many voxels: the closest two
# of its distinct values fall BIN_SPREAD bins apart.
SAMPLE = 1 << 12
BIN_SPREAD = 8.0
# Where the order key and the position sit in a packed uint64 viewed as two uint32 words.
_KEY_WORD, _POS_WORD = (1, 0) if sys.byteorder == "little" else (0, 1)

__all__ = ["match_histograms", "volume_quantiles", "zscore", "clip_rescale", "output_dtype"]


def output_dtype(dtype: np.dtype) -> np.dtype:
    """Float32 for float16/float32 input, float64 otherwise: scikit-image's rule for ``match_histograms``."""
    return np.dtype(np.float32) if np.dtype(dtype) in (np.float16, np.float32) else np.dtype(np.float64)


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _workers(n: int) -> int:
    return 1 if n < PARALLEL_MIN else max(1, min(_cores(), MAX_WORKERS, n // CHUNK))


def over_parts(n: int, work: Callable[[int, int], object]) -> list:
    """``work(start, stop)`` on contiguous parts of ``range(n)``, one per worker thread; their results."""
    k = _workers(n)
    if k == 1:
        return [work(0, n)]
    cuts = [n * i // k for i in range(k + 1)]
    with ThreadPoolExecutor(k) as pool:
        return list(pool.map(work, cuts[:-1], cuts[1:]))


def chunk_len(length: int) -> int:
    """Voxels per chunk in a part of ``length`` voxels: all of them when the part is small."""
    return length if length <= SMALL else CHUNK


def chunks(start: int, stop: int) -> Iterator[tuple[int, int]]:
    step = chunk_len(stop - start)
    for s in range(start, stop, step):
        yield s, min(s + step, stop)


def _int_range(x: np.ndarray) -> tuple[int, int] | None:
    return (int(x.min()), int(x.max())) if x.dtype.kind in "iu" else None


def _counting_range(x: np.ndarray, rng: tuple[int, int] | None = None) -> tuple[int, int] | None:
    """``(lo, hi)`` of an integer volume to count, or None; unsigned values below 2**16 count from 0
    (the values themselves are the indices: no shift). ``rng`` is the volume's (min, max) if known."""
    rng = _int_range(x) if rng is None else rng
    if rng is None or rng[1] - rng[0] + 1 > MAX_COUNT_BINS:
        return None
    return (0, rng[1]) if x.dtype.kind == "u" and rng[1] < 1 << 16 else rng


def _shifted(v: np.ndarray, lo: int, buf: np.ndarray) -> np.ndarray:
    """``v - lo`` as intp in a reused buffer, computed in intp (an int16 difference would overflow)."""
    out = buf[: v.size]
    if lo == 0:
        np.copyto(out, v, casting="unsafe")
    else:  # for uint64 beyond 2**63 both sides wrap alike: the difference (< MAX_COUNT_BINS) is exact
        np.subtract(v, lo - (1 << 64) if lo >= 1 << 63 else lo, out=out, dtype=np.intp, casting="unsafe")
    return out


def _count(flat: np.ndarray, lo: int, n_bins: int, mask_flat: np.ndarray | None) -> np.ndarray:
    def work(start, stop):
        counts = np.zeros(n_bins, dtype=np.intp)
        buf = np.empty(chunk_len(stop - start), dtype=np.intp)
        for s, e in chunks(start, stop):
            v = flat[s:e] if mask_flat is None else flat[s:e][mask_flat[s:e]]
            counts += np.bincount(_shifted(v, lo, buf), minlength=n_bins)
        return counts

    return sum(over_parts(flat.size, work))


def gather(flat: np.ndarray, table: np.ndarray, index: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> np.ndarray:
    """``table[index(chunk, buffer)]`` over ``flat``, chunk by chunk in threads, in ``table``'s dtype."""
    out = np.empty(flat.size, dtype=table.dtype)

    def work(start, stop):
        buf = np.empty(chunk_len(stop - start), dtype=np.intp)
        for s, e in chunks(start, stop):
            # mode="clip" skips the bounds check; the indices are in range by construction.
            np.take(table, index(flat[s:e], buf), out=out[s:e], mode="clip")

    over_parts(flat.size, work)
    return out


def lookup(flat: np.ndarray, lo: int, table: np.ndarray) -> np.ndarray:
    """``table[flat - lo]`` for an integer ``flat``, in ``table``'s dtype."""
    return gather(flat, table, lambda v, buf: _shifted(v, lo, buf))


def _int_values(offsets: np.ndarray, lo: int) -> np.ndarray:
    """``lo + offsets`` as float64, added exactly in 64-bit integers (uint64 values may exceed int64)."""
    t = np.uint64 if lo >= 0 else np.int64
    return (offsets.astype(t) + t(lo)).astype(np.float64)


class _Table:
    """Distinct values of a volume, the statistics voxels per value, and the voxel -> value map.

    ``cumulative()`` counts the (masked) voxels at or below the i-th smallest value (int64, non-
    decreasing); ``values(idx)`` gives those values as float64; ``apply(lut)`` returns ``lut[i(v)]``
    for every voxel, flat, where ``i(v)`` is the index of the voxel's value.
    """

    def cumulative(self) -> np.ndarray:
        return np.cumsum(self.counts)

    def values(self, idx=slice(None)) -> np.ndarray:
        raise NotImplementedError

    def apply(self, lut: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class _CountedTable(_Table):
    """Integers in a range of at most MAX_COUNT_BINS: one bin per value from the minimum to the maximum."""

    def __init__(self, flat, lo, hi, mask_flat):
        self.flat, self.lo, self.index = flat, lo, None
        if chunk_len(flat.size) == flat.size:  # one chunk: keep its index for apply()
            # From 0, the values are the index (numpy casts them inside bincount and take).
            self.index = flat if lo == 0 else _shifted(flat, lo, np.empty(flat.size, dtype=np.intp))
            inside = self.index if mask_flat is None else self.index[mask_flat]
            self.counts = np.bincount(inside, minlength=hi - lo + 1)
        else:
            self.counts = _count(flat, lo, hi - lo + 1, mask_flat)

    def values(self, idx=slice(None)):
        offsets = np.arange(*idx.indices(self.counts.size)) if isinstance(idx, slice) else np.asarray(idx)
        return _int_values(offsets, self.lo)

    def apply(self, lut):
        if self.index is not None:
            return np.take(lut, self.index, mode="clip")
        return lookup(self.flat, self.lo, lut)


def _fits_float32(flat: np.ndarray) -> bool:
    """Whether every value of a float64 array is exactly a float32 (then float32 order keys are exact)."""
    return all(np.array_equal(flat[s:e].astype(np.float32), flat[s:e]) for s, e in chunks(0, flat.size))


def _order_keys(v: np.ndarray, lo: int | None) -> np.ndarray:
    """uint32 keys in the order of the values: ``v - lo`` for integers, else from the float32 bits.

    Float keys are the bits of ``v + 0.0`` (which turns -0.0 into +0.0, so the two zeros are one
    value, as for ``np.unique``) with the sign bit set for positives and every bit flipped for
    negatives: unsigned order is then numeric order.
    """
    if lo is not None:
        w = v.astype(np.uint64 if v.dtype.kind == "u" else np.int64)  # 64 bits: an int32 difference can overflow
        return (w - w.dtype.type(lo)).astype(np.uint32)
    bits = np.add(v, np.float32(0), dtype=np.float32).view(np.uint32)
    flip = (bits.view(np.int32) >> 31).view(np.uint32)  # all ones for negatives, zero otherwise
    flip |= 0x80000000
    bits ^= flip
    return bits


def _run_ends(ordered: np.ndarray) -> np.ndarray:
    """Where each run of equal values of a sorted array ends (exclusive): the cumulative run lengths."""
    change = np.empty(ordered.size, dtype=bool)
    np.not_equal(ordered[1:], ordered[:-1], out=change[:-1])
    change[-1] = True
    ends = np.flatnonzero(change)
    ends += 1
    return ends


def _decode_keys(k: np.ndarray) -> np.ndarray:
    """The float64 values of float order keys (the inverse of ``_order_keys``; zero comes back as +0.0)."""
    bits = np.where(k < 0x80000000, ~k, k ^ np.uint32(0x80000000))
    return bits.view(np.float32).astype(np.float64)


def _binning(distinct: np.ndarray, low, high, n: int) -> tuple[float, float, int] | None:
    """``(low, scale, n_bins)`` for bins ``floor((v - low) * scale)``, or None when values are too dense.

    The closest two of the sorted ``distinct`` values land BIN_SPREAD bins apart; the bins of a
    volume of ``n`` voxels from ``low`` to ``high`` must number at most MAX_COUNT_BINS and not many
    more than the voxels.
    """
    if high == low:
        return low, 1.0, 1
    cap = min(MAX_COUNT_BINS, max(1 << 16, n))
    gap = float(np.diff(distinct.astype(np.float64)).min()) if distinct.size > 1 else 0.0
    scale = BIN_SPREAD / (gap or (float(high) - float(low)) / (1 << 16))
    if not (float(high) - float(low)) * scale < cap / 2:  # (rounding in the bins' own dtype stays below cap)
        return None
    return low, scale, int(_BinnedTable.bins_of(np.array([high]), low, scale)[0]) + 1


class _BinnedTable(_Table):
    """Floats with few distinct values: bins ``floor((v - low) * scale)``, one value per bin.

    Floating-point subtraction and multiplication by a positive number never reverse an order, so the
    bins follow the values; the volume is then counted and looked up like an integer one. The bins
    are exact: a small volume's distinct values are known from one sort (``from_sort``); a large one
    is not sorted but checked voxel by voxel (``checked``). -0.0 and 0.0 share a bin and compare
    equal, so they are one value, as for ``np.unique``.
    """

    def __init__(self, flat, low, scale, seen, counts, index=None):
        self.flat, self.low, self.scale, self.seen, self.counts, self.index = flat, low, scale, seen, counts, index

    @classmethod
    def from_sort(cls, flat, mask_flat) -> _BinnedTable | None:
        """Bins from the distinct values of one sort, if they fall into distinct bins; else None."""
        ordered = np.sort(flat)
        ends = _run_ends(ordered)
        distinct = ordered[ends - 1]
        binning = _binning(distinct, distinct[0], distinct[-1], flat.size)
        if binning is None:
            return None
        low, scale, n_bins = binning
        at = cls.bins_of(distinct, low, scale)
        if not (at[1:] > at[:-1]).all():
            return None
        seen = np.full(n_bins, np.nan, dtype=flat.dtype)  # NaN: an empty bin (the input is finite)
        seen[at] = distinct
        scratch = ordered if ordered.dtype == (np.float64 if flat.dtype.itemsize > 4 else np.float32) else None
        index = cls.bins_of(flat, low, scale, scratch=scratch)  # the sorted copy is done with: reuse it
        if mask_flat is None:
            counts = np.zeros(n_bins, dtype=np.intp)
            counts[at] = np.diff(ends, prepend=0)
        else:
            counts = np.bincount(index[mask_flat], minlength=n_bins)
        return cls(flat, low, scale, seen, counts, index)

    @classmethod
    def checked(cls, flat, mask_flat) -> _BinnedTable | None:
        """Bins whose width is set on a strided sample of SAMPLE voxels, every voxel then checked: each
        bin keeps the value of its first voxel, and another value in the same bin returns None."""
        low, high = flat.min(), flat.max()
        binning = _binning(np.unique(flat[:: max(1, flat.size // SAMPLE)]), low, high, flat.size)
        if binning is None:
            return None
        low, scale, n_bins = binning
        failed: list[bool] = []

        def work(start, stop):
            seen = np.full(n_bins, np.nan, dtype=flat.dtype)
            counts = np.zeros(n_bins, dtype=np.intp)
            buf = np.empty(chunk_len(stop - start), dtype=np.intp)
            for s, e in chunks(start, stop):
                if failed:
                    return None
                v = flat[s:e]
                b = cls.bins_of(v, low, scale, buf[: v.size])
                if s == start:  # every bin is empty: keep the last value written to each
                    seen[b] = v
                else:
                    fresh = np.isnan(np.take(seen, b))
                    if fresh.any():
                        seen[b[fresh]] = v[fresh]
                if not np.array_equal(np.take(seen, b), v):
                    failed.append(True)
                    return None
                counts += np.bincount(b if mask_flat is None else b[mask_flat[s:e]], minlength=n_bins)
            return seen, counts

        parts = over_parts(flat.size, work)
        if failed:
            return None
        seen, counts = parts[0]
        for other, more in parts[1:]:  # workers' bins must agree where both saw a voxel
            if (seen != other).any(where=~(np.isnan(seen) | np.isnan(other))):
                return None
            seen = np.where(np.isnan(seen), other, seen)
            counts += more
        return cls(flat, low, scale, seen, counts)

    @staticmethod
    def bins_of(v: np.ndarray, low, scale, out: np.ndarray | None = None, scratch=None) -> np.ndarray:
        """``floor((v - low) * scale)`` as intp, in float32 for float16/32 input and float64 otherwise
        (``scratch``: an array of that dtype and size to compute in, else a new one)."""
        work = np.float64 if v.dtype.itemsize > 4 else np.float32
        t = np.subtract(v, work(low), dtype=work, out=scratch)  # exact low: the minimum of v's own dtype
        t *= work(scale)
        out = np.empty(v.size, dtype=np.intp) if out is None else out
        np.copyto(out, t, casting="unsafe")  # t >= 0, so truncation is floor
        return out

    def _bins(self, v: np.ndarray, buf: np.ndarray) -> np.ndarray:
        return self.bins_of(v, self.low, self.scale, buf[: v.size])

    def values(self, idx=slice(None)):
        return self.seen[idx].astype(np.float64)  # NaN for an empty bin, which no voxel maps to

    def apply(self, lut):
        if self.index is not None:
            return np.take(lut, self.index, mode="clip")
        return gather(self.flat, lut, self._bins)


class _SortedTable(_Table):
    """Values with a 32-bit order key, sorted once as ``key << 32 | position`` packed into a uint64.

    The sort orders the voxels by value (ties by position), so runs of equal keys are the distinct
    values, and the positions say where each voxel's result goes.
    """

    def __init__(self, flat, mask_flat, lo=None):
        n = flat.size
        self.lo, self.mask_flat = lo, mask_flat
        packed = np.empty(n, dtype=np.uint64)
        words = packed.view(np.uint32)
        self.keys, self.perm = words[_KEY_WORD::2], words[_POS_WORD::2]
        positions = np.arange(chunk_len(n), dtype=np.uint32)

        def fill(start, stop):
            for s, e in chunks(start, stop):
                self.keys[s:e] = _order_keys(flat[s:e], lo)
                np.add(positions[: e - s], s, out=self.perm[s:e])

        over_parts(n, fill)
        packed.sort()
        self.ends = _run_ends(self.keys)

    def cumulative(self):
        if self.mask_flat is None:
            return self.ends
        n = self.perm.size
        inside = np.empty(n, dtype=bool)

        def sorted_mask(start, stop):
            buf = np.empty(chunk_len(stop - start), dtype=np.intp)
            for s, e in chunks(start, stop):
                idx = buf[: e - s]
                np.copyto(idx, self.perm[s:e])
                np.take(self.mask_flat, idx, out=inside[s:e], mode="clip")

        over_parts(n, sorted_mask)
        starts = np.concatenate(([0], self.ends[:-1]))
        return np.cumsum(np.add.reduceat(inside, starts, dtype=np.int64))

    def values(self, idx=slice(None)):
        k = self.keys[self.ends[idx] - 1]
        return _decode_keys(k) if self.lo is None else _int_values(k, self.lo)

    def apply(self, lut):
        n, ends = self.perm.size, self.ends
        out = np.empty(n, dtype=lut.dtype)

        def scatter(start, stop):
            buf = np.empty(chunk_len(stop - start), dtype=np.intp)
            for s, e in chunks(start, stop):
                g0 = int(np.searchsorted(ends, s, side="right"))  # the run holding sorted position s
                g1 = int(np.searchsorted(ends, e, side="left"))  # the run holding sorted position e - 1
                reps = np.diff(np.minimum(ends[g0 : g1 + 1], e), prepend=s)
                idx = buf[: e - s]
                np.copyto(idx, self.perm[s:e])
                out[idx] = np.repeat(lut[g0 : g1 + 1], reps)

        over_parts(n, scatter)
        return out


class _UniqueTable(_Table):
    """Anything else (float64 values that are not float32, more than 2**32 voxels): ``np.unique``'s sort."""

    def __init__(self, flat, mask_flat):
        self.uniq, self.inverse = np.unique(flat, return_inverse=True)
        self.inverse = self.inverse.reshape(-1)
        inv = self.inverse if mask_flat is None else self.inverse[mask_flat]
        self.counts = np.bincount(inv, minlength=self.uniq.size)

    def values(self, idx=slice(None)):
        return self.uniq[idx].astype(np.float64)

    def apply(self, lut):
        out = np.empty(self.inverse.size, dtype=lut.dtype)

        def work(start, stop):
            for s, e in chunks(start, stop):
                np.take(lut, self.inverse[s:e], out=out[s:e], mode="clip")

        over_parts(out.size, work)
        return out


def _float32_keyed(x: np.ndarray, flat: np.ndarray) -> bool:
    """Whether a float volume's values all have float32 order keys (float16/32, or float64 that are float32)."""
    return flat.size < 1 << 32 and (x.dtype.itemsize <= 4 or _fits_float32(flat))


def value_bins(flat: np.ndarray, mask_flat: np.ndarray | None = None) -> _BinnedTable | None:
    """Exact value bins of a float volume with few distinct values, or None (see ``_BinnedTable``)."""
    if flat.size <= SMALL:
        return _BinnedTable.from_sort(flat, mask_flat)
    return _BinnedTable.checked(flat, mask_flat)


def _value_table(x: np.ndarray, mask: np.ndarray | None) -> _Table:
    flat = x.reshape(-1)
    mflat = None if mask is None else mask.reshape(-1)
    rng = _int_range(x)
    if rng is not None:
        counted = _counting_range(x, rng)
        if counted is not None:
            return _CountedTable(flat, *counted, mflat)
        lo, hi = rng
        if hi - lo < 1 << 32 and flat.size < 1 << 32:
            return _SortedTable(flat, mflat, lo=lo)
    else:
        table = value_bins(flat, mflat)
        if table is not None:
            return table
        if _float32_keyed(x, flat):
            return _SortedTable(flat, mflat)
    return _UniqueTable(flat, mflat)


def _negative_zeros(flat: np.ndarray, mask_flat: np.ndarray | None) -> int:
    n = 0
    for s, e in chunks(0, flat.size):
        v = flat[s:e] if mask_flat is None else flat[s:e][mask_flat[s:e]]
        n += int(np.count_nonzero((v == 0) & np.signbit(v)))
    return n


def reference_cdf(reference: np.ndarray, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values of a reference volume (inside ``mask``) and their cumulative fractions.

    Integer volumes are counted, and so are floats with few distinct values (binned order keys); the
    others are sorted with ``np.sort``, the sort inside the ``np.unique(..., return_counts=True)``
    scikit-image calls, so the values are the same down to the sign of a zero (np.unique keeps the
    first of the equal -0.0 and 0.0 as sorted; counted zeros take the one sign present).

    Returns
    -------
    values : ndarray of shape (n_distinct,)
        Sorted distinct intensities.
    quantiles : ndarray of shape (n_distinct,)
        Fraction of (masked) voxels at or below each value; the last is 1.
    """
    flat = reference.reshape(-1)
    mflat = None if mask is None else mask.reshape(-1)
    rng = _counting_range(reference)
    if rng is not None:
        lo, hi = rng
        counts = _count(flat, lo, hi - lo + 1, mflat)
        keep = np.flatnonzero(counts)
        return _int_values(keep, lo), np.cumsum(counts[keep]) / counts.sum()
    table = value_bins(flat, mflat) if flat.size > SMALL else None  # a small one: np.sort is cheaper
    if table is not None:
        keep = np.flatnonzero(table.counts)
        values, counts = table.values(keep), table.counts[keep]
        zero = np.flatnonzero(values == 0)
        negative = _negative_zeros(flat, mflat) if zero.size else 0
        if negative == 0 or negative == counts[zero[0]]:
            values[zero] = -0.0 if negative else 0.0
            return values, np.cumsum(counts) / counts.sum()
    ordered = flat[mflat] if mflat is not None else flat
    if np.may_share_memory(ordered, reference):
        ordered = ordered.copy()
    ordered.sort()  # as np.unique sorts its C-order copy: the same order of -0.0 and 0.0
    ends = _run_ends(ordered)
    firsts = np.empty_like(ends)  # np.unique keeps the first of equal values (-0.0 or 0.0, as sorted)
    firsts[0], firsts[1:] = 0, ends[:-1]
    return ordered[firsts].astype(np.float64), ends / ordered.size


def _apply_cdf_map(
    x: np.ndarray,
    mask: np.ndarray | None,
    ref_values: np.ndarray,
    ref_quantiles: np.ndarray,
    dtype: np.dtype,
    *,
    name: str = "source",
    table: _Table | None = None,
) -> np.ndarray:
    table = _value_table(x, mask) if table is None else table
    cum = table.cumulative()
    total = int(cum[-1])
    # The smallest and the largest value holding statistics voxels (all values, without a mask).
    first, last = int(np.searchsorted(cum, 0, side="right")), int(np.searchsorted(cum, total, side="left"))
    lo, hi = table.values([first, last])
    check_not_constant(lo, hi, name=name)
    # Voxels outside the masked intensity range keep their distance to it, scaled by the ratio of
    # ranges, so the map stays strictly monotone instead of collapsing the background to one value.
    at_lo, at_hi = np.interp(cum[[first, last]] / total, ref_quantiles, ref_values)
    slope = (ref_values[-1] - ref_values[0]) / (hi - lo)
    # The table is built in chunks, cast as it goes: no float64 copy of it when the output is float32.
    lut = np.empty(cum.size, dtype=dtype)

    def fill(start, stop):
        for s, e in chunks(start, stop):
            y = np.interp(cum[s:e] / total, ref_quantiles, ref_values)
            if mask is not None:
                v = table.values(slice(s, e))
                below, above = v < lo, v > hi
                y[below] = at_lo + (v[below] - lo) * slope
                y[above] = at_hi + (v[above] - hi) * slope
            lut[s:e] = y

    over_parts(cum.size, fill)
    return table.apply(lut).reshape(x.shape)


def match_histograms(source, reference, mask=None, *, reference_mask=None, dtype=None) -> np.ndarray:
    """Map ``source`` so its intensity histogram equals that of ``reference`` (exact CDF matching).

    Each distinct source value ``v`` goes to the reference value at the same cumulative fraction,
    ``F_ref^-1(F_src(v))``, interpolated linearly between reference values. Without masks the result
    equals :func:`skimage.exposure.match_histograms` bit for bit (same values, same output dtype),
    found without scikit-image's argsort: integer volumes and floats with few distinct values are
    counted, other floats sorted once by a vectorised sort, large volumes in several threads (see
    this module's notes; speed side by side in ``benchmarks/harmonize_speed.py``). With
    ``dtype=np.float32`` the result is scikit-image's cast to float32, at half the memory.

    Parameters
    ----------
    source : ndarray
        Volume to transform, any shape, integer or float.
    reference : ndarray
        Volume whose histogram is the target; any shape.
    mask : ndarray of bool or labels, optional
        Same shape as ``source``; only these voxels define the source histogram. All voxels are
        mapped: those outside the masked intensity range are extended linearly (keeps order).
    reference_mask : ndarray of bool or labels, optional
        Same shape as ``reference``; only these voxels define the target histogram.
    dtype : numpy dtype, optional
        Output dtype; default float32 for float16/32 input and float64 otherwise (scikit-image's rule).

    Returns
    -------
    ndarray of the shape of ``source``

    Raises
    ------
    HarmonizeError
        If a volume is empty, non-numeric or non-finite, a mask has the wrong shape or is empty, or
        the reference voxels are constant.

    Examples
    --------
    >>> import numpy as np
    >>> from knotwork.harmonize import match_histograms
    >>> x = np.array([[0, 1], [1, 2]], dtype=np.int16)
    >>> match_histograms(x, x * 10 + 5).tolist()
    [[5.0, 15.0], [15.0, 25.0]]
    """
    src = check_volume(source, name="source")
    ref = check_volume(reference, name="reference")
    m = check_mask(mask, src.shape, name="mask")
    rm = check_mask(reference_mask, ref.shape, name="reference_mask")
    out = np.dtype(dtype) if dtype is not None else output_dtype(src.dtype)
    table = None
    if ref.dtype.kind == "f" and _workers(ref.size) > 1:
        # A float reference is sorted; that runs (GIL released) while the source is sorted or counted.
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(reference_cdf, ref, rm)
            table = _value_table(src, m)
            ref_values, ref_quantiles = pending.result()
    else:
        ref_values, ref_quantiles = reference_cdf(ref, rm)
    check_not_constant(ref_values[0], ref_values[-1], name="reference")
    return _apply_cdf_map(src, m, ref_values, ref_quantiles, out, table=table)


def _masked_sample(x: np.ndarray, mask: np.ndarray | None, max_samples: int | None, seed) -> np.ndarray:
    """The statistics voxels, or a seeded uniform subsample of at most ``max_samples`` of them."""
    n_in = x.size if mask is None else int(np.count_nonzero(mask))
    if max_samples is None or n_in <= max_samples:
        return x.reshape(-1) if mask is None else x[mask]
    rng = np.random.default_rng(seed)
    # Draw positions over the whole volume with replacement and keep those in the mask: no
    # flatnonzero(mask), whose int64 index array would be 4-8x the volume's memory.
    flat, mflat = x.reshape(-1), None if mask is None else mask.reshape(-1)
    picked: list[np.ndarray] = []
    need = max_samples
    while need > 0:
        idx = rng.integers(0, x.size, size=int(need * x.size / n_in * 1.1) + 16)
        if mflat is not None:
            idx = idx[mflat[idx]]
        picked.append(flat[idx[:need]])
        need -= min(need, idx.size)
    return np.concatenate(picked)


def volume_quantiles(volume, levels, *, mask=None, max_samples: int | None = 2_000_000, seed=0) -> np.ndarray:
    """Intensity quantiles of a volume (inside ``mask``) at ``levels`` in [0, 1].

    Integer volumes are counted exactly; float volumes use every voxel up to ``max_samples`` and a
    seeded uniform subsample beyond. The definition is numpy's default (linear) ``np.quantile``.

    Parameters
    ----------
    volume : ndarray
    levels : array-like of float in [0, 1]
    mask : ndarray of bool or labels, optional
    max_samples : int or None, default 2_000_000
        Float volumes with more statistics voxels are subsampled; None uses all.
    seed : int or numpy Generator, default 0
        Seeds the subsample only.

    Returns
    -------
    ndarray of float64, shape ``(len(levels),)``
    """
    x = check_volume(volume)
    m = check_mask(mask, x.shape)
    lv = np.asarray(levels, dtype=np.float64)
    rng = _counting_range(x)
    if rng is None:
        return np.quantile(_masked_sample(x, m, max_samples, seed), lv)
    lo, hi = rng
    counts = _count(x.reshape(-1), lo, hi - lo + 1, None if m is None else m.reshape(-1))
    cum = np.cumsum(counts)
    n = int(cum[-1])
    pos = lv * (n - 1)  # fractional rank, as np.quantile's linear method
    below = np.floor(pos).astype(np.int64)
    frac = pos - below
    v0 = np.searchsorted(cum, below, side="right")  # value index of the rank-`below` voxel
    v1 = np.searchsorted(cum, np.minimum(below + 1, n - 1), side="right")
    return lo + v0 + frac * (v1 - v0)


def _stats_mask(x, mask, foreground_threshold, name):
    return statistics_mask(x, check_mask(mask, x.shape, name=f"mask of {name}"), foreground_threshold, name=name)


def zscore(volume, mask=None, *, foreground_threshold: float | None = None) -> np.ndarray:
    """Per-volume z-score ``(x - mean) / std`` with statistics over ``mask`` (all voxels mapped).

    Returns float32 for float16/32 input and float64 otherwise. Raises ``HarmonizeError`` when the
    statistics voxels are constant.
    """
    x = check_volume(volume)
    m = _stats_mask(x, mask, foreground_threshold, "volume")
    v = x.reshape(-1) if m is None else x[m]
    mean, std = float(v.mean(dtype=np.float64)), float(v.std(dtype=np.float64))
    check_not_constant(0.0, std, name="volume")
    return ((x - mean) / std).astype(output_dtype(x.dtype), copy=False)


def clip_rescale(
    volume, mask=None, *, percentiles=(0.5, 99.5), out_range=(0.0, 1.0), foreground_threshold=None
) -> np.ndarray:
    """Clip to the volume's own ``percentiles`` (over ``mask``) and rescale linearly to ``out_range``.

    This is TorchIO's ``RescaleIntensity(out_min_max, percentiles)`` and nnU-Net's 0.5/99.5 clip.
    """
    x = check_volume(volume)
    m = _stats_mask(x, mask, foreground_threshold, "volume")
    lo, hi = volume_quantiles(x, np.asarray(percentiles) / 100.0, mask=m)
    check_not_constant(lo, hi, name="volume")
    a, b = out_range
    y = (np.clip(x, lo, hi) - lo) * ((b - a) / (hi - lo)) + a
    return y.astype(output_dtype(x.dtype), copy=False)
