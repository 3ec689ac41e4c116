"""MergeConfig: the validated, frozen parameters of one merge."""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field
from typing import Any

from knotwork._errors import MergeError


def is_finite_number(value: Any) -> bool:
    """A real number (not a bool) that is neither NaN nor infinite."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


# field -> (is it valid, what it must be); MergeConfig and the CLI both check through check_param.
_RULES = {
    "scale": (is_finite_number, "a finite number"),
    "topk": (lambda v: v is None or (is_finite_number(v) and 0 < v <= 100), "a percentage in (0, 100]"),
    "topk_scope": (lambda v: v in ("global", "module"), "'global' or 'module'"),
    "drop_rate": (lambda v: is_finite_number(v) and 0 <= v < 1, "a probability in [0, 1)"),
    "reduce": (lambda v: v in ("sum", "mean"), "'sum' or 'mean'"),
    "rel_tol": (lambda v: is_finite_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "task_scales": (lambda v: v is None or all(is_finite_number(w) for w in v), "finite numbers"),
}


def check_param(name: str, value: Any, *, label: str | None = None) -> None:
    """Raise :class:`MergeError` when ``value`` is not valid for the MergeConfig field ``name``.

    ``label`` names the parameter in the message (the CLI passes its option, e.g. ``--topk``).
    """
    ok, expected = _RULES[name]
    if not ok(value):
        raise MergeError(f"{label or name} must be {expected}; got {value!r}")


@dataclass(frozen=True)
class MergeConfig:
    """Parameters shared by all merge methods; each method reads the fields it needs (see ``MergeMethod.uses``).

    Parameters
    ----------
    scale : float, default 1.0
        λ, multiplies the merged update (one scalar for all tasks, as in the paper).
    topk : float or None, default None
        TIES: percent of each task's entries kept, in (0, 100]. None means the method's default: 20 for TIES,
        100 (sign election only) for DARE-TIES, as in the KnOTS paper.
    topk_scope : {"global", "module"}, default "global"
        One top-K cut per task over the whole model (the paper) or one per module.
    drop_rate : float, default 0.1
        DARE's drop probability p in [0, 1); survivors are rescaled by 1/(1-p).
    seed : int, default 0
        Seed of DARE's masks.
    reduce : {"sum", "mean"}, default "sum"
        How TA (and DARE without TIES) combines tasks.
    task_scales : tuple of float or None
        Optional per-task weights applied to each task's representation before merging (an extension; the
        paper uses one λ).
    rel_tol : float, default 1e-7
        KnOTS: drop singular components below rel_tol · σ_max.
    """

    scale: float = 1.0
    topk: float | None = None
    topk_scope: str = "global"
    drop_rate: float = 0.1
    seed: int = 0
    reduce: str = "sum"
    task_scales: tuple[float, ...] | None = field(default=None)
    rel_tol: float = 1e-7

    def __post_init__(self) -> None:
        for name in _RULES:
            check_param(name, getattr(self, name), label=f"The {name!r} parameter of MergeConfig")
        if self.task_scales is not None:
            object.__setattr__(self, "task_scales", tuple(float(w) for w in self.task_scales))

    def task_weights(self, n_tasks: int) -> tuple[float, ...]:
        """Per-task weights (all 1 unless ``task_scales`` is set), checked against the number of tasks."""
        if self.task_scales is None:
            return (1.0,) * n_tasks
        if len(self.task_scales) != n_tasks:
            raise MergeError(f"task_scales has {len(self.task_scales)} values for {n_tasks} tasks")
        return self.task_scales

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
