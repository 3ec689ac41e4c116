"""The KnOTS text study: train (cached) adapters, search merge hyperparameters on val, score once on test.

This is experiment code (I/O, caching), kept apart from the algorithms in `train`, `evaluate` and `search`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from knotwork.lora.evaluate import EvalResult, TaskEvaluator
from knotwork.lora.io import atomic_write_text
from knotwork.lora.model import load_base_encoder
from knotwork.lora.runner import train_task_cached
from knotwork.lora.search import DROP_GRID, SCALE_GRID, TOPK_GRID, SearchResult, coordinate_search
from knotwork.lora.tasks import TextTask, load_text_task
from knotwork.lora.train import TrainConfig

logger = logging.getLogger(__name__)

MERGE_METHODS: tuple[str, ...] = ("ta", "ties", "dare-ties", "knots-ties", "knots-dare-ties")


def method_grids(method: str) -> tuple[list[tuple[str, Sequence[Any]]], dict[str, Any]]:
    """The paper's search order and starting values for each merge method.

    λ first; then top-K (TIES) or DARE's drop rate (DARE-TIES, which keeps top-K at 100 %: sign election only).
    The starting top-K (20 %) and drop rate (0.1) are the paper's chosen ViT-B/32 KnOTS values.
    """
    if method == "ta":
        return [("scale", SCALE_GRID)], {"scale": 1.0}
    if method in ("ties", "knots-ties"):
        return [("scale", SCALE_GRID), ("topk", TOPK_GRID)], {"scale": 1.0, "topk": 20.0}
    if method in ("dare-ties", "knots-dare-ties"):
        return [("scale", SCALE_GRID), ("drop_rate", DROP_GRID)], {"scale": 1.0, "drop_rate": 0.1, "topk": 100.0}
    raise ValueError(f"No search grid for merge method '{method}'; known: {', '.join(MERGE_METHODS)}")


def _key(tasks: Sequence[str], split: str, limit: int | None, method: str, params: Mapping[str, Any]) -> str:
    # The task set and example limit are part of the key: another task list or --val-limit must not reuse
    # stale scores (merges and the joint label set depend on every task).
    return json.dumps([list(tasks), split, limit, method, sorted(params.items())])


def _as_dict(r: EvalResult) -> dict:
    return {"accuracy": r.accuracy, "joint_hits": {str(k): v for k, v in r.joint_hits.items()}, "n": r.n}


def _from_dict(d: dict) -> EvalResult:
    return EvalResult(d["accuracy"], {int(k): v for k, v in d["joint_hits"].items()}, d["n"])


class EvalCache:
    """JSON files of finished evaluations (one per merge method, one for the base rows), so a re-run or a crash
    never repeats one, and separate processes can search different methods at the same time."""

    def __init__(self, folder: Path):
        self.folder = folder

    def _path(self, group: str) -> Path:
        return self.folder / f"evals-{group}.json"

    def _read(self, group: str) -> dict[str, dict]:
        p = self._path(group)
        return json.loads(p.read_text()) if p.is_file() else {}

    def get(self, group: str, key: str) -> EvalResult | None:
        data = self._read(group)
        return _from_dict(data[key]) if key in data else None

    def seconds(self, group: str, key: str) -> float:
        """Wall seconds the cached evaluation took when it was computed (0 if unknown)."""
        return float(self._read(group).get(key, {}).get("seconds", 0.0))

    def put(self, group: str, key: str, result: EvalResult, seconds: float = 0.0) -> None:
        data = self._read(group)  # re-read: another process may have added entries meanwhile
        data[key] = {**_as_dict(result), "seconds": seconds}
        atomic_write_text(self._path(group), json.dumps(data))


@dataclass
class StudyConfig:
    """What the study runs on and how much of it (the reductions for a 2-core CPU are recorded here)."""

    task_dirs: list[Path]
    cache_dir: Path
    train: TrainConfig
    val_limit: int | None = 100
    test_limit: int | None = 400
    dare_seeds: tuple[int, ...] = (0, 1, 2)
    methods: tuple[str, ...] = MERGE_METHODS
    cka_texts_per_task: int = 16
    criteria: tuple[str, ...] = ("pertask", "joint")
    cached_only: bool = False  # build a (partial) page from finished evaluations only; compute nothing new


class NotCached(LookupError):
    """An evaluation the page needs has not been computed yet (only raised with ``cached_only``)."""


@dataclass
class StudyResult:
    config: dict
    tasks: list[str]
    finetuned: dict[str, dict[str, float]]          # split -> task -> acc
    zeroshot: dict[str, dict]                        # split -> EvalResult dict
    train_seconds: dict[str, float]
    selections: dict[str, dict] = field(default_factory=dict)   # "<criterion>/<method>" -> {params, val, trace}
    test: dict[str, list[dict]] = field(default_factory=dict)   # "<criterion>/<method>" -> EvalResult dicts per seed
    cka: dict[str, list[list[float]]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)  # "<criterion>/<method>[ seed s]" not finished (partial page)


def run_study(cfg: StudyConfig, *, progress: bool = False,
              log: Callable[[str], None] = logger.info) -> StudyResult:
    """Train or load every adapter, then search, test and measure CKA. Every evaluation is cached on disk."""
    from knotwork.merge import adapter_factors, load_adapter, merge_modules
    from knotwork.merge.config import MergeConfig

    tasks: list[TextTask] = [load_text_task(d) for d in cfg.task_dirs]  # validate everything first
    t_start = time.perf_counter()
    trained = {}
    for task in tasks:
        res = train_task_cached(load_base_encoder, task, cfg.train, cfg.cache_dir / f"r{cfg.train.lora.r}" / task.name,
                                progress=progress)
        trained[task.name] = res
        log(f"adapter {task.name}: {'cached' if res.cached else 'trained'} ({res.seconds:.0f}s)")
    adapters = [load_adapter(trained[t.name].adapter_dir) for t in tasks]
    factors = adapter_factors(adapters)
    names = [t.name for t in tasks]

    model, tok, _ = load_base_encoder()
    ev = {"val": TaskEvaluator(model, tok, tasks, split="val", limit=cfg.val_limit, max_length=cfg.train.max_length),
          "test": TaskEvaluator(model, tok, tasks, split="test", limit=cfg.test_limit,
                                max_length=cfg.train.max_length)}
    cache = EvalCache(cfg.cache_dir / f"r{cfg.train.lora.r}")
    limits = {"val": cfg.val_limit, "test": cfg.test_limit}

    def evaluate(split: str, method: str, params: Mapping[str, Any], deltas_fn) -> EvalResult:
        key = _key(names, split, limits[split], method, params)
        group = method if method in MERGE_METHODS else "base"
        hit = cache.get(group, key)
        if hit is None and cfg.cached_only:
            raise NotCached(key)
        if hit is None:
            t0 = time.perf_counter()
            hit = ev[split].evaluate(deltas_fn())
            cache.put(group, key, hit, time.perf_counter() - t0)
            log(f"{split} {method} {dict(params)}: avg acc {hit.avg_accuracy():.4f}, "
                f"joint H@3 {hit.joint_hits.get(3, float('nan')):.4f} ({time.perf_counter() - t0:.0f}s)")
        return hit

    # Fine-tuned: each adapter on its own task only (one pass over all tasks, adapter swapped per task).
    finetuned: dict[str, dict[str, float]] = {}
    for split in ("val", "test"):
        finetuned[split] = {}
        for i, name in enumerate(names):
            key = _key(names, split, limits[split], f"finetuned:{name}", {})
            hit = cache.get("base", key)
            if hit is None:
                t0 = time.perf_counter()
                hit = ev[split].evaluate(adapters[i].deltas(), tasks=[name], joint=False)
                cache.put("base", key, hit, time.perf_counter() - t0)
            finetuned[split][name] = hit.accuracy[name]
        log(f"fine-tuned {split}: {finetuned[split]}")
    zeroshot = {s: _as_dict(evaluate(s, "zeroshot", {}, lambda: {})) for s in ("val", "test")}

    result = StudyResult(
        config={"train": cfg.train.to_dict(), "val_limit": cfg.val_limit, "test_limit": cfg.test_limit,
                "dare_seeds": list(cfg.dare_seeds), "tasks": names},
        tasks=names, finetuned=finetuned, zeroshot=zeroshot,
        train_seconds={n: trained[n].seconds for n in names})

    def merged_deltas(method: str, params: Mapping[str, Any]):
        return lambda: merge_modules(factors, method=method, config=MergeConfig(**params)).deltas

    t_grid = time.perf_counter()
    for method in cfg.methods:
        grids, defaults = method_grids(method)
        seeded = "dare" in method
        base = {**defaults, **({"seed": cfg.dare_seeds[0]} if seeded else {})}

        def objective_for(criterion: str, method=method):
            def objective(params):
                r = evaluate("val", method, params, merged_deltas(method, params))
                return r.avg_normalized(finetuned["val"]) if criterion == "pertask" else r.joint_hits[3]
            return objective

        for criterion in cfg.criteria:
            try:
                sel: SearchResult = coordinate_search(objective_for(criterion), grids, base,
                                                      ties_improve=(criterion == "pertask"))
            except NotCached:
                result.missing.append(f"{criterion}/{method}")
                continue
            result.selections[f"{criterion}/{method}"] = {
                "params": sel.params, "val_score": sel.score,
                "trace": [[p, s] for p, s in sel.trace]}
            seeds = cfg.dare_seeds if seeded else (None,)
            runs = []
            for s in seeds:
                p = {**sel.params, **({"seed": s} if s is not None else {})}
                try:
                    runs.append(_as_dict(evaluate("test", method, p, merged_deltas(method, p))))
                except NotCached:
                    result.missing.append(f"{criterion}/{method} test" + (f" seed {s}" if s is not None else ""))
            if runs:
                result.test[f"{criterion}/{method}"] = runs
    result.seconds["grid"] = time.perf_counter() - t_grid
    # Time of every evaluation this page uses, as measured when it was computed (possibly by another process).
    result.seconds["evaluations"] = sum(cache.seconds(g, k) for g in ("base", *MERGE_METHODS)
                                        for k in cache._read(g) if json.loads(k)[0] == names)
    if not cfg.cka_texts_per_task:
        return result
    result.cka = adapter_cka(model, tok, tasks, factors, n_per_task=cfg.cka_texts_per_task,
                             max_length=cfg.train.max_length)
    result.seconds["total"] = time.perf_counter() - t_start
    return result


def module_inputs(model, tokenizer, texts: Sequence[str], modules: Sequence[str], *, max_length: int = 64):
    """Inputs X (non-padding tokens x d_in) that the base model feeds each named module on `texts`."""
    captured: dict[str, torch.Tensor] = {}
    batch = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    keep = batch["attention_mask"].bool()
    hooks = []
    for name in modules:
        def hook(_mod, args, _out, name=name):
            captured[name] = args[0][keep].detach().double()  # (tokens, d_in), padding dropped
        hooks.append(model.get_submodule(name).register_forward_hook(hook))
    try:
        with torch.inference_mode():
            model(**{k: batch[k] for k in ("input_ids", "attention_mask")})
    finally:
        for h in hooks:
            h.remove()
    return captured


def adapter_cka(model, tokenizer, tasks: Sequence[TextTask], factors, *, n_per_task: int = 16,
                max_length: int = 64) -> dict[str, list[list[float]]]:
    """Task x task linear CKA of the adapters' updates before and after KnOTS, averaged over modules (paper Fig. 2).

    The inputs are the base model's activations on the first `n_per_task` validation texts of every task.
    """
    from knotwork.merge.cka import update_cka

    texts = [x for t in tasks for x in t.splits["val"].texts[:n_per_task]]
    inputs = module_inputs(model, tokenizer, texts, sorted(factors), max_length=max_length)
    before = after = None
    for name in sorted(factors):
        b, a = update_cka(inputs[name], factors[name])
        before = b if before is None else before + b
        after = a if after is None else after + a
    n = len(factors)
    return {"before": (before / n).tolist(), "after": (after / n).tolist()}


def summarize(result: StudyResult, criterion: str, method: str) -> dict[str, Any]:
    """Mean and spread over seeds of per-task accuracy, avg normalized accuracy and joint Hits@k on test."""
    runs = [EvalResult(**{**r, "joint_hits": {int(k): v for k, v in r["joint_hits"].items()}})
            for r in result.test[f"{criterion}/{method}"]]
    ft = result.finetuned["test"]

    def ms(vals):
        # Sample standard deviation over seeds (ddof=1); NaN (undefined normalized accuracy) propagates.
        arr = np.asarray(vals, dtype=float)
        return (float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0)

    return {
        "accuracy": {t: ms([r.accuracy[t] for r in runs]) for t in result.tasks},
        "avg_accuracy": ms([r.avg_accuracy() for r in runs]),
        "avg_normalized": ms([r.avg_normalized(ft) for r in runs]),
        "normalized": {t: ms([r.normalized(ft)[t] for r in runs]) for t in result.tasks},
        "joint_hits": {k: ms([r.joint_hits[k] for r in runs]) for k in (1, 3, 5)},
        "n_runs": len(runs),
    }


def save_result(result: StudyResult, path: Path) -> None:
    atomic_write_text(path, json.dumps(result.__dict__, indent=1, default=str))


def load_task_dirs(root: Path, names: Sequence[str]) -> list[Path]:
    dirs = [root / n for n in names]
    missing = [str(d) for d in dirs if not d.is_dir()]
    if missing:
        raise FileNotFoundError(f"Task folder(s) not found: {', '.join(missing)}")
    return dirs
