"""The experiment protocol's pieces: class-balanced draws, validation carving, selection, the report."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from knotwork.train.experiment import RunSpec, balanced_subset, carve_validation, train_mlp
from knotwork.train.protocol import ablations, accuracy_at_step, dba_grid, select
from knotwork.train.report import render


def test_balanced_subset_and_validation_are_disjoint_and_balanced():
    labels = np.repeat(np.arange(10), 7)
    idx = balanced_subset(labels, 5, np.random.default_rng(0))
    assert np.bincount(labels[idx]).tolist() == [5] * 10
    train, val = carve_validation(idx, labels, 2, np.random.default_rng(1))
    assert np.bincount(labels[val]).tolist() == [2] * 10
    assert np.bincount(labels[train]).tolist() == [3] * 10
    assert not set(train) & set(val) and set(train) | set(val) == set(idx)
    with pytest.raises(ValueError, match="class 0 has only 7 examples; cannot draw 8 per class"):
        balanced_subset(labels, 8, np.random.default_rng(0))


def test_select_averages_seeds_and_picks_checkpoint():
    a, b = RunSpec("sgd", 0.1), RunSpec("adam", 1e-3)
    runs = {
        a.key(): [{"checkpoints": [25, 50], "acc": {"val": [0.5, 0.9]}}, {"checkpoints": [25, 50], "acc": {"val": [0.7, 0.5]}}],
        b.key(): [{"checkpoints": [25, 50], "acc": {"val": [0.8, 0.6]}}, {"checkpoints": [25, 50], "acc": {"val": [0.6, 0.6]}}],
    }
    spec, step, val = select([a, b], runs)  # means: a -> [0.6, 0.7], b -> [0.7, 0.6]; tie goes to the first
    assert (spec, step, val) == (a, 50, pytest.approx(0.7))


def test_ablations_change_one_thing():
    best = dba_grid(RunSpec("adam", 1e-3))[0]
    abl = ablations(best)
    changed = {name: {k for k in best.dba if spec.dba.get(k) != best.dba[k]} | (set(spec.dba) - set(best.dba)) for name, spec in abl.items()}
    assert changed == {
        "random subset, same size": {"random_composition"},
        "global instead of per-layer": {"per_layer"},
        "aggregate=sum": {"aggregate"},
    }


def test_train_mlp_records_checkpoints_and_sizes():
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(20, 784, generator=gen), torch.arange(20) % 10
    spec = RunSpec("adam", 1e-2, dba={"metric": "snr"}, min_frac=0.5, hidden=8, steps=5, eval_every=2)
    result = train_mlp(spec, x, y, {"test": (x, y)}, seed=0)
    assert result["checkpoints"] == [2, 4, 5]
    assert result["acc"]["test"] == result["train_acc"]  # same data, so the two must agree
    assert all(len(v) == 5 and min(v) >= 10 for v in result["sizes"].values())  # min_frac 0.5 of 20
    assert accuracy_at_step(result, 4) == result["acc"]["test"][1]


def test_render_reports_relative_error_reduction():
    def run(acc):
        return {"checkpoints": [50], "acc": {"test": [acc]}}

    spec = RunSpec("adam", 1e-3).to_dict()
    result = {
        "chosen": {
            "SGD": {"spec": spec, "step": 50, "val": 0.8},
            "Adam": {"spec": spec, "step": 50, "val": 0.8},
            "DBA + Adam": {"spec": spec, "step": 50, "val": 0.8},
        },
        "final": {"SGD": [run(0.80), run(0.80)], "Adam": [run(0.78), run(0.80)], "DBA + Adam": [run(0.90), run(0.90)]},
        "tuning": {"k": [0.8]},
        "tuning_checkpoints": [50],
        "best_dba": "DBA + Adam",
    }
    meta = {k: "x" for k in ("status", "command", "data", "machine", "version", "commit", "torch", "date")}
    meta.update(sha256="0" * 64, seeds=[0, 1], tune_seeds=[0], seconds=60.0, steps=50, eval_every=25, val_frac=0.2,
                sgd_lrs=[0.1], adam_lrs=[1e-3], dba_metrics=["snr"], dba_min_fracs=[0.0])
    text = render({10: result}, meta)
    # Baseline error 20%, DBA error 10%: a 50% relative reduction; the paper row is quoted alongside.
    assert "a relative error reduction of 50.0%" in text
    assert "| Adam | Adam lr=0.001 | 50 | 80.00 | 79.00 ± 1.41 | [78.00, 80.00] | 100 (all) | 79.00 ± 1.41 |" in text
    assert "97.44%" in text
