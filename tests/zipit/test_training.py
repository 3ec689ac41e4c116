"""Task training with a frozen class-embedding head, augmentation, and seeded class vectors."""

from __future__ import annotations

import pytest
import torch

from knotwork.zipit.class_vectors import random_class_vectors
from knotwork.zipit.models import MLP, ClassEmbeddingHead, HeadedModel
from knotwork.zipit.training import augment_crop_flip, train_on_task


def test_training_learns_its_own_task_and_never_moves_the_class_vectors():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(6, 8, generator=g) * 3
    y = torch.arange(6).repeat(40)
    x = centers[y] + torch.randn(240, 8, generator=g)
    torch.manual_seed(0)
    vectors = random_class_vectors(6, 5, seed=1)
    model = HeadedModel(MLP(8, 16, 5), ClassEmbeddingHead(vectors))
    train_on_task(model, x, y, [0, 1, 2], epochs=8, lr=0.05, batch_size=16, seed=0)
    with torch.no_grad():
        logits = model(x)
    own = torch.isin(y, torch.tensor([0, 1, 2]))
    acc = (logits[own][:, :3].argmax(1) == y[own]).float().mean().item()
    assert acc > 0.9  # three well-separated Gaussian classes
    torch.testing.assert_close(model.head.class_vectors, torch.nn.functional.normalize(vectors, dim=1))
    with pytest.raises(ValueError, match=r"no example has a class in \[7\]"):
        train_on_task(model, x, y, [7], epochs=1)


def test_random_class_vectors_are_seeded_unit_vectors():
    a, b = random_class_vectors(4, 7, seed=3), random_class_vectors(4, 7, seed=3)
    assert torch.equal(a, b) and not torch.equal(a, random_class_vectors(4, 7, seed=4))
    torch.testing.assert_close(a.norm(dim=1), torch.ones(4))


def test_crop_flip_moves_pixels_without_inventing_values():
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).reshape(2, 3, 6, 6) + 1
    out = augment_crop_flip(x, torch.Generator().manual_seed(0), pad=2)
    assert out.shape == x.shape
    for i in range(2):
        values = set(out[i].unique().tolist()) - {0.0}  # zeros come from the padding
        assert values <= set(x[i].unique().tolist())
