"""The DBA study's pieces (benchmarks/dba_protocol.py, benchmarks/dba_study.py): validation carving, selection,
ablations, the page."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import dba_protocol as protocol  # noqa: E402
from dba_study import render  # noqa: E402

from knotwork.train.mlp import RunSpec, balanced_subset  # noqa: E402


def test_validation_is_disjoint_and_balanced():
    labels = np.repeat(np.arange(10), 7)
    idx = balanced_subset(labels, 5, np.random.default_rng(0))
    train, val = protocol.carve_validation(idx, labels, 2, np.random.default_rng(1))
    assert np.bincount(labels[val]).tolist() == [2] * 10
    assert np.bincount(labels[train]).tolist() == [3] * 10
    assert not set(train) & set(val) and set(train) | set(val) == set(idx)


def test_prepare_draws_what_the_command_draws():
    """The final runs of the study use the draw of `knotwork dba train --per-class P --seed S`."""
    rng = np.random.default_rng(0)
    data = {"x_train": rng.integers(0, 256, (50, 28, 28), dtype=np.uint8), "y_train": np.repeat(np.arange(10), 5),
            "x_test": rng.integers(0, 256, (7, 28, 28), dtype=np.uint8), "y_test": np.arange(7)}
    x, y, evals = protocol.prepare(data, 3, 4, 0.2, "final")
    idx = balanced_subset(data["y_train"], 3, np.random.default_rng([4, 3]))
    np.testing.assert_array_equal(x.numpy(), data["x_train"][idx].reshape(30, -1) / np.float32(255))
    assert y.tolist() == data["y_train"][idx].tolist() and evals["test"][1].tolist() == list(range(7))
    x, y, evals = protocol.prepare(data, 3, 4, 0.4, "tune")  # one of three held out per class
    assert len(y) == 20 and len(evals["val"][1]) == 10


def test_select_averages_seeds_and_picks_checkpoint():
    a, b = RunSpec("sgd", 0.1), RunSpec("adam", 1e-3)
    runs = {
        a.key(): [{"checkpoints": [25, 50], "acc": {"val": [0.5, 0.9]}}, {"checkpoints": [25, 50], "acc": {"val": [0.7, 0.5]}}],
        b.key(): [{"checkpoints": [25, 50], "acc": {"val": [0.8, 0.6]}}, {"checkpoints": [25, 50], "acc": {"val": [0.6, 0.6]}}],
    }
    spec, step, val = protocol.select([a, b], runs)  # means: a -> [0.6, 0.7], b -> [0.7, 0.6]; tie goes to the first
    assert (spec, step, val) == (a, 50, pytest.approx(0.7))


def test_ablations_change_one_thing():
    best = protocol.dba_grid(RunSpec("adam", 1e-3))[0]
    abl = protocol.ablations(best)
    changed = {name: {k for k in best.dba if spec.dba.get(k) != best.dba[k]} | (set(spec.dba) - set(best.dba)) for name, spec in abl.items()}
    assert changed == {
        "random subset, same size": {"random_composition"},
        "global instead of per-layer": {"per_layer"},
        "aggregate=sum": {"aggregate"},
    }


def test_accuracy_at_step_falls_back_to_the_last_checkpoint():
    run = {"checkpoints": [2, 4], "acc": {"test": [0.1, 0.2]}}
    assert protocol.accuracy_at_step(run, 2) == 0.1
    assert protocol.accuracy_at_step(run, 6) == 0.2  # stopped early (diverged): the last one reached


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
    meta = {"seeds": [0, 1], "tune_seeds": [0], "steps": 50, "eval_every": 25, "val_frac": 0.2}
    text = render({10: result}, meta)
    # Baseline error 20%, DBA error 10%: a 50% relative reduction; the paper row is quoted alongside.
    assert "a relative error reduction of 50.0%" in text
    assert "| Adam | Adam lr=0.001 | 50 | 80.00 | 79.00 ± 1.41 | [78.00, 80.00] | 100 (all) | 79.00 ± 1.41 |" in text
    assert "97.44%" in text
