"""Training on a tiny BERT: only LoRA moves, loss falls, epochs with early stopping keep the best adapter, the verdict
reports an adapter that cannot learn, pairs are tokenized as pairs, and a resumed run equals an uninterrupted one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import knotwork.lora.train as train_mod
from knotwork.lora.io import load_checkpoint, save_checkpoint
from knotwork.lora.model import LoraSpec, tokenize_texts
from knotwork.lora.tasks import TextSplit, TextTask
from knotwork.lora.train import TrainConfig, epoch_batches, train_adapter, validation_split
from tests.lora.conftest import make_tiny_bert


def _toy_task(n=48, val=True):
    texts = tuple(("great lovely film" if i % 2 else "awful boring film") + f" number {i}" for i in range(n))
    labels = tuple(i % 2 for i in range(n))
    splits = {"train": TextSplit(texts, labels)}
    if val:
        splits["val"] = TextSplit(texts[:16], labels[:16])
    return TextTask("toy", ("negative", "positive"), splits)


def _unlearnable_task():
    """Labels carry no information: each of 8 texts appears 4 times in train and in val, 3 times labelled 0 and
    once labelled 1. Any classifier predicts one label per text, so its val accuracy is at most 75%, the majority."""
    texts = [f"item {w} here" for w in ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel")]
    rows = [(t, y) for t in texts for y in (0, 0, 0, 1)]
    split = TextSplit(tuple(t for t, _ in rows), tuple(y for _, y in rows))
    return TextTask("noise", ("negative", "positive"), {"train": split, "val": split})


FIXED = dict(epochs=None, validation="none", warmup=1 / 6)
CFG = TrainConfig(lora=LoraSpec(r=4, alpha=4.0), max_steps=6, batch_size=8, lr=5e-3, max_length=16, **FIXED)


def test_only_lora_changes_and_loss_falls(minilm_tokenizer):
    model = make_tiny_bert()
    base = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = TrainConfig(lora=LoraSpec(r=4, alpha=4.0, dropout=0.0), max_steps=25, batch_size=8, lr=1e-2,
                      max_length=16, epochs=None, validation="none", warmup=0.04)
    res = train_adapter(model, minilm_tokenizer, _toy_task(), cfg)
    after = model.state_dict()
    for k, v in base.items():  # wrapped modules store the frozen weight under ".base."
        key = k if k in after else k.replace(".weight", ".base.weight").replace(".bias", ".base.bias")
        assert torch.equal(after[key], v), k
    assert sum(res.losses[-5:]) < sum(res.losses[:5])
    assert any(float(t.abs().sum()) > 0 for k, t in res.lora.items() if "lora_B" in k)
    assert res.val_accuracy is None and res.learned is None and res.history == []


def test_resume_reproduces_uninterrupted_run(minilm_tokenizer, tmp_path):
    cfg = TrainConfig(lora=LoraSpec(r=4, alpha=4.0), epochs=3, batch_size=8, lr=5e-3, max_length=16, patience=None)
    full = train_adapter(make_tiny_bert(), minilm_tokenizer, _toy_task(), cfg, baseline="majority")
    saved = []
    train_adapter(make_tiny_bert(), minilm_tokenizer, _toy_task(), cfg, baseline="majority", checkpoint_every=8,
                  on_checkpoint=lambda s: saved.append(s) if s.step == 8 else None)
    save_checkpoint(saved[0], tmp_path / "ck.pt")
    resumed = train_adapter(make_tiny_bert(), minilm_tokenizer, _toy_task(), cfg, baseline="majority",
                            resume=load_checkpoint(tmp_path / "ck.pt"))
    assert resumed.steps == full.steps == 18  # 3 epochs of 48 // 8
    assert resumed.losses == pytest.approx(full.losses, rel=1e-5)
    assert [h["step"] for h in resumed.history] == [h["step"] for h in full.history] == [0, 6, 12, 18]
    assert resumed.best_step == full.best_step and resumed.baselines == full.baselines
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
    # The lrs the optimizer actually used, read at each step: warm-up over round(warmup * planned steps).
    seen = []
    real_step = torch.optim.AdamW.step

    def spy(self, *a, **k):
        seen.append(self.param_groups[0]["lr"])
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", spy)
    train_adapter(make_tiny_bert(), minilm_tokenizer, _toy_task(), CFG)
    want = [CFG.lr * _reference_lr_factor(s, steps=6, warmup=1) for s in range(6)]
    assert seen == want


def test_progress_callback_counts_steps(minilm_tokenizer):
    done = []
    train_adapter(make_tiny_bert(), minilm_tokenizer, _toy_task(), CFG, progress=done.append)
    assert sum(done) == CFG.max_steps


def test_early_stopping_keeps_the_best_adapter(minilm_tokenizer, monkeypatch):
    # Scripted val accuracies (the first is the zero-shot baseline at step 0): best at step 2, then two
    # evaluations without a better one -> stop after step 4, return the adapter as it was after step 2.
    scripted = iter([0.5, 0.6, 0.8, 0.8, 0.7, 0.9, 0.95])
    monkeypatch.setattr(train_mod, "accuracy", lambda scores, gold: next(scripted))
    after_step = {}
    cfg = TrainConfig(lora=LoraSpec(r=4, alpha=4.0), epochs=5, batch_size=8, lr=5e-3, max_length=16, patience=2,
                      eval_every=1)
    res = train_adapter(make_tiny_bert(), minilm_tokenizer, _toy_task(), cfg, baseline="none", checkpoint_every=1,
                        on_checkpoint=lambda s: after_step.setdefault(s.step, s.lora))
    assert [h["val_accuracy"] for h in res.history] == [0.5, 0.6, 0.8, 0.8, 0.7]
    assert res.steps == 4 and res.stopped_early and res.best_step == 2 and res.val_accuracy == 0.8
    assert res.baselines == {"zero_shot": 0.5} and res.learned is None
    for k, v in res.lora.items():
        assert torch.equal(v, after_step[2][k]), k
    assert not all(torch.equal(v, after_step[4][k]) for k, v in res.lora.items())


def test_max_steps_caps_the_epochs(minilm_tokenizer):
    cfg = TrainConfig(lora=LoraSpec(r=4, alpha=4.0), epochs=3, max_steps=5, batch_size=8, max_length=16)
    res = train_adapter(make_tiny_bert(), minilm_tokenizer, _toy_task(), cfg, baseline="majority")
    assert res.steps == res.planned_steps == 5 and len(res.losses) == 5 and not res.stopped_early
    assert [h["step"] for h in res.history] == [0, 5]  # an epoch is 6 steps: only the final evaluation
    assert res.epochs == pytest.approx(5 / 6)


def test_a_task_that_cannot_be_learned_is_reported(minilm_tokenizer):
    cfg = TrainConfig(lora=LoraSpec(r=4, alpha=4.0), epochs=3, batch_size=8, lr=1e-2, max_length=16)
    res = train_adapter(make_tiny_bert(), minilm_tokenizer, _unlearnable_task(), cfg)
    assert res.baselines["majority"] == 0.75
    assert res.val_accuracy <= 0.75 and res.learned is False
    assert res.warnings[0] == f"noise: adapter did not learn: val accuracy {100 * res.val_accuracy:.1f}% <= majority 75.0%"
    assert res.to_dict()["learned"] is False and res.to_dict()["warnings"] == res.warnings


def test_a_learnable_task_is_reported_as_learned(minilm_tokenizer):
    cfg = TrainConfig(lora=LoraSpec(r=4, alpha=4.0, dropout=0.0), epochs=4, batch_size=8, lr=3e-2, max_length=16)
    res = train_adapter(make_tiny_bert(), minilm_tokenizer, _toy_task(), cfg, baseline="majority")
    assert res.val_accuracy == 1.0 and res.learned is True and res.warnings == []


def test_pairs_are_tokenized_as_pairs_in_training_and_evaluation(minilm_tokenizer):
    texts = ["a cat sits on the mat [SEP] an animal rests", "a single sentence"]
    got = tokenize_texts(minilm_tokenizer, texts, max_length=32)
    want = minilm_tokenizer([("a cat sits on the mat", "an animal rests"), "a single sentence"], padding=True,
                            truncation=True, max_length=32, return_tensors="pt")
    for k in want:
        assert torch.equal(got[k], want[k]), k
    assert got["token_type_ids"][0].max() == 1 and got["token_type_ids"][1].max() == 0

    seen = []

    class Spy:
        def __call__(self, inputs, **kw):
            seen.extend(inputs)
            return minilm_tokenizer(inputs, **kw)

    rows = [(f"premise {i} [SEP] hypothesis {i}", i % 2) for i in range(16)]
    split = TextSplit(tuple(t for t, _ in rows), tuple(y for _, y in rows))
    task = TextTask("pairs", ("entailment", "contradiction"), {"train": split, "val": split})
    train_adapter(make_tiny_bert(), Spy(), task, TrainConfig(epochs=1, batch_size=8, max_length=16),
                  baseline="none")
    pairs = [x for x in seen if isinstance(x, tuple)]
    assert ("premise 3", "hypothesis 3") in pairs and not any("[SEP]" in x for x in seen if isinstance(x, str))


def test_a_task_without_val_holds_out_a_fixed_tenth_of_train():
    task = _toy_task(n=50, val=False)
    train, val, source = validation_split(task, TrainConfig())
    assert (len(train), len(val)) == (45, 5) and source == "held out of train (5 of 50, fixed)"
    assert sorted(train.texts + val.texts) == sorted(task.splits["train"].texts)
    again = validation_split(task, TrainConfig(seed=7))[1]
    assert again == val  # the same examples whatever the training seed


def test_epoch_batches_cover_the_epoch_and_group_lengths():
    lengths = np.random.default_rng(0).integers(1, 100, size=103)
    batches = epoch_batches(lengths, 4, seed=1, epoch=0, pool=5)
    flat = np.concatenate(batches)
    assert len(batches) == 25 and len(set(flat.tolist())) == 100  # 103 // 4 full batches, no repeats
    assert np.array_equal(np.concatenate(epoch_batches(lengths, 4, seed=1, epoch=0, pool=5)), flat)
    assert not np.array_equal(np.concatenate(epoch_batches(lengths, 4, seed=1, epoch=1, pool=5)), flat)
    spread = np.mean([np.ptp(lengths[b]) for b in batches])
    random_spread = np.mean([np.ptp(lengths[b]) for b in np.random.default_rng(2).permutation(100).reshape(25, 4)])
    assert spread < random_spread / 2


def test_config_validation_names_the_parameter():
    with pytest.raises(ValueError, match="'max_steps' parameter of TrainConfig"):
        TrainConfig(max_steps=0)
    with pytest.raises(ValueError, match="'epochs' parameter of TrainConfig"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match="needs 'epochs' or 'max_steps'"):
        TrainConfig(epochs=None)
    with pytest.raises(ValueError, match="'patience' parameter of TrainConfig"):
        TrainConfig(patience=0)
    with pytest.raises(ValueError, match="'warmup' parameter"):
        TrainConfig(warmup=1.0)
    with pytest.raises(ValueError, match="'validation' parameter of TrainConfig must be one of"):
        TrainConfig(validation="test")
    with pytest.raises(ValueError, match="'r' parameter of LoraSpec"):
        LoraSpec(r=0)
    model = make_tiny_bert()
    with pytest.raises(ValueError, match="fewer than batch_size 64"):
        train_adapter(model, None, _toy_task(), TrainConfig(batch_size=64))
    with pytest.raises(ValueError, match="baseline must be one of"):
        train_adapter(model, None, _toy_task(), TrainConfig(), baseline="knn")
    for bad in (float("nan"), float("inf"), 0.0, -1e-3):
        with pytest.raises(ValueError, match="'lr' parameter of TrainConfig must be a finite number > 0"):
            TrainConfig(lr=bad)
