"""Cached, resumable training of one adapter per task folder (the I/O around `train_adapter`)."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from knotwork.lora.io import (
    WEIGHTS_NAME,
    atomic_write_text,
    load_checkpoint,
    save_checkpoint,
    save_peft_adapter,
)
from knotwork.lora.tasks import TextTask
from knotwork.lora.train import TrainConfig, train_adapter

logger = logging.getLogger(__name__)


def task_fingerprint(task: TextTask) -> str:
    """SHA-256 over the training split and label names: a cache key that changes when the data does."""
    h = hashlib.sha256()
    h.update(json.dumps(list(task.label_names)).encode())
    tr = task.splits["train"]
    for t, y in zip(tr.texts, tr.labels, strict=True):
        h.update(f"{y}\t{t}\n".encode())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class TrainedAdapter:
    """Where a trained adapter lives and how it was made."""

    task: str
    adapter_dir: Path
    cached: bool
    seconds: float
    final_loss: float


def train_task_cached(
    model_loader, task: TextTask, config: TrainConfig, out_dir: str | Path, *, force: bool = False,
    progress: bool = False, checkpoint_every: int = 25,
) -> TrainedAdapter:
    """Train (or reuse) the adapter of `task` under ``out_dir``.

    Layout: ``out_dir/adapter/`` (PEFT adapter), ``out_dir/train.json`` (config, data fingerprint, losses,
    time), ``out_dir/checkpoint.pt`` (resume point while training; removed when done). A finished adapter with
    the same config and data is reused; a different one is refused unless `force`. An interrupted run resumes
    from its checkpoint.

    Parameters
    ----------
    model_loader : callable
        ``() -> (model, tokenizer, name_or_path)``, a fresh base encoder (called only if training is needed).
    """
    out_dir = Path(out_dir)
    meta_path, ckpt_path, adapter_dir = out_dir / "train.json", out_dir / "checkpoint.pt", out_dir / "adapter"
    want = {"task": task.name, "config": config.to_dict(), "data": task_fingerprint(task)}
    if meta_path.is_file() and (adapter_dir / WEIGHTS_NAME).is_file():
        meta = json.loads(meta_path.read_text())
        same = {k: meta.get(k) for k in want} == want
        if same and not force:
            return TrainedAdapter(task.name, adapter_dir, True, meta.get("seconds", 0.0), meta.get("final_loss", 0.0))
        if not same and not force:
            raise FileExistsError(f"{adapter_dir} holds an adapter trained with another config or data for task "
                                  f"'{task.name}'; pass --force to retrain, or choose another output folder.")
    resume = None
    if ckpt_path.is_file() and not force:
        ck_meta = out_dir / "checkpoint.json"
        if ck_meta.is_file() and json.loads(ck_meta.read_text()) == want:
            resume = load_checkpoint(ckpt_path)
            logger.info("task %s: resuming at step %d", task.name, resume.step)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "checkpoint.json", json.dumps(want, indent=2))
    model, tokenizer, base = model_loader()
    t0 = time.perf_counter()
    state = train_adapter(model, tokenizer, task, config, resume=resume, progress=progress,
                          on_checkpoint=lambda s: save_checkpoint(s, ckpt_path), checkpoint_every=checkpoint_every)
    seconds = time.perf_counter() - t0
    save_peft_adapter(state.lora, config.lora, adapter_dir, overwrite=True)
    final = float(sum(state.losses[-20:]) / max(1, len(state.losses[-20:])))
    meta = {**want, "seconds": seconds, "resumed_from": resume.step if resume else 0, "final_loss": final,
            "losses": state.losses}
    atomic_write_text(meta_path, json.dumps(meta, indent=1))
    ckpt_path.unlink(missing_ok=True)
    (out_dir / "checkpoint.json").unlink(missing_ok=True)
    return TrainedAdapter(task.name, adapter_dir, False, seconds, final)
