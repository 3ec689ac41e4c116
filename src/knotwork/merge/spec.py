"""MergeSpec: the whole of one merge job as typed data (mergekit's merge config), the same fields as the CLI flags.

A spec comes from a YAML/JSON mapping (``knotwork merge --config merge.yaml``) or from the flags, and goes back
into ``merge_report.json`` under ``"config"``, so a report can be fed back as a config to redo the merge::

    method: knots-ties
    adapters:
      - path: runs/mr          # a folder or a Hugging Face cache id
        weight: 1.0            # optional per-task weight (task_scales)
      - runs/trec
    parameters: {scale: 0.6, topk: 20}
    rank: null                 # null (exact), an integer K (truncate), or "full" (exact, full rank)
    base: null                 # a base model folder or cache id: write merged dense weights instead
    out: runs/merged
    device: cpu
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from knotwork._errors import MergeError
from knotwork.merge.config import MergeConfig
from knotwork.merge.registry import get_method

_PARAMETERS = tuple(f.name for f in fields(MergeConfig) if f.name != "task_scales")
_DEVICES = ("cpu", "cuda", "mps")


@dataclass(frozen=True)
class MergeSpec:
    """One merge job. ``rank`` is None (exact), a positive int, or ``"full"``; see :mod:`knotwork.merge.truncate`."""

    adapters: tuple[str, ...]
    out: str
    method: str = "knots-ties"
    parameters: Mapping[str, Any] = field(default_factory=dict)
    weights: tuple[float, ...] | None = None
    rank: int | str | None = None
    base: str | None = None
    device: str = "cpu"
    threads: int | None = None
    scheduler: str | None = None

    def __post_init__(self) -> None:
        if len(self.adapters) < 1:
            raise MergeError("a merge needs at least one adapter")
        try:
            get_method(self.method)
        except KeyError as err:
            raise MergeError(err.args[0]) from None
        unknown = sorted(set(self.parameters) - set(_PARAMETERS))
        if unknown:
            raise MergeError(f"unknown merge parameter {unknown[0]!r}; known: {', '.join(_PARAMETERS)}")
        if self.weights is not None:
            if len(self.weights) != len(self.adapters):
                raise MergeError(f"{len(self.weights)} task weights for {len(self.adapters)} adapters")
            bad = [w for w in self.weights if not isinstance(w, int | float) or not math.isfinite(w)]
            if bad:
                raise MergeError(f"task weight {bad[0]!r} is not a finite number")
        if self.rank is not None and self.rank != "full" and (
            isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1
        ):
            raise MergeError(f"rank must be an integer >= 1 or 'full'; got {self.rank!r}")
        if self.device not in _DEVICES:
            raise MergeError(f"device must be one of {', '.join(_DEVICES)}; got {self.device!r}")
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, int)
                                         or self.threads < 1):
            raise MergeError(f"threads must be an integer >= 1; got {self.threads!r}")
        self.config()  # MergeConfig's own checks, as a MergeError naming the parameter

    def config(self) -> MergeConfig:
        """The :class:`MergeConfig` of this job (per-task weights become ``task_scales``)."""
        try:
            return MergeConfig(**dict(self.parameters), task_scales=self.weights)
        except (TypeError, ValueError) as err:
            raise MergeError(str(err)) from None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str = "config") -> MergeSpec:
        """Build a spec from a parsed YAML/JSON mapping; errors name ``source`` and the field.

        A ``merge_report.json`` is accepted too: its ``"config"`` section is used.
        """
        if isinstance(data, Mapping) and isinstance(data.get("config"), Mapping) and "adapters" not in data:
            data = data["config"]
        if not isinstance(data, Mapping):
            raise MergeError(f"{source}: expected a mapping of fields (method, adapters, out, ...)")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise MergeError(f"{source}: unknown field {unknown[0]!r}; known fields: {', '.join(sorted(known))}")
        items = data.get("adapters")
        if not isinstance(items, list) or not items:
            raise MergeError(f"{source}: 'adapters' must be a non-empty list of paths or {{path, weight}} entries")
        paths, weights = [], []
        for i, item in enumerate(items):
            if isinstance(item, str):
                paths.append(item)
                weights.append(None)
            elif isinstance(item, Mapping) and isinstance(item.get("path"), str) and set(item) <= {"path", "weight"}:
                paths.append(item["path"])
                weights.append(item.get("weight"))
            else:
                raise MergeError(f"{source}: adapters[{i}] must be a path or a {{path, weight}} mapping; got {item!r}")
        if "out" not in data or not isinstance(data["out"], str):
            raise MergeError(f"{source}: 'out' (the output folder) is required")
        params = data.get("parameters") or {}
        if not isinstance(params, Mapping):
            raise MergeError(f"{source}: 'parameters' must be a mapping, e.g. {{scale: 0.6, topk: 20}}")
        explicit = data.get("weights")
        if explicit is not None and any(w is not None for w in weights):
            raise MergeError(f"{source}: give task weights either in 'weights' or per adapter, not both")
        if explicit is None and any(w is not None for w in weights):
            explicit = [1.0 if w is None else w for w in weights]
        try:
            return cls(
                adapters=tuple(paths), out=data["out"], method=data.get("method", cls.method),
                parameters=dict(params), weights=None if explicit is None else tuple(explicit),
                rank=data.get("rank"), base=data.get("base"), device=data.get("device", "cpu"),
                threads=data.get("threads"), scheduler=data.get("scheduler"),
            )
        except MergeError as err:
            raise MergeError(f"{source}: {err}") from None

    def to_mapping(self) -> dict[str, Any]:
        """The spec as plain data, in the shape :meth:`from_mapping` reads (with every parameter's effective value)."""
        adapters = [
            {"path": p, "weight": w} for p, w in zip(self.adapters, self.weights, strict=True)
        ] if self.weights is not None else list(self.adapters)
        params = get_method(self.method).effective_parameters(self.config())
        params.pop("task_scales", None)  # given per adapter above
        return {
            "method": self.method, "adapters": adapters, "parameters": params, "rank": self.rank,
            "base": self.base, "out": self.out, "device": self.device, "threads": self.threads,
            "scheduler": self.scheduler,
        }
