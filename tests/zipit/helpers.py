"""Tiny models and a permuted-copy oracle shared by the zipit tests."""

from __future__ import annotations

import copy

import torch
from torch import nn

from knotwork.zipit import ZipGraph, fold_models, trace_feature_graph
from knotwork.zipit.class_vectors import random_class_vectors
from knotwork.zipit.matchers import from_clusters
from knotwork.zipit.models import VGG, ClassEmbeddingHead, HeadedModel, ResNet20


def randomize_bn(model: nn.Module, seed: int) -> nn.Module:
    """Non-trivial BN statistics and affine parameters, with positive biases so few ReLUs are dead."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.3)
    return model.eval()


def tiny_resnet(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return randomize_bn(HeadedModel(ResNet20(1, 8), ClassEmbeddingHead(random_class_vectors(6, 8, seed=0))), seed)


def tiny_vgg(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return randomize_bn(VGG((8, "M", 16, "M"), out_dim=5, image_size=8, hidden=12), seed)


def permuted_copy(model: nn.Module, graph: ZipGraph, seed: int = 0) -> tuple[nn.Module, dict[int, torch.Tensor]]:
    """The same function with the channels of every mergeable space shuffled (an independent oracle)."""
    g = torch.Generator().manual_seed(seed)
    perms, transforms = {}, {}
    for k in graph.mergeable:
        n = graph.spaces[k].width
        p = torch.randperm(n, generator=g)
        perms[k] = p
        transforms[k] = from_clusters([[int(p[c])] for c in range(n)], n)
    out = copy.deepcopy(model)
    out.load_state_dict(fold_models([model], graph, transforms))
    return out, perms


def loader_for(shape: tuple[int, ...], n_batches: int = 3, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=g) for _ in range(n_batches)]


def trace(model: nn.Module, loader: list[torch.Tensor]) -> ZipGraph:
    return trace_feature_graph(model, loader[0])
