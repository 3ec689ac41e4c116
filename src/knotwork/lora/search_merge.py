"""Choose a merge's λ and top-K (or DARE p) on validation data, aligning once: the KnOTS paper's search as a feature.

:func:`prepare_merge` computes the tasks' representations once per adapter set — for a KnOTS method one
:func:`~knotwork.merge.align.knots_align` per module (the shared basis U and R_i = Σ V_iᵀ), for a plain method the
dense task updates ΔW_i = B_i A_i — and :class:`PreparedMerge` then merges them at any parameter setting with the
registered method's in-memory function. :func:`search_merge` walks the paper's coordinate search (λ, then top-K or
DARE p; :func:`knotwork.lora.search.coordinate_search`) over such merges, scoring each on a
:class:`~knotwork.lora.evaluate.TaskEvaluator`, and returns every point tried and the chosen one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from knotwork._errors import MergeError
from knotwork.lora.evaluate import EvalResult, TaskEvaluator
from knotwork.lora.search import CRITERIA, coordinate_search, criterion_score, method_grids, ties_improve
from knotwork.merge.align import DEFAULT_REL_TOL, knots_align
from knotwork.merge.api import MergeResult, merge_modules
from knotwork.merge.config import MergeConfig
from knotwork.merge.registry import get_method
from knotwork.merge.stream import MergedModule

Factors = tuple[torch.Tensor, torch.Tensor]  # (B scaled, A): (d_out, r), (r, d_in)


@dataclass
class PreparedMerge:
    """One method's task representations, computed once, merged at any number of parameter settings.

    Attributes
    ----------
    method : str
    factors : mapping
        ``{module: [(B_i scaled, A_i), ...]}``, the input (kept for plain TA, which is written as exact factors).
    bases : dict
        Per module the KnOTS basis U (d_out, k), or None for a plain method.
    reps : list of dict
        Per task ``{module: R_i}`` (KnOTS, (k, d_in)) or ``{module: ΔW_i}`` (plain, (d_out, d_in)).
    rel_tol : float
        The alignment's tolerance; a config asking for another one is refused.
    """

    method: str
    factors: Mapping[str, Sequence[Factors]]
    bases: dict[str, torch.Tensor | None]
    reps: list[dict[str, torch.Tensor]]
    rel_tol: float = DEFAULT_REL_TOL

    def result(self, config: MergeConfig) -> MergeResult:
        """The merge at `config`, the same numbers as ``merge_modules(factors, method=..., config=config)``.

        Plain TA comes back factored (``[λ w_i B_i] @ [A_i]``, an exact LoRA, as ``knotwork merge`` writes it).
        """
        spec = get_method(self.method)
        start = time.perf_counter()
        if not spec.aligned and spec.combine == "ta" and not spec.drop:
            return merge_modules(self.factors, method=self.method, config=config)
        if spec.aligned and config.rel_tol != self.rel_tol:
            raise MergeError(f"the alignment was computed with rel_tol {self.rel_tol}; the config asks for "
                             f"{config.rel_tol}")
        merged = spec.merge(self.reps, config)
        modules = {m: MergedModule(m, self.bases[m], merged[m], tuple(int(A.shape[0]) for _, A in self.factors[m]))
                   for m in sorted(self.factors)}
        return MergeResult(method=spec.name, config=config, modules=modules, seconds=time.perf_counter() - start)

    def deltas(self, config: MergeConfig) -> dict[str, torch.Tensor]:
        """``{module: merged ΔW}`` (d_out, d_in) at `config`."""
        return self.result(config).deltas


def prepare_merge(factors: Mapping[str, Sequence[Factors]], method: str, *,
                  rel_tol: float = DEFAULT_REL_TOL) -> PreparedMerge:
    """Compute the representations of `method` once: one KnOTS alignment per module, or the dense ΔW_i.

    Parameters
    ----------
    factors : mapping from module name to a sequence of (B_i, A_i), one per task
        B_i of shape (d_out, r_i) with the LoRA scaling folded in (:func:`knotwork.merge.adapter_factors`).
    method : str
        A registered method (``knotwork.merge.available_methods()``).
    rel_tol : float, default 1e-7
        KnOTS: drop singular components below rel_tol · σ_max.
    """
    try:
        spec = get_method(method)
    except KeyError as err:
        raise MergeError(err.args[0]) from None
    names = sorted(factors)
    if not names:
        raise MergeError("no modules to merge")
    counts = {len(factors[m]) for m in names}
    if len(counts) > 1:
        raise MergeError(f"every module needs the same number of tasks; got {sorted(counts)}")
    n = counts.pop()
    reps: list[dict[str, torch.Tensor]] = [{} for _ in range(n)]
    bases: dict[str, torch.Tensor | None] = {}
    for name in names:
        pairs = [(B.float(), A.float()) for B, A in factors[name]]
        if spec.aligned:
            alignment = knots_align(pairs, rel_tol=rel_tol)
            bases[name], per_task = alignment.basis, alignment.reps
        else:
            bases[name], per_task = None, [B @ A for B, A in pairs]
        for i, rep in enumerate(per_task):
            reps[i][name] = rep
    return PreparedMerge(spec.name, factors, bases, reps, rel_tol)


@dataclass(frozen=True)
class SearchPoint:
    """One step of the search: the parameters, their validation score and the evaluation behind it."""

    step: int
    walk: str  # the parameter being walked
    params: dict[str, Any]
    score: float
    result: EvalResult
    repeat: bool = False  # the same parameters were evaluated at an earlier step (scored from that evaluation)


@dataclass
class MergeSearch:
    """The outcome of :func:`search_merge`.

    Attributes
    ----------
    method, criterion : str
    params : dict
        The chosen parameters (a :class:`MergeConfig`'s fields).
    score : float
        Their validation score under `criterion`.
    points : list of SearchPoint
        Every point tried, in order.
    finetuned : dict or None
        Each adapter's validation accuracy on its own task (the normalizer of the per-task criterion).
    grids : list of (name, values)
    prepared : PreparedMerge
    seconds : dict
        Wall seconds of the alignment (``prepare``), the fine-tuned rows and the search.
    """

    method: str
    criterion: str
    params: dict[str, Any]
    score: float
    points: list[SearchPoint]
    finetuned: dict[str, float] | None
    grids: list[tuple[str, tuple[Any, ...]]]
    prepared: PreparedMerge
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def evaluations(self) -> int:
        """Merges evaluated (repeated points are scored once)."""
        return sum(not p.repeat for p in self.points)

    def config(self) -> MergeConfig:
        return MergeConfig(**self.params, rel_tol=self.prepared.rel_tol)

    def result(self) -> MergeResult:
        """The chosen merge (from the same alignment as every point of the search)."""
        return self.prepared.result(self.config())

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: the chosen point and a row per point tried (parameters, score, per-task accuracy, joint Hits@k)."""
        return {
            "method": self.method,
            "criterion": self.criterion,
            "score_name": CRITERIA[self.criterion],
            "chosen": {"params": self.params, "score": self.score},
            "grids": {name: list(values) for name, values in self.grids},
            "finetuned": self.finetuned,
            "evaluations": self.evaluations,
            "points": [{"step": p.step, "walk": p.walk, "params": p.params, "score": p.score, "repeat": p.repeat,
                        "accuracy": p.result.accuracy,
                        "joint_hits": {str(k): v for k, v in p.result.joint_hits.items()}, "n": p.result.n}
                       for p in self.points],
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
        }


PARAM_LABELS = {"scale": "λ", "topk": "top-K %", "drop_rate": "DARE p"}


def search_table(search: MergeSearch) -> str:
    """A Markdown table of every point tried (validation split, %), the chosen one in bold."""
    searched = [name for name, _ in search.grids]
    tasks = list(search.points[0].result.accuracy) if search.points else []
    ks = sorted(search.points[0].result.joint_hits) if search.points else []
    head = ["step", "walk", *(PARAM_LABELS.get(n, n) for n in searched), CRITERIA[search.criterion],
            *(f"{t} acc" for t in tasks), *(f"joint H@{k}" for k in ks)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    chosen = {k: search.params[k] for k in searched}
    marked = False
    for p in search.points:
        best = not marked and {k: p.params[k] for k in searched} == chosen
        marked = marked or best
        cells = [str(p.step), PARAM_LABELS.get(p.walk, p.walk) + (" (repeat)" if p.repeat else ""),
                 *(f"{p.params[n]:g}" for n in searched), f"{100 * p.score:.2f}",
                 *(f"{100 * p.result.accuracy[t]:.1f}" for t in tasks),
                 *(f"{100 * p.result.joint_hits[k]:.1f}" for k in ks)]
        if best:
            cells = [f"**{c}**" for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def finetuned_accuracy(factors: Mapping[str, Sequence[Factors]], evaluator: TaskEvaluator) -> dict[str, float]:
    """Validation accuracy of adapter i (base + B_i A_i) on task i alone, for every task of `evaluator`."""
    out = {}
    for i, task in enumerate(evaluator.tasks):
        deltas = {m: (pairs[i][0].float() @ pairs[i][1].float()) for m, pairs in factors.items()}
        out[task.name] = evaluator.evaluate(deltas, tasks=[task.name], joint=False).accuracy[task.name]
    return out


def search_merge(
    factors: Mapping[str, Sequence[Factors]],
    evaluator: TaskEvaluator,
    method: str,
    *,
    criterion: str = "pertask",
    grids: Mapping[str, Sequence[Any]] | None = None,
    seed: int = 0,
    finetuned: Mapping[str, float] | None = None,
    log: Callable[[str], None] | None = None,
) -> MergeSearch:
    """Search a merge's parameters on the evaluator's split with the paper's coordinate rule, aligning once.

    Parameters
    ----------
    factors : mapping from module name to a sequence of (B_i, A_i)
        Adapter i is the one fine-tuned on ``evaluator.tasks[i]`` (matched by order).
    evaluator : TaskEvaluator
        Scores base + a merged update; build it on the validation split.
    method : str
        A registered merge method.
    criterion : {"pertask", "joint"}
        ``pertask``: average normalized accuracy, ``>=`` continues a walk; ``joint``: joint Hits@3, ``>``.
    grids : mapping, optional
        Replaces the paper's grids (``scale``, ``topk``, ``drop_rate``); order and starting values come from
        :func:`knotwork.lora.search.method_grids`.
    seed : int, default 0
        DARE's mask seed (fixed during the search).
    finetuned : mapping, optional
        ``{task: accuracy}`` of each adapter on its own task; computed when the per-task criterion needs it.
    log : callable, optional
        Called with one line per point evaluated.
    """
    if criterion not in CRITERIA:
        raise MergeError(f"unknown criterion {criterion!r}; known: {', '.join(CRITERIA)}")
    tasks = [t.name for t in evaluator.tasks]
    n_adapters = {len(pairs) for pairs in factors.values()}
    if n_adapters != {len(tasks)}:
        raise MergeError(f"{sorted(n_adapters)[0] if n_adapters else 0} adapters for {len(tasks)} tasks; adapter i "
                         "must be the one fine-tuned on task i")
    order, defaults = method_grids(method, grids)
    searched = [name for name, _ in order]
    if get_method(method).drop:
        defaults["seed"] = int(seed)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    if criterion == "pertask" and finetuned is None:
        finetuned = finetuned_accuracy(factors, evaluator)
        seconds["finetuned"] = time.perf_counter() - t0
    if finetuned is not None:
        missing = [t for t in tasks if t not in finetuned]
        if missing:
            raise MergeError(f"task '{missing[0]}': no fine-tuned accuracy given")
        finetuned = {t: float(finetuned[t]) for t in tasks}
        zero = [t for t in tasks if finetuned[t] == 0]
        if criterion == "pertask" and zero:
            raise MergeError(f"task '{zero[0]}': its adapter scores 0 accuracy on this split, so normalized accuracy "
                             "is undefined; check that adapters and tasks are in the same order, or use the joint "
                             "criterion")
    t1 = time.perf_counter()
    prepared = prepare_merge(factors, method)
    seconds["prepare"] = time.perf_counter() - t1

    evaluated: dict[str, EvalResult] = {}

    def objective(params: Mapping[str, Any]) -> float:
        key = json.dumps(sorted(params.items()))
        if key not in evaluated:
            evaluated[key] = evaluator.evaluate(prepared.deltas(MergeConfig(**params, rel_tol=prepared.rel_tol)))
            if log is not None:
                score = criterion_score(evaluated[key], criterion, finetuned)
                shown = ", ".join(f"{PARAM_LABELS.get(k, k)} = {v:g}" for k, v in params.items() if k in searched)
                log(f"{method} {shown}: {CRITERIA[criterion]} {100 * score:.2f} %")
        return criterion_score(evaluated[key], criterion, finetuned)

    t2 = time.perf_counter()
    sel = coordinate_search(objective, order, defaults, ties_improve=ties_improve(criterion))
    seconds["search"] = time.perf_counter() - t2
    points, seen = [], set()
    for step, ((params, score), walk) in enumerate(zip(sel.trace, sel.walks, strict=True), start=1):
        key = json.dumps(sorted(params.items()))
        points.append(SearchPoint(step, walk, dict(params), score, evaluated[key], repeat=key in seen))
        seen.add(key)
    return MergeSearch(method=get_method(method).name, criterion=criterion, params=dict(sel.params), score=sel.score,
                       points=points, finetuned=finetuned, grids=[(n, tuple(v)) for n, v in order],
                       prepared=prepared, seconds=seconds)
