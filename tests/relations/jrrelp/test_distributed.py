"""`jrrelp train` under torchrun: 2 gloo processes train the same model as one process with the same global batch.

The 2-process run goes through the real CLI (``python -m torch.distributed.run --standalone --nproc-per-node 2
-m knotwork jrrelp train ... --exact-data-parallel``); the reference is the library's one-process ``train`` with
the config the run saved. Batches of 8 over 37 examples leave a last batch of 5, split 3/2 between the processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from knotwork._distributed import DistContext
from knotwork.relations.jrrelp import TrainConfig, train
from knotwork.relations.jrrelp.model import JRRELPOutput, jrrelp_loss

from .helpers import synthetic_examples
from .test_io_cli import _write

ROOT = Path(__file__).resolve().parents[3]


def test_two_gloo_processes_train_what_one_process_trains(tmp_path):
    data, out = tmp_path / "data", tmp_path / "run"
    data.mkdir()
    train_ex, dev_ex = synthetic_examples(37, seed=0), synthetic_examples(12, seed=1)
    _write(data, "train.json", train_ex)
    _write(data, "dev.json", dev_ex)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "knotwork", "jrrelp", "train", "--data", str(data), "--out", str(out), "--jrrelp", "--epochs", "2",
           "--patience", "5", "--hidden-dim", "20", "--embedding-dim", "20", "--batch-size", "8",
           "--optimizer", "adam", "--lr", "0.01", "--exact-data-parallel", "--json", str(tmp_path / "metrics.json")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Process 0 wrote the run and the metrics once; nothing else appeared.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "metrics.json", "run"]
    assert proc.stdout.count("saved run to") == 1

    saved = json.loads((out / "config.json").read_text())["config"]
    config = TrainConfig.from_dict(saved)
    assert (config.dropout, config.word_dropout, config.conve_hidden_dropout, config.conve_batchnorm) == (
        0.0, 0.0, 0.0, "running")
    reference = train(train_ex, dev_ex, config)
    # Dev F1 rises in epoch 2 (0.10 -> 0.57), so the saved best weights are those after both epochs.
    assert json.loads((out / "metrics.json").read_text())["best_epoch"] == reference.best_epoch == 2
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    for got, want in zip(history, reference.history, strict=True):
        for key in ("loss", "re", "kglp", "coupling"):
            assert got[key] == pytest.approx(want[key], rel=1e-5, abs=1e-7), key
    from safetensors.torch import load_file

    # Adam turns float-level gradient differences into update differences of ~1e-6 on weights of ~0.1, which
    # moved ~1e-2 in these steps; a missing all-reduce or a per-share mean moves them by ~1e-3.
    weights = load_file(out / "model.safetensors")
    state = reference.model.state_dict()
    assert weights, "no weights saved"
    for name, tensor in weights.items():
        torch.testing.assert_close(tensor, state[name], rtol=1e-4, atol=1e-5, msg=lambda m, name=name: f"{name}: {m}")
    assert config.classifier == "reference"  # --jrrelp on the PA-LSTM: R detached in the RE logits, as the code
    assert not torch.equal(weights["relation_table.weight"], _untrained(train_ex, dev_ex, config))


def _untrained(train_ex, dev_ex, config):
    """The initial R, to show the compared weights moved (two epochs of Adam)."""
    from dataclasses import replace

    from knotwork.relations.jrrelp.train import build_model

    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        model, _, _ = build_model(train_ex, replace(config, epochs=1))
    return model.relation_embeddings.detach()


def test_shares_of_the_loss_sum_to_the_global_mean():
    """jrrelp_loss(global_count=B) on two shares adds up to the mean loss of the whole batch."""
    g = torch.Generator().manual_seed(0)
    out = JRRELPOutput(torch.randn(5, 4, generator=g), torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g))
    labels, targets = torch.tensor([0, 3, 1, 1, 2]), (torch.rand(5, 7, generator=g) > 0.5).float()
    whole = jrrelp_loss(out, labels, targets, lambda_kglp=0.7, lambda_coupling=0.2)
    parts = [jrrelp_loss(JRRELPOutput(*(t[r::2] for t in (out.re_logits, out.kglp_logits, out.coupling_logits))),
                         labels[r::2], targets[r::2], lambda_kglp=0.7, lambda_coupling=0.2, global_count=5)
             for r in range(2)]
    for name in ("total", "re", "kglp", "coupling"):
        torch.testing.assert_close(sum(getattr(p, name) for p in parts), getattr(whole, name))


def test_one_process_context_is_the_plain_run():
    examples = synthetic_examples(20, seed=0)
    config = TrainConfig.jrrelp("palstm", embedding_dim=20, hidden_dim=20, attention_dim=10, num_layers=1,
                                conve_width=5, conve_channels=4, vocab_min_count=1, optimizer="adam", lr=0.01,
                                batch_size=8, epochs=1)
    plain = train(examples, examples[:6], config)
    with_ctx = train(examples, examples[:6], config, dist=DistContext())
    for name, tensor in plain.model.state_dict().items():
        assert torch.equal(with_ctx.model.state_dict()[name], tensor), name
