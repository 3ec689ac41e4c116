"""Training on a tiny BERT: only LoRA moves, loss falls, and a resumed run equals an uninterrupted one."""

from __future__ import annotations

import pytest
import torch

from knotwork.lora.io import load_checkpoint, save_checkpoint
from knotwork.lora.model import LoraSpec
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


def _reference_lr_factor(step, *, steps, warmup):
    # The schedule train_adapter used before knotwork._schedule existed, kept verbatim as the oracle.
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (steps - step) / max(1, steps - warmup))


@pytest.mark.parametrize(("steps", "warmup"), [(80, 8), (30, 5), (6, 1), (5, 0), (400, 20)])
def test_learning_rates_are_bit_identical_to_the_old_schedule(steps, warmup):
    from knotwork._schedule import warmup_linear_decay

    lr = 2e-3
    new_opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    old_opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    new = warmup_linear_decay(new_opt, total_steps=steps, warmup_steps=warmup)
    old = torch.optim.lr_scheduler.LambdaLR(
        old_opt, lambda s: _reference_lr_factor(s, steps=steps, warmup=warmup))
    for _ in range(steps + 2):
        assert new_opt.param_groups[0]["lr"] == old_opt.param_groups[0]["lr"]  # exact, not approx
        new_opt.step(), old_opt.step()
        new.step(), old.step()


def test_train_adapter_follows_the_schedule(minilm_tokenizer, monkeypatch):
    # The lrs the optimizer actually used, read at each step, are the old schedule's.
    seen = []
    real_step = torch.optim.AdamW.step

    def spy(self, *a, **k):
        seen.append(self.param_groups[0]["lr"])
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", spy)
    train_adapter(make_tiny_bert(), minilm_tokenizer, _toy_task(), CFG)
    want = [CFG.lr * _reference_lr_factor(s, steps=CFG.steps, warmup=CFG.warmup_steps) for s in range(CFG.steps)]
    assert seen == want


def test_progress_callback_counts_steps(minilm_tokenizer):
    done = []
    train_adapter(make_tiny_bert(), minilm_tokenizer, _toy_task(), CFG, progress=done.append)
    assert sum(done) == CFG.steps


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
    for bad in (float("nan"), float("inf"), 0.0, -1e-3):
        with pytest.raises(ValueError, match="'lr' parameter of TrainConfig must be a finite number > 0"):
            TrainConfig(lr=bad)
