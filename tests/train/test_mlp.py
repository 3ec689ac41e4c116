"""The run of `knotwork dba train`: class-balanced draws, the run configuration, training with checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from knotwork._errors import TrainError
from knotwork.train.mlp import RunSpec, Trainer, balanced_subset, train_mlp


def test_balanced_subset_draws_per_class_without_replacement():
    labels = np.repeat(np.arange(10), 7)
    idx = balanced_subset(labels, 5, np.random.default_rng(0))
    assert np.bincount(labels[idx]).tolist() == [5] * 10
    assert len(set(idx.tolist())) == 50
    with pytest.raises(TrainError, match="class 0 has only 7 examples; cannot draw 8 per class"):
        balanced_subset(labels, 8, np.random.default_rng(0))
    with pytest.raises(TrainError, match="class 9 has only 0 examples"):
        balanced_subset(labels % 9, 1, np.random.default_rng(0))


def test_train_mlp_records_checkpoints_and_sizes():
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(20, 784, generator=gen), torch.arange(20) % 10
    spec = RunSpec("adam", 1e-2, dba={"metric": "snr"}, min_frac=0.5, hidden=8, steps=5, eval_every=2)
    result = train_mlp(spec, x, y, {"test": (x, y)}, seed=0)
    assert result["checkpoints"] == [2, 4, 5]
    assert result["acc"]["test"] == result["train_acc"]  # same data, so the two must agree
    assert all(len(v) == 5 and min(v) >= 10 for v in result["sizes"].values())  # min_frac 0.5 of 20
    assert result["diverged_at"] is None


def test_train_mlp_stops_at_divergence():
    x, y = torch.rand(20, 784, generator=torch.Generator().manual_seed(0)), torch.arange(20) % 10
    result = train_mlp(RunSpec("sgd", 1e30, hidden=8, steps=6, eval_every=1), x, y, {"test": (x, y)}, seed=0)
    assert result["diverged_at"] is not None
    assert len(result["checkpoints"]) == result["diverged_at"] - 1  # no checkpoint at or after the bad step


def test_train_mlp_refuses_non_finite_images_and_bad_labels():
    x, y = torch.rand(20, 784), torch.arange(20) % 10
    spec = RunSpec("adam", 1e-3, hidden=4, steps=1)
    bad = x.clone()
    bad[3, 5] = float("nan")
    with pytest.raises(TrainError, match="training set images holds 1 non-finite value"):
        train_mlp(spec, bad, y, {}, seed=0)
    with pytest.raises(TrainError, match="evaluation set 'test': labels must lie in 0-9"):
        train_mlp(spec, x, y, {"test": (x, y + 5)}, seed=0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"optimizer": "rmsprop"}, "optimizer must be one of sgd, adam; got 'rmsprop'"),
        ({"lr": float("nan")}, "lr must be a finite number > 0; got nan"),
        ({"lr": 0.0}, "lr must be a finite number > 0; got 0.0"),
        ({"momentum": -1.0, "optimizer": "sgd"}, "momentum must be a finite number >= 0"),
        ({"momentum": 0.9}, "momentum applies to the sgd optimizer only"),
        ({"steps": 0}, "steps must be an integer >= 1; got 0"),
        ({"eval_every": 0}, "eval_every must be an integer >= 1; got 0"),
        ({"hidden": 2.5}, "hidden must be an integer >= 1; got 2.5"),
        ({"min_frac": 1.5}, r"min_frac must be a number in \[0, 1\]"),
        ({"dba": {"metric": "gns"}}, "unknown DBA metric 'gns'"),
        ({"dba": {"min_size": 0}}, "The 'min_size' parameter of DBA must be an int >= 1"),
        ({"dba": {"minsize": 3}}, "unknown DBA option 'minsize'"),
    ],
)
def test_run_spec_refuses_bad_options(kwargs, match):
    with pytest.raises(TrainError, match=match):
        RunSpec(**{"optimizer": "adam", "lr": 1e-3, **kwargs})


def test_cnn_dba_selecting_the_whole_pool_steps_like_plain_training():
    """min_size = the pool forces DBA to keep every sample: its mean subset gradient is the full-batch gradient,
    so on the CNN (Conv2d layers through the unfold route) two steps must match plain training."""
    gen = torch.Generator().manual_seed(1)
    x, y = torch.rand(12, 784, generator=gen), torch.arange(12) % 10
    plain = Trainer(RunSpec("sgd", 0.1, momentum=0.9, arch="cnn"), x, y, seed=3)
    dba = Trainer(RunSpec("sgd", 0.1, momentum=0.9, arch="cnn", dba={"metric": "snr"}, min_frac=1.0), x, y, seed=3)
    for _ in range(2):
        plain.step(), dba.step()
    assert {k: v.tolist() for k, v in dba.dba.subset_sizes().items()} == {k: [12, 12] for k in ("1", "4", "8")}
    for (name, a), b in zip(plain.model.named_parameters(), dba.model.parameters(), strict=True):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4, msg=name)
    assert RunSpec("adam", 1e-3, arch="cnn").key() == "adam_lr0.001_cnn_s200"
    with pytest.raises(TrainError, match="arch must be one of mlp, cnn; got 'vit'"):
        RunSpec("adam", 1e-3, arch="vit")
