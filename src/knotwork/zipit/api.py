"""``zip_models``: merge models of one architecture trained from different inits on different tasks."""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import fx, nn

from knotwork._errors import ZipitError, check_finite, check_positive_int
from knotwork.zipit.bn import reset_bn_stats
from knotwork.zipit.fold import fold_models
from knotwork.zipit.graph import ZipGraph, trace_feature_graph
from knotwork.zipit.heads import MultiHeadModel, Unmerge, find_cut, split_graph
from knotwork.zipit.matchers import get_matcher, split_blocks
from knotwork.zipit.matchers.zipit import check_options
from knotwork.zipit.models import state_difference
from knotwork.zipit.rebasin import weight_matching
from knotwork.zipit.stats import Progress, collect_statistics, first_input, model_device

__all__ = ["METHODS", "compute_transforms", "zip_models"]

log = logging.getLogger(__name__)

#: Merging methods: the registered matchers plus Git Re-Basin weight matching (which needs no data).
METHODS = ("zipit", "permute", "identity", "rebasin")


def _check_models(models: Sequence[nn.Module]) -> None:
    """One architecture, equal tensor shapes, finite weights: refused with the model and tensor named."""
    if len(models) < 2:
        raise ZipitError(f"zip_models needs at least 2 models; got {len(models)}")
    ref = models[0].state_dict()
    for i, m in enumerate(models):
        if type(m) is not type(models[0]):
            raise ZipitError(f"model {i} is a {type(m).__name__}, model 0 a {type(models[0]).__name__}; "
                             "all models must share one architecture")
        sd = m.state_dict()
        diff = state_difference(sd, ref, "model 0")
        if diff is not None:
            raise ZipitError(f"model {i}: {diff}")
        for key, t in sd.items():
            check_finite(t, f"model {i} tensor {key!r}", error=ZipitError)


@contextmanager
def _on_device(modules: Sequence[nn.Module], device: torch.device | str | None) -> Iterator[None]:
    """Run a data pass with ``modules`` on ``device`` (None: where they are); they come back afterwards."""
    if device is None:
        yield
        return
    homes = [model_device(m) for m in modules]
    try:
        for m in modules:
            m.to(device)
        yield
    finally:
        for m, home in zip(modules, homes, strict=True):
            m.to(home)


def _trunk_spaces(graph: ZipGraph, cut: fx.Node) -> list[int]:
    """Mergeable spaces with a producer at or before the cut: these are zipped, the rest stay in the heads."""
    pos = {n.target: i for i, n in enumerate(graph.graph_module.graph.nodes) if n.op == "call_module"}
    k = list(graph.graph_module.graph.nodes).index(cut)
    return [s for s in graph.mergeable if any(pos[p] <= k for p in graph.spaces[s].producers)]


def compute_transforms(
    models: Sequence[nn.Module],
    graph: ZipGraph,
    loader: Iterable | None,
    *,
    method: str = "zipit",
    spaces: Sequence[int] | None = None,
    alpha: float = 0.3,
    beta: float = 0.125,
    max_batches: int | None = None,
    seed: int = 0,
    progress: Progress = False,
) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """``(M, U)`` for each mergeable space (or the given ``spaces``) with one of :data:`METHODS`.

    The feature statistics are computed where the models are; the matchers work on CPU copies of them.
    """
    wanted = list(graph.mergeable if spaces is None else spaces)
    if method == "rebasin":
        full = weight_matching(models, graph, seed=seed)
        return {k: full[k] for k in wanted}
    matcher = get_matcher(method)
    if loader is None:
        raise ZipitError(f"method {method!r} matches activations and needs a data loader")
    stats = collect_statistics(models, graph, loader, spaces=wanted, max_batches=max_batches, progress=progress)
    kwargs = {"alpha": alpha, "beta": beta} if method == "zipit" else {}
    out = {}
    for k in wanted:
        corr = stats[k].correlation.cpu()
        out[k] = matcher(corr, [graph.spaces[k].width] * len(models), **kwargs)
    return out


def zip_models(
    models: Sequence[nn.Module],
    loader: Iterable,
    *,
    alpha: float = 0.3,
    beta: float = 0.125,
    stop_at: str | None = None,
    method: str = "zipit",
    graph: ZipGraph | None = None,
    reset_bn: bool = True,
    max_batches: int | None = None,
    bn_batches: int | None = None,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: Progress = False,
) -> nn.Module:
    """Merge ``models`` (same architecture, different inits and tasks) into one model, without training.

    ZipIt! (Stoica et al., "ZipIt! Merging Models from Different Tasks without Training", ICLR 2024): record
    every model's features on ``loader``, correlate the concatenated features of each feature space, merge the
    most correlated features (within or across models), fold the merge/unmerge matrices into the weights, then
    reset BatchNorm statistics on the same data.

    Parameters
    ----------
    models : sequence of nn.Module
        N >= 2 models of one architecture. They are not modified.
    loader : iterable
        Batches of inputs or (inputs, labels); labels are never used. Its first batch also serves as the
        example input for tracing.
    alpha : float, default=0.3
        ZipIt!'s discount on merging an already merged feature again (``method="zipit"`` only).
    beta : float, default=0.125
        Fraction of merges allowed within one model (``method="zipit"`` only); 0 gives exactly Permute.
    stop_at : str, optional
        Partial zip: an fx node name or module name (e.g. ``"layer2"`` or ``"backbone.layer2"``); everything up
        to its end is zipped, the rest of each model becomes its own head. The result then returns stacked
        outputs ``(N, batch, ...)``. ``None`` zips the whole model (same class as the inputs).
    method : {"zipit", "permute", "identity", "rebasin"}, default="zipit"
        "permute" and "identity" (weight averaging) are the paper's baselines in the same framework;
        "rebasin" is Git Re-Basin weight matching (ignores the data except for the BatchNorm reset).
    graph : ZipGraph, optional
        Feature spaces; traced with ``torch.fx`` when omitted. Pass one for architectures tracing cannot handle
        (partial zipping needs a traced graph).
    reset_bn : bool, default=True
        Re-estimate BatchNorm statistics on ``loader`` afterwards (the paper does so for every method).
    max_batches, bn_batches : int, optional
        Limit the batches used for feature statistics and for the BatchNorm reset.
    seed : int, default=0
        Order of the coordinate-descent sweeps of "rebasin"; the other methods are deterministic.
    device : torch.device or str, optional
        Where the two data passes (feature statistics, BatchNorm reset) run, e.g. ``"cuda"``; batches are
        moved there. Matching and folding stay where the models are, and so does the result. None: where the
        models are.
    progress : bool or callable, default=False
        True for bars on stderr over the data passes, or a callable given the number of batches just finished
        (called during both passes).

    Returns
    -------
    nn.Module
        The zipped model (eval mode), or a :class:`~knotwork.zipit.heads.MultiHeadModel` when ``stop_at`` is set.

    Raises
    ------
    knotwork.zipit.ZipitError
        Before any data pass: fewer than two models, different architectures or shapes (naming the tensor),
        non-finite weights (naming the model and tensor), an unknown method, options that the method does not
        use, ``alpha``/``beta`` outside [0, 1], a batch count below 1, or a ``stop_at`` naming no node or
        module. During the statistics pass: a batch with NaN or inf inputs (naming the batch).
    knotwork.zipit.UnsupportedOperationError
        A :class:`~knotwork.zipit.ZipitError`: tracing met an operation it cannot map (the message names the
        fx node).

    Examples
    --------
    >>> import torch
    >>> from knotwork.zipit import zip_models
    >>> from knotwork.zipit.models import MLP
    >>> a, b = MLP(8, 16, 4), MLP(8, 16, 4)
    >>> data = [torch.randn(32, 8) for _ in range(4)]
    >>> merged = zip_models([a, b], data, alpha=0.5, beta=0.5)
    >>> merged(data[0]).shape
    torch.Size([32, 4])
    """
    _check_models(models)
    if method not in METHODS:
        raise ZipitError(f"unknown method {method!r}; choose one of {list(METHODS)}")
    if method != "zipit" and (alpha, beta) != (0.3, 0.125):
        raise ZipitError(f"alpha and beta are ZipIt! options; method {method!r} does not use them")
    check_options(alpha, beta, len(models))
    for name, value in (("max_batches", max_batches), ("bn_batches", bn_batches)):
        if value is not None:
            check_positive_int(value, name, error=ZipitError)
    models = [copy.deepcopy(m).eval() for m in models]
    try:
        example = first_input(next(iter(loader)))
    except StopIteration:
        raise ZipitError("the loader yielded no batches") from None
    if graph is None:
        graph = trace_feature_graph(models[0], example)
    graph.validate(models[0])
    cut = None
    spaces = None
    if stop_at is not None:
        if graph.graph_module is None:
            raise ZipitError("stop_at needs a traced graph; this ZipGraph was written by hand")
        cut = find_cut(graph.graph_module.graph, stop_at)
        spaces = _trunk_spaces(graph, cut)
    with _on_device(models, device if method != "rebasin" else None):  # weight matching reads no data
        transforms = compute_transforms(models, graph, loader, method=method, spaces=spaces, alpha=alpha,
                                        beta=beta, max_batches=max_batches, seed=seed, progress=progress)
    merged = copy.deepcopy(models[0])
    merged.load_state_dict(fold_models(models, graph, transforms))
    result: nn.Module = merged
    if cut is not None:
        trunk_graph, head_graph = split_graph(graph.graph_module.graph, cut)
        trunk = fx.GraphModule(merged, trunk_graph, "ZippedTrunk")
        heads = [fx.GraphModule(m, head_graph, "Head") for m in models]
        cut_space = next((k for k in spaces if cut.name in graph.spaces[k].nodes), None)
        if cut_space is None:
            unmerges = [nn.Identity() for _ in models]
        else:
            blocks = split_blocks(*transforms[cut_space], [graph.spaces[cut_space].width] * len(models))
            unmerges = [Unmerge(u) for _, u in blocks]
        result = MultiHeadModel(trunk, heads, unmerges)
    if reset_bn:
        with _on_device([result], device):
            reset_bn_stats(result, loader, max_batches=bn_batches, progress=progress)
    log.info("zipped %d models with %s over %d spaces", len(models), method, len(transforms))
    return result.eval()
