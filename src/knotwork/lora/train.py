"""Train one LoRA adapter on a text task against a frozen label-phrase head (CLIP-style zero-shot classifier).

Training runs by epochs (with a cap on steps), evaluates on the validation split, stops early when validation
accuracy stops improving and returns the *best* adapter. The result says whether that adapter beat the majority
class and a linear probe on validation. Several ``torchrun`` processes train one adapter data-parallel
(``knotwork._distributed``): the same result as one process with the same global batch.
"""

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

from knotwork import _distributed as D
from knotwork._errors import MergeError
from knotwork._progress import as_callback
from knotwork._schedule import warmup_linear_decay
from knotwork.lora.baselines import PROBE_L2, linear_probe_accuracy, majority_accuracy
from knotwork.lora.evaluate import accuracy
from knotwork.lora.model import (
    LoraSpec,
    embed_texts,
    encode_batch,
    inject_lora,
    load_lora_state,
    lora_modules,
    lora_state_dict,
    tokenize_texts,
)
from knotwork.lora.tasks import TextSplit, TextTask

logger = logging.getLogger(__name__)

VALIDATION = ("val", "none")
BASELINES = ("probe", "majority", "none")
#: Seed of the permutation that holds out validation examples of a task without a val split: fixed, so every
#: training seed is selected and judged on the same examples.
HOLDOUT_SEED = 0


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one adapter's training run.

    The defaults learn sentence and sentence-pair classification with MiniLM on a CPU: on SST-2, TREC and SICK
    they beat a linear probe on the frozen encoder (benchmarks/lora_train.py). The paper fine-tunes ViT LoRAs
    with r = alpha = 16; it does not transfer epochs or learning rates to a small text encoder, so those are ours.
    """

    lora: LoraSpec = field(default_factory=LoraSpec)
    epochs: int | None = field(default=3, metadata={"help": "passes over the training split (None: max_steps only)"})
    max_steps: int | None = field(default=None, metadata={"help": "cap on optimizer steps (None: no cap)"})
    batch_size: int = field(default=16, metadata={"help": "examples per step (the global batch with torchrun)"})
    lr: float = field(default=1e-3, metadata={"help": "peak AdamW learning rate of the LoRA weights"})
    weight_decay: float = 0.0
    warmup: float = field(default=0.06, metadata={"help": "fraction of the planned steps warmed up linearly"})
    max_length: int = field(default=64, metadata={"help": "tokens per input (a pair: both parts) after truncation"})
    logit_scale: float = field(default=20.0, metadata={"help": "inverse temperature on cosine similarities"})
    patience: int | None = field(default=1, metadata={
        "help": "stop after this many evaluations without a better val accuracy (None: never stop early)"})
    eval_every: int | None = field(default=None, metadata={"help": "evaluate every N steps (None: every epoch)"})
    validation: str = field(default="val", metadata={
        "help": "'val': evaluate on the task's val split (or a held-out share of train); 'none': no evaluation"})
    holdout: float = field(default=0.1, metadata={"help": "share of train held out when the task has no val split"})
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_length"):
            _check_int(self, name)
        for name in ("epochs", "max_steps", "patience", "eval_every"):
            if getattr(self, name) is not None:
                _check_int(self, name)
        if self.epochs is None and self.max_steps is None:
            raise MergeError("TrainConfig needs 'epochs' or 'max_steps' (or both); both are None.")
        for name in ("lr", "logit_scale"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
                raise MergeError(f"The '{name}' parameter of TrainConfig must be a finite number > 0. "
                                 f"Got {v!r} instead.")
        if not (isinstance(self.weight_decay, int | float) and math.isfinite(self.weight_decay)
                and self.weight_decay >= 0):
            raise MergeError(f"The 'weight_decay' parameter of TrainConfig must be a finite number >= 0. "
                             f"Got {self.weight_decay!r} instead.")
        for name in ("warmup", "holdout"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and 0 <= v < 1):
                raise MergeError(f"The '{name}' parameter of TrainConfig must be in [0, 1). Got {v!r} instead.")
        if self.validation not in VALIDATION:
            raise MergeError(f"The 'validation' parameter of TrainConfig must be one of {VALIDATION}. "
                             f"Got {self.validation!r} instead.")

    def planned_steps(self, n_train: int) -> int:
        """Optimizer steps of a run that does not stop early: epochs x (n_train // batch_size), capped."""
        per_epoch = max(1, n_train // self.batch_size)
        total = self.epochs * per_epoch if self.epochs is not None else self.max_steps
        return min(total, self.max_steps) if self.max_steps is not None else total

    def to_dict(self) -> dict:
        d = asdict(self)
        d["lora"]["target_modules"] = list(self.lora.target_modules)
        return d


def _check_int(cfg: TrainConfig, name: str) -> None:
    v = getattr(cfg, name)
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise MergeError(f"The '{name}' parameter of TrainConfig must be a positive int. Got {v!r} instead.")


@dataclass
class TrainState:
    """Everything needed to resume a run: steps done, LoRA weights, optimizer and scheduler state, losses, and the
    validation record (history, best weights so far, evaluations since the best, baselines)."""

    step: int
    lora: dict[str, Tensor]
    optimizer: dict
    scheduler: dict
    losses: list[float]
    history: list[dict] = field(default_factory=list)
    best_lora: dict[str, Tensor] | None = None
    best_step: int | None = None
    bad_evals: int = 0
    baselines: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainResult:
    """One adapter's training run and its verdict on validation.

    Attributes
    ----------
    lora : dict
        The returned adapter (``<module>.lora_A.weight`` ...): the best by val accuracy, or the last one when
        ``validation="none"``.
    val_accuracy : float or None
        Val accuracy of the returned adapter.
    baselines : dict
        Val accuracies of ``zero_shot`` (the base model with the frozen head), ``majority`` (the most frequent
        training label) and ``probe`` (logistic regression on frozen embeddings), as far as computed.
    learned, beats_probe : bool or None
        Whether ``val_accuracy`` is strictly above the majority class / the probe (None: not computed).
    history : list of dict
        One entry per evaluation: ``step``, ``epoch``, ``val_accuracy``, ``train_loss`` (mean since the last one);
        step 0 is the base model (zero-shot).
    """

    task: str
    lora: dict[str, Tensor]
    steps: int
    steps_per_epoch: int
    planned_steps: int
    best_step: int | None
    val_accuracy: float | None
    val_source: str | None
    n_val: int
    baselines: dict[str, float]
    history: list[dict]
    stopped_early: bool
    seconds: float
    losses: list[float]
    world_size: int = 1

    @property
    def epochs(self) -> float:
        """Epochs run (steps / steps per epoch)."""
        return self.steps / self.steps_per_epoch

    @property
    def best_epoch(self) -> float | None:
        return None if self.best_step is None else self.best_step / self.steps_per_epoch

    @property
    def learned(self) -> bool | None:
        return _beats(self.val_accuracy, self.baselines.get("majority"))

    @property
    def beats_probe(self) -> bool | None:
        return _beats(self.val_accuracy, self.baselines.get("probe"))

    @property
    def warnings(self) -> list[str]:
        """One line per baseline the adapter did not beat, naming the task and both accuracies."""
        out = []
        if self.learned is False:
            out.append(f"{self.task}: adapter did not learn: val accuracy {_pct(self.val_accuracy)} <= majority "
                       f"{_pct(self.baselines['majority'])}")
        if self.beats_probe is False:
            out.append(f"{self.task}: adapter does not beat the linear probe: val accuracy "
                       f"{_pct(self.val_accuracy)} <= probe {_pct(self.baselines['probe'])}")
        return out

    def to_dict(self) -> dict:
        """Everything but the weights, JSON-ready."""
        return {"task": self.task, "steps": self.steps, "steps_per_epoch": self.steps_per_epoch,
                "planned_steps": self.planned_steps, "epochs": round(self.epochs, 4),
                "best_step": self.best_step,
                "best_epoch": None if self.best_epoch is None else round(self.best_epoch, 4),
                "val_accuracy": self.val_accuracy, "val_source": self.val_source, "n_val": self.n_val,
                "baselines": dict(self.baselines), "learned": self.learned, "beats_probe": self.beats_probe,
                "warnings": self.warnings, "stopped_early": self.stopped_early, "seconds": round(self.seconds, 3),
                "world_size": self.world_size, "history": list(self.history), "losses": list(self.losses)}


def _beats(acc: float | None, baseline: float | None) -> bool | None:
    return None if acc is None or baseline is None else acc > baseline


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def label_embeddings(model: nn.Module, tokenizer, phrases, *, max_length: int = 64) -> Tensor:
    """The frozen head: unit embeddings of the label phrases, shape (n_labels, H). Use the *base* model."""
    return embed_texts(model, tokenizer, list(phrases), max_length=max_length)


def epoch_batches(lengths: np.ndarray, batch_size: int, seed: int, epoch: int, *, pool: int = 32) -> list[np.ndarray]:
    """The batches of one epoch, a function of ``(seed, epoch)`` only (a resumed run sees the same batches).

    A random permutation is cut into pools of ``pool`` batches; each pool is sorted by text length and cut into
    batches, and the batch order is shuffled. Batches then hold texts of similar length, so they carry little
    padding (a MiniLM step on CPU costs about its padded length). The last ``n % batch_size`` examples of the
    permutation are left out of this epoch; every epoch has ``n // batch_size`` batches.
    """
    rng = np.random.default_rng([seed, epoch])
    perm = rng.permutation(len(lengths))
    usable = len(perm) - len(perm) % batch_size
    perm = perm[:usable]
    batches = []
    for start in range(0, usable, batch_size * pool):
        chunk = perm[start:start + batch_size * pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def validation_split(task: TextTask, config: TrainConfig) -> tuple[TextSplit, TextSplit | None, str | None]:
    """``(train, val, where val comes from)``: the task's val split, or a fixed held-out share of train.

    A task without a val split gives up ``holdout`` of its training examples (at least one), drawn by a fixed
    permutation (`HOLDOUT_SEED`), so reruns and other seeds validate on the same examples. With
    ``validation="none"`` there is no val split.
    """
    if "train" not in task.splits:
        raise MergeError(f"Task '{task.name}' has no 'train' split to fine-tune on.")
    train = task.splits["train"]
    if config.validation == "none":
        return train, None, None
    if "val" in task.splits:
        return train, task.splits["val"], "val"
    n = len(train)
    k = max(1, round(config.holdout * n))
    if n - k < 1:
        raise MergeError(f"Task '{task.name}' has no 'val' split and too few training examples ({n}) to hold "
                         f"{k} out for validation.")
    perm = np.random.default_rng(HOLDOUT_SEED).permutation(n)
    held, kept = np.sort(perm[:k]), np.sort(perm[k:])

    def take(idx: np.ndarray) -> TextSplit:
        return TextSplit(tuple(train.texts[i] for i in idx), tuple(train.labels[i] for i in idx))

    return take(kept), take(held), f"held out of train ({k} of {n}, fixed)"


def _gather_embeddings(model: nn.Module, tokenizer, texts, config: TrainConfig, ctx: D.DistContext) -> Tensor:
    """Unit embeddings of all `texts` on every process: each embeds its share, a sum collects them (exactly:
    the other processes add zeros), so every process holds the same bits and takes the same decisions."""
    idx = list(D.shard(range(len(texts)), ctx))
    out = torch.zeros(len(texts), model.config.hidden_size)
    if idx:
        out[idx] = embed_texts(model, tokenizer, [texts[i] for i in idx], max_length=config.max_length)
    return D.all_reduce_sum(out, ctx).cpu()


def _set_training_mode(model: nn.Module) -> None:
    # The base encoder's own dropout stays off: its weights are frozen, LoRA dropout is the regulariser, and a
    # data-parallel run then equals a one-process run exactly when LoRA dropout is 0.
    model.eval()
    for m in lora_modules(model).values():
        m.lora_dropout.train()


def _baselines(model, tokenizer, task: TextTask, train: TextSplit, val: TextSplit, head: Tensor,
               config: TrainConfig, baseline: str, ctx: D.DistContext) -> dict[str, float]:
    val_emb = _gather_embeddings(model, tokenizer, val.texts, config, ctx)
    out = {"zero_shot": accuracy(val_emb @ head.T.cpu(), torch.tensor(val.labels))}
    if baseline in ("probe", "majority"):
        out["majority"] = majority_accuracy(train.labels, val.labels)
    if baseline == "probe":
        train_emb = _gather_embeddings(model, tokenizer, train.texts, config, ctx)
        probe = linear_probe_accuracy(train_emb, train.labels, val_emb, val.labels, len(task.label_names),
                                      l2=PROBE_L2) if ctx.is_main else None
        out["probe"] = D.broadcast_object(probe, ctx)
    return out


def train_adapter(
    model: nn.Module,
    tokenizer,
    task: TextTask,
    config: TrainConfig | None = None,
    *,
    device: str = "cpu",
    dist: D.DistContext | None = None,
    baseline: str = "probe",
    resume: TrainState | None = None,
    on_checkpoint: Callable[[TrainState], None] | None = None,
    checkpoint_every: int = 50,
    progress: bool | Callable[[int], object] = False,
) -> TrainResult:
    """Fine-tune LoRA weights of `model` (a plain base encoder, modified in place) on ``task.splits["train"]``.

    The classifier is frozen: logits are ``logit_scale * cos(embed(x), embed_base(phrase_c))``, as CLIP's
    zero-shot head; only LoRA weights receive gradients, so the adapter is the whole task update. A text
    ``"a [SEP] b"`` is a sentence pair (`knotwork.lora.model.tokenize_texts`).

    Training runs ``config.epochs`` epochs (capped at ``config.max_steps``), evaluating val accuracy at step 0
    (zero-shot) and after every epoch (or every ``eval_every`` steps); it stops when ``patience`` evaluations in
    a row bring no better accuracy, and returns the best adapter. A task without a val split validates on a
    fixed held-out share of train (`validation_split`).

    Parameters
    ----------
    model : transformers model
        Base encoder without LoRA; `inject_lora` is applied to it here, and it is moved to the device.
    tokenizer : transformers tokenizer
    task : TextTask
        Needs a ``train`` split; a ``val`` split is used when present.
    config : TrainConfig, optional
        The defaults when omitted.
    device : str
        ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``: where the model, batches and head live.
    dist : DistContext, optional
        The data-parallel context; by default ``knotwork._distributed.context(device)``, which joins the
        ``torchrun`` process group when there is one (on CUDA each process then uses ``cuda:<local rank>``).
    baseline : {"probe", "majority", "none"}
        Which baselines to measure on val: ``"probe"`` (majority and a linear probe, which embeds the training
        split once with the base model), ``"majority"``, or ``"none"``. The zero-shot accuracy is always measured.
    resume : TrainState, optional
        Continue from this state (same config and data); batches and dropout masks match an uninterrupted run.
    on_checkpoint : callable, optional
        Called (on the main process only) with the current `TrainState` every `checkpoint_every` steps and at
        the end, e.g. to save it.
    progress : bool or callable
        True shows a progress bar on stderr (``knotwork._progress``); a callable receives the number of steps
        just done.
    """
    config = config or TrainConfig()
    if baseline not in BASELINES:
        raise MergeError(f"baseline must be one of {BASELINES}; got {baseline!r}.")
    ctx = dist if dist is not None else D.context(device)
    device = ctx.device
    train, val, val_source = validation_split(task, config)
    if len(train) < config.batch_size:
        raise MergeError(f"Task '{task.name}' has {len(train)} training examples, fewer than batch_size "
                         f"{config.batch_size}.")
    per_epoch = len(train) // config.batch_size
    total = config.planned_steps(len(train))
    if resume is not None and resume.step > total:
        raise MergeError(f"Resume state is at step {resume.step}, past the planned {total} steps.")

    model.to(device)
    head = label_embeddings(model, tokenizer, task.phrases, max_length=config.max_length).to(device)  # (C, H)
    val_labels = torch.tensor(val.labels) if val is not None else None

    def evaluate() -> float:
        emb = _gather_embeddings(model, tokenizer, val.texts, config, ctx)
        return accuracy(emb @ head.T.cpu(), val_labels)

    if resume is not None:
        baselines = dict(resume.baselines)
    elif val is not None:
        baselines = _baselines(model, tokenizer, task, train, val, head, config, baseline, ctx)
    else:
        baselines = {}
    inject_lora(model, config.lora, seed=config.seed)
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    sched = warmup_linear_decay(opt, total_steps=total, warmup_steps=round(config.warmup * total))
    state = TrainState(0, {}, {}, {}, [])
    if resume is not None:
        load_lora_state(model, resume.lora)
        opt.load_state_dict(resume.optimizer)
        sched.load_state_dict(resume.scheduler)
        state = copy.deepcopy(resume)
    elif val is not None:
        state.history.append({"step": 0, "epoch": 0.0, "val_accuracy": baselines["zero_shot"], "train_loss": None})
    state.baselines = baselines

    def snapshot() -> TrainState:
        # Deep copies: the optimizer's state tensors are updated in place by later steps.
        return TrainState(state.step, lora_state_dict(model), copy.deepcopy(opt.state_dict()),
                          copy.deepcopy(sched.state_dict()), list(state.losses), copy.deepcopy(state.history),
                          copy.deepcopy(state.best_lora), state.best_step, state.bad_evals, dict(baselines))

    def eval_due(step: int) -> bool:
        every = config.eval_every or per_epoch
        return step % every == 0 or step == total

    def stop_now() -> bool:
        return config.patience is not None and state.bad_evals >= config.patience

    show = progress if ctx.is_main else False
    update, close = as_callback(show, total=total, desc=f"train {task.name}", unit="step")
    if state.step and show is True:  # a resumed run's bar starts where the interrupted one stopped
        update(state.step)
    labels_all = torch.tensor(train.labels)
    lengths = np.array([len(t) for t in train.texts])
    rng_devices = [torch.device(device).index or 0] if str(device).startswith("cuda") else []
    batches: tuple[int, list[np.ndarray]] | None = None
    t0 = time.perf_counter()
    _set_training_mode(model)
    try:
        while state.step < total and not stop_now():
            epoch, pos = divmod(state.step, per_epoch)
            if batches is None or batches[0] != epoch:
                batches = (epoch, epoch_batches(lengths, config.batch_size, config.seed, epoch))
            idx = batches[1][pos]
            mine = D.shard(idx, ctx)
            # Dropout draws from the global RNG; fork it so the caller's state is untouched, and seed per step
            # so a resumed run reproduces the same masks.
            with torch.random.fork_rng(devices=rng_devices):
                torch.manual_seed(config.seed * 1_000_003 + state.step)
                opt.zero_grad(set_to_none=True)
                loss = torch.zeros((), device=device)
                if len(mine):
                    batch = tokenize_texts(tokenizer, [train.texts[i] for i in mine], max_length=config.max_length,
                                           device=device)
                    logits = config.logit_scale * encode_batch(model, batch) @ head.T  # (b, C)
                    loss = nn.functional.cross_entropy(logits, labels_all[mine].to(device), reduction="sum")
                    loss = ctx.global_mean(loss, len(idx))
                    loss.backward()
            D.all_reduce_gradients(params, ctx)
            opt.step()
            sched.step()
            state.step += 1
            state.losses.append(float(D.all_reduce_sum(loss.detach().cpu(), ctx)))
            update(1)
            if val is not None and eval_due(state.step):
                _record_evaluation(state, evaluate(), per_epoch, lambda: lora_state_dict(model))
                _set_training_mode(model)
            if on_checkpoint is not None and ctx.is_main and (
                    state.step % checkpoint_every == 0 or state.step == total or stop_now()):
                on_checkpoint(snapshot())
    finally:
        close()
        model.eval()
    seconds = time.perf_counter() - t0
    if val is not None and state.best_lora is not None:
        lora, best_acc = state.best_lora, next(h["val_accuracy"] for h in state.history
                                               if h["step"] == state.best_step)
    else:
        lora, best_acc = lora_state_dict(model), None
    logger.info("task %s: %d steps in %.1fs, best val accuracy %s at step %s", task.name, state.step, seconds,
                best_acc, state.best_step)
    return TrainResult(task.name, lora, state.step, per_epoch, total, state.best_step, best_acc, val_source,
                       0 if val is None else len(val), dict(baselines), state.history, stop_now(), seconds,
                       state.losses, ctx.world_size)


def _record_evaluation(state: TrainState, acc: float, per_epoch: int, weights: Callable[[], dict]) -> None:
    """Append one evaluation to the history; keep the weights when they are strictly the best so far."""
    since = state.history[-1]["step"] if state.history else 0
    recent = state.losses[since:]
    state.history.append({"step": state.step, "epoch": round(state.step / per_epoch, 4), "val_accuracy": acc,
                          "train_loss": float(np.mean(recent)) if recent else None})
    best = None if state.best_step is None else next(h["val_accuracy"] for h in state.history
                                                     if h["step"] == state.best_step)
    if best is None or acc > best:
        state.best_lora, state.best_step, state.bad_evals = weights(), state.step, 0
    else:
        state.bad_evals += 1
