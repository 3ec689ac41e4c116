"""End to end on real data and the real MiniLM: train tiny adapters, evaluate, merge, joint benchmark."""

from __future__ import annotations

import pytest
import torch

from knotwork.lora.evaluate import TaskEvaluator
from knotwork.lora.io import save_peft_adapter
from knotwork.lora.model import LoraSpec, load_base_encoder
from knotwork.lora.tasks import TextTask, load_text_task
from knotwork.lora.train import TrainConfig, train_adapter

pytestmark = pytest.mark.slow


def _small(task: TextTask, n: int) -> TextTask:
    return TextTask(task.name, task.label_names, {s: sp.subset(n) for s, sp in task.splits.items()})


def test_train_evaluate_merge_joint(shared_data, tmp_path):
    merge = pytest.importorskip("knotwork.merge")
    tasks = [_small(load_text_task(shared_data / "text" / n), 12) for n in ("mpqa", "trec")]
    cfg = TrainConfig(lora=LoraSpec(), epochs=None, max_steps=3, validation="none", batch_size=4, lr=1e-3,
                      warmup=1 / 3, max_length=24)
    dirs = []
    for t in tasks:
        model, tok, _ = load_base_encoder()
        dirs.append(save_peft_adapter(train_adapter(model, tok, t, cfg).lora, cfg.lora, tmp_path / t.name))
    adapters = [merge.load_adapter(d) for d in dirs]
    assert len(adapters[0].modules) == 24  # 6 layers x (q, k, v, attention output)

    model, tok, _ = load_base_encoder()
    ev = TaskEvaluator(model, tok, tasks, split="test", max_length=24)
    zs = ev.evaluate()
    # Joint classes: mpqa's 2 + trec's 6, none shared.
    assert len(ev.joint.phrases) == 8 and set(zs.joint_hits) == {1, 3, 5}
    assert zs.joint_hits[1] <= zs.joint_hits[3] <= zs.joint_hits[5]
    ft = ev.evaluate(adapters[0].deltas(), tasks=["mpqa"], joint=False)
    assert set(ft.accuracy) == {"mpqa"} and ft.n == {"mpqa": 12}

    # KnOTS-TA equals TA (a linear merge commutes with the shared basis), seen through the whole model.
    factors = merge.adapter_factors(adapters)
    ta = merge.merge_modules(factors, method="ta", config=merge.MergeConfig(scale=0.5)).deltas
    kta = merge.merge_modules(factors, method="knots-ta", config=merge.MergeConfig(scale=0.5)).deltas
    torch.testing.assert_close(ev.embed(ta)["trec"], ev.embed(kta)["trec"], rtol=1e-4, atol=1e-5)
    kt = merge.merge_modules(factors, method="knots-ties", config=merge.MergeConfig(scale=0.6, topk=20)).deltas
    res = ev.evaluate(kt)
    assert set(res.accuracy) == {"mpqa", "trec"} and 0 <= res.avg_normalized({"mpqa": 1.0, "trec": 1.0}) <= 1

