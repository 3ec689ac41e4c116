"""Streaming float64 feature statistics per feature space, recorded with hooks over a data loader.

For each mergeable space the features of all models are concatenated, ``[f_1 ‖ … ‖ f_N]`` (``Σ n_i`` rows), and
every spatial position of every image counts as a sample, as in ZipIt!'s ``CovarianceMetric``. Only the running
sum and sum of outer products are kept, so memory is ``O((Σ n_i)²)`` per space whatever the data size.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import fx, nn

from knotwork._errors import ZipitError, check_finite
from knotwork._progress import as_callback
from knotwork.zipit.spaces import Tap, ZipGraph

__all__ = ["FeatureStats", "collect_statistics", "first_input", "model_device"]

#: A library function's ``progress``: False/None (silent), True (a bar on stderr) or a callable given the
#: number of batches just finished.
Progress = bool | Callable[[int], object] | None

log = logging.getLogger(__name__)


@dataclass
class FeatureStats:
    """Running moments of one space's concatenated features (float64).

    Attributes
    ----------
    count : int
        Samples seen (images x spatial positions).
    sum : Tensor of shape (O,)
    outer : Tensor of shape (O, O)
        Sum of ``x xᵀ`` over samples.
    """

    count: int
    sum: torch.Tensor
    outer: torch.Tensor

    @classmethod
    def empty(cls, dim: int, *, device: torch.device | str | None = None) -> FeatureStats:
        return cls(0, torch.zeros(dim, dtype=torch.float64, device=device),
                   torch.zeros(dim, dim, dtype=torch.float64, device=device))

    def update(self, feats: torch.Tensor) -> None:
        """Add samples; ``feats`` has shape (O, n_samples)."""
        f = feats.detach().to(self.sum.device, torch.float64)
        self.count += f.shape[1]
        self.sum += f.sum(1)
        self.outer += f @ f.T

    @property
    def mean(self) -> torch.Tensor:
        return self.sum / max(self.count, 1)

    @property
    def covariance(self) -> torch.Tensor:
        mu = self.mean
        return self.outer / max(self.count, 1) - torch.outer(mu, mu)

    @property
    def correlation(self) -> torch.Tensor:
        """Pearson correlation; features with (near) zero variance, e.g. dead ReLUs, correlate 0 with all."""
        cov = self.covariance
        std = cov.diagonal().clamp_min(0).sqrt()
        # The clamp keeps dead units from dividing by zero; their correlations come out ~0 instead of NaN.
        corr = cov / torch.outer(std, std).clamp_min(1e-12)
        corr = torch.nan_to_num(corr, nan=0.0).clamp(-1, 1)
        corr.fill_diagonal_(1.0)
        return corr


def model_device(model: nn.Module) -> torch.device:
    """The device of a model's first parameter or buffer (CPU for a model without tensors)."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def batch_count(loader: Iterable, max_batches: int | None) -> int | None:
    """How many batches a pass over ``loader`` will take, when that is known (for a progress bar's total)."""
    try:
        n = len(loader)  # type: ignore[arg-type]
    except TypeError:
        return max_batches
    return n if max_batches is None else min(n, max_batches)


def first_input(batch: object) -> torch.Tensor:
    """The model input of a loader batch: the batch itself, or the first item of a tuple/list/dict."""
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, list | tuple) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0]
    if isinstance(batch, dict) and batch:
        return next(iter(batch.values()))
    raise TypeError(f"cannot find the input tensor in a loader batch of type {type(batch).__name__}; yield "
                    "tensors or (inputs, labels) tuples")


def _to_rows(x: torch.Tensor, tap: Tap, width: int) -> torch.Tensor:
    """Select the space's channels from a tapped tensor and lay them out as (width, samples)."""
    b = x.shape[0]
    if x.ndim == 2 and tap.expand > 1:  # flattened (B, C*HW): channel-major blocks of `expand` columns
        x = x.reshape(b, -1, tap.expand)[:, tap.offset : tap.offset + width]
        return x.permute(1, 0, 2).reshape(width, -1)
    x = x[:, tap.offset : tap.offset + width]
    return x.transpose(0, 1).reshape(width, -1)  # (C, B*H*W): every position is a sample


class _Recorder:
    """Runs one model and returns the tapped tensors of the requested spaces."""

    def __init__(self, model: nn.Module, graph: ZipGraph, taps: dict[int, Tap]) -> None:
        self.taps = taps
        node_taps = sorted({t.module for t in taps.values() if t.where == "node"})
        if node_taps:
            if graph.graph_module is None:
                raise ZipitError("node taps need a traced graph (graph.graph_module is None)")
            g = fx.Graph()
            env: dict[fx.Node, fx.Node] = {}
            named = {}
            for node in graph.graph_module.graph.nodes:
                if node.op == "output":
                    continue
                env[node] = g.node_copy(node, lambda n: env[n])
                named[node.name] = env[node]
            g.output({name: named[name] for name in node_taps})
            self.runner: nn.Module = fx.GraphModule(model, g)
        else:
            self.runner = model
        self.captured: dict[str, torch.Tensor] = {}
        self.handles = []
        modules = dict(self.runner.named_modules())
        for t in taps.values():
            if t.where == "node":
                continue
            mod = modules[t.module]
            if t.where == "input":
                self.handles.append(mod.register_forward_pre_hook(self._pre(t.module)))
            elif t.where == "output":
                self.handles.append(mod.register_forward_hook(self._post(t.module)))
            else:
                raise ZipitError(f"tap of module {t.module!r}: where must be 'input', 'output' or 'node', got {t.where!r}")

    def _pre(self, name: str):
        def hook(_mod, args):
            self.captured["in:" + name] = args[0]
        return hook

    def _post(self, name: str):
        def hook(_mod, _args, out):
            self.captured["out:" + name] = out
        return hook

    def __call__(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        self.captured = {}
        out = self.runner(x)
        result = {}
        for k, t in self.taps.items():
            key = {"input": "in:", "output": "out:"}.get(t.where, "")
            result[k] = out[t.module] if t.where == "node" else self.captured[key + t.module]
        return result

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def collect_statistics(
    models: Sequence[nn.Module],
    graph: ZipGraph,
    loader: Iterable,
    *,
    spaces: Sequence[int] | None = None,
    max_batches: int | None = None,
    progress: Progress = False,
) -> dict[int, FeatureStats]:
    """Record every model's features at each space's tap and accumulate float64 moments.

    Parameters
    ----------
    models : sequence of nn.Module
        Same architecture; run in eval mode under ``torch.no_grad`` (their mode is restored).
    graph : ZipGraph
    loader : iterable
        Batches of inputs, or (inputs, labels) tuples; labels are ignored (the data may be unlabeled).
    spaces : sequence of int, optional
        Space indices to record; all mergeable spaces by default.
    max_batches : int, optional
        Stop after this many batches (the paper finds a few hundred images suffice).
    progress : bool or callable, default=False
        True for a bar on stderr, or a callable given the number of batches just finished.

    The batches are moved to the models' device (that of ``models[0]``); the moments are kept there in float64.

    Returns
    -------
    dict of int to FeatureStats
        One entry per recorded space, over ``Σ width`` concatenated features (model 0's first).
    """
    wanted = list(graph.mergeable if spaces is None else spaces)
    taps = {k: graph.spaces[k].tap for k in wanted}
    for k, t in taps.items():
        if t is None:
            raise ZipitError(f"feature space {k} has no tap; it cannot be matched")
    device = model_device(models[0])
    stats = {k: FeatureStats.empty(graph.spaces[k].width * len(models), device=device) for k in wanted}
    recorders = [_Recorder(m, graph, taps) for m in models]
    modes = [m.training for m in models]
    update, close = as_callback(progress, total=batch_count(loader, max_batches), desc="features", unit="batch")
    try:
        for m in models:
            m.eval()
        with torch.no_grad():
            for b, batch in enumerate(loader):
                if max_batches is not None and b >= max_batches:
                    break
                x = first_input(batch)
                check_finite(x, f"loader batch {b}", error=ZipitError)
                x = x.to(device)
                per_model = [rec(x) for rec in recorders]
                for k in wanted:
                    width = graph.spaces[k].width
                    feats = torch.cat([_to_rows(pm[k], taps[k], width) for pm in per_model], 0)
                    stats[k].update(feats)
                update(1)
    finally:
        close()
        for rec in recorders:
            rec.close()
        for m, mode in zip(models, modes, strict=True):
            m.train(mode)
    if any(s.count == 0 for s in stats.values()):
        raise ZipitError("the loader yielded no batches; feature statistics need data")
    log.info("collected statistics of %d spaces over %d samples", len(stats), next(iter(stats.values())).count)
    return stats
