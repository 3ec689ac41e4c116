"""MergeConfig: the validated, frozen parameters of one merge."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any


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
        checks = [
            ("scale", math.isfinite(self.scale), "a finite float"),
            ("topk", self.topk is None or (0 < self.topk <= 100), "a percentage in (0, 100] or None"),
            ("topk_scope", self.topk_scope in ("global", "module"), "'global' or 'module'"),
            ("drop_rate", 0 <= self.drop_rate < 1, "a probability in [0, 1)"),
            ("reduce", self.reduce in ("sum", "mean"), "'sum' or 'mean'"),
            ("rel_tol", 0 <= self.rel_tol < 1, "a float in [0, 1)"),
            (
                "task_scales",
                self.task_scales is None or all(math.isfinite(w) for w in self.task_scales),
                "a tuple of finite floats or None",
            ),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ValueError(f"The {name!r} parameter of MergeConfig must be {expected}. Got {getattr(self, name)!r} instead.")
        if self.task_scales is not None:
            object.__setattr__(self, "task_scales", tuple(float(w) for w in self.task_scales))

    def task_weights(self, n_tasks: int) -> tuple[float, ...]:
        """Per-task weights (all 1 unless ``task_scales`` is set), checked against the number of tasks."""
        if self.task_scales is None:
            return (1.0,) * n_tasks
        if len(self.task_scales) != n_tasks:
            raise ValueError(f"task_scales has {len(self.task_scales)} values for {n_tasks} tasks")
        return self.task_scales

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
