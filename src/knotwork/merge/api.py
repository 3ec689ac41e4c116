"""merge_adapters / merge_modules: align (for KnOTS methods), merge, and return a result that can rebuild ΔW."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from knotwork._errors import MergeError
from knotwork.merge.adapters import LoraAdapter, check_compatible
from knotwork.merge.config import MergeConfig
from knotwork.merge.registry import get_method
from knotwork.merge.stream import MergedModule, merge_stream
from knotwork.merge.truncate import factor_module

Factors = tuple[torch.Tensor, torch.Tensor]  # (B scaled, A): (d_out, r), (r, d_in)


@dataclass
class MergeResult:
    """The merged update of every module, kept factored where the method allows (see :class:`MergedModule`).

    KnOTS methods give ``U @ R_merged`` and plain task arithmetic ``[w_i B_i] @ [A_i]``: exact LoRAs of rank at most
    Σ r_i. TIES and DARE give a dense (d_out, d_in) update, which an adapter can hold only with a rank policy
    (:meth:`factors`).
    """

    method: str
    config: MergeConfig
    modules: dict[str, MergedModule]
    seconds: float = 0.0

    @property
    def merged(self) -> dict[str, torch.Tensor]:
        """Per module, the merged representation: R_merged (KnOTS), stacked A_i (TA) or the dense update."""
        return {m: mod.right for m, mod in self.modules.items()}

    @property
    def bases(self) -> dict[str, torch.Tensor | None]:
        """Per module, the left factor (KnOTS basis U, TA's stacked B_i), or None for a dense update."""
        return {m: mod.left for m, mod in self.modules.items()}

    @property
    def input_ranks(self) -> dict[str, list[int]]:
        return {m: list(mod.input_ranks) for m, mod in self.modules.items()}

    @property
    def ranks(self) -> dict[str, int]:
        """Rank of each module's merged update as stored (k when factored, min(d_out, d_in) when dense)."""
        return {m: (mod.left.shape[1] if mod.left is not None else min(mod.shape)) for m, mod in self.modules.items()}

    @property
    def dense(self) -> bool:
        """Whether the merge is full rank (TIES, DARE): an adapter then needs a rank policy."""
        return any(mod.dense for mod in self.modules.values())

    def delta(self, module: str) -> torch.Tensor:
        """The dense merged update of one module, (d_out, d_in), float32."""
        return self.modules[module].delta()

    def iter_deltas(self) -> Iterator[tuple[str, torch.Tensor]]:
        """Yield ``(module, delta)`` one at a time, so large models never hold every dense update at once."""
        for module, mod in self.modules.items():
            yield module, mod.delta()

    @property
    def deltas(self) -> dict[str, torch.Tensor]:
        return dict(self.iter_deltas())

    def factors(self, rank: int | str | None = None, *, dtype: torch.dtype = torch.float32) -> dict[str, Factors]:
        """Each update as LoRA factors ``(B, A)`` under the rank policy of :func:`knotwork.merge.truncate.factor_module`.

        ``rank=None`` is exact and refuses a dense result; ``"full"`` is exact at full rank; an int truncates.
        """
        out = {}
        for module, mod in self.modules.items():
            f = factor_module(mod, rank, dtype=dtype)
            out[module] = (f.B, f.A)
        return out

    def report(self) -> dict[str, Any]:
        """A JSON-able summary: method, the effective value of every parameter it reads, per-module ranks, time."""
        params = get_method(self.method).effective_parameters(self.config)
        return {
            "method": self.method,
            "parameters": params,
            "modules": {m: {"input_ranks": self.input_ranks[m], "merged_rank": k} for m, k in self.ranks.items()},
            "seconds": round(self.seconds, 4),
        }


def merge_modules(
    factors: Mapping[str, Sequence[Factors]],
    *,
    method: str,
    config: MergeConfig | None = None,
    device: str = "cpu",
    progress: Callable[[str], None] | None = None,
) -> MergeResult:
    """Merge several tasks' LoRA updates module by module, in memory (the streaming engine over a dict).

    Parameters
    ----------
    factors : mapping from module name to a sequence of (B_i, A_i), one per task
        B_i of shape (d_out, r_i) with the LoRA scaling folded in, A_i of shape (r_i, d_in).
    method : str
        A registered method name, e.g. ``"knots-ties"`` (see ``knotwork.merge.available_methods()``).
    config : MergeConfig, optional
    device : str, default "cpu"
        Where the alignment and merge run (``"cuda"``, ``"mps"``); results come back on that device.
    progress : callable, optional
        Called with each module's name once it is merged (for progress bars).

    Returns
    -------
    MergeResult
    """
    config = config or MergeConfig()
    start = time.perf_counter()
    names = sorted(factors)
    n_tasks = {len(factors[m]) for m in names}
    if len(n_tasks) > 1:
        raise MergeError(f"every module needs the same number of tasks; got {sorted(n_tasks)}")
    merged = {m.name: m for m in merge_stream(names, factors.__getitem__, method=method, config=config,
                                              device=device, progress=progress)}
    return MergeResult(method=get_method(method).name, config=config, modules={m: merged[m] for m in names},
                       seconds=time.perf_counter() - start)


def adapter_factors(adapters: Sequence[LoraAdapter]) -> dict[str, list[Factors]]:
    """``{module: [(scaling_i * B_i, A_i) for each adapter]}`` after checking the adapters are compatible."""
    check_compatible(adapters)
    return {
        name: [a.modules[name].scaled_factors() for a in adapters] for name in adapters[0].modules
    }


def merge_adapters(
    adapters: Sequence[LoraAdapter],
    *,
    method: str,
    progress: Callable[[str], None] | None = None,
    **params: Any,
) -> MergeResult:
    """Merge PEFT LoRA adapters of one base model.

    Parameters
    ----------
    adapters : sequence of LoraAdapter
        From :func:`knotwork.merge.load_adapter`; they must share base model, modules and shapes.
    method : str
        ``ta``, ``ties``, ``dare``, ``dare-ties``, or any of them prefixed with ``knots-``.
    **params
        Fields of :class:`MergeConfig` (``scale``, ``topk``, ``drop_rate``, ``seed``, ...).

    Examples
    --------
    >>> result = merge_adapters([a, b], method="knots-ties", scale=0.6, topk=20)  # doctest: +SKIP
    >>> result.deltas["encoder.layer.0.attention.self.query"].shape  # doctest: +SKIP
    torch.Size([384, 384])
    """
    config = MergeConfig(**params)
    return merge_modules(adapter_factors(adapters), method=method, config=config, progress=progress)
