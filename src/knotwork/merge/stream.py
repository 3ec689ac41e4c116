"""The merge engine: module by module, with exact whole-model statistics from extra passes over the modules.

Every route (in memory, streaming from files, Dask workers, GPU) runs this engine, so they agree. Memory holds one
module's tasks at a time, whatever the number of layers:

- pass 1 (only TIES-family methods with the paper's global top-K): a small sample of every task's magnitudes gives
  a bracket [lo, hi] around each task's cut;
- pass 2 (idem): every module is visited once to count the magnitudes below ``lo`` and keep those inside the
  bracket, which gives the exact cut (the k-th smallest magnitude, as ``np.partition`` over all modules would);
- pass 3: each module is merged and yielded. TIES's model-wide majority sign matters only where a module's
  trimmed values cancel exactly; such (rare) modules are held back until the last module has voted.

Representations are recomputed in each pass rather than kept (the KnOTS alignment of a module is cheap; a dense
ΔW_i is a matmul), which is what makes memory independent of the number of modules. Each pass is a ``map`` of a
per-module function of :class:`ModuleMerger` followed by a small reduction, so a Dask client's ``map`` spreads the
modules over workers (``knotwork._scheduler.ordered_map``) and gives the same result as one process.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch

from knotwork.merge.align import knots_align
from knotwork.merge.config import MergeConfig
from knotwork.merge.methods.base import MergeMethod
from knotwork.merge.methods.dare import MASK_ROWS, dare_generator, drop_module, drop_rows
from knotwork.merge.methods.ta import ta_module
from knotwork.merge.methods.ties import majority_sign, resolve_topk, ties_block
from knotwork.merge.primitives import derived_generator, topk_threshold
from knotwork.merge.registry import get_method

Factors = tuple[torch.Tensor, torch.Tensor]  # (B scaled, A): (d_out, r), (r, d_in)
Loader = Callable[[str], Sequence[Factors]]

_SAMPLE = 1 << 20  # magnitudes sampled per task (at most) for the bracket; its width shrinks as 1/sqrt(_SAMPLE)
_BLOCK_ENTRIES = 1 << 21  # entries of all tasks' row blocks together (8 MiB of float32: about the CPU cache)
_Z = 6.0  # bracket half-width in binomial standard deviations: a miss (then one more pass) is ~1e-9 likely


@dataclass(frozen=True)
class MergedModule:
    """One module's merged update, ``left @ right`` when factored, else ``right`` itself.

    Attributes
    ----------
    name : str
    left : Tensor of shape (d_out, k), or None
        KnOTS: the shared basis U; task arithmetic: the stacked, weighted B_i. None for a dense result.
    right : Tensor of shape (k, d_in), or (d_out, d_in) when ``left`` is None
    input_ranks : tuple of int
        The tasks' LoRA ranks for this module.
    """

    name: str
    left: torch.Tensor | None
    right: torch.Tensor
    input_ranks: tuple[int, ...]

    @property
    def dense(self) -> bool:
        """True when the result is full rank (TIES, DARE): an adapter needs ``rank`` to write it."""
        return self.left is None

    @property
    def shape(self) -> tuple[int, int]:
        return (self.right.shape[0] if self.left is None else self.left.shape[0], self.right.shape[1])

    def delta(self) -> torch.Tensor:
        """The dense (d_out, d_in) update, float32."""
        return self.right.float() if self.left is None else self.left.float() @ self.right.float()


# ------------------------------------------------------------------------------------ per-module work


@dataclass
class ModuleMerger:
    """The per-module operations of one merge; picklable when ``load`` is (so Dask workers can run them).

    Attributes
    ----------
    method : str
    config : MergeConfig
    load : callable
        ``load(name) -> [(B_i scaled, A_i), ...]``, one pair per task.
    device : str
    cache_dir : str, optional
        A scratch folder where aligned representations are kept between passes (see :meth:`reps`).
    """

    method: str
    config: MergeConfig
    load: Loader
    device: str = "cpu"
    cache_dir: str | None = None

    @property
    def spec(self) -> MergeMethod:
        return get_method(self.method)

    @property
    def topk(self) -> float | None:
        return resolve_topk(self.config, self.spec.default_topk) if self.spec.combine == "ties" else None

    @property
    def needs_global_cuts(self) -> bool:
        return self.spec.combine == "ties" and self.config.topk_scope == "global" and self.topk < 100

    def factors(self, name: str) -> list[Factors]:
        dev = torch.device(self.device)
        return [(B.to(dev, torch.float32), A.to(dev, torch.float32)) for B, A in self.load(name)]

    def reps(self, name: str) -> tuple[torch.Tensor | None, list[torch.Tensor], tuple[int, ...]]:
        """The basis (KnOTS) or None, every task's representation (after DARE), and the tasks' LoRA ranks.

        With ``cache_dir``, aligned representations are computed once and read back in later passes (they are
        small: k x d_in per task); dense ΔW_i are recomputed, a matmul being cheaper than their disk traffic.
        """
        cached = self._cache_path(name)
        if cached is not None and os.path.exists(cached):
            from safetensors.torch import load_file

            t = load_file(cached, device=str(self.device))
            n = int(t["ranks"].numel())
            return t["basis"], [t[f"rep{i}"] for i in range(n)], tuple(int(r) for r in t["ranks"].tolist())
        pairs = self.factors(name)
        ranks = tuple(int(A.shape[0]) for _, A in pairs)
        if self.spec.aligned:
            alignment = knots_align(pairs, rel_tol=self.config.rel_tol)
            basis, reps = alignment.basis, list(alignment.reps)
        else:
            basis, reps = None, [B @ A for B, A in pairs]
        if self.spec.drop:
            reps = [drop_module(rep, self.config, i, name) for i, rep in enumerate(reps)]
        if cached is not None:
            from safetensors.torch import save_file

            os.makedirs(os.path.dirname(cached), exist_ok=True)  # a remote worker may not have it yet
            tmp = f"{cached}.tmp-{os.getpid()}"
            save_file({"basis": basis.contiguous(), "ranks": torch.tensor(ranks),
                       **{f"rep{i}": r.contiguous() for i, r in enumerate(reps)}}, tmp)
            os.replace(tmp, cached)
        return basis, reps, ranks

    def _cache_path(self, name: str) -> str | None:
        if self.cache_dir is None or not self.spec.aligned:
            return None
        return os.path.join(self.cache_dir, hashlib.sha1(name.encode()).hexdigest() + ".safetensors")

    def size_bound(self, name: str) -> list[int]:
        """Per task, an upper bound on the number of entries of the representation (exact for dense ΔW_i)."""
        pairs = self.load(name)
        d_out, d_in, total_r = pairs[0][0].shape[0], pairs[0][1].shape[1], sum(A.shape[0] for _, A in pairs)
        rows = min(d_out, total_r) if self.spec.aligned else d_out
        return [rows * d_in] * len(pairs)

    def sample(self, name: str, rates: Sequence[float], seed: int = 0) -> tuple[list[int], list[torch.Tensor]]:
        """Pass 1: each task's entry count and magnitudes sampled at ``rates`` (all of them at rate 1).

        Dense ΔW_i entries are computed straight from the factors, without the matmul.
        """
        gen = derived_generator("sample", int(seed), name)
        if self.spec.aligned:
            return _sample_blocks([(slice(None), self.reps(name)[1])], rates, gen)
        if self.spec.drop:
            return _sample_blocks(self.blocks(name), rates, gen)
        numels, out = [], []
        for (B, A), rate in zip(self.factors(name), rates, strict=True):
            d_out, d_in = B.shape[0], A.shape[1]
            numels.append(d_out * d_in)
            if rate >= 1.0:
                out.append((B @ A).reshape(-1).abs().cpu())
                continue
            idx = torch.randint(d_out * d_in, (math.ceil(d_out * d_in * rate),), generator=gen).to(B.device)
            out.append((B[idx // d_in] * A[:, idx % d_in].T).sum(dim=1).abs().cpu())
        return numels, out

    def blocks(self, name: str) -> Iterator[tuple[slice, torch.Tensor]]:
        """Every task's representation in blocks of rows: ``(rows, stacked)``, stacked of shape (n_tasks, r, d_in).

        A dense ΔW_i (d_out, d_in) is never built whole: each block of rows is B_i[rows] @ A_i (then DARE), sized
        so that the tasks' blocks fit in the CPU cache; the elementwise TIES steps then run at cache speed instead of
        streaming each (d_out, d_in) matrix through memory several times. Aligned R_i are small and come whole.
        """
        if self.spec.aligned:
            yield slice(None), torch.stack(self.reps(name)[1])
            return
        pairs = self.factors(name)
        d_out, d_in = pairs[0][0].shape[0], pairs[0][1].shape[1]
        step = max(MASK_ROWS, (_BLOCK_ENTRIES // max(1, len(pairs) * d_in)) // MASK_ROWS * MASK_ROWS)
        gens = [dare_generator(self.config.seed, i, name) for i in range(len(pairs))] if self.spec.drop else None
        buffer = torch.empty((len(pairs), min(step, d_out), d_in), dtype=torch.float32, device=pairs[0][1].device)
        for r0 in range(0, d_out, step):
            rows = slice(r0, min(d_out, r0 + step))
            stacked = buffer[:, : rows.stop - r0]
            for i, (B, A) in enumerate(pairs):
                torch.mm(B[rows], A, out=stacked[i])
                if gens is not None:
                    stacked[i] = drop_rows(stacked[i], self.config.drop_rate, gens[i])
            yield rows, stacked

    def count(self, name: str, brackets: Sequence[tuple[float, float] | None]) -> list[tuple[int, torch.Tensor]]:
        """Pass 2: per task with a bracket (lo, hi), how many magnitudes lie below lo, and those inside it."""
        below = [0] * len(brackets)
        inside: list[list[torch.Tensor]] = [[] for _ in brackets]
        todo = [t for t, b in enumerate(brackets) if b is not None]
        if not todo:
            return [(0, torch.zeros(0)) for _ in brackets]
        for _, stacked in self.blocks(name):
            mags = stacked[todo].abs_() if len(todo) < len(brackets) else stacked.abs_()  # the block is scratch
            view = (-1,) + (1,) * (mags.ndim - 1)
            lo = torch.tensor([brackets[t][0] for t in todo], dtype=mags.dtype, device=mags.device).view(view)
            hi = torch.tensor([brackets[t][1] for t in todo], dtype=mags.dtype, device=mags.device).view(view)
            low = mags < lo
            counts = low.reshape(len(todo), -1).sum(dim=1).tolist()
            band = (~low).logical_and_(mags <= hi)
            for j, t in enumerate(todo):
                below[t] += int(counts[j])
                inside[t].append(mags[j][band[j]].float().cpu())
        return [(b, torch.cat(x) if x else torch.zeros(0)) for b, x in zip(below, inside, strict=True)]

    def merge(self, name: str, cuts: Sequence[float] | None,
              majority: torch.Tensor | None = None) -> tuple[MergedModule | None, torch.Tensor, tuple]:
        """Pass 3: the merged module and its elected-sign total.

        TIES's model-wide majority sign only matters where a module's trimmed values cancel exactly; such a module
        comes back as None (with its name) and is merged again once ``majority`` is known.
        """
        config, spec = self.config, self.spec
        zero = torch.zeros(())
        if spec.combine == "ta" and not (spec.aligned or spec.drop):  # plain TA: an exact LoRA, no dense update
            pairs = self.factors(name)
            return _ta_factors(name, pairs, config, tuple(int(A.shape[0]) for _, A in pairs)), zero, ()
        if spec.aligned:
            basis, reps, ranks = self.reps(name)
            blocks = [(slice(None), torch.stack(reps))]
        else:
            basis, ranks = None, tuple(int(A.shape[0]) for _, A in self.load(name))
            blocks = self.blocks(name)
        if spec.combine == "ties" and cuts is None:  # per-module top-K: each task's cut over its whole module
            blocks = [(rows, b.clone()) for rows, b in blocks]  # blocks() reuses one buffer
            cuts = [topk_threshold(torch.cat([b[t] for _, b in blocks]), self.topk) for t in range(len(ranks))]
        weights = config.task_weights(len(ranks))
        out, signs, tie = None, zero, False
        sign = majority if majority is not None else torch.tensor(1.0)
        for rows, block in blocks:
            if spec.combine == "ta":
                merged = ta_module(list(block), config)
            else:
                merged, block_signs, block_tie = ties_block(block, cuts, weights, sign, config.scale)
                signs = signs + block_signs.cpu()
                tie = tie or block_tie
            if rows == slice(None):
                out = merged
                continue
            if out is None:
                out = torch.empty((self._d_out(name), merged.shape[1]), dtype=merged.dtype, device=merged.device)
            out[rows] = merged
        if tie and majority is None:
            return None, signs, (name,)
        return MergedModule(name, basis, out, ranks), signs, ()

    def _d_out(self, name: str) -> int:
        return int(self.load(name)[0][0].shape[0])


def _sample_blocks(blocks, rates: Sequence[float], gen: torch.Generator) -> tuple[list[int], list[torch.Tensor]]:
    numels: list[int] = [0] * len(rates)
    out: list[list[torch.Tensor]] = [[] for _ in rates]
    for _, block in blocks:
        for t, (rep, rate) in enumerate(zip(list(block), rates, strict=True)):
            flat = rep.reshape(-1)
            numels[t] += flat.numel()
            if rate >= 1.0:
                out[t].append(flat.abs().float().cpu())
            else:
                idx = torch.randint(flat.numel(), (math.ceil(flat.numel() * rate),), generator=gen)
                out[t].append(flat[idx.to(flat.device)].abs().float().cpu())
    return numels, [torch.cat(x) for x in out]


def _ta_factors(name: str, pairs: Sequence[Factors], config: MergeConfig, ranks: tuple[int, ...]) -> MergedModule:
    coef = config.scale / (len(pairs) if config.reduce == "mean" else 1)
    weights = config.task_weights(len(pairs))
    left = torch.cat([coef * w * B for w, (B, _) in zip(weights, pairs, strict=True)], dim=1)
    right = torch.cat([A for _, A in pairs], dim=0)
    return MergedModule(name, left, right, ranks)


# ------------------------------------------------------------------------------- exact global top-K cuts

MapFn = Callable[[Callable, Iterable], Iterable]  # map(fn, names) -> results in order (builtin map, Dask, ...)


def _kth(sorted_sample: torch.Tensor, index: float) -> float:
    i = min(max(int(index), 0), sorted_sample.numel() - 1)
    return float(sorted_sample[i])


def global_cuts(merger: ModuleMerger, names: Sequence[str], *, map_fn: MapFn = map, sample: int = _SAMPLE,
                seed: int = 0) -> list[float]:
    """Per task, the magnitude cut of TIES's global top-K over every module, without holding the modules.

    Equal to ``primitives.task_thresholds(..., scope="global")`` (the same k-th smallest float32 magnitude), found
    in two passes: a sample brackets the cut, then one pass counts what lies below the bracket and keeps what lies
    inside it. A bracket that misses (probability ~1e-9; certain with a tiny ``sample``) is widened to the side
    it missed and the second pass repeated, so the cut is always exact.
    """
    topk = merger.topk
    bounds = [merger.size_bound(n) for n in names]
    n_tasks = len(bounds[0])
    rates = [min(1.0, sample / max(1, sum(b[t] for b in bounds))) for t in range(n_tasks)]
    passed = list(map_fn(functools.partial(merger.sample, rates=rates, seed=seed), names))
    sizes = [sum(numels[t] for numels, _ in passed) for t in range(n_tasks)]
    brackets: list[list[float] | None] = []
    for t in range(n_tasks):
        k = sizes[t] - int(sizes[t] * topk / 100.0)  # 1-based rank of the cut among ascending magnitudes
        if topk >= 100 or k < 1:
            brackets.append(None)
            continue
        s = torch.sort(torch.cat([drawn[t] for _, drawn in passed]))[0]
        q, m = k / sizes[t], s.numel()
        half = _Z * math.sqrt(max(m * q * (1 - q), 1.0)) + 2
        lo = _kth(s, q * m - half) if q * m - half >= 1 else -math.inf
        hi = _kth(s, q * m + half) if q * m + half < m - 1 else math.inf
        brackets.append([float(k), lo, hi])
    del passed
    cuts: list[float | None] = [0.0 if b is None else None for b in brackets]
    while any(c is None for c in cuts):
        ask = [None if cuts[t] is not None else (brackets[t][1], brackets[t][2]) for t in range(n_tasks)]
        counted = list(map_fn(functools.partial(merger.count, brackets=ask), names))
        for t in range(n_tasks):
            if ask[t] is None:
                continue
            below = sum(c[t][0] for c in counted)
            band = torch.cat([c[t][1] for c in counted])
            r = int(brackets[t][0]) - below
            if 1 <= r <= band.numel():
                cuts[t] = float(torch.kthvalue(band, r).values)
            elif r < 1:
                brackets[t][1] = -math.inf
            else:
                brackets[t][2] = math.inf
    return [float(c) for c in cuts]


# ---------------------------------------------------------------------------------------------- engine


def merge_stream(
    names: Sequence[str],
    load: Loader,
    *,
    method: str,
    config: MergeConfig | None = None,
    device: str = "cpu",
    map_fn: MapFn = map,
    cuts: Sequence[float] | None = None,
    cache_dir: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> Iterator[MergedModule]:
    """Merge module by module; yields one :class:`MergedModule` per name (held-back modules come last).

    Parameters
    ----------
    names : sequence of str
        The modules, in the order they are visited (any order gives the same merged modules).
    load : callable
        ``load(name)`` returns that module's ``[(B_i scaled, A_i), ...]``, one pair per task; it may read lazily
        from files. It is called once per pass.
    method : str
        A registered method name.
    config : MergeConfig, optional
    device : str, default "cpu"
        Where the alignment and merge run; DARE masks are drawn on the CPU whatever the device.
    map_fn : callable, default builtin ``map``
        How each pass visits the modules: ``map_fn(fn, names)`` yields ``fn(name)`` in order (lazily is best:
        the merge pass then holds one module at a time). ``knotwork._scheduler.ordered_map`` gives a Dask map.
    cuts : sequence of float, optional
        The global top-K cuts (one per task) when already computed with :func:`global_cuts`.
    cache_dir : str, optional
        Scratch folder for aligned representations between passes (:class:`ModuleMerger`).
    progress : callable, optional
        Called with each module's name once it is merged.
    """
    merger = ModuleMerger(method, config or MergeConfig(), load, device, cache_dir)
    names = list(names)
    if not names:
        return
    if cuts is None and merger.needs_global_cuts:
        cuts = global_cuts(merger, names, map_fn=map_fn)
    if merger.spec.combine == "ties" and merger.config.topk_scope == "global" and cuts is None:
        cuts = [0.0] * len(load(names[0]))  # top-K 100%: nothing trimmed
    sign_total: torch.Tensor | int = 0
    held = []
    for name, (module, signs, pending) in zip(names, map_fn(functools.partial(merger.merge, cuts=cuts), names),
                                              strict=True):
        sign_total = sign_total + signs
        if module is None:
            held.append(pending[0])
        else:
            yield module
        if progress is not None:
            progress(name)
    if held:
        majority = majority_sign(sign_total)
        for module, _, _ in map_fn(functools.partial(merger.merge, cuts=cuts, majority=majority), held):
            yield module
