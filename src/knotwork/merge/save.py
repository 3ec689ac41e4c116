"""Write merges: ``run_merge`` streams a merge from lazily read adapters into a PEFT adapter or a sharded model
folder, module by module, with ``merge_report.json`` inside; ``save_merged_adapter`` writes an in-memory result.

Every output goes through :func:`knotwork._io.atomic_dir`: the folder appears whole or not at all, carries the
marker ``.knotwork.json`` (provenance and the list of files written), is replaced with ``force`` only when it is
a previous knotwork output, and is never an input adapter, the base model folder, or a folder around or inside
one of them. ``merge_report.json`` is the report for people, and a config that redoes the merge
(``knotwork merge --config merge_report.json``): inputs and their sha256, method, the effective value of every
parameter, the rank policy with the truncation error per module and in total, and the time of each stage.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from knotwork._errors import MergeError
from knotwork.merge.adapters import LoraAdapter, check_compatible, write_adapter
from knotwork.merge.api import MergeResult
from knotwork.merge.config import MergeConfig
from knotwork.merge.model_io import BaseModel, write_merged_model
from knotwork.merge.registry import get_method
from knotwork.merge.stream import MapFn, ModuleMerger, global_cuts, merge_stream
from knotwork.merge.truncate import FULL, factor_module

REPORT_NAME = "merge_report.json"


def merge_report(result: MergeResult, adapters: Sequence[LoraAdapter] = (), **extra: Any) -> dict[str, Any]:
    """The merge report of an in-memory result: inputs with their sha256, method, parameters, ranks, time."""
    import knotwork

    report = {
        "knotwork_version": knotwork.__version__,
        "inputs": [{"path": a.source, "sha256": a.sha256} for a in adapters],
        **result.report(),
    }
    report.update(extra)
    return report


def full_rank_method(method: str) -> bool:
    """Whether ``method`` gives a full-rank update (TIES, DARE and their combinations without KnOTS)."""
    spec = get_method(method)
    return not spec.aligned and (spec.combine == "ties" or spec.drop)


def check_rank_policy(method: str, rank: int | str | None, *, base: bool) -> None:
    """Refuse an adapter output of a full-rank method without a rank, and a rank with a dense model output."""
    if base and rank is not None:
        raise MergeError("--rank has no effect with --base: the merged model is written dense and exact")
    if not base and rank is None and full_rank_method(method):
        raise MergeError(
            f"--method {method} gives a full-rank update, which a LoRA adapter holds only truncated or at full "
            "size: pass --rank K (truncated, its error reported), --rank full (exact), or --base to write the model"
        )


def save_merged_adapter(
    result: MergeResult,
    out_dir: str | os.PathLike[str],
    *,
    base_config: Mapping[str, Any],
    adapters: Sequence[LoraAdapter] = (),
    rank: int | str | None = None,
    dtype: torch.dtype = torch.float32,
    force: bool = False,
    report_extra: Mapping[str, Any] | None = None,
    extra_files: Mapping[str, str] | None = None,
) -> Path:
    """Write an in-memory merge as a PEFT LoRA adapter (scaling folded in) plus ``merge_report.json``.

    ``rank`` follows :func:`knotwork.merge.truncate.factor_module`: None is exact (refused for full-rank methods),
    ``"full"`` exact at full rank, an int truncates; the report records each module's error. ``report_extra`` is
    added to the report and ``extra_files`` (name -> text) are written into the folder with it.
    """
    check_rank_policy(result.method, rank, base=False)
    factored = {m: factor_module(mod, rank, dtype=dtype) for m, mod in result.modules.items()}
    report = merge_report(result, adapters, rank=rank, truncation=_truncation(
        {m: f.stats() for m, f in factored.items()}), **dict(report_extra or {}))
    return write_adapter(
        out_dir, {m: (f.B, f.A) for m, f in factored.items()}, base_config=base_config, dtype=None, force=force,
        inputs=[a.source for a in adapters],
        extra_files={**(extra_files or {}), REPORT_NAME: json.dumps(report, indent=2) + "\n"},
    )


def _truncation(stats: Mapping[str, Mapping[str, float]]) -> dict[str, Any]:
    norm2 = sum(s["norm"] ** 2 for s in stats.values())
    err2 = sum(s["error"] ** 2 for s in stats.values())
    total = {"rel_error": math.sqrt(err2 / norm2) if norm2 > 0 else 0.0,
             "kept_energy": 1 - err2 / norm2 if norm2 > 0 else 1.0,
             "max_module_rel_error": max((s["rel_error"] for s in stats.values()), default=0.0)}
    return {"total": total, "modules": {m: dict(s) for m, s in stats.items()}}


@dataclass(frozen=True)
class AdapterLoader:
    """``loader(module) -> [(scaling_i * B_i, A_i) float32, ...]``, read on demand; picklable for Dask workers."""

    adapters: tuple[LoraAdapter, ...]

    def __call__(self, name: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [a.modules[name].scaled_factors() for a in self.adapters]


class _Clock:
    """Seconds spent in each stage, and the process's peak resident memory when each stage last ended."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.peak_mib: dict[str, float] = {}

    def add(self, stage: str, since: float) -> float:
        now = time.perf_counter()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - since
        self.peak_mib[stage] = _peak_rss_mib()
        return now


def _peak_rss_mib() -> float:
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    except (ImportError, OSError):  # pragma: no cover - not on Linux
        return float("nan")


def run_merge(
    adapters: Sequence[LoraAdapter],
    out: str | os.PathLike[str],
    *,
    method: str,
    config: MergeConfig | None = None,
    rank: int | str | None = None,
    base: BaseModel | None = None,
    dtype: torch.dtype | None = None,
    device: str = "cpu",
    map_fn: MapFn = map,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
    report_extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Merge lazily read adapters module by module and write the result; returns the merge report.

    Memory holds the modules being merged, not the model: factors are read per module, TIES's global top-K is
    reduced in extra passes (:mod:`knotwork.merge.stream`), each merged module is factored (adapter output) or
    added to its base weight (model output) and written before the next one is merged.

    Parameters
    ----------
    adapters : sequence of LoraAdapter
        From :func:`knotwork.merge.load_adapter` (factors are read on demand).
    out : path-like
        The output folder: a PEFT adapter, or with ``base`` the merged model in the base's layout.
    method : str
    config : MergeConfig, optional
    rank : int, "full" or None
        The rank policy of an adapter output (see :func:`check_rank_policy`).
    base : BaseModel, optional
        Write base + merged update instead of an adapter.
    dtype : torch.dtype, optional
        dtype of the adapter written (default: the adapters' dtype; float32 when they differ).
    device : str, default "cpu"
    map_fn : callable, default builtin ``map``
        How the passes visit modules; ``knotwork._scheduler.ordered_map(client)`` spreads them over Dask workers.
    force : bool
    progress : callable, optional
        Called with each module's name once it is merged.
    report_extra : mapping, optional
        Added to the report (the CLI adds the config that redoes the merge).
    """
    config = config or MergeConfig()
    spec = get_method(method)
    check_rank_policy(method, rank, base=base is not None)
    check_compatible(adapters)
    clock, start = _Clock(), time.perf_counter()
    loader = AdapterLoader(tuple(adapters))
    names = sorted(adapters[0].modules)
    if base is not None:  # visit modules in the order their weights are written, shard by shard
        order = {key: i for i, key in enumerate(k for shard in base.shards for k, s in base.weight_map.items()
                                                  if s == shard)}
        names.sort(key=lambda m: order[base.find_weight_key(m)])
    scratch = tempfile.TemporaryDirectory(prefix="knotwork-merge-")  # aligned representations between passes
    merger = ModuleMerger(method, config, loader, device, scratch.name)
    cuts = global_cuts(merger, names, map_fn=map_fn) if merger.needs_global_cuts else None
    t = clock.add("statistics", start)
    stream = merge_stream(names, loader, method=method, config=config, device=device, map_fn=map_fn, cuts=cuts,
                          cache_dir=scratch.name, progress=progress)
    stats: dict[str, dict[str, float]] = {}
    ranks: dict[str, dict[str, Any]] = {}
    inputs = [a.source for a in adapters]
    out_dtype = dtype or (adapters[0].dtype if adapters[0].dtype in (torch.float16, torch.bfloat16, torch.float32)
                          else torch.float32)

    def report() -> dict[str, Any]:
        import knotwork

        params = spec.effective_parameters(config)
        clock.seconds["total"] = time.perf_counter() - start
        body = {
            "knotwork_version": knotwork.__version__,
            "inputs": [{"path": a.source, "sha256": a.sha256} for a in adapters],
            "method": spec.name,
            "parameters": params,
            "output": "model" if base is not None else "adapter",
            "rank": rank,
            "device": device,
            "modules": ranks,
            "seconds": {k: round(v, 3) for k, v in clock.seconds.items()},
            "peak_rss_mib_after": {k: round(v, 1) for k, v in clock.peak_mib.items()},
        }
        if base is None:
            body["dtype"] = str(out_dtype).removeprefix("torch.")
            body["truncation"] = _truncation(stats)
        else:
            body["base"] = str(base.path)
        body.update(report_extra or {})
        return body

    def merged_modules():
        nonlocal t
        it = iter(stream)
        while True:
            t = time.perf_counter()
            try:
                mod = next(it)
            except StopIteration:
                return
            t = clock.add("merge", t)
            yield mod

    if base is None:
        def factored():
            for mod in merged_modules():
                t0 = time.perf_counter()
                # the tasks' row spaces start the randomized range finder of a truncated dense module
                sketch = torch.cat([A for _, A in loader(mod.name)]).T if mod.dense and rank not in (None, FULL) \
                    else None
                f = factor_module(mod, rank, dtype=out_dtype, sketch=sketch)
                clock.add("factor", t0)
                stats[mod.name] = f.stats()
                ranks[mod.name] = {"input_ranks": list(mod.input_ranks), "merged_rank": f.rank}
                t1 = time.perf_counter()
                yield mod.name, (f.B, f.A)
                clock.add("write", t1)

        write_adapter(out, factored(), base_config=adapters[0].config, dtype=None, force=force, inputs=inputs,
                      extra_files=lambda: {REPORT_NAME: json.dumps(report(), indent=2) + "\n"})
    else:
        pending: dict[str, Any] = {}
        source = merged_modules()

        def delta_of(name: str) -> Callable[[], torch.Tensor]:
            def compute() -> torch.Tensor:
                while name not in pending:  # held-back modules (exact sign cancellations) arrive last
                    mod = next(source)
                    pending[mod.name] = mod
                mod = pending.pop(name)
                ranks[name] = {"input_ranks": list(mod.input_ranks), "merged_rank": min(mod.shape) if mod.dense
                               else mod.left.shape[1]}
                return mod.delta()
            return compute

        t_write = time.perf_counter()
        write_merged_model(out, base, {m: delta_of(m) for m in names},
                           shapes={m: adapters[0].modules[m].shape for m in names},
                           fan_in_fan_out=adapters[0].fan_in_fan_out, force=force, inputs=inputs, device=device,
                           extra_files=lambda: {REPORT_NAME: json.dumps(report(), indent=2) + "\n"})
        clock.seconds["write"] = time.perf_counter() - t_write - clock.seconds.get("merge", 0.0)
        clock.peak_mib["write"] = _peak_rss_mib()
    scratch.cleanup()
    return report()
