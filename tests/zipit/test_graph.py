"""Feature spaces found by torch.fx against hand-written expectations, and clear errors for what it cannot map."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from knotwork.zipit import Consumer, Tap, UnsupportedOperationError, trace_feature_graph
from knotwork.zipit.models import MLP, SmallCNN

from .helpers import tiny_resnet, tiny_vgg


def _by_producer(graph):
    return {tuple(s.producers): s for s in graph.spaces}


def test_resnet20_spaces_match_hand_written_graph():
    # ZipIt!'s resnet20 graph: one space per block's inner conv, plus one per stage's residual stream, which
    # ties the stem/first-conv, every conv2 of the stage and the downsampling shortcut together.
    graph = trace_feature_graph(tiny_resnet(), torch.randn(2, 3, 8, 8))
    spaces = _by_producer(graph)
    p = "backbone."
    stage1 = (p + "conv1", p + "layer1.0.conv2", p + "layer1.1.conv2", p + "layer1.2.conv2")
    stage2 = (p + "layer2.0.conv2", p + "layer2.0.shortcut.0", p + "layer2.1.conv2", p + "layer2.2.conv2")
    stage3 = (p + "layer3.0.conv2", p + "layer3.0.shortcut.0", p + "layer3.1.conv2", p + "layer3.2.conv2")
    inner = [(f"{p}layer{s}.{b}.conv1",) for s in (1, 2, 3) for b in (0, 1, 2)]
    assert set(spaces) == {stage1, stage2, stage3, *inner, (p + "linear",)}
    assert len(graph.mergeable) == 12
    assert spaces[(p + "linear",)].fixed  # the embedding feeds the frozen head: the shared output space
    assert spaces[stage2].norms == [p + "layer2.0.bn2", p + "layer2.0.shortcut.1", p + "layer2.1.bn2", p + "layer2.2.bn2"]
    assert [c.module for c in spaces[stage1].consumers] == [
        p + "layer1.0.conv1", p + "layer1.1.conv1", p + "layer1.2.conv1", p + "layer2.0.conv1", p + "layer2.0.shortcut.0"]
    assert [c.module for c in spaces[stage3].consumers] == [p + "layer3.1.conv1", p + "layer3.2.conv1", p + "linear"]
    # Features are recorded where the last consumer reads them; before the global pool for the last stage.
    assert spaces[stage1].tap == Tap(p + "layer2.0.shortcut.0", "input")
    assert spaces[stage3].tap.where == "node" and spaces[stage3].tap.module.startswith("relu")
    assert spaces[(p + "layer2.1.conv1",)].tap == Tap(p + "layer2.1.conv2", "input")
    assert {spaces[stage1].width, spaces[stage2].width, spaces[stage3].width} == {16, 32, 64}


def test_vgg_spaces_including_flatten_into_linear():
    graph = trace_feature_graph(tiny_vgg(), torch.randn(2, 3, 8, 8))
    spaces = _by_producer(graph)
    assert set(spaces) == {("features.0",), ("features.4",), ("classifier.0",), ("classifier.2",)}
    assert spaces[("features.0",)].norms == ["features.1"]
    assert spaces[("features.0",)].consumers == [Consumer("features.4")]
    # 16 channels of a 2x2 map flattened into classifier.0: each channel owns 4 consecutive columns.
    assert spaces[("features.4",)].consumers == [Consumer("classifier.0", 0, 4)]
    assert spaces[("features.0",)].tap == Tap("features_2", "node")  # after the ReLU, before max-pooling
    assert spaces[("classifier.2",)].fixed and not spaces[("classifier.0",)].fixed


def test_mlp_residual_unites_layers_and_cnn_chain():
    graph = trace_feature_graph(MLP(6, 8, 3, depth=3, residual=True), torch.randn(2, 6))
    assert [s.producers for s in graph.spaces] == [["inp", "hidden.0", "hidden.1"], ["out"]]
    graph = trace_feature_graph(SmallCNN(8, 5), torch.randn(2, 1, 12, 12))
    assert [s.producers for s in graph.spaces] == [["conv1"], ["conv2"], ["conv3"], ["linear"]]
    assert [s.fixed for s in graph.spaces] == [False, False, False, True]


class _Concat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 6, 1)
        self.c = nn.Conv2d(10, 5, 1)

    def forward(self, x):
        return self.c(torch.cat([F.relu(self.a(x)), F.relu(self.b(x))], dim=1))


def test_concatenation_gives_offsets():
    graph = trace_feature_graph(_Concat(), torch.randn(2, 3, 4, 4))
    spaces = _by_producer(graph)
    assert spaces[("a",)].consumers == [Consumer("c", 0)]
    assert spaces[("b",)].consumers == [Consumer("c", 4)]
    assert spaces[("b",)].tap == Tap("c", "input", 4, 1)


class _Roll(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return self.b(torch.roll(self.a(x), 1, dims=1))


class _Grouped(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(4, 4, 3, groups=2)

    def forward(self, x):
        return self.b(self.a(x)).sum()


class _Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(3, 4)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: symbolic tracing cannot follow it
            return self.a(x)
        return x


def test_unsupported_operations_fail_with_node_and_op_named():
    with pytest.raises(UnsupportedOperationError, match=r"fx node 'roll'.*roll.*explicit graph"):
        trace_feature_graph(_Roll(), torch.randn(2, 3, 4, 4))
    with pytest.raises(UnsupportedOperationError, match=r"node 'b'.*grouped convolution \(groups=2\)"):
        trace_feature_graph(_Grouped(), torch.randn(2, 3, 4, 4))
    with pytest.raises(UnsupportedOperationError, match=r"torch.fx could not trace _Branchy"):
        trace_feature_graph(_Branchy(), torch.randn(2, 3))
