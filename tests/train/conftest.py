"""Tiny models for the DBA tests, built from local generators."""

from __future__ import annotations

import pytest
import torch
from torch import nn


def seeded(module: nn.Module, seed: int) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.5)
    return module


@pytest.fixture
def mlp() -> nn.Module:
    return seeded(nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)).double(), 0)


class TinyCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 3, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(3, 4, 2, dilation=2, bias=False)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        h = torch.relu(self.conv1(x))
        h = torch.tanh(self.conv2(h))
        return self.fc(h.mean((2, 3)))


@pytest.fixture
def cnn() -> nn.Module:
    return seeded(TinyCNN().double(), 1)
