"""Per-task accuracy, normalized accuracy and the joint (union-of-labels) Hits@k benchmark, as in KnOTS §5."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from knotwork._errors import MergeError
from knotwork.lora.model import added_deltas, embed_texts
from knotwork.lora.tasks import JointLabels, TextTask, build_joint_labels


def hits_at_k(scores: Tensor, gold: Tensor, ks: Sequence[int] = (1, 3, 5)) -> dict[int, int]:
    """Number of rows whose gold class is among the `k` highest scores, for each k.

    A row's rank is the number of classes scoring *strictly* higher than its gold class, and it is a hit at k
    when that rank is < k; exact ties (vanishingly rare with float cosines) therefore count in the gold's favour.

    Parameters
    ----------
    scores : Tensor of shape (n, n_classes)
    gold : Tensor of shape (n,), int class ids

    Examples
    --------
    >>> hits_at_k(torch.tensor([[0.9, 0.1, 0.5], [0.2, 0.3, 0.1]]), torch.tensor([2, 0]), ks=(1, 2))
    {1: 0, 2: 2}
    """
    if scores.ndim != 2 or gold.ndim != 1 or scores.shape[0] != gold.shape[0]:
        raise MergeError(f"hits_at_k needs scores (n, C) and gold (n,); got {tuple(scores.shape)} and "
                         f"{tuple(gold.shape)}.")
    if gold.numel() and (gold.min() < 0 or gold.max() >= scores.shape[1]):
        raise MergeError(f"gold ids must be in 0..{scores.shape[1] - 1}; got {gold.min().item()}..{gold.max().item()}.")
    gold_score = scores.gather(1, gold.long().unsqueeze(1))
    rank = (scores > gold_score).sum(1)
    return {int(k): int((rank < k).sum()) for k in ks}


def accuracy(scores: Tensor, gold: Tensor) -> float:
    """Fraction of rows whose gold class has the top score (Hits@1)."""
    return hits_at_k(scores, gold, ks=(1,))[1] / max(1, gold.numel())


@dataclass(frozen=True)
class EvalResult:
    """Scores of one model on several tasks.

    Attributes
    ----------
    accuracy : dict
        ``{task: accuracy in [0, 1]}`` against the task's own labels (task identity known).
    joint_hits : dict
        ``{k: sample-weighted Hits@k in [0, 1]}`` against the union of all evaluated tasks' labels, no task
        identity (empty when not computed).
    n : dict
        ``{task: number of examples}``.
    """

    accuracy: dict[str, float]
    joint_hits: dict[int, float] = field(default_factory=dict)
    n: dict[str, int] = field(default_factory=dict)

    def normalized(self, finetuned: Mapping[str, float]) -> dict[str, float]:
        """Per-task normalized accuracy, merged / fine-tuned (the paper's headline metric)."""
        missing = sorted(set(self.accuracy) - set(finetuned))
        if missing:
            raise KeyError(f"No fine-tuned accuracy for task(s) {missing}.")
        zero = sorted(t for t in self.accuracy if finetuned[t] == 0)
        if zero:
            # Undefined rather than infinite: NaN propagates to the average and never wins a comparison.
            warnings.warn(f"Fine-tuned accuracy is 0 for task(s) {zero}; their normalized accuracy is NaN.",
                          stacklevel=2)
        return {t: (a / finetuned[t] if finetuned[t] else float("nan")) for t, a in self.accuracy.items()}

    def avg_normalized(self, finetuned: Mapping[str, float]) -> float:
        vals = list(self.normalized(finetuned).values())
        return sum(vals) / len(vals)

    def avg_accuracy(self) -> float:
        return sum(self.accuracy.values()) / len(self.accuracy)


def score_embeddings(
    embeddings: Mapping[str, Tensor],
    gold: Mapping[str, Tensor],
    heads: Mapping[str, Tensor],
    *,
    joint: JointLabels | None = None,
    joint_head: Tensor | None = None,
    ks: Sequence[int] = (1, 3, 5),
) -> EvalResult:
    """Score unit embeddings of each task's examples against the task heads and, optionally, the joint head.

    Parameters
    ----------
    embeddings : dict of Tensor (n_t, H)
        Unit embeddings per task.
    gold : dict of Tensor (n_t,)
        Local label ids per task.
    heads : dict of Tensor (C_t, H)
        Unit label embeddings per task (local label order).
    joint, joint_head : JointLabels and Tensor (C_joint, H), optional
        The deduplicated label union and its embeddings; joint Hits@k is sample-weighted over all tasks
        (total hits / total examples), as the paper's ``evaluate_cliphead_joint``.
    """
    acc, n = {}, {}
    total_hits = dict.fromkeys(ks, 0)
    for task, emb in embeddings.items():
        y = gold[task]
        acc[task] = accuracy(emb @ heads[task].T, y)
        n[task] = int(y.numel())
        if joint is not None:
            local2joint = torch.tensor(joint.local_to_joint[task])
            for k, h in hits_at_k(emb @ joint_head.T, local2joint[y], ks).items():
                total_hits[k] += h
    joint_hits = {k: h / max(1, sum(n.values())) for k, h in total_hits.items()} if joint is not None else {}
    return EvalResult(acc, joint_hits, n)


class TaskEvaluator:
    """Evaluates a base encoder plus any dense update on fixed splits of several tasks.

    The heads (label-phrase embeddings of the *base* model) are computed once, so that every adapter and merge
    is scored against the same frozen classifier, like CLIP's shared text heads.

    Parameters
    ----------
    model, tokenizer
        The plain base encoder (no LoRA wrapper); deltas are added to its weights temporarily.
    tasks : sequence of TextTask
    split : str
        Which split to score (``"val"`` for hyperparameter search, ``"test"`` once at the end).
    limit : int, optional
        Use only the first `limit` examples of each task's split (files are pre-shuffled).
    """

    def __init__(self, model: nn.Module, tokenizer, tasks: Sequence[TextTask], *, split: str = "test",
                 limit: int | None = None, max_length: int = 64, batch_size: int = 64, ks: Sequence[int] = (1, 3, 5)):
        for t in tasks:
            if split not in t.splits:
                raise MergeError(f"Task '{t.name}' has no '{split}' split loaded.")
        self.model, self.tokenizer, self.max_length, self.batch_size, self.ks = model, tokenizer, max_length, batch_size, ks
        self.tasks = list(tasks)
        self.data = {t.name: t.splits[split].subset(limit) for t in self.tasks}
        self.gold = {name: torch.tensor(s.labels) for name, s in self.data.items()}
        self.joint = build_joint_labels(self.tasks)
        self.joint_head = embed_texts(model, tokenizer, list(self.joint.phrases), max_length=max_length)
        self.heads = {t.name: self.joint_head[list(self.joint.local_to_joint[t.name])] for t in self.tasks}

    def embed(self, deltas: Mapping[str, Tensor] | None = None, *, tasks: Sequence[str] | None = None,
              progress: bool | Callable[[int], None] = False) -> dict[str, Tensor]:
        """Unit embeddings of each task's examples under base + `deltas` (one batched pass over all texts)."""
        names = list(tasks) if tasks is not None else list(self.data)
        texts = [x for n in names for x in self.data[n].texts]
        with added_deltas(self.model, deltas or {}):
            emb = embed_texts(self.model, self.tokenizer, texts, max_length=self.max_length,
                              batch_size=self.batch_size, progress=progress)
        out, start = {}, 0
        for n in names:
            out[n] = emb[start:start + len(self.data[n])]
            start += len(self.data[n])
        return out

    def evaluate(self, deltas: Mapping[str, Tensor] | None = None, *, tasks: Sequence[str] | None = None,
                 joint: bool = True, progress: bool | Callable[[int], None] = False) -> EvalResult:
        """Per-task accuracy (and joint Hits@k over all loaded tasks' labels) of base + `deltas`."""
        emb = self.embed(deltas, tasks=tasks, progress=progress)
        return self.score(emb, joint=joint)

    def score(self, embeddings: Mapping[str, Tensor], *, joint: bool = True) -> EvalResult:
        return score_embeddings(embeddings, self.gold, self.heads, joint=self.joint if joint else None,
                                joint_head=self.joint_head, ks=self.ks)
