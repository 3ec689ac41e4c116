"""The estimator protocol every harmonizer follows (scikit-learn style) and the registry of methods."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np

from knotwork.harmonize._checks import (
    HarmonizeError,
    check_mask,
    check_volume,
    statistics_mask,
    validate_params,
)

logger = logging.getLogger(__name__)


class NotFittedError(HarmonizeError):
    """``transform`` was called before ``fit`` (or ``set_state``)."""


def _optional_float(v: Any) -> bool:
    return v is None or np.isfinite(float(v))


# Constraint shared by every harmonizer: where the statistics come from when no mask is given.
THRESHOLD_CONSTRAINT = (_optional_float, "None or a finite float")


class Harmonizer:
    """Base class: ``fit`` on reference volumes, ``transform`` one volume, state as plain arrays.

    Subclasses declare ``name`` (the command-line method name), ``reference`` (paper),
    ``_parameter_constraints`` (one table, checked in ``fit``), ``_fitted`` (names of the learned
    attributes, all ending in ``_``), and implement ``_fit(volumes, masks)`` and
    ``_transform(volume, mask)``. ``__init__`` only stores its arguments.
    """

    name: ClassVar[str] = ""
    reference: ClassVar[str] = ""
    _parameter_constraints: ClassVar[dict[str, tuple[Callable[[Any], bool], str]]] = {}
    _fitted: ClassVar[tuple[str, ...]] = ()

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
        """Restore fitted attributes from ``get_state`` output; returns self."""
        missing = [a for a in self._fitted if a not in state]
        if missing:
            raise HarmonizeError(f"state for {type(self).__name__} lacks {missing}")
        self._validate_params()
        for a in self._fitted:
            setattr(self, a, np.asarray(state[a], dtype=np.float64))
        return self

    # -- subclass hooks -----------------------------------------------------------------------
    def _fit(self, volumes: list[np.ndarray], masks: list[np.ndarray | None]) -> None:  # pragma: no cover
        raise NotImplementedError

    def _transform(self, x: np.ndarray, mask: np.ndarray | None) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError


HARMONIZERS: dict[str, type[Harmonizer]] = {}


def register(cls: type[Harmonizer]) -> type[Harmonizer]:
    """Class decorator: add a harmonizer to ``HARMONIZERS`` under its command-line ``name``."""
    HARMONIZERS[cls.name] = cls
    return cls


def get_harmonizer(name: str, **params: Any) -> Harmonizer:
    """Build the harmonizer registered as ``name`` (``hm``, ``hm-volume``, ``nyul``, ``zscore``, ``clip``)."""
    if name not in HARMONIZERS:
        raise KeyError(f"unknown harmonization method {name!r}; known: {sorted(HARMONIZERS)}")
    return HARMONIZERS[name](**params)
