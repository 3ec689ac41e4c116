"""Train one LoRA adapter on a text task against a frozen label-phrase head (CLIP-style zero-shot classifier)."""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from knotwork._errors import MergeError
from knotwork._progress import as_callback
from knotwork._schedule import warmup_linear_decay
from knotwork.lora.model import (
    LoraSpec,
    embed_texts,
    encode_batch,
    inject_lora,
    load_lora_state,
    lora_state_dict,
)
from knotwork.lora.tasks import TextTask

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one adapter's training run.

    The paper fine-tunes ViT LoRAs with r = alpha = 16 and a CLIP text head; it does not transfer step counts
    or learning rates to a small text encoder, so the remaining values are ours, sized for a 2-core CPU.
    """

    lora: LoraSpec = field(default_factory=LoraSpec)
    steps: int = field(default=400, metadata={"help": "optimizer steps (fixed budget, not epochs)"})
    batch_size: int = field(default=32, metadata={"help": "examples per step"})
    lr: float = field(default=1e-3, metadata={"help": "peak AdamW learning rate of the LoRA weights"})
    weight_decay: float = 0.0
    warmup_steps: int = field(default=20, metadata={"help": "linear warm-up, then linear decay to 0"})
    max_length: int = field(default=64, metadata={"help": "tokens per input after truncation"})
    logit_scale: float = field(default=20.0, metadata={"help": "inverse temperature on cosine similarities"})
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "max_length"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise MergeError(f"The '{name}' parameter of TrainConfig must be a positive int. Got {v!r} instead.")
        for name in ("lr", "logit_scale"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
                raise MergeError(f"The '{name}' parameter of TrainConfig must be a finite number > 0. "
                                 f"Got {v!r} instead.")
        if not (isinstance(self.weight_decay, int | float) and math.isfinite(self.weight_decay)
                and self.weight_decay >= 0):
            raise MergeError(f"The 'weight_decay' parameter of TrainConfig must be a finite number >= 0. "
                             f"Got {self.weight_decay!r} instead.")
        if not 0 <= self.warmup_steps < self.steps:
            raise MergeError(f"The 'warmup_steps' parameter of TrainConfig must be in [0, steps). "
                             f"Got {self.warmup_steps} instead.")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["lora"]["target_modules"] = list(self.lora.target_modules)
        return d


@dataclass
class TrainState:
    """Everything needed to resume: step done, LoRA weights, optimizer and scheduler state, loss history."""

    step: int
    lora: dict[str, Tensor]
    optimizer: dict
    scheduler: dict
    losses: list[float]


def label_embeddings(model: nn.Module, tokenizer, phrases, *, max_length: int = 64) -> Tensor:
    """The frozen head: unit embeddings of the label phrases, shape (n_labels, H). Use the *base* model."""
    return embed_texts(model, tokenizer, list(phrases), max_length=max_length)


def _batch_indices(n: int, batch_size: int, step: int, seed: int) -> np.ndarray:
    # Epoch e uses permutation e drawn from (seed, e); a step's batch depends only on (seed, step), so a resumed
    # run sees exactly the batches an uninterrupted run would.
    per_epoch = max(1, n // batch_size)
    epoch, pos = divmod(step, per_epoch)
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    return perm[pos * batch_size:(pos + 1) * batch_size]


def train_adapter(
    model: nn.Module,
    tokenizer,
    task: TextTask,
    config: TrainConfig,
    *,
    resume: TrainState | None = None,
    on_checkpoint: Callable[[TrainState], None] | None = None,
    checkpoint_every: int = 50,
    progress: bool | Callable[[int], object] = False,
) -> TrainState:
    """Fine-tune LoRA weights of `model` (a plain base encoder, modified in place) on ``task.splits["train"]``.

    The classifier is frozen: logits are ``logit_scale * cos(embed(x), embed_base(phrase_c))``, as CLIP's
    zero-shot head; only LoRA weights receive gradients, so the adapter is the whole task update.

    Parameters
    ----------
    model : transformers model
        Base encoder without LoRA; `inject_lora` is applied to it here.
    tokenizer : transformers tokenizer
    task : TextTask
        Needs a ``train`` split.
    config : TrainConfig
    resume : TrainState, optional
        Continue from this state (same config); batches and dropout masks match an uninterrupted run.
    on_checkpoint : callable, optional
        Called with the current `TrainState` every `checkpoint_every` steps and at the end (e.g. to save it).
    progress : bool or callable
        True shows a progress bar on stderr (``knotwork._progress``); a callable receives the number of steps
        just done.

    Returns
    -------
    TrainState
        The final state; ``state.lora`` holds the adapter (``<module>.lora_A.weight`` ...).
    """
    if "train" not in task.splits:
        raise MergeError(f"Task '{task.name}' has no 'train' split to fine-tune on.")
    train = task.splits["train"]
    if len(train) < config.batch_size:
        raise MergeError(f"Task '{task.name}' has {len(train)} training examples, fewer than batch_size "
                         f"{config.batch_size}.")
    if resume is not None and resume.step > config.steps:
        raise MergeError(f"Resume state is at step {resume.step}, past the configured {config.steps} steps.")

    head = label_embeddings(model, tokenizer, task.phrases, max_length=config.max_length)  # (C, H) frozen
    inject_lora(model, config.lora, seed=config.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    sched = warmup_linear_decay(opt, total_steps=config.steps, warmup_steps=config.warmup_steps)
    losses: list[float] = []
    step = 0
    if resume is not None:
        load_lora_state(model, resume.lora)
        opt.load_state_dict(resume.optimizer)
        sched.load_state_dict(resume.scheduler)
        losses, step = list(resume.losses), resume.step

    def snapshot() -> TrainState:
        # Deep copies: the optimizer's state tensors are updated in place by later steps.
        return TrainState(step, lora_state_dict(model), copy.deepcopy(opt.state_dict()),
                          copy.deepcopy(sched.state_dict()), list(losses))

    update, close = as_callback(progress, total=config.steps, desc=f"train {task.name}", unit="step")
    if step and progress is True:  # a resumed run's bar starts where the interrupted one stopped
        update(step)
    labels_all = torch.tensor(train.labels)
    model.train()
    t0 = time.perf_counter()
    try:
        while step < config.steps:
            idx = _batch_indices(len(train), config.batch_size, step, config.seed)
            batch = tokenizer([train.texts[i] for i in idx], padding=True, truncation=True,
                              max_length=config.max_length, return_tensors="pt")
            # Dropout draws from the global RNG; fork it so the caller's state is untouched, and seed per step
            # so a resumed run reproduces the same masks.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(config.seed * 1_000_003 + step)
                logits = config.logit_scale * encode_batch(model, batch) @ head.T  # (B, C)
                loss = nn.functional.cross_entropy(logits, labels_all[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
            opt.step()
            sched.step()
            step += 1
            losses.append(float(loss.detach()))
            update(1)
            if on_checkpoint is not None and (step % checkpoint_every == 0 or step == config.steps):
                on_checkpoint(snapshot())
    finally:
        close()
        model.eval()
    logger.info("task %s: %d steps in %.1fs, final loss %.3f", task.name, step, time.perf_counter() - t0,
                float(np.mean(losses[-20:])) if losses else float("nan"))
    return snapshot()

