"""Tiny models and a tiny MNIST-format file for the DBA tests, built from local generators."""

from __future__ import annotations

import numpy as np
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


def make_mnist(path, **override):
    """A tiny MNIST-format file: 40 training images (4 per class), 15 test images; arrays replaced by ``override``
    (None drops an array)."""
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, size=(40, 28, 28), dtype=np.uint8),
        "y_train": np.repeat(np.arange(10, dtype=np.uint8), 4),
        "x_test": rng.integers(0, 256, size=(15, 28, 28), dtype=np.uint8),
        "y_test": rng.integers(0, 10, size=15).astype(np.uint8),
    }
    arrays.update(override)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


@pytest.fixture
def tiny_mnist(tmp_path):
    return make_mnist(tmp_path / "mnist.npz")
