"""merge_adapters / merge_modules: align (for KnOTS methods), merge, and return a result that can rebuild ΔW."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from knotwork.merge.adapters import LoraAdapter, check_compatible
from knotwork.merge.align import knots_align
from knotwork.merge.config import MergeConfig
from knotwork.merge.registry import get_method

Factors = tuple[torch.Tensor, torch.Tensor]  # (B scaled, A): (d_out, r), (r, d_in)


@dataclass
class MergeResult:
    """The merged update of every module, kept factored where the method allows.

    For a KnOTS method, module ``m``'s update is ``bases[m] @ merged[m]`` (d_out x k times k x d_in), an exact
    rank-k LoRA. For a dense method, ``bases[m]`` is None and ``merged[m]`` is the (d_out, d_in) update.
    """

    method: str
    config: MergeConfig
    merged: dict[str, torch.Tensor]
    bases: dict[str, torch.Tensor | None]
    input_ranks: dict[str, list[int]] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ranks(self) -> dict[str, int]:
        """Rank of each module's merged update as stored (k for KnOTS, min(d_out, d_in) for dense methods)."""
        return {m: (b.shape[1] if b is not None else min(self.merged[m].shape)) for m, b in self.bases.items()}

    def delta(self, module: str) -> torch.Tensor:
        """The dense merged update of one module, (d_out, d_in), float32."""
        basis = self.bases[module]
        rep = self.merged[module].float()
        return rep if basis is None else basis.float() @ rep

    def iter_deltas(self) -> Iterator[tuple[str, torch.Tensor]]:
        """Yield ``(module, delta)`` one at a time, so large models never hold every dense update at once."""
        for module in self.merged:
            yield module, self.delta(module)

    @property
    def deltas(self) -> dict[str, torch.Tensor]:
        return dict(self.iter_deltas())

    def factors(self, rank: int | None = None) -> dict[str, Factors]:
        """Factor each update as (B, A) with B @ A = delta, optionally truncated to ``rank``.

        KnOTS results are exact LoRAs (B = U, A = R_merged); truncation takes an SVD of the small (k, d_in) A only.
        Dense results are factored by a truncated SVD (rank defaults to the sum of the input ranks, which is exact
        for TA and DARE+TA, and an approximation after TIES trimming).
        """
        out = {}
        for module, rep in self.merged.items():
            basis = self.bases[module]
            if basis is not None and (rank is None or rank >= rep.shape[0]):
                out[module] = (basis, rep)  # exact: no copy
                continue
            left = basis.double() if basis is not None else None
            U, S, Vh = torch.linalg.svd(rep.double(), full_matrices=False)
            k = rank if rank is not None else min(sum(self.input_ranks.get(module, [])) or len(S), len(S))
            k = max(1, min(k, len(S)))
            B = U[:, :k] * S[:k]
            if left is not None:
                B = left @ B
            out[module] = (B.float(), Vh[:k].float())
        return out

    def report(self) -> dict[str, Any]:
        """A JSON-able summary: method, the parameters it read (``MergeMethod.uses``), per-module ranks, time."""
        spec = get_method(self.method)
        used = set(spec.uses) | ({"rel_tol"} if spec.aligned else set())
        return {
            "method": self.method,
            "parameters": {k: v for k, v in self.config.to_dict().items() if k in used},
            "modules": {m: {"input_ranks": self.input_ranks.get(m), "merged_rank": k} for m, k in self.ranks.items()},
            "seconds": round(self.seconds, 4),
        }


def merge_modules(
    factors: Mapping[str, Sequence[Factors]],
    *,
    method: str,
    config: MergeConfig | None = None,
    progress: Callable[[str], None] | None = None,
) -> MergeResult:
    """Merge several tasks' LoRA updates module by module.

    Parameters
    ----------
    factors : mapping from module name to a sequence of (B_i, A_i), one per task
        B_i of shape (d_out, r_i) with the LoRA scaling folded in, A_i of shape (r_i, d_in).
    method : str
        A registered method name, e.g. ``"knots-ties"`` (see ``knotwork.merge.available_methods()``).
    config : MergeConfig, optional
    progress : callable, optional
        Called with each module's name after its alignment (for progress bars).

    Returns
    -------
    MergeResult
    """
    spec = get_method(method)
    config = config or MergeConfig()
    start = time.perf_counter()
    names = sorted(factors)
    n_tasks = {len(factors[m]) for m in names}
    if len(n_tasks) != 1:
        raise ValueError(f"every module needs the same number of tasks; got {sorted(n_tasks)}")
    (n,) = n_tasks
    reps: list[dict[str, torch.Tensor]] = [{} for _ in range(n)]
    bases: dict[str, torch.Tensor | None] = {}
    for name in names:
        pairs = factors[name]
        if spec.aligned:
            alignment = knots_align(pairs, rel_tol=config.rel_tol)
            bases[name] = alignment.basis
            for i, rep in enumerate(alignment.reps):
                reps[i][name] = rep
        else:
            bases[name] = None
            for i, (B, A) in enumerate(pairs):
                reps[i][name] = B.float() @ A.float()
        if progress is not None:
            progress(name)
    merged = spec.merge(reps, config)
    input_ranks = {m: [int(A.shape[0]) for _, A in factors[m]] for m in names}
    return MergeResult(
        method=spec.name,
        config=config,
        merged={m: merged[m] for m in names},
        bases=bases,
        input_ranks=input_ranks,
        seconds=time.perf_counter() - start,
    )


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
