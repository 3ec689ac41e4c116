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
ΔW_i is a matmul), which is what makes memory independent of the number of modules.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from knotwork.merge.align import knots_align
from knotwork.merge.config import MergeConfig
from knotwork.merge.methods.base import MergeMethod
from knotwork.merge.methods.dare import drop_module
from knotwork.merge.methods.ta import ta_module
from knotwork.merge.methods.ties import has_sign_ties, majority_sign, resolve_topk, ties_combine, ties_trimmed
from knotwork.merge.primitives import elect_sign, topk_threshold
from knotwork.merge.registry import get_method

Factors = tuple[torch.Tensor, torch.Tensor]  # (B scaled, A): (d_out, r), (r, d_in)
Loader = Callable[[str], Sequence[Factors]]

_SAMPLE = 1 << 20  # magnitudes sampled per task for the bracket; its width shrinks as 1/sqrt(_SAMPLE)
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


# --------------------------------------------------------------------------------------- representations


class _Reps:
    """Per module: the representation of every task the method merges (aligned R_i or dense ΔW_i, after DARE)."""

    def __init__(self, spec: MergeMethod, config: MergeConfig, load: Loader, device: str) -> None:
        self.spec, self.config, self.load, self.device = spec, config, load, torch.device(device)

    def factors(self, name: str) -> list[Factors]:
        return [(B.to(self.device, torch.float32), A.to(self.device, torch.float32)) for B, A in self.load(name)]

    def __call__(self, name: str) -> tuple[torch.Tensor | None, list[torch.Tensor], list[Factors]]:
        pairs = self.factors(name)
        if self.spec.aligned:
            alignment = knots_align(pairs, rel_tol=self.config.rel_tol)
            basis, reps = alignment.basis, list(alignment.reps)
        else:
            basis, reps = None, [B @ A for B, A in pairs]
        if self.spec.drop:
            reps = [drop_module(rep, self.config, i, name) for i, rep in enumerate(reps)]
        return basis, reps, pairs

    def sample(self, name: str, rates: Sequence[float], gen: torch.Generator):
        """Sampled magnitudes of each task's representation; dense ΔW entries come straight from the factors."""
        if self.spec.aligned or self.spec.drop:
            return _sample_reps(self(name)[1], rates, gen)
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


# ------------------------------------------------------------------------------- exact global top-K cuts


def _kth(sorted_sample: torch.Tensor, index: float) -> float:
    i = min(max(int(index), 0), sorted_sample.numel() - 1)
    return float(sorted_sample[i])


def _sample_reps(reps: Sequence[torch.Tensor], rates: Sequence[float], gen: torch.Generator):
    """Numels, and magnitudes sampled at ``rates`` (with replacement; all entries at rate 1), of one module."""
    out = []
    for rep, rate in zip(reps, rates, strict=True):
        flat = rep.reshape(-1)
        if rate >= 1.0:
            out.append(flat.abs().float().cpu())
        else:
            idx = torch.randint(flat.numel(), (math.ceil(flat.numel() * rate),), generator=gen)
            out.append(flat[idx.to(flat.device)].abs().float().cpu())
    return [rep.numel() for rep in reps], out


def global_cuts(
    names: Sequence[str],
    reps_of: Callable[[str], list[torch.Tensor]],
    n_tasks: int,
    topk: float,
    *,
    sample_of: Callable[[str, Sequence[float], torch.Generator], tuple[list[int], list[torch.Tensor]]] | None = None,
    sample: int = _SAMPLE,
    seed: int = 0,
) -> list[float]:
    """Per task, the magnitude cut of TIES's global top-K over every module, without holding the modules.

    Equal to ``primitives.task_thresholds(..., scope="global")`` (the same k-th smallest float32 magnitude), found
    in two passes: a sample brackets the cut, then one pass counts what lies below the bracket and keeps what lies
    inside it. A bracket that misses (probability ~1e-9) is widened and the second pass repeated. ``sample_of``
    may sample a module without building its representations (dense ΔW entries straight from the factors).
    """
    if topk >= 100:
        return [0.0] * n_tasks
    sample_of = sample_of or (lambda name, rates, gen: _sample_reps(reps_of(name), rates, gen))
    gen = torch.Generator().manual_seed(seed)
    sizes = [0] * n_tasks
    rates = [1.0] * n_tasks
    samples: list[list[torch.Tensor]] = [[] for _ in range(n_tasks)]
    for name in names:  # Pass 1: sizes and a Bernoulli-like sample whose rate halves whenever it grows past 2x
        numels, drawn = sample_of(name, rates, gen)
        for t in range(n_tasks):
            sizes[t] += numels[t]
            samples[t].append(drawn[t])
            while sum(x.numel() for x in samples[t]) > 2 * sample:
                rates[t] /= 2
                samples[t] = [x[torch.rand(x.numel(), generator=gen) < 0.5] for x in samples[t]]
    brackets: list[list[float] | None] = []
    for t in range(n_tasks):
        k = sizes[t] - int(sizes[t] * topk / 100.0)  # 1-based rank of the cut among ascending magnitudes
        if k < 1:
            brackets.append(None)
            continue
        s = torch.sort(torch.cat(samples[t]))[0]
        q, m = k / sizes[t], s.numel()
        half = _Z * math.sqrt(max(m * q * (1 - q), 1.0)) + 2
        lo = _kth(s, q * m - half) if q * m - half >= 1 else -math.inf
        hi = _kth(s, q * m + half) if q * m + half < m - 1 else math.inf
        brackets.append([float(k), lo, hi])
    cuts: list[float | None] = [0.0 if b is None else None for b in brackets]
    while any(c is None for c in cuts):
        todo = [t for t in range(n_tasks) if cuts[t] is None]
        below = dict.fromkeys(todo, 0)
        inside: dict[int, list[torch.Tensor]] = {t: [] for t in todo}
        for name in names:  # Pass 2
            reps = reps_of(name)
            for t in todo:
                _, lo, hi = brackets[t]
                mag = reps[t].reshape(-1).abs().float()
                below[t] += int((mag < lo).sum())
                inside[t].append(mag[(mag >= lo) & (mag <= hi)].cpu())
        for t in todo:
            k, lo, hi = brackets[t]
            band = torch.cat(inside[t])
            r = int(k) - below[t]
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
    n_tasks: int | None = None,
    device: str = "cpu",
    cuts: Sequence[float] | None = None,
    progress: Callable[[str], None] | None = None,
) -> Iterator[MergedModule]:
    """Merge module by module; yields one :class:`MergedModule` per name (held-back modules come last).

    Parameters
    ----------
    names : sequence of str
        The modules, in the order they are visited (sorted order reproduces the in-memory route bit for bit).
    load : callable
        ``load(name)`` returns that module's ``[(B_i scaled, A_i), ...]``, one pair per task; it may read lazily
        from files. It is called once per pass.
    method : str
        A registered method name.
    config : MergeConfig, optional
    device : str, default "cpu"
        Where the alignment and merge run; DARE masks are drawn on the CPU whatever the device.
    cuts : sequence of float, optional
        Precomputed global top-K cuts (one per task), e.g. reduced over Dask workers; computed here when needed
        and not given.
    progress : callable, optional
        Called with each module's name once it is merged.
    """
    spec = get_method(method)
    config = config or MergeConfig()
    reps_of = _Reps(spec, config, load, device)
    names = list(names)
    if not names:
        return
    if n_tasks is None:
        n_tasks = len(load(names[0]))
    weights = config.task_weights(n_tasks)
    topk = resolve_topk(config, spec.default_topk) if spec.combine == "ties" else None
    if spec.combine == "ties" and config.topk_scope == "global" and cuts is None:
        cuts = global_cuts(names, lambda n: reps_of(n)[1], n_tasks, topk, sample_of=reps_of.sample)
    sign_total: torch.Tensor | int = 0
    held: list[tuple[str, torch.Tensor | None, torch.Tensor, tuple[int, ...]]] = []
    for name in names:
        basis, reps, pairs = reps_of(name)
        ranks = tuple(int(A.shape[0]) for _, A in pairs)
        if spec.combine == "ta":
            if spec.aligned or spec.drop:
                yield MergedModule(name, basis, ta_module(reps, config), ranks)
            else:  # plain TA is an exact LoRA: stack the weighted B_i and the A_i, no dense update needed
                yield _ta_factors(name, pairs, config, weights, ranks)
        else:
            module_cuts = cuts if config.topk_scope == "global" else [topk_threshold(rep, topk) for rep in reps]
            stacked = ties_trimmed(reps, module_cuts, weights)
            sign_total = sign_total + elect_sign(stacked).sum().cpu()
            if has_sign_ties(stacked):
                held.append((name, basis, stacked, ranks))
            else:
                yield MergedModule(name, basis, ties_combine(stacked, torch.tensor(1.0, device=stacked.device),
                                                             config.scale), ranks)
        if progress is not None:
            progress(name)
    if held:
        majority = majority_sign(sign_total)
        for name, basis, stacked, ranks in held:
            yield MergedModule(name, basis, ties_combine(stacked, majority.to(stacked.device), config.scale), ranks)


def _ta_factors(name: str, pairs: Sequence[Factors], config: MergeConfig, weights: Sequence[float],
                ranks: tuple[int, ...]) -> MergedModule:
    coef = config.scale / (len(pairs) if config.reduce == "mean" else 1)
    left = torch.cat([coef * w * B for w, (B, _) in zip(weights, pairs, strict=True)], dim=1)
    right = torch.cat([A for _, A in pairs], dim=0)
    return MergedModule(name, left, right, ranks)
