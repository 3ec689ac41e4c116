"""ConvE trained alone for link prediction (1-N scoring, inverse triples) with filtered rank evaluation."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from knotwork._errors import JrrelpError
from knotwork._progress import as_callback
from knotwork.relations.jrrelp.conve import ConvEInteraction, filtered_ranks, rank_metrics

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TripleSet:
    """Integer-indexed triples; relation ``r + n_relations`` is the inverse of ``r`` (tail prediction only)."""

    entities: tuple[str, ...]
    relations: tuple[str, ...]
    train: torch.Tensor  # (n, 3) long: head, relation, tail
    valid: torch.Tensor
    test: torch.Tensor

    @property
    def n_entities(self) -> int:
        return len(self.entities)

    @property
    def n_relations(self) -> int:
        return len(self.relations)


def index_triples(
    train: Sequence[tuple[str, str, str]],
    valid: Sequence[tuple[str, str, str]] = (),
    test: Sequence[tuple[str, str, str]] = (),
) -> TripleSet:
    """Map names to ids over all splits, as the ConvE code does (entities unseen in train keep random embeddings)."""
    if not train:
        raise JrrelpError("index_triples needs training triples; the train split is empty")
    entities = sorted({x for split in (train, valid, test) for h, _, t in split for x in (h, t)})
    relations = sorted({r for split in (train, valid, test) for _, r, _ in split})
    e_id = {e: i for i, e in enumerate(entities)}
    r_id = {r: i for i, r in enumerate(relations)}

    def tensor(split: Sequence[tuple[str, str, str]]) -> torch.Tensor:
        return torch.tensor([[e_id[h], r_id[r], e_id[t]] for h, r, t in split], dtype=torch.long).reshape(-1, 3)

    return TripleSet(tuple(entities), tuple(relations), tensor(train), tensor(valid), tensor(test))


def unseen_in_train(
    train: Sequence[tuple[str, str, str]], split: Sequence[tuple[str, str, str]]
) -> list[tuple[str, str, str]]:
    """The triples of ``split`` whose head, tail or relation never occurs in ``train``, in file order.

    ConvE's protocol keeps them (their entities keep random embeddings); a caller may refuse or drop them.
    """
    entities = {x for h, _, t in train for x in (h, t)}
    relations = {r for _, r, _ in train}
    return [(h, r, t) for h, r, t in split if h not in entities or t not in entities or r not in relations]


def with_inverses(triples: torch.Tensor, n_relations: int) -> torch.Tensor:
    """Append (t, r + n_relations, h) for every (h, r, t): head prediction becomes tail prediction."""
    inv = torch.stack([triples[:, 2], triples[:, 1] + n_relations, triples[:, 0]], dim=1)
    return torch.cat([triples, inv])


class ConvE(nn.Module):
    """ConvE link predictor (Dettmers et al., AAAI 2018) over its own entity and relation embeddings.

    Parameters
    ----------
    n_entities, n_relations : int
        ``n_relations`` counts inverse relations too.
    dim : int, default 200
    width : int, default 20
        Embeddings are reshaped to ``(dim // width, width)`` images (the paper's 10 x 20).
    channels, input_dropout, feature_dropout, hidden_dropout
        As :class:`~knotwork.relations.jrrelp.conve.ConvEInteraction`.
    """

    def __init__(
        self,
        n_entities: int,
        n_relations: int,
        *,
        dim: int = 200,
        width: int = 20,
        channels: int = 32,
        input_dropout: float = 0.2,
        feature_dropout: float = 0.2,
        hidden_dropout: float = 0.3,
    ) -> None:
        super().__init__()
        self.entity = nn.Embedding(n_entities, dim)
        self.relation = nn.Embedding(n_relations, dim)
        nn.init.xavier_normal_(self.entity.weight)
        nn.init.xavier_normal_(self.relation.weight)
        self.bias = nn.Parameter(torch.zeros(n_entities))
        self.interaction = ConvEInteraction(
            dim, dim, width=width, channels=channels, input_dropout=input_dropout,
            feature_dropout=feature_dropout, hidden_dropout=hidden_dropout,
        )

    def forward(self, heads: torch.Tensor, relations: torch.Tensor) -> torch.Tensor:
        """Logits of every entity as the tail, shape (B, n_entities)."""
        return self.interaction(self.entity(heads), self.relation(relations), self.entity.weight, self.bias)

    @classmethod
    def from_config(cls, n_entities: int, n_relations: int, config: ConvEConfig) -> ConvE:
        """An untrained ConvE with the sizes and dropouts of ``config`` (``n_relations`` counts inverses)."""
        return cls(
            n_entities, n_relations, dim=config.dim, width=config.width, channels=config.channels,
            input_dropout=config.input_dropout, feature_dropout=config.feature_dropout,
            hidden_dropout=config.hidden_dropout,
        )


class RelationFrequency(nn.Module):
    """A baseline without learning: the score of tail ``t`` for ``(h, r, ?)`` is how often ``t`` is a tail of ``r``
    in training (``r >= n_relations``, an inverse relation, counts how often ``t`` is a *head* of ``r``).

    The head is ignored, so every query of a relation gets the same ranking. Ranked like ConvE by
    :func:`evaluate_link_prediction` (filtered, realistic ranks: the many zero-count entities tie, each counting
    half), it is the floor a trained link predictor has to clear.
    """

    def __init__(self, triples: TripleSet) -> None:
        super().__init__()
        train = with_inverses(triples.train, triples.n_relations)
        counts = torch.zeros(2 * triples.n_relations, triples.n_entities)
        counts.index_put_((train[:, 1], train[:, 2]), torch.ones(len(train)), accumulate=True)
        self.counts = nn.Parameter(counts, requires_grad=False)

    def forward(self, heads: torch.Tensor, relations: torch.Tensor) -> torch.Tensor:
        """Scores of every entity as the tail, shape (B, n_entities)."""
        return self.counts[relations]


@dataclass(frozen=True)
class ConvEConfig:
    """ConvE's training settings; defaults are the paper's (Adam 0.003, batch 128, label smoothing 0.1)."""

    dim: int = 200
    width: int = 20
    channels: int = 32
    input_dropout: float = 0.2
    feature_dropout: float = 0.2
    hidden_dropout: float = 0.3
    label_smoothing: float = 0.1
    lr: float = 0.003
    batch_size: int = 128
    epochs: int = 10
    max_steps: int | None = None  # stop after this many batches in total (a partial epoch on a small budget)
    seed: int = 0

    def __post_init__(self) -> None:
        """Refuse an impossible setting with :class:`~knotwork._errors.JrrelpError` naming the parameter."""
        for name in ("dim", "width", "channels", "batch_size", "epochs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise JrrelpError(f"ConvEConfig: {name} must be an integer >= 1; got {value!r}")
        if self.max_steps is not None and self.max_steps < 1:
            raise JrrelpError(f"ConvEConfig: max_steps must be >= 1 (or None); got {self.max_steps!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise JrrelpError(f"ConvEConfig: lr must be finite and > 0; got {self.lr!r}")
        for name in ("input_dropout", "feature_dropout", "hidden_dropout", "label_smoothing"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0 <= value < 1):
                raise JrrelpError(f"ConvEConfig: {name} must be in [0, 1); got {value!r}")
        if self.dim % self.width:
            raise JrrelpError(
                f"ConvEConfig: dim={self.dim} must be a multiple of width={self.width} (ConvE reshapes each "
                f"embedding into a (dim/width) x width image)"
            )
        if 2 * (self.dim // self.width) < 3 or self.width < 3:
            raise JrrelpError(
                f"ConvEConfig: dim={self.dim}, width={self.width} give a {2 * (self.dim // self.width)}x{self.width} "
                "stacked image, smaller than ConvE's 3x3 kernel"
            )

    def to_dict(self) -> dict:
        return asdict(self)


def _tail_sets(triples: torch.Tensor) -> dict[tuple[int, int], list[int]]:
    out: dict[tuple[int, int], list[int]] = {}
    for h, r, t in triples.tolist():
        out.setdefault((h, r), []).append(t)
    return out


def _fork_devices(device: torch.device) -> list[int]:
    """The CUDA devices whose generator ``torch.random.fork_rng`` must save and restore for ``device``."""
    return [device.index or 0] if device.type == "cuda" else []


def train_conve(
    triples: TripleSet,
    config: ConvEConfig,
    *,
    model: ConvE | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    device: str | torch.device = "cpu",
    progress: bool | Callable[[int], Any] = False,
    callback: Callable[[dict], None] | None = None,
) -> tuple[ConvE, list[dict]]:
    """Train ConvE with 1-N scoring: each (head, relation) query is scored against all entities at once.

    Inverse triples are added so that one model predicts both sides. Targets are multi-hot over the query's
    training tails, smoothed as in the ConvE code: ``(1 - eps) * y + 1 / n_entities``.

    Parameters
    ----------
    triples : TripleSet
    config : ConvEConfig
    model : ConvE, optional
        Continue training this model (e.g. one restored from a checkpoint).
    optimizer : torch.optim.Optimizer, optional
        Step this optimizer (over ``model``'s parameters, e.g. with a state restored from a checkpoint, so Adam's
        moment estimates carry over); default a fresh ``Adam(lr=config.lr)``.
    device : str or torch.device, default "cpu"
        Where the model and the batches live; the returned model stays there.
    progress : bool or callable, default False
        True draws a bar over batches (:mod:`knotwork._progress`); a callable is called with 1 per batch.
    callback : callable, optional
        Called with each epoch's record.

    Returns
    -------
    (ConvE, list of dict)
        The trained model (eval mode) and one record per epoch (loss, seconds).
    """
    device = torch.device(device)
    n_rel = 2 * triples.n_relations
    queries = _tail_sets(with_inverses(triples.train, triples.n_relations))
    keys = torch.tensor(list(queries), dtype=torch.long)  # (Q, 2)
    tails = list(queries.values())
    history: list[dict] = []
    n_batches = -(-len(keys) // config.batch_size)
    steps_left = config.max_steps if config.max_steps is not None else n_batches * config.epochs
    update, close = as_callback(progress, total=min(steps_left, n_batches * config.epochs), desc="ConvE",
                                unit="batch")
    with torch.random.fork_rng(devices=_fork_devices(device)):
        torch.manual_seed(config.seed)
        rng = np.random.default_rng(config.seed)
        model = model if model is not None else ConvE.from_config(triples.n_entities, n_rel, config)
        model.to(device)
        opt = optimizer if optimizer is not None else torch.optim.Adam(model.parameters(), lr=config.lr)
        try:
            for epoch in range(1, config.epochs + 1):
                start, total, done = time.perf_counter(), 0.0, 0
                model.train()
                order = rng.permutation(len(keys))
                for b in range(min(n_batches, steps_left)):
                    idx = order[b * config.batch_size : (b + 1) * config.batch_size]
                    batch = keys[idx].to(device)
                    target = torch.zeros(len(idx), triples.n_entities)
                    for row, q in enumerate(idx):
                        target[row, tails[q]] = 1.0
                    if config.label_smoothing:
                        target = (1.0 - config.label_smoothing) * target + 1.0 / triples.n_entities
                    loss = F.binary_cross_entropy_with_logits(model(batch[:, 0], batch[:, 1]), target.to(device))
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    total += float(loss.detach())
                    done += 1
                    update(1)
                steps_left -= done
                record = {"epoch": epoch, "loss": total / max(done, 1), "batches": done,
                          "batches_per_epoch": n_batches, "seconds": time.perf_counter() - start}
                history.append(record)
                logger.info("ConvE epoch %d loss %.5f", epoch, record["loss"])
                if callback is not None:
                    callback(record)
                if steps_left <= 0:
                    break
        finally:
            close()
    model.eval()
    return model, history


def link_prediction_ranks(
    model: nn.Module,
    triples: TripleSet,
    split: str = "test",
    *,
    batch_size: int = 256,
    max_triples: int | None = None,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Filtered realistic ranks of every evaluated triple, tail side then head side.

    The filter holds every true triple of train, valid and test (Bordes et al. 2013). A rank is PyKEEN's
    ``realistic`` rank (``RankBasedEvaluator``): the mean of the optimistic and the pessimistic rank, so a tie
    with the true entity counts half. Heads are ranked as tails of the inverse relation ``r + n_relations``.

    Parameters
    ----------
    model : nn.Module
        ``model(heads, relations) -> (B, n_entities)`` scores, relations counting inverses (e.g. :class:`ConvE`).
    triples : TripleSet
    split : {"valid", "test"}
    batch_size : int, default 256
    max_triples : int, optional
        Rank a random subset of this many triples of the split (for quick validation), drawn with ``seed``.

    Returns
    -------
    (ranks, evaluated)
        ``ranks`` of shape (2n,), float64: the n tail ranks of ``evaluated``, then its n head ranks;
        ``evaluated`` the (n, 3) triples ranked.
    """
    if split not in ("valid", "test"):
        raise JrrelpError(f"split must be 'valid' or 'test', got {split!r}")
    n_rel = triples.n_relations
    evaluated = getattr(triples, split)
    if max_triples is not None and max_triples < len(evaluated):
        keep = np.random.default_rng(seed).choice(len(evaluated), max_triples, replace=False)
        evaluated = evaluated[torch.as_tensor(np.sort(keep))]
    if len(evaluated) == 0:
        raise JrrelpError(f"the {split} split holds no triples to evaluate")
    known = _tail_sets(with_inverses(torch.cat([triples.train, triples.valid, triples.test]), n_rel))
    queries = with_inverses(evaluated, n_rel)
    ranks = []
    was_training = model.training
    device = next(model.parameters()).device
    model.eval()
    with torch.no_grad():
        for b in range(0, len(queries), batch_size):
            q = queries[b : b + batch_size].to(device)
            scores = model(q[:, 0], q[:, 1])
            mask = torch.zeros_like(scores, dtype=torch.bool)
            for row, (h, r) in enumerate(q[:, :2].tolist()):
                mask[row, known[(h, r)]] = True
            ranks.append(filtered_ranks(scores, q[:, 2], mask).cpu())
    model.train(was_training)
    return torch.cat(ranks), evaluated


def evaluate_link_prediction(model: nn.Module, triples: TripleSet, split: str = "test", **options: Any) -> dict[str, float]:
    """Filtered MRR, MR and Hits@1/3/10 over both sides (tails, and heads via inverse relations).

    The metrics of :func:`link_prediction_ranks` (PyKEEN's ``both.realistic`` MRR, MR and Hits@k; ties count
    half), which takes the ``options``: ``batch_size``, ``max_triples`` (a random subset of the split, drawn with
    ``seed``) and ``seed``. Queries are scored on the model's device.
    """
    ranks, evaluated = link_prediction_ranks(model, triples, split, **options)
    out = rank_metrics(ranks)
    out["n_triples"] = len(evaluated)
    return out
