"""Training on a tiny BERT: only LoRA moves, loss falls, and a resumed run equals an uninterrupted one."""

from __future__ import annotations

import pytest
import torch

from knotwork.lora.io import load_checkpoint, save_checkpoint
from knotwork.lora.model import LoraSpec
from knotwork.lora.runner import train_task_cached
from knotwork.lora.tasks import TextSplit, TextTask
from knotwork.lora.train import TrainConfig, train_adapter
from tests.lora.conftest import make_tiny_bert


def _toy_task(n=48):
    texts = tuple(("great lovely film" if i % 2 else "awful boring film") + f" number {i}" for i in range(n))
    labels = tuple(i % 2 for i in range(n))
    return TextTask("toy", ("negative", "positive"), {"train": TextSplit(texts, labels)})


CFG = TrainConfig(lora=LoraSpec(r=4, alpha=4.0), steps=6, batch_size=8, lr=5e-3, warmup_steps=1, max_length=16)


def test_only_lora_changes_and_loss_falls(minilm_tokenizer):
    model = make_tiny_bert()
    base = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = TrainConfig(lora=LoraSpec(r=4, alpha=4.0, dropout=0.0), steps=25, batch_size=8, lr=1e-2,
                      warmup_steps=1, max_length=16)
    state = train_adapter(model, minilm_tokenizer, _toy_task(), cfg)
    after = model.state_dict()
    for k, v in base.items():  # wrapped modules store the frozen weight under ".base."
        key = k if k in after else k.replace(".weight", ".base.weight").replace(".bias", ".base.bias")
        assert torch.equal(after[key], v), k
    assert sum(state.losses[-5:]) < sum(state.losses[:5])
    assert any(float(t.abs().sum()) > 0 for k, t in state.lora.items() if "lora_B" in k)


def test_resume_reproduces_uninterrupted_run(minilm_tokenizer, tmp_path):
    full = train_adapter(make_tiny_bert(), minilm_tokenizer, _toy_task(), CFG)
    saved = []
    half = TrainConfig(**{**CFG.__dict__})
    train_adapter(make_tiny_bert(), minilm_tokenizer, _toy_task(), half, checkpoint_every=3,
                  on_checkpoint=lambda s: saved.append(s) if s.step == 3 else None)
    save_checkpoint(saved[0], tmp_path / "ck.pt")
    resumed = train_adapter(make_tiny_bert(), minilm_tokenizer, _toy_task(), CFG,
                            resume=load_checkpoint(tmp_path / "ck.pt"))
    assert resumed.step == full.step == CFG.steps
    assert resumed.losses == pytest.approx(full.losses, rel=1e-5)
    for k in full.lora:
        torch.testing.assert_close(resumed.lora[k], full.lora[k], rtol=1e-5, atol=1e-6)


def test_cached_runner_reuses_and_refuses_changed_config(minilm_tokenizer, tmp_path):
    calls = []

    def loader():
        calls.append(1)
        return make_tiny_bert(), minilm_tokenizer, "tiny"

    first = train_task_cached(loader, _toy_task(), CFG, tmp_path / "toy")
    assert not first.cached and (first.adapter_dir / "adapter_model.safetensors").is_file()
    again = train_task_cached(loader, _toy_task(), CFG, tmp_path / "toy")
    assert again.cached and len(calls) == 1
    other = TrainConfig(**{**CFG.__dict__, "steps": 7})
    with pytest.raises(FileExistsError, match="another config or data for task 'toy'"):
        train_task_cached(loader, _toy_task(), other, tmp_path / "toy")


def test_config_validation_names_the_parameter():
    with pytest.raises(ValueError, match="'steps' parameter of TrainConfig"):
        TrainConfig(steps=0)
    with pytest.raises(ValueError, match="'warmup_steps' parameter"):
        TrainConfig(steps=5, warmup_steps=5)
    with pytest.raises(ValueError, match="'r' parameter of LoraSpec"):
        LoraSpec(r=0)
    model = make_tiny_bert()
    with pytest.raises(ValueError, match="fewer than batch_size 64"):
        train_adapter(model, None, _toy_task(), TrainConfig(batch_size=64))
