"""What a merge method is: a name, a paper reference, and a pure function over the tasks' representations."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from knotwork.merge.config import MergeConfig

# One task's representation of every module: ΔW_i (d_out, d_in), or R_i (k, d_in) after the KnOTS alignment.
TaskReps = Mapping[str, torch.Tensor]
MergeFn = Callable[[list[TaskReps], MergeConfig], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class MergeMethod:
    """A registered merge method.

    Attributes
    ----------
    name : str
        The command-line name (``ties``, ``knots-ties``).
    reference : str
        The paper the method follows.
    merge : callable
        ``merge(reps, config) -> {module: merged}``; ``reps[i][module]`` is task i's representation. Pure: no I/O.
    aligned : bool
        Whether the representations are KnOTS-aligned (``R_i``) rather than dense updates (``ΔW_i``).
    uses : tuple of str
        The :class:`MergeConfig` fields the method reads; the merge report records exactly these.
    combine : {"ta", "ties"}
        How the per-module streaming engine (``knotwork.merge.stream``) combines tasks.
    drop : bool
        Whether DARE's random drop comes first.
    default_topk : float or None
        TIES's top-K percent when ``MergeConfig.topk`` is None.
    """

    name: str
    reference: str
    merge: MergeFn
    aligned: bool = False
    uses: tuple[str, ...] = ("scale",)
    combine: str = "ta"
    drop: bool = False
    default_topk: float | None = None

    def effective_parameters(self, config: MergeConfig) -> dict:
        """The parameters this method reads (``uses``, plus ``rel_tol`` when aligned) with the values it applies:
        ``topk`` is the method's default where the config leaves it None."""
        used = set(self.uses) | ({"rel_tol"} if self.aligned else set())
        params = {k: v for k, v in config.to_dict().items() if k in used}
        if "topk" in params and params["topk"] is None:
            params["topk"] = self.default_topk
        return params
