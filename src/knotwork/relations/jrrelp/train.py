"""Train and evaluate a JRRELP (or baseline) RE model with early stopping on dev F1."""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

import knotwork
from knotwork._distributed import DistContext, all_reduce_gradients, all_reduce_sum, broadcast_object, shard
from knotwork._errors import JrrelpError
from knotwork._progress import as_callback
from knotwork._schedule import warmup_linear_decay
from knotwork.relations.data import RelationExample
from knotwork.relations.jrrelp.batching import Batch, iterate_batches
from knotwork.relations.jrrelp.config import TrainConfig
from knotwork.relations.jrrelp.encoders import MarkerTransformerEncoder, PALSTMEncoder
from knotwork.relations.jrrelp.features import (
    MarkerFeaturizer,
    PALSTMFeaturizer,
    Vocab,
    build_vocab,
    entity_token,
)
from knotwork.relations.jrrelp.kg import RelationKG, build_kg
from knotwork.relations.jrrelp.model import JRRELPModel, jrrelp_loss
from knotwork.relations.scorer import Scores, score

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a run produced, with what is needed to reproduce it (cf. PyKEEN's ``PipelineResult``).

    ``model`` holds the weights of the epoch with the best dev F1. ``stop_reason`` is ``"early_stopping"`` when
    ``config.patience`` epochs in a row brought no better dev F1, ``"max_epochs"`` when the run reached
    ``config.epochs`` first. ``word_vector_coverage`` is the share of the vocabulary (pad and unknown excluded)
    initialised from the ``word_vectors`` given to :func:`train` (None without them).
    """

    model: JRRELPModel
    featurizer: Any
    kg: RelationKG
    config: TrainConfig
    best_epoch: int
    dev_scores: Scores
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    stop_reason: str = "max_epochs"
    word_vector_coverage: float | None = None
    version: str = knotwork.__version__
    commit: str | None = None

    @property
    def relations(self) -> tuple[str, ...]:
        return self.kg.relations

    @property
    def seed(self) -> int:
        return self.config.seed


def _check_examples(examples: Sequence[RelationExample], relations: Sequence[str], split: str) -> None:
    known = set(relations)
    for ex in examples:
        if ex.relation not in known:
            raise JrrelpError(
                f"{split} example {ex.id}: relation {ex.relation!r} does not occur in the training data"
            )


def _node_token_table(featurizer: Any, kg: RelationKG, side: str, pad_id: int) -> torch.Tensor:
    names = kg.subjects if side == "subj" else kg.objects
    rows = [featurizer.node_tokens(side, name, kg.node_key) for name in names]
    table = torch.full((len(rows), max(len(r) for r in rows)), pad_id, dtype=torch.long)
    for i, r in enumerate(rows):
        table[i, : len(r)] = torch.tensor(r)
    return table


def build_model(
    train_examples: Sequence[RelationExample],
    config: TrainConfig,
    *,
    backbone: nn.Module | None = None,
    tokenizer: Any = None,
    word_vectors: Mapping[str, Sequence[float]] | None = None,
) -> tuple[JRRELPModel, Any, RelationKG]:
    """Build the KG (train split only), the featurizer and an untrained model for ``config``.

    ``backbone`` and ``tokenizer`` are the pretrained transformer and its Hugging Face tokenizer, required for
    ``encoder="transformer"`` (the library never loads weights itself). ``word_vectors`` (PA-LSTM only) maps
    words to vectors of size ``config.embedding_dim`` that replace the random initial rows of the vocabulary's
    words (see :func:`set_word_vectors`). Call it inside a seeded context: the parameters are initialised from
    torch's current random state.
    """
    kg = build_kg(train_examples, node_key=config.node_key, min_count=config.min_node_count)
    if config.encoder == "palstm":
        # Every KG node gets its own row of the word table: this row is what the encoder and ConvE share.
        node_words = [
            entity_token(side, name) if config.node_key == "type" else (name.lower() if config.lowercase else name)
            for side, names in (("subj", kg.subjects[1:]), ("obj", kg.objects[1:]))
            for name in names
        ]
        vocab = build_vocab(
            train_examples,
            min_count=config.vocab_min_count,
            lowercase=config.lowercase,
            entity_masking=config.entity_masking,
            extra_words=node_words,
        )
        featurizer, encoder, pad_id = palstm_parts(config, vocab)
        if word_vectors is not None:
            set_word_vectors(encoder, vocab, word_vectors)
    else:
        if word_vectors is not None:
            raise JrrelpError("word_vectors initialise the PA-LSTM's word table; the transformer has its own")
        if backbone is None or tokenizer is None:
            raise JrrelpError("encoder='transformer' needs a pretrained backbone and its tokenizer")
        featurizer, encoder, pad_id = transformer_parts(config, backbone, tokenizer)
    return assemble_model(config, kg, featurizer, encoder, pad_id), featurizer, kg


def palstm_parts(config: TrainConfig, vocab: Vocab) -> tuple[PALSTMFeaturizer, PALSTMEncoder, int]:
    """Featurizer, untrained encoder and pad id of a PA-LSTM over ``vocab``."""
    featurizer = PALSTMFeaturizer(vocab, lowercase=config.lowercase, entity_masking=config.entity_masking)
    encoder = PALSTMEncoder(
        len(vocab),
        embedding_dim=config.embedding_dim,
        position_dim=config.position_dim,
        hidden_dim=config.hidden_dim,
        attention_dim=config.attention_dim,
        num_layers=config.num_layers,
        dropout=config.dropout,
        word_dropout=config.word_dropout,
    )
    return featurizer, encoder, 0


def set_word_vectors(encoder: PALSTMEncoder, vocab: Vocab, vectors: Mapping[str, Sequence[float]]) -> int:
    """Copy pretrained vectors into the rows of the vocabulary words they cover; returns how many rows.

    Rows of words without a vector (and the entity-type tokens, unless given) keep their random initialisation,
    as the PA-LSTM code does with GloVe. Vectors are copied as given: scale them to the random rows' range
    (uniform in [-1, 1]) beforehand if they should not stand out.

    Raises
    ------
    knotwork._errors.JrrelpError
        When a vector's size differs from the embedding size (naming the word).
    """
    table = encoder.word_embeddings.weight
    count = 0
    with torch.no_grad():
        for i, word in enumerate(vocab.words[2:], start=2):
            vec = vectors.get(word)
            if vec is None:
                continue
            vec = torch.as_tensor(np.asarray(vec, dtype=np.float32))
            if vec.shape != (table.shape[1],):
                raise JrrelpError(
                    f"the vector of {word!r} has shape {tuple(vec.shape)}; the embedding size is {table.shape[1]}"
                )
            table[i] = vec
            count += 1
    return count


def transformer_parts(
    config: TrainConfig, backbone: nn.Module, tokenizer: Any
) -> tuple[MarkerFeaturizer, MarkerTransformerEncoder, int]:
    """Featurizer (entity markers ``[unused0..3]``), encoder and pad id around a pretrained transformer."""
    if backbone is None or tokenizer is None:
        raise JrrelpError("encoder='transformer' needs a pretrained backbone and its tokenizer")
    markers = tuple(tokenizer.convert_tokens_to_ids([f"[unused{i}]" for i in range(4)]))
    if tokenizer.unk_token_id in markers:
        raise JrrelpError("the tokenizer has no [unused0]..[unused3] tokens to use as entity markers")
    featurizer = MarkerFeaturizer(
        tokenize=lambda word: tokenizer.encode(word, add_special_tokens=False),
        cls_id=tokenizer.cls_token_id,
        sep_id=tokenizer.sep_token_id,
        marker_ids=markers,  # type: ignore[arg-type]
        max_length=config.max_length,
        pad_id=tokenizer.pad_token_id,
    )
    return featurizer, MarkerTransformerEncoder(backbone), tokenizer.pad_token_id


def assemble_model(config: TrainConfig, kg: RelationKG, featurizer: Any, encoder: nn.Module, pad_id: int) -> JRRELPModel:
    """Wrap an encoder into a :class:`JRRELPModel` whose node tables come from ``kg`` and ``featurizer``."""
    for name, dim in (("entity", encoder.embedding_dim), ("relation", encoder.output_dim)):
        if dim % config.conve_width:
            raise JrrelpError(f"the {name} size {dim} is not a multiple of conve_width={config.conve_width}")
    model = JRRELPModel(
        encoder,
        len(kg.relations),
        _node_token_table(featurizer, kg, "subj", pad_id),
        _node_token_table(featurizer, kg, "obj", pad_id),
        classifier=config.classifier,
        conve_width=config.conve_width,
        conve_channels=config.conve_channels,
        input_dropout=config.conve_input_dropout,
        feature_dropout=config.conve_feature_dropout,
        hidden_dropout=config.conve_hidden_dropout,
        conve_batchnorm=config.conve_batchnorm,
    )
    return model


def _batch_loss(model: JRRELPModel, batch: Batch, config: TrainConfig, device: torch.device,
                global_count: int | None) -> Any:
    """The loss terms of one batch (one process's share of it, divided by ``global_count``, when data-parallel)."""
    nodes = None if batch.subject_nodes is None else batch.subject_nodes.to(device)
    targets = None if batch.targets is None else batch.targets.to(device)
    gold = batch.labels.to(device)
    out = model(_to(batch.inputs, device), nodes, gold, kglp=config.lambda_kglp > 0, coupling=config.lambda_coupling > 0)
    return jrrelp_loss(out, gold, targets, lambda_kglp=config.lambda_kglp, lambda_coupling=config.lambda_coupling,
                       global_count=global_count)


def _optimizer(model: JRRELPModel, config: TrainConfig) -> torch.optim.Optimizer:
    backbone = [p for n, p in model.named_parameters() if n.startswith("encoder.backbone.")]
    rest = [p for n, p in model.named_parameters() if not n.startswith("encoder.backbone.")]
    groups = [{"params": rest, "lr": config.head_lr or config.lr}]
    if backbone:
        groups.append({"params": backbone, "lr": config.lr})
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)


def _to(inputs: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in inputs.items()}


def predict(
    model: JRRELPModel, featurizer: Any, examples: Sequence[RelationExample], relations: Sequence[str], *,
    batch_size: int = 100,
) -> list[str]:
    """Predicted relation labels, in the order of ``examples``; uses only the RE model (no KG inputs).

    Batches are computed on the model's device.
    """
    if not examples:
        return []
    feats = [featurizer(ex) for ex in examples]
    out = [""] * len(examples)
    was_training = model.training
    device = next(model.parameters()).device
    model.eval()
    with torch.no_grad():
        for batch in iterate_batches(feats, [0] * len(feats), featurizer.collate, batch_size=batch_size):
            pred = model(_to(batch.inputs, device)).re_logits.argmax(1).tolist()
            for i, p in zip(batch.indices, pred, strict=True):
                out[int(i)] = relations[p]
    model.train(was_training)
    return out


def evaluate(result: TrainResult, examples: Sequence[RelationExample]) -> tuple[Scores, list[str]]:
    """Official-scorer micro P/R/F1 of a trained run on ``examples``, and its predictions."""
    _check_examples(examples, result.relations, "evaluation")
    pred = predict(result.model, result.featurizer, examples, result.relations)
    return score([ex.relation for ex in examples], pred, negative_label=result.config.negative_label), pred


def _shard_batch(batch: Batch, ctx: DistContext) -> Batch:
    """This process's rows of a collated global batch (the padding stays the global batch's)."""
    if not ctx.distributed:
        return batch
    return Batch(
        shard(batch.indices, ctx),
        {k: shard(v, ctx) for k, v in batch.inputs.items()},
        shard(batch.labels, ctx),
        None if batch.subject_nodes is None else shard(batch.subject_nodes, ctx),
        None if batch.targets is None else shard(batch.targets, ctx),
    )


def train(
    train_examples: Sequence[RelationExample],
    dev_examples: Sequence[RelationExample],
    config: TrainConfig,
    *,
    backbone: nn.Module | None = None,
    tokenizer: Any = None,
    device: str | torch.device = "cpu",
    progress: bool | Callable[[int], Any] = False,
    callback: Callable[[dict[str, float]], None] | None = None,
    dist: DistContext | None = None,
    word_vectors: Mapping[str, Sequence[float]] | None = None,
    checkpoint: Callable[[dict[str, Any]], None] | None = None,
    resume: Mapping[str, Any] | None = None,
) -> TrainResult:
    """Train with ``L_RE + λ_KGLP L_KGLP + λ_COUPLING L_COUPLING`` and keep the epoch with the best dev F1.

    The KG is built from ``train_examples`` only. Randomness (initialisation, dropout, batch order) comes from
    ``config.seed``; torch's global RNG is forked and restored, never left seeded.

    Parameters
    ----------
    train_examples, dev_examples : sequences of RelationExample
    config : TrainConfig
    backbone, tokenizer : optional
        Required for ``config.encoder == "transformer"``; see :func:`build_model`.
    device : str or torch.device, default "cpu"
        Where the model and the batches live; the returned model stays there.
    progress : bool or callable, default False
        True draws a bar over batches (:mod:`knotwork._progress`); a callable is called with 1 per batch.
    callback : callable, optional
        Called with each epoch's record (epoch, losses, dev precision/recall/F1, lr).
    dist : knotwork._distributed.DistContext, optional
        Data-parallel training over the processes of a ``torchrun`` launch (``knotwork._distributed.context``);
        default one process. Every process draws the same global batch, computes its share
        (``knotwork._distributed.shard``), divides its loss sums by the global batch size, and steps on the
        all-reduced gradient, so the processes keep equal weights. Dev F1 is computed by process 0 and broadcast,
        so early stopping and learning-rate decay decide alike everywhere. With every dropout at 0 and
        ``conve_batchnorm="running"`` the weights equal a one-process run's to float tolerance; otherwise each
        process draws its own dropout masks and BatchNorm sees only the process's share.
    word_vectors : mapping word -> vector, optional
        PA-LSTM: pretrained vectors for the initial word table (:func:`set_word_vectors`); the share of the
        vocabulary they cover is ``TrainResult.word_vector_coverage``.
    checkpoint : callable, optional
        Called after every epoch with the run's full state (:func:`training_state`: weights, optimizer, scheduler,
        random states, best epoch and its weights, history, stopping counters), made of tensors, numbers, strings,
        lists and dicts only, so ``torch.save`` + ``torch.load(weights_only=True)`` round-trip it. Its tensors are
        the live ones: save (or copy) them before returning. One process only.
    resume : mapping, optional
        A state given to ``checkpoint`` by an earlier call with the same examples, config and inputs: training
        continues after that epoch and ends as the uninterrupted run would (same weights, history and scores).
        ``TrainResult.seconds`` then adds the earlier calls' seconds.

    Returns
    -------
    TrainResult
        On every process (only process 0 should write it out).
    """
    if not train_examples or not dev_examples:
        raise JrrelpError(
            f"train and dev examples must both be non-empty; got {len(train_examples)} and {len(dev_examples)}"
        )
    relations = sorted({ex.relation for ex in train_examples})
    if config.negative_label not in relations:
        logger.warning("negative label %r never occurs in training", config.negative_label)
    _check_examples(dev_examples, relations, "dev")
    start = time.perf_counter()
    ctx = dist if dist is not None else DistContext(device=str(device))
    if ctx.distributed and (checkpoint is not None or resume is not None):
        raise JrrelpError("checkpoint and resume work with one process; a torchrun launch has its own random states")
    if resume is not None and resume.get("config") != json.dumps(config.to_dict(), sort_keys=True):
        raise JrrelpError("the resume state was saved by a run with another TrainConfig")
    device = torch.device(device)
    forked = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=forked):
        torch.manual_seed(config.seed)
        rng = np.random.default_rng(config.seed)  # the batch order: the same on every process
        model, featurizer, kg = build_model(train_examples, config, backbone=backbone, tokenizer=tokenizer,
                                            word_vectors=word_vectors)
        coverage = None
        if word_vectors is not None:
            words = featurizer.vocab.words[2:]
            coverage = sum(w in word_vectors for w in words) / max(len(words), 1)
        model.to(device)
        if ctx.distributed:  # equal initial weights above; from here on, each process its own dropout masks
            torch.manual_seed(int(np.random.SeedSequence([config.seed, ctx.rank]).generate_state(1)[0]))
        feats = [featurizer(ex) for ex in train_examples]
        subjects, labels = kg.example_queries(train_examples)
        opt = _optimizer(model, config)
        n_batches = math.ceil(len(feats) / config.batch_size)
        total_steps = n_batches * config.epochs
        scheduler = None
        if config.encoder == "transformer":
            # At least one warm-up step, as before the shared schedule: the factors are identical to the former
            # min(warm-up, decay) lambda for every step (tests/relations/jrrelp/test_train.py checks this).
            warm = max(1, int(config.warmup * total_steps))
            scheduler = warmup_linear_decay(opt, total_steps=total_steps, warmup_steps=warm)
        neg = kg.relations.index(config.negative_label) if config.negative_label in kg.relations else None
        target_options = {
            "negative_relation": neg,
            "negative_policy": config.negative_policy,
            "label_smoothing": config.label_smoothing,
        }
        update, close = as_callback(progress if ctx.is_main else False, total=total_steps, desc="train",
                                    unit="batch")
        best_f1, best_epoch, best_state, best_scores = -1.0, 0, None, Scores(1.0, 0.0, 0.0)
        history: list[dict[str, float]] = []
        prev_f1, stale, stop_reason = -1.0, 0, "max_epochs"
        first, earlier_seconds, stopped = 1, 0.0, False
        if resume is not None:
            model.load_state_dict(resume["model"])
            opt.load_state_dict(resume["optimizer"])
            if scheduler is not None:
                scheduler.load_state_dict(resume["scheduler"])
            torch.set_rng_state(resume["torch_rng"])
            if device.type == "cuda":
                torch.cuda.set_rng_state(resume["cuda_rng"], device)
            rng.bit_generator.state = json.loads(resume["numpy_rng"])
            best = resume["best"]
            best_f1, best_epoch, best_state = best["f1"], best["epoch"], best["state"]
            best_scores = Scores(*best["scores"])
            history = [dict(h) for h in resume["history"]]
            prev_f1, stale, stop_reason = resume["prev_f1"], resume["stale"], resume["stop_reason"]
            first, earlier_seconds, stopped = resume["epoch"] + 1, resume["seconds"], resume["stopped"]
        try:
            for epoch in range(first, 0 if stopped else config.epochs + 1):
                model.train()
                sums = {"loss": 0.0, "re": 0.0, "kglp": 0.0, "coupling": 0.0}
                for batch in iterate_batches(
                    feats, labels, featurizer.collate, batch_size=config.batch_size, rng=rng,
                    kg=kg if config.uses_kg else None, subject_nodes=subjects, target_options=target_options,
                ):
                    global_count = len(batch.indices)
                    batch = _shard_batch(batch, ctx)
                    opt.zero_grad()
                    if len(batch.indices):  # a process may get no rows of a batch smaller than the process count
                        terms = _batch_loss(model, batch, config, device, global_count if ctx.distributed else None)
                        terms.total.backward()
                        for k, v in (("loss", terms.total), ("re", terms.re), ("kglp", terms.kglp),
                                     ("coupling", terms.coupling)):
                            sums[k] += float(v.detach()) / n_batches
                    all_reduce_gradients(model.parameters(), ctx)
                    nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                    opt.step()
                    if scheduler is not None:
                        scheduler.step()
                    update(1)
                sums = {k: all_reduce_sum(v, ctx) for k, v in sums.items()}
                dev = None
                if ctx.is_main:
                    dev_pred = predict(model, featurizer, dev_examples, kg.relations)
                    dev = score([ex.relation for ex in dev_examples], dev_pred, negative_label=config.negative_label)
                dev = broadcast_object(dev, ctx)
                record = {"epoch": epoch, **sums, "dev_p": dev.precision, "dev_r": dev.recall, "dev_f1": dev.f1,
                          "lr": opt.param_groups[0]["lr"]}
                history.append(record)
                if ctx.is_main:
                    logger.info("epoch %d: loss %.4f dev F1 %.4f (best %.4f)", epoch, sums["loss"], dev.f1,
                                max(best_f1, dev.f1))
                if callback is not None:
                    callback(record)
                if dev.f1 > best_f1:
                    best_f1, best_epoch, best_scores, stale = dev.f1, epoch, dev, 0
                    best_state = copy.deepcopy(model.state_dict())
                else:
                    stale += 1
                # The PA-LSTM code's schedule: after epoch `decay_after`, multiply the SGD learning rate by
                # `lr_decay` whenever dev F1 is not above the previous epoch's.
                if config.optimizer == "sgd" and epoch > config.decay_after and dev.f1 <= prev_f1:
                    for g in opt.param_groups:
                        g["lr"] *= config.lr_decay
                prev_f1 = dev.f1
                stopped = stale >= config.patience
                if stopped:
                    logger.info("early stop after epoch %d (best %d)", epoch, best_epoch)
                    stop_reason = "early_stopping"
                if checkpoint is not None:
                    checkpoint(training_state(
                        config, epoch, model, opt, scheduler, rng, device, history,
                        best={"f1": best_f1, "epoch": best_epoch, "state": best_state,
                              "scores": [best_scores.precision, best_scores.recall, best_scores.f1]},
                        prev_f1=prev_f1, stale=stale, stop_reason=stop_reason, stopped=stopped,
                        seconds=earlier_seconds + time.perf_counter() - start,
                    ))
                if stopped:
                    break
        finally:
            close()
        if best_state is not None:
            model.load_state_dict(best_state)
        model.eval()
    return TrainResult(
        model, featurizer, kg, config, best_epoch, best_scores, history,
        seconds=earlier_seconds + time.perf_counter() - start, stop_reason=stop_reason, word_vector_coverage=coverage,
    )


def training_state(config: TrainConfig, epoch: int, model: nn.Module, opt: torch.optim.Optimizer, scheduler: Any,
                   rng: np.random.Generator, device: torch.device, history: list[dict[str, float]], *,
                   best: dict[str, Any], prev_f1: float, stale: int, stop_reason: str, stopped: bool,
                   seconds: float) -> dict[str, Any]:
    """The state :func:`train` hands its ``checkpoint`` callback after ``epoch`` and accepts as ``resume``.

    Plain values only (tensors, numbers, strings, lists, dicts), so ``torch.load(weights_only=True)`` reads it
    back: numpy's generator state (128-bit integers) travels as JSON text, the config as sorted JSON.
    """
    return {
        "config": json.dumps(config.to_dict(), sort_keys=True), "epoch": epoch, "model": model.state_dict(),
        "optimizer": opt.state_dict(), "scheduler": None if scheduler is None else scheduler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "numpy_rng": json.dumps(rng.bit_generator.state), "best": best, "history": [dict(h) for h in history],
        "prev_f1": prev_f1, "stale": stale, "stop_reason": stop_reason, "stopped": stopped, "seconds": seconds,
    }
