"""Feature spaces of a network, found by tracing it with ``torch.fx``.

A *feature space* is a set of channels that must share one merge matrix ``M`` and one unmerge matrix ``U``:
the output channels of one or more layers (its *producers*; several when residual additions tie them
together), the per-channel parameters riding on it (BatchNorm / LayerNorm), and the layers that read it (its
*consumers*, whose input columns take ``U``). This replaces ZipIt!'s hand-written graph per architecture.

Rules of the tracer (every other operation on a merged space is an error that names the fx node):

- ``Conv1d``/``Conv2d`` (``groups=1``) and ``Linear`` start a new space and consume their input's space;
- BatchNorm and LayerNorm (over the channel axis) attach to their input's space;
- element-wise activations, dropout, pooling and means over non-channel axes pass the space through;
- ``add``/``sub`` of two tensors unite their spaces (a residual connection);
- ``cat`` over the channel axis builds a block space whose consumers read each part at an offset;
- flattening a spatial map into a ``Linear`` is a consumer whose columns repeat each channel per position;
- the model's output, and modules marked ``zipit_fixed_input = True`` (such as a frozen class-embedding head),
  fix their input space: it keeps its basis and its producers are simply averaged.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from math import prod

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from knotwork._errors import ZipitError
from knotwork.zipit.spaces import Consumer, FeatureSpace, Tap, ZipGraph, _out_channels

__all__ = [
    "Consumer",
    "FeatureSpace",
    "Tap",
    "UnsupportedOperationError",
    "ZipGraph",
    "trace_feature_graph",
]

_SPEC_HINT = (
    "Pass an explicit graph instead (knotwork.zipit.ZipGraph of FeatureSpace entries naming producers, norms, "
    "consumers and a tap for each space), or mark the module with `zipit_fixed_input = True` to keep its input "
    "space unmerged."
)


class UnsupportedOperationError(ZipitError):
    """The tracer met an operation on a merged feature space that it cannot map through."""


_PRODUCERS = (nn.Conv1d, nn.Conv2d, nn.Linear)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm)
_PASS_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.ELU, nn.Hardswish, nn.Mish,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Identity, nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
)
# Channel-wise functions: they act on each channel alone (or on each channel's spatial map).
_PASS_FUNCTIONS = {
    F.relu, torch.relu, F.relu6, F.leaky_relu, F.gelu, F.silu, F.elu, F.hardswish, F.mish, torch.sigmoid,
    torch.tanh, F.sigmoid, F.tanh, F.dropout, F.dropout1d, F.dropout2d, F.max_pool1d, F.max_pool2d, F.avg_pool1d,
    F.avg_pool2d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_max_pool1d, F.adaptive_max_pool2d,
}
_PASS_METHODS = {"relu", "sigmoid", "tanh", "contiguous", "clone", "detach", "float", "relu_"}
_ELEMENTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.ELU, nn.Hardswish, nn.Mish,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Identity,
)
# Operations that reduce pooled maps or only move spatial axes do not count as a place to record features.
_ELEMENTWISE_FUNCTIONS = _PASS_FUNCTIONS - {
    F.max_pool1d, F.max_pool2d, F.avg_pool1d, F.avg_pool2d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d,
    F.adaptive_max_pool1d, F.adaptive_max_pool2d,
}
_ADD = {operator.add, operator.iadd, operator.sub, operator.isub, torch.add, torch.sub}
_SCALE = {operator.mul, operator.imul, operator.truediv, operator.itruediv, torch.mul}
# Operations that mix channels in ways no M/U can follow; a space feeding them stays in its own basis.
_FIXING_FUNCTIONS = {F.normalize, torch.matmul, operator.matmul, F.softmax, F.log_softmax, torch.softmax}


@dataclass(frozen=True)
class _Chan:
    """Abstract value of a traced tensor: its channel axis is the concatenation of ``parts`` (space, width)."""

    parts: tuple[tuple[int, int], ...]
    expand: int = 1


class _UnionFind:
    def __init__(self) -> None:
        self.parent: list[int] = []

    def add(self) -> int:
        self.parent.append(len(self.parent))
        return len(self.parent) - 1

    def find(self, a: int) -> int:
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a: int, b: int) -> int:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)
        return min(ra, rb)


class _Tracer(fx.Tracer):
    """Standard leaves plus modules marked ``zipit_fixed_input`` (kept whole: their insides are not merged)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return getattr(m, "zipit_fixed_input", False) or super().is_leaf_module(m, qualname)


def _describe(node: fx.Node, modules: dict[str, nn.Module]) -> str:
    if node.op == "call_module":
        return f"module {node.target!r} ({type(modules[node.target]).__name__})"
    target = getattr(node.target, "__name__", str(node.target))
    return f"{node.op} {target}"


def trace_feature_graph(model: nn.Module, example_input: torch.Tensor) -> ZipGraph:
    """Trace ``model`` with ``torch.fx`` and group its channels into feature spaces.

    Parameters
    ----------
    model : nn.Module
        The architecture; only its structure and shapes are used (the example runs once for shapes).
    example_input : Tensor
        One batch of inputs, e.g. the first batch of the data loader.

    Returns
    -------
    ZipGraph
        Spaces in order of first appearance; fixed spaces (input/output) included.

    Raises
    ------
    UnsupportedOperationError
        When an operation on a merged space cannot be mapped (the message names the fx node and the op), or
        when symbolic tracing fails (data-dependent control flow).
    """
    try:
        gm = fx.GraphModule(model, _Tracer().trace(model), model.__class__.__name__)
    except Exception as exc:  # fx raises TraceError, TypeError, ... for data-dependent Python
        raise UnsupportedOperationError(f"torch.fx could not trace {type(model).__name__}: {exc}. {_SPEC_HINT}") from exc
    was_training = model.training
    gm.eval()
    with torch.no_grad():
        ShapeProp(gm).propagate(example_input)
    gm.train(was_training)
    modules = dict(gm.named_modules())

    uf = _UnionFind()
    widths: list[int] = []
    producers: list[list[str]] = []
    norms: list[list[str]] = []
    fixed: list[bool] = []
    consumers: list[list[tuple[int, Consumer]]] = []  # (topological index, consumer)
    taps: list[tuple[int, Tap] | None] = []
    nodes_of: list[list[str]] = []
    values: dict[str, _Chan | None] = {}
    # For each node, the latest node at or before it whose output is the space's full-resolution feature map:
    # pooling, means and flattening only look through to it, so features are recorded before pooling, as
    # ZipIt!'s PREFIX nodes do (e.g. before ResNet-20's global average pool: 64 samples per image, not 1).
    elem_src: dict[str, str] = {}

    def new_space(width: int) -> int:
        sid = uf.add()
        widths.append(width)
        for lst in (producers, norms, consumers, nodes_of):
            lst.append([])
        fixed.append(False)
        taps.append(None)
        return sid

    def fix(v: object) -> None:
        if isinstance(v, _Chan):
            for sid, _ in v.parts:
                fixed[uf.find(sid)] = True

    def shape(n: fx.Node) -> torch.Size | None:
        meta = n.meta.get("tensor_meta")
        return getattr(meta, "shape", None)

    def fail(node: fx.Node, why: str) -> UnsupportedOperationError:
        return UnsupportedOperationError(
            f"cannot map feature spaces through fx node {node.name!r} ({_describe(node, modules)}): {why}. {_SPEC_HINT}"
        )

    def consume(node: fx.Node, v: _Chan | None, module: str, pos: int) -> None:
        if v is None:
            return
        offset = 0
        src = elem_src.get(node.args[0].name, node.args[0].name)
        for sid, width in v.parts:
            consumers[sid].append((pos, Consumer(module, offset, v.expand)))
            if len(v.parts) == 1 and src != node.args[0].name:
                taps[sid] = (pos, Tap(src, "node"))
            else:
                taps[sid] = (pos, Tap(module, "input", offset, v.expand))
            offset += width

    for pos, node in enumerate(gm.graph.nodes):
        args = [values.get(a.name) if isinstance(a, fx.Node) else None for a in node.args]
        first = args[0] if args else None
        # Every merged tensor among the inputs, including those nested in lists (torch.cat) and kwargs.
        tracked = [values[a.name] for a in _flat_nodes((node.args, node.kwargs)) if isinstance(values.get(a.name), _Chan)]
        out: _Chan | None = None
        if node.op in ("placeholder", "get_attr"):
            out = None
        elif node.op == "output":
            for a in _flat_nodes(node.args):
                fix(values.get(a.name))
        elif node.op == "call_module":
            mod = modules[node.target]
            if getattr(mod, "zipit_fixed_input", False):
                for t in tracked:
                    fix(t)
            elif isinstance(mod, _PRODUCERS):
                if not isinstance(mod, nn.Linear) and mod.groups != 1 and isinstance(first, _Chan):
                    raise fail(node, f"grouped convolution (groups={mod.groups}) mixes channels in groups")
                if isinstance(first, _Chan):
                    in_shape = shape(node.args[0])
                    if isinstance(mod, nn.Linear) and in_shape is not None and len(in_shape) != 2:
                        raise fail(node, f"Linear on a rank-{len(in_shape)} tensor (only (batch, features) is "
                                         "supported)")
                    if not isinstance(mod, nn.Linear) and first.expand != 1:
                        raise fail(node, "a convolution reads a flattened map")
                consume(node, first, node.target, pos)
                sid = new_space(_out_channels(mod))
                producers[sid].append(node.target)
                out = _Chan(((sid, widths[sid]),))
            elif isinstance(mod, _NORMS):
                if isinstance(first, _Chan):
                    if len(first.parts) != 1 or first.expand != 1:
                        raise fail(node, "a normalisation over a concatenated or flattened space")
                    if isinstance(mod, nn.LayerNorm):
                        in_shape = shape(node.args[0])
                        if in_shape is None or len(in_shape) != 2:
                            raise fail(node, "LayerNorm is only supported over the features of (batch, features)")
                    norms[first.parts[0][0]].append(node.target)
                out = first
            elif isinstance(mod, _PASS_MODULES):
                out = first
            elif isinstance(mod, nn.Flatten):
                out = _flatten(node, first, mod.start_dim, mod.end_dim, shape, fail)
            elif tracked or any(True for _ in mod.parameters(recurse=False)):
                raise fail(node, "this module type is not supported")
        elif node.op in ("call_function", "call_method"):
            target = node.target
            name = target if isinstance(target, str) else None
            if not tracked:
                out = None
            elif target in _PASS_FUNCTIONS or name in _PASS_METHODS:
                if args and not isinstance(first, _Chan):
                    raise fail(node, "the merged tensor is not the first argument")
                out = first
            elif target in _ADD or name in ("add", "add_", "sub", "sub_"):
                out = _unite(node, args, node.kwargs, uf, widths, fix, fail)
            elif target in _SCALE or name in ("mul", "div", "mul_", "div_"):
                others = [a for a in node.args if not (isinstance(a, fx.Node) and isinstance(values.get(a.name), _Chan))]
                if len(tracked) != 1 or any(isinstance(a, fx.Node) for a in others):
                    raise fail(node, "multiplying a merged tensor by another tensor")
                out = tracked[0]
            elif target is torch.cat or name == "cat":
                out = _concat(node, values, shape, fail)
            elif target is torch.flatten or name == "flatten":
                start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
                end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
                out = _flatten(node, first, start, end, shape, fail)
            elif name in ("view", "reshape") or target is torch.reshape:
                out = _reshape(node, first, shape, fail)
            elif target in (torch.mean, torch.sum, torch.amax) or name in ("mean", "sum", "amax"):
                dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
                in_shape = shape(node.args[0])
                dims = [dims] if isinstance(dims, int) else list(dims or [])
                if not dims or in_shape is None or any(d % len(in_shape) in (0, 1) for d in dims):
                    raise fail(node, "a reduction over the channel or batch axis")
                if first.expand != 1:
                    raise fail(node, "a reduction of a flattened map")
                out = first
            elif target in _FIXING_FUNCTIONS:
                for t in tracked:
                    fix(t)
                out = None
            elif name in ("size", "dim") or target is getattr:
                out = None
            else:
                raise fail(node, "this operation is not supported on a merged feature space")
        values[node.name] = out
        looks_through = node.op == "call_module" and isinstance(modules[node.target], _PASS_MODULES) and not \
            isinstance(modules[node.target], _ELEMENTWISE_MODULES)
        looks_through |= node.op != "call_module" and node.target not in _ELEMENTWISE_FUNCTIONS and \
            node.target not in _ADD and node.target not in _PASS_METHODS and isinstance(node.args[0] if node.args else None, fx.Node) and \
            node.target is not torch.cat and node.target != "cat"
        if isinstance(out, _Chan) and looks_through and out.parts == values.get(node.args[0].name, _Chan(())).parts:
            elem_src[node.name] = elem_src.get(node.args[0].name, node.args[0].name)
        if isinstance(out, _Chan):
            for sid, _ in out.parts:
                nodes_of[sid].append(node.name)

    # Resolve the union-find: one FeatureSpace per root, in order of first appearance.
    roots: dict[int, int] = {}
    for sid in range(len(widths)):
        r = uf.find(sid)
        if r not in roots:
            roots[r] = len(roots)
    spaces = [FeatureSpace(width=widths[r]) for r in roots]
    cons: list[list[tuple[int, Consumer]]] = [[] for _ in roots]
    for sid in range(len(widths)):
        k = roots[uf.find(sid)]
        spaces[k].producers += producers[sid]
        spaces[k].norms += norms[sid]
        spaces[k].fixed |= fixed[sid] or fixed[uf.find(sid)]
        spaces[k].nodes += nodes_of[sid]
        cons[k] += consumers[sid]
    for k, space in enumerate(spaces):
        cons[k].sort(key=lambda pc: pc[0])
        space.consumers = [c for _, c in cons[k]]
        if not space.consumers:
            space.fixed = True  # nothing reads it but the output (or nothing at all): keep its basis
        if not space.fixed:
            # Record where the last consumer reads, as ZipIt!'s PREFIX hooks do: after the nonlinearity and
            # after every residual addition of the space (the latest tap of any part of the union wins).
            space.tap = max((taps[sid] for sid in range(len(widths)) if roots[uf.find(sid)] == k and taps[sid]),
                            key=lambda pt: pt[0])[1]
    return ZipGraph(spaces, gm)


def _flat_nodes(args: object) -> list[fx.Node]:
    out: list[fx.Node] = []
    fx.node.map_arg(args, lambda n: out.append(n) or n)
    return out


def _unite(node, args, kwargs, uf, widths, fix, fail) -> _Chan:
    tensors = [a for a in node.args if isinstance(a, fx.Node)]
    chans = [a for a in args if isinstance(a, _Chan)]
    if len(tensors) == 1:
        return chans[0]  # a scalar or constant added to a merged tensor
    if len(chans) != len(tensors):
        # A merged tensor plus an untracked one (e.g. the model input): keep the merged one in its basis.
        for c in chans:
            fix(c)
        return chans[0]
    a, b = chans[0], chans[1]
    if a.expand != b.expand or [w for _, w in a.parts] != [w for _, w in b.parts]:
        raise fail(node, "adding tensors whose channel layouts differ")
    parts = tuple((uf.union(sa, sb), w) for (sa, w), (sb, _) in zip(a.parts, b.parts, strict=True))
    return _Chan(parts, a.expand)


def _concat(node, values, shape, fail) -> _Chan:
    tensors = node.args[0]
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    ndim = len(shape(tensors[0]) or ())
    if ndim and dim % ndim != 1:
        raise fail(node, f"concatenation along dim {dim} (only the channel axis 1 is supported)")
    parts: list[tuple[int, int]] = []
    for t in tensors:
        v = values.get(t.name) if isinstance(t, fx.Node) else None
        if not isinstance(v, _Chan) or v.expand != 1:
            raise fail(node, "concatenating a merged tensor with an untracked or flattened one")
        parts += v.parts
    return _Chan(tuple(parts))


def _flatten(node, v, start, end, shape, fail) -> _Chan | None:
    if not isinstance(v, _Chan):
        return None
    in_shape = shape(node.args[0])
    if in_shape is None:
        raise fail(node, "no shape information")
    if start % len(in_shape) != 1 or end % len(in_shape) != len(in_shape) - 1:
        raise fail(node, f"flatten(start_dim={start}, end_dim={end}); only flattening from the channel axis "
                         "to the end is supported")
    return _Chan(v.parts, v.expand * prod(in_shape[2:]))


def _reshape(node, v, shape, fail) -> _Chan:
    in_shape, out_shape = shape(node.args[0]), shape(node)
    if in_shape is None or out_shape is None:
        raise fail(node, "no shape information")
    if len(out_shape) == 2 and out_shape[0] == in_shape[0] and out_shape[1] == prod(in_shape[1:]):
        return _Chan(v.parts, v.expand * prod(in_shape[2:]))  # (B, C, H, W) -> (B, C*H*W)
    if tuple(out_shape) == tuple(in_shape):
        return v
    raise fail(node, f"reshape from {tuple(in_shape)} to {tuple(out_shape)} moves the channel axis")

