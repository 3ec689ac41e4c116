"""Task training with a frozen class-embedding head, augmentation, and seeded class vectors."""

from __future__ import annotations

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from knotwork._errors import ZipitError
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
    few = y < 5
    with pytest.raises(ZipitError, match=r"no example has a class in \[5\]"):
        train_on_task(model, x[few], y[few], [5], epochs=1)


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


def _tiny_task(n_classes: int = 6):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n_classes).repeat(8)
    x = torch.randn(len(y), 8, generator=g)
    torch.manual_seed(0)
    model = HeadedModel(MLP(8, 16, 5), ClassEmbeddingHead(random_class_vectors(n_classes, 5, seed=1)))
    return model, x, y


def test_learning_rates_rise_for_one_epoch_then_fall_linearly_to_zero():
    """The shared schedule gives exactly the rates of the formula train_on_task used before it moved to the core."""
    model, x, y = _tiny_task()
    lrs = []
    hook = register_optimizer_step_pre_hook(
        lambda opt, args, kwargs: lrs.append(opt.param_groups[0]["lr"]))
    try:
        train_on_task(model, x, y, [0, 1, 2], epochs=3, lr=0.2, batch_size=5, seed=0)
    finally:
        hook.remove()
    # 24 examples of classes 0-2, batches of 5: 5 steps per epoch, 15 in all, one epoch of warm-up.
    warm, total = 5, 15
    expected = [0.2 * ((s + 1) / warm if s < warm else max(0.0, (total - s) / max(1, total - warm)))
                for s in range(total)]
    assert lrs == pytest.approx(expected, rel=1e-12, abs=0)
    assert lrs[warm - 1] == pytest.approx(0.2) and lrs[-1] == pytest.approx(0.2 / 10)


@pytest.mark.parametrize(("warmup", "nesterov"), [(0, False), (2, False), (3, True)])
def test_warm_up_epochs_and_plain_momentum_follow_the_formula(warmup, nesterov):
    """The paper's recipe (5 warm-up epochs, plain momentum) in small: the rates of the formula, the momentum kind."""
    model, x, y = _tiny_task()
    seen = []
    hook = register_optimizer_step_pre_hook(
        lambda opt, args, kwargs: seen.append((opt.param_groups[0]["lr"], opt.param_groups[0]["nesterov"])))
    try:
        train_on_task(model, x, y, [0, 1, 2], epochs=3, lr=0.2, batch_size=5, seed=0, warmup_epochs=warmup,
                      nesterov=nesterov)
    finally:
        hook.remove()
    warm, total = 5 * warmup, 15
    expected = [0.2 * ((s + 1) / warm if s < warm else max(0.0, (total - s) / max(1, total - warm)))
                for s in range(total)]
    assert [lr for lr, _ in seen] == pytest.approx(expected, rel=1e-12, abs=0)
    assert {n for _, n in seen} == {nesterov}


@pytest.mark.parametrize("warmup", [-1, 4, 1.5, True])
def test_training_refuses_a_warm_up_longer_than_the_run(warmup):
    model, x, y = _tiny_task()
    with pytest.raises(ZipitError, match=r"warmup_epochs must be an integer in \[0, epochs=3\]"):
        train_on_task(model, x, y, [0], epochs=3, warmup_epochs=warmup)


@pytest.mark.parametrize(("change", "match"), [
    (lambda x, y: (x, y, [0, 6]), r"classes\[1\] = 6 is not a class of the model's head \(0\.\.5\)"),
    (lambda x, y: (x, y, [-1]), r"classes\[0\] = -1 is not a class"),
    (lambda x, y: (x, torch.where(torch.arange(len(y)) == 7, 9, y), [0]), r"y\[7\] = 9 is not a class"),
    (lambda x, y: (x.index_put((torch.tensor([3]), torch.tensor([2])), torch.tensor(float("nan"))), y, [0]),
     r"x holds 1 non-finite value"),
    (lambda x, y: (x, y.float(), [0]), r"y must be integer class ids"),
])
def test_training_refuses_bad_labels_and_images_before_any_step(change, match):
    model, x, y = _tiny_task()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y, classes = change(x, y)
    with pytest.raises(ZipitError, match=match):
        train_on_task(model, x, y, classes, epochs=1)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize(("option", "value"), [("epochs", 0), ("batch_size", -4)])
def test_training_refuses_impossible_counts(option, value):
    model, x, y = _tiny_task()
    with pytest.raises(ZipitError, match=rf"{option} must be an integer >= 1; got {value}"):
        train_on_task(model, x, y, [0], **{"epochs": 1, option: value})
