"""`DBA`: Dynamic Batch Adaptation wrapped around any ``torch.optim`` optimizer."""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from knotwork._errors import TrainError
from knotwork.train.capture import capture, check_traces, find_layers
from knotwork.train.gram import layer_gram, self_gram, subset_gradient
from knotwork.train.metrics import METRICS, get_metric, subsets_stats
from knotwork.train.search import SEARCHES, get_search

AGGREGATES = ("mean", "sum")
#: The keyword options of :class:`DBA` besides ``seed`` (what a run configuration may pass on).
OPTIONS = ("metric", "search", "per_layer", "aggregate", "min_size", "max_size", "random_composition")


def check_options(options: dict) -> None:
    """Refuse DBA options that :class:`DBA` would refuse, before a model or data exist.

    Raises
    ------
    TrainError
        Naming the option: an unknown key, an unknown metric or search, an aggregate other than "mean" or
        "sum", ``min_size`` < 1, or ``max_size`` < ``min_size``.
    """
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise TrainError(f"unknown DBA option {unknown[0]!r}; known: {', '.join(OPTIONS)}")
    get_metric(options.get("metric", "snr"))
    get_search(options.get("search", "backward"))
    aggregate = options.get("aggregate", "mean")
    if aggregate not in AGGREGATES:
        raise TrainError(f"The 'aggregate' parameter of DBA must be one of {AGGREGATES}. Got '{aggregate}' instead.")
    min_size, max_size = options.get("min_size", 1), options.get("max_size")
    if isinstance(min_size, bool) or not isinstance(min_size, int) or min_size < 1:
        raise TrainError(f"The 'min_size' parameter of DBA must be an int >= 1. Got {min_size!r} instead.")
    if max_size is not None and (isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < min_size):
        raise TrainError(f"The 'max_size' parameter of DBA must be None or an int >= min_size. Got {max_size!r} instead.")


@dataclass(frozen=True)
class StepRecord:
    """What one DBA step selected.

    Attributes
    ----------
    pool_size : int
        Samples the closure returned losses for.
    sizes : dict of str to int
        Chosen subset size per layer (the same for every layer when ``per_layer=False``).
    score_pool, score_selected : dict of str to float
        The metric on the whole pool and on the chosen subset, per layer (key ``"<global>"`` when global).
    loss : float
        Mean loss over the pool before the step; NaN for a step on a pass recorded by :meth:`DBA.capture`.
    """

    pool_size: int
    sizes: dict[str, int]
    score_pool: dict[str, float]
    score_selected: dict[str, float]
    loss: float


def _rng_to_tensor(rng: np.random.Generator) -> Tensor:
    """The bit generator's state as JSON bytes in a uint8 tensor (loadable with ``torch.load(weights_only=True)``)."""

    def plain(value: Any) -> Any:
        if isinstance(value, np.ndarray):
            return value.tolist()
        if isinstance(value, np.integer):
            return int(value)
        raise TypeError(f"cannot store {type(value).__name__} in a DBA generator state")

    text = json.dumps(rng.bit_generator.state, default=plain)
    return torch.tensor(list(text.encode("utf-8")), dtype=torch.uint8)


def _rng_from_tensor(data: Tensor) -> np.random.Generator:
    """Inverse of :func:`_rng_to_tensor`."""
    state = json.loads(bytes(data.to(torch.uint8).tolist()).decode("utf-8"))
    name = state.get("bit_generator")
    bit_generator = getattr(np.random, str(name), None)
    if not (isinstance(bit_generator, type) and issubclass(bit_generator, np.random.BitGenerator)):
        raise TrainError(f"the DBA state names an unknown numpy bit generator {name!r}.")
    if name == "MT19937":
        state["state"]["key"] = np.asarray(state["state"]["key"], dtype=np.uint32)
    bg = bit_generator()
    bg.state = state
    return np.random.Generator(bg)


class DBA(torch.optim.Optimizer):
    """Dynamic Batch Adaptation: per-layer choice of the samples whose gradients make up each step.

    At every step DBA runs the closure's forward and backward pass once over a pool of ``P`` samples,
    forms for each layer the Gram matrix of the per-sample gradients without materialising them (see
    :func:`~knotwork.train.gram.layer_gram`), searches for the subset that best improves ``metric``, writes
    the aggregated gradient of that subset into ``.grad`` and calls the wrapped optimizer's ``step()``. The
    wrapped optimizer (SGD, Adam, ...) is unchanged: DBA only produces gradients, like Opacus's
    ``DPOptimizer``.

    Like ``DPOptimizer``, DBA is itself a ``torch.optim.Optimizer`` that shares the wrapped optimizer's
    ``param_groups``, ``state`` and ``defaults`` (not copies), so learning-rate schedulers accept it and
    setting ``dba.param_groups[0]["lr"]`` sets the wrapped optimizer's rate. :meth:`state_dict` holds the
    wrapped optimizer's state plus DBA's own (its generator, its history), so a resumed run repeats an
    uninterrupted one exactly.

    Only the abstract of the paper is public: it fixes per-sample gradients, a subset chosen per layer to
    improve "metrics such as gradient variance", and a standard optimizer applying the step. The metric,
    search, aggregation and size bounds here are documented, switchable reconstructions (docs/dba.md).

    Parameters
    ----------
    model : nn.Module
        Every trainable parameter must belong to an ``nn.Linear`` or ``nn.Conv2d`` (``groups=1``, zero
        padding) that runs once per forward pass; anything else is refused up front.
    optimizer : torch.optim.Optimizer
        Must hold every trainable parameter of those layers.
    metric : str, default "snr"
        A key of :data:`~knotwork.train.metrics.METRICS`: "variance", "var_of_mean", "snr", "cos_to_full".
        "snr" validated best in our MNIST runs; "var_of_mean" keeps the samples with the smallest gradients.
    search : str, default "backward"
        A key of :data:`~knotwork.train.search.SEARCHES`: "backward", "forward", "topk", "all".
    per_layer : bool, default True
        Select separately for each layer (the paper's choice); False selects one subset for the whole
        network from the summed Gram matrix (an ablation).
    aggregate : {"mean", "sum"}, default "mean"
        "mean" divides the subset's summed gradient by ``|S|``, so the step size does not depend on the subset
        size; "sum" divides by the pool size ``P`` instead, so a smaller subset takes a proportionally smaller
        step (a constant ``1/P`` keeps learning rates comparable; with every sample selected both equal the
        plain mean-loss gradient).
    min_size : int, default 1
        Smallest subset a search may return; a pool smaller than this keeps every sample.
    max_size : int, optional
        Largest subset; the search keeps removing samples until it is reached.
    random_composition : bool, default False
        Ablation: keep the size the search chose but draw the samples uniformly at random.
    seed : int or numpy.random.Generator, optional
        Randomness for ``random_composition``.

    Attributes
    ----------
    optimizer : torch.optim.Optimizer
        The wrapped optimizer.
    param_groups, state, defaults
        The wrapped optimizer's, shared.
    layers : dict of str to nn.Module
        The layers DBA adapts, by module name.
    history : list of StepRecord
        One record per step, e.g. for plotting the chosen subset sizes (:meth:`subset_sizes`).
    last_subsets : dict of str to numpy.ndarray
        The pool indices (sorted) whose gradients made up the last step, per layer; empty before the first step.

    References
    ----------
    C. Simionescu, G. Stoica, R. Herscovici. "Dynamic Batch Adaptation". arXiv:2208.00815, 2022.

    Examples
    --------
    >>> import torch, torch.nn.functional as F
    >>> from knotwork.train import DBA
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    >>> dba = DBA(model, torch.optim.SGD(model.parameters(), lr=0.1), metric="snr", min_size=8)
    >>> x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
    >>> loss = dba.step(lambda: F.cross_entropy(model(x), y, reduction="none"))
    >>> sorted(dba.history[-1].sizes)
    ['0', '2']
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        metric: str = "snr",
        search: str = "backward",
        per_layer: bool = True,
        aggregate: str = "mean",
        min_size: int = 1,
        max_size: int | None = None,
        random_composition: bool = False,
        seed: int | np.random.Generator | None = None,
    ) -> None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"The 'optimizer' parameter of DBA must be a torch.optim.Optimizer. Got {type(optimizer).__name__}.")
        check_options(
            {"metric": metric, "search": search, "per_layer": per_layer, "aggregate": aggregate,
             "min_size": min_size, "max_size": max_size, "random_composition": random_composition}
        )
        self._metric = get_metric(metric)
        self._search = get_search(search)
        self.model = model
        self.optimizer = optimizer
        self.metric, self.search = metric, search
        self.per_layer, self.aggregate = per_layer, aggregate
        self.min_size, self.max_size = min_size, max_size
        self.random_composition = random_composition
        self._rng = np.random.default_rng(seed)
        self.layers = find_layers(model)
        held = {id(p) for group in optimizer.param_groups for p in group["params"]}
        for name, module in self.layers.items():
            for pname, p in module.named_parameters(recurse=False):
                if p.requires_grad and id(p) not in held:
                    raise TrainError(
                        f"parameter '{name}.{pname}' is trainable but not held by the optimizer; pass all of "
                        "model.parameters() or freeze it."
                    )
        self.history: list[StepRecord] = []
        self.last_subsets: dict[str, np.ndarray] = {}
        self._input_cache: dict[str, tuple[Tensor, Tensor]] = {}
        self._captured: dict | None = None
        # What torch.optim.Optimizer.__init__ sets besides param_groups/state/defaults (those are the wrapped
        # optimizer's, below); its __init__ is not called because it would build a second set of groups.
        self._optimizer_step_pre_hooks: OrderedDict = OrderedDict()
        self._optimizer_step_post_hooks: OrderedDict = OrderedDict()
        self._optimizer_state_dict_pre_hooks: OrderedDict = OrderedDict()
        self._optimizer_state_dict_post_hooks: OrderedDict = OrderedDict()
        self._optimizer_load_state_dict_pre_hooks: OrderedDict = OrderedDict()
        self._optimizer_load_state_dict_post_hooks: OrderedDict = OrderedDict()
        self._patch_step_function()

    #: GradScaler hands DBA the scale (``grad_scale``) and its inf check (``found_inf``) instead of unscaling
    #: ``.grad`` itself: DBA rebuilds the gradients from the recorded (scaled) output gradients.
    _step_supports_amp_scaling = True

    # Delegation to the wrapped optimizer, as Opacus's DPOptimizer does.
    @property  # type: ignore[override]
    def param_groups(self) -> list[dict]:
        return self.optimizer.param_groups

    @param_groups.setter
    def param_groups(self, value: list[dict]) -> None:
        self.optimizer.param_groups = value

    @property  # type: ignore[override]
    def state(self) -> dict:
        return self.optimizer.state

    @state.setter
    def state(self, value: dict) -> None:
        self.optimizer.state = value

    @property  # type: ignore[override]
    def defaults(self) -> dict:
        return self.optimizer.defaults

    @defaults.setter
    def defaults(self, value: dict) -> None:
        self.optimizer.defaults = value

    def add_param_group(self, param_group: dict) -> None:
        """Add a group to the wrapped optimizer (its parameters must belong to layers DBA adapts)."""
        self.optimizer.add_param_group(param_group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def _options(self) -> dict:
        return {"metric": self.metric, "search": self.search, "per_layer": self.per_layer,
                "aggregate": self.aggregate, "min_size": self.min_size, "max_size": self.max_size,
                "random_composition": self.random_composition}

    def state_dict(self) -> dict:
        """The wrapped optimizer's ``state_dict()`` plus key ``"dba"``: DBA's options, generator and history.

        Everything is a tensor or a plain Python value (the generator state is a uint8 tensor), so the result
        loads with ``torch.load(..., weights_only=True)``.
        """
        out = self.optimizer.state_dict()
        out["dba"] = {
            "options": self._options(),
            "rng": _rng_to_tensor(self._rng),
            "history": [asdict(rec) for rec in self.history],
        }
        return out

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore :meth:`state_dict`; a plain optimizer ``state_dict`` (no ``"dba"`` key) restores the optimizer only.

        Raises
        ------
        TrainError
            When the saved DBA options differ from this DBA's (the resumed run would not continue the saved one).
        """
        state_dict = dict(state_dict)
        own = state_dict.pop("dba", None)
        if own is not None:
            saved = own.get("options", {})
            for key, value in self._options().items():
                if key in saved and saved[key] != value:
                    raise TrainError(
                        f"the DBA state was saved with {key}={saved[key]!r} but this DBA has {key}={value!r}."
                    )
        self.optimizer.load_state_dict(state_dict)
        if own is not None:
            self._rng = _rng_from_tensor(own["rng"])
            self.history = [StepRecord(**rec) for rec in own.get("history", [])]
            self._input_cache = {}

    def __repr__(self) -> str:
        inner = "\n".join("    " + line for line in repr(self.optimizer).splitlines())
        return (
            f"DBA(metric='{self.metric}', search='{self.search}', per_layer={self.per_layer}, "
            f"aggregate='{self.aggregate}', min_size={self.min_size}, max_size={self.max_size}, "
            f"random_composition={self.random_composition}, layers={list(self.layers)}, "
            f"steps={len(self.history)},\n  optimizer=\n{inner}\n)"
        )

    @contextmanager
    def capture(self) -> Iterator[None]:
        """Record the pool's forward and backward pass for the next :meth:`step` called without a closure.

        Inside the block, run the model on the pool and back-propagate the **sum** of the per-sample losses
        (optionally scaled, e.g. ``scaler.scale(losses.sum()).backward()``); then call ``dba.step()`` or
        ``scaler.step(dba)``. This is the form that works with ``torch.amp.GradScaler``: the scaler's inf check
        reads the ``.grad`` of that backward pass, and DBA divides the recorded output gradients by the scale.
        """
        self._captured = None
        with torch.enable_grad(), capture(self.layers) as traces:
            yield
        self._captured = traces

    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """Run one DBA step on the pool that ``closure`` evaluates, or on the pass recorded by :meth:`capture`.

        Parameters
        ----------
        closure : callable returning Tensor of shape (P,), optional
            Runs the model's forward pass on the pool and returns the loss of every sample separately (e.g.
            ``F.cross_entropy(model(x), y, reduction="none")``). DBA calls it once and does the backward pass.
            Without it, the step uses the pass recorded by the last ``with dba.capture():`` block.

        Returns
        -------
        Tensor or None
            The mean pool loss before the step (detached); None without a closure.
        """
        grad_scale = getattr(self, "grad_scale", None)
        found_inf = getattr(self, "found_inf", None)
        if closure is None:
            if self._captured is None:
                raise TrainError(
                    "DBA.step() needs a closure returning per-sample losses, or a preceding 'with dba.capture():' "
                    "block that ran the forward and backward pass."
                )
            traces, self._captured = self._captured, None
            first = next(iter(traces.values()))
            if first.inputs is None:
                raise TrainError(f"layer '{first.name}' did not run inside 'with dba.capture():'.")
            pool = first.inputs.shape[0]
            check_traces(traces, pool)
            if found_inf is not None and grad_scale is None:
                self._drop_scaler_attributes()
                raise TrainError(
                    "DBA rebuilds the gradients from the scaled output gradients it recorded, so it needs the scale: "
                    "call scaler.step(dba) without calling scaler.unscale_(dba) first."
                )
            if found_inf is not None and float(found_inf) > 0:
                return None  # GradScaler's contract: skip the step, the scaler lowers its scale in update().
            if grad_scale is not None:
                for trace in traces.values():
                    trace.grad_outputs = trace.grad_outputs / grad_scale.to(trace.grad_outputs.device)
            return self._apply(traces, None)
        if found_inf is not None:
            self._drop_scaler_attributes()
            raise TrainError(
                "with torch.amp.GradScaler, record the pass with 'with dba.capture():' and call scaler.step(dba) "
                "without a closure."
            )
        return self._run_closure(closure)

    def _drop_scaler_attributes(self) -> None:
        """Remove what GradScaler set before a step that fails (it deletes them only after a step that returns)."""
        for name in ("grad_scale", "found_inf"):
            self.__dict__.pop(name, None)

    def _run_closure(self, closure: Callable[[], Tensor]) -> Tensor:
        with torch.enable_grad(), capture(self.layers) as traces:
            losses = closure()
            if not isinstance(losses, Tensor) or losses.dim() != 1 or losses.numel() == 0:
                shape = tuple(losses.shape) if isinstance(losses, Tensor) else type(losses).__name__
                raise TrainError(f"the DBA closure must return a 1-D tensor of per-sample losses; got {shape}.")
            if not losses.requires_grad:
                raise TrainError("the per-sample losses returned by the DBA closure do not require grad.")
            # Summed loss: the output gradients are then each sample's own gradients, not 1/P of them.
            # Asking only for biases (weights where there is none) runs the backward through every layer
            # but skips the weight-gradient products, which DBA recomputes for the chosen subset anyway.
            torch.autograd.grad(losses.sum(), self._backward_targets(), allow_unused=True)
        check_traces(traces, losses.shape[0])
        return self._apply(traces, losses)

    def _apply(self, traces: dict, losses: Tensor | None) -> Tensor | None:
        """Select from the recorded pass, write the subset gradients and step the wrapped optimizer."""
        pool = next(iter(traces.values())).inputs.shape[0]
        grams = {
            name: layer_gram(t.inputs, t.grad_outputs, bias=t.has_bias, input_gram=self._input_gram(name, t.inputs))
            for name, t in traces.items()
        }
        grams_np = {name: g.detach().to(torch.float64).cpu().numpy() for name, g in grams.items()}
        if self.per_layer:
            groups = {name: grams_np[name] for name in grams_np}
        else:
            groups = {"<global>": sum(grams_np.values())}
        chosen = self._select_groups(groups)
        pool_scores, sel_scores = {}, {}
        for key, gram in groups.items():
            masks = np.ones((2, pool))  # the whole pool, then the chosen subset
            masks[1] = 0.0
            masks[1, chosen[key]] = 1.0
            pool_scores[key], sel_scores[key] = (float(v) for v in self._metric.value(subsets_stats(gram, masks)))

        self.optimizer.zero_grad(set_to_none=True)
        sizes = {}
        scale = None if self.aggregate == "mean" else 1.0 / pool
        for name, trace in traces.items():
            subset = chosen[name] if self.per_layer else chosen["<global>"]
            sizes[name] = len(subset)
            self.last_subsets[name] = subset
            inputs, grad_outputs = trace.inputs, trace.grad_outputs
            if len(subset) < pool:  # the chosen rows only: the product skips the others
                rows = torch.from_numpy(np.asarray(subset, dtype=np.int64)).to(inputs.device)
                inputs, grad_outputs = inputs.index_select(0, rows), grad_outputs.index_select(0, rows)
            weights = torch.full((len(subset),), scale or 1.0 / len(subset), dtype=inputs.dtype, device=inputs.device)
            w_grad, b_grad = subset_gradient(trace.module, inputs, grad_outputs, weights)
            module = trace.module
            if module.weight.requires_grad:
                module.weight.grad = w_grad.to(module.weight.dtype)
            if b_grad is not None:
                module.bias.grad = b_grad.to(module.bias.dtype)
        self.optimizer.step()
        loss = losses.detach().mean() if losses is not None else None
        self.history.append(StepRecord(pool, sizes, pool_scores, sel_scores, float(loss) if loss is not None else math.nan))
        return loss

    def _backward_targets(self) -> list[Tensor]:
        targets = []
        for module in self.layers.values():
            bias = getattr(module, "bias", None)
            targets.append(bias if bias is not None and bias.requires_grad else module.weight)
        return [t for t in targets if t.requires_grad] or [p for m in self.layers.values() for p in m.parameters()]

    def _input_gram(self, name: str, inputs: Tensor) -> Tensor | None:
        """``X X^T`` of a one-position layer, reused while its inputs stay exactly the same (a fixed pool)."""
        if inputs.shape[1] != 1:
            return None
        cached = self._input_cache.get(name)
        if cached is not None and cached[0].shape == inputs.shape and torch.equal(cached[0], inputs):
            return cached[1]
        gram = self_gram(inputs[:, 0])
        self._input_cache[name] = (inputs, gram)
        return gram

    def _select_groups(self, groups: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        keys = list(groups)
        P = groups[keys[0]].shape[0]
        if P <= self.min_size:
            return {key: np.arange(P) for key in keys}
        bounds = {"min_size": self.min_size, "max_size": self.max_size}
        chosen = {key: self._search(groups[key], self._metric, **bounds) for key in keys}
        if self.random_composition:
            chosen = {k: np.sort(self._rng.choice(P, size=len(v), replace=False)) for k, v in chosen.items()}
        return chosen

    def subset_sizes(self) -> dict[str, np.ndarray]:
        """Chosen subset size per layer over the steps so far, shape (n_steps,) each."""
        names = list(self.layers)
        return {name: np.array([rec.sizes[name] for rec in self.history]) for name in names}


__all__ = ["DBA", "OPTIONS", "StepRecord", "METRICS", "SEARCHES", "check_options"]
