"""Feature spaces: the merge groups of a network and the graph that holds them (data only, no tracing)."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import fx, nn

from knotwork._errors import ZipitError

__all__ = ["Consumer", "FeatureSpace", "Tap", "ZipGraph", "module_spaces"]


@dataclass(frozen=True)
class Consumer:
    """A module that reads a space: its input columns ``[offset, offset + width)`` take ``U``.

    ``expand`` > 1 means a spatial map was flattened into a ``Linear``: each channel owns ``expand`` consecutive
    input columns (channel-major, as ``torch.flatten`` lays them out), so ``U`` acts as ``U ⊗ I_expand``.
    """

    module: str
    offset: int = 0
    expand: int = 1


@dataclass(frozen=True)
class Tap:
    """Where a space's features are recorded: a module's ``input`` (a forward pre-hook) or ``output``.

    ``offset``/``expand`` select the space's channels inside that tensor as for :class:`Consumer`.
    """

    module: str
    where: str = "input"
    offset: int = 0
    expand: int = 1


@dataclass
class FeatureSpace:
    """One merge group: channels sharing one ``M`` and one ``U``.

    Attributes
    ----------
    width : int
        Number of channels.
    producers : list of str
        Modules whose output channels are this space (weights and biases take ``M``).
    norms : list of str
        Per-channel modules on this space (BatchNorm, LayerNorm).
    consumers : list of Consumer
        Modules whose inputs read this space (their input columns take ``U``).
    tap : Tap or None
        Where activations are recorded; ``None`` for a fixed space.
    fixed : bool
        A model input or output: never merged, its producers are averaged.
    nodes : list of str
        fx nodes carrying this space (empty for hand-written specs).
    """

    width: int
    producers: list[str] = field(default_factory=list)
    norms: list[str] = field(default_factory=list)
    consumers: list[Consumer] = field(default_factory=list)
    tap: Tap | None = None
    fixed: bool = False
    nodes: list[str] = field(default_factory=list)


@dataclass
class ZipGraph:
    """The feature spaces of an architecture, plus the fx graph when it came from tracing.

    Build one by hand for what tracing cannot handle: list every space with its producers, norms, consumers
    and tap; modules in no space are averaged. Partial zipping needs a traced graph (``graph_module``).
    """

    spaces: list[FeatureSpace]
    graph_module: fx.GraphModule | None = None

    @property
    def mergeable(self) -> list[int]:
        """Indices of the spaces that get an ``M``/``U`` (not fixed)."""
        return [i for i, s in enumerate(self.spaces) if not s.fixed]

    def validate(self, model: nn.Module) -> None:
        """Check that every module named in the graph exists in ``model`` and widths agree."""
        names = dict(model.named_modules())
        for k, space in enumerate(self.spaces):
            for name in [*space.producers, *space.norms, *(c.module for c in space.consumers)]:
                if name not in names:
                    raise ZipitError(f"feature space {k} names module {name!r}, which the model does not have")
            for name in space.producers:
                out = _out_channels(names[name])
                if out != space.width:
                    raise ZipitError(f"feature space {k} has width {space.width} but producer {name!r} "
                                     f"outputs {out} channels")
            if not space.fixed and space.tap is None:
                raise ZipitError(f"feature space {k} is not fixed but has no tap to record features at")


def _out_channels(m: nn.Module) -> int:
    return m.out_features if isinstance(m, nn.Linear) else m.out_channels


def module_spaces(graph: ZipGraph) -> tuple[dict[str, int], dict[str, list[tuple[int, Consumer]]]]:
    """Map each producer/norm module to its space index, and each consumer module to its (space, Consumer)s."""
    out_space: dict[str, int] = {}
    in_spaces: dict[str, list[tuple[int, Consumer]]] = {}
    for k, space in enumerate(graph.spaces):
        for name in [*space.producers, *space.norms]:
            out_space[name] = k
        for c in space.consumers:
            in_spaces.setdefault(c.module, []).append((k, c))
    return out_space, in_spaces
