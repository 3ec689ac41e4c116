"""The estimator protocol every harmonizer follows (scikit-learn style) and the registry of methods."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np

from knotwork._errors import NotFittedError
from knotwork.harmonize._checks import (
    HarmonizeError,
    check_mask,
    check_not_constant,
    check_volume,
    statistics_mask,
    validate_params,
)

logger = logging.getLogger(__name__)


def _optional_float(v: Any) -> bool:
    return v is None or np.isfinite(float(v))


# Constraint shared by every harmonizer: where the statistics come from when no mask is given.
THRESHOLD_CONSTRAINT = (_optional_float, "None or a finite float")


class Harmonizer:
    """Base class: ``fit`` on reference volumes, ``transform`` one volume, state as plain arrays.

    Subclasses declare ``name`` (the command-line method name), ``reference`` (paper),
    ``_parameter_constraints`` (one table, checked in ``fit``), ``_fitted`` (names of the learned
    attributes, all ending in ``_``) with their shapes in ``_state_shapes`` (a tuple per attribute:
    ints are fixed sizes, a parameter's name is that parameter's value, any other name must agree
    between attributes), and implement ``_fit(volumes, masks)`` and ``_transform(volume, mask)``.
    ``__init__`` only stores its arguments.
    """

    name: ClassVar[str] = ""
    reference: ClassVar[str] = ""
    _parameter_constraints: ClassVar[dict[str, tuple[Callable[[Any], bool], str]]] = {}
    _fitted: ClassVar[tuple[str, ...]] = ()
    _state_shapes: ClassVar[dict[str, tuple[int | str, ...]]] = {}
    needs_reference: ClassVar[bool] = False

    # -- parameters ---------------------------------------------------------------------------
    def get_params(self) -> dict[str, Any]:
        """The constructor arguments, by name (as scikit-learn's ``get_params``)."""
        return {k: getattr(self, k) for k in self._parameter_constraints}

    def _validate_params(self) -> None:
        validate_params(type(self).__name__, self.get_params(), self._parameter_constraints)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # -- fitting ------------------------------------------------------------------------------
    def _prepare(self, volume, mask, name: str) -> tuple[np.ndarray, np.ndarray | None]:
        x = check_volume(volume, name=name)
        m = check_mask(mask, x.shape, name=f"mask of {name}")
        return x, statistics_mask(x, m, self.foreground_threshold, name=name)

    def fit(self, volumes: Sequence[np.ndarray], masks: Sequence[np.ndarray | None] | None = None):
        """Learn the reference from ``volumes`` (statistics inside ``masks`` when given).

        Parameters
        ----------
        volumes : sequence of ndarray
            Reference volumes (the original domain). Shapes may differ.
        masks : sequence of ndarray or None, optional
            One bool or label mask per volume (non-zero = used for statistics), or None entries.

        Returns
        -------
        self
        """
        self._validate_params()
        if isinstance(volumes, np.ndarray) and volumes.dtype != object:
            raise HarmonizeError("volumes must be a sequence of arrays (e.g. a list), not one array; wrap it: [volume]")
        volumes = list(volumes)
        if not volumes:
            raise HarmonizeError(f"{type(self).__name__}.fit needs at least one reference volume; got none")
        masks = [None] * len(volumes) if masks is None else list(masks)
        if len(masks) != len(volumes):
            raise HarmonizeError(f"got {len(masks)} masks for {len(volumes)} volumes; pass one mask (or None) per volume")
        # Check everything before any work, so a bad last volume fails fast.
        prepared = [self._prepare(v, m, f"volumes[{i}]") for i, (v, m) in enumerate(zip(volumes, masks, strict=True))]
        for attr in self._fitted:
            self.__dict__.pop(attr, None)
        self._fit([p[0] for p in prepared], [p[1] for p in prepared])
        logger.info("fitted %r on %d volumes", self, len(prepared))
        return self

    def volume_statistics(self, volume: np.ndarray, mask: np.ndarray | None = None, *,
                          name: str = "volume") -> dict[str, np.ndarray]:
        """The small statistics ``fit`` takes from one reference volume (quantiles, landmarks, moments).

        Step one of a fit that never holds every reference at once: compute this per volume (in any
        process), then pass the list, in the order of the volumes, to ``fit_from_statistics``.

        Raises
        ------
        HarmonizeError
            Naming ``name`` when the volume or mask cannot be used.
        """
        self._validate_params()
        x, m = self._prepare(volume, mask, name)
        return self._volume_statistics(x, m, name)

    def fit_from_statistics(self, stats: Sequence[dict[str, np.ndarray]],
                            reference: Callable[[int], tuple[np.ndarray, np.ndarray | None]] | None = None):
        """Fit from ``volume_statistics`` of each reference volume, in order; equals ``fit`` on those volumes.

        Parameters
        ----------
        stats : sequence of dict
            ``volume_statistics(volumes[i], masks[i])`` for every reference volume i.
        reference : callable, optional
            ``reference(i) -> (volume, mask)``: reads reference volume i again. Only estimators with
            ``needs_reference`` (``hm-volume``) call it, once, for the volume they keep.

        Returns
        -------
        self
        """
        self._validate_params()
        stats = list(stats)
        if not stats:
            raise HarmonizeError(f"{type(self).__name__}.fit needs at least one reference volume; got none")
        if self.needs_reference and reference is None:
            raise HarmonizeError(f"{type(self).__name__}.fit_from_statistics needs reference=: a function "
                                 "i -> (volume, mask) that reads reference volume i")
        for attr in self._fitted:
            self.__dict__.pop(attr, None)
        self._fit_from_statistics(stats, reference)
        logger.info("fitted %r on the statistics of %d volumes", self, len(stats))
        return self

    def validate(self, volume: np.ndarray, mask: np.ndarray | None = None, *, name: str = "volume") -> None:
        """Check, without transforming, that ``transform`` can use ``volume`` (with ``mask``).

        The checks that need no fitted state: a numeric, non-empty, finite volume; a mask of the same shape
        that selects a voxel; statistics voxels (mask and ``foreground_threshold``) that hold more than one
        value. A batch runs this over every input before it writes anything.

        Raises
        ------
        HarmonizeError
            Naming ``name`` and what is wrong.
        """
        self._validate_params()
        x, m = self._prepare(volume, mask, name)
        values = x.reshape(-1) if m is None else x[m]
        check_not_constant(float(values.min()), float(values.max()), name=name)

    def transform(self, volume: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """Map every voxel of ``volume`` to the reference's intensity scale; the input is not modified.

        Parameters
        ----------
        volume : ndarray
        mask : ndarray of bool or labels, optional
            Voxels that define this volume's statistics; all voxels are mapped.

        Returns
        -------
        ndarray, same shape; float32 for float16/32 input and float64 otherwise.
        """
        self.check_is_fitted()
        x, m = self._prepare(volume, mask, "volume")
        return self._transform(x, m)

    def __call__(self, volume, mask=None):
        return self.transform(volume, mask)

    def check_is_fitted(self) -> None:
        """Raise ``NotFittedError`` naming the class when a fitted attribute is missing."""
        missing = [a for a in self._fitted if not hasattr(self, a)]
        if missing:
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with reference volumes "
                f"(or load a saved state) before 'transform'."
            )

    # -- state --------------------------------------------------------------------------------
    def get_state(self) -> dict[str, np.ndarray]:
        """The fitted attributes as float64 arrays (what ``io.save_harmonizer`` writes)."""
        self.check_is_fitted()
        return {a: np.asarray(getattr(self, a), dtype=np.float64) for a in self._fitted}

    def set_state(self, state: dict[str, Any]):
        """Restore fitted attributes from ``get_state`` output; returns self.

        Raises
        ------
        HarmonizeError
            Naming the state field (``state.<attribute>``) that is missing, not numeric, not finite, or of
            a shape that does not fit the parameters and the other fields.
        """
        self._validate_params()
        params, arrays, sizes = self.get_params(), {}, {}
        for a in self._fitted:
            if a not in state:
                raise HarmonizeError(f"field 'state.{a}' is missing (a fitted {type(self).__name__} has {list(self._fitted)})")
            try:
                arr = np.asarray(state[a], dtype=np.float64)
            except (TypeError, ValueError):
                raise HarmonizeError(f"field 'state.{a}' must hold numbers; got {_brief(state[a])}") from None
            if arr.size == 0:
                raise HarmonizeError(f"field 'state.{a}' is empty")
            if not np.isfinite(arr).all():
                raise HarmonizeError(f"field 'state.{a}' holds non-finite values (NaN or inf)")
            expected = self._state_shapes.get(a)
            if expected is not None:
                if arr.ndim != len(expected):
                    raise HarmonizeError(f"field 'state.{a}' must have {len(expected)} dimension(s); got shape {arr.shape}")
                for dim, got in zip(expected, arr.shape, strict=True):
                    if isinstance(dim, int):
                        want = dim
                    elif dim in params:  # a parameter fixes the size (n_levels)
                        want = params[dim]
                    else:  # a size the fields must agree on
                        want = sizes.setdefault(dim, got)
                    if got != want:
                        raise HarmonizeError(f"field 'state.{a}' has shape {arr.shape}; expected {dim} = {want} "
                                             "entries, as the parameters and the other fields say")
            arrays[a] = arr
        for a, arr in arrays.items():
            setattr(self, a, arr)
        return self

    # -- subclass hooks -----------------------------------------------------------------------
    def _fit(self, volumes: list[np.ndarray], masks: list[np.ndarray | None]) -> None:
        stats = [self._volume_statistics(v, m, f"volumes[{i}]")
                 for i, (v, m) in enumerate(zip(volumes, masks, strict=True))]
        self._fit_from_statistics(stats, lambda i: (volumes[i], masks[i]))

    def _volume_statistics(self, x: np.ndarray, mask: np.ndarray | None,
                           name: str) -> dict[str, np.ndarray]:  # pragma: no cover
        raise NotImplementedError

    def _fit_from_statistics(self, stats: list[dict[str, np.ndarray]],
                             reference: Callable[[int], tuple[np.ndarray, np.ndarray | None]] | None
                             ) -> None:  # pragma: no cover
        raise NotImplementedError

    def _transform(self, x: np.ndarray, mask: np.ndarray | None) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError


HARMONIZERS: dict[str, type[Harmonizer]] = {}


def register(cls: type[Harmonizer]) -> type[Harmonizer]:
    """Class decorator: add a harmonizer to ``HARMONIZERS`` under its command-line ``name``."""
    HARMONIZERS[cls.name] = cls
    return cls


def get_harmonizer(name: str, **params: Any) -> Harmonizer:
    """Build the harmonizer registered as ``name`` (``hm``, ``hm-volume``, ``nyul``, ``zscore``, ``clip``).

    Unlike the constructors, which only store their arguments, the factory checks the parameters at once,
    so a command refuses a bad option before it reads any volume.

    Raises
    ------
    HarmonizeError
        For an unknown name, an unknown parameter, or a parameter outside its constraint.
    """
    if name not in HARMONIZERS:
        raise HarmonizeError(f"unknown harmonization method {name!r}; known: {sorted(HARMONIZERS)}")
    cls = HARMONIZERS[name]
    unknown = sorted(set(params) - set(cls._parameter_constraints))
    if unknown:
        raise HarmonizeError(f"{cls.__name__} has no parameter {unknown[0]!r}; its parameters are "
                             f"{sorted(cls._parameter_constraints)}")
    harmonizer = cls(**params)
    harmonizer._validate_params()
    return harmonizer


def _brief(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
