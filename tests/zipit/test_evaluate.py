"""Joint and per-task accuracy on hand-worked outputs; MAC counts by hand."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from knotwork.zipit import count_macs, task_accuracy

from .helpers import tiny_vgg


class _Fixed(nn.Module):
    def __init__(self, out: torch.Tensor) -> None:
        super().__init__()
        self.out = out

    def forward(self, x):
        return self.out[..., x.long().flatten(), :] if self.out.ndim == 3 else self.out[x.long().flatten()]


def test_single_head_joint_and_per_task():
    tasks = [[0, 1], [2, 3]]
    y = torch.tensor([0, 1, 2, 3])
    logits = torch.tensor([
        [5.0, 1.0, 9.0, 0.0],  # true 0: joint picks 2 (wrong); within task A picks 0 (right)
        [0.0, 3.0, 1.0, 0.0],  # true 1: right both ways
        [0.0, 0.0, 1.0, 2.0],  # true 2: joint 3 (wrong); within task B 3 (wrong)
        [0.0, 0.0, 0.0, 4.0],  # true 3: right
    ])
    acc = task_accuracy(_Fixed(logits), torch.arange(4).float(), y, tasks, batch_size=3)
    assert acc.joint == pytest.approx(0.5)
    assert acc.per_task == pytest.approx((1.0, 0.5))
    assert acc.avg == pytest.approx(0.75)


def test_multi_head_softmax_per_head_then_max():
    tasks = [[0, 1], [2, 3]]
    y = torch.tensor([0, 3])
    head_a = torch.tensor([[2.0, 0.0, 50.0, 50.0], [0.0, 0.1, 0.0, 0.0]])
    head_b = torch.tensor([[0.0, 0.0, 0.0, 0.1], [0.0, 0.0, 0.0, 3.0]])
    # Example 0: head A softmax(2, 0) -> p(0)=0.88; head B softmax(0, 0.1) -> 0.52; joint picks class 0 (right).
    # Example 1: head A softmax(0, 0.1) -> 0.52 for class 1; head B softmax(0, 3) -> 0.95 for 3: right.
    acc = task_accuracy(_Fixed(torch.stack([head_a, head_b])), torch.arange(2).float(), y, tasks)
    assert acc.joint == 1.0 and acc.per_task == (1.0, 1.0)
    with pytest.raises(ValueError, match="the model has 2 heads but there are 3 tasks"):
        task_accuracy(_Fixed(torch.stack([head_a, head_b])), torch.arange(2).float(), y, [[0], [1], [2]])


def test_count_macs_by_hand():
    model = tiny_vgg(0)  # conv 3->8 (8x8), pool, conv 8->16 (4x4), pool, linear 64->12, linear 12->5
    expected = 8 * 8 * 8 * 3 * 9 + 16 * 4 * 4 * 8 * 9 + 64 * 12 + 12 * 5
    assert count_macs(model, torch.randn(2, 3, 8, 8)) == expected
