"""Multi-head models: a partially zipped trunk with one head per model, and the ensemble upper bound.

Both return stacked outputs of shape ``(n_heads, batch, ...)``; head ``i`` belongs to model ``i``'s task.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import fx, nn

from knotwork._errors import ZipitError
from knotwork.zipit.graph import UnsupportedOperationError

__all__ = ["Ensemble", "MultiHeadModel", "Unmerge", "find_cut", "split_graph"]


class Unmerge(nn.Module):
    """Map merged channels back to one model's basis: ``x_i = U_i x`` along the channel axis (dim 1)."""

    def __init__(self, unmerge: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("unmerge", unmerge.detach().float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bn...,cn->bc...", x, self.unmerge.to(x.dtype))


class MultiHeadModel(nn.Module):
    """A shared (zipped) trunk followed by per-model heads (ZipIt!'s partial zip).

    Each head receives the trunk's output unmerged into its model's basis (``U_i x``) and runs that model's own
    remaining layers. This equals folding ``U_i`` into the heads' first layers, and also works when the cut lies
    inside a residual stage (the residual stream then stays consistent in the head).
    """

    def __init__(self, trunk: nn.Module, heads: Sequence[nn.Module], unmerges: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(heads) != len(unmerges):
            raise ZipitError(f"{len(heads)} heads but {len(unmerges)} unmerge maps")
        self.trunk = trunk
        self.heads = nn.ModuleList(heads)
        self.unmerges = nn.ModuleList(unmerges)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.trunk(x)
        return torch.stack([head(u(z)) for head, u in zip(self.heads, self.unmerges, strict=True)])


class Ensemble(nn.Module):
    """Run every model and stack their outputs: ``(n_models, batch, ...)``, the paper's upper bound."""

    def __init__(self, models: Sequence[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(models)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.members])


def find_cut(graph: fx.Graph, stop_at: str) -> fx.Node:
    """The last fx node named ``stop_at`` or inside module ``stop_at`` (e.g. ``"layer2"``: the end of a stage)."""
    nodes = list(graph.nodes)
    for node in nodes:
        if node.name == stop_at:
            return node
    inside = [n for n in nodes if n.op == "call_module" and (n.target == stop_at or n.target.startswith(stop_at + "."))
              or stop_at in (n.meta.get("nn_module_stack") or {})]
    if not inside:
        modules = sorted({n.target.rsplit(".", 1)[0] for n in nodes if n.op == "call_module" and "." in n.target})
        raise ZipitError(f"stop_at={stop_at!r} names no fx node and no module of the model; modules include "
                       f"{modules[:12]}")
    return inside[-1]


def split_graph(graph: fx.Graph, cut: fx.Node) -> tuple[fx.Graph, fx.Graph]:
    """Split a traced graph after ``cut`` into trunk (input -> cut) and head (cut -> output) graphs.

    Raises
    ------
    UnsupportedOperationError
        When another value than ``cut`` crosses the cut (e.g. a residual branch skips over it).
    """
    nodes = list(graph.nodes)
    pos = {n: i for i, n in enumerate(nodes)}
    k = pos[cut]
    for n in nodes[:k]:
        if n.op == "get_attr":
            continue  # constants are simply copied into the heads
        late = [u.name for u in n.users if pos[u] > k]
        if late:
            raise UnsupportedOperationError(
                f"cannot split after fx node {cut.name!r}: node {n.name!r} is also used after it (by {late}); "
                "choose the end of a stage, where a single tensor flows on"
            )
    trunk, head = fx.Graph(), fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for n in nodes[: k + 1]:
        env[n] = trunk.node_copy(n, lambda a: env[a])
    trunk.output(env[cut])
    henv: dict[fx.Node, fx.Node] = {cut: head.placeholder("features")}
    for n in nodes[k + 1 :]:
        for a in n.all_input_nodes:
            if a not in henv and a.op == "get_attr":
                henv[a] = head.node_copy(a, lambda b: henv[b])
        henv[n] = head.node_copy(n, lambda a: henv[a])
    return trunk, head
