"""The KnOTS text study behind docs/results/knots-text.md (driven by benchmarks/knots_text.py).

Train (cached, resumable) adapters, search merge hyperparameters on val, score once on test, measure CKA, and
render the page from result records. Study code: the reusable parts (training, evaluation, search) are in ``knotwork.lora``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from knotwork._errors import MergeError
from knotwork._io import write_scratch
from knotwork.lora.cka import adapter_cka
from knotwork.lora.evaluate import EvalResult, TaskEvaluator
from knotwork.lora.io import WEIGHTS_NAME, load_checkpoint, save_checkpoint, save_peft_adapter
from knotwork.lora.model import load_base_encoder
from knotwork.lora.search import GRIDS as PAPER_GRIDS
from knotwork.lora.search import SearchResult, coordinate_search, criterion_score, ties_improve
from knotwork.lora.search import method_grids as search_grids
from knotwork.lora.tasks import TextTask, load_text_task, task_data_sha256
from knotwork.lora.train import TrainConfig, train_adapter

logger = logging.getLogger(__name__)

# ------------------------------------------------------------------------------ cached, resumable training

@dataclass(frozen=True)
class TrainedAdapter:
    """Where a trained adapter lives and how it was made (``meta``: the run's train.json, weights excluded)."""

    task: str
    adapter_dir: Path
    cached: bool
    meta: dict

    @property
    def cpu_seconds(self) -> float:
        return float(self.meta.get("cpu_seconds", 0.0))


def train_task_cached(
    model_loader, task_dir: str | Path, config: TrainConfig, out_dir: str | Path, *, force: bool = False,
    progress: bool = False, checkpoint_every: int = 100,
) -> TrainedAdapter:
    """Train (or reuse) the adapter of the task in ``task_dir`` under ``out_dir`` (a cache folder of the study).

    The run is `knotwork.lora.train.train_adapter` with `config` (epochs with early stopping on the task's val
    split, the best evaluation kept; the majority-class baseline on val). Layout: ``out_dir/adapter/`` (PEFT
    adapter, a knotwork output), ``out_dir/train.json`` (config, sha256 of the task's files, the run's
    `TrainResult` without weights, CPU and wall seconds), ``out_dir/checkpoint.pt`` (resume point while
    training; removed when done). A finished adapter with the same config and data is reused; a different one is
    refused unless `force`. An interrupted run resumes from its checkpoint (same batches and dropout masks).

    Parameters
    ----------
    model_loader : callable
        ``() -> (model, tokenizer, name_or_path)``, a fresh base encoder (called only if training is needed).
    """
    task = load_text_task(task_dir, splits=("train", "val"))
    out_dir = Path(out_dir)
    meta_path, ckpt_path, adapter_dir = out_dir / "train.json", out_dir / "checkpoint.pt", out_dir / "adapter"
    want = {"task": task.name, "config": config.to_dict(), "data": task_data_sha256(task_dir)}
    if meta_path.is_file() and (adapter_dir / WEIGHTS_NAME).is_file():
        meta = json.loads(meta_path.read_text())
        same = {k: meta.get(k) for k in want} == want
        if same and not force:
            return TrainedAdapter(task.name, adapter_dir, True, meta)
        if not same and not force:
            raise MergeError(f"{adapter_dir}: holds an adapter trained with another config or data for task "
                             f"'{task.name}'; pass --force to retrain, or choose another cache folder.")
    resume = None
    ck_meta = out_dir / "checkpoint.json"
    if ckpt_path.is_file() and not force and ck_meta.is_file() and json.loads(ck_meta.read_text()) == want:
        resume = load_checkpoint(ckpt_path)
        logger.info("task %s: resuming at step %d", task.name, resume.step)
    write_scratch(ck_meta, json.dumps(want, indent=2))
    cpu0, wall0 = time.process_time(), time.perf_counter()
    model, tokenizer, _ = model_loader()
    res = train_adapter(model, tokenizer, task, config, baseline="majority", resume=resume, progress=progress,
                        on_checkpoint=lambda s: save_checkpoint(s, ckpt_path), checkpoint_every=checkpoint_every)
    save_peft_adapter(res.lora, config.lora, adapter_dir, force=True)
    meta = {**want, "result": res.to_dict(), "resumed_from": resume.step if resume else 0,
            "cpu_seconds": round(time.process_time() - cpu0, 1), "wall_seconds": round(time.perf_counter() - wall0, 1),
            "threads": torch.get_num_threads()}
    write_scratch(meta_path, json.dumps(meta, indent=1))
    ckpt_path.unlink(missing_ok=True)
    ck_meta.unlink(missing_ok=True)
    return TrainedAdapter(task.name, adapter_dir, False, meta)


# ------------------------------------------------------------------------------------------------ the study

#: Every adapter of the study: the trainer's defaults (benchmarks/lora_train.py) at most 3 epochs or 1,000 steps,
#: early stopping on val (patience 1, the best epoch kept); α = r, so the LoRA scale α/r is 1 at every rank (the
#: paper: r = α = 16).
MAX_EPOCHS, MAX_STEPS = 3, 1000


def study_train_config(r: int, seed: int, **overrides: Any) -> TrainConfig:
    """The training config of one adapter of the study (rank `r`, training seed `seed`)."""
    from knotwork.lora.model import LoraSpec

    return TrainConfig(**{"lora": LoraSpec(r=r, alpha=float(r)), "epochs": MAX_EPOCHS, "max_steps": MAX_STEPS,
                          "seed": seed, **overrides})


def adapter_cache_dir(cache: Path, r: int, seed: int, task: str) -> Path:
    """``<cache>/r<r>/seed<seed>/<task>``: one adapter, shared by every page that uses the task at that rank."""
    return Path(cache) / f"r{r}" / f"seed{seed}" / task


#: The code that computes the study's numbers: its units (this file) and these parts of src/knotwork. A unit's
#: record carries their hash (``code_used``), so a page can tell whether records made apart are comparable.
CODE_PARTS = ("merge", "_*.py", *(f"lora/{m}.py" for m in ("__init__", "baselines", "cka", "evaluate", "io", "model",
                                                            "search", "search_merge", "tasks", "train")))

MERGE_METHODS: tuple[str, ...] = ("ta", "ties", "dare-ties", "knots-ties", "knots-dare-ties")

#: The paper's grids (knotwork.lora.search); a smoke run passes shorter ones through PageSpec.grids.
GRIDS: dict[str, Sequence[Any]] = dict(PAPER_GRIDS)


def method_grids(method: str, grids: Mapping[str, Sequence[Any]] | None = None
                 ) -> tuple[list[tuple[str, Sequence[Any]]], dict[str, Any]]:
    """The paper's search order and starting values (:func:`knotwork.lora.search.method_grids`) on :data:`GRIDS`."""
    if method not in MERGE_METHODS:
        raise MergeError(f"No search grid for merge method '{method}'; known: {', '.join(MERGE_METHODS)}")
    return search_grids(method, {**GRIDS, **(grids or {})})


def _key(tasks: Sequence[str], split: str, limit: int | None, method: str, params: Mapping[str, Any]) -> str:
    # The task set and example limit are part of the key: another task list or limit must not reuse stale scores
    # (merges and the joint label set depend on every task).
    return json.dumps([list(tasks), split, limit, method, sorted(params.items())])


def as_dict(r: EvalResult) -> dict:
    return {"accuracy": r.accuracy, "joint_hits": {str(k): v for k, v in r.joint_hits.items()}, "n": r.n}


def from_dict(d: Mapping[str, Any]) -> EvalResult:
    return EvalResult(dict(d["accuracy"]), {int(k): v for k, v in d["joint_hits"].items()}, dict(d["n"]))


class EvalCache:
    """A JSON file of finished evaluations, so an interrupted unit resumes without repeating one."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def _read(self) -> dict[str, dict]:
        return json.loads(self.path.read_text()) if self.path.is_file() else {}

    def get(self, key: str) -> EvalResult | None:
        data = self._read()
        return from_dict(data[key]) if key in data else None

    def put(self, key: str, result: EvalResult, cpu_seconds: float) -> None:
        data = self._read()
        data[key] = {**as_dict(result), "cpu_seconds": cpu_seconds}
        write_scratch(self.path, json.dumps(data))

    def cpu_seconds(self) -> float:
        return float(sum(v.get("cpu_seconds", 0.0) for v in self._read().values()))


@dataclass(frozen=True)
class PageSpec:
    """One results page of the study: its tasks, LoRA rank, data, cache and (smoke-run) reductions.

    Every unit of work below takes a PageSpec and plain arguments, so it can run in a worker process.
    """

    page: str                                   # page stem; also the records folder under benchmarks/results
    tasks: tuple[str, ...]
    r: int
    data: Path                                  # folder holding text/<task>/
    cache: Path                                 # adapters and evaluation caches
    val_limit: int | None = None                # None: the full split (the study); a number only in smoke runs
    test_limit: int | None = None
    grids: Mapping[str, Sequence[Any]] | None = None
    train_overrides: Mapping[str, Any] = field(default_factory=dict)
    cka_texts_per_task: int = 16

    def task_dir(self, task: str) -> Path:
        return Path(self.data) / "text" / task

    def train_config(self, seed: int) -> TrainConfig:
        return study_train_config(self.r, seed, **dict(self.train_overrides))

    @property
    def max_length(self) -> int:
        return self.train_config(0).max_length

    def adapter_dir(self, seed: int, task: str) -> Path:
        return adapter_cache_dir(self.cache, self.r, seed, task)


def _timed(fn: Callable[[], dict]) -> dict:
    """Run a unit; add its CPU and wall seconds, torch threads, and the fingerprint of the code it ran."""
    import _common

    cpu0, wall0 = time.process_time(), time.perf_counter()
    out = fn()
    return {**out, "cpu_seconds": round(time.process_time() - cpu0, 1),
            "wall_seconds": round(time.perf_counter() - wall0, 1), "threads": torch.get_num_threads(),
            "code_used": _common.scoped_fingerprint(CODE_PARTS, __file__)}


def train_unit(spec: PageSpec, seed: int, task: str) -> dict:
    """Train (or reuse) one adapter; its train.json without the per-step losses."""
    res = train_task_cached(load_base_encoder, spec.task_dir(task), spec.train_config(seed),
                            spec.adapter_dir(seed, task))
    meta = dict(res.meta)
    meta["result"] = {k: v for k, v in meta["result"].items() if k != "losses"}
    return {**meta, "cached": res.cached}


def _evaluator(model, tok, spec: PageSpec, tasks: Sequence[TextTask], split: str) -> TaskEvaluator:
    limit = spec.val_limit if split == "val" else spec.test_limit
    return TaskEvaluator(model, tok, tasks, split=split, limit=limit, max_length=spec.max_length)


def probe_unit(spec: PageSpec, task: str) -> dict:
    """Majority class and a logistic-regression probe on the frozen base embeddings (fitted on the full training
    split, the library's probe), scored on val and test: what an adapter must beat. Independent of seed and rank."""
    from knotwork.lora.baselines import linear_probe_accuracy, majority_accuracy
    from knotwork.lora.model import embed_texts

    def run() -> dict:
        t = load_text_task(spec.task_dir(task))
        model, tok, _ = load_base_encoder()
        emb = {s: embed_texts(model, tok, list(t.splits[s].texts), max_length=spec.max_length)
               for s in ("train", "val", "test")}
        tr = t.splits["train"].labels
        out: dict[str, Any] = {"task": task, "n": {s: len(t.splits[s]) for s in emb}}
        for s in ("val", "test"):
            lim = spec.val_limit if s == "val" else spec.test_limit
            y = list(t.splits[s].labels)[:lim]
            out[s] = {"probe": linear_probe_accuracy(emb["train"], tr, emb[s][:len(y)], y, len(t.label_names)),
                      "majority": majority_accuracy(tr, y)}
        return out
    return _timed(run)


def zeroshot_unit(spec: PageSpec) -> dict:
    """The base model with the frozen label-phrase heads on every task (val and test), per task and joint."""
    def run() -> dict:
        tasks = [load_text_task(spec.task_dir(t)) for t in spec.tasks]
        model, tok, _ = load_base_encoder()
        return {"tasks": list(spec.tasks),
                **{s: as_dict(_evaluator(model, tok, spec, tasks, s).evaluate({})) for s in ("val", "test")}}
    return _timed(run)


def finetuned_unit(spec: PageSpec, seed: int, task: str) -> dict:
    """One adapter on its own task (val and test) with its training record: the fine-tuned row and normalizer."""
    from knotwork.merge import load_adapter

    def run() -> dict:
        meta = train_unit(spec, seed, task)  # cached: the adapter exists (trained in an earlier phase)
        t = load_text_task(spec.task_dir(task))
        model, tok, _ = load_base_encoder()
        deltas = load_adapter(spec.adapter_dir(seed, task) / "adapter").deltas()
        acc = {s: _evaluator(model, tok, spec, [t], s).evaluate(deltas, joint=False).accuracy[task]
               for s in ("val", "test")}
        return {"task": task, "seed": seed, "r": spec.r, "accuracy": acc, "train": meta}
    return _timed(run)


def _load_factors(spec: PageSpec, seed: int):
    from knotwork.merge import adapter_factors, load_adapter

    return adapter_factors([load_adapter(spec.adapter_dir(seed, t) / "adapter") for t in spec.tasks])


def method_unit(spec: PageSpec, seed: int, method: str, finetuned_val: Mapping[str, float]) -> dict:
    """The paper's coordinate search of one merge method on val, for both criteria (per-task average normalized
    accuracy, joint Hits@3), then each chosen point once on test. DARE masks use the training seed. Every
    evaluation is cached on disk (an interrupted unit resumes)."""
    from knotwork.lora.search_merge import prepare_merge
    from knotwork.merge.config import MergeConfig

    def run() -> dict:
        tasks = [load_text_task(spec.task_dir(t)) for t in spec.tasks]
        model, tok, _ = load_base_encoder()
        ev = {s: _evaluator(model, tok, spec, tasks, s) for s in ("val", "test")}
        limits = {"val": spec.val_limit, "test": spec.test_limit}
        cache = EvalCache(Path(spec.cache) / "evals" / spec.page / f"seed{seed}" / f"evals-{method}.json")
        cpu0 = time.process_time()
        prepared = prepare_merge(_load_factors(spec, seed), method)
        prepare_cpu = time.process_time() - cpu0
        counts = {"val": 0, "test": 0}

        def evaluate(split: str, params: Mapping[str, Any]) -> EvalResult:
            key = _key(spec.tasks, split, limits[split], method, params)
            hit = cache.get(key)
            if hit is None:
                c0 = time.process_time()
                hit = ev[split].evaluate(prepared.deltas(MergeConfig(**params)))
                cache.put(key, hit, round(time.process_time() - c0, 2))
            counts[split] += 1
            return hit

        grids, defaults = method_grids(method, spec.grids)
        base = {**defaults, **({"seed": seed} if "dare" in method else {})}
        out: dict[str, Any] = {"tasks": list(spec.tasks), "seed": seed, "r": spec.r, "method": method,
                               "val_limit": spec.val_limit, "test_limit": spec.test_limit, "criteria": {}}
        for criterion in ("pertask", "joint"):
            sel: SearchResult = coordinate_search(
                lambda p, c=criterion: criterion_score(evaluate("val", p), c, finetuned_val), grids, base,
                ties_improve=ties_improve(criterion))
            out["criteria"][criterion] = {"params": sel.params, "val_score": sel.score,
                                          "trace": [[p, s] for p, s in sel.trace],
                                          "test": as_dict(evaluate("test", sel.params))}
        out["evaluations"] = {"distinct": len(cache._read()), "prepare_cpu_seconds": round(prepare_cpu, 2),
                              "eval_cpu_seconds": round(cache.cpu_seconds(), 1)}
        return out
    return _timed(run)


def cka_unit(spec: PageSpec, seed: int) -> dict:
    """Task x task CKA of the adapters' updates before and after the KnOTS transform (paper Fig. 2)."""
    def run() -> dict:
        tasks = [load_text_task(spec.task_dir(t)) for t in spec.tasks]
        model, tok, _ = load_base_encoder()
        cka = adapter_cka(model, tok, tasks, _load_factors(spec, seed), n_per_task=spec.cka_texts_per_task,
                          max_length=spec.max_length)
        return {"tasks": list(spec.tasks), "seed": seed, **cka}
    return _timed(run)



def load_task_dirs(root: Path, names: Sequence[str]) -> list[Path]:
    dirs = [root / n for n in names]
    missing = [str(d) for d in dirs if not d.is_dir()]
    if missing:
        raise MergeError(f"{missing[0]}: task folder not found" + (f" (nor {', '.join(missing[1:])})"
                                                                      if len(missing) > 1 else ""))
    return dirs
